//! Person login in a real browser: headless Debian Chromium, driven by `playwright-core`, logs
//! in through the test IdP's HTML form while npm `oauth4webapi` (+ `jose`) plays the client —
//! PAR with private_key_jwt and DPoP, PKCE, the code exchange, ID token and access token checks,
//! userinfo, and single sign-on in the same browser. The script is `tests/browser/login.mjs`;
//! it leaves screenshots in `ci-artifacts/` at the repository root.
//!
//! The same script also logs in through an upstream OpenID provider (a second `segl serve`):
//! the choice page, the upstream's login form, back through the federation callback.
//!
//! Runs when `SEGL_TEST_BROWSER=1` (CI sets it, after installing `chromium` and `npm ci` in
//! tests/browser); otherwise it says that it skipped.

use crate::federation::{Federation, IDP};
use crate::harness::*;
use crate::login::SCOPES;
use segl_jose::{Alg, SigningKey};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The client this test registers, with a loopback redirect URI on a port of its own.
const CLIENT_ID: &str = "browser-ehr";
const PID: &str = "06828399789";

fn browser_enabled() -> bool {
    if std::env::var("SEGL_TEST_BROWSER").as_deref() != Ok("1") {
        eprintln!(
            "SEGL_TEST_BROWSER is not 1: skipping the real-browser login test (scripts/test.sh runs it)"
        );
        return false;
    }
    true
}

/// The browser-test client's registration (with a redirect URI on `redirect_port`), and its key.
fn browser_client(redirect_port: u16) -> (String, SigningKey) {
    let redirect_uri = format!("http://127.0.0.1:{redirect_port}/callback");
    let extra = format!(
        r#"
[[client]]
client_id = "{CLIENT_ID}"
name = "Acme EPJ (browser test)"
organization = "999977774"
grant_types = ["authorization_code"]
scopes = [{scopes}]
redirect_uris = ["{redirect_uri}"]
jwks_file = "{CLIENT_ID}.jwks.json"
"#,
        scopes = SCOPES
            .split(' ')
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
    (extra, SigningKey::generate(Alg::ES256).unwrap())
}

fn write_client_key(fx: &Fixture, key: &SigningKey) {
    std::fs::write(
        fx.dir.path().join(format!("{CLIENT_ID}.jwks.json")),
        json!({"keys": [key.public_jwk()]}).to_string(),
    )
    .unwrap();
}

/// Runs `tests/browser/login.mjs` against `issuer` with `env` added; checks that it verified
/// the login and left the screenshots `shots` in ci-artifacts/.
async fn run_script(
    issuer: &str,
    key: &SigningKey,
    redirect_port: u16,
    env: &[(&str, String)],
    shots: &[&str],
) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script_dir = repo.join("tests/browser");
    let artifacts = repo.join("ci-artifacts");
    assert!(
        script_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix tests/browser` first (scripts/test.sh does)"
    );
    // Stale screenshots must not pass for new ones.
    for name in shots {
        let _ = std::fs::remove_file(artifacts.join(name));
    }
    let mut node = tokio::process::Command::new("node");
    node.arg(script_dir.join("login.mjs"))
        .env("ISSUER", issuer)
        .env("CLIENT_ID", CLIENT_ID)
        .env(
            "CLIENT_JWK",
            serde_json::to_string(&key.to_private_jwk().unwrap()).unwrap(),
        )
        .env("REDIRECT_PORT", redirect_port.to_string())
        .env("SCOPE", SCOPES)
        .env("PID", PID)
        .env("ARTIFACTS_DIR", &artifacts)
        .current_dir(&script_dir)
        .kill_on_drop(true);
    for (k, v) in env {
        node.env(k, v);
    }
    // The script bounds each of its own waits; this bounds the whole.
    let out = tokio::time::timeout(Duration::from_secs(180), node.output())
        .await
        .expect("login.mjs finished within 180 s")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "login.mjs failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("verified ")),
        "{stdout}\n{stderr}"
    );
    for name in shots {
        let png = std::fs::read(artifacts.join(name))
            .unwrap_or_else(|e| panic!("ci-artifacts/{name}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
            "ci-artifacts/{name} is not a PNG screenshot ({} bytes)",
            png.len()
        );
    }
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_in_a_real_browser() {
    if !browser_enabled() {
        return;
    }
    let redirect_port = free_port();
    let (extra, key) = browser_client(redirect_port);
    let fx = Fixture::new(Backend::Sqlite, &extra).await;
    write_client_key(&fx, &key);
    let server = fx.start().await;
    run_script(
        &server.issuer,
        &key,
        redirect_port,
        &[],
        &["login-page.png", "after-login.png"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_login_in_a_real_browser() {
    if !browser_enabled() {
        return;
    }
    let redirect_port = free_port();
    let (extra, key) = browser_client(redirect_port);
    let fed = Federation::new(Backend::Sqlite, "timeout = 10", &extra).await;
    write_client_key(&fed.down, &key);
    let down = fed.start_down().await;
    run_script(
        &down.issuer,
        &key,
        redirect_port,
        &[("IDP", IDP.to_owned()), ("UPSTREAM", fed.up.issuer.clone())],
        &[
            "idp-choice.png",
            "federated-login-page.png",
            "federated-after-login.png",
        ],
    )
    .await;
}
