//! JWKS refetch against a live issuer on a loopback port: a new `kid` is fetched, made-up
//! `kid`s cost the issuer at most one fetch per interval, concurrent misses share one fetch,
//! and keys the issuer removed stop working once the cached set is older than its max age.

use crate::harness::{AUDIENCE, NOW, SCOPE, jwks};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use segl_jose::{Alg, Jwks, SigningKey, sign_jwt};
use segl_verify::{
    ErrorKind, ManualClock, RequestParts, SetupError, TokenBinding, Verifier, VerifierConfig,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
struct Issuer {
    url: String,
    named_issuer: Arc<Mutex<String>>,
    jwks: Arc<Mutex<Jwks>>,
    fetches: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    delay: Duration,
}

impl Issuer {
    async fn start(keys: &[&SigningKey], delay: Duration) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Issuer {
            named_issuer: Arc::new(Mutex::new(url.clone())),
            url,
            jwks: Arc::new(Mutex::new(jwks(keys))),
            fetches: Arc::new(AtomicUsize::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
            delay,
        };
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(serve_jwks))
            .with_state(issuer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        issuer
    }

    fn rotate(&self, keys: &[&SigningKey]) {
        *self.jwks.lock().unwrap() = jwks(keys);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn token(&self, key: &SigningKey) -> String {
        let claims = json!({
            "iss": self.url, "aud": AUDIENCE, "scope": [SCOPE], "client_id": "c",
            "exp": NOW + 3600, "jti": "j",
        });
        sign_jwt(key, "at+jwt", &claims).unwrap()
    }
}

async fn discovery(State(i): State<Issuer>) -> Json<serde_json::Value> {
    let named = i.named_issuer.lock().unwrap().clone();
    Json(json!({"issuer": named, "jwks_uri": format!("{}/jwks", i.url)}))
}

async fn serve_jwks(State(i): State<Issuer>) -> Result<Json<Jwks>, StatusCode> {
    i.fetches.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(i.delay).await;
    if i.failing.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let jwks = i.jwks.lock().unwrap().clone();
    Ok(Json(jwks))
}

fn config(clock: &Arc<ManualClock>) -> VerifierConfig {
    VerifierConfig::new(AUDIENCE)
        .with_binding(TokenBinding::BearerOnly)
        .with_clock(clock.clone())
}

async fn verify(v: &Verifier, token: &str) -> Result<(), ErrorKind> {
    let auth = format!("Bearer {token}");
    v.verify(&RequestParts {
        method: "GET",
        target: "/",
        authorization: &[&auth],
        dpop: &[],
    })
    .await
    .map(|_| ())
    .map_err(|e| e.kind().clone())
}

#[tokio::test]
async fn discovery_must_name_the_issuer_exactly() {
    let a = SigningKey::generate(Alg::ES256).unwrap();
    let issuer = Issuer::start(&[&a], Duration::ZERO).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let with_slash = format!("{}/", issuer.url);
    let e = Verifier::discover(&with_slash, config(&clock))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SetupError::Discovery(ref d) if d.contains("names issuer")),
        "{e}"
    );
    *issuer.named_issuer.lock().unwrap() = "https://mix-up.test".into();
    assert!(matches!(
        Verifier::discover(&issuer.url, config(&clock)).await,
        Err(SetupError::Discovery(_))
    ));
    *issuer.named_issuer.lock().unwrap() = issuer.url.clone();
    let v = Verifier::discover(&issuer.url, config(&clock))
        .await
        .unwrap();
    assert_eq!(v.issuer(), issuer.url);
    assert!(verify(&v, &issuer.token(&a)).await.is_ok());
    // Nothing listening: a setup error, not a verifier without keys.
    let e = Verifier::discover("http://127.0.0.1:9", config(&clock))
        .await
        .unwrap_err();
    assert!(matches!(e, SetupError::Discovery(_)), "{e}");
}

