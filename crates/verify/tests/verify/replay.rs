//! The proof replay cache is bounded: full of live entries it fails closed (503), and it
//! recovers once entries expire — shown on the verifier's injected clock.

use crate::harness::*;
use segl_proto::ErrorCode;
use segl_verify::ErrorKind;

#[tokio::test]
async fn full_cache_fails_closed_and_recovers_after_expiry() {
    let f = Fixture::with(|c| c.with_replay_capacity(3));
    let mut c = f.bound_claims();
    c["exp"] = serde_json::json!(NOW + 3600);
    let t = f.token(&c);
    let first = f.proof(&t);
    assert!(f.dpop(&t, &first).await.is_ok());
    f.clock.advance(10);
    for _ in 0..2 {
        assert!(f.dpop(&t, &f.proof(&t)).await.is_ok());
    }
    // Full of live entries: refuse, do not forget.
    let e = f.dpop(&t, &f.proof(&t)).await.unwrap_err();
    assert_eq!(e.status(), 503);
    assert_eq!(e.error_code(), Some(ErrorCode::TemporarilyUnavailable));
    assert!(matches!(e.kind(), ErrorKind::Unavailable(_)));
    assert!(e.headers().iter().any(|(n, _)| *n == "retry-after"));
    assert!(challenges(&e).is_empty());
    // Bearer requests do not need the cache.
    let mut unbound = f.claims();
    unbound["exp"] = serde_json::json!(NOW + 3600);
    assert!(f.bearer(&f.token(&unbound)).await.is_ok());
    // The first proof is remembered until its iat + 60 s; a second later it is purged, its
    // slot is free, and it is refused by the iat check instead of by the cache.
    f.clock.set(NOW + 60);
    assert_eq!(f.dpop(&t, &f.proof(&t)).await.unwrap_err().status(), 503);
    assert!(invalid_proof(f.dpop(&t, &first).await).contains("used before"));
    f.clock.set(NOW + 61);
    assert!(f.dpop(&t, &f.proof(&t)).await.is_ok());
    assert!(invalid_proof(f.dpop(&t, &first).await).contains("iat"));
    // Once everything has expired there is room for three more.
    f.clock.advance(200);
    for _ in 0..3 {
        assert!(f.dpop(&t, &f.proof(&t)).await.is_ok());
    }
    assert_eq!(f.dpop(&t, &f.proof(&t)).await.unwrap_err().status(), 503);
}
