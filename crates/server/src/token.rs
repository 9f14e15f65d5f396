//! `POST /connect/token` (RFC 6749 §3.2): read the form, authenticate the client, run the grant,
//! sign the access token.

use crate::App;
use crate::dpop::{self, NonceMode};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use segl_core::authorize::{self, CodeGrant};
use segl_core::client_auth::{
    self, AuthenticatedClient, ClientAuthParams, Endpoint, VerifiedAssertion,
};
use segl_core::exchange;
use segl_core::form::Form;
use segl_core::grant::{self, TokenRequest};
use segl_core::organization::{self, OrgSelection};
use segl_core::refresh::{self, RefreshData};
use segl_core::{OAuthError, UnixTime};
use segl_jose::dpop::VerifiedDpop;
use segl_proto::ErrorCode;
use segl_proto::token::TokenResponse;
use segl_store::{JtiKind, Redemption, Rotation};

/// Marks a refresh family among the ids recorded with a code (access tokens are plain jtis).
const FAMILY_PREFIX: &str = "refresh-family:";

/// The largest request body accepted by form endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// The handler.
pub(crate) async fn token(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let response = match handle(&app, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    nonce_header(&app, response)
}

/// RFC 9449 §8: the current nonce rides on every answer, success or error.
pub(crate) fn nonce_header(app: &App, mut response: Response) -> Response {
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
    limit_client(app, &assertion)?;
    let proof = dpop::check(app, headers, &app.policy.token_endpoint, now)?;
    let (client, dpop) = record_jtis(app, assertion, proof).await?;
    // Which organization the client acts for: from its assertion (any grant, so a refresh can
    // switch organization), else what the grant remembers.
    let asserted = organization::from_assertion(client.assertion_claims())?.cloned();
    match &request {
        TokenRequest::ClientCredentials(r) => {
            let org = select_org(app, &client, asserted.as_ref())?;
            let claims = grant::client_credentials(
                &client,
                r,
                &app.settings.registry,
                &app.policy,
                now,
                new_id()?,
                dpop.as_ref(),
                &org,
            )?;
            let access_token = sign_access_token(app, &claims)?;
            Ok(token_response(&response(access_token, &claims, None)))
        }
        TokenRequest::AuthorizationCode(exchange) => {
            code_grant(
                app,
                &client,
                exchange,
                asserted.as_ref(),
                dpop.as_ref(),
                now,
            )
            .await
        }
        TokenRequest::RefreshToken(r) => {
            refresh_grant(app, &client, r, asserted.as_ref(), dpop.as_ref(), now).await
        }
        TokenRequest::TokenExchange(r) => {
            exchange_grant(app, &client, r, asserted.as_ref(), dpop.as_ref(), now).await
        }
    }
}

/// Token exchange (RFC 8693): verify the subject token, decide, sign, audit.
async fn exchange_grant(
    app: &App,
    client: &AuthenticatedClient,
    request: &exchange::ExchangeRequest,
    asserted: Option<&serde_json::Value>,
    dpop: Option<&VerifiedDpop>,
    now: UnixTime,
) -> Result<Response, ApiError> {
    let ring = app.keys.current();
    let subject = exchange::verify_subject(
        &request.subject_token,
        &ring.verifiers,
        &app.settings.issuer,
        now,
    )?;
    if app.store.is_token_revoked(subject.jti()).await? {
        return Err(OAuthError::invalid_request("invalid subject_token - revoked").into());
    }
    let actor_org = select_org(app, client, asserted)?;
    let claims = exchange::exchange(
        client,
        request,
        &subject,
        &app.settings.registry,
        &app.policy,
        app.settings.exchange_max_depth,
        now,
        new_id()?,
        dpop,
        &actor_org,
    )?;
    let access_token = sign_access_token(app, &claims)?;
    audit_exchange(&subject, &claims);
    let mut body = response(access_token, &claims, None);
    body.issued_token_type = Some(exchange::ACCESS_TOKEN_TYPE.into());
    Ok(token_response(&body))
}

fn select_org(
    app: &App,
    client: &AuthenticatedClient,
    details: Option<&serde_json::Value>,
) -> Result<OrgSelection, ApiError> {
    let delegated = |from: &str, to: &str| app.is_delegated(from, to);
    Ok(organization::select(client.client(), details, &delegated)?)
}

/// `authorization_code`: redeem, check, issue access token, ID token and (with
/// `offline_access`) the first refresh token of a new family.
async fn code_grant(
    app: &App,
    client: &AuthenticatedClient,
    exchange: &authorize::CodeExchange,
    asserted: Option<&serde_json::Value>,
    dpop: Option<&VerifiedDpop>,
    now: UnixTime,
) -> Result<Response, ApiError> {
    let (code_key, grant) = redeem(app, &exchange.code, now).await?;
    authorize::check_exchange(&grant, exchange, client, dpop.map(|d| d.jkt()))?;
    let details = asserted.or(grant.request.authorization_details.as_ref());
    let org = select_org(app, client, details)?;
    let jti = new_id()?;
    // Recorded before the token exists, so a racing second redemption revokes it.
    app.store.record_code_issue(&code_key, &jti).await?;
    let claims = grant::code_token(
        client,
        &grant,
        &exchange.resource,
        &app.settings.registry,
        &app.policy,
        now,
        jti,
        dpop,
        &org,
    )?;
    let access_token = sign_access_token(app, &claims)?;
    let id_token = if grant.request.scopes.iter().any(|s| s == "openid") {
        Some(id_token(app, &grant, &access_token, now)?)
    } else {
        None
    };
    let mut body = response(access_token, &claims, id_token);
    if refresh::offered(client, &grant) {
        let token = crate::session::random_token()?;
        let expires_at = now.secs() + app.settings.tokens.refresh_token_lifetime;
        let data = RefreshData {
            grant,
            org,
            dpop_jkt: dpop.map(|d| d.jkt().to_owned()),
        };
        let json = serde_json::to_string(&data).map_err(|e| ApiError::Internal(e.to_string()))?;
        let family = new_id()?;
        // Recorded with the code too, so a second redemption revokes the family (RFC 9700 §4.2.4).
        app.store
            .record_code_issue(&code_key, &format!("{FAMILY_PREFIX}{family}"))
            .await?;
        app.store
            .insert_refresh(
                &crate::session::key_of(&token),
                &family,
                &client.client().client_id,
                &json,
                expires_at,
            )
            .await?;
        body.refresh_token = Some(token);
        body.rt_expires_in = Some((expires_at - now.secs()).max(0) as u64);
    }
    Ok(token_response(&body))
}

/// `refresh_token`: rotate (the store decides first use, grace retry or reuse), check, issue.
async fn refresh_grant(
    app: &App,
    client: &AuthenticatedClient,
    request: &refresh::RefreshRequest,
    asserted: Option<&serde_json::Value>,
    dpop: Option<&VerifiedDpop>,
    now: UnixTime,
) -> Result<Response, ApiError> {
    let old_key = crate::session::key_of(&request.refresh_token);
    // Check owner, DPoP binding and scope before anything changes: a request that fails them
    // must not rotate (or burn) the family.
    let found = app.store.refresh_lookup(&old_key, now.secs()).await?;
    let Some(found) = found.filter(|f| f.client_id == client.client().client_id) else {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the refresh token is unknown, expired or not this client's",
        )
        .into());
    };
    let data: RefreshData = serde_json::from_str(&found.data)
        .map_err(|e| ApiError::Internal(format!("stored refresh data: {e}")))?;
    let grant = refresh::check(&data, client, request, dpop.map(|d| d.jkt()))?;
    let successor = app.successor(&request.refresh_token);
    let grace = app.settings.tokens.refresh_token_grace;
    let expires_at = match app
        .store
        .rotate_refresh(
            &old_key,
            &crate::session::key_of(&successor),
            now.secs(),
            grace,
        )
        .await?
    {
        Rotation::Rotated { expires_at, .. } | Rotation::Grace { expires_at, .. } => expires_at,
        Rotation::Reused { family_id } => {
            tracing::warn!(target: "segl::audit", event = "refresh_reuse", client_id = %client.client().client_id, family = %family_id, "refresh token reused: family revoked");
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the refresh token was already used; its family is revoked",
            )
            .into());
        }
        Rotation::Revoked => {
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the refresh token has been revoked",
            )
            .into());
        }
        Rotation::Missing => {
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the refresh token is unknown or expired",
            )
            .into());
        }
    };
    let org = match asserted {
        Some(details) => select_org(app, client, Some(details))?,
        None => data.org.clone(),
    };
    let claims = grant::code_token(
        client,
        &grant,
        &request.resource,
        &app.settings.registry,
        &app.policy,
        now,
        new_id()?,
        dpop,
        &org,
    )?;
    let access_token = sign_access_token(app, &claims)?;
    let mut body = response(access_token, &claims, None);
    body.refresh_token = Some(successor);
    body.rt_expires_in = Some((expires_at - now.secs()).max(0) as u64);
    Ok(token_response(&body))
}

