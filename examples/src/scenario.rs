//! The **EHR → SFM → Reseptformidleren** scenario, runnable on one machine with one command:
//!
//! ```sh
//! cargo run -p segl-examples --bin scenario
//! ```
//!
//! [`Scenario::start`] makes a temporary directory with client keys for the EHR
//! (`ehr-granfjelldal`) and SFM (`sfm`), a key-encryption key and a `segl.toml` (the APIs
//! `nhn:sfm` and `nhn:reseptformidleren`, both clients, the test IdP and a registered person),
//! then starts, each on a free loopback port in this process:
//!
//! - **Segl** from the `segl-server` library (`config::load` → `App::build` → its router): the
//!   same code `segl serve --config segl.toml` runs, so no binary has to be found or built;
//! - **Reseptformidleren** ([`crate::reseptformidleren`]), DPoP only, with its own nonces;
//! - **SFM** ([`crate::sfm`]), DPoP only, with its own nonces.
//!
//! It then plays the EHR:
//!
//! - [`Scenario::client_credentials`]: a DPoP-bound `client_credentials` token for `nhn:sfm`,
//!   and the call to SFM (no person);
//! - [`Scenario::person`]: a person login over plain HTTP (PAR with PKCE and a DPoP key, the
//!   authorization endpoint, the test IdP's form, the code exchange), and the call to SFM.
//!
//! SFM exchanges the EHR's token and calls Reseptformidleren; its answer ([`crate::sfm::Receipt`])
//! says what Reseptformidleren saw. [`Outcome::describe`] puts the delegation chain in words.
//! Dropping the [`Scenario`] stops the servers; the directory is removed unless kept.

use crate::reseptformidleren::{self, Caller};
use crate::sfm::{self, Receipt};
use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use segl_client::{DpopKey, Issuer, Pkce};
use segl_jose::{Alg, SigningKey};
use segl_verify::{DpopNonce, TokenBinding, Verifier};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The EHR's client id.
pub const EHR_CLIENT_ID: &str = "ehr-granfjelldal";
/// The EHR's registered name.
pub const EHR_NAME: &str = "Acme EPJ at Granfjelldal";
/// The EHR's organization (`orgnr_parent`).
pub const EHR_ORGANIZATION: &str = "999977774";
/// SFM's client id (the token-exchange actor).
pub const SFM_CLIENT_ID: &str = "sfm";
/// SFM's registered name.
pub const SFM_NAME: &str = "Sentral forskrivningsmodul";
/// SFM's organization (Norsk helsenett's number in the demo).
pub const SFM_ORGANIZATION: &str = "994598759";
/// The registered test person's national identity number.
pub const PERSON_PID: &str = "06828399789";
/// The test person's given name.
pub const PERSON_GIVEN_NAME: &str = "Kvart";
/// The test person's family name.
pub const PERSON_FAMILY_NAME: &str = "Grevling";
/// The test person's HPR number.
pub const PERSON_HPR: &str = "431001110";
/// The EHR's registered redirect URI. Nothing listens there: the EHR reads the code from the
/// redirect's `Location` instead of following it.
pub const REDIRECT_URI: &str = "http://127.0.0.1:9000/callback";
/// What the EHR asks for at login: SFM's scope and the person's identity claims.
pub const LOGIN_SCOPES: &str = "openid profile nhn:sfm/api helseid://scopes/identity/pid helseid://scopes/identity/pid_pseudonym helseid://scopes/identity/security_level helseid://scopes/identity/assurance_level helseid://scopes/hpr/hpr_number";