#[tokio::test]
async fn rotation_is_picked_up_and_unknown_kids_are_rate_limited() {
    let (a, b, c) = (
        SigningKey::generate(Alg::ES256).unwrap(),
        SigningKey::generate(Alg::RS256).unwrap(),
        SigningKey::generate(Alg::ES256).unwrap(),
    );
    let issuer = Issuer::start(&[&a], Duration::ZERO).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let v = Verifier::discover(&issuer.url, config(&clock))
        .await
        .unwrap();
    assert_eq!(issuer.fetches(), 1);
    assert!(verify(&v, &issuer.token(&a)).await.is_ok());
    assert_eq!(issuer.fetches(), 1, "a known kid needs no fetch");

    // The issuer publishes b; a token signed by b makes the verifier fetch once.
    clock.advance(31);
    issuer.rotate(&[&a, &b]);
    assert!(verify(&v, &issuer.token(&b)).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
    assert!(verify(&v, &issuer.token(&b)).await.is_ok());
    assert_eq!(issuer.fetches(), 2);

    // A flood of made-up kids within the interval: no fetch at all.
    let stranger = SigningKey::generate(Alg::ES256).unwrap();
    for _ in 0..50 {
        let e = verify(&v, &issuer.token(&stranger)).await.unwrap_err();
        assert!(
            matches!(e, ErrorKind::InvalidToken(ref d) if d.contains("kid")),
            "{e:?}"
        );
    }
    assert_eq!(issuer.fetches(), 2);
    // c is published within the interval: it is found only once the interval has passed.
    issuer.rotate(&[&a, &b, &c]);
    clock.advance(29);
    assert!(verify(&v, &issuer.token(&c)).await.is_err());
    assert_eq!(issuer.fetches(), 2);
    clock.advance(1);
    assert!(verify(&v, &issuer.token(&c)).await.is_ok());
    assert_eq!(issuer.fetches(), 3);
    // The next interval allows one more fetch for made-up kids, and only one.
    clock.advance(30);
    for _ in 0..20 {
        assert!(verify(&v, &issuer.token(&stranger)).await.is_err());
    }
    assert_eq!(issuer.fetches(), 4);
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let (a, b) = (
        SigningKey::generate(Alg::ES256).unwrap(),
        SigningKey::generate(Alg::ES256).unwrap(),
    );
    let issuer = Issuer::start(&[&a], Duration::from_millis(200)).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let v = Arc::new(
        Verifier::discover(&issuer.url, config(&clock))
            .await
            .unwrap(),
    );
    clock.advance(60);
    issuer.rotate(&[&a, &b]);
    let token = issuer.token(&b);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (v, token) = (v.clone(), token.clone());
        tasks.spawn(async move { verify(&v, &token).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(r.unwrap().is_ok());
    }
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn removed_keys_stop_working_after_the_max_age() {
    let (a, b) = (
        SigningKey::generate(Alg::ES256).unwrap(),
        SigningKey::generate(Alg::ES256).unwrap(),
    );
    let issuer = Issuer::start(&[&a, &b], Duration::ZERO).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let v = Verifier::discover(
        &issuer.url,
        config(&clock).with_jwks_max_age(Duration::from_secs(300)),
    )
    .await
    .unwrap();
    // a is retired by the issuer; cached, it still verifies until the set is 300 s old.
    issuer.rotate(&[&b]);
    clock.advance(299);
    assert!(verify(&v, &issuer.token(&a)).await.is_ok());
    assert_eq!(issuer.fetches(), 1);
    clock.advance(1);
    let e = verify(&v, &issuer.token(&a)).await.unwrap_err();
    assert!(
        matches!(e, ErrorKind::InvalidToken(ref d) if d.contains("kid")),
        "{e:?}"
    );
    assert!(verify(&v, &issuer.token(&b)).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn a_failing_issuer_keeps_the_keys_held() {
    let a = SigningKey::generate(Alg::ES256).unwrap();
    let issuer = Issuer::start(&[&a], Duration::ZERO).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let meta: segl_proto::discovery::Discovery = serde_json::from_value(json!({
        "issuer": issuer.url, "jwks_uri": format!("{}/jwks", issuer.url),
        "token_endpoint": "", "grant_types_supported": [], "token_endpoint_auth_methods_supported": [],
        "token_endpoint_auth_signing_alg_values_supported": [], "id_token_signing_alg_values_supported": [],
    }))
    .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let v = Verifier::from_metadata(&meta, config(&clock).with_http_client(http))
        .await
        .unwrap();
    assert!(verify(&v, &issuer.token(&a)).await.is_ok());
    // The JWKS endpoint fails: the stale set is kept, and retried once per interval only.
    issuer.failing.store(true, Ordering::SeqCst);
    clock.advance(400);
    assert!(verify(&v, &issuer.token(&a)).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
    for _ in 0..10 {
        assert!(verify(&v, &issuer.token(&a)).await.is_ok());
    }
    assert_eq!(issuer.fetches(), 2);
    issuer.failing.store(false, Ordering::SeqCst);
    clock.advance(30);
    assert!(verify(&v, &issuer.token(&a)).await.is_ok());
    assert_eq!(issuer.fetches(), 3);
    // A JWKS that cannot be had at start-up is a setup error.
    let broken = segl_proto::discovery::Discovery {
        jwks_uri: "http://127.0.0.1:9/jwks".into(),
        ..meta
    };
    assert!(matches!(
        Verifier::from_metadata(&broken, config(&clock)).await,
        Err(SetupError::Jwks(_))
    ));
}

#[tokio::test]
async fn a_cancelled_request_does_not_cancel_the_fetch() {
    let (a, b) = (
        SigningKey::generate(Alg::ES256).unwrap(),
        SigningKey::generate(Alg::ES256).unwrap(),
    );
    let issuer = Issuer::start(&[&a], Duration::from_millis(300)).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let v = Verifier::discover(&issuer.url, config(&clock))
        .await
        .unwrap();
    clock.advance(60);
    issuer.rotate(&[&a, &b]);
    // The client gives up while the verifier is fetching (the request future is dropped).
    let token = issuer.token(&b);
    let gave_up = tokio::time::timeout(Duration::from_millis(50), verify(&v, &token)).await;
    assert!(gave_up.is_err());
    // The fetch went on; within the same interval the new key is there.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(verify(&v, &token).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
}
