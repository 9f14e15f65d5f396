//! Login through upstream OpenID providers (`[[idp]]`, e.g. ID-porten), as their client: the
//! authorization code flow with PKCE S256, `state` and `nonce`, pushed (PAR) when the upstream
//! advertises it, client authentication by `private_key_jwt` (or `client_secret_basic`), and
//! full validation of the returned ID token by the `openidconnect` crate (signature against the
//! upstream's JWKS, refetched once when a key is unknown; `iss`, `aud`, `exp`, `nonce`). The
//! upstream `acr` is mapped to HelseID's levels and must reach what the client asked for.
//!
//! Also here: the identity-provider choice page and `/connect/availableidps`.
//!
//! The browser is bound to the upstream login twice: the `state` sent upstream is a one-time
//! record that names the login transaction, and the transaction's cookie must come back with it.
//! An upstream that is down or slower than its `timeout` sends the browser back to the client
//! with `error=temporarily_unavailable`.

use crate::App;
use crate::authorize::{Failure, redirect_error, see_other};
use crate::config::{UpstreamAuth, UpstreamSettings};
use crate::error::ApiError;
use crate::pages;
use crate::session::{self, key_of};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClient, CoreClientAuthMethod, CoreGrantType, CoreIdTokenVerifier, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthenticationContextClass, AuthorizationCode, ClientId,
    ClientSecret, CsrfToken, IssuerUrl, LanguageTag, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RedirectUrl, Scope,
};
use segl_core::OAuthError;
use segl_core::UnixTime;
use segl_core::authorize::AuthorizationRequest;
use segl_core::federation::{self, Choice, Refusal};
use segl_core::form::Form;
use segl_core::identity::{Login, required_level};
use segl_proto::ErrorCode;
use segl_store::RecordKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long discovered metadata (and its JWKS) is used before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The least time between two fetches forced by an unknown signing key.
const MIN_REFETCH: Duration = Duration::from_secs(1);
/// The largest upstream response read.
const MAX_RESPONSE: usize = 1 << 20;

/// Discovery metadata members this server uses beyond OpenID Connect Discovery.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraMetadata {
    /// RFC 9126.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_authorization_request_endpoint: Option<String>,
    /// RFC 9207.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

/// An upstream's discovery document (with its JWKS).
pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

struct Discovered {
    metadata: Metadata,
    fetched: Instant,
}

/// Discovered metadata per upstream, fetched on first use and cached.
#[derive(Default)]
pub struct Upstreams {
    http: reqwest::Client,
    cache: Vec<tokio::sync::Mutex<Option<Arc<Discovered>>>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstreams({})", self.cache.len())
    }
}

impl Upstreams {
    /// One cache slot per configured upstream. Redirects are never followed (SSRF).
    pub fn new(count: usize) -> Upstreams {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Upstreams {
            http,
            cache: (0..count).map(|_| tokio::sync::Mutex::new(None)).collect(),
        }
    }
}

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connection, timeout or protocol failure.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// The answer is larger than this server reads.
    #[error("the response is larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    /// The upstream answered with a server error (5xx).
    #[error("the upstream answered {0}")]
    Status(StatusCode),
    /// The request could not be built.
    #[error("{0}")]
    Request(String),
}