/// The `segl.toml` the scenario writes: the contract's SFM example, with the issuer's port.
fn config_text(issuer: &str, listen: &str) -> String {
    format!(
        r#"# Written by the Segl scenario (examples/src/scenario.rs).
issuer   = "{issuer}"
listen   = "{listen}"
database = "sqlite://segl.db"
key_encryption_key_file = "kek.b64"

[dpop]
nonce = "required"

[test_idp]
enabled = true

[[person]]
pid         = "{PERSON_PID}"
given_name  = "{PERSON_GIVEN_NAME}"
family_name = "{PERSON_FAMILY_NAME}"
hpr_number  = "{PERSON_HPR}"

[[api]]
audience = "{sfm_audience}"
scopes   = ["{sfm_scope}"]

[[api]]
audience = "{rf_audience}"
scopes   = ["{rf_scope}"]

[[client]]
client_id    = "{EHR_CLIENT_ID}"
name         = "{EHR_NAME}"
organization = "{EHR_ORGANIZATION}"
grant_types  = ["client_credentials", "authorization_code"]
scopes       = ["{sfm_scope}", "openid", "profile",
                "helseid://scopes/identity/pid", "helseid://scopes/identity/pid_pseudonym",
                "helseid://scopes/identity/security_level", "helseid://scopes/identity/assurance_level",
                "helseid://scopes/hpr/hpr_number"]
redirect_uris = ["{REDIRECT_URI}"]
jwks_file    = "ehr.public.jwks.json"
require_dpop = true
token_exchange_actors = ["{SFM_CLIENT_ID}"]   # only SFM may exchange the EHR's tokens

[[client]]
client_id    = "{SFM_CLIENT_ID}"
name         = "{SFM_NAME}"
organization = "{SFM_ORGANIZATION}"
grant_types  = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes       = ["{rf_scope}"]
jwks_file    = "sfm.public.jwks.json"
require_dpop = true
token_exchange = {{ subject_audiences = ["{sfm_audience}"] }}   # tokens issued to SFM
"#,
        sfm_audience = sfm::AUDIENCE,
        sfm_scope = sfm::SCOPE,
        rf_audience = reseptformidleren::AUDIENCE,
        rf_scope = reseptformidleren::SCOPE,
    )
}

/// Which way the EHR got its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `client_credentials`: the EHR as a system, no person.
    ClientCredentials,
    /// A person login through the test IdP.
    Person,
}

/// One run of the scenario: what the EHR had and what SFM answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How the EHR got its token.
    pub variant: Variant,
    /// The EHR's `token_type` (`DPoP`).
    pub ehr_token_type: String,
    /// The thumbprint of the EHR's DPoP key.
    pub ehr_dpop_jkt: String,
    /// The issuer.
    pub issuer: String,
    /// What SFM answered.
    pub receipt: Receipt,
}

/// The running scenario: the three servers and the EHR's registration. Dropping it stops them.
#[derive(Debug)]
pub struct Scenario {
    dir: Option<tempfile::TempDir>,
    kept: Option<PathBuf>,
    issuer_url: String,
    sfm_url: String,
    rf_url: String,
    issuer: Issuer,
    ehr_key: SigningKey,
    http: reqwest::Client,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds a free loopback port.
async fn loopback() -> Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    Ok((listener, addr.to_string()))
}

/// Writes a client's key pair: `NAME.private.jwk.json` (0600) and `NAME.public.jwks.json`.
fn write_client_key(dir: &Path, name: &str, key: &SigningKey) -> Result<()> {
    let private = serde_json::to_vec_pretty(&key.to_private_jwk()?)?;
    segl_server::keys::write_private_file(&dir.join(format!("{name}.private.jwk.json")), &private)?;
    let public = json!({ "keys": [key.public_jwk()] });
    std::fs::write(
        dir.join(format!("{name}.public.jwks.json")),
        serde_json::to_vec_pretty(&public)?,
    )?;
    Ok(())
}

/// Serves `router` on `listener` until the task is aborted.
fn spawn_server(name: &'static str, listener: TcpListener, router: axum::Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(server = name, error = %e, "server stopped");
        }
    })
}