/// The exchange as an audit event: both clients, the person and the organizations.
fn audit_exchange(subject: &exchange::SubjectToken, issued: &grant::AccessTokenClaims) {
    let s = subject.claims();
    let text = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("");
    tracing::info!(
        target: "segl::audit",
        event = "token_exchange",
        subject_client = text("client_id"),
        subject_jti = text("jti"),
        subject_aud = ?s.get("aud"),
        actor = %issued.client_id,
        actor_orgnr = ?issued.identity.get("act").and_then(|a| a.get(segl_proto::claims::ORGNR_PARENT)),
        original_client = ?issued.identity.get(segl_proto::claims::ORIGINAL_CLIENT_ID),
        orgnr_parent = %issued.orgnr_parent,
        pid = text(segl_proto::claims::PID),
        aud = %issued.aud,
        jti = %issued.jti,
        "token exchanged"
    );
}

/// Redeems a code once (RFC 6749 §4.1.2): a second redemption is refused and revokes the
/// tokens issued from the first.
async fn redeem(app: &App, code: &str, now: UnixTime) -> Result<([u8; 32], CodeGrant), ApiError> {
    let key = crate::session::key_of(code);
    match app.store.redeem_code(&key, now.secs()).await? {
        Redemption::Fresh(data) => {
            let grant = serde_json::from_str(&data)
                .map_err(|e| ApiError::Internal(format!("stored code: {e}")))?;
            Ok((key, grant))
        }
        Redemption::Reused { issued, .. } => {
            let until = now.secs() + app.settings.tokens.access_token_lifetime;
            for issued_id in &issued {
                match issued_id.strip_prefix(FAMILY_PREFIX) {
                    Some(family) => {
                        app.store.revoke_refresh_family(family).await?;
                    }
                    None => app.store.revoke_token(issued_id, until).await?,
                }
            }
            tracing::warn!(
                revoked = issued.len(),
                "authorization code used twice: tokens issued from it are revoked"
            );
            Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the code has already been used; tokens issued with it are revoked",
            )
            .into())
        }
        Redemption::Missing => Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the code is unknown or has expired",
        )
        .into()),
    }
}

