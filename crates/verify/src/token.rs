//! The claims checks of an access token whose signature verified (RFC 9068 §4, HELSEID.md §10
//! steps 3–5), and [`VerifiedToken`], the typed result with accessors for HelseID's claims.
//!
//! A [`VerifiedToken`] is built only here, from [`CheckedClaims`] plus the presentation check:
//! [`CheckedClaims::into_bearer`] for an unbound token, [`CheckedClaims::into_dpop`] with the
//! [`VerifiedDpop`] of a proof whose key is the one the token is bound to.

use crate::config::Settings;
use segl_jose::JsonObject;
use segl_jose::dpop::VerifiedDpop;
use segl_proto::claims as c;
use serde_json::Value;

/// An actor in a token-exchange chain (RFC 8693 §4.1, HELSEID.md §9).
#[derive(Debug, Clone, PartialEq)]
pub struct Actor {
    claims: JsonObject,
}

impl Actor {
    /// The actor client's `client_id`.
    pub fn client_id(&self) -> Option<&str> {
        str_claim(&self.claims, "client_id")
    }

    /// The issuer of the token the actor exchanged.
    pub fn iss(&self) -> Option<&str> {
        str_claim(&self.claims, "iss")
    }

    /// The actor's `helseid://claims/client/claims/orgnr_parent`.
    pub fn orgnr_parent(&self) -> Option<&str> {
        str_claim(&self.claims, c::ORGNR_PARENT)
    }

    /// The actor's `helseid://claims/client/claims/orgnr_child`.
    pub fn orgnr_child(&self) -> Option<&str> {
        str_claim(&self.claims, c::ORGNR_CHILD)
    }

    /// All of this actor's claims, without its nested `act`.
    pub fn claims(&self) -> &JsonObject {
        &self.claims
    }
}

/// How the token is bound (`cnf`, RFC 7800).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cnf {
    /// No `cnf`: a bearer token.
    Unbound,
    /// `cnf.jkt`: bound to a DPoP key (RFC 9449 §6.1).
    Jkt(String),
    /// Bound some other way (e.g. `x5t#S256`), which this verifier cannot check.
    Other,
}

/// A token whose signature, issuer, audience and lifetime passed; its presentation (Bearer or
/// DPoP) is not checked yet.
#[derive(Debug)]
pub(crate) struct CheckedClaims {
    claims: JsonObject,
    audience: Vec<String>,
    scopes: Vec<String>,
    expires_at: i64,
    actors: Vec<Actor>,
    pub(crate) cnf: Cnf,
}

impl CheckedClaims {
    /// HELSEID.md §10 (3)–(5) and RFC 9068 §4: exact `iss`, `aud`, `exp`/`nbf` with skew; and
    /// the shapes of `scope`, `cnf` and `act`. The error is an `invalid_token` description.
    pub(crate) fn check(
        claims: JsonObject,
        issuer: &str,
        settings: &Settings,
        now: i64,
    ) -> Result<CheckedClaims, String> {
        // (3) iss, compared exactly (no normalisation: RFC 9068 §4 step 4).
        if str_claim(&claims, "iss") != Some(issuer) {
            return Err(format!("iss is not {issuer}"));
        }
        // (4) aud: a string or an array of strings naming this API, alone if so configured.
        let audience =
            strings(claims.get("aud")).ok_or("aud must be a string or an array of strings")?;
        if !audience.contains(&settings.audience) {
            return Err(format!(
                "the token is not for audience {}",
                settings.audience
            ));
        }
        if settings.require_single_audience && audience.len() != 1 {
            return Err("the token must have a single audience".into());
        }
        // (5) exp is required; exp and nbf get the bounded skew.
        let expires_at = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or("exp is required and must be a number")?;
        if now >= expires_at.saturating_add(settings.skew) {
            return Err("the token has expired".into());
        }
        match claims.get("nbf").map(numeric_date) {
            None => {}
            Some(None) => return Err("nbf must be a number".into()),
            Some(Some(nbf)) if nbf > now.saturating_add(settings.skew) => {
                return Err("the token is not valid yet (nbf)".into());
            }
            Some(Some(_)) => {}
        }
        // scope: HelseID's JSON array, or RFC 9068's space-separated string.
        let scopes = match claims.get("scope") {
            None => Vec::new(),
            Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
            Some(v @ Value::Array(_)) => strings(Some(v)).ok_or("scope array must hold strings")?,
            Some(_) => return Err("scope must be a string or an array of strings".into()),
        };
        let cnf = match claims.get("cnf") {
            None => Cnf::Unbound,
            Some(Value::Object(cnf)) => match cnf.get("jkt") {
                Some(Value::String(jkt)) => Cnf::Jkt(jkt.clone()),
                Some(_) => return Err("cnf.jkt must be a string".into()),
                None => Cnf::Other,
            },
            Some(_) => return Err("cnf must be an object".into()),
        };
        let actors = actor_chain(claims.get("act"))?;
        Ok(CheckedClaims {
            claims,
            audience,
            scopes,
            expires_at,
            actors,
            cnf,
        })
    }

