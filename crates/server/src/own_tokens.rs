//! Verification of tokens this server issued (access tokens at userinfo, ID tokens as logout
//! hints), with the keys it publishes — parsed once per key-ring refresh.

use crate::App;
use segl_core::UnixTime;
use segl_jose::{JsonObject, UnverifiedJws};

/// Which kind of token, by its `typ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `at+jwt`.
    AccessToken,
    /// `JWT` (ID tokens).
    IdToken,
}

/// Verifies signature, `typ`, `iss` and (unless `allow_expired`) `exp`/`nbf`; returns claims.
pub fn verify(
    app: &App,
    jwt: &str,
    kind: Kind,
    allow_expired: bool,
    now: UnixTime,
) -> Result<JsonObject, String> {
    let jws = UnverifiedJws::parse(jwt).map_err(|e| format!("not a token of this server: {e}"))?;
    let typ_ok = match kind {
        Kind::AccessToken => {
            jws.unverified_header_str("typ") == Some(segl_proto::typ::ACCESS_TOKEN)
        }
        Kind::IdToken => matches!(jws.unverified_header_str("typ"), Some("JWT") | None),
    };
    if !typ_ok {
        return Err("wrong token type".into());
    }
    let kid = jws.unverified_header_str("kid").map(str::to_owned);
    let ring = app.keys.current();
    let keys = ring
        .verifiers
        .iter()
        .filter(|k| kid.is_none() || k.kid() == kid.as_deref());
    let claims = jws
        .verify_any(keys)
        .map_err(|_| "signature does not verify with this server's keys".to_owned())?
        .into_claims();
    if claims.get("iss").and_then(|v| v.as_str()) != Some(app.settings.issuer.as_str()) {
        return Err("issued by another issuer".into());
    }
    if !allow_expired {
        let exp = claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(0);
        if exp <= now.secs() {
            return Err("the token has expired".into());
        }
        if claims
            .get("nbf")
            .and_then(|v| v.as_i64())
            .is_some_and(|nbf| nbf > now.secs() + 10)
        {
            return Err("the token is not valid yet".into());
        }
    }
    Ok(claims)
}
