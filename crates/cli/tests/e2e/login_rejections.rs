//! Every rejection of the login flow, next to its near-miss twin where there is one: PAR
//! parameters, the authorization endpoint's error pages (never a redirect before the redirect
//! URI is trusted), PKCE, redirect URI variants, DPoP binding, CSRF, request objects.

use crate::both;
use crate::harness::*;
use crate::login::{Browser, Flow, REDIRECT, location, query_of};
use segl_jose::{Alg, SigningKey, sign_jwt};
use serde_json::json;

both!(par_rejections, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    // Redirect URI variants: only the exact registered string passes (loopback port may vary).
    for bad in [
        "http://127.0.0.1:9000/callback/",
        "http://127.0.0.1:9000/callback?x=1",
        "https://127.0.0.1:9000/callback",
        "http://localhost:9000/callback",
        "https://ehr.example/cb/",
        "http://ehr.example/cb",
        "https://ehr.example:444/cb",
    ] {
        flow.par(&[("redirect_uri", bad)])
            .await
            .expect_error(400, "invalid_request");
    }
    for good in [
        REDIRECT,
        "http://127.0.0.1:51234/callback",
        "https://ehr.example/cb",
    ] {
        assert_eq!(
            flow.par(&[("redirect_uri", good)]).await.status,
            201,
            "{good}"
        );
    }
    // PKCE: missing, plain, malformed.
    flow.par(&[("code_challenge", "")])
        .await
        .expect_error(400, "invalid_request");
    flow.par(&[("code_challenge_method", "plain")])
        .await
        .expect_error(400, "invalid_request");
    flow.par(&[("code_challenge_method", "")])
        .await
        .expect_error(400, "invalid_request");
    flow.par(&[("code_challenge", "short")])
        .await
        .expect_error(400, "invalid_request");
    // response_type, scope, request_uri inside PAR, prompt combinations, resource.
    flow.par(&[("response_type", "token")])
        .await
        .expect_error(400, "unsupported_response_type");
    flow.par(&[("scope", "openid nhn:other/read")])
        .await
        .expect_error(400, "invalid_scope");
    flow.par(&[("request_uri", "urn:ietf:params:oauth:request_uri:x")])
        .await
        .expect_error(400, "invalid_request");
    flow.par(&[("prompt", "none login")])
        .await
        .expect_error(400, "invalid_request");
    flow.par(&[("resource", "nhn:nope")])
        .await
        .expect_error(400, "invalid_target");
    assert_eq!(
        flow.par(&[("resource", "nhn:reseptformidleren")])
            .await
            .status,
        201
    );
    flow.par(&[("max_age", "-1")])
        .await
        .expect_error(400, "invalid_request");
    flow.par(&[("nonce", &"n".repeat(300))])
        .await
        .expect_error(400, "invalid_request");
    // A client without the authorization_code grant.
    let mut other = Flow::new(&fx, &server);
    other.client = fx.client("epj");
    other
        .par(&[])
        .await
        .expect_error(400, "unauthorized_client");
    // PAR with dpop_jkt differing from the proof's key.
    flow.par(&[("dpop_jkt", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")])
        .await
        .expect_error(400, "invalid_dpop_proof");
});

both!(request_objects, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let ehr = fx.client("ehr");
    let t = now();
    let object = |patch: serde_json::Value, key: &SigningKey| {
        let mut claims = json!({"iss": "ehr", "aud": fx.issuer, "exp": t + 30, "nbf": t, "jti": new_jti(), "client_id": "ehr", "state": "from-object", "ui_locales": "en"});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        sign_jwt(key, "oauth-authz-req+jwt", &claims).unwrap()
    };
    // Values in the object win: its state comes back on the redirect.
    let good = object(json!({}), &ehr.key);
    let r = flow.par(&[("request", &good)]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut browser = Browser::new();
    let (_, h, _) = browser
        .get(&flow.authorize_url(r.body["request_uri"].as_str().unwrap()))
        .await;
    let (_, _, html) = browser.get(&location(&h)).await;
    assert!(
        html.contains("lang=\"en\"") && html.contains("National identity number"),
        "ui_locales=en from the object"
    );
    // Replay of the same object.
    flow.par(&[("request", &good)])
        .await
        .expect_error(400, "invalid_request_object");
    let stranger = SigningKey::generate(Alg::ES256).unwrap();
    for (what, bad) in [
        ("foreign key", object(json!({}), &stranger)),
        ("iss", object(json!({"iss": "someone"}), &ehr.key)),
        ("aud", object(json!({"aud": "https://other"}), &ehr.key)),
        (
            "expired",
            object(json!({"exp": t - 20, "nbf": t - 50}), &ehr.key),
        ),
        ("too long", object(json!({"exp": t + 300}), &ehr.key)),
        ("no jti", object(json!({"jti": null}), &ehr.key)),
    ] {
        let r = flow.par(&[("request", &bad)]).await;
        assert_eq!(r.error(), "invalid_request_object", "{what}: {}", r.body);
    }
});

both!(
    authorize_errors_are_pages_not_redirects,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let mut flow = Flow::new(&fx, &server);
        let mut browser = Browser::new();
        let base = format!("{}/connect/authorize", server.base);
        // A request without PAR, with extra parameters, with an unknown client.
        let direct = format!(
            "{base}?client_id=ehr&response_type=code&redirect_uri={}&scope=openid",
            urlencode(REDIRECT)
        );
        for url in [
            direct,
            format!("{base}?client_id=ehr"),
            format!("{base}?client_id=ghost&request_uri=urn:ietf:params:oauth:request_uri:x"),
        ] {
            let (status, h, html) = browser.get(&url).await;
            assert_eq!(status, 400, "{url}");
            assert!(h.get("location").is_none(), "never a redirect: {url}");
            assert!(h["x-frame-options"] == "DENY" && html.contains("<h1>"));
        }
        // Reused, foreign and unknown request_uri.
        let r = flow.par(&[]).await;
        let uri = r.body["request_uri"].as_str().unwrap().to_owned();
        let foreign = format!(
            "{base}?client_id=dpop-client&request_uri={}",
            urlencode(&uri)
        );
        let (status, h, _) = browser.get(&foreign).await;
        assert!(status == 400 && h.get("location").is_none());
        let r = flow.par(&[]).await;
        let uri = r.body["request_uri"].as_str().unwrap().to_owned();
        let (status, _, _) = browser.get(&flow.authorize_url(&uri)).await;
        assert_eq!(status, 303);
        let (status, h, html) = browser.get(&flow.authorize_url(&uri)).await;
        assert!(
            status == 400 && h.get("location").is_none() && html.contains("already been used"),
            "{html}"
        );
        // Expired request_uri (PAR lifetime 1 s in this fixture variant).
        let fx2 = Fixture::new(Backend::Sqlite, "[tokens]\npar_lifetime = 1\n").await;
        let server2 = fx2.start().await;
        let mut flow2 = Flow::new(&fx2, &server2);
        let r = flow2.par(&[]).await;
        assert_eq!(r.body["expires_in"], 1);
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let (status, h, _) = browser
            .get(&flow2.authorize_url(r.body["request_uri"].as_str().unwrap()))
            .await;
        assert!(status == 400 && h.get("location").is_none());
        // prompt=none without a session: a redirect with login_required, state and iss.
        let r = flow.par(&[("prompt", "none")]).await;
        let (status, h, _) = browser
            .get(&flow.authorize_url(r.body["request_uri"].as_str().unwrap()))
            .await;
        assert_eq!(status, 303);
        let q = query_of(&location(&h));
        assert_eq!(
            (q["error"].as_str(), q["state"].as_str(), q["iss"].as_str()),
            ("login_required", "st-123", fx.issuer.as_str())
        );
        // An idp the server does not have: access_denied back to the client.
        let r = flow.par(&[("acr_values", "idp:nowhere-oidc")]).await;
        let (_, h, _) = browser
            .get(&flow.authorize_url(r.body["request_uri"].as_str().unwrap()))
            .await;
        assert_eq!(query_of(&location(&h))["error"], "access_denied");
    }
);

both!(test_idp_form_checks, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let mut browser = Browser::new();
    let r = flow.par(&[]).await;
    let (_, h, _) = browser
        .get(&flow.authorize_url(r.body["request_uri"].as_str().unwrap()))
        .await;
    let page = location(&h);
    let (_, _, html) = browser.get(&page).await;
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).unwrap() + marker.len();
        html[start..].split('"').next().unwrap().to_owned()
    };
    let (tx, csrf) = (field("tx"), field("csrf"));
    let post = format!("{}/testidp/login", server.base);
    // CSRF token missing or wrong; the transaction cookie missing.
    let (status, _, _) = browser
        .post_form(&post, &[("tx", &tx), ("pid", "06828399789")])
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = browser
        .post_form(
            &post,
            &[("tx", &tx), ("csrf", "forged"), ("pid", "06828399789")],
        )
        .await;
    assert_eq!(status, 400);
    let mut other_browser = Browser::new();
    let (status, _, _) = other_browser
        .post_form(
            &post,
            &[("tx", &tx), ("csrf", &csrf), ("pid", "06828399789")],
        )
        .await;
    assert_eq!(status, 400);
    // A malformed pid re-renders the form with an error; a well-formed unregistered one logs in.
    let (status, _, html) = browser
        .post_form(
            &post,
            &[("tx", &tx), ("csrf", &csrf), ("pid", "12345678901")],
        )
        .await;
    assert!(status == 400 && html.contains("role=\"alert\""), "{html}");
    let (status, h, _) = browser
        .post_form(
            &post,
            &[("tx", &tx), ("csrf", &csrf), ("pid", "13097248022")],
        )
        .await;
    assert_eq!(status, 303);
    assert!(location(&h).starts_with(REDIRECT));
    let cookies: Vec<String> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("segl_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    // The transaction is finished: a double submit is refused.
    let (status, _, _) = browser
        .post_form(
            &post,
            &[("tx", &tx), ("csrf", &csrf), ("pid", "13097248022")],
        )
        .await;
    assert_eq!(status, 400);
    let code = query_of(&location(&h))["code"].clone();
    let r = flow.exchange(&code).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = segl_jose::UnverifiedJws::parse(r.body["access_token"].as_str().unwrap())
        .unwrap()
        .unverified_claims()
        .clone();
    assert_eq!(at["helseid://claims/identity/pid"], "13097248022");
    assert!(
        at.get("helseid://claims/hpr/hpr_number").is_none(),
        "no HPR number for an unregistered person"
    );
});

