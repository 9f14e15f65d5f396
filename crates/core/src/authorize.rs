//! Pushed authorization requests (RFC 9126) and the authorization-code flow's decisions:
//! validating a PAR request into an [`AuthorizationRequest`], deciding at `/connect/authorize`
//! whether a session can be used, and checking the code exchange (RFC 6749 §4.1.3, RFC 7636).

use crate::client_auth::AuthenticatedClient;
use crate::form::Form;
use crate::identity::Login;
use crate::policy::CLOCK_SKEW;
use crate::{Client, OAuthError, Policy, Registry, UnixTime};
use segl_jose::{JsonObject, UnverifiedJws};
use segl_proto::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `request_uri` prefix (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// The longest `nonce` and `state` accepted.
pub const MAX_NONCE_LEN: usize = 255;

/// A validated authorization request, as stored between PAR and the code exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// The exact redirect URI.
    pub redirect_uri: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// `state`, echoed to the client.
    pub state: Option<String>,
    /// OIDC `nonce`, put in the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// `acr_values`.
    pub acr_values: Vec<String>,
    /// `prompt` values.
    pub prompt: Vec<String>,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// `ui_locales`.
    pub ui_locales: Option<String>,
    /// `login_hint`.
    pub login_hint: Option<String>,
    /// `resource` indicators (API audiences).
    pub resources: Vec<String>,
    /// DPoP key thumbprint the code is bound to (RFC 9449 §10).
    pub dpop_jkt: Option<String>,
    /// Raw `authorization_details` from a request object, if any.
    pub authorization_details: Option<Value>,
    /// HelseID's `on_behalf_of`: the organization the person logs in on behalf of, passed on
    /// to upstream identity providers that accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

impl AuthorizationRequest {
    /// Whether `prompt` contains `value`.
    pub fn prompts(&self, value: &str) -> bool {
        self.prompt.iter().any(|p| p == value)
    }

    /// The language for pages: `nb` unless `ui_locales` prefers English.
    pub fn language(&self) -> &'static str {
        language(self.ui_locales.as_deref())
    }
}

/// `nb` or `en` from a `ui_locales` value (first supported tag wins; default `nb`).
pub fn language(ui_locales: Option<&str>) -> &'static str {
    for tag in ui_locales.unwrap_or("").split_ascii_whitespace() {
        let lower = tag.to_ascii_lowercase();
        if lower.starts_with("en") {
            return "en";
        }
        if lower.starts_with("nb") || lower.starts_with("no") || lower.starts_with("nn") {
            return "nb";
        }
    }
    "nb"
}

/// What a PAR request needs besides its form: the stateless part of the request object check
/// returns the object's `jti` for the caller to record (replay).
#[derive(Debug)]
pub struct ParOutcome {
    /// The validated request.
    pub request: AuthorizationRequest,
    /// `(jti, exp)` of a request object, to be recorded as used.
    pub request_object_jti: Option<(String, i64)>,
}

