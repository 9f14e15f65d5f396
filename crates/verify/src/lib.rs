//! Verification of Segl (and HelseID) access tokens, for the APIs that receive them.
//!
//! What this crate owns: everything an API must check before it trusts a request's access
//! token (HELSEID.md §10, RFC 9068 §4, RFC 6750, RFC 9449 §7): loading the issuer's discovery
//! metadata and JWKS (refetched, rate-limited, when a token names an unknown `kid`, so key
//! rotation needs no restart), the signature, `typ`, `iss`, `aud`, lifetime and scopes, and for
//! DPoP-bound tokens the proof, its `ath`, the key binding, `jti` replay (in bounded memory)
//! and optional resource-server nonces. It maps every refusal to the RFC 6750 / RFC 9449
//! answer (status, `WWW-Authenticate`, `DPoP-Nonce`) and, with the `axum` feature (default),
//! makes [`VerifiedToken`] an extractor.
//!
//! What it does not own: what the API then allows a caller to do. [`VerifiedToken`] gives the
//! HelseID claims (organization numbers, person, security level, actor chain); the API decides.
//! JOSE parsing and the stateless DPoP checks are `segl-jose`'s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), segl_verify::SetupError> {
//! use segl_verify::{Verifier, VerifierConfig};
//! let config = VerifierConfig::new("nhn:reseptformidleren")
//!     .with_required_scopes(["nhn:reseptformidleren/rf"])
//!     .with_public_base_url("https://rf.example.no");
//! let verifier = Verifier::discover("https://helseid-sts.test.nhn.no", config).await?;
//! # let _ = verifier; Ok(()) }
//! ```
//!
//! With axum, share an `Arc<Verifier>` as (part of) the router state and take a
//! [`VerifiedToken`] in the handler; a refused request never reaches it.

mod clock;
mod config;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod keys;
mod nonce;
mod replay;
mod token;
mod verifier;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{DpopNonce, MAX_DPOP_MAX_AGE, MAX_SKEW, TokenBinding, VerifierConfig};
pub use error::{ErrorKind, VerifyError};
pub use token::{Actor, VerifiedToken};
pub use verifier::{RequestParts, SetupError, Verifier};

use error::Challenges;
use segl_jose::{Alg, JsonObject, Jwks, UnverifiedJws};

/// What [`verify_access_token`] checks beyond the signature.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The exact issuer.
    pub issuer: &'a str,
    /// The current time (unix seconds).
    pub now: i64,
    /// Allowed skew for `exp`/`nbf`, seconds.
    pub skew: i64,
}

/// Checks one JWT against `jwks` and `expect` — signature (any asymmetric algorithm, the key
/// its `kid` names), `typ`, exact `iss`, `exp`/`nbf` — and returns its claims. Synchronous and
/// I/O-free, for tools such as `segl token inspect`; it checks no audience, scope or binding,
/// so an API uses [`Verifier`] instead.
pub fn verify_access_token(
    jwt: &str,
    jwks: &Jwks,
    expect: &Expectations<'_>,
) -> Result<JsonObject, VerifyError> {
    let invalid = |d: String| {
        VerifyError::new(
            ErrorKind::InvalidToken(d),
            Challenges {
                bearer: true,
                dpop: None,
            },
        )
    };
    let jws = UnverifiedJws::parse(jwt).map_err(|e| invalid(format!("not a valid JWT: {e}")))?;
    verifier::check_typ(&jws).map_err(invalid)?;
    let set = keys::KeySet::from_jwks(jwks, &Alg::ALL);
    let claims = verifier::verify_signature(jws, &set)
        .map_err(invalid)?
        .into_claims();
    if claims.get("iss").and_then(|v| v.as_str()) != Some(expect.issuer) {
        return Err(invalid(format!("iss is not {}", expect.issuer)));
    }
    let exp = claims
        .get("exp")
        .and_then(token::numeric_date)
        .ok_or_else(|| invalid("exp is required and must be a number".into()))?;
    if expect.now >= exp.saturating_add(expect.skew) {
        return Err(invalid("the token has expired".into()));
    }
    if claims
        .get("nbf")
        .and_then(token::numeric_date)
        .is_some_and(|nbf| nbf > expect.now.saturating_add(expect.skew))
    {
        return Err(invalid("the token is not valid yet (nbf)".into()));
    }
    Ok(claims)
}