    /// RFC 9449 §7.2 / RFC 6750: an unbound token presented as Bearer.
    pub(crate) fn into_bearer(self) -> Result<VerifiedToken, String> {
        if self.cnf != Cnf::Unbound {
            return Err(
                "this token is sender-constrained (cnf) and cannot be used as a Bearer token"
                    .into(),
            );
        }
        Ok(self.into_token(None))
    }

    /// RFC 9449 §7.1: a DPoP-bound token with a verified proof made with the bound key.
    pub(crate) fn into_dpop(self, proof: VerifiedDpop) -> Result<VerifiedToken, String> {
        match &self.cnf {
            Cnf::Jkt(jkt) if jkt == proof.jkt() => Ok(self.into_token(Some(proof))),
            _ => Err("the DPoP proof key is not the key the token is bound to".into()),
        }
    }

    fn into_token(self, dpop: Option<VerifiedDpop>) -> VerifiedToken {
        VerifiedToken {
            claims: self.claims,
            audience: self.audience,
            scopes: self.scopes,
            expires_at: self.expires_at,
            actors: self.actors,
            dpop,
        }
    }
}

/// `act` (RFC 8693 §4.1): nested objects, the outermost the current actor.
fn actor_chain(mut next: Option<&Value>) -> Result<Vec<Actor>, String> {
    let mut actors = Vec::new();
    while let Some(value) = next {
        let Value::Object(act) = value else {
            return Err("act must be an object".into());
        };
        let mut claims = act.clone();
        claims.remove("act");
        actors.push(Actor { claims });
        next = act.get("act");
    }
    Ok(actors)
}

/// A NumericDate (RFC 7519 §2): integer or fractional seconds.
pub(crate) fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
    })
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn str_claim<'a>(claims: &'a JsonObject, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// A verified access token: signature, issuer, audience, lifetime, presentation (Bearer or
/// DPoP with proof) and required scopes all checked. Only [`crate::Verifier`] makes one.
#[derive(Debug)]
pub struct VerifiedToken {
    claims: JsonObject,
    audience: Vec<String>,
    scopes: Vec<String>,
    expires_at: i64,
    actors: Vec<Actor>,
    dpop: Option<VerifiedDpop>,
}

impl VerifiedToken {
    /// All claims, for anything the accessors do not cover.
    pub fn claims(&self) -> &JsonObject {
        &self.claims
    }

