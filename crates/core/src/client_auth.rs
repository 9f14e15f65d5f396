//! private_key_jwt client authentication (RFC 7523 §3, OIDC Core §9, HelseID's rules).
//!
//! [`verify_assertion`] checks everything that needs no state and returns a [`VerifiedAssertion`];
//! only [`VerifiedAssertion::accept`], given the store's answer on whether the `jti` was fresh,
//! turns it into an [`AuthenticatedClient`]. A grant function that takes an
//! `AuthenticatedClient` therefore cannot run for an unauthenticated or replayed request.

use crate::policy::{CLOCK_SKEW, MAX_ASSERTION_LIFETIME};
use crate::{Client, OAuthError, Policy, Profile, Registry, UnixTime};
use segl_jose::{JsonObject, UnverifiedJws};
use serde_json::Value;
use std::sync::Arc;

/// The longest `jti` accepted; longer ones are rejected rather than stored.
pub const MAX_JTI_LEN: usize = 256;

/// The client-authentication parameters of a request (RFC 7521 §4.2).
#[derive(Debug, Default, Clone)]
pub struct ClientAuthParams {
    /// `client_id`, optional with an assertion.
    pub client_id: Option<String>,
    /// `client_assertion`.
    pub client_assertion: Option<String>,
    /// `client_assertion_type`.
    pub client_assertion_type: Option<String>,
    /// Whether a `client_secret` parameter was sent (always refused).
    pub client_secret_present: bool,
    /// Whether an `Authorization` header was sent (refused: one method per request).
    pub authorization_header_present: bool,
}

/// Where the assertion is presented; the accepted `aud` values depend on it (SECURITY.md D2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/connect/token`.
    Token,
    /// Any other endpoint that authenticates clients (PAR, introspection, revocation).
    Other,
}

/// An assertion whose signature and claims are valid; its `jti` has not been recorded yet.
/// A clone is the same assertion: it too becomes an [`AuthenticatedClient`] only with the
/// store's verdict on the one `jti`.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    client: Arc<Client>,
    jti: String,
    expires_at: UnixTime,
    claims: JsonObject,
}

/// A client that proved possession of a registered key with a fresh assertion.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    client: Arc<Client>,
    claims: Arc<JsonObject>,
}

impl VerifiedAssertion {
    /// The client the assertion authenticates.
    pub fn client_id(&self) -> &str {
        &self.client.client_id
    }

    /// The digest under which the `jti` is recorded (unique per client and jti).
    pub fn replay_key(&self) -> [u8; 32] {
        let mut input = Vec::with_capacity(self.client.client_id.len() + self.jti.len() + 1);
        input.extend_from_slice(self.client.client_id.as_bytes());
        input.push(0);
        input.extend_from_slice(self.jti.as_bytes());
        segl_jose::sha256(&input)
    }

    /// Until when the `jti` must be remembered: as long as the assertion could be accepted.
    pub fn remember_until(&self) -> UnixTime {
        self.expires_at.plus(CLOCK_SKEW)
    }

    /// Completes authentication with the store's verdict on the `jti`.
    pub fn accept(self, jti_was_fresh: bool) -> Result<AuthenticatedClient, OAuthError> {
        if !jti_was_fresh {
            return Err(OAuthError::invalid_client(
                "client_assertion has been used before: every assertion needs a new jti",
            ));
        }
        Ok(AuthenticatedClient {
            client: self.client,
            claims: Arc::new(self.claims),
        })
    }
}

impl AuthenticatedClient {
    /// The authenticated client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The verified claims of its assertion (for `assertion_details` and similar).
    pub fn assertion_claims(&self) -> &JsonObject {
        &self.claims
    }
}