/// One HTTP exchange with an upstream, bounded in time and size.
async fn call(
    http: &reqwest::Client,
    timeout: Duration,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let mut request =
        reqwest::Request::try_from(request).map_err(|e| HttpError::Request(e.to_string()))?;
    *request.timeout_mut() = Some(timeout);
    let mut response = http.execute(request).await?;
    if response.status().is_server_error() {
        return Err(HttpError::Status(response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = openidconnect::HttpResponse::new(body);
    *out.status_mut() = response.status();
    *out.headers_mut() = std::mem::take(response.headers_mut());
    Ok(out)
}

/// The HTTP client handed to `openidconnect`: every call bounded by the upstream's timeout.
struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(call(&self.client, self.timeout, request))
    }
}

fn http_for(app: &App, up: &UpstreamSettings) -> Http {
    Http {
        client: app.upstreams.http.clone(),
        timeout: up.timeout,
    }
}

/// The upstream's metadata: cached, or fetched (discovery and JWKS) when missing, older than
/// [`METADATA_TTL`], or `force`d (an unknown signing key) and older than [`MIN_REFETCH`].
async fn metadata(app: &App, index: usize, force: bool) -> Result<Arc<Discovered>, String> {
    let up = upstream(app, index)?;
    let slot = app
        .upstreams
        .cache
        .get(index)
        .ok_or_else(|| "no such upstream".to_owned())?;
    let mut cached = slot.lock().await;
    if let Some(d) = cached.as_ref() {
        let age = d.fetched.elapsed();
        if (!force && age < METADATA_TTL) || (force && age < MIN_REFETCH) {
            return Ok(d.clone());
        }
    }
    let issuer = IssuerUrl::new(up.issuer.clone()).map_err(|e| e.to_string())?;
    let http = http_for(app, up);
    // The whole discovery (document and JWKS) is bounded too.
    let fetched = tokio::time::timeout(up.timeout * 2, Metadata::discover_async(issuer, &http))
        .await
        .map_err(|_| format!("discovery took longer than {:?}", up.timeout * 2))?
        .map_err(|e| error_chain(&e))?;
    let d = Arc::new(Discovered {
        metadata: fetched,
        fetched: Instant::now(),
    });
    *cached = Some(d.clone());
    tracing::info!(idp = %up.policy.name, issuer = %up.issuer, "upstream metadata fetched");
    let offers_jwt = d
        .metadata
        .token_endpoint_auth_methods_supported()
        .is_some_and(|m| m.contains(&CoreClientAuthMethod::PrivateKeyJwt));
    if offers_jwt && matches!(up.auth, UpstreamAuth::ClientSecretBasic(_)) {
        tracing::warn!(idp = %up.policy.name, "this upstream offers private_key_jwt: use it instead of client_secret_basic (client_auth, key_file)");
    }
    Ok(d)
}

fn upstream(app: &App, index: usize) -> Result<&UpstreamSettings, String> {
    app.settings
        .upstreams
        .get(index)
        .ok_or_else(|| "no such upstream".to_owned())
}

fn index_of(app: &App, name: &str) -> Option<usize> {
    app.settings
        .upstreams
        .iter()
        .position(|u| u.policy.name == name)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the decisions need of each configured upstream.
fn policies(app: &App) -> impl Iterator<Item = &federation::Upstream> {
    app.settings.upstreams.iter().map(|u| &u.policy)
}

/// The IdPs that can serve `request`.
pub(crate) fn choices<'a>(app: &'a App, request: &AuthorizationRequest) -> Vec<Choice<'a>> {
    federation::choices(policies(app), app.settings.test_idp, &request.acr_values)
}

/// Sends the browser to the chosen IdP: the test IdP's form, or the upstream.
pub(crate) async fn go_to(
    app: &App,
    choice: &Choice<'_>,
    tx: &str,
    request: &AuthorizationRequest,
    now: UnixTime,
) -> Result<Response, Failure> {
    match choice {
        Choice::TestIdp => Ok(see_other(&format!(
            "{}{}?tx={tx}",
            app.settings.issuer,
            segl_proto::paths::TEST_IDP_LOGIN
        ))),
        Choice::Upstream(u) => {
            let index = index_of(app, &u.name).ok_or_else(|| page("unknown identity provider"))?;
            begin(app, index, tx, request, now).await
        }
    }
}

fn page(text: &str) -> Failure {
    Failure::Page(StatusCode::BAD_REQUEST, text.to_owned())
}

/// What the store keeps between the redirect to the upstream and its answer.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// The login transaction.
    tx: String,
    /// The upstream's name.
    idp: String,
    /// The `nonce` sent upstream.
    nonce: String,
    /// The PKCE verifier.
    verifier: String,
}

fn callback_url(app: &App, name: &str) -> String {
    format!("{}/federation/{name}/callback", app.settings.issuer)
}

