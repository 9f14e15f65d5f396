//! Verification of Segl (and HelseID) access tokens for APIs and tools.
//!
//! This first part is synchronous and I/O-free: given the issuer's JWKS, check a JWT's
//! signature (with an allow-listed algorithm and the key its `kid` names), `typ`, exact `iss`,
//! and `exp`/`nbf` with bounded skew. The caller fetches the JWKS.

use segl_jose::{Alg, JsonObject, Jwks, UnverifiedJws, VerifyingKey};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a usable JWS, or a refused algorithm.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No published key matches the header.
    #[error("no published key matches kid {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A claim check failed.
    #[error("{0}")]
    Claim(String),
}

/// What `verify_access_token` checks beyond the signature.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The exact issuer.
    pub issuer: &'a str,
    /// The current time (unix seconds).
    pub now: i64,
    /// Allowed skew for `exp`/`nbf`, seconds.
    pub skew: i64,
}

/// Checks `jwt` against `jwks` and `expect`; returns its claims.
pub fn verify_access_token(
    jwt: &str,
    jwks: &Jwks,
    expect: &Expectations<'_>,
) -> Result<JsonObject, VerifyError> {
    let jws = UnverifiedJws::parse(jwt).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    // RFC 9068 §4 and HelseID: at+jwt, or JWT from older issuers.
    match jws.unverified_header_str("typ") {
        Some(t)
            if t.eq_ignore_ascii_case("at+jwt")
                || t.eq_ignore_ascii_case("application/at+jwt")
                || t == "JWT" => {}
        other => {
            return Err(VerifyError::Claim(format!(
                "typ {other:?} is not an access token type"
            )));
        }
    }
    let alg: Alg = jws.alg();
    let kid = jws.unverified_header_str("kid").map(str::to_owned);
    let keys: Vec<VerifyingKey> = jwks
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.kid == kid)
        .filter_map(|k| VerifyingKey::from_jwk(k, alg).ok())
        .collect();
    if keys.is_empty() {
        return Err(VerifyError::UnknownKey(kid));
    }
    let claims = jws
        .verify_any(keys.iter())
        .map_err(|_| VerifyError::BadSignature)?
        .into_claims();
    if claims.get("iss").and_then(|v| v.as_str()) != Some(expect.issuer) {
        return Err(VerifyError::Claim(format!("iss is not {}", expect.issuer)));
    }
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| VerifyError::Claim("no exp".into()))?;
    if exp <= expect.now - expect.skew {
        return Err(VerifyError::Claim("token has expired".into()));
    }
    if claims
        .get("nbf")
        .and_then(|v| v.as_i64())
        .is_some_and(|nbf| nbf > expect.now + expect.skew)
    {
        return Err(VerifyError::Claim("token is not valid yet (nbf)".into()));
    }
    Ok(claims)
}
