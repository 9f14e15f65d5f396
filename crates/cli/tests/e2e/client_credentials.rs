//! `client_credentials` with private_key_jwt: the issued token claim by claim, and every
//! rejection the foundation issue lists, each next to its near-miss twin that passes.

use crate::both;
use crate::harness::*;
use segl_jose::{Jwks, sign_jwt};
use serde_json::{Value, json};

async fn verify_with_jwks(server: &Server, token: &str) -> serde_json::Map<String, Value> {
    let jwks = server
        .get("/.well-known/openid-configuration/jwks")
        .await
        .body;
    let jwks = Jwks::from_json(jwks.to_string().as_bytes()).unwrap();
    let expect = segl_verify::Expectations {
        issuer: &server.issuer,
        now: now(),
        skew: 0,
    };
    segl_verify::verify_access_token(token, &jwks, &expect).unwrap()
}

both!(
    issues_a_verifiable_token_with_every_claim,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let epj = fx.client("epj");
        let before = now();
        let r = server.token(&fx.cc_form(&epj, Some("nhn:sfm/api"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.headers["cache-control"], "no-store");
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["expires_in"], 600);
        assert_eq!(r.body["scope"], "nhn:sfm/api");
        let token = r.body["access_token"].as_str().unwrap();
        let header = segl_jose::UnverifiedJws::parse(token)
            .unwrap()
            .unverified_header()
            .clone();
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["alg"], "RS256");
        let c = verify_with_jwks(&server, token).await;
        assert_eq!(c["iss"], fx.issuer.as_str());
        assert_eq!(c["aud"], "nhn:sfm");
        assert_eq!(c["sub"], "epj");
        assert_eq!(c["client_id"], "epj");
        assert_eq!(c["scope"], json!(["nhn:sfm/api"]));
        let iat = c["iat"].as_i64().unwrap();
        assert!(iat >= before && iat <= now());
        assert_eq!(c["nbf"].as_i64(), Some(iat));
        assert_eq!(c["exp"].as_i64(), Some(iat + 600));
        let jti = c["jti"].as_str().unwrap();
        assert!(
            jti.len() == 32
                && jti
                    .chars()
                    .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_lowercase()),
            "{jti}"
        );
        assert_eq!(c["client_amr"], "private_key_jwt");
        assert_eq!(
            c["helseid://claims/client/client_name"],
            "Acme EPJ at Granfjelldal"
        );
        assert_eq!(
            c["helseid://claims/client/claims/orgnr_parent"],
            "999977774"
        );
        assert_eq!(c["helseid://claims/client/client_tenancy"], "single-tenant");
        assert!(c.get("cnf").is_none());

        // Without scope: the client's scopes of its one API.
        let r = server.token(&fx.cc_form(&epj, None)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let c = verify_with_jwks(&server, r.body["access_token"].as_str().unwrap()).await;
        assert_eq!(c["scope"], json!(["nhn:sfm/admin", "nhn:sfm/api"]));

        // An RS256 client, and the multi-tenant client's tenancy claims.
        let r = server
            .token(&fx.cc_form(&fx.client("rsa-client"), Some("nhn:reseptformidleren/rf")))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = server
            .token(&fx.cc_form(&fx.client("multi-api"), Some("nhn:other/read")))
            .await;
        let c = verify_with_jwks(&server, r.body["access_token"].as_str().unwrap()).await;
        assert_eq!(c["aud"], "nhn:other");
        assert_eq!(c["helseid://claims/client/client_tenancy"], "multi-tenant");
        assert_eq!(
            c["helseid://claims/client/claims/orgnr_supplier"],
            "313745392"
        );
    }
);

/// Sends a client_credentials request whose assertion is `assertion`.
async fn with_assertion(server: &Server, client_id: &str, assertion: String) -> Response {
    server
        .token(&[
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), client_id.into()),
            ("client_assertion_type".into(), ASSERTION_TYPE.into()),
            ("client_assertion".into(), assertion),
        ])
        .await
}

