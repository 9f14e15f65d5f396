//! **SFM** (demo of Sentral forskrivningsmodul): an API that an EHR calls with a DPoP-bound
//! token for the audience `nhn:sfm` (scope `nhn:sfm/api`), and that then calls
//! Reseptformidleren on the EHR's behalf by **token exchange** (RFC 8693 in HelseID's profile,
//! HELSEID.md §9).
//!
//! `POST /api/prescriptions` with any small JSON body (or none):
//!
//! 1. the EHR's token is verified with `segl-verify` (signature, issuer, audience `nhn:sfm`,
//!    scope `nhn:sfm/api`, lifetime, DPoP proof with `ath`, and SFM's own DPoP nonce when
//!    configured); a refusal is the verifier's answer (401/403 with `WWW-Authenticate`);
//! 2. SFM exchanges it at the issuer's token endpoint: `grant_type`
//!    `urn:ietf:params:oauth:grant-type:token-exchange`, the EHR's token as `subject_token`,
//!    scope `nhn:reseptformidleren/rf`, authenticated as the SFM client (private_key_jwt) with a
//!    proof by SFM's own DPoP key (the issuer's nonce dance included);
//! 3. SFM calls Reseptformidleren's `GET /api/caller` with the new token, bound to SFM's key;
//! 4. SFM answers the EHR with a [`Receipt`]: the body it received, who called SFM, the
//!    exchanged token's type, SFM's DPoP key thumbprint, and what Reseptformidleren said about
//!    its caller (the person, the original client, the actor chain).
//!
//! A refused exchange or a refusal by Reseptformidleren is answered `502` with a JSON body that
//! says which step failed and what the other side said.
//!
//! The real SFM talks to Reseptformidleren with signed SOAP messages, not with a HelseID
//! audience of its own (HELSEID.md §13); this demo uses the 2020 token-exchange profile's
//! reference flow (EPJ → SFM → a downstream API) with the demo's names.
//!
//! # Running it against `segl serve`
//!
//! With a configuration that has the APIs `nhn:sfm` and `nhn:reseptformidleren`, an EHR client
//! for `nhn:sfm/api`, and the SFM client (see `examples/README.md` or the `scenario` binary,
//! which writes one), a key from `segl keys generate --alg ES256 --out sfm`, and
//! Reseptformidleren running on port 9100:
//!
//! ```sh
//! cargo run -p segl-examples --bin sfm -- --issuer http://127.0.0.1:8080 \
//!     --client-id sfm --key sfm.private.jwk.json --reseptformidleren http://127.0.0.1:9100
//! ```

