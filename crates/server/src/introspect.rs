//! `POST /connect/introspect` (RFC 7662): for clients registered with `introspection = true`.
//! A caller sees access tokens whose audience is its own client_id or one of its
//! `introspection_audiences`, and refresh tokens it owns; for anything else — unknown, expired,
//! revoked, or not the caller's to see — the answer is `{"active": false}`.

use crate::App;
use crate::audit::Origin;
use crate::error::ApiError;
use crate::own_tokens::{self, Kind};
use crate::session::key_of;
use crate::token::{read_form, record_assertion, take_client_auth, verify_assertion};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use segl_core::OAuthError;
use segl_core::client_auth::Endpoint;
use serde_json::{Map, Value, json};

/// The handler.
pub(crate) async fn introspect(
    State(app): State<App>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&app, &origin, &headers, body).await {
        Ok(body) => {
            let mut r = axum::Json(body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(
    app: &App,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    let mut form = read_form(headers, body).await?;
    let auth = take_client_auth(&mut form, headers);
    let now = app.clock.now();
    let assertion = verify_assertion(app, &auth, Endpoint::Other, now, origin).await?;
    let client = record_assertion(app, assertion, origin).await?;
    let caller = client.client();
    if !caller.introspection {
        return Err(OAuthError::invalid_client(
            "this client may not introspect tokens (introspection = true)",
        )
        .into());
    }
    let token = form
        .take("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let inactive = json!({ "active": false });
    if token.matches('.').count() == 2 {
        let Ok(claims) = own_tokens::verify(app, &token, Kind::AccessToken, false, now) else {
            return Ok(inactive);
        };
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let visible = audiences.iter().any(|a| {
            *a == caller.client_id || caller.introspection_audiences.iter().any(|x| x == a)
        });
        let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
        if !visible || app.store.is_token_revoked(jti).await? {
            return Ok(inactive);
        }
        let mut out: Map<String, Value> = claims;
        // RFC 7662 §2.2: scope is a space-separated string.
        if let Some(Value::Array(scopes)) = out.get("scope") {
            let joined = scopes
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            out.insert("scope".into(), json!(joined));
        }
        out.insert("active".into(), json!(true));
        out.insert(
            "token_type".into(),
            json!(if out.contains_key("cnf") {
                "DPoP"
            } else {
                "Bearer"
            }),
        );
        return Ok(Value::Object(out));
    }
    // A replaced token, or one of a revoked family, is no longer active (RFC 7662 §2.2).
    match app
        .store
        .refresh_lookup(&key_of(&token), now.secs())
        .await?
    {
        Some(r) if r.live && r.client_id == caller.client_id => {
            Ok(json!({ "active": true, "client_id": r.client_id, "token_type": "refresh_token" }))
        }
        _ => Ok(inactive),
    }
}