impl Scenario {
    /// Writes the keys and the configuration and starts Segl, Reseptformidleren and SFM. With
    /// `keep`, the directory is left behind (its path is [`Scenario::dir`]).
    pub async fn start(keep: bool) -> Result<Scenario> {
        let dir = tempfile::Builder::new()
            .prefix("segl-scenario-")
            .tempdir()
            .context("creating a temporary directory")?;
        let path = dir.path().to_owned();

        let ehr_key = SigningKey::generate(Alg::ES256)?;
        let sfm_key = SigningKey::generate(Alg::ES256)?;
        write_client_key(&path, "ehr", &ehr_key)?;
        write_client_key(&path, "sfm", &sfm_key)?;
        let mut kek = [0u8; 32];
        segl_jose::random_bytes(&mut kek)?;
        let kek = base64::engine::general_purpose::STANDARD.encode(kek);
        segl_server::keys::write_private_file(
            &path.join("kek.b64"),
            format!("{kek}\n").as_bytes(),
        )?;

        // Segl, in process: the same configuration loading and app as `segl serve`.
        let (segl_listener, segl_addr) = loopback().await?;
        let issuer_url = format!("http://{segl_addr}");
        let config_path = path.join("segl.toml");
        std::fs::write(&config_path, config_text(&issuer_url, &segl_addr))?;
        let settings = segl_server::config::load(
            Some(&config_path),
            &[],
            &segl_server::config::Overrides::default(),
            vec![],
            vec![],
        )
        .map_err(|e| anyhow!("{e}"))?;
        let (app, _) = segl_server::App::build(settings, None)
            .await
            .context("starting Segl")?;
        let mut tasks = vec![
            app.spawn_maintenance(),
            spawn_server("segl", segl_listener, app.router()),
        ];

        // Reseptformidleren: DPoP only, with its own nonces.
        let (rf_listener, rf_addr) = loopback().await?;
        let rf_url = format!("http://{rf_addr}");
        let rf_config = reseptformidleren::config(&rf_url, TokenBinding::DpopOnly)
            .with_dpop_nonce(DpopNonce::Required)
            .with_http_client(sfm::http_client()?);
        let rf_verifier = Verifier::discover(&issuer_url, rf_config)
            .await
            .context("starting Reseptformidleren")?;
        tasks.push(spawn_server(
            "reseptformidleren",
            rf_listener,
            reseptformidleren::router(Arc::new(rf_verifier)),
        ));

        // SFM: DPoP only, with its own nonces; exchanges with its own client key.
        let (sfm_listener, sfm_addr) = loopback().await?;
        let sfm_url = format!("http://{sfm_addr}");
        let service = sfm::Sfm::discover(sfm::Settings {
            issuer: issuer_url.clone(),
            public_url: sfm_url.clone(),
            client_id: SFM_CLIENT_ID.into(),
            key: sfm_key,
            reseptformidleren_url: rf_url.clone(),
            binding: TokenBinding::DpopOnly,
            dpop_nonce: DpopNonce::Required,
        })
        .await
        .context("starting SFM")?;
        tasks.push(spawn_server(
            "sfm",
            sfm_listener,
            sfm::router(Arc::new(service)),
        ));

        let http = sfm::http_client()?;
        let issuer = Issuer::discover(http.clone(), &issuer_url).await?;
        let (dir, kept) = if keep {
            (None, Some(dir.keep()))
        } else {
            (Some(dir), None)
        };
        Ok(Scenario {
            dir,
            kept,
            issuer_url,
            sfm_url,
            rf_url,
            issuer,
            ehr_key,
            http,
            tasks,
        })
    }

    /// The directory with `segl.toml`, the keys and the database.
    pub fn dir(&self) -> &Path {
        match (&self.dir, &self.kept) {
            (Some(d), _) => d.path(),
            (None, Some(p)) => p,
            (None, None) => Path::new("."),
        }
    }

    /// The issuer (Segl's base URL).
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// SFM's prescriptions endpoint.
    pub fn sfm_endpoint(&self) -> String {
        format!("{}{}", self.sfm_url, sfm::PRESCRIPTIONS_PATH)
    }

    /// Reseptformidleren's base URL.
    pub fn reseptformidleren_url(&self) -> &str {
        &self.rf_url
    }

    /// Reseptformidleren's caller endpoint.
    pub fn reseptformidleren_endpoint(&self) -> String {
        format!("{}{}", self.rf_url, reseptformidleren::CALLER_PATH)
    }

    /// The EHR's client key.
    pub fn ehr_key(&self) -> &SigningKey {
        &self.ehr_key
    }

    /// The EHR's view of the issuer.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Variant (a): the EHR gets a DPoP-bound token for `nhn:sfm` with `client_credentials` and
    /// calls SFM.
    pub async fn client_credentials(&self) -> Result<Outcome> {
        let dpop = DpopKey::generate(Alg::ES256)?;
        let token = self
            .issuer
            .client_credentials(
                EHR_CLIENT_ID,
                &self.ehr_key,
                Some(sfm::SCOPE),
                None,
                Some(&dpop),
            )
            .await
            .context("the EHR's client_credentials request")?;
        self.call_sfm(Variant::ClientCredentials, &token, &dpop)
            .await
    }

