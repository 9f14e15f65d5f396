//! Three `segl serve` processes on one PostgreSQL database: what one process has seen binds the
//! others. A replayed assertion or DPoP proof is refused by another process; DPoP nonces from
//! one are accepted by the others; a code is redeemed once and a refresh token has one
//! successor whichever processes get them; a rotated key is published and used by all within
//! `keys.refresh_interval` (1 s here).

use crate::harness::*;
use crate::login::{Browser, Flow, query_of};
use segl_jose::{Alg, SigningKey};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgresql() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let fx = Fixture::new(backend, "").await;
    let servers = [
        fx.start().await,
        fx.start_on(free_port(), &[]).await,
        fx.start_on(free_port(), &[]).await,
    ];
    let [a, b, c] = &servers;

    // A client assertion accepted by one process is a replay at every other.
    let epj = fx.client("epj");
    let form = fx.cc_form(&epj, None);
    assert_eq!(a.token(&form).await.status, 200);
    for other in [b, c] {
        other.token(&form).await.expect_error(401, "invalid_client");
    }

    // DPoP: a nonce from one process is good at the others; a proof used at one is a replay at
    // the others.
    let dpop_client = fx.client("dpop-client");
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let url = format!("{}/connect/token", fx.issuer);
    let probe = dpop_proof(&key, &url, None, json!({}), json!({}));
    let r = a
        .token_with(&fx.cc_form(&dpop_client, None), &[("dpop", &probe)])
        .await;
    r.expect_error(400, "use_dpop_nonce");
    let nonce = r.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let proof = dpop_proof(&key, &url, Some(&nonce), json!({}), json!({}));
    let r = b
        .token_with(&fx.cc_form(&dpop_client, None), &[("dpop", &proof)])
        .await;
    assert_eq!(
        r.status, 200,
        "a nonce from process A at process B: {}",
        r.body
    );
    let r = c
        .token_with(&fx.cc_form(&dpop_client, None), &[("dpop", &proof)])
        .await;
    r.expect_error(400, "invalid_dpop_proof");

    // A code is redeemed once, whichever processes race for it.
    let mut flow = Flow::new(&fx, a);
    let scopes = format!("{} offline_access", crate::login::SCOPES);
    let back = flow
        .login(&mut Browser::new(), "06828399789", &[("scope", &scopes)])
        .await;
    let code = query_of(&back)["code"].clone();
    let mut on_b = Flow::new(&fx, b);
    on_b.dpop = copy_key(&flow.dpop);
    on_b.verifier = flow.verifier.clone();
    on_b.nonce = flow.nonce.clone();
    let mut on_c = Flow::new(&fx, c);
    on_c.dpop = copy_key(&flow.dpop);
    on_c.verifier = flow.verifier.clone();
    on_c.nonce = flow.nonce.clone();
    let (rb, rc) = tokio::join!(on_b.exchange(&code), on_c.exchange(&code));
    let statuses = [rb.status, rc.status];
    assert!(
        statuses.contains(&200) && statuses.contains(&400),
        "one redemption wins: {statuses:?} {} {}",
        rb.body,
        rc.body
    );
    // (The loser's replay revokes what the winner got, RFC 6749 §4.1.2, so the refresh token
    // comes from a login of its own.)
    let back = flow
        .login(&mut Browser::new(), "06828399789", &[("scope", &scopes)])
        .await;
    let r = flow.exchange(&query_of(&back)["code"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rt = r.body["refresh_token"].as_str().unwrap().to_owned();

    // A refresh token has one successor, whichever processes rotate it at once (the losers
    // inside the grace window are given the same successor).
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.as_str()),
    ];
    let (r1, r2, r3) = tokio::join!(
        flow.post("/connect/token", &refresh),
        on_b.post("/connect/token", &refresh),
        on_c.post("/connect/token", &refresh)
    );
    let successors: Vec<&str> = [&r1, &r2, &r3]
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["refresh_token"].as_str().unwrap())
        .collect();
    assert!(
        !successors.is_empty(),
        "{} {} {}",
        r1.body,
        r2.body,
        r3.body
    );
    assert!(
        successors.iter().all(|s| *s == successors[0]),
        "one successor: {successors:?}"
    );

    // A key rotated (by `segl keys rotate` against the shared store) is published by every
    // process and signs their tokens within keys.refresh_interval.
    let out = fx.run(&["keys", "rotate", "--activate-in", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let new_kid = stdout
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let rotated = Instant::now();
    for server in &servers {
        loop {
            let r = server.token(&fx.cc_form(&epj, None)).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let jwks = server.get("/.well-known/openid-configuration/jwks").await;
            let published = jwks.body["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == new_kid.as_str());
            if published && kid_of(r.body["access_token"].as_str().unwrap()) == new_kid {
                break;
            }
            assert!(
                rotated.elapsed() < Duration::from_secs(3),
                "{} did not take the rotated key {new_kid} within 3 s",
                server.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
