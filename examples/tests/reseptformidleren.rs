//! The Reseptformidleren demo: its router with `oneshot` (every answer it gives), and the real
//! binary against a tiny issuer on a loopback port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use segl_examples::reseptformidleren::{self, AUDIENCE, CALLER_PATH, SCOPE};
use segl_jose::dpop::create_proof;
use segl_jose::{Alg, Jwks, SigningKey, sign_jwt};
use segl_verify::{Clock as _, ManualClock, TokenBinding, Verifier};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt as _;

const ISSUER: &str = "https://segl.test";
const BASE: &str = "http://127.0.0.1:9100";
const NOW: i64 = 1_800_000_000;

struct Api {
    issuer_key: SigningKey,
    client_key: SigningKey,
    verifier: Arc<Verifier>,
}

impl Api {
    fn new(binding: TokenBinding) -> Api {
        let issuer_key = SigningKey::generate(Alg::ES256).unwrap();
        let jwks = Jwks {
            keys: vec![issuer_key.public_jwk().clone()],
        };
        let clock = Arc::new(ManualClock::new(NOW));
        let config = reseptformidleren::config(BASE, binding).with_clock(clock);
        Api {
            issuer_key,
            client_key: SigningKey::generate(Alg::ES256).unwrap(),
            verifier: Arc::new(Verifier::from_jwks(ISSUER, &jwks, config).unwrap()),
        }
    }

    fn claims(&self) -> Value {
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "scope": [SCOPE], "exp": NOW + 600, "nbf": NOW,
            "client_id": "epj-granfjelldal", "sub": "epj-granfjelldal", "jti": "A1",
            "helseid://claims/client/client_name": "Acme EPJ at Granfjelldal",
            "helseid://claims/client/claims/orgnr_parent": "999977774",
            "helseid://claims/client/claims/orgnr_child": "999977776",
            "helseid://claims/client/client_tenancy": "single-tenant",
        })
    }

    fn token(&self, claims: &Value) -> String {
        sign_jwt(&self.issuer_key, "at+jwt", claims).unwrap()
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = reseptformidleren::router(self.verifier.clone())
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn get(
        &self,
        path: &str,
        authorization: Option<String>,
        dpop: Option<String>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut r = Request::get(path);
        if let Some(a) = authorization {
            r = r.header(header::AUTHORIZATION, a);
        }
        if let Some(p) = dpop {
            r = r.header("dpop", p);
        }
        self.call(r.body(Body::empty()).unwrap()).await
    }
}

#[tokio::test]
async fn caller_describes_a_client_credentials_token() {
    let api = Api::new(TokenBinding::Either);
    let (status, headers, body) = api
        .get(
            CALLER_PATH,
            Some(format!("Bearer {}", api.token(&api.claims()))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["client"],
        json!({"id": "epj-granfjelldal", "name": "Acme EPJ at Granfjelldal"})
    );
    assert_eq!(
        v["organization"],
        json!({"parent": "999977774", "child": "999977776", "supplier": null, "tenancy": "single-tenant"})
    );
    assert_eq!(v["person"], Value::Null);
    assert_eq!(v["actors"], json!([]));
    assert_eq!(v["scopes"], json!([SCOPE]));
    assert_eq!(v["audience"], json!([AUDIENCE]));
    assert_eq!(v["dpop_bound"], false);
}

#[tokio::test]
async fn caller_describes_a_person_and_an_exchange_chain_over_dpop() {
    let api = Api::new(TokenBinding::DpopOnly);
    let mut c = api.claims();
    c["helseid://claims/identity/pid"] = json!("06828399789");
    c["helseid://claims/hpr/hpr_number"] = json!("431001110");
    c["helseid://claims/identity/security_level"] = json!("4");
    c["helseid://claims/identity/assurance_level"] = json!("high");
    c["name"] = json!("KVART GREVLING");
    c["given_name"] = json!("KVART");
    c["family_name"] = json!("GREVLING");
    c["helseid://claims/client/original_client_id"] = json!("epj-granfjelldal");
    c["client_id"] = json!("sfm-api");
    c["act"] = json!({"client_id": "sfm-api", "iss": ISSUER,
        "helseid://claims/client/claims/orgnr_parent": "994598759",
        "act": {"client_id": "epj-granfjelldal", "iss": ISSUER}});
    c["cnf"] = json!({"jkt": api.client_key.public_jwk().thumbprint().unwrap()});
    let token = api.token(&c);
    let proof = create_proof(
        &api.client_key,
        "GET",
        &format!("{BASE}{CALLER_PATH}"),
        NOW,
        None,
        Some(&token),
    )
    .unwrap();
    let (status, _, body) = api
        .get(CALLER_PATH, Some(format!("DPoP {token}")), Some(proof))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["person"]["pid"], "06828399789");
    assert_eq!(v["person"]["hpr_number"], "431001110");
    assert_eq!(v["person"]["security_level"], "4");
    assert_eq!(v["person"]["assurance_level"], "high");
    assert_eq!(v["person"]["name"], "KVART GREVLING");
    assert_eq!(v["person"]["middle_name"], Value::Null);
    assert_eq!(v["actors"][0]["client_id"], "sfm-api");
    assert_eq!(v["actors"][0]["orgnr_parent"], "994598759");
    assert_eq!(v["actors"][1]["client_id"], "epj-granfjelldal");
    assert_eq!(v["original_client_id"], "epj-granfjelldal");
    assert_eq!(v["dpop_bound"], true);
    assert_eq!(v["jkt"], api.client_key.public_jwk().thumbprint().unwrap());
    // The same token as Bearer at a DPoP-only API: 401 with a DPoP challenge.
    let (status, headers, _) = api
        .get(CALLER_PATH, Some(format!("Bearer {token}")), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("DPoP error=\"invalid_token\"")
    );
}