/// Ends the login transaction and sends the error to the client.
async fn fail_to_client(
    app: &App,
    tx: &str,
    request: &AuthorizationRequest,
    code: ErrorCode,
    text: &str,
    now: UnixTime,
) -> Result<Response, Failure> {
    session::finish_transaction(app, tx, now).await?;
    Ok(redirect_error(app, request, &OAuthError::new(code, text)))
}

/// Starts the login at upstream `index`: pushes the request (or builds the URL) and redirects.
async fn begin(
    app: &App,
    index: usize,
    tx: &str,
    request: &AuthorizationRequest,
    now: UnixTime,
) -> Result<Response, Failure> {
    let up = upstream(app, index).map_err(|e| page(&e))?;
    let name = &up.policy.name;
    let unavailable = |why: String| {
        tracing::warn!(idp = %name, error = %why, "upstream identity provider unavailable");
        "the identity provider is not available; try again later"
    };
    let d = match metadata(app, index, false).await {
        Ok(d) => d,
        Err(e) => {
            let text = unavailable(e);
            return fail_to_client(
                app,
                tx,
                request,
                ErrorCode::TemporarilyUnavailable,
                text,
                now,
            )
            .await;
        }
    };
    let client = CoreClient::from_provider_metadata(
        d.metadata.clone(),
        ClientId::new(up.client_id.clone()),
        None,
    )
    .set_redirect_uri(
        RedirectUrl::new(callback_url(app, name)).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut auth = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scopes(
            up.scopes
                .iter()
                .filter(|s| *s != "openid")
                .map(|s| Scope::new(s.clone())),
        )
        .set_pkce_challenge(challenge)
        .add_ui_locale(LanguageTag::new(request.language().to_owned()));
    for acr in &up.policy.acr_values {
        auth = auth.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
    }
    if request.prompts("login") || request.max_age == Some(0) {
        auth = auth.add_prompt(CoreAuthPrompt::Login);
    }
    if let (true, Some(obo)) = (up.on_behalf_of, &request.on_behalf_of) {
        auth = auth.add_extra_param("on_behalf_of", obo.clone());
    }
    let (url, state, nonce) = auth.url();
    let pending = Pending {
        tx: tx.to_owned(),
        idp: name.clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
    };
    let data = serde_json::to_string(&pending).map_err(|e| ApiError::Internal(e.to_string()))?;
    app.store
        .put_record(
            RecordKind::UpstreamLogin,
            &key_of(state.secret()),
            &data,
            now.secs() + session::LOGIN_TRANSACTION_LIFETIME,
        )
        .await
        .map_err(ApiError::from)?;
    let Some(par) = &d
        .metadata
        .additional_metadata()
        .pushed_authorization_request_endpoint
    else {
        return Ok(see_other(url.as_str()));
    };
    // RFC 9126: the same parameters, pushed with client authentication.
    let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let pushed = match push(app, up, par, params, now).await {
        Ok(p) => p,
        Err(PushError::Unavailable(why)) => {
            let text = unavailable(why);
            return fail_to_client(
                app,
                tx,
                request,
                ErrorCode::TemporarilyUnavailable,
                text,
                now,
            )
            .await;
        }
        Err(PushError::Refused(why)) => {
            tracing::error!(idp = %name, error = %why, "upstream identity provider refused the pushed request: check the [[idp]] registration");
            return fail_to_client(
                app,
                tx,
                request,
                ErrorCode::ServerError,
                "the identity provider refused the login request",
                now,
            )
            .await;
        }
    };
    let mut location = d.metadata.authorization_endpoint().url().clone();
    location
        .query_pairs_mut()
        .append_pair("client_id", &up.client_id)
        .append_pair("request_uri", &pushed);
    Ok(see_other(location.as_str()))
}

enum PushError {
    Unavailable(String),
    Refused(String),
}

/// Form fields and an `Authorization` header value.
type ClientAuth = (Vec<(String, String)>, Option<String>);

/// The form fields (and header) that authenticate this server at the upstream.
fn client_auth(up: &UpstreamSettings, now: UnixTime) -> Result<ClientAuth, ApiError> {
    match &up.auth {
        UpstreamAuth::PrivateKeyJwt(key) => {
            let mut jti = [0u8; 16];
            segl_jose::random_bytes(&mut jti)?;
            let claims = serde_json::json!({
                "iss": up.client_id, "sub": up.client_id, "aud": up.issuer,
                "jti": segl_jose::b64_encode(jti), "iat": now.secs(), "exp": now.secs() + 60,
            });
            let assertion = segl_jose::sign_jwt(key, segl_proto::typ::JWT, &claims)?;
            Ok((
                vec![
                    ("client_id".into(), up.client_id.clone()),
                    (
                        "client_assertion_type".into(),
                        segl_proto::CLIENT_ASSERTION_TYPE_JWT_BEARER.into(),
                    ),
                    ("client_assertion".into(), assertion),
                ],
                None,
            ))
        }
        UpstreamAuth::ClientSecretBasic(secret) => {
            use base64::Engine as _;
            // RFC 6749 §2.3.1: both parts form-urlencoded first.
            let enc = |s: &str| form_urlencoded_component(s);
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(&up.client_id),
                enc(secret)
            ));
            Ok((Vec::new(), Some(format!("Basic {basic}"))))
        }
    }
}