both!(code_exchange_rejections, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut browser = Browser::new();
    async fn code(flow: &mut Flow<'_>, browser: &mut Browser) -> String {
        let back = flow.login(browser, "06828399789", &[]).await;
        query_of(&back)["code"].clone()
    }
    let mut flow = Flow::new(&fx, &server);
    // Wrong and missing verifier, wrong redirect_uri: invalid_grant (the code is then spent).
    let c = code(&mut flow, &mut browser).await;
    let wrong = "x".repeat(43);
    flow.post(
        "/connect/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &wrong),
        ],
    )
    .await
    .expect_error(400, "invalid_grant");
    let c = code(&mut flow, &mut browser).await;
    flow.post(
        "/connect/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await
    .expect_error(400, "invalid_grant");
    let c = code(&mut flow, &mut browser).await;
    let v = flow.verifier.clone();
    flow.post(
        "/connect/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", "https://ehr.example/cb"),
            ("code_verifier", &v),
        ],
    )
    .await
    .expect_error(400, "invalid_grant");
    // A DPoP key other than the one bound at PAR.
    let c = code(&mut flow, &mut browser).await;
    flow.dpop = SigningKey::generate(Alg::ES256).unwrap();
    flow.exchange(&c)
        .await
        .expect_error(400, "invalid_dpop_proof");
    // Another client redeeming the code.
    let mut flow = Flow::new(&fx, &server);
    let c = code(&mut flow, &mut browser).await;
    let thief = fx.client("epj");
    let mut form = fx.cc_form(&thief, None);
    form[0].1 = "authorization_code".into();
    form.extend([
        ("code".into(), c.clone()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("code_verifier".into(), flow.verifier.clone()),
    ]);
    server.token(&form).await.expect_error(400, "invalid_grant");
    // Its near miss: the right client with everything right.
    let c = code(&mut flow, &mut browser).await;
    assert_eq!(flow.exchange(&c).await.status, 200);
});

/// An organization asked for in the PAR request object's authorization_details applies at the
/// code exchange when the exchange's assertion names none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_object_authorization_details_select_the_organization() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let t = now();
    let details = json!([{"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {
        "system": "urn:oid:2.16.578.1.12.4.1.4.101", "type": "ENH", "value": "999977776"}}}}]);
    let object = sign_jwt(
        &fx.client("ehr").key,
        "oauth-authz-req+jwt",
        &json!({"iss": "ehr", "aud": fx.issuer, "exp": t + 30, "nbf": t, "jti": new_jti(), "authorization_details": details}),
    )
    .unwrap();
    let mut browser = Browser::new();
    let back = flow
        .login(&mut browser, "06828399789", &[("request", &object)])
        .await;
    let r = flow.exchange(&query_of(&back)["code"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = segl_jose::UnverifiedJws::parse(r.body["access_token"].as_str().unwrap())
        .unwrap()
        .unverified_claims()
        .clone();
    assert_eq!(
        at["helseid://claims/client/claims/orgnr_child"],
        "999977776"
    );
}