fn sign_access_token(app: &App, claims: &grant::AccessTokenClaims) -> Result<String, ApiError> {
    let grant = if claims.identity.contains_key("act") {
        "token_exchange"
    } else if claims.identity.contains_key("idp") {
        "person"
    } else {
        "client_credentials"
    };
    crate::metrics::token_issued(grant);
    let ring = app.keys.current();
    let token = segl_jose::sign_jwt(&ring.signing, segl_proto::typ::ACCESS_TOKEN, claims)?;
    tracing::info!(
        target: "segl::audit",
        event = "token_issued",
        grant,
        client_id = %claims.client_id,
        orgnr_parent = %claims.orgnr_parent,
        aud = %claims.aud,
        jti = %claims.jti,
        "access token issued"
    );
    Ok(token)
}

/// The ID token, with `at_hash` (OIDC Core §3.1.3.6: the left half of the access token's hash
/// by the ID token's algorithm; SHA-512 for EdDSA).
fn id_token(
    app: &App,
    grant: &CodeGrant,
    access_token: &str,
    now: UnixTime,
) -> Result<String, ApiError> {
    let ring = app.keys.current();
    let digest: Vec<u8> = match ring.signing.alg() {
        segl_jose::Alg::EdDSA
        | segl_jose::Alg::RS512
        | segl_jose::Alg::PS512
        | segl_jose::Alg::ES512 => {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, access_token.as_bytes())
                .as_ref()
                .to_vec()
        }
        segl_jose::Alg::RS384 | segl_jose::Alg::PS384 | segl_jose::Alg::ES384 => {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, access_token.as_bytes())
                .as_ref()
                .to_vec()
        }
        _ => segl_jose::sha256(access_token.as_bytes()).to_vec(),
    };
    let at_hash = segl_jose::b64_encode(digest.get(..digest.len() / 2).unwrap_or_default());
    let claims = grant::id_token_claims(
        grant,
        &app.policy,
        app.settings.tokens.id_token_lifetime,
        now,
        at_hash,
    );
    Ok(segl_jose::sign_jwt(
        &ring.signing,
        segl_proto::typ::JWT,
        &claims,
    )?)
}