/// Checks a client assertion: parameters, header, issuer, key, signature, then claims.
pub fn verify_assertion(
    params: &ClientAuthParams,
    registry: &Registry,
    policy: &Policy,
    endpoint: Endpoint,
    now: UnixTime,
) -> Result<VerifiedAssertion, OAuthError> {
    // RFC 6749 §2.3: one method per request, and private_key_jwt is the only one we offer.
    if params.client_secret_present || params.authorization_header_present {
        return Err(OAuthError::invalid_client(
            "only private_key_jwt client authentication is supported: send client_assertion, no client_secret or Authorization header",
        ));
    }
    let Some(assertion) = params.client_assertion.as_deref() else {
        return Err(OAuthError::invalid_client(
            "client authentication required: send client_assertion (private_key_jwt)",
        ));
    };
    if params.client_assertion_type.as_deref() != Some(segl_proto::CLIENT_ASSERTION_TYPE_JWT_BEARER)
    {
        return Err(OAuthError::invalid_client(format!(
            "client_assertion_type must be {}",
            segl_proto::CLIENT_ASSERTION_TYPE_JWT_BEARER
        )));
    }
    let jws = UnverifiedJws::parse(assertion).map_err(|e| {
        OAuthError::invalid_client(format!("client_assertion is not acceptable: {e}"))
    })?;
    check_header(&jws, policy.profile)?;
    let client = find_client(&jws, params, registry)?;
    // RFC 8725 §3.1/§3.8: the key comes from the client's registration only, by kid when the
    // header names one, else every registered key that fits the algorithm.
    let kid = jws.unverified_header_str("kid").map(str::to_owned);
    let alg = jws.alg();
    let verified = jws
        .verify_any(client.keys_for(alg, kid.as_deref()))
        .map_err(|e| {
            let which = match &kid {
                Some(kid) => format!("the registered key with kid {kid}"),
                None => "any registered key".to_owned(),
            };
            OAuthError::invalid_client(match e {
                segl_jose::Error::NoMatchingKey => {
                    format!("no registered key fits alg {alg} and {which}")
                }
                _ => format!("client_assertion signature does not verify with {which}"),
            })
        })?;
    let claims = verified.into_claims();
    let (jti, expires_at) = check_claims(&claims, policy, endpoint, now)?;
    Ok(VerifiedAssertion {
        client,
        jti,
        expires_at,
        claims,
    })
}

/// Header rules: explicit type if any, no embedded or referenced keys, allowed algorithm.
fn check_header(jws: &UnverifiedJws, profile: Profile) -> Result<(), OAuthError> {
    if let Some(typ) = jws.unverified_header().get("typ") {
        let typ = typ.as_str().unwrap_or("");
        let bare = typ
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |_| typ.get(12..).unwrap_or(""));
        // RFC 8725 §3.12: a DPoP proof, access token or ID token can never pass as an assertion.
        if !bare.eq_ignore_ascii_case("JWT")
            && !bare.eq_ignore_ascii_case(segl_proto::typ::CLIENT_AUTHENTICATION)
        {
            return Err(OAuthError::invalid_client(format!(
                "a JWT of typ {typ} is not a client assertion (use client-authentication+jwt or JWT)"
            )));
        }
    }
    for member in ["jwk", "jku", "x5u", "x5c"] {
        if jws.unverified_header().contains_key(member) {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion header must not carry {member}: keys come only from the client's registration"
            )));
        }
    }
    if !profile.accepted_algs().contains(&jws.alg()) {
        return Err(OAuthError::invalid_client(format!(
            "alg {} is not accepted for client assertions",
            jws.alg()
        )));
    }
    Ok(())
}

/// RFC 7523 §3 items 1–2: `iss` = `sub` = client_id, which must be registered.
fn find_client(
    jws: &UnverifiedJws,
    params: &ClientAuthParams,
    registry: &Registry,
) -> Result<Arc<Client>, OAuthError> {
    let claims = jws.unverified_claims();
    let iss = claims.get("iss").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    let (Some(iss), Some(sub)) = (iss, sub) else {
        return Err(OAuthError::invalid_client(
            "client_assertion needs iss and sub, both equal to the client_id",
        ));
    };
    if iss != sub {
        return Err(OAuthError::invalid_client(
            "client_assertion iss and sub must both equal the client_id",
        ));
    }
    if params.client_id.as_deref().is_some_and(|id| id != iss) {
        return Err(OAuthError::invalid_client(
            "client_id does not match the client_assertion issuer",
        ));
    }
    registry
        .client(iss)
        .cloned()
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))
}