use crate::reseptformidleren::{self, Caller};
use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use segl_client::{DpopKey, Issuer};
use segl_jose::{Alg, SigningKey};
use segl_proto::token::TokenResponse;
use segl_verify::{DpopNonce, TokenBinding, VerifiedToken, Verifier, VerifierConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// SFM's audience ("kortnavn").
pub const AUDIENCE: &str = "nhn:sfm";
/// The scope an EHR needs to call SFM.
pub const SCOPE: &str = "nhn:sfm/api";
/// The endpoint the EHR calls.
pub const PRESCRIPTIONS_PATH: &str = "/api/prescriptions";
/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The only subject token type HelseID accepts.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The largest request body SFM reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Every outgoing HTTP request (issuer, Reseptformidleren) gives up after this long.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How SFM is set up.
#[derive(Debug)]
pub struct Settings {
    /// The token issuer (Segl or HelseID), exactly as in its tokens' `iss`.
    pub issuer: String,
    /// The base URL the EHR calls SFM at (DPoP proofs' `htu` must match it).
    pub public_url: String,
    /// SFM's client id at the issuer (the token-exchange actor).
    pub client_id: String,
    /// SFM's client key (private_key_jwt).
    pub key: SigningKey,
    /// The base URL of Reseptformidleren (`GET {url}/api/caller`).
    pub reseptformidleren_url: String,
    /// Which presentations of the EHR's token SFM accepts (DPoP only, like SFM API v2).
    pub binding: TokenBinding,
    /// Whether SFM requires its own DPoP nonces from the EHR (RFC 9449 §9).
    pub dpop_nonce: DpopNonce,
}

/// The running SFM service: its verifier, its client of the issuer, its DPoP key.
#[derive(Debug)]
pub struct Sfm {
    verifier: Arc<Verifier>,
    issuer: Issuer,
    client_id: String,
    key: SigningKey,
    dpop: DpopKey,
    http: reqwest::Client,
    caller_url: String,
}

/// The router state.
#[derive(Debug, Clone)]
struct AppState {
    verifier: Arc<Verifier>,
    sfm: Arc<Sfm>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Arc<Verifier> {
        state.verifier.clone()
    }
}

/// The verifier configuration of SFM: audience `nhn:sfm`, scope `nhn:sfm/api`.
pub fn verifier_config(public_url: &str, binding: TokenBinding) -> VerifierConfig {
    VerifierConfig::new(AUDIENCE)
        .with_required_scopes([SCOPE])
        .with_binding(binding)
        .with_public_base_url(public_url)
}

/// An HTTP client with bounded timeouts and no redirects.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

impl Sfm {
    /// Reads the issuer's discovery document (for the verifier and for the token endpoint) and
    /// makes SFM's DPoP key.
    pub async fn discover(settings: Settings) -> anyhow::Result<Sfm> {
        let http = http_client()?;
        let config = verifier_config(&settings.public_url, settings.binding)
            .with_dpop_nonce(settings.dpop_nonce)
            .with_http_client(http.clone());
        let verifier = Verifier::discover(&settings.issuer, config).await?;
        let issuer = Issuer::discover(http.clone(), &settings.issuer).await?;
        Ok(Sfm {
            verifier: Arc::new(verifier),
            issuer,
            client_id: settings.client_id,
            key: settings.key,
            dpop: DpopKey::generate(Alg::ES256)?,
            http,
            caller_url: format!(
                "{}{}",
                settings.reseptformidleren_url.trim_end_matches('/'),
                reseptformidleren::CALLER_PATH
            ),
        })
    }

    /// The thumbprint of SFM's DPoP key: the `cnf.jkt` of every token it gets by exchange.
    pub fn dpop_jkt(&self) -> anyhow::Result<String> {
        Ok(self.dpop.jkt()?)
    }

    /// Exchanges `subject_token` (a token issued to SFM) for a token to Reseptformidleren.
    pub async fn exchange(&self, subject_token: &str) -> Result<TokenResponse, segl_client::Error> {
        self.issuer
            .token_request(
                &self.client_id,
                &self.key,
                &[
                    ("grant_type", TOKEN_EXCHANGE_GRANT),
                    ("subject_token", subject_token),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("scope", reseptformidleren::SCOPE),
                ],
                Some(&self.dpop),
            )
            .await
    }
}

/// What SFM answers the EHR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// The JSON body the EHR sent (`null` for none).
    pub received: Value,
    /// Who called SFM: the EHR's token as SFM verified it.
    pub sfm_caller: Caller,
    /// The token SFM got by exchange.
    pub exchanged: Exchanged,
    /// What Reseptformidleren said about its caller (`GET /api/caller`).
    pub reseptformidleren: Caller,
}

/// The exchanged token, described (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchanged {
    /// `DPoP` or `Bearer`.
    pub token_type: String,
    /// RFC 8693 `issued_token_type`.
    pub issued_token_type: Option<String>,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The thumbprint of SFM's DPoP key (the `cnf.jkt` the token should carry).
    pub sfm_dpop_jkt: String,
}