fn form_urlencoded_component(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn push(
    app: &App,
    up: &UpstreamSettings,
    endpoint: &str,
    mut params: Vec<(String, String)>,
    now: UnixTime,
) -> Result<String, PushError> {
    let (auth_fields, auth_header) =
        client_auth(up, now).map_err(|e| PushError::Refused(format!("{e:?}")))?;
    params.retain(|(k, _)| k != "client_id");
    params.extend(auth_fields);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let mut request = axum::http::Request::builder()
        .method(axum::http::Method::POST)
        .uri(endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json");
    if let Some(h) = auth_header {
        request = request.header(header::AUTHORIZATION, h);
    }
    let request = request
        .body(body.into_bytes())
        .map_err(|e| PushError::Refused(e.to_string()))?;
    let response = call(&app.upstreams.http, up.timeout, request)
        .await
        .map_err(|e| PushError::Unavailable(error_chain(&e)))?;
    let status = response.status();
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap_or_default();
    match (
        status.is_success(),
        body.get("request_uri").and_then(|v| v.as_str()),
    ) {
        (true, Some(uri)) => Ok(uri.to_owned()),
        _ => Err(PushError::Refused(format!("PAR answered {status}: {body}"))),
    }
}

/// `GET /federation/{name}/callback`: the upstream's authorization response.
pub(crate) async fn callback(
    State(app): State<App>,
    Path(name): Path<String>,
    origin: crate::audit::Origin,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.as_deref().unwrap_or("");
    match handle_callback(&app, &name, &origin, &headers, query).await {
        Ok(r) => r,
        Err(Failure::Page(status, text)) => pages::error(status, "nb", &text),
        Err(Failure::Api(e)) => e.into_response(),
    }
}

async fn handle_callback(
    app: &App,
    name: &str,
    origin: &crate::audit::Origin,
    headers: &HeaderMap,
    query: &str,
) -> Result<Response, Failure> {
    let now = app.clock.now();
    let mut params = Form::parse(query.as_bytes()).map_err(|e| page(&e.description))?;
    let state = params.take("state").ok_or_else(|| {
        page("the identity provider's answer has no state; start the login again")
    })?;
    let index = index_of(app, name).ok_or_else(|| page("unknown identity provider"))?;
    // Single use: the state is consumed here.
    let stored = app
        .store
        .take_record(RecordKind::UpstreamLogin, &key_of(&state), now.secs())
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| page("this login has expired or is finished; start the login again"))?;
    let pending: Pending =
        serde_json::from_str(&stored).map_err(|e| ApiError::Internal(e.to_string()))?;
    if pending.idp != name {
        return Err(page(
            "the answer came from another identity provider than the one asked",
        ));
    }
    if session::cookie(headers, session::TX_COOKIE).as_deref() != Some(pending.tx.as_str()) {
        return Err(page(
            "this login was started in another browser (CSRF check failed); start the login again",
        ));
    }
    let t = session::finish_transaction(app, &pending.tx, now)
        .await?
        .ok_or_else(|| page("this login has expired or is finished; start the login again"))?;
    let request = t.request;
    // From here on the client hears of every failure.
    let refuse = |code: ErrorCode, text: &str| {
        Ok(clear_tx(
            app,
            redirect_error(app, &request, &OAuthError::new(code, text)),
        ))
    };
    let up = upstream(app, index).map_err(|e| page(&e))?;
    if let Some(error) = params.take("error") {
        let description = params.take("error_description").unwrap_or_default();
        tracing::info!(target: "segl::audit", event = "upstream_login_failed", idp = %name, client_id = %request.client_id, upstream_error = %error, %description, "the upstream identity provider answered with an error");
        let code = match error.as_str() {
            "temporarily_unavailable" => ErrorCode::TemporarilyUnavailable,
            "login_required" if request.prompts("none") => ErrorCode::LoginRequired,
            _ => ErrorCode::AccessDenied,
        };
        let reason = format!("the upstream answered {error}");
        audit_refusal(app, origin, &request, name, code, &reason, now).await;
        return refuse(code, "the login at the identity provider did not complete");
    }
    let d = match metadata(app, index, false).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(idp = %name, error = %e, "upstream identity provider unavailable");
            return refuse(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider is not available; try again later",
            );
        }
    };
    // RFC 9207: the answer names its issuer (required when the upstream says it does).
    match params.take("iss") {
        Some(iss) if iss != up.issuer => {
            let reason = "the authorization response names another issuer";
            reject(app, origin, &request, name, reason, now).await;
            return refuse(
                ErrorCode::AccessDenied,
                "the identity provider's answer names another issuer",
            );
        }
        None if d
            .metadata
            .additional_metadata()
            .authorization_response_iss_parameter_supported
            == Some(true) =>
        {
            return refuse(
                ErrorCode::AccessDenied,
                "the identity provider's answer has no iss",
            );
        }
        _ => {}
    }
    let Some(code) = params.take("code") else {
        return refuse(
            ErrorCode::AccessDenied,
            "the identity provider's answer has no code",
        );
    };
    let claims = match redeem(app, index, &d, code, &pending, now).await {
        Ok(c) => c,
        Err(Upstream::Unavailable(why)) => {
            tracing::warn!(idp = %name, error = %why, "upstream identity provider unavailable");
            return refuse(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider is not available; try again later",
            );
        }
        Err(Upstream::Refused(why)) => {
            reject(app, origin, &request, name, &why, now).await;
            return refuse(
                ErrorCode::AccessDenied,
                "the identity provider's answer could not be verified",
            );
        }
    };
    let required = required_level(&request.acr_values);
    let mapped = match federation::map_login(&up.policy, &claims, required, |pid| {
        app.settings.persons.get(pid).cloned()
    }) {
        Ok(m) => m,
        Err(refusal) => {
            reject(app, origin, &request, name, &refusal.to_string(), now).await;
            let e = OAuthError::new(ErrorCode::AccessDenied, refusal.to_string());
            let back = redirect_error(app, &request, &e);
            if let Refusal::LevelTooLow { .. } = refusal {
                // A page that says why, then back to the client with access_denied.
                let lang = request.language();
                let href = back
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let page = pages::message_with_link(
                    StatusCode::FORBIDDEN,
                    lang,
                    pages::texts(lang).refused_heading,
                    &refusal.to_string(),
                    &href,
                    10,
                );
                return Ok(clear_tx(app, page));
            }
            return Ok(clear_tx(app, back));
        }
    };
    let login = Login {
        pseudonym: session::pseudonym(app, &mapped.person.pid),
        person: mapped.person,
        idp: name.to_owned(),
        amr: mapped.amr,
        security_level: mapped.level.security_level,
        assurance_level: mapped.level.assurance_level,
        network: "internett".into(),
        auth_time: mapped
            .auth_time
            .filter(|t| *t <= now.secs())
            .unwrap_or(now.secs()),
        sid: session::random_token()?,
    };
    Ok(session::complete_login(app, headers, origin, &request, login, now).await?)
}

