//! `POST /connect/token` (RFC 6749 §3.2): read the form, authenticate the client, run the grant,
//! sign the access token.

use crate::App;
use crate::dpop::{self, NonceMode};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use segl_core::client_auth::{
    self, AuthenticatedClient, ClientAuthParams, Endpoint, VerifiedAssertion,
};
use segl_core::form::Form;
use segl_core::grant::{self, TokenRequest};
use segl_core::{OAuthError, UnixTime};
use segl_proto::token::TokenResponse;
use segl_store::JtiKind;

/// The largest request body accepted by form endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// The handler.
pub(crate) async fn token(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let mut response = match handle(&app, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // RFC 9449 §8: the current nonce rides on every answer, success or error.
    if app.nonces.mode() != NonceMode::Off
        && let Ok(v) = HeaderValue::from_str(&app.nonces.current(app.clock.now()))
    {
        response.headers_mut().insert("dpop-nonce", v);
    }
    response
}

async fn handle(app: &App, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let mut form = read_form(headers, body).await?;
    let auth = take_client_auth(&mut form, headers);
    let request = TokenRequest::from_form(&mut form)?;
    let now = app.clock.now();
    // Stateless checks first (assertion, then proof and its nonce), so that a use_dpop_nonce
    // answer consumes nothing and the client can retry with the same assertion.
    let assertion = verify_assertion(app, &auth, Endpoint::Token, now)?;
    let proof = dpop::check(app, headers, &app.policy.token_endpoint, now)?;
    let client = record_assertion(app, assertion).await?;
    let dpop = dpop::record(app, proof).await?;
    let claims = match &request {
        TokenRequest::ClientCredentials(r) => grant::client_credentials(
            &client,
            r,
            &app.settings.registry,
            &app.policy,
            now,
            new_id()?,
            dpop.as_ref(),
        )?,
    };
    let ring = app.keys.current();
    let access_token = segl_jose::sign_jwt(&ring.signing, segl_proto::typ::ACCESS_TOKEN, &claims)?;
    tracing::info!(client_id = %claims.client_id, aud = %claims.aud, jti = %claims.jti, "access token issued");
    Ok(token_response(&TokenResponse {
        access_token,
        token_type: claims.token_type().into(),
        expires_in: (claims.exp - claims.iat).max(0) as u64,
        scope: Some(claims.scope_string()),
        refresh_token: None,
        rt_expires_in: None,
        id_token: None,
        issued_token_type: None,
    }))
}

/// Reads an `application/x-www-form-urlencoded` body of at most [`MAX_BODY`] bytes.
pub(crate) async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, ApiError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY))?;
    Ok(Form::parse(&bytes)?)
}

/// Takes the client-authentication parameters out of the form.
pub(crate) fn take_client_auth(form: &mut Form, headers: &HeaderMap) -> ClientAuthParams {
    ClientAuthParams {
        client_id: form.take("client_id"),
        client_assertion: form.take("client_assertion"),
        client_assertion_type: form.take("client_assertion_type"),
        client_secret_present: form.take("client_secret").is_some(),
        authorization_header_present: headers.contains_key(header::AUTHORIZATION),
    }
}

/// private_key_jwt, stateless part: the assertion's header, key, signature and claims.
pub(crate) fn verify_assertion(
    app: &App,
    params: &ClientAuthParams,
    endpoint: Endpoint,
    now: UnixTime,
) -> Result<VerifiedAssertion, ApiError> {
    Ok(client_auth::verify_assertion(params, &app.settings.registry, &app.policy, endpoint, now)
        .inspect_err(|e| tracing::info!(client_id = ?params.client_id, error = %e, "client authentication failed"))?)
}

/// private_key_jwt, stateful part: record the `jti` (the unique insert is the replay check,
/// shared by every process on the store).
pub(crate) async fn record_assertion(
    app: &App,
    verified: VerifiedAssertion,
) -> Result<AuthenticatedClient, ApiError> {
    let fresh = app
        .store
        .insert_jti(
            JtiKind::ClientAssertion,
            &verified.replay_key(),
            verified.remember_until().secs(),
        )
        .await?;
    Ok(verified.accept(fresh)?)
}

/// 128 random bits as 32 upper-case hex digits (HelseID's `jti` shape).
pub(crate) fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    segl_jose::random_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02X}")).collect())
}

fn token_response(body: &TokenResponse) -> Response {
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}
