//! DPoP proofs (RFC 9449): the stateless checks of §4.3, and proof creation for clients.
//!
//! [`check_proof`] performs every check that needs no memory: one well-formed JWT, `typ`
//! `dpop+jwt`, an allowed asymmetric `alg`, a public-only `jwk` that verifies the signature,
//! `htm`, `htu` (compared after syntax- and scheme-based normalisation, without query and
//! fragment), `iat` inside the window, `ath` when an access token is presented, and the `nonce`
//! through the caller's predicate. What needs memory — that the `jti` was not seen before — is
//! the caller's: the result is a [`CheckedProof`] whose [`CheckedProof::replay_key`] the caller
//! records, and only [`CheckedProof::accept`] with the verdict yields a [`VerifiedDpop`].

use crate::{Alg, Error, Jwk, SigningKey, UnverifiedJws, VerifyingKey, b64};
use serde_json::{Value, json};

/// `typ` of a DPoP proof.
pub const DPOP_TYP: &str = "dpop+jwt";

/// The longest `jti` accepted in a proof.
pub const MAX_PROOF_JTI_LEN: usize = 256;

/// Why a proof was refused; the text is safe to send as `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// The proof is invalid (`invalid_dpop_proof`).
    #[error("{0}")]
    Invalid(String),
    /// The proof lacks the current server nonce (`use_dpop_nonce`).
    #[error("{0}")]
    UseNonce(String),
}

fn invalid(text: impl Into<String>) -> DpopError {
    DpopError::Invalid(text.into())
}

/// What the proof must match.
pub struct ProofRequirements<'a> {
    /// The HTTP method of the request.
    pub method: &'a str,
    /// The request URL (query and fragment are ignored).
    pub url: &'a str,
    /// The current time, unix seconds.
    pub now: i64,
    /// How far `iat` may be from `now`, seconds (both directions).
    pub max_age: i64,
    /// Algorithms accepted.
    pub algs: &'a [Alg],
    /// The access token presented with the proof (resource servers): `ath` must match.
    pub access_token: Option<&'a str>,
    /// The nonce policy.
    pub nonce: NoncePolicy<'a>,
}

/// How the `nonce` claim is treated.
pub enum NoncePolicy<'a> {
    /// Nonces are not used: any `nonce` claim is ignored.
    Off,
    /// A nonce is optional; when present it must pass the predicate.
    Optional(&'a (dyn Fn(&str) -> bool + Sync)),
    /// A nonce is required and must pass the predicate.
    Required(&'a (dyn Fn(&str) -> bool + Sync)),
}

/// A proof that passed every stateless check; its `jti` is not recorded yet.
#[derive(Debug, Clone)]
pub struct CheckedProof {
    jkt: String,
    jti: String,
    iat: i64,
}

/// A proof that passed every check, including replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDpop {
    jkt: String,
}

impl CheckedProof {
    /// The digest under which the proof's `jti` must be recorded (key thumbprint and jti).
    pub fn replay_key(&self) -> [u8; 32] {
        let mut input = Vec::with_capacity(self.jkt.len() + self.jti.len() + 1);
        input.extend_from_slice(self.jkt.as_bytes());
        input.push(0);
        input.extend_from_slice(self.jti.as_bytes());
        crate::sha256(&input)
    }

    /// Until when the `jti` must be remembered: as long as the proof's `iat` is acceptable.
    pub fn remember_until(&self, max_age: i64) -> i64 {
        self.iat.saturating_add(max_age)
    }

    /// The proof key's thumbprint.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// Completes verification with the replay verdict (`true`: first use of the `jti`).
    pub fn accept(self, jti_was_fresh: bool) -> Result<VerifiedDpop, DpopError> {
        if jti_was_fresh {
            Ok(VerifiedDpop { jkt: self.jkt })
        } else {
            Err(invalid(
                "DPoP proof has been used before: every proof needs a new jti",
            ))
        }
    }
}

impl VerifiedDpop {
    /// The RFC 7638 thumbprint of the proof key (`cnf.jkt` of a bound token).
    pub fn jkt(&self) -> &str {
        &self.jkt
    }
}

/// Normalises a URL for `htu` comparison: scheme and host lower-cased, default port dropped,
/// an empty path made `/`, percent-encoding normalised, query and fragment removed.
pub fn normalize_htu(url: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    u.set_query(None);
    u.set_fragment(None);
    Some(u.to_string())
}

