//! Tokens this issuer signed, read back (a subject token in an exchange, an access token at
//! userinfo, an ID token as a logout hint): signature with one of the issuer's published keys
//! (passed in: current and retired), `typ`, exact `iss`, and unless asked otherwise the
//! lifetime.

use crate::UnixTime;
use segl_jose::{JsonObject, UnverifiedJws, VerifyingKey};
use serde_json::Value;

/// Which kind of token, by its `typ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `at+jwt`.
    AccessToken,
    /// `JWT` or none (ID tokens).
    IdToken,
}

/// Verifies a token of this issuer; returns its claims, or why not (text safe to send).
pub fn verify(
    jwt: &str,
    keys: &[VerifyingKey],
    issuer: &str,
    kind: Kind,
    allow_expired: bool,
    now: UnixTime,
) -> Result<JsonObject, String> {
    let jws = UnverifiedJws::parse(jwt).map_err(|e| format!("not a token of this issuer: {e}"))?;
    let typ_ok = match kind {
        Kind::AccessToken => {
            jws.unverified_header_str("typ") == Some(segl_proto::typ::ACCESS_TOKEN)
        }
        Kind::IdToken => matches!(jws.unverified_header_str("typ"), Some("JWT") | None),
    };
    if !typ_ok {
        return Err(match kind {
            Kind::AccessToken => "not an access token (typ at+jwt)".into(),
            Kind::IdToken => "not an ID token".into(),
        });
    }
    let kid = jws.unverified_header_str("kid").map(str::to_owned);
    let candidates = keys
        .iter()
        .filter(|k| kid.is_none() || k.kid() == kid.as_deref());
    let claims = jws
        .verify_any(candidates)
        .map_err(|_| "signature does not verify with this issuer's keys".to_owned())?
        .into_claims();
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err("not issued by this issuer".into());
    }
    if !allow_expired {
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or("the token has no exp")?;
        if exp <= now.secs() {
            return Err("the token has expired".into());
        }
        let nbf = claims.get("nbf").and_then(Value::as_i64);
        if nbf.is_some_and(|nbf| nbf > now.secs().saturating_add(crate::policy::CLOCK_SKEW)) {
            return Err("the token is not valid yet".into());
        }
    }
    Ok(claims)
}
