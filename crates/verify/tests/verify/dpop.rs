//! DPoP presentation (RFC 9449 §4.3, §7.1, §9, §11.1), each refusal next to its near-miss twin.
//! The RFC's own vectors are segl-jose's tests.

use crate::harness::*;
use segl_jose::dpop::create_proof;
use segl_jose::{Alg, SigningKey};
use segl_proto::ErrorCode;
use segl_verify::{DpopNonce, ErrorKind};

#[tokio::test]
async fn a_bound_token_with_its_proof_passes() {
    let f = Fixture::new();
    let t = f.bound_token();
    let v = f.dpop(&t, &f.proof(&t)).await.unwrap();
    assert!(v.is_dpop_bound());
    assert_eq!(
        v.jkt(),
        Some(f.client_key.public_jwk().thumbprint().unwrap().as_str())
    );
    assert_eq!(v.client_id(), Some("epj-granfjelldal"));
    // The scheme is case-insensitive.
    assert!(
        f.verify(&[&format!("dpop {t}")], &[&f.proof(&t)])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn exactly_one_dpop_header() {
    let f = Fixture::new();
    let t = f.bound_token();
    let auth = format!("DPoP {t}");
    assert!(invalid_proof(f.verify(&[&auth], &[]).await).contains("required"));
    let (p1, p2) = (f.proof(&t), f.proof(&t));
    assert!(invalid_proof(f.verify(&[&auth], &[&p1, &p2]).await).contains("more than one"));
    assert!(f.verify(&[&auth], &[&p1]).await.is_ok());
}

#[tokio::test]
async fn an_unbound_token_is_not_a_dpop_token() {
    let f = Fixture::new();
    let t = f.bearer_token();
    let e = f.dpop(&t, &f.proof(&t)).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::InvalidToken(d) if d.contains("not DPoP-bound")));
    assert!(challenges(&e)[0].starts_with("DPoP error=\"invalid_token\""));
    let t = f.bound_token();
    assert!(f.dpop(&t, &f.proof(&t)).await.is_ok());
}

#[tokio::test]
async fn the_proof_key_is_the_bound_key() {
    let f = Fixture::new();
    let t = f.bound_token();
    let thief = SigningKey::generate(Alg::ES256).unwrap();
    let p = create_proof(&thief, "GET", URL, NOW, None, Some(&t)).unwrap();
    assert!(invalid_proof(f.dpop(&t, &p).await).contains("bound"));
    assert!(f.dpop(&t, &f.proof(&t)).await.is_ok());
}

#[tokio::test]
async fn ath_binds_the_proof_to_this_token() {
    let f = Fixture::new();
    let t = f.bound_token();
    let mut c = f.bound_claims();
    c["jti"] = serde_json::json!("another");
    let other = f.token(&c);
    assert!(invalid_proof(f.dpop(&t, &f.proof(&other)).await).contains("ath"));
    let no_ath = create_proof(&f.client_key, "GET", URL, NOW, None, None).unwrap();
    assert!(invalid_proof(f.dpop(&t, &no_ath).await).contains("ath"));
    assert!(f.dpop(&t, &f.proof(&t)).await.is_ok());
}

#[tokio::test]
async fn htm_and_htu_are_this_request() {
    let f = Fixture::new();
    let t = f.bound_token();
    let auth = format!("DPoP {t}");
    let post = f.proof_for("POST", URL, &t, None);
    assert!(invalid_proof(f.verify(&[&auth], &[&post]).await).contains("htm"));
    assert!(
        f.verify_at(
            "POST",
            PATH,
            &[&auth],
            &[&f.proof_for("POST", URL, &t, None)]
        )
        .await
        .is_ok()
    );
    for wrong in [
        "https://rf.test/api/other",
        "https://evil.test/api/caller",
        "http://rf.test/api/caller",
    ] {
        let p = f.proof_for("GET", wrong, &t, None);
        assert!(
            invalid_proof(f.verify(&[&auth], &[&p]).await).contains("htu"),
            "{wrong}"
        );
    }
    // The query is not part of htu (RFC 9449 §4.3 (9)).
    let p = f.proof_for("GET", URL, &t, None);
    assert!(
        f.verify_at("GET", "/api/caller?patient=1", &[&auth], &[&p])
            .await
            .is_ok()
    );
    // An absolute target the caller vouches for.
    let p = f.proof_for("GET", "https://rf.test:443/api/caller", &t, None);
    assert!(f.verify_at("GET", URL, &[&auth], &[&p]).await.is_ok());
}

#[tokio::test]
async fn htu_includes_the_base_path_of_a_proxied_api() {
    let f = Fixture::with(|c| c.with_public_base_url("https://gw.test/rf/"));
    let t = f.bound_token();
    let auth = format!("DPoP {t}");
    let p = f.proof_for("GET", "https://gw.test/rf/api/caller", &t, None);
    assert!(f.verify(&[&auth], &[&p]).await.is_ok());
    let p = f.proof_for("GET", "https://gw.test/api/caller", &t, None);
    assert!(invalid_proof(f.verify(&[&auth], &[&p]).await).contains("htu"));
}