/// A refused upstream login (its answer could not be verified or does not qualify): logged as
/// `upstream_login_rejected` and recorded as a failed login with `access_denied`.
async fn reject(
    app: &App,
    origin: &crate::audit::Origin,
    request: &AuthorizationRequest,
    idp: &str,
    reason: &str,
    now: UnixTime,
) {
    tracing::warn!(target: "segl::audit", event = "upstream_login_rejected", idp = %idp, client_id = %request.client_id, %reason, "the upstream login was refused");
    audit_refusal(
        app,
        origin,
        request,
        idp,
        ErrorCode::AccessDenied,
        reason,
        now,
    )
    .await;
}

/// Records a refused or failed upstream login in the audit log (a failed write is logged and
/// does not change the answer).
async fn audit_refusal(
    app: &App,
    origin: &crate::audit::Origin,
    request: &AuthorizationRequest,
    idp: &str,
    code: ErrorCode,
    reason: &str,
    now: UnixTime,
) {
    use segl_core::audit::{Event, EventKind};
    let client_name = app.settings.registry.client(&request.client_id);
    let event = Event::refused(EventKind::Login, now, code)
        .with_client(&request.client_id, client_name.map(|c| c.name.as_str()))
        .with_detail(&format!("idp={idp} refused: {reason}"));
    app.audit.record_refusal(event, origin).await;
}

