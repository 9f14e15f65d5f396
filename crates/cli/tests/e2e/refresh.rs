//! Refresh tokens (rotation, grace retry, reuse detection, DPoP binding, narrowing, resource
//! switching, restart), revocation, introspection, and organizations (multi-tenancy with
//! delegations, child organizations, organization switch on refresh, SFM journal id).

use crate::both;
use crate::harness::*;
use crate::login::{Browser, Flow, SCOPES, query_of};
use segl_jose::{Alg, SigningKey};
use serde_json::{Value, json};

fn claims_of(jwt: &str) -> serde_json::Map<String, Value> {
    segl_jose::UnverifiedJws::parse(jwt)
        .unwrap()
        .unverified_claims()
        .clone()
}

/// Logs in with offline_access and two resources; returns the token response.
async fn login_offline(flow: &mut Flow<'_>) -> Response {
    let mut browser = Browser::new();
    let scopes = format!("{SCOPES} offline_access nhn:reseptformidleren/rf");
    let back = flow
        .login(
            &mut browser,
            "06828399789",
            &[
                ("scope", &scopes),
                ("resource", "nhn:sfm"),
                ("resource", "nhn:reseptformidleren"),
            ],
        )
        .await;
    let r = flow.exchange(&query_of(&back)["code"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r
}

async fn refresh(flow: &mut Flow<'_>, rt: &str, extra: &[(&str, &str)]) -> Response {
    let mut params = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
    params.extend_from_slice(extra);
    flow.post("/connect/token", &params).await
}

both!(rotation_grace_and_reuse, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let first = login_offline(&mut flow).await;
    let rt1 = first.body["refresh_token"].as_str().unwrap().to_owned();
    assert!(first.body["rt_expires_in"].as_u64().unwrap() > 28000);
    assert!(rt1.len() >= 43);

    let r = refresh(&mut flow, &rt1, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rt2 = r.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    let at = claims_of(r.body["access_token"].as_str().unwrap());
    assert_eq!(
        at["helseid://claims/identity/pid"], "06828399789",
        "the person is carried over"
    );
    assert_eq!(at["aud"], "nhn:sfm");
    assert_eq!(
        at["cnf"]["jkt"],
        flow.dpop.public_jwk().thumbprint().unwrap().as_str()
    );

    // A retry with the just-replaced token inside the grace window: the same successor.
    let again = refresh(&mut flow, &rt1, &[]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["refresh_token"], rt2.as_str());

    // The successor works, also after a crash and restart of the server.
    server.crash();
    let restarted = fx.start().await;
    let mut flow2 = Flow::new(&fx, &restarted);
    flow2.dpop = copy_key(&flow.dpop);
    flow2.nonce = flow.nonce.clone();
    let mut flow = flow2;
    let r = refresh(&mut flow, &rt2, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rt3 = r.body["refresh_token"].as_str().unwrap().to_owned();

    // Reusing rt1 after its successor was used revokes the whole family.
    let d = refresh(&mut flow, &rt1, &[])
        .await
        .expect_error(400, "invalid_grant");
    assert!(d.contains("family"), "{d}");
    refresh(&mut flow, &rt3, &[])
        .await
        .expect_error(400, "invalid_grant");
});

both!(
    concurrent_refreshes_have_one_outcome,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let mut flow = Flow::new(&fx, &server);
        let rt = login_offline(&mut flow).await.body["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let form = vec![
                ("grant_type".to_owned(), "refresh_token".to_owned()),
                ("refresh_token".to_owned(), rt.clone()),
                ("client_id".to_owned(), "ehr".to_owned()),
                (
                    "client_assertion_type".to_owned(),
                    ASSERTION_TYPE.to_owned(),
                ),
                (
                    "client_assertion".to_owned(),
                    fx.assertion(&flow.client, json!({})),
                ),
            ];
            let proof = dpop_proof(
                &flow.dpop,
                &format!("{}/connect/token", fx.issuer),
                flow.nonce.as_deref(),
                json!({}),
                json!({}),
            );
            let url = format!("{}/connect/token", server.base);
            tasks.spawn(async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .header("dpop", proof)
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            });
        }
        let results = tasks.join_all().await;
        let successors: std::collections::BTreeSet<String> = results
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b["refresh_token"].as_str().unwrap().to_owned())
            .collect();
        assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
        assert_eq!(successors.len(), 1, "one successor for the whole race");
        let next = successors.into_iter().next().unwrap();
        assert_eq!(refresh(&mut flow, &next, &[]).await.status, 200);
    }
);

