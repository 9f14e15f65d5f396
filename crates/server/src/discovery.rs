//! Discovery metadata (OIDC Discovery §3, RFC 8414 §2) and the JWKS, both served from memory.

use crate::App;
use crate::app::Route;
use crate::config::Settings;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use segl_proto::claims as c;
use serde_json::{Map, Value, json};

/// Builds the discovery document: endpoint URLs from the route table, capabilities from the
/// configuration.
pub(crate) fn document(settings: &Settings, routes: &[Route]) -> Vec<u8> {
    let mut doc = Map::new();
    doc.insert("issuer".into(), json!(settings.issuer));
    for route in routes {
        if let Some(name) = route.metadata {
            doc.insert(
                name.into(),
                json!(format!("{}{}", settings.issuer, route.path)),
            );
        }
    }
    let algs: Vec<&str> = settings
        .profile
        .accepted_algs()
        .iter()
        .map(|a| a.name())
        .collect();
    let mut scopes: Vec<&str> = settings
        .registry
        .apis()
        .iter()
        .flat_map(|a| a.scopes.iter().map(String::as_str))
        .chain(c::IDENTITY_SCOPES)
        .collect();
    scopes.sort_unstable();
    let claims: &[&str] = &[
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "scope",
        "cnf",
        "act",
        "idp",
        "amr",
        "acr",
        "auth_time",
        "sid",
        "name",
        "given_name",
        "middle_name",
        "family_name",
        c::CLIENT_AMR,
        c::CLIENT_NAME,
        c::CLIENT_TENANCY,
        c::ORGNR_PARENT,
        c::ORGNR_CHILD,
        c::ORGNR_SUPPLIER,
        c::ORIGINAL_CLIENT_ID,
        c::PID,
        c::PID_PSEUDONYM,
        c::SECURITY_LEVEL,
        c::ASSURANCE_LEVEL,
        c::NETWORK,
        c::HPR_NUMBER,
    ];
    let grants = [
        segl_proto::grant::CLIENT_CREDENTIALS,
        segl_proto::grant::AUTHORIZATION_CODE,
        segl_proto::grant::REFRESH_TOKEN,
        segl_proto::grant::TOKEN_EXCHANGE,
    ];
    let extra = json!({
        "grant_types_supported": grants,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "request_object_signing_alg_values_supported": algs,
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "id_token_signing_alg_values_supported": [settings.signing_alg.name()],
        "access_token_signing_alg_values_supported": [settings.signing_alg.name()],
        "userinfo_signing_alg_values_supported": [],
        "dpop_signing_alg_values_supported": algs,
        "subject_types_supported": ["public"],
        "scopes_supported": scopes,
        "claims_supported": claims,
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login"],
        "request_parameter_supported": true,
        "request_uri_parameter_supported": false,
        "require_pushed_authorization_requests": true,
        "resource_indicators_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "acr_values_supported": ["Level4", "Level3", "High", "Substantial"],
        "ui_locales_supported": ["nb", "en"],
    });
    if let Value::Object(extra) = extra {
        doc.extend(extra);
    }
    serde_json::to_vec(&Value::Object(doc)).unwrap_or_default()
}

fn json_bytes(bytes: Vec<u8>, cache: &'static str) -> Response {
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn discovery(State(app): State<App>) -> Response {
    json_bytes(app.discovery_json.clone(), "public, max-age=3600")
}

/// `GET /.well-known/openid-configuration/jwks`.
pub(crate) async fn jwks(State(app): State<App>) -> Response {
    let ring = app.keys.current();
    let mut r = json_bytes(ring.jwks_json.to_vec(), "public, max-age=300");
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    r
}
