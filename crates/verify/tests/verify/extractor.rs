//! `VerifiedToken` as an axum extractor and `VerifyError` as the response (router tests with
//! `oneshot`).

use crate::harness::*;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use segl_verify::{VerifiedToken, Verifier};
use std::sync::Arc;
use tower::ServiceExt as _;

async fn whoami(token: VerifiedToken) -> String {
    format!(
        "{} dpop={}",
        token.client_id().unwrap_or("-"),
        token.is_dpop_bound()
    )
}

/// The handler lives under a nested router, so the extractor must use the original URI for htu.
fn app(verifier: Arc<Verifier>) -> Router {
    let api = Router::new()
        .route("/caller", get(whoami))
        .with_state(verifier);
    Router::new().nest("/api", api)
}

async fn send(f: &Fixture, request: Request<Body>) -> (Response, String) {
    let response = app(f.verifier.clone()).oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let text = String::from_utf8(to_bytes(body, 1 << 16).await.unwrap().to_vec()).unwrap();
    (Response::from_parts(parts, Body::empty()), text)
}

fn www_authenticate(r: &Response) -> Vec<String> {
    r.headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn handlers_get_the_verified_token() {
    let f = Fixture::new();
    let t = f.bearer_token();
    let req = Request::get(PATH)
        .header("authorization", format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    let (r, body) = send(&f, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body, "epj-granfjelldal dpop=false");

    let t = f.bound_token();
    let req = Request::get("/api/caller?x=1")
        .header("authorization", format!("DPoP {t}"))
        .header("dpop", f.proof(&t))
        .body(Body::empty())
        .unwrap();
    let (r, body) = send(&f, req).await;
    assert_eq!(r.status(), StatusCode::OK, "{body}");
    assert_eq!(body, "epj-granfjelldal dpop=true");
}

#[tokio::test]
async fn refusals_are_rfc_6750_and_9449_answers() {
    let f = Fixture::new();
    // No token: 401, both challenges, no error, no body.
    let (r, body) = send(&f, Request::get(PATH).body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = www_authenticate(&r);
    assert_eq!(c.len(), 2);
    assert!(c[0].starts_with("DPoP algs=") && c[1] == "Bearer", "{c:?}");
    assert!(body.is_empty());
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");

    // A bad token: invalid_token in the scheme used, and a JSON body.
    let req = Request::get(PATH)
        .header("authorization", "Bearer abc.def.ghi")
        .body(Body::empty())
        .unwrap();
    let (r, body) = send(&f, req).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(www_authenticate(&r).len(), 1);
    assert!(www_authenticate(&r)[0].starts_with("Bearer error=\"invalid_token\""));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "invalid_token");
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");

    // Two Authorization headers: 400.
    let t = f.bearer_token();
    let req = Request::get(PATH)
        .header("authorization", format!("Bearer {t}"))
        .header("authorization", format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f, req).await.0.status(), StatusCode::BAD_REQUEST);

    // A header that is not visible ASCII: 400.
    let req = Request::get(PATH)
        .header(
            "authorization",
            axum::http::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f, req).await.0.status(), StatusCode::BAD_REQUEST);

    // Nonce required: 401 use_dpop_nonce with DPoP-Nonce.
    let n = Fixture::with(|c| c.with_dpop_nonce(segl_verify::DpopNonce::Required));
    let t = n.bound_token();
    let req = Request::get(PATH)
        .header("authorization", format!("DPoP {t}"))
        .header("dpop", n.proof(&t))
        .body(Body::empty())
        .unwrap();
    let (r, _) = send(&n, req).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(www_authenticate(&r)[0].starts_with("DPoP error=\"use_dpop_nonce\""));
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let req = Request::get(PATH)
        .header("authorization", format!("DPoP {t}"))
        .header("dpop", n.proof_for("GET", URL, &t, Some(&nonce)))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&n, req).await.0.status(), StatusCode::OK);

    // Missing scope: 403.
    let mut c = f.claims();
    c["scope"] = serde_json::json!(["openid"]);
    let req = Request::get(PATH)
        .header("authorization", format!("Bearer {}", f.token(&c)))
        .body(Body::empty())
        .unwrap();
    let (r, body) = send(&f, req).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(www_authenticate(&r)[0].contains(&format!("scope=\"{SCOPE}\"")));
    assert!(body.contains("insufficient_scope"));
}
