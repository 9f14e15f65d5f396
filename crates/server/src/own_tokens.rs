//! Verification of tokens this server issued (access tokens at userinfo, ID tokens as logout
//! hints) with the keys it publishes, parsed once per key-ring refresh; the checks themselves
//! are `segl_core::issued`.

use crate::App;
use segl_core::UnixTime;
pub use segl_core::issued::Kind;
use segl_jose::JsonObject;

/// Verifies signature, `typ`, `iss` and (unless `allow_expired`) `exp`/`nbf`; returns claims.
pub fn verify(
    app: &App,
    jwt: &str,
    kind: Kind,
    allow_expired: bool,
    now: UnixTime,
) -> Result<JsonObject, String> {
    let ring = app.keys.current();
    segl_core::issued::verify(
        jwt,
        &ring.verifiers,
        &app.settings.issuer,
        kind,
        allow_expired,
        now,
    )
}