    /// Variant (b): the person `pid` logs in at the EHR (PAR + PKCE + DPoP, the test IdP's
    /// form over HTTP, the code exchange), and the EHR calls SFM with the person's token.
    pub async fn person(&self, pid: &str) -> Result<Outcome> {
        let dpop = DpopKey::generate(Alg::ES256)?;
        let pkce = Pkce::new()?;
        let state = segl_client::new_jti()?;
        let nonce = segl_client::new_jti()?;
        let request_uri = self
            .issuer
            .pushed_authorization_request(
                EHR_CLIENT_ID,
                &self.ehr_key,
                &[
                    ("response_type", "code"),
                    ("redirect_uri", REDIRECT_URI),
                    ("scope", LOGIN_SCOPES),
                    ("state", &state),
                    ("nonce", &nonce),
                    ("code_challenge", &pkce.challenge),
                    ("code_challenge_method", "S256"),
                ],
                Some(&dpop),
            )
            .await
            .context("the EHR's pushed authorization request")?;

        let mut browser = Browser::new()?;
        let authorize = self.issuer.authorization_url(EHR_CLIENT_ID, &request_uri)?;
        let login_page = browser
            .redirect(&authorize, None)
            .await
            .context("the authorization endpoint")?;
        if login_page.starts_with(REDIRECT_URI) {
            bail!("the authorization endpoint skipped the login: {login_page}");
        }
        let (status, html) = browser.get_page(&login_page).await?;
        if status != reqwest::StatusCode::OK {
            bail!(
                "the test IdP's login page answered {status}: {}",
                page_message(&html)
            );
        }
        let tx = hidden_field(&html, "tx")?;
        let csrf = hidden_field(&html, "csrf")?;
        let login_action = url::Url::parse(&login_page)?.join(segl_proto::paths::TEST_IDP_LOGIN)?;
        let back = browser
            .redirect(
                login_action.as_str(),
                Some(&[("tx", &tx), ("csrf", &csrf), ("pid", pid)]),
            )
            .await
            .context("submitting the test IdP's form")?;
        if !back.starts_with(REDIRECT_URI) {
            bail!("the login did not return to the EHR: {back}");
        }
        let query: BTreeMap<String, String> =
            url::Url::parse(&back)?.query_pairs().into_owned().collect();
        if let Some(error) = query.get("error") {
            bail!(
                "the login failed: {error} ({})",
                query.get("error_description").map_or("", String::as_str)
            );
        }
        if query.get("state") != Some(&state) {
            bail!("the redirect's state is not the EHR's");
        }
        if query.get("iss") != Some(&self.issuer_url) {
            bail!("the redirect's iss is not the issuer (RFC 9207)");
        }
        let code = query
            .get("code")
            .ok_or_else(|| anyhow!("the redirect has no code: {back}"))?;
        let token = self
            .issuer
            .token_request(
                EHR_CLIENT_ID,
                &self.ehr_key,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", REDIRECT_URI),
                    ("code_verifier", &pkce.verifier),
                ],
                Some(&dpop),
            )
            .await
            .context("the EHR's code exchange")?;
        self.call_sfm(Variant::Person, &token, &dpop).await
    }

    /// The EHR's call: `POST {sfm}/api/prescriptions` with a small prescription, the token and
    /// a DPoP proof (retried once for SFM's nonce).
    async fn call_sfm(
        &self,
        variant: Variant,
        token: &segl_proto::token::TokenResponse,
        dpop: &DpopKey,
    ) -> Result<Outcome> {
        if !token.token_type.eq_ignore_ascii_case("DPoP") {
            bail!("the EHR's token is {}, not DPoP-bound", token.token_type);
        }
        let body = json!({
            "prescription": {
                "medication": "Paracetamol 500 mg tablets",
                "dosage": "1 tablet up to 4 times a day",
                "patient": "a demo patient",
            }
        });
        let response = post_json(
            &self.http,
            &self.sfm_endpoint(),
            &token.access_token,
            dpop,
            &body,
        )
        .await
        .context("calling SFM")?;
        let status = response.status();
        let text = response.text().await.context("reading SFM's answer")?;
        if !status.is_success() {
            bail!("SFM answered {status}: {text}");
        }
        let receipt: Receipt =
            serde_json::from_str(&text).with_context(|| format!("SFM's answer: {text}"))?;
        Ok(Outcome {
            variant,
            ehr_token_type: token.token_type.clone(),
            ehr_dpop_jkt: dpop.jkt()?,
            issuer: self.issuer_url.clone(),
            receipt,
        })
    }
}

