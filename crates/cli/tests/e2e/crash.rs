//! Crash safety: `kill -9` of a server under load, then a restart on the same store. Every
//! client assertion whose token was acknowledged stays a replay; the refresh token last handed
//! out is still honoured; a code handed out before the crash is redeemed once after it, and a
//! code redeemed before the crash stays spent.

use crate::both;
use crate::harness::*;
use crate::login::{Browser, Flow, SCOPES, query_of};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The load is far above the default rate limits.
const NO_LIMITS: &[(&str, &str)] = &[
    ("SEGL_RATE_LIMIT_ADDRESS_RATE", "0"),
    ("SEGL_RATE_LIMIT_CLIENT_RATE", "0"),
];

both!(
    kill_9_under_load_loses_nothing_acknowledged,
    |backend| async move {
        let fx = Arc::new(Fixture::new(backend, "").await);
        let server = fx.start_on(fx.port, NO_LIMITS).await;

        // Before the crash: a spent code, a code not yet redeemed, and a refresh token.
        let scopes = format!("{SCOPES} offline_access");
        let mut flow = Flow::new(&fx, &server);
        let spent = query_of(
            &flow
                .login(&mut Browser::new(), "06828399789", &[("scope", &scopes)])
                .await,
        )["code"]
            .clone();
        let r = flow.exchange(&spent).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut refresh_token = r.body["refresh_token"].as_str().unwrap().to_owned();
        let pending = query_of(
            &flow
                .login(&mut Browser::new(), "06828399789", &[("scope", &scopes)])
                .await,
        )["code"]
            .clone();

        // Load: four tasks of client_credentials requests, each remembering the forms that were
        // answered with a token; bounded by count and time.
        let base = server.base.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let fx = fx.clone();
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let epj = fx.client("epj");
                let mut acknowledged = Vec::new();
                for _ in 0..5_000 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let form = fx.cc_form(&epj, None);
                    let r = http
                        .post(format!("{base}/connect/token"))
                        .form(&form)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            // Acknowledged only once the whole answer has arrived.
                            if r.bytes().await.is_ok() {
                                acknowledged.push(form);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
                acknowledged
            }));
        }
        // Refresh-token rotations under the same load, then the crash.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            let r = flow
                .post(
                    "/connect/token",
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &refresh_token),
                    ],
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            refresh_token = r.body["refresh_token"].as_str().unwrap().to_owned();
        }
        server.crash();
        let mut acknowledged = Vec::new();
        for t in tasks {
            acknowledged.extend(t.await.unwrap());
        }
        assert!(
            acknowledged.len() > 20,
            "the load ran ({} tokens before the crash)",
            acknowledged.len()
        );
        let (dpop, verifier, nonce) = (
            copy_key(&flow.dpop),
            flow.verifier.clone(),
            flow.nonce.clone(),
        );
        drop(flow);
        drop(server);

        let server = fx.start_on(fx.port, NO_LIMITS).await;
        // Every acknowledged assertion is still a replay.
        for form in &acknowledged {
            server.token(form).await.expect_error(401, "invalid_client");
        }
        let mut flow = Flow::new(&fx, &server);
        (flow.dpop, flow.verifier, flow.nonce) = (dpop, verifier, nonce);
        // The last refresh token handed out is honoured.
        let r = flow
            .post(
                "/connect/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &refresh_token),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "the last refresh token: {}", r.body);
        // The spent code stays spent; the pending one is redeemed once.
        flow.exchange(&spent)
            .await
            .expect_error(400, "invalid_grant");
        let r = flow.exchange(&pending).await;
        assert_eq!(r.status, 200, "{}", r.body);
        flow.exchange(&pending)
            .await
            .expect_error(400, "invalid_grant");
        println!(
            "{} acknowledged tokens before kill -9 stayed replays",
            acknowledged.len()
        );
    }
);
