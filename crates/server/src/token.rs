//! `POST /connect/token` (RFC 6749 §3.2): read the form, authenticate the client, run the grant,
//! sign the access token.

use crate::App;
use crate::audit::Origin;
use crate::dpop::{self, NonceMode};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use segl_core::audit::{Event, EventKind};
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
use std::sync::{Arc, Mutex, PoisonError};

/// Marks a refresh family among the ids recorded with a code (access tokens are plain jtis).
const FAMILY_PREFIX: &str = "refresh-family:";

/// The largest request body accepted by form endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// The handler.
pub(crate) async fn token(
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

/// RFC 9449 §8: the current nonce rides on every answer, success or error.
pub(crate) fn nonce_header(app: &App, mut response: Response) -> Response {
    if app.nonces.mode() != NonceMode::Off
        && let Ok(v) = HeaderValue::from_str(&app.nonces.current(app.clock.now()))
    {
        response.headers_mut().insert("dpop-nonce", v);
    }
    response
}

async fn handle(
    app: &App,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut form = read_form(headers, body).await?;
    let auth = take_client_auth(&mut form, headers);
    let request = TokenRequest::from_form(&mut form)?;
    let now = app.clock.now();
    // Stateless checks first (assertion, then proof and its nonce), so that a use_dpop_nonce
    // answer consumes nothing and the client can retry with the same assertion.
    let assertion = verify_assertion(app, &auth, Endpoint::Token, now, origin).await?;
    limit_client(app, &assertion)?;
    let proof = dpop::check(app, headers, &app.policy.token_endpoint, now)?;
    if let TokenRequest::ClientCredentials(r) = &request {
        return client_credentials(app, assertion, proof, r, origin, now).await;
    }
    let (client, dpop) = record_jtis(app, assertion, proof, origin).await?;
    // Which organization the client acts for: from its assertion (any grant, so a refresh can
    // switch organization), else what the grant remembers.
    let asserted = organization::from_assertion(client.assertion_claims())?.cloned();
    let cx = Context {
        asserted: asserted.as_ref(),
        dpop: dpop.as_ref(),
        origin,
        now,
    };
    match &request {
        TokenRequest::ClientCredentials(_) => Err(ApiError::Internal(
            "client_credentials is answered before the replay records".into(),
        )),
        TokenRequest::AuthorizationCode(exchange) => code_grant(app, &client, exchange, &cx).await,
        TokenRequest::RefreshToken(r) => refresh_grant(app, &client, r, &cx).await,
        TokenRequest::TokenExchange(r) => exchange_grant(app, &client, r, &cx).await,
    }
}

/// What a grant needs besides the client and its request.
#[derive(Clone, Copy)]
struct Context<'a> {
    /// The organizations the client's assertion asks for (`assertion_details`), if any.
    asserted: Option<&'a serde_json::Value>,
    /// The verified DPoP proof, if one was sent.
    dpop: Option<&'a VerifiedDpop>,
    /// Where the request came from (for its audit event).
    origin: &'a Origin,
    /// Now.
    now: UnixTime,
}

/// `client_credentials` with one durable commit: the assertion's and the proof's `jti` and the
/// token's audit event go in the same group commit, the event only if both records were new
/// (the writer builds the claims from the verdicts); the token is signed after the commit.
async fn client_credentials(
    app: &App,
    assertion: VerifiedAssertion,
    proof: Option<segl_jose::dpop::CheckedProof>,
    request: &grant::ClientCredentialsRequest,
    origin: &Origin,
    now: UnixTime,
) -> Result<Response, ApiError> {
    let items = replay_items(&assertion, proof.as_ref());
    let jti = new_id()?;
    // The claims the writer's transaction issued for this request (its last attempt's).
    let issued = Arc::new(Mutex::new(None::<grant::AccessTokenClaims>));
    let gate = {
        let (app, assertion, proof, request) = (
            app.clone(),
            assertion.clone(),
            proof.clone(),
            request.clone(),
        );
        let (issued, jti) = (issued.clone(), jti.clone());
        move |fresh: &[bool]| -> Option<Event> {
            let claims = (|| {
                let client = assertion.clone().accept(verdict(fresh, 0)).ok()?;
                let dpop = match &proof {
                    Some(p) => Some(p.clone().accept(verdict(fresh, 1)).ok()?),
                    None => None,
                };
                client_credentials_claims(&app, &client, dpop.as_ref(), &request, now, jti.clone())
                    .ok()
            })();
            let event = claims.as_ref().map(|claims| {
                Event::issued(EventKind::TokenIssued, now, claims, None)
                    .with_detail("grant=client_credentials")
            });
            *issued.lock().unwrap_or_else(PoisonError::into_inner) = claims;
            event
        }
    };
    let (fresh, recorded) = app.audit.insert_jtis_gated(&items, origin, gate).await?;
    // A replayed assertion or proof is refused here, with its audit event.
    let (client, dpop) = accept(app, assertion, proof, &fresh, origin).await?;
    let issued = issued.lock().unwrap_or_else(PoisonError::into_inner).take();
    let claims = match issued {
        Some(claims) if recorded => claims,
        _ => {
            // The grant's refusal (the writer met the same and recorded nothing), else the
            // event could not be stored.
            client_credentials_claims(app, &client, dpop.as_ref(), request, now, jti)?;
            return Err(ApiError::Store(segl_store::Error::Unavailable(
                "the token's audit event could not be recorded".into(),
            )));
        }
    };
    let access_token = sign_access_token(app, &claims)?;
    Ok(token_response(&response(access_token, &claims, None)))
}

