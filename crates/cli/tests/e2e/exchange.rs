//! Token exchange (RFC 8693, HELSEID.md §9): the SFM → Reseptformidleren scenario with and
//! without a person, chains, and every rejection.

use crate::both;
use crate::harness::*;
use crate::login::{Browser, Flow, query_of};
use segl_jose::{Alg, SigningKey};
use serde_json::{Value, json};

pub const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn claims_of(jwt: &str) -> serde_json::Map<String, Value> {
    segl_jose::UnverifiedJws::parse(jwt)
        .unwrap()
        .unverified_claims()
        .clone()
}

/// A flow acting as `client_id` (DPoP key and nonce handling included).
fn actor<'a>(fx: &'a Fixture, server: &'a Server, client_id: &str) -> Flow<'a> {
    let mut f = Flow::new(fx, server);
    f.client = fx.client(client_id);
    f
}

async fn exchange(flow: &mut Flow<'_>, subject: &str, extra: &[(&str, &str)]) -> Response {
    let mut params: Vec<(&str, &str)> = vec![
        ("grant_type", TE),
        ("subject_token", subject),
        ("subject_token_type", AT),
        ("scope", "nhn:reseptformidleren/rf"),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    flow.post("/connect/token", &params).await
}

/// The EHR's token for SFM after a person login.
async fn person_token(fx: &Fixture, server: &Server) -> String {
    let mut flow = Flow::new(fx, server);
    let mut browser = Browser::new();
    let back = flow.login(&mut browser, "06828399789", &[]).await;
    let r = flow.exchange(&query_of(&back)["code"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

both!(
    sfm_exchanges_a_person_token_for_reseptformidleren,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let subject = person_token(&fx, &server).await;
        let s = claims_of(&subject);
        let mut sfm = actor(&fx, &server, "sfm");
        let r = exchange(&mut sfm, &subject, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["issued_token_type"], AT);
        assert_eq!(r.body["token_type"], "DPoP");
        let t = claims_of(r.body["access_token"].as_str().unwrap());
        assert_eq!(t["aud"], "nhn:reseptformidleren");
        assert_eq!(t["client_id"], "sfm");
        assert_eq!(t["scope"], json!(["nhn:reseptformidleren/rf"]));
        for copied in [
            "sub",
            "idp",
            "amr",
            "auth_time",
            "helseid://claims/identity/pid",
            "helseid://claims/identity/security_level",
            "helseid://claims/hpr/hpr_number",
        ] {
            assert_eq!(t[copied], s[copied], "{copied}");
        }
        // The subject's client claims stay; the actor is named in act and client_id.
        assert_eq!(t["helseid://claims/client/client_name"], "Acme EPJ");
        assert_eq!(
            t["helseid://claims/client/claims/orgnr_parent"],
            "999977774"
        );
        assert_eq!(t["helseid://claims/client/original_client_id"], "ehr");
        assert_eq!(t["act"]["client_id"], "sfm");
        assert_eq!(t["act"]["iss"], fx.issuer.as_str());
        assert_eq!(
            t["act"]["helseid://claims/client/claims/orgnr_parent"],
            "994598759"
        );
        assert_eq!(
            t["cnf"]["jkt"],
            sfm.dpop.public_jwk().thumbprint().unwrap().as_str()
        );
        assert!(t["exp"].as_i64().unwrap() <= s["exp"].as_i64().unwrap());
        assert_ne!(t["jti"], s["jti"]);

        // A second exchange down the chain nests act, the oldest innermost.
        let mut downstream = actor(&fx, &server, "rf-actor");
        let r = exchange(
            &mut downstream,
            r.body["access_token"].as_str().unwrap(),
            &[("scope", "nhn:other/read")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let t3 = claims_of(r.body["access_token"].as_str().unwrap());
        assert_eq!(t3["act"]["client_id"], "rf-actor");
        assert_eq!(t3["act"]["act"]["client_id"], "sfm");
        assert_eq!(t3["helseid://claims/client/original_client_id"], "ehr");
        assert_eq!(t3["helseid://claims/identity/pid"], "06828399789");
    }
);

both!(
    client_credentials_subject_and_rejections,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        // The EHR's own machine token for SFM (DPoP-bound: the EHR requires DPoP).
        let mut ehr = actor(&fx, &server, "ehr");
        let r = ehr
            .post(
                "/connect/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "nhn:sfm/api"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let subject = r.body["access_token"].as_str().unwrap().to_owned();
        let mut sfm = actor(&fx, &server, "sfm");
        let ok = exchange(&mut sfm, &subject, &[]).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        let t = claims_of(ok.body["access_token"].as_str().unwrap());
        assert_eq!(t["sub"], "ehr");
        assert!(t.get("helseid://claims/identity/pid").is_none());
        let t2 = ok.body["access_token"].as_str().unwrap().to_owned();

        // An actor the subject client does not allow.
        let mut intruder = actor(&fx, &server, "intruder");
        let d = exchange(&mut intruder, &subject, &[])
            .await
            .expect_error(400, "invalid_request");
        assert_eq!(d, "not permitted");
        // An actor not entitled to the subject's audience (SFM with a Reseptformidleren token).
        let d = exchange(&mut sfm, &t2, &[])
            .await
            .expect_error(400, "invalid_request");
        assert!(d.contains("no audience matching"), "{d}");
        // Scope escalation, other API, several APIs, unknown target.
        exchange(&mut sfm, &subject, &[("scope", "nhn:sfm/api")])
            .await
            .expect_error(400, "invalid_scope");
        exchange(&mut sfm, &subject, &[("scope", "nhn:other/read")])
            .await
            .expect_error(400, "invalid_scope");
        exchange(&mut sfm, &subject, &[("resource", "nhn:nope")])
            .await
            .expect_error(400, "invalid_target");
        let mut rf = actor(&fx, &server, "rf-actor");
        exchange(
            &mut rf,
            &subject,
            &[("scope", "nhn:other/read nhn:sfm/api")],
        )
        .await
        .expect_error(400, "invalid_target");
        // Wrong token types, actor_token, a client without the grant.
        exchange(
            &mut sfm,
            &subject,
            &[(
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            )],
        )
        .await
        .expect_error(400, "invalid_request");
        exchange(&mut sfm, &subject, &[("subject_token_type", "")])
            .await
            .expect_error(400, "invalid_request");
        exchange(
            &mut sfm,
            &subject,
            &[("actor_token", &subject), ("actor_token_type", AT)],
        )
        .await
        .expect_error(400, "invalid_request");
        exchange(
            &mut sfm,
            &subject,
            &[(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            )],
        )
        .await
        .expect_error(400, "invalid_request");
        let mut epj = actor(&fx, &server, "epj");
        exchange(&mut epj, &subject, &[])
            .await
            .expect_error(400, "unauthorized_client");
        // A bound subject never becomes a bearer token: no proof, no exchange.
        let mut form = fx.cc_form(&fx.client("sfm"), Some("nhn:reseptformidleren/rf"));
        form[0].1 = TE.into();
        form.extend([
            ("subject_token".into(), subject.clone()),
            ("subject_token_type".into(), AT.into()),
        ]);
        server
            .token(&form)
            .await
            .expect_error(400, "invalid_dpop_proof");

        // Forged subject tokens: a foreign key under our kid, alg none, a tampered payload,
        // another issuer's token.
        let s = claims_of(&subject);
        let header = segl_jose::UnverifiedJws::parse(&subject)
            .unwrap()
            .unverified_header()
            .clone();
        let attacker = SigningKey::generate(Alg::RS256).unwrap();
        let forged = custom_jws(
            &Value::Object(header.clone()),
            &Value::Object(s.clone()),
            |i| attacker.sign(i).unwrap(),
        );
        let d = exchange(&mut sfm, &forged, &[])
            .await
            .expect_error(400, "invalid_request");
        assert!(d.starts_with("invalid subject_token - "), "{d}");
        let none = format!(
            "{}.{}.",
            segl_jose::b64_encode(json!({"alg": "none", "typ": "at+jwt"}).to_string()),
            segl_jose::b64_encode(Value::Object(s.clone()).to_string())
        );
        exchange(&mut sfm, &none, &[])
            .await
            .expect_error(400, "invalid_request");
        let mut parts: Vec<String> = subject.split('.').map(str::to_owned).collect();
        let mut escalated = s.clone();
        escalated.insert("aud".into(), json!("nhn:sfm"));
        escalated.insert("helseid://claims/identity/pid".into(), json!("01010112345"));
        parts[1] = segl_jose::b64_encode(Value::Object(escalated).to_string());
        exchange(&mut sfm, &parts.join("."), &[])
            .await
            .expect_error(400, "invalid_request");
        let other_fx = Fixture::new(Backend::Sqlite, "").await;
        let other_server = other_fx.start().await;
        let mut other_ehr = actor(&other_fx, &other_server, "ehr");
        let r = other_ehr
            .post(
                "/connect/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "nhn:sfm/api"),
                ],
            )
            .await;
        let foreign = r.body["access_token"].as_str().unwrap().to_owned();
        exchange(&mut sfm, &foreign, &[])
            .await
            .expect_error(400, "invalid_request");
        // The near miss still passes.
        assert_eq!(exchange(&mut sfm, &subject, &[]).await.status, 200);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_limit_and_expired_subject() {
    let fx = Fixture::new(
        Backend::Sqlite,
        "[token_exchange]\nmax_depth = 1\n[tokens]\naccess_token_lifetime = 2\n",
    )
    .await;
    let server = fx.start().await;
    let mut ehr = actor(&fx, &server, "ehr");
    let r = ehr
        .post(
            "/connect/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "nhn:sfm/api"),
            ],
        )
        .await;
    let subject = r.body["access_token"].as_str().unwrap().to_owned();
    let mut sfm = actor(&fx, &server, "sfm");
    let r = exchange(&mut sfm, &subject, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut rf = actor(&fx, &server, "rf-actor");
    let d = exchange(
        &mut rf,
        r.body["access_token"].as_str().unwrap(),
        &[("scope", "nhn:other/read")],
    )
    .await
    .expect_error(400, "invalid_request");
    assert_eq!(d, "subject_token exchanged too many times (1)");
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let d = exchange(&mut sfm, &subject, &[])
        .await
        .expect_error(400, "invalid_request");
    assert!(d.contains("expired"), "{d}");
}

/// oauth4webapi's generic token endpoint request performs the exchange, with DPoP and its nonce
/// retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_token_exchange() {
    if !interop_enabled("oauth4webapi token-exchange") {
        return;
    }
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let subject = person_token(&fx, &server).await;
    let env = [
        ("ISSUER", server.issuer.clone()),
        ("CLIENT_ID", "sfm".to_owned()),
        ("CLIENT_JWK", private_jwk(&fx.client("sfm"))),
        ("SUBJECT_TOKEN", subject),
    ];
    run_interop("exchange.mjs", &env, "verified exchanged token").await;
}