both!(assertion_claims_are_checked, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let epj = fx.client("epj");
    let t = now();
    let token_endpoint = format!("{}/connect/token", fx.issuer);
    let cases: Vec<(&str, Value, Value)> = vec![
        // (what, the rejected patch, its near-miss twin that passes)
        (
            "wrong aud",
            json!({"aud": "https://other.example"}),
            json!({"aud": token_endpoint}),
        ),
        (
            "aud array with a foreign value",
            json!({"aud": [fx.issuer, "https://other"]}),
            json!({"aud": [fx.issuer]}),
        ),
        (
            "expired",
            json!({"iat": t - 80, "nbf": t - 80, "exp": t - 20}),
            json!({"iat": t - 55, "nbf": t - 55, "exp": t - 2}),
        ),
        (
            "iat in the future",
            json!({"iat": t + 30, "nbf": t, "exp": t + 40}),
            json!({"iat": t + 5, "exp": t + 40}),
        ),
        (
            "exp too far ahead",
            json!({"iat": t, "exp": t + 120}),
            json!({"iat": t, "exp": t + 60}),
        ),
        (
            "iss differs from sub",
            json!({"sub": "rsa-client"}),
            json!({"sub": "epj"}),
        ),
        ("no jti", json!({"jti": null}), json!({"jti": "x"})),
        ("no exp", json!({"exp": null}), json!({"exp": t + 20})),
        (
            "iat not a number",
            json!({"iat": "yesterday"}),
            json!({"iat": t.to_string()}),
        ),
    ];
    for (what, bad, good) in cases {
        let r = with_assertion(&server, "epj", fx.assertion(&epj, bad)).await;
        let d = r.expect_error(401, "invalid_client");
        assert!(!d.is_empty(), "{what}");
        let r = with_assertion(&server, "epj", fx.assertion(&epj, good)).await;
        assert_eq!(r.status, 200, "near miss of {what}: {}", r.body);
    }
});

both!(
    replayed_jti_is_refused_also_after_restart_and_on_another_process,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let epj = fx.client("epj");
        let assertion = fx.assertion(&epj, json!({"jti": "once-only"}));
        let mut server = fx.start().await;
        assert_eq!(
            with_assertion(&server, "epj", assertion.clone())
                .await
                .status,
            200
        );
        let d = with_assertion(&server, "epj", assertion.clone())
            .await
            .expect_error(401, "invalid_client");
        assert!(d.contains("used before"), "{d}");

        // A second process on the same store refuses it too.
        let other = fx.start_on(free_port(), &[]).await;
        with_assertion(&other, "epj", assertion.clone())
            .await
            .expect_error(401, "invalid_client");
        // The same jti from another client is a different record.
        let rsa = fx.client("rsa-client");
        let r = with_assertion(
            &other,
            "rsa-client",
            fx.assertion(&rsa, json!({"jti": "once-only"})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        drop(other);

        // After a crash and restart the record is still there.
        server.kill();
        let server = fx.start().await;
        with_assertion(&server, "epj", assertion)
            .await
            .expect_error(401, "invalid_client");
    }
);

both!(
    signature_and_key_attacks_are_refused,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let epj = fx.client("epj");
        let rsa = fx.client("rsa-client");
        let claims = fx.assertion_claims(&epj, json!({}));

        // alg none, with and without a signature.
        let none = custom_jws(&json!({"alg": "none", "typ": "JWT"}), &claims, |_| vec![]);
        with_assertion(&server, "epj", none)
            .await
            .expect_error(401, "invalid_client");

        // HS256 keyed with the client's public key (the classic key-confusion attack).
        let rsa_claims = fx.assertion_claims(&rsa, json!({}));
        let public = serde_json::to_vec(rsa.key.public_jwk()).unwrap();
        let hs = custom_jws(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &rsa_claims,
            |input| {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public);
                aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec()
            },
        );
        with_assertion(&server, "rsa-client", hs)
            .await
            .expect_error(401, "invalid_client");

        // Signed by a key the client never registered, announced in a jwk header.
        let attacker = segl_jose::SigningKey::generate(segl_jose::Alg::ES256).unwrap();
        let jwk_header = custom_jws(
            &json!({"alg": "ES256", "jwk": attacker.public_jwk()}),
            &claims,
            |i| attacker.sign(i).unwrap(),
        );
        let d = with_assertion(&server, "epj", jwk_header)
            .await
            .expect_error(401, "invalid_client");
        assert!(d.contains("jwk"), "{d}");
        let plain = sign_jwt(&attacker, "JWT", &claims).unwrap();
        with_assertion(&server, "epj", plain)
            .await
            .expect_error(401, "invalid_client");

        // Unknown kid; its twin with the registered kid passes.
        let unknown_kid = custom_jws(
            &json!({"alg": "ES256", "kid": "not-registered"}),
            &claims,
            |i| epj.key.sign(i).unwrap(),
        );
        let d = with_assertion(&server, "epj", unknown_kid)
            .await
            .expect_error(401, "invalid_client");
        assert!(d.contains("not-registered"), "{d}");
        let fresh = fx.assertion_claims(&epj, json!({}));
        let known_kid = custom_jws(
            &json!({"alg": "ES256", "kid": epj.key.kid()}),
            &fresh,
            |i| epj.key.sign(i).unwrap(),
        );
        assert_eq!(with_assertion(&server, "epj", known_kid).await.status, 200);

        // A DPoP proof or an access token is not a client assertion (explicit typing).
        let typed = sign_jwt(&epj.key, "dpop+jwt", &fx.assertion_claims(&epj, json!({}))).unwrap();
        with_assertion(&server, "epj", typed)
            .await
            .expect_error(401, "invalid_client");

        // Tampered payload.
        let good = fx.assertion(&epj, json!({}));
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = segl_jose::b64_encode(
            fx.assertion_claims(&epj, json!({"exp": now() + 50}))
                .to_string(),
        );
        with_assertion(&server, "epj", parts.join("."))
            .await
            .expect_error(401, "invalid_client");
    }
);