/// The claims of a `client_credentials` token: the organization the client acts for (from its
/// assertion's `assertion_details`, else its own), the API and scopes, the DPoP binding.
fn client_credentials_claims(
    app: &App,
    client: &AuthenticatedClient,
    dpop: Option<&VerifiedDpop>,
    request: &grant::ClientCredentialsRequest,
    now: UnixTime,
    jti: String,
) -> Result<grant::AccessTokenClaims, ApiError> {
    let asserted = organization::from_assertion(client.assertion_claims())?.cloned();
    let org = select_org(app, client, asserted.as_ref())?;
    Ok(grant::client_credentials(
        client,
        request,
        &app.settings.registry,
        &app.policy,
        now,
        jti,
        dpop,
        &org,
    )?)
}

/// The verdict on the `i`th replay record (absent: not fresh).
fn verdict(fresh: &[bool], i: usize) -> bool {
    fresh.get(i).copied().unwrap_or(false)
}

/// The replay records of a request: the assertion's `jti`, then the proof's.
fn replay_items(
    assertion: &VerifiedAssertion,
    proof: Option<&segl_jose::dpop::CheckedProof>,
) -> Vec<(JtiKind, [u8; 32], i64)> {
    let mut items = vec![(
        JtiKind::ClientAssertion,
        assertion.replay_key(),
        assertion.remember_until().secs(),
    )];
    if let Some(proof) = proof {
        items.push((
            JtiKind::DpopProof,
            proof.replay_key(),
            proof.remember_until(dpop::PROOF_MAX_AGE) + 1,
        ));
    }
    items
}

/// Token exchange (RFC 8693): verify the subject token, decide, sign, audit.
async fn exchange_grant(
    app: &App,
    client: &AuthenticatedClient,
    request: &exchange::ExchangeRequest,
    cx: &Context<'_>,
) -> Result<Response, ApiError> {
    let Context {
        asserted,
        dpop,
        origin,
        now,
    } = *cx;
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
    app.audit
        .record(exchange_event(client, &subject, &claims, now), origin)
        .await?;
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
    cx: &Context<'_>,
) -> Result<Response, ApiError> {
    let Context {
        asserted,
        dpop,
        origin,
        now,
    } = *cx;
    let (code_key, grant) = redeem(app, client, &exchange.code, cx).await?;
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
    let event = Event::issued(
        EventKind::TokenIssued,
        now,
        &claims,
        Some(&grant.login.person.pid),
    );
    let mut detail = String::from("grant=authorization_code");
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
        detail.push_str(&format!(" refresh_family={family}"));
    }
    app.audit.record(event.with_detail(&detail), origin).await?;
    Ok(token_response(&body))
}

