//! Rate limiting on the token, PAR and login endpoints: per client and per source address,
//! answered with 429 and Retry-After.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_and_per_address_limits() {
    let fx = Fixture::new(Backend::Sqlite, "[rate_limit]\nclient_rate = 0.5\nclient_burst = 2\naddress_rate = 0.5\naddress_burst = 5\n").await;
    let server = fx.start().await;
    let epj = fx.client("epj");
    for _ in 0..2 {
        assert_eq!(server.token(&fx.cc_form(&epj, None)).await.status, 200);
    }
    let r = server.token(&fx.cc_form(&epj, None)).await;
    let d = r.expect_error(429, "temporarily_unavailable");
    assert!(d.contains("rate limit"), "{d}");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another client has its own budget, until the address budget (5) runs out.
    let rsa = fx.client("rsa-client");
    assert_eq!(server.token(&fx.cc_form(&rsa, None)).await.status, 200);
    assert_eq!(server.token(&fx.cc_form(&rsa, None)).await.status, 200);
    let r = server.token(&fx.cc_form(&rsa, None)).await;
    r.expect_error(429, "temporarily_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    // Discovery and JWKS are not limited.
    assert_eq!(
        server.get("/.well-known/openid-configuration").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_configuration_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "issuer = \"http://127.0.0.1:1\"\nkey_encryption_key_file = \"k\"\n[rate_limit]\nclient_rate = -1\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate_limit"));
}
