//! DPoP at the token endpoint (RFC 9449 §4.3, §5, §8): the nonce dance, binding, and each proof
//! check with the bad input next to its near-miss twin.

use crate::both;
use crate::harness::*;
use segl_jose::{Alg, SigningKey};
use serde_json::json;

fn token_url(fx: &Fixture) -> String {
    format!("{}/connect/token", fx.issuer)
}

/// Gets the current nonce by sending a proof without one.
async fn nonce(fx: &Fixture, server: &Server, key: &SigningKey) -> String {
    let client = fx.client("dpop-client");
    let proof = dpop_proof(key, &token_url(fx), None, json!({}), json!({}));
    let r = server
        .token_with(&fx.cc_form(&client, None), &[("dpop", &proof)])
        .await;
    r.expect_error(400, "use_dpop_nonce");
    r.headers["dpop-nonce"].to_str().unwrap().to_owned()
}

both!(nonce_dance_and_binding, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let client = fx.client("dpop-client");
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let url = token_url(&fx);

    // First try without a nonce: 400 use_dpop_nonce with a DPoP-Nonce header; nothing is
    // consumed, so the retry may reuse the same assertion.
    let form = fx.cc_form(&client, None);
    let proof = dpop_proof(&key, &url, None, json!({}), json!({}));
    let r = server.token_with(&form, &[("dpop", &proof)]).await;
    r.expect_error(400, "use_dpop_nonce");
    let nonce = r.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let proof = dpop_proof(&key, &url, Some(&nonce), json!({}), json!({}));
    let r = server.token_with(&form, &[("dpop", &proof)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "DPoP");
    assert!(
        r.headers.contains_key("dpop-nonce"),
        "a success carries the current nonce"
    );
    let token = r.body["access_token"].as_str().unwrap();
    let claims = segl_jose::UnverifiedJws::parse(token)
        .unwrap()
        .unverified_claims()
        .clone();
    assert_eq!(
        claims["cnf"]["jkt"],
        key.public_jwk().thumbprint().unwrap().as_str()
    );

    // A client registered for DPoP that sends no proof.
    let d = server
        .token(&fx.cc_form(&client, None))
        .await
        .expect_error(400, "invalid_dpop_proof");
    assert!(d.contains("DPoP"), "{d}");
    // A client not registered for DPoP gets a bound token when it sends a proof anyway.
    let proof = dpop_proof(&key, &url, Some(&nonce), json!({}), json!({}));
    let r = server
        .token_with(&fx.cc_form(&fx.client("epj"), None), &[("dpop", &proof)])
        .await;
    assert_eq!(
        (r.status, r.body["token_type"].as_str()),
        (200, Some("DPoP")),
        "{}",
        r.body
    );
    // ... and a Bearer token without one.
    assert_eq!(
        server
            .token(&fx.cc_form(&fx.client("epj"), None))
            .await
            .body["token_type"],
        "Bearer"
    );

    // The nonce of one process is accepted by another sharing the store; a proof replayed on
    // the other process is refused.
    let other = fx.start_on(free_port(), &[]).await;
    let proof = dpop_proof(&key, &url, Some(&nonce), json!({}), json!({}));
    let r = other
        .token_with(&fx.cc_form(&client, None), &[("dpop", &proof)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server
        .token_with(&fx.cc_form(&client, None), &[("dpop", &proof)])
        .await;
    let d = r.expect_error(400, "invalid_dpop_proof");
    assert!(d.contains("used before"), "{d}");
});

both!(
    every_proof_check_rejects_exactly_its_input,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let client = fx.client("dpop-client");
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let url = token_url(&fx);
        let n = nonce(&fx, &server, &key).await;
        let t = now();
        let mut private = key.to_private_jwk().unwrap();
        private.kid = None;
        let other = SigningKey::generate(Alg::ES256).unwrap();
        let port = fx.port;

        // (what, bad proof, expected error, near-miss proof that passes)
        let proof = |claims: serde_json::Value, header: serde_json::Value| {
            dpop_proof(&key, &url, Some(&n), claims, header)
        };
        let cases: Vec<(&str, String, &str, String)> = vec![
            (
                "typ",
                proof(json!({}), json!({"typ": "JWT"})),
                "invalid_dpop_proof",
                proof(json!({}), json!({"typ": "dpop+jwt"})),
            ),
            (
                "no jwk",
                proof(json!({}), json!({"jwk": null})),
                "invalid_dpop_proof",
                proof(json!({}), json!({})),
            ),
            (
                "private jwk",
                proof(json!({}), json!({"jwk": private})),
                "invalid_dpop_proof",
                proof(json!({}), json!({})),
            ),
            (
                "foreign signature",
                dpop_proof(
                    &other,
                    &url,
                    Some(&n),
                    json!({}),
                    json!({"jwk": key.public_jwk().to_public_without_meta()}),
                ),
                "invalid_dpop_proof",
                proof(json!({}), json!({})),
            ),
            (
                "alg none",
                custom_jws(
                    &json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk().to_public_without_meta()}),
                    &json!({"jti": new_jti(), "htm": "POST", "htu": url, "iat": t, "nonce": n}),
                    |_| vec![],
                ),
                "invalid_dpop_proof",
                proof(json!({}), json!({})),
            ),
            (
                "htm",
                proof(json!({"htm": "GET"}), json!({})),
                "invalid_dpop_proof",
                proof(json!({"htm": "POST"}), json!({})),
            ),
            (
                "htu path",
                proof(json!({"htu": format!("{url}/x")}), json!({})),
                "invalid_dpop_proof",
                proof(json!({"htu": format!("{url}?query=1#frag")}), json!({})),
            ),
            (
                "htu host",
                proof(
                    json!({"htu": format!("http://localhost:{port}/connect/token")}),
                    json!({}),
                ),
                "invalid_dpop_proof",
                proof(
                    json!({"htu": format!("HTTP://127.0.0.1:{port}/connect/token")}),
                    json!({}),
                ),
            ),
            (
                "iat old",
                proof(json!({"iat": t - 75}), json!({})),
                "invalid_dpop_proof",
                proof(json!({"iat": t - 50}), json!({})),
            ),
            (
                "iat future",
                proof(json!({"iat": t + 75}), json!({})),
                "invalid_dpop_proof",
                proof(json!({"iat": t + 50}), json!({})),
            ),
            (
                "no jti",
                proof(json!({"jti": null}), json!({})),
                "invalid_dpop_proof",
                proof(json!({}), json!({})),
            ),
            (
                "bad nonce",
                proof(
                    json!({"nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
                    json!({}),
                ),
                "use_dpop_nonce",
                proof(json!({}), json!({})),
            ),
            (
                "no nonce",
                proof(json!({"nonce": null}), json!({})),
                "use_dpop_nonce",
                proof(json!({}), json!({})),
            ),
        ];
        for (what, bad, error, good) in cases {
            let r = server
                .token_with(&fx.cc_form(&client, None), &[("dpop", &bad)])
                .await;
            r.expect_error(400, error);
            let r = server
                .token_with(&fx.cc_form(&client, None), &[("dpop", &good)])
                .await;
            assert_eq!(r.status, 200, "near miss of {what}: {}", r.body);
        }

        // The typ as .NET escapes it is the same typ.
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk().to_public_without_meta()});
        let claims = json!({"jti": new_jti(), "htm": "POST", "htu": url, "iat": now(), "nonce": n});
        let input = format!(
            "{}.{}",
            segl_jose::b64_encode(header.to_string().replace("dpop+jwt", "dpop\\u002Bjwt")),
            segl_jose::b64_encode(claims.to_string())
        );
        let escaped = format!(
            "{input}.{}",
            segl_jose::b64_encode(key.sign(input.as_bytes()).unwrap())
        );
        let r = server
            .token_with(&fx.cc_form(&client, None), &[("dpop", &escaped)])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);

        // Exactly one DPoP header.
        let a = proof(json!({}), json!({}));
        let b = proof(json!({}), json!({}));
        let r = server
            .token_with(&fx.cc_form(&client, None), &[("dpop", &a), ("dpop", &b)])
            .await;
        r.expect_error(400, "invalid_dpop_proof");
        // A replayed proof (with a fresh assertion).
        let r = server
            .token_with(&fx.cc_form(&client, None), &[("dpop", &a)])
            .await;
        assert_eq!(r.status, 200);
        server
            .token_with(&fx.cc_form(&client, None), &[("dpop", &a)])
            .await
            .expect_error(400, "invalid_dpop_proof");
        // Every algorithm of the profile works for proofs.
        for alg in [Alg::RS256, Alg::PS256, Alg::ES384, Alg::EdDSA] {
            let k = SigningKey::generate(alg).unwrap();
            let p = dpop_proof(&k, &url, Some(&n), json!({}), json!({}));
            let r = server
                .token_with(&fx.cc_form(&client, None), &[("dpop", &p)])
                .await;
            assert_eq!(r.status, 200, "{alg}: {}", r.body);
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_off_and_optional() {
    for (mode, without_nonce) in [("off", 200), ("optional", 200), ("required", 400)] {
        let fx = Fixture::new(Backend::Sqlite, &format!("[dpop]\nnonce = \"{mode}\"\n")).await;
        let server = fx.start().await;
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let proof = dpop_proof(&key, &token_url(&fx), None, json!({}), json!({}));
        let r = server
            .token_with(
                &fx.cc_form(&fx.client("dpop-client"), None),
                &[("dpop", &proof)],
            )
            .await;
        assert_eq!(r.status, without_nonce, "{mode}: {}", r.body);
        assert_eq!(
            r.headers.contains_key("dpop-nonce"),
            mode != "off",
            "{mode}"
        );
        if mode == "optional" {
            let bad = dpop_proof(&key, &token_url(&fx), Some("stale"), json!({}), json!({}));
            let r = server
                .token_with(
                    &fx.cc_form(&fx.client("dpop-client"), None),
                    &[("dpop", &bad)],
                )
                .await;
            r.expect_error(400, "use_dpop_nonce");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segl_token_get_does_the_nonce_dance() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let client = fx.client("dpop-client");
    let key_path = fx.dir.path().join("dpop-client.private.jwk.json");
    std::fs::write(
        &key_path,
        serde_json::to_vec(&client.key.to_private_jwk().unwrap()).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "token",
            "get",
            "--dpop",
            "--issuer",
            &server.issuer,
            "--client-id",
            "dpop-client",
            "--key",
        ])
        .arg(&key_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["token_type"], "DPoP");
    let jkt = String::from_utf8_lossy(&out.stderr)
        .split("cnf.jkt): ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let claims = segl_jose::UnverifiedJws::parse(response["access_token"].as_str().unwrap())
        .unwrap()
        .unverified_claims()
        .clone();
    assert_eq!(claims["cnf"]["jkt"], jkt.as_str());
}