/// RFC 7523 §3 items 3–7 with HelseID's windows. Returns the `jti` and `exp`.
fn check_claims(
    claims: &JsonObject,
    policy: &Policy,
    endpoint: Endpoint,
    now: UnixTime,
) -> Result<(String, UnixTime), OAuthError> {
    check_audience(claims.get("aud"), policy, endpoint)?;
    let numeric_strings = policy.profile == Profile::HelseId;
    let exp = time_claim(claims, "exp", numeric_strings)?
        .ok_or_else(|| OAuthError::invalid_client("client_assertion has no exp"))?;
    let iat = time_claim(claims, "iat", numeric_strings)?;
    let nbf = time_claim(claims, "nbf", numeric_strings)?;
    let now_s = now.secs();
    if exp <= now_s.saturating_sub(CLOCK_SKEW) {
        return Err(OAuthError::invalid_client(
            "client_assertion has expired (exp is past)",
        ));
    }
    if iat.is_some_and(|iat| iat > now_s + CLOCK_SKEW) {
        return Err(OAuthError::invalid_client(
            "client_assertion iat is in the future: check the client's clock",
        ));
    }
    if nbf.is_some_and(|nbf| nbf > now_s + CLOCK_SKEW) {
        return Err(OAuthError::invalid_client(
            "client_assertion is not valid yet (nbf)",
        ));
    }
    // Without iat, the lifetime is measured from now.
    let start = iat.unwrap_or(now_s);
    if exp.saturating_sub(start) > MAX_ASSERTION_LIFETIME {
        return Err(OAuthError::invalid_client(format!(
            "client_assertion lives too long: exp must be at most {MAX_ASSERTION_LIFETIME} s after iat"
        )));
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j.clone(),
        Some(Value::String(j)) if !j.is_empty() => {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion jti is longer than {MAX_JTI_LEN} characters"
            )));
        }
        _ => return Err(OAuthError::invalid_client("client_assertion needs a jti")),
    };
    Ok((jti, UnixTime(exp)))
}

/// The assertion must be meant for us (SECURITY.md D2; DESIGN.md contract).
fn check_audience(
    aud: Option<&Value>,
    policy: &Policy,
    endpoint: Endpoint,
) -> Result<(), OAuthError> {
    let single = match aud {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Array(items)) if items.len() == 1 => items.first().and_then(Value::as_str),
        _ => None,
    };
    let Some(aud) = single else {
        return Err(OAuthError::invalid_client(format!(
            "client_assertion aud must be the issuer {} (one value)",
            policy.issuer
        )));
    };
    if aud == policy.issuer {
        return Ok(());
    }
    // Profile helseid also takes what HelseID's own samples send: the issuer with a trailing
    // slash, and at the token endpoint its URL.
    let helseid_alias = policy.profile == Profile::HelseId
        && (aud.strip_suffix('/') == Some(policy.issuer.as_str())
            || (endpoint == Endpoint::Token && aud == policy.token_endpoint));
    if helseid_alias {
        return Ok(());
    }
    Err(OAuthError::invalid_client(format!(
        "client_assertion aud must be the issuer {}",
        policy.issuer
    )))
}

/// A NumericDate claim; in profile `helseid` a numeric string is accepted (SECURITY.md D7).
fn time_claim(claims: &JsonObject, name: &str, strings: bool) -> Result<Option<i64>, OAuthError> {
    let bad =
        || OAuthError::invalid_client(format!("client_assertion {name} is not a NumericDate"));
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) if strings => s.parse::<i64>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