both!(refresh_rejections_and_narrowing, |backend| async move {
    let fx = Fixture::new(backend, "[tokens]\nrefresh_token_grace = 1\n").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let rt = login_offline(&mut flow).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another DPoP key.
    let key = std::mem::replace(&mut flow.dpop, SigningKey::generate(Alg::ES256).unwrap());
    refresh(&mut flow, &rt, &[])
        .await
        .expect_error(400, "invalid_dpop_proof");
    flow.dpop = key;
    // (The failed attempt rotated nothing the owner cannot retry inside the grace window.)
    let r = refresh(&mut flow, &rt, &[("scope", "openid nhn:sfm/api")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["scope"], "openid nhn:sfm/api");
    let rt2 = r.body["refresh_token"].as_str().unwrap().to_owned();
    refresh(&mut flow, &rt2, &[("scope", "nhn:other/read")])
        .await
        .expect_error(400, "invalid_scope");
    // resource picks another API named at PAR (HelseID: one login, tokens for several APIs).
    let r = refresh(&mut flow, &rt2, &[("resource", "nhn:reseptformidleren")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = claims_of(r.body["access_token"].as_str().unwrap());
    assert_eq!(at["aud"], "nhn:reseptformidleren");
    assert_eq!(
        at["scope"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s.as_str().unwrap().starts_with("nhn:"))
            .count(),
        1
    );
    let rt3 = r.body["refresh_token"].as_str().unwrap().to_owned();
    refresh(&mut flow, &rt3, &[("resource", "nhn:other")])
        .await
        .expect_error(400, "invalid_target");
    // Another client presenting the token.
    let mut thief = Flow::new(&fx, &server);
    thief.client = fx.client("sfm");
    refresh(&mut thief, &rt3, &[])
        .await
        .expect_error(400, "invalid_grant");
    // Outside the grace window a replaced token is reuse: the family is revoked.
    let r = refresh(&mut flow, &rt3, &[]).await;
    assert_eq!(r.status, 200);
    let rt4 = r.body["refresh_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    refresh(&mut flow, &rt3, &[])
        .await
        .expect_error(400, "invalid_grant");
    refresh(&mut flow, &rt4, &[])
        .await
        .expect_error(400, "invalid_grant");
    refresh(&mut flow, "not-a-token", &[])
        .await
        .expect_error(400, "invalid_grant");
});

both!(revocation_and_introspection, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let r = login_offline(&mut flow).await;
    let at = r.body["access_token"].as_str().unwrap().to_owned();
    let rt = r.body["refresh_token"].as_str().unwrap().to_owned();
    let mut sfm = Flow::new(&fx, &server);
    sfm.client = fx.client("sfm");
    // Introspection by an API with rights to the audience nhn:sfm.
    let i = sfm.post("/connect/introspect", &[("token", &at)]).await;
    assert_eq!(i.status, 200, "{}", i.body);
    assert_eq!(i.body["active"], true);
    assert_eq!(i.body["client_id"], "ehr");
    assert_eq!(i.body["helseid://claims/identity/pid"], "06828399789");
    assert!(i.body["scope"].as_str().unwrap().contains("nhn:sfm/api"));
    // Not its audience, garbage, and a client without introspection rights.
    let mut ehr2 = Flow::new(&fx, &server);
    let cc = ehr2
        .post(
            "/connect/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "nhn:reseptformidleren/rf"),
            ],
        )
        .await;
    let rf_token = cc.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        sfm.post("/connect/introspect", &[("token", &rf_token)])
            .await
            .body,
        json!({"active": false})
    );
    assert_eq!(
        sfm.post("/connect/introspect", &[("token", "garbage")])
            .await
            .body,
        json!({"active": false})
    );
    flow.post("/connect/introspect", &[("token", &at)])
        .await
        .expect_error(401, "invalid_client");
    // The owner introspecting its refresh token needs the right too: it has none.
    // Revocation: a non-owner's request changes nothing (but answers 200).
    let nr = sfm.post("/connect/revocation", &[("token", &rt)]).await;
    assert_eq!(nr.status, 200);
    assert_eq!(refresh(&mut flow, &rt, &[]).await.status, 200);
    let rt = {
        let r = refresh(&mut flow, &rt, &[]).await;
        r.body["refresh_token"].as_str().unwrap().to_owned()
    };
    // The owner revokes: the family is dead. Unknown tokens: 200.
    assert_eq!(
        flow.post(
            "/connect/revocation",
            &[("token", &rt), ("token_type_hint", "refresh_token")]
        )
        .await
        .status,
        200
    );
    refresh(&mut flow, &rt, &[])
        .await
        .expect_error(400, "invalid_grant");
    assert_eq!(
        flow.post("/connect/revocation", &[("token", "unknown")])
            .await
            .status,
        200
    );
    // The owner revokes the access token by jti: introspection and userinfo report it.
    assert_eq!(
        flow.post("/connect/revocation", &[("token", &at)])
            .await
            .status,
        200
    );
    assert_eq!(
        sfm.post("/connect/introspect", &[("token", &at)])
            .await
            .body,
        json!({"active": false})
    );
    assert_eq!(flow.userinfo(&at).await.0, 401);
});

both!(organizations_and_multi_tenancy, |backend| async move {
    let fx = Fixture::new(
        backend,
        "[[delegation]]\nfrom = \"999977774\"\nto = \"313745392\"\n",
    )
    .await;
    let server = fx.start().await;
    let org = |system: &str, value: &str| json!({"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {"system": system, "type": "ENH", "value": value}}}});
    let cc = |client: &str, details: Value, name: &str| {
        let c = fx.client(client);
        let mut form = fx.cc_form(&c, None);
        form[3].1 = fx.assertion(&c, json!({ name: details }));
        form
    };
    // Single tenant: a registered child organization, in either container name.
    for name in ["assertion_details", "authorization_details"] {
        let r = server
            .token(&cc(
                "epj",
                json!([org("urn:oid:2.16.578.1.12.4.1.4.101", "999977776")]),
                name,
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let t = claims_of(r.body["access_token"].as_str().unwrap());
        assert_eq!(
            t["helseid://claims/client/claims/orgnr_parent"],
            "999977774"
        );
        assert_eq!(t["helseid://claims/client/claims/orgnr_child"], "999977776");
    }
    let d = server
        .token(&cc(
            "epj",
            org("urn:oid:2.16.578.1.12.4.1.2.101", "999977775"),
            "assertion_details",
        ))
        .await
        .expect_error(400, "invalid_request");
    assert!(d.contains("999977775"), "{d}");
    let both = fx.assertion(
        &fx.client("epj"),
        json!({"assertion_details": [], "authorization_details": []}),
    );
    let mut form = fx.cc_form(&fx.client("epj"), None);
    form[3].1 = both;
    server
        .token(&form)
        .await
        .expect_error(400, "invalid_request");
    server
        .token(&cc("epj", json!({"type": "made-up"}), "assertion_details"))
        .await
        .expect_error(400, "invalid_request");

    // Multi tenant: a delegated customer, with a child and a journal id.
    let journal = json!({"type": "nhn:sfm:journal-id", "value": {"journal_id": "5c0d1d5e-8f54-4c9e-9d4b-3a7f2b6c1e90"}});
    let r = server
        .token(&cc(
            "multi-api",
            json!([
                org("urn:oid:1.0.6523", "NO:ORGNR:999977774:999977776"),
                journal
            ]),
            "assertion_details",
        ))
        .await;
    let mut form_scope = r.body.clone();
    if r.status != 200 {
        form_scope = json!(null);
    }
    assert_eq!(
        r.status, 400,
        "multi-api has scopes for two APIs: {form_scope}"
    );
    let with_scope = |details: Value| {
        let c = fx.client("multi-api");
        let mut form = fx.cc_form(&c, Some("nhn:sfm/api"));
        form[3].1 = fx.assertion(&c, json!({ "assertion_details": details }));
        form
    };
    let r = server
        .token(&with_scope(json!([
            org("urn:oid:1.0.6523", "NO:ORGNR:999977774:999977776"),
            journal
        ])))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = claims_of(r.body["access_token"].as_str().unwrap());
    assert_eq!(
        t["helseid://claims/client/claims/orgnr_parent"],
        "999977774"
    );
    assert_eq!(t["helseid://claims/client/claims/orgnr_child"], "999977776");
    assert_eq!(
        t["helseid://claims/client/claims/orgnr_supplier"],
        "313745392"
    );
    assert_eq!(t["helseid://claims/client/client_tenancy"], "multi-tenant");
    assert_eq!(
        t["nhn:sfm:journal-id"],
        "5c0d1d5e-8f54-4c9e-9d4b-3a7f2b6c1e90"
    );
    // No customer named: the supplier acts for itself.
    let r = server
        .token(&fx.cc_form(&fx.client("multi-api"), Some("nhn:sfm/api")))
        .await;
    assert_eq!(
        claims_of(r.body["access_token"].as_str().unwrap())["helseid://claims/client/claims/orgnr_parent"],
        "313745392"
    );
    // No delegation, malformed values, the single-tenant system.
    let d = server
        .token(&with_scope(org("urn:oid:1.0.6523", "NO:ORGNR:912159523:")))
        .await
        .expect_error(400, "invalid_request");
    assert!(d.contains("delegated"), "{d}");
    server
        .token(&with_scope(org("urn:oid:1.0.6523", "NO:ORGNR:999977774")))
        .await
        .expect_error(400, "invalid_request");
    server
        .token(&with_scope(org("urn:oid:1.0.6523", "999977774")))
        .await
        .expect_error(400, "invalid_request");
    server
        .token(&with_scope(org(
            "urn:oid:2.16.578.1.12.4.1.4.101",
            "999977776",
        )))
        .await
        .expect_error(400, "invalid_request");
    // A delegation added through the CLI takes effect without a restart.
    let out = fx.run(&[
        "delegations",
        "add",
        "--from",
        "912159523",
        "--to",
        "313745392",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = server
        .token(&with_scope(org("urn:oid:1.0.6523", "NO:ORGNR:912159523:")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = String::from_utf8_lossy(&fx.run(&["delegations", "list"]).stdout).into_owned();
    assert!(
        list.contains("912159523 -> 313745392") && list.contains("999977774 -> 313745392"),
        "{list}"
    );

    // Organization switch on refresh: the assertion of the refresh request names the child.
    let mut flow = Flow::new(&fx, &server);
    let rt = login_offline(&mut flow).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    flow.assertion_patch =
        json!({"assertion_details": [org("urn:oid:2.16.578.1.12.4.1.4.101", "999977776")]});
    let r = refresh(&mut flow, &rt, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        claims_of(r.body["access_token"].as_str().unwrap())["helseid://claims/client/claims/orgnr_child"],
        "999977776"
    );
    flow.assertion_patch = json!({});
    let rt = r.body["refresh_token"].as_str().unwrap().to_owned();
    let r = refresh(&mut flow, &rt, &[]).await;
    assert!(
        claims_of(r.body["access_token"].as_str().unwrap())
            .get("helseid://claims/client/claims/orgnr_child")
            .is_none()
    );
});

/// oauth4webapi refreshes with the bound DPoP key and revokes the new refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_refresh_and_revocation() {
    if !interop_enabled("oauth4webapi refresh") {
        return;
    }
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let rt = login_offline(&mut flow).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let env = [
        ("ISSUER", server.issuer.clone()),
        ("CLIENT_ID", "ehr".to_owned()),
        ("CLIENT_JWK", private_jwk(&fx.client("ehr"))),
        (
            "DPOP_JWK",
            serde_json::to_string(&flow.dpop.to_private_jwk().unwrap()).unwrap(),
        ),
        ("REFRESH_TOKEN", rt),
    ];
    run_interop(
        "refresh.mjs",
        &env,
        "verified refresh rotation and revocation",
    )
    .await;
}

/// A second redemption of a code revokes the refresh-token family issued from the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_replay_revokes_the_refresh_family() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let mut browser = Browser::new();
    let scopes = format!("{SCOPES} offline_access");
    let back = flow
        .login(&mut browser, "06828399789", &[("scope", &scopes)])
        .await;
    let code = query_of(&back)["code"].clone();
    let first = flow.exchange(&code).await;
    let rt = first.body["refresh_token"].as_str().unwrap().to_owned();
    flow.exchange(&code)
        .await
        .expect_error(400, "invalid_grant");
    let d = refresh(&mut flow, &rt, &[])
        .await
        .expect_error(400, "invalid_grant");
    assert!(d.contains("revoked") || d.contains("unknown"), "{d}");
}