/// Checks one proof (the value of the single `DPoP` header) against `req`.
pub fn check_proof(proof: &str, req: &ProofRequirements<'_>) -> Result<CheckedProof, DpopError> {
    // RFC 9449 §4.3 (2): a single well-formed JWT.
    let jws = UnverifiedJws::parse(proof)
        .map_err(|e| invalid(format!("DPoP proof is not a valid JWT: {e}")))?;
    // (4) typ; the JSON decoder has already unescaped "dpop\u002Bjwt".
    if jws.unverified_header_str("typ") != Some(DPOP_TYP) {
        return Err(invalid("DPoP proof typ must be dpop+jwt"));
    }
    // (5) an allowed asymmetric alg (none and HMAC never parse into an Alg).
    if !req.algs.contains(&jws.alg()) {
        return Err(invalid(format!(
            "DPoP proof alg {} is not accepted",
            jws.alg()
        )));
    }
    // (7) the jwk header: a public key only.
    let jwk_value = jws
        .unverified_header()
        .get("jwk")
        .ok_or_else(|| invalid("DPoP proof has no jwk header"))?;
    let jwk: Jwk = serde_json::from_value(jwk_value.clone())
        .map_err(|_| invalid("DPoP proof jwk is not a JWK"))?;
    if jwk.has_private_members() {
        return Err(invalid("DPoP proof jwk contains a private key"));
    }
    // (6) the signature, with that key (parsed once per key and algorithm: clients reuse
    // their DPoP keys, and an RSA key costs more to parse than to verify with).
    let jkt = jwk
        .thumbprint()
        .map_err(|e| invalid(format!("DPoP proof jwk: {e}")))?;
    let key = cached_key(&jkt, &jwk, jws.alg())?;
    let claims = jws
        .verify(&key)
        .map_err(|_| invalid("DPoP proof signature does not verify"))?
        .into_claims();
    // (3) required claims.
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let jti = text("jti")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| invalid("DPoP proof needs a jti"))?;
    if jti.len() > MAX_PROOF_JTI_LEN {
        return Err(invalid("DPoP proof jti is too long"));
    }
    let htm = text("htm").ok_or_else(|| invalid("DPoP proof needs htm"))?;
    let htu = text("htu").ok_or_else(|| invalid("DPoP proof needs htu"))?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("DPoP proof needs a numeric iat"))?;
    // (8) htm.
    if htm != req.method {
        return Err(invalid(format!(
            "DPoP proof htm {htm} does not match the request method {}",
            req.method
        )));
    }
    // (9) htu, normalised, without query and fragment (the common exact match needs no
    // parsing).
    if htu != req.url {
        let expected =
            normalize_htu(req.url).ok_or_else(|| invalid("request URL cannot be normalised"))?;
        if normalize_htu(htu).as_deref() != Some(expected.as_str()) {
            return Err(invalid(format!("DPoP proof htu does not match {expected}")));
        }
    }
    // (11) iat within the window, also when a nonce is present.
    if iat.abs_diff(req.now) > req.max_age.unsigned_abs() {
        return Err(invalid(format!(
            "DPoP proof iat is more than {} s from the server's time",
            req.max_age
        )));
    }
    // (12) ath, when an access token is presented (resource servers).
    if let Some(token) = req.access_token {
        let ath = b64::encode(crate::sha256(token.as_bytes()));
        if text("ath") != Some(ath.as_str()) {
            return Err(invalid("DPoP proof ath does not match the access token"));
        }
    }
    // (10) nonce.
    let nonce = text("nonce");
    match (&req.nonce, nonce) {
        (NoncePolicy::Off, _) => {}
        (NoncePolicy::Optional(_), None) => {}
        (NoncePolicy::Required(_), None) => {
            return Err(DpopError::UseNonce("a DPoP nonce is required".into()));
        }
        (NoncePolicy::Optional(ok) | NoncePolicy::Required(ok), Some(n)) => {
            if !ok(n) {
                return Err(DpopError::UseNonce("the DPoP nonce is not current".into()));
            }
        }
    }
    Ok(CheckedProof {
        jkt,
        jti: jti.to_owned(),
        iat,
    })
}

/// Parsed proof keys by thumbprint and algorithm. Bounded: when full it is emptied, so a flood
/// of one-off keys costs parsing, never memory.
fn cached_key(jkt: &str, jwk: &Jwk, alg: Alg) -> Result<std::sync::Arc<VerifyingKey>, DpopError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    const CAPACITY: usize = 4096;
    type Cache = Mutex<HashMap<(String, Alg), Arc<VerifyingKey>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = (jkt.to_owned(), alg);
    if let Some(k) = cache.lock().ok().and_then(|m| m.get(&id).cloned()) {
        return Ok(k);
    }
    let key = Arc::new(
        VerifyingKey::from_jwk(jwk, alg).map_err(|e| invalid(format!("DPoP proof jwk: {e}")))?,
    );
    if let Ok(mut m) = cache.lock() {
        if m.len() >= CAPACITY {
            m.clear();
        }
        m.insert(id, key.clone());
    }
    Ok(key)
}

/// Creates a DPoP proof (client side).
pub fn create_proof(
    key: &SigningKey,
    method: &str,
    url: &str,
    now: i64,
    nonce: Option<&str>,
    access_token: Option<&str>,
) -> Result<String, Error> {
    let mut jti = [0u8; 16];
    crate::random_bytes(&mut jti)?;
    let mut claims = serde_json::Map::new();
    claims.insert("jti".into(), json!(b64::encode(jti)));
    claims.insert("htm".into(), json!(method));
    let htu = normalize_htu(url).ok_or(Error::Malformed("htu is not an http(s) URL"))?;
    claims.insert("htu".into(), json!(htu));
    claims.insert("iat".into(), json!(now));
    if let Some(n) = nonce {
        claims.insert("nonce".into(), json!(n));
    }
    if let Some(t) = access_token {
        claims.insert(
            "ath".into(),
            json!(b64::encode(crate::sha256(t.as_bytes()))),
        );
    }
    let claims = Value::Object(claims);
    let header = json!({"typ": DPOP_TYP, "alg": key.alg().name(), "jwk": key.public_jwk().to_public_without_meta()});
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string()),
        b64::encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64::encode(sig)))
}

#[cfg(test)]
mod tests;
