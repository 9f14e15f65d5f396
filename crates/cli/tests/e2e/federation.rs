//! Login through an upstream OpenID provider. The upstream is a second `segl serve` (an OpenID
//! provider with its own test IdP) behind a small loopback proxy that the tests can make
//! tamper with or delay its answers; the first `segl serve` federates to it through `[[idp]]`.
//! The upstream's issuer is `http://localhost:<proxy>` and the downstream's
//! `http://127.0.0.1:<port>`: two hosts, so their cookies stay apart as in a real browser.

use crate::both;
use crate::harness::*;
use crate::login::{Browser, Flow, REDIRECT, hidden, location, query_of};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const IDP: &str = "upstream-oidc";
const PID: &str = "06828399789";
/// Registered at the upstream with `security_level = "3"`.
const LEVEL3_PID: &str = "13116900216";
pub const UPSTREAM_SCOPES: &str = r#"["openid", "profile", "helseid://scopes/identity/pid", "helseid://scopes/identity/security_level"]"#;

/// What the proxy does to the upstream's token responses.
#[derive(Clone, Default)]
pub enum Mode {
    #[default]
    Pass,
    /// Changes one character of the ID token's signature.
    TamperSignature,
    /// Puts this ID token in place of the real one.
    ReplaceIdToken(String),
    /// Answers the token request this much later.
    DelayToken(Duration),
}

#[derive(Clone, Default)]
struct ProxyState {
    target: String,
    mode: Arc<Mutex<Mode>>,
    /// Every ID token the upstream issued through the proxy, unmodified.
    id_tokens: Arc<Mutex<Vec<String>>>,
    /// Every pushed authorization request sent to the upstream (form bodies).
    pushed: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

pub struct Proxy {
    pub port: u16,
    state: ProxyState,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = ProxyState {
            target,
            ..Default::default()
        };
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy { port, state, task }
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn id_tokens(&self) -> Vec<String> {
        self.state.id_tokens.lock().unwrap().clone()
    }

    pub fn pushed(&self) -> Vec<HashMap<String, String>> {
        self.state.pushed.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    axum::extract::State(st): axum::extract::State<ProxyState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let is_token = parts.uri.path() == "/connect/token";
    if parts.uri.path() == "/connect/par" {
        st.pushed
            .lock()
            .unwrap()
            .push(url::form_urlencoded::parse(&body).into_owned().collect());
    }
    let mode = st.mode.lock().unwrap().clone();
    if let (true, Mode::DelayToken(d)) = (is_token, &mode) {
        tokio::time::sleep(*d).await;
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut out = http.request(parts.method.clone(), format!("{}{path}", st.target));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let Ok(r) = out.body(body).send().await else {
        return axum::response::IntoResponse::into_response(axum::http::StatusCode::BAD_GATEWAY);
    };
    let status = r.status();
    let headers = r.headers().clone();
    let mut bytes = r.bytes().await.unwrap().to_vec();
    if is_token && status == 200 {
        let mut json: Value = serde_json::from_slice(&bytes).unwrap();
        if let Some(id) = json["id_token"].as_str().map(str::to_owned) {
            st.id_tokens.lock().unwrap().push(id.clone());
            match mode {
                Mode::TamperSignature => {
                    let (head, sig) = id.rsplit_once('.').unwrap();
                    let mut sig = sig.as_bytes().to_vec();
                    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
                    json["id_token"] =
                        Value::from(format!("{head}.{}", String::from_utf8(sig).unwrap()));
                }
                Mode::ReplaceIdToken(other) => json["id_token"] = Value::from(other),
                _ => {}
            }
            bytes = serde_json::to_vec(&json).unwrap();
        }
    }
    let mut response = axum::http::Response::builder().status(status.as_u16());
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            response = response.header(k, v);
        }
    }
    response.body(axum::body::Body::from(bytes)).unwrap()
}

/// One cookie jar per host, as a browser keeps them (cookies do not separate ports).
#[derive(Default)]
pub struct Hosts(HashMap<String, Browser>);

impl Hosts {
    fn jar(&mut self, url: &str) -> &mut Browser {
        let host = url::Url::parse(url).unwrap().host_str().unwrap().to_owned();
        self.0.entry(host).or_insert_with(Browser::new)
    }