/// Validates a pushed authorization request (RFC 9126 §2.1): what remains of the form after
/// client authentication, the authenticated client, and the DPoP key of the PAR request.
pub fn pushed_request(
    form: &mut Form,
    client: &AuthenticatedClient,
    registry: &Registry,
    policy: &Policy,
    dpop_jkt_header: Option<&str>,
    now: UnixTime,
) -> Result<ParOutcome, OAuthError> {
    let client = client.client();
    if form.get("request_uri").is_some() {
        return Err(OAuthError::invalid_request(
            "request_uri must not be sent to the PAR endpoint",
        ));
    }
    // RFC 9101 §6.3: the request object's values win.
    let mut request_object_jti = None;
    let mut details = None;
    if let Some(object) = form.take("request") {
        let (claims, jti) = request_object(&object, client, policy, now)?;
        request_object_jti = Some(jti);
        for (name, value) in claims {
            match (name.as_str(), value) {
                ("authorization_details", v) => details = Some(v),
                ("iss" | "aud" | "exp" | "nbf" | "iat" | "jti", _) => {}
                (_, Value::String(s)) => form.set(&name, s),
                (_, Value::Number(n)) => form.set(&name, n.to_string()),
                (_, Value::Array(items)) if name == "resource" => {
                    form.set_all(
                        "resource",
                        items
                            .into_iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
    }
    if form
        .get("client_id")
        .is_some_and(|id| id != client.client_id)
    {
        return Err(OAuthError::invalid_request(
            "client_id does not match the authenticated client",
        ));
    }
    if !client.has_grant(segl_proto::grant::AUTHORIZATION_CODE) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization_code grant",
        ));
    }
    match form.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                format!("response_type {other} is not supported: use code"),
            ));
        }
        None => {
            return Err(OAuthError::invalid_request(
                "response_type=code is required",
            ));
        }
    }
    let redirect_uri = form
        .take("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
    if !client
        .redirect_uris
        .iter()
        .any(|r| redirect_matches(r, &redirect_uri))
    {
        return Err(OAuthError::invalid_request(
            "redirect_uri is not registered for this client (exact match)",
        ));
    }
    let code_challenge = pkce_challenge(form)?;
    let scopes = requested_scopes(form, client)?;
    let resources = form.take_all("resource");
    for r in &resources {
        let api = registry
            .api(r)
            .ok_or_else(|| OAuthError::invalid_target(format!("unknown resource {r}")))?;
        if !api.scopes.iter().any(|s| client.scopes.contains(s)) {
            return Err(OAuthError::invalid_target(format!(
                "this client has no scope at resource {r}"
            )));
        }
    }
    let dpop_jkt = match (form.take("dpop_jkt"), dpop_jkt_header) {
        (Some(p), Some(h)) if p != h => {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "dpop_jkt does not match the DPoP proof's key",
            ));
        }
        (p, h) => h.map(str::to_owned).or(p),
    };
    let bounded = |name: &str, v: Option<String>| -> Result<Option<String>, OAuthError> {
        match v {
            Some(s) if s.len() > MAX_NONCE_LEN => Err(OAuthError::invalid_request(format!(
                "{name} is longer than {MAX_NONCE_LEN} characters"
            ))),
            other => Ok(other),
        }
    };
    let prompt: Vec<String> = form
        .take("prompt")
        .map(|p| p.split_ascii_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    for p in &prompt {
        if !matches!(p.as_str(), "none" | "login" | "consent" | "select_account") {
            return Err(OAuthError::invalid_request(format!(
                "prompt {p} is not supported"
            )));
        }
    }
    if prompt.len() > 1 && prompt.iter().any(|p| p == "none") {
        return Err(OAuthError::invalid_request(
            "prompt=none cannot be combined with other values",
        ));
    }
    let max_age = match form.take("max_age") {
        Some(m) => Some(m.parse::<i64>().ok().filter(|m| *m >= 0).ok_or_else(|| {
            OAuthError::invalid_request("max_age must be a non-negative integer")
        })?),
        None => None,
    };
    // HelseID's on_behalf_of: an organization the client is registered for (its own or a
    // child organization), never one it merely names.
    let on_behalf_of = form.take("on_behalf_of");
    if let Some(o) = &on_behalf_of
        && *o != client.organization
        && !client.child_organizations.contains(o)
    {
        return Err(OAuthError::invalid_request(
            "on_behalf_of must be this client's organization or one of its child organizations",
        ));
    }
    Ok(ParOutcome {
        request: AuthorizationRequest {
            client_id: client.client_id.clone(),
            redirect_uri,
            scopes,
            state: bounded("state", form.take("state"))?,
            nonce: bounded("nonce", form.take("nonce"))?,
            code_challenge,
            acr_values: form
                .take("acr_values")
                .map(|a| a.split_ascii_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            prompt,
            max_age,
            ui_locales: form.take("ui_locales"),
            login_hint: bounded("login_hint", form.take("login_hint"))?,
            resources,
            dpop_jkt,
            authorization_details: details,
            on_behalf_of,
        },
        request_object_jti,
    })
}

/// RFC 9700 §4.1.3 exact matching; for loopback `http` redirect URIs of native apps the port
/// may differ (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let strip_port = |u: &str| -> Option<String> {
        let rest = u.strip_prefix("http://")?;
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        matches!(host, "127.0.0.1" | "[::1]" | "localhost").then(|| format!("http://{host}{path}"))
    };
    matches!((strip_port(registered), strip_port(requested)), (Some(a), Some(b)) if a == b)
}

/// RFC 7636: S256 only (FAPI 2.0); `plain` and a missing challenge are refused.
fn pkce_challenge(form: &mut Form) -> Result<String, OAuthError> {
    let challenge = form
        .take("code_challenge")
        .ok_or_else(|| OAuthError::invalid_request("code_challenge is required (PKCE S256)"))?;
    match form.take("code_challenge_method").as_deref() {
        Some("S256") => {}
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "code_challenge_method {other} is not supported: use S256"
            )));
        }
        None => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method=S256 is required",
            ));
        }
    }
    // base64url of a SHA-256 digest: 43 characters.
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(OAuthError::invalid_request(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        ));
    }
    Ok(challenge)
}