fn clear_tx(app: &App, mut r: Response) -> Response {
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(app, session::TX_COOKIE, "", 0),
    );
    r
}

enum Upstream {
    Unavailable(String),
    Refused(String),
}

/// Redeems the code at the upstream and verifies the ID token; returns its claims.
async fn redeem(
    app: &App,
    index: usize,
    d: &Discovered,
    code: String,
    pending: &Pending,
    now: UnixTime,
) -> Result<serde_json::Map<String, serde_json::Value>, Upstream> {
    let up = upstream(app, index).map_err(Upstream::Refused)?;
    let secret = match &up.auth {
        UpstreamAuth::ClientSecretBasic(s) => Some(ClientSecret::new(s.to_string())),
        UpstreamAuth::PrivateKeyJwt(_) => None,
    };
    let client = CoreClient::from_provider_metadata(
        d.metadata.clone(),
        ClientId::new(up.client_id.clone()),
        secret,
    )
    .set_redirect_uri(
        RedirectUrl::new(callback_url(app, &up.policy.name))
            .map_err(|e| Upstream::Refused(e.to_string()))?,
    );
    let mut exchange = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Upstream::Refused(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()));
    if let UpstreamAuth::PrivateKeyJwt(_) = up.auth {
        let (fields, _) = client_auth(up, now).map_err(|e| Upstream::Refused(format!("{e:?}")))?;
        for (k, v) in fields.into_iter().filter(|(k, _)| k != "client_id") {
            exchange = exchange.add_extra_param(k, v);
        }
    }
    let http = http_for(app, up);
    let response = exchange.request_async(&http).await.map_err(|e| {
        use openidconnect::RequestTokenError as E;
        match &e {
            E::Request(_) => Upstream::Unavailable(error_chain(&e)),
            _ => Upstream::Refused(format!("token request: {}", error_chain(&e))),
        }
    })?;
    use openidconnect::TokenResponse as _;
    let id_token = response
        .id_token()
        .ok_or_else(|| Upstream::Refused("the token response has no id_token".into()))?;
    let nonce = Nonce::new(pending.nonce.clone());
    let verify = |d: &Discovered| -> Result<(), openidconnect::ClaimsVerificationError> {
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(up.client_id.clone()),
            d.metadata.issuer().clone(),
            d.metadata.jwks().clone(),
        )
        .set_allowed_algs(allowed_algs(&d.metadata));
        id_token.claims(&verifier, &nonce).map(|_| ())
    };
    if let Err(e) = verify(d) {
        use openidconnect::{ClaimsVerificationError as C, SignatureVerificationError as S};
        if !matches!(e, C::SignatureVerification(S::NoMatchingKey)) {
            return Err(Upstream::Refused(format!("ID token: {}", error_chain(&e))));
        }
        // An unknown key: the upstream may have rotated. Fetch its JWKS again, once.
        let fresh = metadata(app, index, true)
            .await
            .map_err(Upstream::Unavailable)?;
        verify(&fresh).map_err(|e| Upstream::Refused(format!("ID token: {}", error_chain(&e))))?;
    }
    // Verified by the crate; the claims as JSON, for the configured claim names.
    let payload = id_token
        .to_string()
        .split('.')
        .nth(1)
        .and_then(|p| segl_jose::b64_decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match payload {
        Some(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(Upstream::Refused(
            "ID token payload is not a JSON object".into(),
        )),
    }
}

/// The algorithms accepted for upstream ID tokens: what the upstream says it uses, among the
/// asymmetric ones this server accepts (never `none` or HMAC).
fn allowed_algs(metadata: &Metadata) -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    let ours = [
        A::RsaSsaPkcs1V15Sha256,
        A::RsaSsaPssSha256,
        A::EcdsaP256Sha256,
        A::EcdsaP384Sha384,
        A::EdDsa,
    ];
    ours.into_iter()
        .filter(|a| metadata.id_token_signing_alg_values_supported().contains(a))
        .collect()
}

