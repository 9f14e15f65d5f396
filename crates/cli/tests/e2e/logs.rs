//! Operations: every answer carries an `x-request-id` (the caller's, or a new one), and
//! `SEGL_LOG_FORMAT=json` writes one JSON object per line with the request id — and never a
//! token, an assertion or a key.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_with_request_ids_and_no_secrets() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx
        .start_on(
            fx.port,
            &[("SEGL_LOG_FORMAT", "json"), ("SEGL_LOG", "info")],
        )
        .await;
    let form = fx.cc_form(&fx.client("epj"), None);
    let assertion = form[3].1.clone();
    let r = server.token(&form).await;
    assert_eq!(r.status, 200);
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.len() >= 16, "{id}");
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    // A caller's own id is kept.
    let mine = reqwest::Client::new()
        .get(format!("{}/health/live", server.base))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "caller-chosen-id");
    // A refused request is logged too.
    let mut bad = fx.cc_form(&fx.client("epj"), None);
    bad[3].1 = fx.assertion(
        &fx.client("epj"),
        serde_json::json!({"aud": "https://elsewhere"}),
    );
    let bad_assertion = bad[3].1.clone();
    assert_eq!(server.token(&bad).await.status, 401);

    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "{logs}");
    assert!(
        lines
            .iter()
            .any(|l| l.to_string().contains("access token issued") && l.to_string().contains(&id)),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.to_string().contains("invalid_client")),
        "{logs}"
    );
    for secret in [&assertion, &bad_assertion, &token] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "a token or assertion reached the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    assert_eq!(
        server
            .token(&fx.cc_form(&fx.client("epj"), None))
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .token(&fx.cc_form(&fx.client("epj"), Some("nhn:nope/x")))
            .await
            .status,
        400
    );
    let r = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for expected in [
        r#"segl_http_requests_total{path="/connect/token",status="200"} 1"#,
        r#"segl_http_requests_total{path="/connect/token",status="400"} 1"#,
        r#"segl_tokens_issued_total{grant="client_credentials"} 1"#,
        "segl_http_request_duration_seconds_bucket",
        r#"segl_store_operation_seconds_count{op="commit_group"}"#,
    ] {
        assert!(text.contains(expected), "{expected} not in:\n{text}");
    }
    assert!(!text.contains("epj"), "no client ids in labels");
}
