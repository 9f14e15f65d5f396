//! Token exchange (RFC 8693) in HelseID's profile (HELSEID.md §9): an actor API that received a
//! token for its own audience exchanges it for a token to a downstream API that still names the
//! original client and person, and names the actor in `act` (nested for chains, the oldest
//! innermost).
//!
//! [`verify_subject`] checks the subject token with the issuer's published keys (passed in) and
//! returns a [`SubjectToken`]; [`exchange`] takes that proof, the authenticated actor and its
//! DPoP proof, and decides.

use crate::client_auth::AuthenticatedClient;
use crate::grant::{AccessTokenClaims, Confirmation};
use crate::organization::OrgSelection;
use crate::{OAuthError, Policy, Profile, Registry, UnixTime};
use segl_jose::dpop::VerifiedDpop;
use segl_jose::{JsonObject, VerifyingKey};
use segl_proto::{ErrorCode, claims as c};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// `urn:ietf:params:oauth:token-type:access_token`.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The parameters of a token-exchange request (RFC 8693 §2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// `subject_token`.
    pub subject_token: String,
    /// `subject_token_type`.
    pub subject_token_type: Option<String>,
    /// `requested_token_type`.
    pub requested_token_type: Option<String>,
    /// Requested scopes.
    pub scope: Option<Vec<String>>,
    /// `resource` values.
    pub resource: Vec<String>,
    /// `audience` values.
    pub audience: Vec<String>,
    /// Whether an `actor_token` (or its type) was sent.
    pub actor_token_present: bool,
}

/// A subject token that this server issued, verified: signature, `typ`, `iss`, lifetime.
#[derive(Debug, Clone)]
pub struct SubjectToken {
    claims: JsonObject,
}

impl SubjectToken {
    /// The verified claims.
    pub fn claims(&self) -> &JsonObject {
        &self.claims
    }

    /// The token id.
    pub fn jti(&self) -> &str {
        self.claims.get("jti").and_then(Value::as_str).unwrap_or("")
    }
}

fn bad_subject(detail: &str) -> OAuthError {
    OAuthError::invalid_request(format!("invalid subject_token - {detail}"))
}

/// Verifies a subject token against the issuer's published keys (current and retired).
pub fn verify_subject(
    jwt: &str,
    keys: &[VerifyingKey],
    issuer: &str,
    now: UnixTime,
) -> Result<SubjectToken, OAuthError> {
    crate::issued::verify(
        jwt,
        keys,
        issuer,
        crate::issued::Kind::AccessToken,
        false,
        now,
    )
    .map(|claims| SubjectToken { claims })
    .map_err(|e| bad_subject(&e))
}

/// How deep the `act` chain of a token is.
fn depth(claims: &JsonObject) -> usize {
    let mut n = 0;
    let mut act = claims.get("act");
    while let Some(Value::Object(a)) = act {
        n += 1;
        act = a.get("act");
    }
    n
}

/// Decides an exchange (RFC 8693 §2.2; HELSEID.md §9 for the error texts).
#[allow(clippy::too_many_arguments)]
pub fn exchange(
    actor: &AuthenticatedClient,
    request: &ExchangeRequest,
    subject: &SubjectToken,
    registry: &Registry,
    policy: &Policy,
    max_depth: usize,
    now: UnixTime,
    jti: String,
    dpop: Option<&VerifiedDpop>,
    actor_org: &OrgSelection,
) -> Result<AccessTokenClaims, OAuthError> {
    let client = actor.client();
    if !client.has_grant(segl_proto::grant::TOKEN_EXCHANGE) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use token exchange",
        ));
    }
    check_request(request)?;
    let s = subject.claims();
    // The actor may exchange only tokens issued to an audience it is entitled to.
    let audiences: Vec<&str> = match s.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !audiences
        .iter()
        .any(|a| client.exchange_subject_audiences.iter().any(|x| x == a))
    {
        return Err(OAuthError::invalid_request(format!(
            "no audience matching configuration owner of client_id {} was found in subject token",
            client.client_id
        )));
    }
    // The subject's client may restrict which actors exchange its tokens.
    let subject_client_id = s.get("client_id").and_then(Value::as_str).unwrap_or("");
    if let Some(subject_client) = registry.client(subject_client_id)
        && !subject_client.exchange_actors.is_empty()
        && !subject_client
            .exchange_actors
            .iter()
            .any(|a| a == &client.client_id)
    {
        return Err(OAuthError::invalid_request("not permitted"));
    }
    if depth(s) + 1 > max_depth {
        return Err(OAuthError::invalid_request(format!(
            "subject_token exchanged too many times ({max_depth})"
        )));
    }
    let bound = s.get("cnf").and_then(|c| c.get("jkt")).is_some();
    let cnf = match dpop {
        Some(p) => Some(Confirmation {
            jkt: p.jkt().to_owned(),
        }),
        // RFC 9700 §4.10.1: a sender-constrained subject is never turned into a bearer token.
        None if bound || client.require_dpop => {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "token exchange needs a DPoP proof: the new token is bound to the actor's key",
            ));
        }
        None => None,
    };
    let (aud, scopes) = target(request, client, registry)?;
    let exp = (now.secs() + policy.access_token_lifetime)
        .min(s.get("exp").and_then(Value::as_i64).unwrap_or(0));
    Ok(issued_claims(
        actor, actor_org, s, &aud, &scopes, policy, now, exp, jti, cnf,
    ))
}

