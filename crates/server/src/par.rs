//! `POST /connect/par` (RFC 9126): an authenticated client pushes its authorization request and
//! gets a single-use, short-lived `request_uri`.

use crate::App;
use crate::audit::Origin;
use crate::dpop;
use crate::error::ApiError;
use crate::session::{key_of, random_token};
use crate::token::{nonce_header, read_form, take_client_auth, verify_assertion};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segl_core::OAuthError;
use segl_core::authorize::{self, AuthorizationRequest, REQUEST_URI_PREFIX};
use segl_core::client_auth::Endpoint;
use segl_proto::ErrorCode;
use segl_store::{JtiKind, RecordKind};
use serde::{Deserialize, Serialize};

/// What is stored under a `request_uri`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pushed {
    /// The client that pushed it.
    pub client_id: String,
    /// The request.
    pub request: AuthorizationRequest,
}

/// The handler.
pub(crate) async fn par(
    State(app): State<App>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = match handle(&app, &origin, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    nonce_header(&app, response)
}

async fn handle(
    app: &App,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut form = read_form(headers, body).await?;
    let auth = take_client_auth(&mut form, headers);
    let now = app.clock.now();
    // RFC 9126 §2: client authentication as at the token endpoint.
    let assertion = verify_assertion(app, &auth, Endpoint::Other, now, origin).await?;
    crate::token::limit_client(app, &assertion)?;
    let par_url = format!("{}{}", app.settings.issuer, segl_proto::paths::PAR);
    let proof = dpop::check(app, headers, &par_url, now)?;
    let (client, proof) = crate::token::record_jtis(app, assertion, proof, origin).await?;
    let outcome = authorize::pushed_request(
        &mut form,
        &client,
        &app.settings.registry,
        &app.policy,
        proof.as_ref().map(|p| p.jkt()),
        now,
    )?;
    if let Some((jti, exp)) = &outcome.request_object_jti {
        let key = segl_jose::sha256(format!("{}\0{jti}", client.client().client_id).as_bytes());
        if !app
            .store
            .insert_jti(JtiKind::RequestObject, &key, exp + 10)
            .await?
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequestObject,
                "request object jti has been used before",
            )
            .into());
        }
    }
    let request_uri = format!("{REQUEST_URI_PREFIX}{}", random_token()?);
    let lifetime = app.settings.tokens.par_lifetime;
    let pushed = Pushed {
        client_id: client.client().client_id.clone(),
        request: outcome.request,
    };
    let data = serde_json::to_string(&pushed).map_err(|e| ApiError::Internal(e.to_string()))?;
    app.store
        .put_record(
            RecordKind::PushedRequest,
            &key_of(&request_uri),
            &data,
            now.secs() + lifetime,
        )
        .await?;
    let body = serde_json::json!({ "request_uri": request_uri, "expires_in": lifetime });
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