/// `POST url` with a JSON body, `Authorization: DPoP` and a proof with `ath`; retried once when
/// the API asks for its DPoP nonce.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    access_token: &str,
    dpop: &DpopKey,
    body: &Value,
) -> Result<reqwest::Response> {
    for attempt in 0..2 {
        let response = http
            .post(url)
            .header("authorization", format!("DPoP {access_token}"))
            .header("dpop", dpop.proof("POST", url, Some(access_token))?)
            .json(body)
            .send()
            .await?;
        dpop.remember_nonce(url, response.headers());
        let wants_nonce = response.status() == reqwest::StatusCode::UNAUTHORIZED
            && response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("use_dpop_nonce"));
        if !(wants_nonce && attempt == 0) {
            return Ok(response);
        }
    }
    bail!("{url} kept asking for a DPoP nonce")
}

/// A browser without JavaScript: no automatic redirects, cookies by name.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Result<Browser> {
        Ok(Browser {
            http: sfm::http_client()?,
            cookies: BTreeMap::new(),
        })
    }

    fn absorb(&mut self, headers: &reqwest::header::HeaderMap) {
        for value in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
            let Some((name, v)) = pair.split_once('=') else {
                continue;
            };
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), v.trim().to_owned());
            }
        }
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.cookies.is_empty() {
            return builder;
        }
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        builder.header(reqwest::header::COOKIE, cookie)
    }

    /// GETs `url` (or POSTs `form` to it) and returns the absolute target of its `303`.
    async fn redirect(&mut self, url: &str, form: Option<&[(&str, &str)]>) -> Result<String> {
        let builder = match form {
            Some(f) => self.http.post(url).form(f),
            None => self.http.get(url),
        };
        let response = self.request(builder).send().await?;
        self.absorb(response.headers());
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match location {
            Some(l) if status.is_redirection() => Ok(url::Url::parse(url)?.join(&l)?.into()),
            _ => {
                let text = response.text().await.unwrap_or_default();
                bail!(
                    "{url} answered {status} instead of a redirect: {}",
                    page_message(&text)
                )
            }
        }
    }

    async fn get_page(&mut self, url: &str) -> Result<(reqwest::StatusCode, String)> {
        let response = self.request(self.http.get(url)).send().await?;
        self.absorb(response.headers());
        let status = response.status();
        Ok((status, response.text().await?))
    }
}

/// What an HTML page says went wrong (its `role="alert"` paragraph), or the start of the text.
fn page_message(text: &str) -> String {
    let alert = text
        .find("role=\"alert\"")
        .and_then(|i| text.get(i..))
        .and_then(|rest| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(message, _)| message.trim().to_owned());
    alert.unwrap_or_else(|| text.chars().take(300).collect())
}

/// The value of the hidden form field `name` (HTML entities decoded).
fn hidden_field(html: &str, name: &str) -> Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .map(|i| i + marker.len())
        .ok_or_else(|| anyhow!("the login page has no field {name}"))?;
    let value = html
        .get(start..)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| anyhow!("the login page's field {name} is not closed"))?;
    Ok(value
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&"))
}

fn or_unknown(value: Option<&str>) -> &str {
    value.unwrap_or("(not in the token)")
}

/// `organization 999977774` (with the sub-unit when there is one).
fn organization_words(parent: Option<&str>, child: Option<&str>) -> String {
    match (parent, child) {
        (Some(p), Some(c)) => format!("organization {p}, sub-unit {c}"),
        (Some(p), None) => format!("organization {p}"),
        (None, Some(c)) => format!("sub-unit {c}"),
        (None, None) => "no organization".into(),
    }
}