/// `refresh_token`: rotate (the store decides first use, grace retry or reuse), check, issue.
async fn refresh_grant(
    app: &App,
    client: &AuthenticatedClient,
    request: &refresh::RefreshRequest,
    cx: &Context<'_>,
) -> Result<Response, ApiError> {
    let Context {
        asserted,
        dpop,
        origin,
        now,
    } = *cx;
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
    let pid = Some(data.grant.login.person.pid.as_str());
    let (expires_at, detail) = match app
        .store
        .rotate_refresh(
            &old_key,
            &crate::session::key_of(&successor),
            now.secs(),
            grace,
        )
        .await?
    {
        Rotation::Rotated {
            expires_at,
            family_id,
            ..
        } => (expires_at, format!("refresh_family={family_id}")),
        Rotation::Grace {
            expires_at,
            family_id,
            ..
        } => (
            expires_at,
            format!("refresh_family={family_id} grace_retry=true"),
        ),
        Rotation::Reused { family_id } => {
            tracing::warn!(target: "segl::audit", event = "refresh_reuse", client_id = %client.client().client_id, family = %family_id, "refresh token reused: family revoked");
            let event = Event::refused(EventKind::RefreshReuse, now, ErrorCode::InvalidGrant)
                .with_client(&client.client().client_id, Some(&client.client().name))
                .with_pid(pid)
                .with_detail(&format!("refresh_family={family_id} family_revoked=true"));
            app.audit.record_refusal(event, origin).await;
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
    let event = Event::issued(EventKind::TokenRefreshed, now, &claims, pid).with_detail(&detail);
    app.audit.record(event, origin).await?;
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

/// The exchange's durable audit event: the actor (the authenticated client, by its own
/// name), the organizations, audience, scopes and `jti` of the new token, its `act` chain, the
/// person's pid when the token carries it, and the original client and the subject's `jti`.
fn exchange_event(
    actor: &AuthenticatedClient,
    subject: &exchange::SubjectToken,
    issued: &grant::AccessTokenClaims,
    now: UnixTime,
) -> Event {
    let claim = |name: &str| issued.identity.get(name).and_then(|v| v.as_str());
    let pid = claim(segl_proto::claims::PID);
    let detail = format!(
        "original_client={} subject_jti={}",
        claim(segl_proto::claims::ORIGINAL_CLIENT_ID).unwrap_or("-"),
        subject.jti()
    );
    Event::issued(EventKind::TokenExchange, now, issued, pid)
        .with_client(&actor.client().client_id, Some(&actor.client().name))
        .with_detail(&detail)
}

/// Redeems a code once (RFC 6749 §4.1.2): a second redemption is refused and revokes the
/// tokens issued from the first.
async fn redeem(
    app: &App,
    client: &AuthenticatedClient,
    code: &str,
    cx: &Context<'_>,
) -> Result<([u8; 32], CodeGrant), ApiError> {
    let now = cx.now;
    let key = crate::session::key_of(code);
    match app.store.redeem_code(&key, now.secs()).await? {
        Redemption::Fresh(data) => {
            let grant = serde_json::from_str(&data)
                .map_err(|e| ApiError::Internal(format!("stored code: {e}")))?;
            Ok((key, grant))
        }
        Redemption::Reused { data, issued } => {
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
            // The person of the first redemption, when the stored grant can be read.
            let first: Option<CodeGrant> = serde_json::from_str(&data).ok();
            let event = Event::refused(EventKind::CodeReuse, now, ErrorCode::InvalidGrant)
                .with_client(&client.client().client_id, Some(&client.client().name))
                .with_pid(first.as_ref().map(|g| g.login.person.pid.as_str()))
                .with_detail(&format!("revoked={}", issued.len()));
            app.audit.record_refusal(event, cx.origin).await;
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

/// private_key_jwt, stateless part: the assertion's header, key, signature and claims. A
/// refusal is an audit event.
pub(crate) async fn verify_assertion(
    app: &App,
    params: &ClientAuthParams,
    endpoint: Endpoint,
    now: UnixTime,
    origin: &Origin,
) -> Result<VerifiedAssertion, ApiError> {
    match client_auth::verify_assertion(params, &app.settings.registry, &app.policy, endpoint, now)
    {
        Ok(verified) => Ok(verified),
        Err(e) => {
            tracing::info!(target: "segl::audit", event = "client_authentication_failed", client_id = ?params.client_id, error = %e, "client authentication failed");
            audit_auth_failure(app, params.client_id.as_deref(), &e, "", origin).await;
            Err(e.into())
        }
    }
}

/// The audit event of a refused client authentication (`client_id` as the request claimed
/// it; `detail` says more, e.g. that the assertion was a replay).
async fn audit_auth_failure(
    app: &App,
    client_id: Option<&str>,
    error: &OAuthError,
    detail: &str,
    origin: &Origin,
) {
    let mut event = Event::refused(
        EventKind::ClientAuthenticationFailed,
        app.clock.now(),
        error.code,
    );
    if let Some(id) = client_id {
        let name = app.settings.registry.client(id).map(|c| c.name.as_str());
        event = event.with_client(id, name);
    }
    if !detail.is_empty() {
        event = event.with_detail(detail);
    }
    app.audit.record_refusal(event, origin).await;
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
    origin: &Origin,
) -> Result<(AuthenticatedClient, Option<VerifiedDpop>), ApiError> {
    // Durable before anything is issued, in the group commit shared with concurrent requests.
    let fresh = app
        .audit
        .insert_jtis(&replay_items(&assertion, proof.as_ref()))
        .await?;
    accept(app, assertion, proof, &fresh, origin).await
}

/// The store's verdicts on the assertion's and the proof's `jti` (in [`replay_items`] order):
/// a replayed assertion is refused and is an audit event; a replayed proof is refused.
async fn accept(
    app: &App,
    assertion: VerifiedAssertion,
    proof: Option<segl_jose::dpop::CheckedProof>,
    fresh: &[bool],
    origin: &Origin,
) -> Result<(AuthenticatedClient, Option<VerifiedDpop>), ApiError> {
    let client_id = assertion.client_id().to_owned();
    let client = match assertion.accept(verdict(fresh, 0)) {
        Ok(client) => client,
        Err(e) => {
            audit_auth_failure(app, Some(&client_id), &e, "replayed_assertion=true", origin).await;
            return Err(e.into());
        }
    };
    let dpop = match proof {
        Some(p) => Some(p.accept(verdict(fresh, 1)).map_err(dpop::to_oauth)?),
        None => None,
    };
    Ok((client, dpop))
}

/// private_key_jwt, stateful part: record the `jti` (the unique insert is the replay check,
/// shared by every process on the store).
pub(crate) async fn record_assertion(
    app: &App,
    verified: VerifiedAssertion,
    origin: &Origin,
) -> Result<AuthenticatedClient, ApiError> {
    Ok(record_jtis(app, verified, None, origin).await?.0)
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