#[tokio::test]
async fn proof_iat_window() {
    let f = Fixture::new();
    let t = f.bound_token();
    let at = |iat: i64| create_proof(&f.client_key, "GET", URL, iat, None, Some(&t)).unwrap();
    assert!(f.dpop(&t, &at(NOW - 60)).await.is_ok());
    assert!(invalid_proof(f.dpop(&t, &at(NOW - 61)).await).contains("iat"));
    assert!(f.dpop(&t, &at(NOW + 60)).await.is_ok());
    assert!(invalid_proof(f.dpop(&t, &at(NOW + 61)).await).contains("iat"));
}

#[tokio::test]
async fn a_proof_is_used_once() {
    let f = Fixture::new();
    let t = f.bound_token();
    let p = f.proof(&t);
    assert!(f.dpop(&t, &p).await.is_ok());
    assert!(invalid_proof(f.dpop(&t, &p).await).contains("used before"));
    assert!(f.dpop(&t, &f.proof(&t)).await.is_ok());
    // A proof refused for another reason does not spend its jti.
    let p = f.proof(&t);
    let thief_token = {
        let mut c = f.bound_claims();
        c["cnf"]["jkt"] = serde_json::json!("someone-else");
        f.token(&c)
    };
    assert!(f.dpop(&thief_token, &p).await.is_err());
    assert!(f.dpop(&t, &p).await.is_ok());
}

#[tokio::test]
async fn proof_algorithms_are_allow_listed_and_announced() {
    let f = Fixture::with_keys(Alg::ES256, Alg::PS256, |c| {
        c.with_dpop_algs(&[Alg::ES256, Alg::EdDSA])
    });
    let t = f.bound_token();
    let e = f.dpop(&t, &f.proof(&t)).await.unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::InvalidDpopProof));
    assert_eq!(
        challenges(&e),
        [
            "DPoP error=\"invalid_dpop_proof\", error_description=\"DPoP proof alg PS256 is not accepted\", algs=\"ES256 EdDSA\""
        ]
    );
    let ok = Fixture::with_keys(Alg::ES256, Alg::EdDSA, |c| {
        c.with_dpop_algs(&[Alg::ES256, Alg::EdDSA])
    });
    let t = ok.bound_token();
    assert!(ok.dpop(&t, &ok.proof(&t)).await.is_ok());
}

#[tokio::test]
async fn resource_server_nonce_round_trip() {
    let f = Fixture::with(|c| c.with_dpop_nonce(DpopNonce::Required));
    let t = f.bound_token();
    // Without a nonce: 401 use_dpop_nonce with a DPoP-Nonce header.
    let e = f.dpop(&t, &f.proof(&t)).await.unwrap_err();
    assert_eq!(e.status(), 401);
    assert_eq!(e.error_code(), Some(ErrorCode::UseDpopNonce));
    let ErrorKind::UseDpopNonce { nonce, .. } = e.kind().clone() else {
        panic!()
    };
    assert!(e.headers().contains(&("dpop-nonce", nonce.clone())));
    assert!(challenges(&e)[0].starts_with("DPoP error=\"use_dpop_nonce\""));
    // With it: passes, and keeps passing for at least five minutes.
    assert!(
        f.dpop(&t, &f.proof_for("GET", URL, &t, Some(&nonce)))
            .await
            .is_ok()
    );
    f.clock.advance(299);
    let t = f.bound_token_at_now();
    assert!(
        f.dpop(&t, &f.proof_for("GET", URL, &t, Some(&nonce)))
            .await
            .is_ok()
    );
    // Ten minutes later it is stale: a new nonce is handed out.
    f.clock.advance(301);
    let t = f.bound_token_at_now();
    let e = f
        .dpop(&t, &f.proof_for("GET", URL, &t, Some(&nonce)))
        .await
        .unwrap_err();
    let ErrorKind::UseDpopNonce { nonce: fresh, .. } = e.kind().clone() else {
        panic!("{e}")
    };
    assert_ne!(fresh, nonce);
    assert_eq!(f.verifier.current_dpop_nonce(), Some(fresh.clone()));
    // Made-up and foreign nonces are not current.
    let other = Fixture::with(|c| c.with_dpop_nonce(DpopNonce::Required));
    let foreign = other.verifier.current_dpop_nonce().unwrap();
    for bad in ["made-up", foreign.as_str()] {
        let e = f
            .dpop(&t, &f.proof_for("GET", URL, &t, Some(bad)))
            .await
            .unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::UseDpopNonce), "{bad}");
    }
    assert!(
        f.dpop(&t, &f.proof_for("GET", URL, &t, Some(&fresh)))
            .await
            .is_ok()
    );
    // Nonces off: a nonce claim is ignored.
    let off = Fixture::new();
    let t = off.bound_token();
    assert!(
        off.dpop(&t, &off.proof_for("GET", URL, &t, Some("anything")))
            .await
            .is_ok()
    );
    assert_eq!(off.verifier.current_dpop_nonce(), None);
}

impl Fixture {
    /// A bound token valid at the fixture clock's current time.
    fn bound_token_at_now(&self) -> String {
        let now = self.clock_now();
        let mut c = self.bound_claims();
        c["iat"] = serde_json::json!(now);
        c["nbf"] = serde_json::json!(now);
        c["exp"] = serde_json::json!(now + 300);
        self.token(&c)
    }
}
