//! **Reseptformidleren** (demo): an API that accepts Segl or HelseID access tokens for the
//! audience `nhn:reseptformidleren` with scope `nhn:reseptformidleren/rf`, as DPoP or Bearer
//! (per `--binding`, default either), and answers `GET /api/caller` with who called: the
//! client, its organization, the person when there is one, the token-exchange actor chain, the
//! scopes and audience, and whether the token was DPoP-bound.
//!
//! Every other request is refused by the usual rules: 401 with a `WWW-Authenticate` challenge
//! for a missing or invalid token (and `use_dpop_nonce` with `--dpop-nonce`), 403
//! `insufficient_scope`, 404 for an unknown path, 405 for another method.
//!
//! The real Reseptformidleren is reached through SFM's signed messages, not with a HelseID
//! audience of its own (HELSEID.md §13); the names here are the demo's.
//!
//! # Running it against `segl serve`
//!
//! 1. A client key and a configuration with this API and a client for it:
//!
//!    ```sh
//!    segl keys generate --alg ES256 --out epj
//!    openssl rand -base64 32 > kek.b64
//!    cat > segl.toml <<'TOML'
//!    issuer   = "http://127.0.0.1:8080"
//!    listen   = "127.0.0.1:8080"
//!    database = "sqlite://segl.db"
//!    key_encryption_key_file = "kek.b64"
//!
//!    [[api]]
//!    audience = "nhn:reseptformidleren"
//!    scopes   = ["nhn:reseptformidleren/rf"]
//!
//!    [[client]]
//!    client_id    = "epj-granfjelldal"
//!    name         = "Acme EPJ at Granfjelldal"
//!    organization = "999977774"
//!    grant_types  = ["client_credentials"]
//!    scopes       = ["nhn:reseptformidleren/rf"]
//!    jwks_file    = "epj.public.jwks.json"
//!    require_dpop = false
//!    TOML
//!    segl serve --config segl.toml
//!    ```
//!
//! 2. The API, in another terminal (it reads the issuer's discovery document and JWKS at start;
//!    a key the issuer rotates in later is fetched when a token first names it):
//!
//!    ```sh
//!    cargo run -p segl-examples --bin reseptformidleren -- --issuer http://127.0.0.1:8080
//!    ```
//!
//! 3. A token, and the call:
//!
//!    ```sh
//!    TOKEN=$(segl token get --issuer http://127.0.0.1:8080 --client-id epj-granfjelldal \
//!        --key epj.private.jwk.json --scope nhn:reseptformidleren/rf | jq -r .access_token)
//!    curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:9100/api/caller
//!    curl -i http://127.0.0.1:9100/api/caller          # 401 with the DPoP and Bearer challenges
//!    ```
//!
//! A DPoP-bound token (`token_type` `DPoP`) is sent as `Authorization: DPoP <token>` with a
//! fresh `DPoP` proof for `GET http://127.0.0.1:9100/api/caller` carrying `ath`; start the API
//! with `--binding dpop` to refuse Bearer tokens, and `--dpop-nonce` to require its nonces.

use axum::routing::get;
use axum::{Json, Router};
use segl_verify::{TokenBinding, VerifiedToken, Verifier, VerifierConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The API's audience ("kortnavn").
pub const AUDIENCE: &str = "nhn:reseptformidleren";
/// The scope every call needs.
pub const SCOPE: &str = "nhn:reseptformidleren/rf";
/// The one endpoint.
pub const CALLER_PATH: &str = "/api/caller";

/// The verifier configuration of this API: its audience and scope, `binding`, and the public
/// base URL clients call (for DPoP `htu`).
pub fn config(public_url: &str, binding: TokenBinding) -> VerifierConfig {
    VerifierConfig::new(AUDIENCE)
        .with_required_scopes([SCOPE])
        .with_binding(binding)
        .with_public_base_url(public_url)
}

/// The API's routes. Unknown paths are 404 and other methods 405 (axum's defaults).
pub fn router(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route(CALLER_PATH, get(caller))
        .with_state(verifier)
}

/// `GET /api/caller`: the verified token, described.
async fn caller(token: VerifiedToken) -> Json<Caller> {
    Json(Caller::from(&token))
}

/// Who called, as `GET /api/caller` answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Caller {
    /// The client system.
    pub client: Client,
    /// The organization the client acts for.
    pub organization: Organization,
    /// The person, when the token was issued after a login.
    pub person: Option<Person>,
    /// The token-exchange actors, outermost (the current actor) first.
    pub actors: Vec<ActorView>,
    /// The first client of a token-exchange chain.
    pub original_client_id: Option<String>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The token's audiences.
    pub audience: Vec<String>,
    /// Whether the token was DPoP-bound (and presented with a verified proof).
    pub dpop_bound: bool,
    /// The DPoP key thumbprint of a bound token.
    pub jkt: Option<String>,
}