#[tokio::test]
async fn everything_else_is_refused_with_the_right_status() {
    let api = Api::new(TokenBinding::Either);
    // 401 without a token, with both challenges.
    let (status, headers, _) = api.get(CALLER_PATH, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].starts_with("DPoP algs=\""));
    assert_eq!(challenges[1], "Bearer");
    // 401 invalid_token: another API's token.
    let mut other = api.claims();
    other["aud"] = json!("nhn:kjernejournal");
    let (status, headers, body) = api
        .get(
            CALLER_PATH,
            Some(format!("Bearer {}", api.token(&other))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\"")
    );
    assert!(body.contains("invalid_token"));
    // 403 insufficient_scope.
    let mut narrow = api.claims();
    narrow["scope"] = json!(["nhn:reseptformidleren/other"]);
    let (status, headers, _) = api
        .get(
            CALLER_PATH,
            Some(format!("Bearer {}", api.token(&narrow))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    // 404 and 405.
    let good = format!("Bearer {}", api.token(&api.claims()));
    assert_eq!(
        api.get("/api/other", Some(good.clone()), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get("/", None, None).await.0, StatusCode::NOT_FOUND);
    let post = Request::builder()
        .method(Method::POST)
        .uri(CALLER_PATH)
        .header(header::AUTHORIZATION, &good)
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = api.call(post).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
    // And the near-miss: the same request as GET.
    assert_eq!(
        api.get(CALLER_PATH, Some(good), None).await.0,
        StatusCode::OK
    );
}

/// A minimal issuer: discovery and JWKS on a loopback port.
async fn issuer(key: &SigningKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
    let jwks = json!({"keys": [key.public_jwk()]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_the_api_against_a_live_issuer() {
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let iss = issuer(&key).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let exe = env!("CARGO_BIN_EXE_reseptformidleren");
    // Not on loopback: refused unless asked for.
    let out = std::process::Command::new(exe)
        .args(["--issuer", &iss, "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let _child = Child(
        std::process::Command::new(exe)
            .args(["--issuer", &iss, "--listen", &listen, "--binding", "bearer"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let now = segl_verify::SystemClock.now();
    let token = sign_jwt(
        &key,
        "at+jwt",
        &json!({
            "iss": iss, "aud": AUDIENCE, "scope": [SCOPE], "exp": now + 60, "client_id": "epj",
        }),
    )
    .unwrap();
    let url = format!("http://{listen}{CALLER_PATH}");
    let http = reqwest::Client::new();
    let mut answer = None;
    for _ in 0..100 {
        match http.get(&url).bearer_auth(&token).send().await {
            Ok(r) => {
                answer = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let r = answer.expect("the API did not start");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["client"]["id"], "epj");
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
}
