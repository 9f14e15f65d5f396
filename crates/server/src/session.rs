//! Browser state: cookies, login sessions (single sign-on) and login transactions, and the
//! person pseudonym. Cookies hold only random identifiers; the store keeps what they refer to
//! under a digest of the identifier, so a database read does not yield a usable cookie.

use crate::App;
use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use segl_core::UnixTime;
use segl_core::authorize::AuthorizationRequest;
use segl_core::identity::Login;
use segl_store::RecordKind;
use serde::{Deserialize, Serialize};

/// The session cookie.
pub const SESSION_COOKIE: &str = "segl_session";
/// The login-transaction cookie (binds a login form to the browser that started it).
pub const TX_COOKIE: &str = "segl_tx";
/// How long a login may take between `/connect/authorize` and the IdP's answer.
pub const LOGIN_TRANSACTION_LIFETIME: i64 = 600;

/// 256 random bits, base64url.
pub fn random_token() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    segl_jose::random_bytes(&mut b)?;
    Ok(segl_jose::b64_encode(b))
}

/// The store key of a cookie or code value.
pub fn key_of(token: &str) -> [u8; 32] {
    segl_jose::sha256(token.as_bytes())
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the login returns by top-level navigation),
/// Secure when the issuer is https; `max_age` 0 deletes.
pub fn set_cookie(app: &App, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if app.settings.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("segl_invalid=1"))
}

/// What the store keeps for a session.
#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    login: Login,
}

/// The login of the browser's session, if it has a live one.
pub async fn current_login(
    app: &App,
    headers: &HeaderMap,
    now: UnixTime,
) -> Result<Option<Login>, ApiError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let data = app
        .store
        .get_record(RecordKind::Session, &key_of(&id), now.secs())
        .await?;
    Ok(data
        .and_then(|d| serde_json::from_str::<SessionRecord>(&d).ok())
        .map(|s| s.login))
}

/// Starts a session for `login` under a new id (the old session, if any, ends: the session id
/// changes at login). Returns the `Set-Cookie` value.
pub async fn start(
    app: &App,
    headers: &HeaderMap,
    login: &Login,
    now: UnixTime,
) -> Result<HeaderValue, ApiError> {
    if let Some(old) = cookie(headers, SESSION_COOKIE) {
        app.store
            .delete_record(RecordKind::Session, &key_of(&old))
            .await?;
    }
    let id = random_token()?;
    let lifetime = app.settings.session_lifetime;
    let data = serde_json::to_string(&SessionRecord {
        login: login.clone(),
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    app.store
        .put_record(
            RecordKind::Session,
            &key_of(&id),
            &data,
            now.secs() + lifetime,
        )
        .await?;
    Ok(set_cookie(app, SESSION_COOKIE, &id, lifetime))
}

/// Ends the browser's session; returns the cookie-deleting `Set-Cookie` value.
pub async fn end(app: &App, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        app.store
            .delete_record(RecordKind::Session, &key_of(&id))
            .await?;
    }
    Ok(set_cookie(app, SESSION_COOKIE, "", 0))
}

/// A login in progress.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transaction {
    /// The authorization request being served.
    pub request: AuthorizationRequest,
    /// The form's CSRF token.
    pub csrf: String,
}

/// Stores a login transaction; returns its id.
pub async fn begin_transaction(
    app: &App,
    request: AuthorizationRequest,
    now: UnixTime,
) -> Result<String, ApiError> {
    let id = random_token()?;
    let data = serde_json::to_string(&Transaction {
        request,
        csrf: random_token()?,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    app.store
        .put_record(
            RecordKind::LoginTransaction,
            &key_of(&id),
            &data,
            now.secs() + LOGIN_TRANSACTION_LIFETIME,
        )
        .await?;
    Ok(id)
}

/// Reads a login transaction (without consuming it).
pub async fn transaction(
    app: &App,
    id: &str,
    now: UnixTime,
) -> Result<Option<Transaction>, ApiError> {
    let data = app
        .store
        .get_record(RecordKind::LoginTransaction, &key_of(id), now.secs())
        .await?;
    Ok(data.and_then(|d| serde_json::from_str(&d).ok()))
}

/// Consumes a login transaction: exactly one caller gets it.
pub async fn finish_transaction(
    app: &App,
    id: &str,
    now: UnixTime,
) -> Result<Option<Transaction>, ApiError> {
    let data = app
        .store
        .take_record(RecordKind::LoginTransaction, &key_of(id), now.secs())
        .await?;
    Ok(data.and_then(|d| serde_json::from_str(&d).ok()))
}

/// HelseID's `pid_pseudonym`: base64 of HMAC-SHA256 over the pid under a server secret shared
/// through the store; stable across logins and processes.
pub fn pseudonym(app: &App, pid: &str) -> String {
    use base64::Engine as _;
    let tag = aws_lc_rs::hmac::sign(&app.pseudonym_key, pid.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// Completes a login: starts the session (single sign-on), records the audit event (and waits
/// for it to be durable), issues the code and redirects to the client; the login-transaction
/// cookie is cleared.
pub async fn complete_login(
    app: &App,
    headers: &HeaderMap,
    origin: &crate::audit::Origin,
    request: &AuthorizationRequest,
    login: Login,
    now: UnixTime,
) -> Result<Response, ApiError> {
    use segl_core::audit::{Event, EventKind, Outcome};
    let cookie = start(app, headers, &login, now).await?;
    tracing::info!(target: "segl::audit", event = "login", idp = %login.idp, security_level = %login.security_level, client_id = %request.client_id, sid = %login.sid, "person logged in");
    let client_name = app.settings.registry.client(&request.client_id);
    let event = Event::new(EventKind::Login, Outcome::Success, now)
        .with_client(&request.client_id, client_name.map(|c| c.name.as_str()))
        .with_pid(Some(&login.person.pid))
        .with_detail(&format!(
            "idp={} security_level={} assurance_level={}",
            login.idp, login.security_level, login.assurance_level
        ));
    app.audit.record(event, origin).await?;
    let mut r = crate::authorize::issue_code(app, origin, request, login, now).await?;
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(app, TX_COOKIE, "", 0));
    Ok(r)
}
