//! `POST /connect/revocation` (RFC 7009): the client that owns a token revokes it — a refresh
//! token with its whole family, an access token by its `jti` (introspection and userinfo then
//! report it inactive). Unknown tokens, and tokens of other clients, get the same `200`.

use crate::App;
use crate::audit::Origin;
use crate::error::ApiError;
use crate::own_tokens::{self, Kind};
use crate::session::key_of;
use crate::token::{read_form, record_assertion, take_client_auth, verify_assertion};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segl_core::OAuthError;
use segl_core::audit::{Event, EventKind, Outcome};
use segl_core::client_auth::Endpoint;
use serde_json::Value;

/// The handler.
pub(crate) async fn revocation(
    State(app): State<App>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&app, &origin, &headers, body).await {
        Ok(()) => {
            let mut r = StatusCode::OK.into_response();
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
) -> Result<(), ApiError> {
    let mut form = read_form(headers, body).await?;
    let auth = take_client_auth(&mut form, headers);
    let now = app.clock.now();
    let assertion = verify_assertion(app, &auth, Endpoint::Other, now, origin).await?;
    let client = record_assertion(app, assertion, origin).await?;
    let token = form
        .take("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let caller = &client.client().client_id;
    let event = Event::new(EventKind::Revocation, Outcome::Success, now)
        .with_client(caller, Some(&client.client().name));
    // A JWT is one of our access tokens (expired ones need no revocation); anything else may
    // be a refresh token. token_type_hint only orders the lookups, so it is not needed here.
    if token.matches('.').count() == 2 {
        if let Ok(claims) = own_tokens::verify(app, &token, Kind::AccessToken, false, now) {
            let owner = claims.get("client_id").and_then(Value::as_str);
            let jti = claims.get("jti").and_then(Value::as_str);
            let exp = claims
                .get("exp")
                .and_then(Value::as_i64)
                .unwrap_or(now.secs());
            if let (Some(owner), Some(jti)) = (owner, jti)
                && owner == caller
            {
                app.store.revoke_token(jti, exp).await?;
                tracing::info!(target: "segl::audit", event = "revocation", client_id = %caller, jti, "access token revoked");
                let event = event.with_jti(jti).with_detail("token=access_token");
                app.audit.record(event, origin).await?;
            }
        }
        return Ok(());
    }
    if let Some((family, owner)) = app.store.refresh_owner(&key_of(&token), now.secs()).await?
        && &owner == caller
    {
        app.store.revoke_refresh_family(&family).await?;
        tracing::info!(target: "segl::audit", event = "revocation", client_id = %caller, family = %family, "refresh token family revoked");
        let event = event.with_detail(&format!("token=refresh_token refresh_family={family}"));
        app.audit.record(event, origin).await?;
    }
    Ok(())
}