fn response(
    access_token: String,
    claims: &grant::AccessTokenClaims,
    id_token: Option<String>,
) -> TokenResponse {
    TokenResponse {
        access_token,
        token_type: claims.token_type().into(),
        expires_in: (claims.exp - claims.iat).max(0) as u64,
        scope: Some(claims.scope_string()),
        refresh_token: None,
        rt_expires_in: None,
        id_token,
        issued_token_type: None,
    }
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
        .inspect_err(|e| {
            tracing::info!(target: "segl::audit", event = "client_authentication_failed", client_id = ?params.client_id, error = %e, "client authentication failed")
        })?)
}

/// The per-client rate limit, once the client is known (before any store write).
pub(crate) fn limit_client(app: &App, assertion: &VerifiedAssertion) -> Result<(), ApiError> {
    app.limits
        .client
        .check(assertion.client_id(), std::time::Instant::now())
        .map_err(ApiError::RateLimited)
}

/// The stateful part of client authentication and DPoP together: the assertion's and the
/// proof's `jti` in one store transaction (one durable commit on the token path).
pub(crate) async fn record_jtis(
    app: &App,
    assertion: VerifiedAssertion,
    proof: Option<segl_jose::dpop::CheckedProof>,
) -> Result<(AuthenticatedClient, Option<VerifiedDpop>), ApiError> {
    let Some(proof) = proof else {
        return Ok((record_assertion(app, assertion).await?, None));
    };
    let (akey, pkey) = (assertion.replay_key(), proof.replay_key());
    let items = [
        (
            JtiKind::ClientAssertion,
            &akey[..],
            assertion.remember_until().secs(),
        ),
        (
            JtiKind::DpopProof,
            &pkey[..],
            proof.remember_until(dpop::PROOF_MAX_AGE) + 1,
        ),
    ];
    let fresh = crate::metrics::store_op("insert_jtis", app.store.insert_jtis(&items)).await?;
    let (a, p) = (
        fresh.first().copied().unwrap_or(false),
        fresh.get(1).copied().unwrap_or(false),
    );
    let client = assertion.accept(a)?;
    let dpop = proof.accept(p).map_err(dpop::to_oauth)?;
    Ok((client, Some(dpop)))
}

/// private_key_jwt, stateful part: record the `jti` (the unique insert is the replay check,
/// shared by every process on the store).
pub(crate) async fn record_assertion(
    app: &App,
    verified: VerifiedAssertion,
) -> Result<AuthenticatedClient, ApiError> {
    let fresh = crate::metrics::store_op(
        "insert_jti",
        app.store.insert_jti(
            JtiKind::ClientAssertion,
            &verified.replay_key(),
            verified.remember_until().secs(),
        ),
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
