//! `GET|POST /connect/userinfo` (OIDC Core §5.3): the person's claims for a DPoP-bound or
//! Bearer access token issued by this server, as its scopes allow, plus
//! `helseid://claims/hpr/hpr_details` for persons in the register.
//!
//! Errors are RFC 6750 / RFC 9449 challenges: 401 with `WWW-Authenticate: DPoP` or `Bearer`
//! and `error="invalid_token"` (or `invalid_dpop_proof`), 403 `insufficient_scope`.

use crate::App;
use crate::dpop::PROOF_MAX_AGE;
use crate::own_tokens::{self, Kind};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segl_jose::dpop::{NoncePolicy, ProofRequirements, check_proof};
use segl_proto::claims as c;
use segl_store::JtiKind;
use serde_json::{Map, Value, json};

/// The handler (GET and POST).
pub(crate) async fn userinfo(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match handle(&app, &method, &headers).await {
        Ok(body) => {
            let mut r = axum::Json(Value::Object(body)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(challenge) => challenge.into_response(&app),
    }
}

/// A refusal: the scheme to challenge with, the status, the error and its description.
struct Challenge {
    scheme: &'static str,
    status: StatusCode,
    error: Option<&'static str>,
    description: String,
}

impl Challenge {
    fn new(
        scheme: &'static str,
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Challenge {
        Challenge {
            scheme,
            status,
            error: Some(error),
            description: description.into(),
        }
    }

    fn into_response(self, app: &App) -> Response {
        let mut value = self.scheme.to_owned();
        if self.scheme == "DPoP" {
            let algs: Vec<&str> = app
                .policy
                .profile
                .accepted_algs()
                .iter()
                .map(|a| a.name())
                .collect();
            value.push_str(&format!(" algs=\"{}\"", algs.join(" ")));
        }
        if let Some(error) = self.error {
            let description = segl_proto::error::sanitize_description(&self.description);
            let sep = if self.scheme == "DPoP" { "," } else { "" };
            value.push_str(&format!(
                "{sep} error=\"{error}\", error_description=\"{description}\""
            ));
        }
        let mut r = self.status.into_response();
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

async fn handle(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Map<String, Value>, Challenge> {
    let now = app.clock.now();
    let auth: Vec<&str> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    let [value] = auth.as_slice() else {
        return Err(Challenge {
            scheme: "Bearer",
            status: StatusCode::UNAUTHORIZED,
            error: None,
            description: String::new(),
        });
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = match scheme {
        s if s.eq_ignore_ascii_case("DPoP") => "DPoP",
        s if s.eq_ignore_ascii_case("Bearer") => "Bearer",
        _ => {
            return Err(Challenge::new(
                "Bearer",
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "use the Bearer or DPoP scheme",
            ));
        }
    };
    let token = token.trim();
    let claims = own_tokens::verify(app, token, Kind::AccessToken, false, now)
        .map_err(|e| Challenge::new(scheme, StatusCode::UNAUTHORIZED, "invalid_token", e))?;
    let bound = claims
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(Value::as_str);
    match (scheme, bound) {
        ("Bearer", Some(_)) => {
            return Err(Challenge::new(
                "DPoP",
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this token is DPoP-bound: use the DPoP scheme with a proof",
            ));
        }
        ("DPoP", None) => {
            return Err(Challenge::new(
                "Bearer",
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this token is not DPoP-bound: use the Bearer scheme",
            ));
        }
        ("DPoP", Some(jkt)) => check_dpop(app, method, headers, token, jkt, now.secs()).await?,
        _ => {}
    }
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
    let revoked = app.store.is_token_revoked(jti).await.map_err(|e| {
        tracing::error!(error = %e, "store failure at userinfo");
        Challenge {
            scheme,
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: None,
            description: String::new(),
        }
    })?;
    if revoked {
        return Err(Challenge::new(
            scheme,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token has been revoked",
        ));
    }
    let scopes: Vec<&str> = match claims.get("scope") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split_ascii_whitespace().collect(),
        _ => vec![],
    };
    if !scopes.contains(&"openid") || claims.get("idp").is_none() {
        return Err(Challenge::new(
            scheme,
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "userinfo needs a token from a person login with scope openid",
        ));
    }
    Ok(person_claims(app, &claims))
}

async fn check_dpop(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    token: &str,
    jkt: &str,
    now: i64,
) -> Result<(), Challenge> {
    let fail =
        |d: String| Challenge::new("DPoP", StatusCode::UNAUTHORIZED, "invalid_dpop_proof", d);
    let proofs: Vec<&str> = headers
        .get_all("dpop")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    let [proof] = proofs.as_slice() else {
        return Err(fail("send exactly one DPoP header".into()));
    };
    let url = format!("{}{}", app.settings.issuer, segl_proto::paths::USERINFO);
    let requirements = ProofRequirements {
        method: method.as_str(),
        url: &url,
        now,
        max_age: PROOF_MAX_AGE,
        algs: app.policy.profile.accepted_algs(),
        access_token: Some(token),
        nonce: NoncePolicy::Off,
    };
    let checked = check_proof(proof, &requirements).map_err(|e| fail(e.to_string()))?;
    if checked.jkt() != jkt {
        return Err(fail(
            "the proof key is not the key the token is bound to".into(),
        ));
    }
    let fresh = app
        .store
        .insert_jti(
            JtiKind::DpopProof,
            &checked.replay_key(),
            checked.remember_until(PROOF_MAX_AGE) + 1,
        )
        .await
        .map_err(|_| Challenge {
            scheme: "DPoP",
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: None,
            description: String::new(),
        })?;
    checked
        .accept(fresh)
        .map(|_| ())
        .map_err(|e| fail(e.to_string()))
}

/// `sub` and the identity claims the token carries (they were released by its scopes), and
/// the HPR details of a registered health professional.
fn person_claims(app: &App, claims: &Map<String, Value>) -> Map<String, Value> {
    const RELEASED: [&str; 10] = [
        "sub",
        c::PID,
        c::PID_PSEUDONYM,
        c::SECURITY_LEVEL,
        c::ASSURANCE_LEVEL,
        c::NETWORK,
        c::HPR_NUMBER,
        "name",
        "given_name",
        "family_name",
    ];
    let mut out: Map<String, Value> = RELEASED
        .iter()
        .chain(&["middle_name"])
        .filter_map(|k| claims.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    if let Some(hpr) = claims.get(c::HPR_NUMBER).and_then(Value::as_str) {
        let profession = app
            .settings
            .persons
            .values()
            .find(|p| p.hpr_number.as_deref() == Some(hpr))
            .map(|_| "LE");
        if let Some(profession) = profession {
            out.insert(
                c::HPR_DETAILS.into(),
                json!({
                    "approvals": [{
                        "profession": profession,
                        "authorization": {"value": "1", "description": "Autorisasjon"},
                        "requisition_rights": [{"value": "1", "description": "Full rekvisisjonsrett"}],
                        "specialities": []
                    }],
                    "hpr_number": hpr.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(hpr)),
                }),
            );
        }
    }
    out
}