impl Outcome {
    /// The person's name and whether it came from SFM's view: token exchange copies the
    /// `helseid://` identity claims, not `name`, so Reseptformidleren usually has none.
    fn person_name(&self) -> Option<(String, bool)> {
        let from = |c: &Caller| c.person.as_ref().and_then(|p| p.name.clone());
        from(&self.receipt.reseptformidleren)
            .map(|n| (n, false))
            .or_else(|| from(&self.receipt.sfm_caller).map(|n| (n, true)))
    }

    /// The person, in words: name, pid, HPR number, security level; or "no person".
    pub fn person_words(&self) -> String {
        match &self.receipt.reseptformidleren.person {
            None => "no person (a system-to-system call)".into(),
            Some(p) => {
                let mut s = self
                    .person_name()
                    .map_or_else(|| "a person".into(), |(n, _)| n);
                let _ = write!(s, ", pid {}", or_unknown(p.pid.as_deref()));
                let _ = write!(s, ", HPR {}", or_unknown(p.hpr_number.as_deref()));
                let _ = write!(
                    s,
                    ", security level {}",
                    or_unknown(p.security_level.as_deref())
                );
                if let Some(a) = &p.assurance_level {
                    let _ = write!(s, " (assurance {a})");
                }
                s
            }
        }
    }

    /// The original client and its organization, in words.
    pub fn original_client_words(&self) -> String {
        let rf = &self.receipt.reseptformidleren;
        let id = rf.original_client_id.as_deref().or(rf.client.id.as_deref());
        let mut s = or_unknown(id).to_owned();
        if let Some(name) = &rf.client.name {
            let _ = write!(s, " ({name})");
        }
        let _ = write!(
            s,
            ", {}",
            organization_words(
                rf.organization.parent.as_deref(),
                rf.organization.child.as_deref()
            )
        );
        s
    }

    /// The actors, outermost first, in words.
    pub fn actor_words(&self) -> String {
        let actors = &self.receipt.reseptformidleren.actors;
        if actors.is_empty() {
            return "none (the token was not exchanged)".into();
        }
        actors
            .iter()
            .map(|a| {
                format!(
                    "{}, {}",
                    or_unknown(a.client_id.as_deref()),
                    organization_words(a.orgnr_parent.as_deref(), a.orgnr_child.as_deref())
                )
            })
            .collect::<Vec<_>>()
            .join("; before it ")
    }

    /// The binding of the final token, in words.
    pub fn binding_words(&self) -> String {
        let rf = &self.receipt.reseptformidleren;
        let jkt = rf.jkt.as_deref();
        match (rf.dpop_bound, jkt) {
            (true, Some(j)) if j == self.receipt.exchanged.sfm_dpop_jkt => format!(
                "DPoP-bound to SFM's own key (jkt {j}), not to the EHR's (jkt {})",
                self.ehr_dpop_jkt
            ),
            (true, Some(j)) if j == self.ehr_dpop_jkt => {
                format!("DPoP-bound to the EHR's key (jkt {j}) — not SFM's!")
            }
            (true, j) => format!("DPoP-bound (jkt {})", or_unknown(j)),
            (false, _) => "a Bearer token (not bound)".into(),
        }
    }

    /// The delegation chain of the token Reseptformidleren received, in words.
    pub fn describe(&self) -> String {
        let rf = &self.receipt.reseptformidleren;
        let mut out = String::new();
        let _ = writeln!(out, "  Reseptformidleren saw this token:");
        let _ = writeln!(out, "    person           {}", self.person_words());
        if let Some((_, true)) = self.person_name() {
            let _ = writeln!(
                out,
                "                     (the name is from the EHR's token at SFM: token exchange copies the helseid:// claims, not name)"
            );
        }
        let _ = writeln!(out, "    original client  {}", self.original_client_words());
        let _ = writeln!(out, "    acting client    {}", self.actor_words());
        let _ = writeln!(
            out,
            "    target API       {}, scope {}",
            rf.audience.join(" "),
            rf.scopes.join(" ")
        );
        let _ = writeln!(out, "    binding          {}", self.binding_words());
        let _ = writeln!(out, "  In words: {}", self.sentence());
        out
    }