fn requested_scopes(form: &mut Form, client: &Client) -> Result<Vec<String>, OAuthError> {
    let scope = form
        .take("scope")
        .ok_or_else(|| OAuthError::invalid_scope("scope is required"))?;
    let scopes: Vec<String> = scope.split_ascii_whitespace().map(str::to_owned).collect();
    for s in &scopes {
        if !client.scopes.contains(s) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {s} is not allowed for this client"
            )));
        }
    }
    if scopes.is_empty() {
        return Err(OAuthError::invalid_scope("scope is required"));
    }
    Ok(scopes)
}

/// RFC 9101 request object, checked as HelseID describes it: signed by a registered key of the
/// client with an accepted algorithm, `iss` = client_id, `aud` = the issuer, `exp` at most 60 s
/// ahead, a `jti`. Returns its claims and `(jti, exp)`.
fn request_object(
    jwt: &str,
    client: &Client,
    policy: &Policy,
    now: UnixTime,
) -> Result<(JsonObject, (String, i64)), OAuthError> {
    let bad = |d: String| OAuthError::new(ErrorCode::InvalidRequestObject, d);
    let jws = UnverifiedJws::parse(jwt).map_err(|e| bad(format!("request object: {e}")))?;
    if !policy.profile.accepted_algs().contains(&jws.alg()) {
        return Err(bad(format!(
            "request object alg {} is not accepted",
            jws.alg()
        )));
    }
    if let Some(typ) = jws.unverified_header_str("typ")
        && !(typ.eq_ignore_ascii_case("oauth-authz-req+jwt") || typ.eq_ignore_ascii_case("JWT"))
    {
        return Err(bad(format!("a JWT of typ {typ} is not a request object")));
    }
    let kid = jws.unverified_header_str("kid").map(str::to_owned);
    let alg = jws.alg();
    let claims = jws
        .verify_any(client.keys_for(alg, kid.as_deref()))
        .map_err(|_| bad("request object signature does not verify with a registered key".into()))?
        .into_claims();
    let text = |n: &str| claims.get(n).and_then(Value::as_str);
    if text("iss") != Some(client.client_id.as_str()) {
        return Err(bad("request object iss must be the client_id".into()));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == &policy.issuer,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(policy.issuer.as_str())),
        _ => false,
    };
    if !aud_ok {
        return Err(bad(format!(
            "request object aud must be the issuer {}",
            policy.issuer
        )));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("request object needs exp".into()))?;
    if exp <= now.secs().saturating_sub(CLOCK_SKEW) {
        return Err(bad("request object has expired".into()));
    }
    let start = claims
        .get("nbf")
        .or_else(|| claims.get("iat"))
        .and_then(Value::as_i64)
        .unwrap_or(now.secs());
    if start > now.secs() + CLOCK_SKEW {
        return Err(bad("request object is not valid yet".into()));
    }
    if exp.saturating_sub(start.min(now.secs())) > 60 + CLOCK_SKEW {
        return Err(bad("request object lives too long: at most 60 s".into()));
    }
    if text("client_id").is_some_and(|c| c != client.client_id) {
        return Err(bad("request object client_id does not match".into()));
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| bad("request object needs a jti".into()))?
        .to_owned();
    Ok((claims, (jti, exp)))
}

/// What `/connect/authorize` does with a request and the browser's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The session satisfies the request: issue a code for this login.
    UseSession(Box<Login>),
    /// The person must log in.
    Login,
    /// Answer the client with this error (redirect).
    Fail(OAuthError),
}

/// OIDC Core §3.1.2.1–§3.1.2.3: `prompt`, `max_age`, `acr_values` against the session.
pub fn decide(request: &AuthorizationRequest, session: Option<&Login>, now: UnixTime) -> Decision {
    let usable = session.filter(|login| {
        !request.prompts("login")
            && request
                .max_age
                .is_none_or(|m| now.secs().saturating_sub(login.auth_time) <= m)
            && login.satisfies(&request.acr_values)
    });
    match (usable, request.prompts("none")) {
        (Some(login), _) => Decision::UseSession(Box::new(login.clone())),
        (None, true) => Decision::Fail(OAuthError::new(
            ErrorCode::LoginRequired,
            "no usable login session (prompt=none)",
        )),
        (None, false) => Decision::Login,
    }
}

/// What was stored with an authorization code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    /// The authorization request.
    pub request: AuthorizationRequest,
    /// The login it was issued for.
    pub login: Login,
}

/// A code exchange request (RFC 6749 §4.1.3 with RFC 7636 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeExchange {
    /// The code.
    pub code: String,
    /// The redirect URI sent with the authorization request.
    pub redirect_uri: Option<String>,
    /// The PKCE verifier.
    pub code_verifier: Option<String>,
    /// `resource`: one of the APIs named at PAR.
    pub resource: Vec<String>,
}

