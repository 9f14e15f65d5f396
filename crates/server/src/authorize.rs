//! `GET /connect/authorize`: only pushed requests (`client_id` + `request_uri`). Until the
//! pushed request is found and its redirect URI re-checked, every error is a page and never a
//! redirect (RFC 9700 §4.11.2); after that, errors go back to the client with `state` and `iss`
//! (RFC 9207), by 303 (RFC 9700 §4.12).

use crate::App;
use crate::error::ApiError;
use crate::pages;
use crate::par::Pushed;
use crate::session::{self, key_of, random_token};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segl_core::authorize::{self, AuthorizationRequest, CodeGrant, Decision, REQUEST_URI_PREFIX};
use segl_core::form::Form;
use segl_core::identity::Login;
use segl_core::{OAuthError, UnixTime};
use segl_proto::ErrorCode;
use segl_store::RecordKind;

/// The handler.
pub(crate) async fn authorize(
    State(app): State<App>,
    origin: crate::audit::Origin,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match handle(&app, &origin, &headers, query.as_deref().unwrap_or("")).await {
        Ok(r) => r,
        Err(Failure::Page(status, text)) => pages::error(status, "nb", &text),
        Err(Failure::Api(e)) => e.into_response(),
    }
}

/// An error before the redirect URI is trusted (a page) or an infrastructure failure.
pub(crate) enum Failure {
    Page(StatusCode, String),
    Api(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

fn page(text: impl Into<String>) -> Failure {
    Failure::Page(StatusCode::BAD_REQUEST, text.into())
}

async fn handle(
    app: &App,
    origin: &crate::audit::Origin,
    headers: &HeaderMap,
    query: &str,
) -> Result<Response, Failure> {
    let now = app.clock.now();
    let mut params = Form::parse(query.as_bytes()).map_err(|e| page(e.description))?;
    let client_id = params
        .take("client_id")
        .ok_or_else(|| page("client_id is missing"))?;
    let request_uri = params.take("request_uri").ok_or_else(|| {
        page("authorization requests must be pushed first (PAR): send client_id and request_uri")
    })?;
    if !params.is_empty() {
        return Err(page(
            "only client_id and request_uri may be sent to the authorization endpoint (PAR)",
        ));
    }
    if app.settings.registry.client(&client_id).is_none() {
        return Err(page("unknown client"));
    }
    if !request_uri.starts_with(REQUEST_URI_PREFIX) {
        return Err(page("request_uri is not one this server issued"));
    }
    // Single use: the pushed request is consumed here.
    let stored = app
        .store
        .take_record(RecordKind::PushedRequest, &key_of(&request_uri), now.secs())
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            page("the request_uri has expired or has already been used; start the login again")
        })?;
    let pushed: Pushed =
        serde_json::from_str(&stored).map_err(|e| ApiError::Internal(e.to_string()))?;
    if pushed.client_id != client_id {
        return Err(page("the request_uri was issued to another client"));
    }
    // RFC 9126 §7.4: the client's policy is re-checked now.
    let client = app
        .settings
        .registry
        .client(&client_id)
        .ok_or_else(|| page("unknown client"))?;
    if !client
        .redirect_uris
        .iter()
        .any(|r| authorize::redirect_matches(r, &pushed.request.redirect_uri))
    {
        return Err(page(
            "the redirect_uri is no longer registered for this client",
        ));
    }
    // The redirect URI is trusted from here on.
    let request = pushed.request;
    let login = session::current_login(app, headers, now).await?;
    match authorize::decide(&request, login.as_ref(), now) {
        Decision::UseSession(login) => Ok(issue_code(app, origin, &request, *login, now).await?),
        Decision::Fail(e) => Ok(redirect_error(app, &request, &e)),
        Decision::Login => start_login(app, request, now).await,
    }
}

/// Sends the browser to an identity provider that can satisfy the request: straight to it when
/// there is one (or `acr_values` names one with `idp:<name>`), else to the choice page.
async fn start_login(
    app: &App,
    request: AuthorizationRequest,
    now: UnixTime,
) -> Result<Response, Failure> {
    let choices = crate::federation::choices(app, &request);
    let Some(first) = choices.first() else {
        let e = OAuthError::new(
            ErrorCode::AccessDenied,
            "no identity provider available for this request",
        );
        return Ok(redirect_error(app, &request, &e));
    };
    let tx = session::begin_transaction(app, request.clone(), now).await?;
    let mut r = if choices.len() == 1 {
        crate::federation::go_to(app, first, &tx, &request, now).await?
    } else {
        see_other(&format!(
            "{}{}?tx={tx}",
            app.settings.issuer,
            segl_proto::paths::IDP_CHOICE
        ))
    };
    let cookie = session::set_cookie(
        app,
        session::TX_COOKIE,
        &tx,
        session::LOGIN_TRANSACTION_LIFETIME,
    );
    r.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(r)
}

/// Issues a code for `login` and redirects to the client (`code`, `state`, `iss`).
pub(crate) async fn issue_code(
    app: &App,
    origin: &crate::audit::Origin,
    request: &AuthorizationRequest,
    login: Login,
    now: UnixTime,
) -> Result<Response, ApiError> {
    use segl_core::audit::{Event, EventKind, Outcome};
    let code = random_token()?;
    let grant = CodeGrant {
        request: request.clone(),
        login,
    };
    let data = serde_json::to_string(&grant).map_err(|e| ApiError::Internal(e.to_string()))?;
    let lifetime = app.settings.tokens.authorization_code_lifetime;
    app.store
        .insert_code(&key_of(&code), &data, now.secs() + lifetime)
        .await?;
    tracing::info!(client_id = %request.client_id, sid = %grant.login.sid, "authorization code issued");
    let client_name = app.settings.registry.client(&request.client_id);
    let event = Event::new(EventKind::CodeIssued, Outcome::Success, now)
        .with_client(&request.client_id, client_name.map(|c| c.name.as_str()))
        .with_pid(Some(&grant.login.person.pid))
        .with_detail(&format!("idp={} sid={}", grant.login.idp, grant.login.sid));
    app.audit.record(event, origin).await?;
    Ok(redirect(app, request, &[("code", &code)]))
}

/// Redirects an error to the client (RFC 6749 §4.1.2.1, RFC 9207).
pub(crate) fn redirect_error(
    app: &App,
    request: &AuthorizationRequest,
    e: &OAuthError,
) -> Response {
    tracing::info!(client_id = %request.client_id, error = %e.code, "authorization error redirected to the client");
    redirect(
        app,
        request,
        &[
            ("error", e.code.as_str()),
            ("error_description", &e.description),
        ],
    )
}

fn redirect(app: &App, request: &AuthorizationRequest, params: &[(&str, &str)]) -> Response {
    let mut url = request.redirect_uri.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    let mut pairs: Vec<(&str, &str)> = params.to_vec();
    if let Some(state) = &request.state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", &app.settings.issuer));
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect();
    url.push_str(&encoded.join("&"));
    see_other(&url)
}

/// A 303 See Other (never 307 after a form post: RFC 9700 §4.12).
pub(crate) fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}