    /// The chain as one sentence: who, with which client of which organization, through which
    /// actor, calls which API.
    pub fn sentence(&self) -> String {
        let rf = &self.receipt.reseptformidleren;
        let who = rf.person.as_ref().map(|p| {
            format!(
                "{} (pid {}, HPR {}, security level {})",
                self.person_name()
                    .map_or_else(|| "A person".into(), |(n, _)| n),
                or_unknown(p.pid.as_deref()),
                or_unknown(p.hpr_number.as_deref()),
                or_unknown(p.security_level.as_deref())
            )
        });
        let client = format!(
            "{}{} of {}",
            or_unknown(rf.original_client_id.as_deref().or(rf.client.id.as_deref())),
            rf.client
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            organization_words(
                rf.organization.parent.as_deref(),
                rf.organization.child.as_deref()
            )
        );
        let via = if rf.actors.is_empty() {
            "directly".to_owned()
        } else {
            // Oldest first: the order the token travelled in.
            let actors = rf
                .actors
                .iter()
                .rev()
                .map(|a| {
                    format!(
                        "{} ({})",
                        or_unknown(a.client_id.as_deref()),
                        organization_words(a.orgnr_parent.as_deref(), a.orgnr_child.as_deref())
                    )
                })
                .collect::<Vec<_>>()
                .join(" and then ");
            format!("through {actors}")
        };
        let target = rf.audience.join(" ");
        match who {
            Some(who) => format!("{who}, using the EHR {client}, calls {target} {via}."),
            None => format!("The EHR {client}, with no person logged in, calls {target} {via}."),
        }
    }
}

/// Runs both variants and returns the report the `scenario` binary prints, with the outcomes.
pub async fn run(pid: &str, keep: bool) -> Result<(String, Vec<Outcome>)> {
    let scenario = Scenario::start(keep).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Segl token-exchange scenario: EHR → SFM → (token exchange) → Reseptformidleren\n"
    );
    let _ = writeln!(
        out,
        "  Segl (in process)  {}   configuration {}",
        scenario.issuer_url(),
        scenario.dir().join("segl.toml").display()
    );
    let _ = writeln!(
        out,
        "  SFM                {}   audience {}",
        scenario.sfm_endpoint(),
        sfm::AUDIENCE
    );
    let _ = writeln!(
        out,
        "  Reseptformidleren  {}   audience {}\n",
        scenario.reseptformidleren_endpoint(),
        reseptformidleren::AUDIENCE
    );

    let a = scenario
        .client_credentials()
        .await
        .context("(a) client_credentials")?;
    let _ = writeln!(
        out,
        "(a) client_credentials: the EHR calls SFM as a system, no person"
    );
    let _ = writeln!(
        out,
        "  EHR {EHR_CLIENT_ID}: client_credentials (private_key_jwt, DPoP) → a {} token for {} → POST {}",
        a.ehr_token_type,
        sfm::AUDIENCE,
        sfm::PRESCRIPTIONS_PATH
    );
    let _ = writeln!(
        out,
        "  SFM: verified it, exchanged it (RFC 8693) as {SFM_CLIENT_ID} → a {} token for {} → GET {}",
        a.receipt.exchanged.token_type,
        reseptformidleren::AUDIENCE,
        reseptformidleren::CALLER_PATH
    );
    out.push_str(&a.describe());
    out.push('\n');

    let b = scenario.person(pid).await.context("(b) person login")?;
    let _ = writeln!(
        out,
        "(b) person login: pid {pid} logs in at the EHR through the test IdP"
    );
    let _ = writeln!(
        out,
        "  EHR {EHR_CLIENT_ID}: PAR + PKCE + DPoP → test IdP form (pid {pid}) → code → a {} token for {} → POST {}",
        b.ehr_token_type,
        sfm::AUDIENCE,
        sfm::PRESCRIPTIONS_PATH
    );
    let _ = writeln!(
        out,
        "  SFM: verified it, exchanged it (RFC 8693) as {SFM_CLIENT_ID} → a {} token for {} → GET {}",
        b.receipt.exchanged.token_type,
        reseptformidleren::AUDIENCE,
        reseptformidleren::CALLER_PATH
    );
    out.push_str(&b.describe());
    if keep {
        let _ = writeln!(
            out,
            "\nKept {} (segl.toml, client keys, KEK, SQLite database).",
            scenario.dir().display()
        );
    }
    drop(scenario);
    Ok((out, vec![a, b]))
}