/// The calling client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    /// `client_id`.
    pub id: Option<String>,
    /// Its registered name.
    pub name: Option<String>,
}

/// The organization numbers and tenancy of the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Organization {
    /// The legal entity (`orgnr_parent`).
    pub parent: Option<String>,
    /// The sub-unit (`orgnr_child`).
    pub child: Option<String>,
    /// The supplier of a multi-tenant client (`orgnr_supplier`).
    pub supplier: Option<String>,
    /// `single-tenant` or `multi-tenant`.
    pub tenancy: Option<String>,
}

/// The person behind the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Person {
    /// National identity number.
    pub pid: Option<String>,
    /// Its pseudonym.
    pub pid_pseudonym: Option<String>,
    /// Health-personnel-register number.
    pub hpr_number: Option<String>,
    /// Security level of the login.
    pub security_level: Option<String>,
    /// eIDAS assurance level of the login.
    pub assurance_level: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `given_name`.
    pub given_name: Option<String>,
    /// `middle_name`.
    pub middle_name: Option<String>,
    /// `family_name`.
    pub family_name: Option<String>,
}

/// One actor of the `act` chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorView {
    /// The actor client.
    pub client_id: Option<String>,
    /// The issuer of the token it exchanged.
    pub iss: Option<String>,
    /// Its `orgnr_parent`.
    pub orgnr_parent: Option<String>,
    /// Its `orgnr_child`.
    pub orgnr_child: Option<String>,
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

impl From<&VerifiedToken> for Caller {
    fn from(t: &VerifiedToken) -> Caller {
        let has_person =
            t.pid().is_some() || t.pid_pseudonym().is_some() || t.hpr_number().is_some();
        Caller {
            client: Client {
                id: owned(t.client_id()),
                name: owned(t.client_name()),
            },
            organization: Organization {
                parent: owned(t.orgnr_parent()),
                child: owned(t.orgnr_child()),
                supplier: owned(t.orgnr_supplier()),
                tenancy: owned(t.client_tenancy()),
            },
            person: has_person.then(|| Person {
                pid: owned(t.pid()),
                pid_pseudonym: owned(t.pid_pseudonym()),
                hpr_number: owned(t.hpr_number()),
                security_level: owned(t.security_level()),
                assurance_level: owned(t.assurance_level()),
                name: owned(t.claim_str("name")),
                given_name: owned(t.claim_str("given_name")),
                middle_name: owned(t.claim_str("middle_name")),
                family_name: owned(t.claim_str("family_name")),
            }),
            actors: t
                .actors()
                .iter()
                .map(|a| ActorView {
                    client_id: owned(a.client_id()),
                    iss: owned(a.iss()),
                    orgnr_parent: owned(a.orgnr_parent()),
                    orgnr_child: owned(a.orgnr_child()),
                })
                .collect(),
            original_client_id: owned(t.original_client_id()),
            scopes: t.scopes().to_vec(),
            audience: t.audience().to_vec(),
            dpop_bound: t.is_dpop_bound(),
            jkt: owned(t.jkt()),
        }
    }
}