/// `GET /login/idp?tx=…[&idp=<name>]`: the choice page, or the choice.
pub(crate) async fn choose(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match handle_choose(&app, &headers, query.as_deref().unwrap_or("")).await {
        Ok(r) => r,
        Err(Failure::Page(status, text)) => pages::error(status, "nb", &text),
        Err(Failure::Api(e)) => e.into_response(),
    }
}

async fn handle_choose(app: &App, headers: &HeaderMap, query: &str) -> Result<Response, Failure> {
    let now = app.clock.now();
    let mut params = Form::parse(query.as_bytes()).map_err(|e| page(&e.description))?;
    let tx = params
        .take("tx")
        .ok_or_else(|| page("the login link is incomplete; start the login again"))?;
    if session::cookie(headers, session::TX_COOKIE).as_deref() != Some(tx.as_str()) {
        return Err(page(
            "this login was started in another browser (CSRF check failed); start the login again",
        ));
    }
    let t = session::transaction(app, &tx, now)
        .await?
        .ok_or_else(|| page("this login has expired or is finished; start the login again"))?;
    let options = choices(app, &t.request);
    match params.take("idp") {
        Some(chosen) => {
            let choice = options
                .iter()
                .find(|c| c.name() == chosen)
                .ok_or_else(|| page("this identity provider cannot be used for this login"))?;
            go_to(app, choice, &tx, &t.request, now).await
        }
        None => {
            let client_name = app
                .settings
                .registry
                .client(&t.request.client_id)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let idps: Vec<pages::IdpOption> = options
                .iter()
                .map(|c| pages::IdpOption {
                    href: format!(
                        "{}?tx={tx}&idp={}",
                        segl_proto::paths::IDP_CHOICE,
                        form_urlencoded_component(c.name())
                    ),
                    name: c.name().to_owned(),
                    display_name: c.display_name().to_owned(),
                })
                .collect();
            Ok(pages::choose(t.request.language(), &client_name, &idps))
        }
    }
}

/// `GET /connect/availableidps`: the identity providers, as HelseID lists them.
pub(crate) async fn available(State(app): State<App>) -> Response {
    let list: Vec<serde_json::Value> =
        federation::choices(policies(&app), app.settings.test_idp, &[])
            .iter()
            .map(|c| serde_json::json!({"name": c.name(), "display_name": c.display_name()}))
            .collect();
    let mut r = axum::Json(list).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}