    pub async fn get(&mut self, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
        self.jar(url).get(url).await
    }

    pub async fn post_form(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.jar(url).post_form(url, form).await
    }
}

/// Where a login ended.
#[derive(Debug)]
pub enum Outcome {
    /// Redirected to the client: the query.
    Client(HashMap<String, String>),
    /// A page: status and HTML.
    Page(u16, String),
}

impl Outcome {
    pub fn client(self) -> HashMap<String, String> {
        match self {
            Outcome::Client(q) => q,
            Outcome::Page(status, html) => {
                panic!("expected a redirect to the client, got {status}: {html}")
            }
        }
    }
}

/// The downstream and the upstream server with the proxy in front of the upstream.
pub struct Federation {
    pub down: Fixture,
    pub up: Fixture,
    pub proxy: Proxy,
    pub up_server: Server,
}

impl Federation {
    /// `idp_extra` goes into the downstream's `[[idp]]` for the upstream; `down_extra` is
    /// appended to the downstream's configuration.
    pub async fn new(backend: Backend, idp_extra: &str, down_extra: &str) -> Federation {
        let mut down = Fixture::new(backend, "").await;
        let mut up = Fixture::new(Backend::Sqlite, "").await;
        let proxy = Proxy::start(format!("http://127.0.0.1:{}", up.port)).await;
        up.issuer = format!("http://localhost:{}", proxy.port);
        // Segl's key at the upstream: private at the downstream, public at the upstream.
        let key = segl_jose::SigningKey::generate(segl_jose::Alg::ES256).unwrap();
        std::fs::write(
            down.dir.path().join("upstream-client.private.jwk.json"),
            serde_json::to_string(&key.to_private_jwk().unwrap()).unwrap(),
        )
        .unwrap();
        std::fs::write(
            up.dir.path().join("segl-down.jwks.json"),
            serde_json::json!({"keys": [key.public_jwk()]}).to_string(),
        )
        .unwrap();
        up.extra = format!(
            r#"
[[person]]
pid = "{LEVEL3_PID}"
given_name = "Nora"
family_name = "Substansiell"
security_level = "3"

[[client]]
client_id = "segl-down"
name = "Segl (downstream)"
organization = "999977774"
child_organizations = ["999977776"]
grant_types = ["authorization_code"]
scopes = {UPSTREAM_SCOPES}
redirect_uris = ["{}/federation/{IDP}/callback"]
jwks_file = "segl-down.jwks.json"
require_dpop = false
"#,
            down.issuer
        );
        down.extra = format!(
            r#"
[[idp]]
name = "{IDP}"
display_name = "Upstream Segl"
issuer = "{}"
client_id = "segl-down"
key_file = "upstream-client.private.jwk.json"
scopes = {UPSTREAM_SCOPES}
acr_values = ["Level4"]
{idp_extra}
[idp.claims]
pid = "helseid://claims/identity/pid"
{down_extra}
"#,
            up.issuer
        );
        let up_server = up.start().await;
        Federation {
            down,
            up,
            proxy,
            up_server,
        }
    }

