//! Hostile input at the token endpoint: every case gets a 4xx with an RFC error code — never a
//! 500, never a hang — and the server keeps serving.

use crate::harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_inputs_get_4xx_never_5xx() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let epj = fx.client("epj");
    let sign = |header: serde_json::Value, claims_text: &str| {
        let input = format!(
            "{}.{}",
            segl_jose::b64_encode(header.to_string()),
            segl_jose::b64_encode(claims_text)
        );
        format!(
            "{input}.{}",
            segl_jose::b64_encode(epj.key.sign(input.as_bytes()).unwrap())
        )
    };
    let claims = fx.assertion_claims(&epj, json!({}));
    let mut deep = String::from("1");
    for _ in 0..200 {
        deep = format!("[{deep}]");
    }
    let cases: Vec<(&str, String)> = vec![
        (
            "duplicate JSON member",
            sign(
                json!({"alg": "ES256"}),
                &claims.to_string().replacen('{', "{\"iss\":\"x\",", 1),
            ),
        ),
        (
            "huge exp",
            sign(
                json!({"alg": "ES256"}),
                &claims
                    .to_string()
                    .replace(&format!("\"exp\":{}", claims["exp"]), "\"exp\":1e300"),
            ),
        ),
        // i64::MIN: the lifetime arithmetic once overflowed on it (a panic in debug builds).
        (
            "negative iat",
            sign(
                json!({"alg": "ES256"}),
                &claims.to_string().replace(
                    &format!("\"iat\":{}", claims["iat"]),
                    "\"iat\":-9223372036854775808",
                ),
            ),
        ),
        (
            "deep nesting",
            sign(json!({"alg": "ES256"}), &format!("{{\"x\":{deep}}}")),
        ),
        ("not JSON", sign(json!({"alg": "ES256"}), "not json")),
        ("JSON array", sign(json!({"alg": "ES256"}), "[1,2]")),
        ("oversize JWT", format!("{}.{}.x", "a".repeat(20_000), "b")),
        ("bad base64", "!!!.###.$$$".to_owned()),
        (
            "unknown alg",
            sign(json!({"alg": "XX999"}), &claims.to_string()),
        ),
        (
            "crit",
            sign(
                json!({"alg": "ES256", "crit": ["exp"]}),
                &claims.to_string(),
            ),
        ),
        (
            "alg not a string",
            sign(json!({"alg": 7}), &claims.to_string()),
        ),
        ("non-UTF-8 payload", {
            let input = format!(
                "{}.{}",
                segl_jose::b64_encode(json!({"alg": "ES256"}).to_string()),
                segl_jose::b64_encode([0xff, 0xfe, 0x7b])
            );
            format!(
                "{input}.{}",
                segl_jose::b64_encode(epj.key.sign(input.as_bytes()).unwrap())
            )
        }),
    ];
    for (what, assertion) in cases {
        let mut form = fx.cc_form(&epj, None);
        form[3].1 = assertion;
        let r = server.token(&form).await;
        assert!(
            (400..500).contains(&r.status),
            "{what}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.error().is_empty(), "{what}: an RFC error code");
    }
    // Form-level abuse.
    let many: String = (0..100)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    for (what, body) in [
        ("too many parameters", many.into_bytes()),
        ("bad percent escape", b"grant_type=%zz".to_vec()),
        ("non-UTF-8 form", b"grant_type=\xff\xfe".to_vec()),
        ("empty body", Vec::new()),
    ] {
        let r = server
            .post_raw("/connect/token", "application/x-www-form-urlencoded", body)
            .await;
        assert!(
            (400..500).contains(&r.status),
            "{what}: {} {}",
            r.status,
            r.body
        );
    }
    // Headers: a huge DPoP header, two Authorization headers.
    let huge = "x".repeat(30_000);
    let r = server
        .token_with(&fx.cc_form(&epj, None), &[("dpop", &huge)])
        .await;
    assert!((400..500).contains(&r.status), "huge DPoP: {}", r.status);
    // Still serving.
    assert_eq!(server.token(&fx.cc_form(&epj, None)).await.status, 200);
}