    /// A string claim by name.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        str_claim(&self.claims, name)
    }

    /// `client_id`: the client that called (the actor after token exchange).
    pub fn client_id(&self) -> Option<&str> {
        self.claim_str("client_id")
    }

    /// `helseid://claims/client/client_name`.
    pub fn client_name(&self) -> Option<&str> {
        self.claim_str(c::CLIENT_NAME)
    }

    /// `helseid://claims/client/claims/orgnr_parent`: the legal entity the client acts for.
    pub fn orgnr_parent(&self) -> Option<&str> {
        self.claim_str(c::ORGNR_PARENT)
    }

    /// `helseid://claims/client/claims/orgnr_child`: the sub-unit the client acts for.
    pub fn orgnr_child(&self) -> Option<&str> {
        self.claim_str(c::ORGNR_CHILD)
    }

    /// `helseid://claims/client/claims/orgnr_supplier`: the supplier of a multi-tenant client.
    pub fn orgnr_supplier(&self) -> Option<&str> {
        self.claim_str(c::ORGNR_SUPPLIER)
    }

    /// `helseid://claims/client/client_tenancy`: `single-tenant` or `multi-tenant`.
    pub fn client_tenancy(&self) -> Option<&str> {
        self.claim_str(c::CLIENT_TENANCY)
    }

    /// `helseid://claims/identity/pid`: the person's national identity number.
    pub fn pid(&self) -> Option<&str> {
        self.claim_str(c::PID)
    }

    /// `helseid://claims/identity/pid_pseudonym`.
    pub fn pid_pseudonym(&self) -> Option<&str> {
        self.claim_str(c::PID_PSEUDONYM)
    }

    /// `helseid://claims/hpr/hpr_number`: the health-personnel-register number.
    pub fn hpr_number(&self) -> Option<&str> {
        self.claim_str(c::HPR_NUMBER)
    }

    /// `helseid://claims/identity/security_level` (`"3"`, `"4"`).
    pub fn security_level(&self) -> Option<&str> {
        self.claim_str(c::SECURITY_LEVEL)
    }

    /// `helseid://claims/identity/assurance_level` (`substantial`, `high`).
    pub fn assurance_level(&self) -> Option<&str> {
        self.claim_str(c::ASSURANCE_LEVEL)
    }

    /// `helseid://claims/identity/network` (`internett`, `helsenett`).
    pub fn network(&self) -> Option<&str> {
        self.claim_str(c::NETWORK)
    }

    /// `sub`.
    pub fn subject(&self) -> Option<&str> {
        self.claim_str("sub")
    }

    /// `jti`.
    pub fn jti(&self) -> Option<&str> {
        self.claim_str("jti")
    }

    /// `helseid://claims/client/original_client_id`: the first client of an exchange chain.
    pub fn original_client_id(&self) -> Option<&str> {
        self.claim_str(c::ORIGINAL_CLIENT_ID)
    }

    /// The audiences (`aud` as a list).
    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// The granted scopes (`scope`, from an array or a space-separated string).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// `exp`, Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// The token-exchange actors (`act`), outermost (the current actor) first.
    pub fn actors(&self) -> &[Actor] {
        &self.actors
    }

    /// Whether the token is DPoP-bound (and so was presented with a verified proof).
    pub fn is_dpop_bound(&self) -> bool {
        self.dpop.is_some()
    }

    /// The thumbprint of the DPoP key (`cnf.jkt`), for a DPoP-bound token.
    pub fn jkt(&self) -> Option<&str> {
        self.dpop.as_ref().map(VerifiedDpop::jkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn act_chain_is_outermost_first_and_must_be_objects() {
        let act = json!({"client_id": "b", "act": {"client_id": "a"}});
        let chain = actor_chain(Some(&act)).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].client_id(), Some("b"));
        assert!(!chain[0].claims().contains_key("act"));
        assert_eq!(chain[1].client_id(), Some("a"));
        assert!(actor_chain(Some(&json!("b"))).is_err());
        assert!(actor_chain(Some(&json!({"act": 1}))).is_err());
        assert!(actor_chain(None).unwrap().is_empty());
    }

    #[test]
    fn numeric_dates_and_string_lists() {
        assert_eq!(numeric_date(&json!(10)), Some(10));
        assert_eq!(numeric_date(&json!(10.9)), Some(10));
        assert_eq!(numeric_date(&json!("10")), None);
        assert_eq!(strings(Some(&json!("a"))), Some(vec!["a".to_owned()]));
        assert_eq!(strings(Some(&json!(["a", 1]))), None);
        assert_eq!(strings(Some(&json!([]))), Some(vec![]));
    }
}