    /// Starts the downstream with federation logging on (read back with `Server::logs`).
    pub async fn start_down(&self) -> Server {
        self.down
            .start_on(
                self.down.port,
                &[(
                    "SEGL_LOG",
                    "warn,segl_server::federation=info,segl::audit=info",
                )],
            )
            .await
    }
}

/// A login from PAR to wherever the browser ends: the choice page picks `IDP`, test IdP forms
/// (on either server) are filled with `pid`.
pub async fn federated_login(
    flow: &mut Flow<'_>,
    hosts: &mut Hosts,
    pid: &str,
    par: &[(&str, &str)],
) -> Outcome {
    let r = flow.par(par).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut url = flow.authorize_url(r.body["request_uri"].as_str().unwrap());
    for _ in 0..10 {
        let (status, headers, html) = hosts.get(&url).await;
        eprintln!("{status} {url}");
        let here = url::Url::parse(&url).unwrap();
        match status {
            303 => {
                let next = location(&headers);
                if next.starts_with(REDIRECT) {
                    return Outcome::Client(query_of(&next));
                }
                url = here.join(&next).unwrap().to_string();
            }
            200 if here.path() == "/login/idp" => {
                let marker = format!("idp={IDP}");
                let href = html
                    .split("href=\"")
                    .skip(1)
                    .map(|h| unescape(h.split('"').next().unwrap()))
                    .find(|h| h.contains(&marker))
                    .unwrap_or_else(|| panic!("no {IDP} on the choice page: {html}"));
                url = here.join(&href).unwrap().to_string();
            }
            200 if here.path() == "/testidp/login" => {
                let (tx, csrf) = (hidden(&html, "tx"), hidden(&html, "csrf"));
                let action = here.join("/testidp/login").unwrap().to_string();
                let (status, headers, body) = hosts
                    .post_form(&action, &[("tx", &tx), ("csrf", &csrf), ("pid", pid)])
                    .await;
                assert_eq!(status, 303, "{body}");
                let next = location(&headers);
                if next.starts_with(REDIRECT) {
                    return Outcome::Client(query_of(&next));
                }
                url = here.join(&next).unwrap().to_string();
            }
            _ => return Outcome::Page(status, html),
        }
    }
    panic!("the login did not end within 10 steps");
}

/// HTML character references in an attribute value (minijinja escapes `/` too).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let (entity, after) = rest[i + 1..].split_once(';').unwrap();
        out.push(match entity {
            "amp" => '&',
            "quot" => '"',
            "lt" => '<',
            "gt" => '>',
            e if e.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap()
            }
            e => char::from_u32(e[1..].parse().unwrap()).unwrap(),
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

fn claims_of(jwt: &str) -> serde_json::Map<String, Value> {
    segl_jose::UnverifiedJws::parse(jwt)
        .unwrap()
        .unverified_claims()
        .clone()
}

both!(
    federated_login_maps_claims_and_levels,
    |backend| async move {
        let fed = Federation::new(backend, "timeout = 5", "").await;
        let down = fed.start_down().await;
        // The list of IdPs, and discovery pointing at it.
        let r = down.get("/connect/availableidps").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body,
            serde_json::json!([
                {"name": "testidp-oidc", "display_name": "Test IdP"},
                {"name": IDP, "display_name": "Upstream Segl"},
            ])
        );
        let d = down.get("/.well-known/openid-configuration").await;
        assert_eq!(
            d.body["available_idps"],
            format!("{}/connect/availableidps", fed.down.issuer)
        );

        // Through the choice page, both login pages, back with a code.
        let mut flow = Flow::new(&fed.down, &down);
        let mut hosts = Hosts::default();
        let q = federated_login(&mut flow, &mut hosts, PID, &[])
            .await
            .client();
        assert_eq!(
            (q["state"].as_str(), q["iss"].as_str()),
            ("st-123", fed.down.issuer.as_str())
        );
        let r = flow.exchange(&q["code"]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let at = claims_of(r.body["access_token"].as_str().unwrap());
        let id = claims_of(r.body["id_token"].as_str().unwrap());
        assert_eq!(at["idp"], IDP);
        assert_eq!(at["helseid://claims/identity/pid"], PID);
        assert_eq!(at["helseid://claims/identity/security_level"], "4");
        assert_eq!(at["helseid://claims/identity/assurance_level"], "high");
        // The HPR number comes from the downstream's own person register.
        assert_eq!(at["helseid://claims/hpr/hpr_number"], "431001110");
        assert_eq!(at["amr"], serde_json::json!(["pwd"]));
        assert_eq!(id["idp"], IDP);
        assert_eq!(id["acr"], "Level4");
        assert_eq!(id["name"], "Kvart Grevling");
        assert_eq!(id["iss"], fed.down.issuer);
        // The request to the upstream was pushed, with PKCE S256, state, nonce, the level and
        // private_key_jwt.
        let pushed = &fed.proxy.pushed()[0];
        assert_eq!(pushed["client_id"], "segl-down");
        assert_eq!(pushed["code_challenge_method"], "S256");
        assert_eq!(pushed["acr_values"], "Level4");
        assert_eq!(pushed["response_type"], "code");
        assert!(pushed["scope"].starts_with("openid "), "{pushed:?}");
        assert!(pushed["state"].len() >= 16 && pushed["nonce"].len() >= 16);
        assert_eq!(
            pushed["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert!(!pushed.contains_key("on_behalf_of"));
        // The upstream's ID token was the upstream's, for Segl.
        let upstream_id = claims_of(&fed.proxy.id_tokens()[0]);
        assert_eq!(upstream_id["aud"], "segl-down");
        assert_eq!(upstream_id["iss"], fed.up.issuer);

        // Single sign-on at the downstream: no page at all the second time.
        let q = federated_login(&mut flow, &mut hosts, PID, &[])
            .await
            .client();
        assert!(q.contains_key("code"), "{q:?}");
        assert_eq!(fed.proxy.id_tokens().len(), 1);

        // Level 3 at the upstream, level 4 asked for: refused with a page, then access_denied.
        let mut hosts = Hosts::default();
        let acr = [("acr_values", "idp:upstream-oidc Level4")];
        match federated_login(&mut flow, &mut hosts, LEVEL3_PID, &acr).await {
            Outcome::Page(403, html) => {
                assert!(
                    html.contains("security level 3") && html.contains("requires level 4"),
                    "{html}"
                );
                let href = html.split("id=\"continue\"").next().unwrap();
                let href = href
                    .rsplit("href=\"")
                    .next()
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                let q = query_of(&unescape(href));
                assert_eq!(q["error"], "access_denied");
                assert_eq!(q["state"], "st-123");
                assert_eq!(q["iss"], fed.down.issuer);
            }
            other => panic!("expected the refusal page, got {other:?}"),
        }
        // Level 3 when the client does not ask for more: logged in at substantial.
        let mut hosts = Hosts::default();
        let q = federated_login(
            &mut flow,
            &mut hosts,
            LEVEL3_PID,
            &[("acr_values", "idp:upstream-oidc")],
        )
        .await
        .client();
        let r = flow.exchange(&q["code"]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let at = claims_of(r.body["access_token"].as_str().unwrap());
        assert_eq!(at["helseid://claims/identity/security_level"], "3");
        assert_eq!(
            at["helseid://claims/identity/assurance_level"],
            "substantial"
        );
        assert!(at.get("helseid://claims/hpr/hpr_number").is_none());
        let logs = down.logs();
        assert!(logs.contains("upstream_login_rejected"), "{logs}");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_key_rotation_is_followed() {
    let fed = Federation::new(Backend::Sqlite, "timeout = 5", "").await;
    let down = fed.start_down().await;
    let mut flow = Flow::new(&fed.down, &down);
    let q = federated_login(&mut flow, &mut Hosts::default(), PID, &[])
        .await
        .client();
    assert_eq!(flow.exchange(&q["code"]).await.status, 200);
    let first_kid = kid_of(&fed.proxy.id_tokens()[0]);

    // A new upstream key, signing at once; the upstream picks it up within a second.
    let out = fed.up.run(&["keys", "rotate", "--activate-in", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jwks = fed
            .up_server
            .get("/.well-known/openid-configuration/jwks")
            .await;
        if jwks.body["keys"].as_array().unwrap().len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated key was not published"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let q = federated_login(&mut flow, &mut Hosts::default(), PID, &[])
        .await
        .client();
    assert_eq!(flow.exchange(&q["code"]).await.status, 200);
    let tokens = fed.proxy.id_tokens();
    assert_ne!(
        kid_of(&tokens[1]),
        first_kid,
        "the upstream signed with its new key"
    );
    let logs = down.logs();
    assert_eq!(
        logs.matches("upstream metadata fetched").count(),
        2,
        "the JWKS was fetched again for the new key: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_upstream_id_tokens_are_refused_and_audited() {
    let fed = Federation::new(Backend::Sqlite, "timeout = 5", "").await;
    let down = fed.start_down().await;
    let mut flow = Flow::new(&fed.down, &down);
    // A good login first: its ID token (nonce of that login) is replayed below.
    let q = federated_login(&mut flow, &mut Hosts::default(), PID, &[])
        .await
        .client();
    assert!(q.contains_key("code"));
    let old = fed.proxy.id_tokens()[0].clone();

    // An ID token the upstream really signed, for another of its clients (aud = ehr).
    let mut up_flow = Flow::new(&fed.up, &fed.up_server);
    let back = up_flow.login(&mut Browser::new(), PID, &[]).await;
    let r = up_flow.exchange(&query_of(&back)["code"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let other_aud = r.body["id_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&other_aud)["aud"], "ehr");

    for (mode, why) in [
        (Mode::TamperSignature, "Signature verification failed"),
        (Mode::ReplaceIdToken(other_aud), "Invalid audiences"),
        (Mode::ReplaceIdToken(old), "Invalid nonce"),
    ] {
        fed.proxy.set(mode);
        let q = federated_login(&mut flow, &mut Hosts::default(), PID, &[])
            .await
            .client();
        assert_eq!(q["error"], "access_denied", "{why}: {q:?}");
        assert_eq!(q["state"], "st-123");
        assert!(!q.contains_key("code"));
    }
    let logs = down.logs();
    let rejected: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("upstream_login_rejected"))
        .collect();
    assert_eq!(rejected.len(), 3, "{logs}");
    for (line, why) in rejected.iter().zip([
        "Signature verification failed",
        "Invalid audiences",
        "Invalid nonce",
    ]) {
        assert!(line.contains(why), "{why} in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_or_slow_sends_the_client_temporarily_unavailable() {
    // One upstream with nothing listening, one that accepts and never answers.
    let dead = free_port();
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    let key_line = r#"key_file = "upstream-client.private.jwk.json""#;
    let extra = format!(
        r#"
[[idp]]
name = "dead-oidc"
issuer = "http://127.0.0.1:{dead}"
client_id = "segl"
{key_line}
timeout = 1

[[idp]]
name = "hanging-oidc"
issuer = "http://127.0.0.1:{hanging_port}"
client_id = "segl"
{key_line}
timeout = 1
"#
    );
    let fed = Federation::new(Backend::Sqlite, "timeout = 1", &extra).await;
    let down = fed.start_down().await;
    let mut flow = Flow::new(&fed.down, &down);
    for idp in ["dead-oidc", "hanging-oidc"] {
        let started = Instant::now();
        let acr = format!("idp:{idp}");
        let q = federated_login(
            &mut flow,
            &mut Hosts::default(),
            PID,
            &[("acr_values", &acr)],
        )
        .await
        .client();
        assert_eq!(q["error"], "temporarily_unavailable", "{idp}: {q:?}");
        assert_eq!(
            (q["state"].as_str(), q["iss"].as_str()),
            ("st-123", fed.down.issuer.as_str())
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{idp}: {:?}",
            started.elapsed()
        );
    }
    drop(hanging);
    // The real upstream, slower than the timeout at its token endpoint.
    fed.proxy.set(Mode::DelayToken(Duration::from_secs(3)));
    let started = Instant::now();
    let acr = format!("idp:{IDP}");
    let q = federated_login(
        &mut flow,
        &mut Hosts::default(),
        PID,
        &[("acr_values", &acr)],
    )
    .await
    .client();
    assert_eq!(q["error"], "temporarily_unavailable", "{q:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // And once it answers in time again, logins work.
    fed.proxy.set(Mode::Pass);
    let q = federated_login(
        &mut flow,
        &mut Hosts::default(),
        PID,
        &[("acr_values", &acr)],
    )
    .await
    .client();
    assert!(q.contains_key("code"), "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_behalf_of_is_checked_passed_upstream_and_reflected() {
    let fed = Federation::new(Backend::Sqlite, "timeout = 5\non_behalf_of = true", "").await;
    let down = fed.start_down().await;
    let mut flow = Flow::new(&fed.down, &down);
    // Only the client's own organizations.
    let r = flow
        .par(&[
            ("acr_values", "idp:upstream-oidc"),
            ("on_behalf_of", "123456789"),
        ])
        .await;
    r.expect_error(400, "invalid_request");
    let extra = [
        ("acr_values", "idp:upstream-oidc"),
        ("on_behalf_of", "999977776"),
    ];
    let q = federated_login(&mut flow, &mut Hosts::default(), PID, &extra)
        .await
        .client();
    assert_eq!(fed.proxy.pushed()[0]["on_behalf_of"], "999977776");
    let r = flow.exchange(&q["code"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for jwt in ["access_token", "id_token"] {
        let claims = claims_of(r.body[jwt].as_str().unwrap());
        assert_eq!(
            claims["helseid://claims/client/on_behalf_of"], "999977776",
            "{jwt}"
        );
    }
}