/// A step that failed after the EHR's token was accepted: answered `502`.
#[derive(Debug)]
pub enum Failure {
    /// The EHR's request body is not JSON.
    BadBody(String),
    /// The `Authorization` header could not be read again (cannot happen after verification).
    NoToken,
    /// The issuer refused the exchange, or could not be reached.
    Exchange(segl_client::Error),
    /// Reseptformidleren could not be reached, refused, or answered something unreadable.
    Reseptformidleren {
        /// Its HTTP status, when it answered.
        status: Option<u16>,
        /// What it said, or what went wrong.
        detail: Value,
    },
    /// Something local (e.g. the DPoP key).
    Internal(String),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Failure::BadBody(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": format!("the body is not JSON: {e}")}),
            ),
            Failure::NoToken => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_token", "error_description": "no access token"}),
            ),
            Failure::Exchange(e) => {
                let issuer_said = match &e {
                    segl_client::Error::OAuth { status, error } => json!({
                        "status": status,
                        "error": error.error,
                        "error_description": error.error_description,
                    }),
                    other => json!({"error_description": other.to_string()}),
                };
                (
                    StatusCode::BAD_GATEWAY,
                    json!({"error": "token_exchange_failed", "step": "token exchange at the issuer", "issuer_said": issuer_said}),
                )
            }
            Failure::Reseptformidleren { status, detail } => (
                StatusCode::BAD_GATEWAY,
                json!({"error": "reseptformidleren_failed", "step": "GET /api/caller at Reseptformidleren", "status": status, "reseptformidleren_said": detail}),
            ),
            Failure::Internal(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "server_error", "error_description": e}),
            ),
        };
        tracing::warn!(%status, %body, "SFM could not complete the request");
        (status, Json(body)).into_response()
    }
}

/// SFM's routes. Unknown paths are 404 and other methods 405 (axum's defaults).
pub fn router(sfm: Arc<Sfm>) -> Router {
    let state = AppState {
        verifier: sfm.verifier.clone(),
        sfm,
    };
    Router::new()
        .route(PRESCRIPTIONS_PATH, post(prescriptions))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The access token of a request whose `Authorization` header the verifier has accepted.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (_scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// `POST /api/prescriptions`.
async fn prescriptions(
    State(state): State<AppState>,
    token: VerifiedToken,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>, Failure> {
    let received: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| Failure::BadBody(e.to_string()))?
    };
    let sfm = &state.sfm;
    let subject_token = presented_token(&headers).ok_or(Failure::NoToken)?;
    let sfm_caller = Caller::from(&token);
    tracing::info!(
        client_id = token.client_id(),
        original_client_id = token.original_client_id(),
        person = token.pid().is_some(),
        "EHR call accepted; exchanging its token"
    );

    let exchanged = sfm
        .exchange(subject_token)
        .await
        .map_err(Failure::Exchange)?;
    let bound = exchanged.token_type.eq_ignore_ascii_case("DPoP");
    let response = segl_client::call_api(
        &sfm.http,
        reqwest::Method::GET,
        &sfm.caller_url,
        &exchanged.access_token,
        bound.then_some(&sfm.dpop),
    )
    .await
    .map_err(|e| Failure::Reseptformidleren {
        status: None,
        detail: json!(e.to_string()),
    })?;
    let status = response.status();
    let www_authenticate = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Failure::Reseptformidleren {
            status: Some(status.as_u16()),
            detail: json!(e.to_string()),
        })?;
    if !status.is_success() {
        return Err(Failure::Reseptformidleren {
            status: Some(status.as_u16()),
            detail: json!({
                "www_authenticate": www_authenticate,
                "body": String::from_utf8_lossy(&bytes),
            }),
        });
    }
    let reseptformidleren: Caller =
        serde_json::from_slice(&bytes).map_err(|e| Failure::Reseptformidleren {
            status: Some(status.as_u16()),
            detail: json!(format!("unreadable answer: {e}")),
        })?;
    Ok(Json(Receipt {
        received,
        sfm_caller,
        exchanged: Exchanged {
            token_type: exchanged.token_type,
            issued_token_type: exchanged.issued_token_type,
            expires_in: exchanged.expires_in,
            sfm_dpop_jkt: sfm
                .dpop_jkt()
                .map_err(|e| Failure::Internal(e.to_string()))?,
        },
        reseptformidleren,
    }))
}