/// Checks a redeemed code against the exchange: same client, same redirect URI, PKCE, and the
/// DPoP key bound at PAR (RFC 9449 §10).
pub fn check_exchange(
    grant: &CodeGrant,
    exchange: &CodeExchange,
    client: &AuthenticatedClient,
    proof_jkt: Option<&str>,
) -> Result<(), OAuthError> {
    let invalid_grant = |d: &str| OAuthError::new(ErrorCode::InvalidGrant, d);
    if grant.request.client_id != client.client().client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if exchange.redirect_uri.as_deref() != Some(grant.request.redirect_uri.as_str()) {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    let verifier = exchange
        .code_verifier
        .as_deref()
        .ok_or_else(|| invalid_grant("code_verifier is required (PKCE)"))?;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return Err(invalid_grant(
            "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]",
        ));
    }
    let computed = segl_jose::b64_encode(segl_jose::sha256(verifier.as_bytes()));
    if !ct_eq(computed.as_bytes(), grant.request.code_challenge.as_bytes()) {
        return Err(invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    if let Some(bound) = &grant.request.dpop_jkt {
        match proof_jkt {
            Some(jkt) if jkt == bound => {}
            Some(_) => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "the DPoP key differs from the one bound at PAR",
                ));
            }
            None => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "the code is bound to a DPoP key: send a DPoP proof",
                ));
            }
        }
    }
    Ok(())
}

/// Equality of two byte strings in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Login, Person};

    fn request(prompt: &[&str], max_age: Option<i64>, acr: &[&str]) -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: "c".into(),
            redirect_uri: "https://c.example/cb".into(),
            scopes: vec!["openid".into()],
            state: None,
            nonce: None,
            code_challenge: "x".repeat(43),
            acr_values: acr.iter().map(|s| s.to_string()).collect(),
            prompt: prompt.iter().map(|s| s.to_string()).collect(),
            max_age,
            ui_locales: None,
            login_hint: None,
            resources: vec![],
            dpop_jkt: None,
            authorization_details: None,
            on_behalf_of: None,
        }
    }

    fn login(auth_time: i64) -> Login {
        Login {
            person: Person {
                pid: "06828399789".into(),
                given_name: "K".into(),
                middle_name: None,
                family_name: "G".into(),
                hpr_number: None,
            },
            pseudonym: "p".into(),
            idp: "testidp-oidc".into(),
            amr: vec!["pwd".into()],
            security_level: "4".into(),
            assurance_level: "high".into(),
            network: "internett".into(),
            auth_time,
            sid: "s".into(),
        }
    }

    #[test]
    fn sessions_are_used_unless_prompt_max_age_or_acr_say_otherwise() {
        let now = UnixTime(1_000);
        let l = login(900);
        assert!(matches!(
            decide(&request(&[], None, &[]), Some(&l), now),
            Decision::UseSession(_)
        ));
        assert_eq!(
            decide(&request(&["login"], None, &[]), Some(&l), now),
            Decision::Login
        );
        assert!(matches!(
            decide(&request(&[], Some(100), &[]), Some(&l), now),
            Decision::UseSession(_)
        ));
        assert_eq!(
            decide(&request(&[], Some(99), &[]), Some(&l), now),
            Decision::Login
        );
        assert_eq!(
            decide(&request(&[], None, &["idp:idporten-oidc"]), Some(&l), now),
            Decision::Login
        );
        assert!(matches!(
            decide(&request(&[], None, &["Level4"]), Some(&l), now),
            Decision::UseSession(_)
        ));
        match decide(&request(&["none"], Some(10), &[]), Some(&l), now) {
            Decision::Fail(e) => assert_eq!(e.code, ErrorCode::LoginRequired),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&request(&["none"], None, &[]), None, now),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn redirect_uris_match_exactly_but_for_loopback_ports() {
        assert!(redirect_matches(
            "https://a.example/cb",
            "https://a.example/cb"
        ));
        assert!(!redirect_matches(
            "https://a.example/cb",
            "https://a.example/cb/"
        ));
        assert!(!redirect_matches(
            "https://a.example/cb",
            "https://a.example:444/cb"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1:9000/cb",
            "http://127.0.0.1:51000/cb"
        ));
        assert!(redirect_matches(
            "http://localhost/cb",
            "http://localhost:8080/cb"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:9000/cb",
            "http://127.0.0.1:9000/cb?x=1"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:9000/cb",
            "http://127.0.0.2:9000/cb"
        ));
    }
}