both!(request_level_rejections, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let epj = fx.client("epj");

    // Unknown client.
    let ghost = TestClient {
        id: "ghost".into(),
        key: segl_jose::SigningKey::generate(segl_jose::Alg::ES256).unwrap(),
    };
    let d = server
        .token(&fx.cc_form(&ghost, None))
        .await
        .expect_error(401, "invalid_client");
    assert!(d.contains("unknown client"), "{d}");

    // client_id parameter naming another client.
    let mut form = fx.cc_form(&epj, None);
    form[1].1 = "rsa-client".into();
    server
        .token(&form)
        .await
        .expect_error(401, "invalid_client");

    // Wrong client_assertion_type; no assertion; a client_secret.
    let mut form = fx.cc_form(&epj, None);
    form[2].1 = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer".into();
    server
        .token(&form)
        .await
        .expect_error(401, "invalid_client");
    let form: Vec<(String, String)> = vec![
        ("grant_type".into(), "client_credentials".into()),
        ("client_id".into(), "epj".into()),
    ];
    server
        .token(&form)
        .await
        .expect_error(401, "invalid_client");
    let mut form = fx.cc_form(&epj, None);
    form.push(("client_secret".into(), "s3cret".into()));
    server
        .token(&form)
        .await
        .expect_error(401, "invalid_client");

    // Scopes: not allowed, identity scope in client_credentials, spanning two APIs.
    let d = server
        .token(&fx.cc_form(&epj, Some("nhn:reseptformidleren/rf")))
        .await
        .expect_error(400, "invalid_scope");
    assert!(d.contains("nhn:reseptformidleren/rf"), "{d}");
    server
        .token(&fx.cc_form(&fx.client("no-cc"), Some("nhn:sfm/api")))
        .await
        .expect_error(400, "unauthorized_client");
    let multi = fx.client("multi-api");
    server
        .token(&fx.cc_form(&multi, None))
        .await
        .expect_error(400, "invalid_scope");
    server
        .token(&fx.cc_form(&multi, Some("nhn:sfm/api nhn:other/read")))
        .await
        .expect_error(400, "invalid_scope");

    // resource picks the API (and narrows the scope); unknown or foreign resource is invalid_target.
    let mut form = fx.cc_form(&multi, None);
    form.push(("resource".into(), "nhn:other".into()));
    let r = server.token(&form).await;
    assert_eq!(
        (r.status, r.body["scope"].as_str()),
        (200, Some("nhn:other/read")),
        "{}",
        r.body
    );
    let mut form = fx.cc_form(&multi, Some("nhn:sfm/api nhn:other/read"));
    form.push(("resource".into(), "nhn:sfm".into()));
    assert_eq!(server.token(&form).await.body["scope"], "nhn:sfm/api");
    let mut form = fx.cc_form(&multi, None);
    form.push(("resource".into(), "nhn:nope".into()));
    server
        .token(&form)
        .await
        .expect_error(400, "invalid_target");
    let mut form = fx.cc_form(&epj, None);
    form.push(("resource".into(), "nhn:reseptformidleren".into()));
    server
        .token(&form)
        .await
        .expect_error(400, "invalid_target");
    let mut form = fx.cc_form(&multi, None);
    form.push(("resource".into(), "nhn:sfm".into()));
    form.push(("resource".into(), "nhn:other".into()));
    server
        .token(&form)
        .await
        .expect_error(400, "invalid_target");

    // Grant types.
    let mut form = fx.cc_form(&epj, None);
    form[0].1 = "password".into();
    server
        .token(&form)
        .await
        .expect_error(400, "unsupported_grant_type");
    let mut form = fx.cc_form(&epj, None);
    form.remove(0);
    server
        .token(&form)
        .await
        .expect_error(400, "invalid_request");

    // Duplicate parameters.
    let mut form = fx.cc_form(&epj, Some("nhn:sfm/api"));
    form.push(("scope".into(), "nhn:sfm/admin".into()));
    let d = server
        .token(&form)
        .await
        .expect_error(400, "invalid_request");
    assert!(d.contains("scope"), "{d}");

    // Body and content type.
    let big = format!(
        "grant_type=client_credentials&pad={}",
        "a".repeat(70 * 1024)
    );
    let r = server
        .post_raw(
            "/connect/token",
            "application/x-www-form-urlencoded",
            big.into_bytes(),
        )
        .await;
    r.expect_error(413, "invalid_request");
    let r = server
        .post_raw("/connect/token", "application/json", b"{}".to_vec())
        .await;
    r.expect_error(400, "invalid_request");
    let r = server
        .post_raw(
            "/connect/token",
            "application/x-www-form-urlencoded",
            b"grant_type=%ff".to_vec(),
        )
        .await;
    r.expect_error(400, "invalid_request");
    // The near miss: the same client, a valid request, still works.
    assert_eq!(
        server
            .token(&fx.cc_form(&epj, Some("nhn:sfm/api")))
            .await
            .status,
        200
    );
});

