//! A store outage (PostgreSQL refusing connections) answers 503 `temporarily_unavailable` —
//! never `invalid_grant` or `invalid_client` — turns readiness off, keeps discovery and JWKS
//! served from memory, and service resumes by itself when the store returns, with nothing that
//! was acknowledged lost: the refresh token issued before the outage still works after it.

use crate::harness::*;
use crate::login::Flow;

async fn set_connections(admin_url: &str, database: &str, allow: bool) {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS {allow}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if !allow {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(database)
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_and_service_resumes() {
    let Some(Backend::Postgres(admin_url)) = Backend::postgres() else {
        return;
    };
    let fx = Fixture::new(Backend::Postgres(admin_url.clone()), "").await;
    let database = fx.database.rsplit('/').next().unwrap().to_owned();
    let server = fx.start().await;
    // Before: a refresh token and a DPoP-bound login, acknowledged.
    let mut flow = Flow::new(&fx, &server);
    let mut browser = crate::login::Browser::new();
    let scopes = format!("{} offline_access", crate::login::SCOPES);
    let back = flow
        .login(&mut browser, "06828399789", &[("scope", &scopes)])
        .await;
    let r = flow.exchange(&crate::login::query_of(&back)["code"]).await;
    let rt = r.body["refresh_token"].as_str().unwrap().to_owned();

    set_connections(&admin_url, &database, false).await;
    let epj = fx.client("epj");
    let r = server.token(&fx.cc_form(&epj, None)).await;
    r.expect_error(503, "temporarily_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    let r = flow
        .post(
            "/connect/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (503, "temporarily_unavailable"),
        "{}",
        r.body
    );
    assert_eq!(server.get("/health/ready").await.status, 503);
    assert_eq!(server.get("/health/live").await.status, 200);
    assert_eq!(
        server.get("/.well-known/openid-configuration").await.status,
        200
    );
    assert_eq!(
        server
            .get("/.well-known/openid-configuration/jwks")
            .await
            .status,
        200
    );

    set_connections(&admin_url, &database, true).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.get("/health/ready").await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "service did not resume"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(server.token(&fx.cc_form(&epj, None)).await.status, 200);
    let r = flow
        .post(
            "/connect/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(
        r.status, 200,
        "the refresh token acknowledged before the outage still works: {}",
        r.body
    );
}
