//! Interoperability with an independent client: npm `oauth4webapi` performs the
//! client_credentials request with private_key_jwt, and `jose` verifies the token against the
//! published JWKS. Runs when `SEGL_TEST_INTEROP=1` (CI sets it, after `npm ci` in tests/interop).

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_client_credentials() {
    if std::env::var("SEGL_TEST_INTEROP").as_deref() != Ok("1") {
        eprintln!(
            "SEGL_TEST_INTEROP is not 1: skipping the oauth4webapi interop test (scripts/test.sh runs it)"
        );
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    for signing_alg in ["RS256", "ES256"] {
        let fx = Fixture::new(
            Backend::Sqlite,
            &format!("[tokens]\nsigning_alg = \"{signing_alg}\"\n"),
        )
        .await;
        let server = fx.start().await;
        for client in ["epj", "rsa-client"] {
            let c = fx.client(client);
            let private = serde_json::to_string(&c.key.to_private_jwk().unwrap()).unwrap();
            let scope = if client == "epj" {
                "nhn:sfm/api"
            } else {
                "nhn:reseptformidleren/rf"
            };
            let out = tokio::process::Command::new("node")
                .arg(root.join("client_credentials.mjs"))
                .env("ISSUER", &server.issuer)
                .env("CLIENT_ID", client)
                .env("CLIENT_JWK", private)
                .env("SCOPE", scope)
                .current_dir(&root)
                .output()
                .await
                .expect("node is installed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{signing_alg}/{client}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("verified"), "{stdout}");
        }
    }
}

/// oauth4webapi's DPoP support: the proof, the use_dpop_nonce retry, and the cnf.jkt binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_dpop_with_server_nonce() {
    if std::env::var("SEGL_TEST_INTEROP").as_deref() != Ok("1") {
        eprintln!("SEGL_TEST_INTEROP is not 1: skipping the oauth4webapi DPoP interop test");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let c = fx.client("dpop-client");
    let out = tokio::process::Command::new("node")
        .arg(root.join("dpop.mjs"))
        .env("ISSUER", &server.issuer)
        .env("CLIENT_ID", "dpop-client")
        .env(
            "CLIENT_JWK",
            serde_json::to_string(&c.key.to_private_jwk().unwrap()).unwrap(),
        )
        .env("SCOPE", "nhn:reseptformidleren/rf")
        .current_dir(&root)
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verified DPoP-bound token"), "{stdout}");
}