/// Profile fapi2: scope as a string (RFC 9068), the assertion audience exactly the issuer,
/// PS256/ES256/EdDSA only, no numeric-string times (SECURITY.md D1, D2, D7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi2_profile_is_strict() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let fapi2 = [
        ("SEGL_PROFILE", "fapi2"),
        ("SEGL_TOKENS_SIGNING_ALG", "PS256"),
    ];
    // A registered key that declares RS256 fits no fapi2 algorithm: start-up refuses it.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(fx.config_path())
        .envs(fapi2)
        .env_remove("SEGL_KEY_ENCRYPTION_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rsa-client"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Registered without `alg`, the same RSA keys serve PS256.
    for id in ["rsa-client", "rf-actor"] {
        let mut public = fx.client(id).key.public_jwk().clone();
        public.alg = None;
        std::fs::write(
            fx.dir.path().join(format!("{id}.jwks.json")),
            json!({"keys": [public]}).to_string(),
        )
        .unwrap();
    }
    let server = fx.start_on(fx.port, &fapi2).await;
    let epj = fx.client("epj");
    let r = server.token(&fx.cc_form(&epj, Some("nhn:sfm/api"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let claims = segl_jose::UnverifiedJws::parse(r.body["access_token"].as_str().unwrap())
        .unwrap()
        .unverified_claims()
        .clone();
    assert_eq!(claims["scope"], "nhn:sfm/api");
    let token_endpoint = format!("{}/connect/token", fx.issuer);
    for bad in [
        json!({"aud": token_endpoint}),
        json!({"aud": format!("{}/", fx.issuer)}),
        json!({"iat": now().to_string()}),
    ] {
        with_assertion(&server, "epj", fx.assertion(&epj, bad.clone()))
            .await
            .expect_error(401, "invalid_client");
    }
    // RS256 is not accepted for assertions in fapi2; the same RSA key signing PS256 is.
    let rsa = fx.client("rsa-client");
    with_assertion(&server, "rsa-client", fx.assertion(&rsa, json!({})))
        .await
        .expect_error(401, "invalid_client");
    let ps = TestClient {
        id: "rsa-client".into(),
        key: segl_jose::SigningKey::from_pkcs8(segl_jose::Alg::PS256, &rsa.key.to_pkcs8().unwrap())
            .unwrap(),
    };
    let r = with_assertion(&server, "rsa-client", fx.assertion(&ps, json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = server.get("/.well-known/openid-configuration").await.body;
    assert_eq!(
        d["token_endpoint_auth_signing_alg_values_supported"],
        json!(["PS256", "ES256", "EdDSA"])
    );
}