fn check_request(request: &ExchangeRequest) -> Result<(), OAuthError> {
    match request.subject_token_type.as_deref() {
        Some(ACCESS_TOKEN_TYPE) => {}
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type {other} is not supported: use {ACCESS_TOKEN_TYPE}"
            )));
        }
        None => {
            return Err(OAuthError::invalid_request(
                "subject_token_type is required",
            ));
        }
    }
    if request
        .requested_token_type
        .as_deref()
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    if request.actor_token_present {
        return Err(OAuthError::invalid_request(
            "actor_token is not supported: the actor is the authenticated client",
        ));
    }
    Ok(())
}

/// The target API: from `resource`/`audience` or the requested scopes; one API per token.
fn target(
    request: &ExchangeRequest,
    client: &crate::Client,
    registry: &Registry,
) -> Result<(String, Vec<String>), OAuthError> {
    let named: BTreeSet<&str> = request
        .resource
        .iter()
        .chain(&request.audience)
        .map(String::as_str)
        .collect();
    if named.len() > 1 {
        return Err(OAuthError::invalid_target("one target API per exchange"));
    }
    let requested: Vec<String> = match &request.scope {
        Some(s) => s.clone(),
        None => client
            .scopes
            .iter()
            .filter(|s| registry.api_of_scope(s).is_some())
            .cloned()
            .collect(),
    };
    for s in &requested {
        if !client.scopes.contains(s) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {s} is not allowed for this client"
            )));
        }
    }
    let apis: BTreeSet<&str> = requested
        .iter()
        .filter_map(|s| registry.api_of_scope(s))
        .map(|a| a.audience.as_str())
        .collect();
    let audience = match (named.iter().next(), apis.len()) {
        (Some(n), _) => {
            if registry.api(n).is_none() || !apis.contains(n) {
                return Err(OAuthError::invalid_target(format!(
                    "no requested scope is for {n}"
                )));
            }
            (*n).to_owned()
        }
        (None, 1) => apis
            .iter()
            .next()
            .map(|a| (*a).to_owned())
            .unwrap_or_default(),
        (None, 0) => return Err(OAuthError::invalid_scope("no API scope requested")),
        (None, _) => {
            return Err(OAuthError::invalid_target(
                "invalid scopes requested: they span several APIs",
            ));
        }
    };
    let scopes = requested
        .into_iter()
        .filter(|s| {
            registry
                .api_of_scope(s)
                .is_some_and(|a| a.audience == audience)
        })
        .collect();
    Ok((audience, scopes))
}

#[allow(clippy::too_many_arguments)]
fn issued_claims(
    actor: &AuthenticatedClient,
    actor_org: &OrgSelection,
    s: &JsonObject,
    aud: &str,
    scopes: &[String],
    policy: &Policy,
    now: UnixTime,
    exp: i64,
    jti: String,
    cnf: Option<Confirmation>,
) -> AccessTokenClaims {
    let client = actor.client();
    let text = |name: &str| s.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    // Copied from the subject: every helseid:// claim (client and identity), sub, idp, amr,
    // auth_time; the fixed client claims are the subject's too (DESIGN.md contract).
    let mut identity: Map<String, Value> = s
        .iter()
        .filter(|(k, _)| {
            (k.starts_with("helseid://")
                || matches!(
                    k.as_str(),
                    "idp" | "amr" | "auth_time" | "sid" | "nhn:sfm:journal-id"
                ))
                && !matches!(
                    k.as_str(),
                    c::CLIENT_NAME | c::ORGNR_PARENT | c::ORGNR_SUPPLIER | c::CLIENT_TENANCY
                )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let original = s
        .get(c::ORIGINAL_CLIENT_ID)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| text("client_id"));
    identity.insert(c::ORIGINAL_CLIENT_ID.into(), json!(original));
    let mut act = Map::new();
    act.insert("client_id".into(), json!(client.client_id));
    act.insert("iss".into(), json!(policy.issuer));
    act.insert(c::ORGNR_PARENT.into(), json!(actor_org.parent));
    if let Some(child) = &actor_org.child {
        act.insert(c::ORGNR_CHILD.into(), json!(child));
    }
    if let Some(inner) = s.get("act") {
        act.insert("act".into(), inner.clone());
    }
    identity.insert("act".into(), Value::Object(act));
    let scope = match policy.profile {
        Profile::HelseId => json!(scopes),
        Profile::Fapi2 => json!(scopes.join(" ")),
    };
    let tenancy = if text(c::CLIENT_TENANCY) == c::MULTI_TENANT {
        c::MULTI_TENANT
    } else {
        c::SINGLE_TENANT
    };
    AccessTokenClaims {
        iss: policy.issuer.clone(),
        aud: aud.to_owned(),
        sub: text("sub"),
        client_id: client.client_id.clone(),
        scope,
        iat: now.secs(),
        nbf: now.secs(),
        exp,
        jti,
        client_amr: c::AMR_PRIVATE_KEY_JWT,
        client_name: text(c::CLIENT_NAME),
        orgnr_parent: text(c::ORGNR_PARENT),
        orgnr_supplier: s
            .get(c::ORGNR_SUPPLIER)
            .and_then(Value::as_str)
            .map(str::to_owned),
        orgnr_child: s
            .get(c::ORGNR_CHILD)
            .and_then(Value::as_str)
            .map(str::to_owned),
        client_tenancy: tenancy,
        cnf,
        identity,
    }
}
