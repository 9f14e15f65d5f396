//! Starts `segl serve` with a generated configuration on SQLite or PostgreSQL, and builds
//! client assertions for the registered test clients.

use segl_jose::{Alg, SigningKey, b64_encode, sign_jwt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_segl");
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Which store a fixture runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// PostgreSQL when `SEGL_TEST_POSTGRES_URL` is set; `None` (and a note) otherwise.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("SEGL_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                eprintln!("SEGL_TEST_POSTGRES_URL is not set: skipping the PostgreSQL variant");
                None
            }
        }
    }
}

/// Runs a scenario on SQLite and on PostgreSQL: `both!(name, |backend| async move { … })`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::harness::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(b) = $crate::harness::Backend::postgres() {
                    ($body)(b).await;
                }
            }
        }
    };
}

/// A registered test client and its private key.
pub struct TestClient {
    pub id: String,
    pub key: SigningKey,
}

/// A configuration directory with clients, APIs, a KEK and a database.
pub struct Fixture {
    pub dir: Arc<tempfile::TempDir>,
    pub port: u16,
    pub issuer: String,
    pub database: String,
    pub clients: HashMap<String, Arc<TestClient>>,
    pub extra: String,
    pg_cleanup: Option<(String, String)>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn fresh_pg_database(url: &str) -> (String, String) {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .expect("PostgreSQL reachable");
    let mut raw = [0u8; 6];
    segl_jose::random_bytes(&mut raw).unwrap();
    let name = format!(
        "segl_e2e_{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    (format!("{base}/{name}"), name)
}

impl Fixture {
    /// The standard fixture: APIs nhn:sfm, nhn:reseptformidleren and nhn:other; clients `epj`
    /// (ES256), `rsa-client` (RS256), `multi-api` (scopes of two APIs), `no-cc` (no
    /// client_credentials grant). `extra` is appended to the configuration file.
    pub async fn new(backend: Backend, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let (database, pg_cleanup) = match &backend {
            Backend::Sqlite => ("sqlite://segl.db".to_owned(), None),
            Backend::Postgres(url) => {
                let (db_url, name) = fresh_pg_database(url).await;
                (db_url, Some((url.clone(), name)))
            }
        };
        let mut clients = HashMap::new();
        for (id, alg) in [
            ("epj", Alg::ES256),
            ("rsa-client", Alg::RS256),
            ("multi-api", Alg::ES256),
            ("no-cc", Alg::ES256),
            ("dpop-client", Alg::PS256),
            ("ehr", Alg::ES256),
            ("sfm", Alg::ES256),
            ("intruder", Alg::ES256),
            ("rf-actor", Alg::RS256),
        ] {
            let key = SigningKey::generate(alg).unwrap();
            let jwks = json!({"keys": [key.public_jwk()]});
            std::fs::write(dir.path().join(format!("{id}.jwks.json")), jwks.to_string()).unwrap();
            clients.insert(
                id.to_owned(),
                Arc::new(TestClient {
                    id: id.to_owned(),
                    key,
                }),
            );
        }
        std::fs::write(
            dir.path().join("kek.b64"),
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        )
        .unwrap();
        Fixture {
            dir: Arc::new(dir),
            port,
            issuer,
            database,
            clients,
            extra: extra.to_owned(),
            pg_cleanup,
        }
    }

    pub fn config_text(&self) -> String {
        format!(
            r#"issuer = "{issuer}"
listen = "127.0.0.1:{port}"
database = "{database}"
key_encryption_key_file = "kek.b64"

[keys]
refresh_interval = 1

[[api]]
audience = "nhn:sfm"
scopes = ["nhn:sfm/api", "nhn:sfm/admin"]

[[api]]
audience = "nhn:reseptformidleren"
scopes = ["nhn:reseptformidleren/rf"]

[[api]]
audience = "nhn:other"
scopes = ["nhn:other/read"]

[[client]]
client_id = "epj"
name = "Acme EPJ at Granfjelldal"
organization = "999977774"
child_organizations = ["999977776"]
grant_types = ["client_credentials"]
scopes = ["nhn:sfm/api", "nhn:sfm/admin"]
jwks_file = "epj.jwks.json"
require_dpop = false

[[client]]
client_id = "rsa-client"
name = "RSA client"
organization = "994598759"
grant_types = ["client_credentials"]
scopes = ["nhn:reseptformidleren/rf"]
jwks_file = "rsa-client.jwks.json"
require_dpop = false

[[client]]
client_id = "multi-api"
name = "Two APIs"
organization = "313745392"
tenancy = "multi"
supplier = "313745392"
grant_types = ["client_credentials"]
scopes = ["nhn:sfm/api", "nhn:other/read"]
jwks_file = "multi-api.jwks.json"
require_dpop = false

[[client]]
client_id = "dpop-client"
name = "DPoP client"
organization = "999977774"
grant_types = ["client_credentials"]
scopes = ["nhn:reseptformidleren/rf"]
jwks_file = "dpop-client.jwks.json"

[[client]]
client_id = "ehr"
name = "Acme EPJ"
organization = "999977774"
child_organizations = ["999977776"]
grant_types = ["authorization_code", "client_credentials", "refresh_token"]
scopes = ["nhn:sfm/api", "nhn:reseptformidleren/rf", "openid", "profile", "offline_access",
          "helseid://scopes/identity/pid", "helseid://scopes/identity/pid_pseudonym",
          "helseid://scopes/identity/security_level", "helseid://scopes/identity/assurance_level",
          "helseid://scopes/identity/network", "helseid://scopes/hpr/hpr_number"]
redirect_uris = ["http://127.0.0.1:9000/callback", "https://ehr.example/cb"]
post_logout_redirect_uris = ["http://127.0.0.1:9000/"]
jwks_file = "ehr.jwks.json"
token_exchange_actors = ["sfm", "rf-actor"]

[[client]]
client_id = "sfm"
name = "Sentral forskrivningsmodul"
organization = "994598759"
grant_types = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["nhn:reseptformidleren/rf"]
jwks_file = "sfm.jwks.json"
introspection = true
introspection_audiences = ["nhn:sfm"]
token_exchange = {{ subject_audiences = ["nhn:sfm"] }}

[[client]]
client_id = "intruder"
name = "Not allowed by the EHR"
organization = "999977775"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["nhn:reseptformidleren/rf"]
jwks_file = "intruder.jwks.json"
token_exchange = {{ subject_audiences = ["nhn:sfm"] }}

[[client]]
client_id = "rf-actor"
name = "Reseptformidleren acting downstream"
organization = "983544622"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["nhn:other/read", "nhn:sfm/api"]
jwks_file = "rf-actor.jwks.json"
token_exchange = {{ subject_audiences = ["nhn:reseptformidleren", "nhn:sfm"] }}

[test_idp]
enabled = true

[[person]]
pid = "06828399789"
given_name = "Kvart"
family_name = "Grevling"
hpr_number = "431001110"

[[client]]
client_id = "no-cc"
name = "No client credentials"
organization = "999977774"
grant_types = ["authorization_code"]
scopes = ["nhn:sfm/api", "openid"]
jwks_file = "no-cc.jwks.json"
require_dpop = false
{extra}
"#,
            issuer = self.issuer,
            port = self.port,
            database = self.database,
            extra = self.extra,
        )
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("segl.toml");
        if !path.exists() {
            std::fs::write(&path, self.config_text()).unwrap();
        }
        path
    }

    pub fn client(&self, id: &str) -> Arc<TestClient> {
        self.clients[id].clone()
    }

    /// Starts a server on the fixture's port and waits until it is ready.
    pub async fn start(&self) -> Server {
        self.start_on(self.port, &[]).await
    }

    /// Starts another process on `port` (same configuration and database).
    pub async fn start_on(&self, port: u16, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(self.dir.path())
            .env_remove("SEGL_KEY_ENCRYPTION_KEY")
            .env("SEGL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take();
        let mut server = Server {
            child: Some(child),
            stderr,
            base: format!("http://127.0.0.1:{port}"),
            issuer: self.issuer.clone(),
        };
        server.wait_ready().await;
        server
    }

    /// Runs `segl ARGS --config <fixture>` to completion.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env_remove("SEGL_KEY_ENCRYPTION_KEY")
            .output()
            .unwrap()
    }

    /// A client assertion for `client` with `patch` applied to the standard claims (a `null`
    /// value removes a claim).
    pub fn assertion(&self, client: &TestClient, patch: Value) -> String {
        sign_jwt(
            &client.key,
            "client-authentication+jwt",
            &self.assertion_claims(client, patch),
        )
        .unwrap()
    }

    pub fn assertion_claims(&self, client: &TestClient, patch: Value) -> Value {
        let now = now();
        let mut claims = json!({
            "iss": client.id, "sub": client.id, "aud": self.issuer,
            "iat": now, "nbf": now, "exp": now + 30, "jti": new_jti(),
        });
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    /// A client_credentials form with a fresh assertion.
    pub fn cc_form(&self, client: &TestClient, scope: Option<&str>) -> Vec<(String, String)> {
        let mut form = vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), client.id.clone()),
            (
                "client_assertion_type".to_owned(),
                ASSERTION_TYPE.to_owned(),
            ),
            (
                "client_assertion".to_owned(),
                self.assertion(client, json!({})),
            ),
        ];
        if let Some(s) = scope {
            form.push(("scope".to_owned(), s.to_owned()));
        }
        form
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some((url, name)) = self.pg_cleanup.take() {
            // Best effort, on a thread of its own (Drop may run inside the runtime).
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection as _;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A running `segl serve` process; killed on drop.
pub struct Server {
    child: Option<Child>,
    stderr: Option<std::process::ChildStderr>,
    pub base: String,
    pub issuer: String,
}

impl Server {
    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{}/health/ready", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                self.kill();
                let mut err = String::new();
                if let Some(mut stderr) = self.stderr.take() {
                    use std::io::Read as _;
                    let _ = stderr.read_to_string(&mut err);
                }
                panic!("segl did not become ready at {}:\n{err}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server and returns what it wrote to stderr (its log).
    pub fn logs(mut self) -> String {
        self.kill();
        let mut out = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            use std::io::Read as _;
            let _ = stderr.read_to_string(&mut out);
        }
        out
    }

    /// SIGKILL through a shared reference (the process is reaped on drop).
    pub fn crash(&self) {
        if let Some(c) = &self.child {
            let _ = std::process::Command::new("kill")
                .args(["-9", &c.id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// POSTs a form to the token endpoint; returns status, headers and JSON body.
    pub async fn token(&self, form: &[(String, String)]) -> Response {
        self.token_with(form, &[]).await
    }

    /// POSTs a form to the token endpoint with extra headers (e.g. `DPoP`).
    pub async fn token_with(
        &self,
        form: &[(String, String)],
        headers: &[(&str, &str)],
    ) -> Response {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.post_with(
            "/connect/token",
            "application/x-www-form-urlencoded",
            body.into_bytes(),
            headers,
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.post_with(path, content_type, body, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Response::read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Response {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        Response::read(r).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    async fn read(r: reqwest::Response) -> Response {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Response {
            status,
            headers,
            body,
        }
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// Asserts an OAuth error answer and returns its description.
    #[track_caller]
    pub fn expect_error(&self, status: u16, error: &str) -> String {
        assert_eq!(
            (self.status, self.error()),
            (status, error),
            "body: {}",
            self.body
        );
        let d = self.body["error_description"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            d.chars()
                .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\'),
            "{d:?}"
        );
        d
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[allow(clippy::disallowed_methods)]
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn new_jti() -> String {
    let mut b = [0u8; 16];
    segl_jose::random_bytes(&mut b).unwrap();
    b64_encode(b)
}

/// A DPoP proof for `POST {issuer}/connect/token` by `key`, with `patch` applied to the
/// standard claims and `header_patch` to the standard header (`null` removes).
pub fn dpop_proof(
    key: &SigningKey,
    url: &str,
    nonce: Option<&str>,
    patch: Value,
    header_patch: Value,
) -> String {
    let mut header = json!({"typ": "dpop+jwt", "alg": key.alg().name(), "jwk": key.public_jwk().to_public_without_meta()});
    let mut claims = json!({"jti": new_jti(), "htm": "POST", "htu": url, "iat": now()});
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    for (target, patch) in [(&mut header, header_patch), (&mut claims, patch)] {
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                target.as_object_mut().unwrap().remove(k);
            } else {
                target[k] = v.clone();
            }
        }
    }
    custom_jws(&header, &claims, |i| key.sign(i).unwrap())
}

/// A compact JWS with an arbitrary header, signed by `sign` over the signing input.
pub fn custom_jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64_encode(header.to_string()),
        b64_encode(claims.to_string())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64_encode(sig))
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Whether the interop tests run (`SEGL_TEST_INTEROP=1`, as scripts/test.sh and CI set it).
pub fn interop_enabled(what: &str) -> bool {
    let on = std::env::var("SEGL_TEST_INTEROP").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "SEGL_TEST_INTEROP is not 1: skipping the {what} interop test (scripts/test.sh runs it)"
        );
    }
    on
}

/// Runs `tests/interop/<script>` with node and `env`; asserts success and that stdout contains
/// `expect`; returns stdout.
pub async fn run_interop(script: &str, env: &[(&str, String)], expect: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    let out = tokio::process::Command::new("node")
        .arg(root.join(script))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(&root)
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(expect), "{script}: {stdout}");
    stdout
}

/// A client's private JWK as JSON (for the node scripts).
pub fn private_jwk(client: &TestClient) -> String {
    serde_json::to_string(&client.key.to_private_jwk().unwrap()).unwrap()
}

/// The `kid` in a JWT's header.
pub fn kid_of(jwt: &str) -> String {
    segl_jose::UnverifiedJws::parse(jwt)
        .unwrap()
        .unverified_header_str("kid")
        .unwrap()
        .to_owned()
}

/// Another handle on the same private key (a second client process using one DPoP key).
pub fn copy_key(key: &SigningKey) -> SigningKey {
    SigningKey::from_private_jwk(&key.to_private_jwk().unwrap(), Some(key.alg())).unwrap()
}
