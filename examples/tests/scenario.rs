//! The EHR → SFM → Reseptformidleren scenario end to end: Segl in process (from the
//! `segl-server` library, so no `segl` binary is needed), Reseptformidleren and SFM on loopback
//! ports, both variants checked on the structured answer; SFM's refusals; and the one command
//! (`scenario` binary of this package, `CARGO_BIN_EXE_scenario`) with its printed chain.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use segl_client::DpopKey;
use segl_examples::scenario::{
    EHR_CLIENT_ID, EHR_NAME, EHR_ORGANIZATION, Outcome, PERSON_HPR, PERSON_PID, SFM_CLIENT_ID,
    SFM_ORGANIZATION, Scenario, Variant,
};
use segl_examples::{reseptformidleren, sfm};
use segl_jose::Alg;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// What both variants share: the original client, the actor, the target, the binding.
fn assert_chain(o: &Outcome) {
    let rf = &o.receipt.reseptformidleren;
    // The caller of Reseptformidleren is SFM, acting for the EHR.
    assert_eq!(rf.client.id.as_deref(), Some(SFM_CLIENT_ID));
    assert_eq!(rf.original_client_id.as_deref(), Some(EHR_CLIENT_ID));
    assert!(
        rf.original_client_id
            .as_deref()
            .unwrap()
            .starts_with("ehr-")
    );
    // The client claims are the EHR's.
    assert_eq!(rf.client.name.as_deref(), Some(EHR_NAME));
    assert_eq!(rf.organization.parent.as_deref(), Some(EHR_ORGANIZATION));
    // One actor: SFM, with its organization, named by this issuer.
    assert_eq!(rf.actors.len(), 1, "{:?}", rf.actors);
    let actor = &rf.actors[0];
    assert_eq!(actor.client_id.as_deref(), Some(SFM_CLIENT_ID));
    assert_eq!(actor.orgnr_parent.as_deref(), Some(SFM_ORGANIZATION));
    assert_eq!(actor.iss.as_deref(), Some(o.issuer.as_str()));
    // The target API and its scope only.
    assert_eq!(rf.audience, vec![reseptformidleren::AUDIENCE.to_owned()]);
    assert_eq!(rf.scopes, vec![reseptformidleren::SCOPE.to_owned()]);
    // DPoP-bound to SFM's key, not the EHR's.
    assert!(rf.dpop_bound);
    assert_eq!(o.ehr_token_type, "DPoP");
    assert_eq!(o.receipt.exchanged.token_type, "DPoP");
    assert_eq!(
        o.receipt.exchanged.issued_token_type.as_deref(),
        Some(sfm::ACCESS_TOKEN_TYPE)
    );
    assert_eq!(
        rf.jkt.as_deref(),
        Some(o.receipt.exchanged.sfm_dpop_jkt.as_str())
    );
    assert_ne!(rf.jkt.as_deref(), Some(o.ehr_dpop_jkt.as_str()));
    // SFM saw the EHR's own token: the EHR, no actor, for nhn:sfm.
    let at_sfm = &o.receipt.sfm_caller;
    assert_eq!(at_sfm.client.id.as_deref(), Some(EHR_CLIENT_ID));
    assert!(at_sfm.actors.is_empty());
    assert_eq!(at_sfm.audience, vec![sfm::AUDIENCE.to_owned()]);
    assert_eq!(at_sfm.jkt.as_deref(), Some(o.ehr_dpop_jkt.as_str()));
    // SFM echoes the prescription it was sent.
    assert!(o.receipt.received["prescription"]["medication"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_variants_carry_the_chain_to_reseptformidleren() {
    tokio::time::timeout(LIMIT, async {
        let scenario = Scenario::start(false).await.unwrap();
        let dir = scenario.dir().to_owned();
        assert!(dir.join("segl.toml").exists());

        // (a) client_credentials: no person.
        let a = scenario.client_credentials().await.unwrap();
        assert_eq!(a.variant, Variant::ClientCredentials);
        assert_chain(&a);
        assert!(a.receipt.reseptformidleren.person.is_none());
        assert!(a.person_words().starts_with("no person"));
        let words = a.describe();
        assert!(words.contains("no person"), "{words}");
        assert!(words.contains("original client  ehr-granfjelldal (Acme EPJ at Granfjelldal), organization 999977774"), "{words}");
        assert!(words.contains("acting client    sfm, organization 994598759"), "{words}");
        assert!(words.contains("target API       nhn:reseptformidleren"), "{words}");
        assert!(words.contains("DPoP-bound to SFM's own key"), "{words}");

        // (b) the person logs in at the EHR.
        let b = scenario.person(PERSON_PID).await.unwrap();
        assert_eq!(b.variant, Variant::Person);
        assert_chain(&b);
        let person = b.receipt.reseptformidleren.person.as_ref().unwrap();
        assert_eq!(person.pid.as_deref(), Some(PERSON_PID));
        assert_eq!(person.hpr_number.as_deref(), Some(PERSON_HPR));
        assert_eq!(person.security_level.as_deref(), Some("4"));
        assert!(person.pid_pseudonym.is_some());
        // SFM saw the same person, with the name.
        let at_sfm = b.receipt.sfm_caller.person.as_ref().unwrap();
        assert_eq!(at_sfm.pid.as_deref(), Some(PERSON_PID));
        assert_eq!(at_sfm.name.as_deref(), Some("Kvart Grevling"));
        let words = b.describe();
        assert!(
            words.contains("person           Kvart Grevling, pid 06828399789, HPR 431001110, security level 4"),
            "{words}"
        );
        assert!(words.contains("acting client    sfm, organization 994598759"), "{words}");
        assert_eq!(
            b.sentence(),
            "Kvart Grevling (pid 06828399789, HPR 431001110, security level 4), using the EHR \
             ehr-granfjelldal (Acme EPJ at Granfjelldal) of organization 999977774, calls \
             nhn:reseptformidleren through sfm (organization 994598759)."
        );

        // Each run used a fresh EHR DPoP key; SFM kept its own.
        assert_ne!(a.ehr_dpop_jkt, b.ehr_dpop_jkt);
        assert_eq!(
            a.receipt.exchanged.sfm_dpop_jkt,
            b.receipt.exchanged.sfm_dpop_jkt
        );

        drop(scenario);
        assert!(!dir.exists(), "the temporary directory is removed");
    })
    .await
    .expect("the scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sfm_refuses_bad_tokens_with_the_verifiers_answers() {
    tokio::time::timeout(LIMIT, async {
        let scenario = Scenario::start(false).await.unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = scenario.sfm_endpoint();

        // No token: 401 with a DPoP challenge.
        let r = http
            .post(&url)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("DPoP"), "{challenge}");

        // A DPoP-bound token of the EHR presented as Bearer: refused (SFM is DPoP only).
        let dpop = DpopKey::generate(Alg::ES256).unwrap();
        let token = scenario
            .issuer()
            .client_credentials(
                EHR_CLIENT_ID,
                scenario.ehr_key(),
                Some(sfm::SCOPE),
                None,
                Some(&dpop),
            )
            .await
            .unwrap();
        let r = http
            .post(&url)
            .header("authorization", format!("Bearer {}", token.access_token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // The right scheme, but a proof by another key: invalid_dpop_proof or invalid_token.
        let other = DpopKey::generate(Alg::ES256).unwrap();
        let r = segl_examples::scenario::post_json(
            &http,
            &url,
            &token.access_token,
            &other,
            &serde_json::json!({}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains("invalid_dpop_proof") || challenge.contains("invalid_token"),
            "{challenge}"
        );

        // The right key: accepted, exchanged, and Reseptformidleren answers.
        let r = segl_examples::scenario::post_json(
            &http,
            &url,
            &token.access_token,
            &dpop,
            &serde_json::json!({"ok": true}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let receipt: sfm::Receipt = r.json().await.unwrap();
        assert_eq!(
            receipt.reseptformidleren.original_client_id.as_deref(),
            Some(EHR_CLIENT_ID)
        );

        // A body that is not JSON, with a good token: 400 from SFM itself.
        let r = http
            .post(&url)
            .header("authorization", format!("DPoP {}", token.access_token))
            .header(
                "dpop",
                dpop.proof("POST", &url, Some(&token.access_token)).unwrap(),
            )
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        // An SFM that authenticates as a client without the token-exchange grant: the issuer
        // refuses the exchange, and SFM says so with 502 and the issuer's error.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rogue_url = format!("http://{}", listener.local_addr().unwrap());
        let rogue = sfm::Sfm::discover(sfm::Settings {
            issuer: scenario.issuer_url().to_owned(),
            public_url: rogue_url.clone(),
            client_id: EHR_CLIENT_ID.to_owned(),
            key: segl_client::load_key(&scenario.dir().join("ehr.private.jwk.json"), None).unwrap(),
            reseptformidleren_url: scenario.reseptformidleren_url().to_owned(),
            binding: segl_verify::TokenBinding::DpopOnly,
            dpop_nonce: segl_verify::DpopNonce::Off,
        })
        .await
        .unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, sfm::router(std::sync::Arc::new(rogue)))
                .await
                .unwrap();
        });
        let rogue_endpoint = format!("{rogue_url}{}", sfm::PRESCRIPTIONS_PATH);
        let r = segl_examples::scenario::post_json(
            &http,
            &rogue_endpoint,
            &token.access_token,
            &dpop,
            &serde_json::json!({}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 502);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "token_exchange_failed");
        assert_eq!(
            body["issuer_said"]["error"], "unauthorized_client",
            "{body}"
        );
        server.abort();
    })
    .await
    .expect("the checks finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_command_prints_the_chain_in_words() {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_scenario"));
    command
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("the scenario finishes in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "(a) client_credentials: the EHR calls SFM as a system, no person",
        "person           no person (a system-to-system call)",
        "(b) person login: pid 06828399789 logs in at the EHR through the test IdP",
        "person           Kvart Grevling, pid 06828399789, HPR 431001110, security level 4 (assurance high)",
        "original client  ehr-granfjelldal (Acme EPJ at Granfjelldal), organization 999977774",
        "acting client    sfm, organization 994598759",
        "target API       nhn:reseptformidleren, scope nhn:reseptformidleren/rf",
        "DPoP-bound to SFM's own key",
        "In words: Kvart Grevling (pid 06828399789, HPR 431001110, security level 4), using the EHR ehr-granfjelldal",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("acting client    sfm").count(),
        2,
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sfm_binary_exchanges_with_its_key_file() {
    tokio::time::timeout(LIMIT, async {
        let scenario = Scenario::start(false).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfm"))
            .args([
                "--issuer",
                scenario.issuer_url(),
                "--key",
                scenario
                    .dir()
                    .join("sfm.private.jwk.json")
                    .to_str()
                    .unwrap(),
                "--reseptformidleren",
                scenario.reseptformidleren_url(),
                "--listen",
                &listen,
                "--dpop-nonce",
            ])
            .env("SFM_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://{listen}{}", sfm::PRESCRIPTIONS_PATH);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        // Ready when it answers (401 without a token).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.post(&url).send().await {
                assert_eq!(r.status(), 401);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "sfm did not start");
            assert!(child.try_wait().unwrap().is_none(), "sfm exited");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dpop = DpopKey::generate(Alg::ES256).unwrap();
        let token = scenario
            .issuer()
            .client_credentials(
                EHR_CLIENT_ID,
                scenario.ehr_key(),
                Some(sfm::SCOPE),
                None,
                Some(&dpop),
            )
            .await
            .unwrap();
        let r = segl_examples::scenario::post_json(
            &http,
            &url,
            &token.access_token,
            &dpop,
            &serde_json::json!({"prescription": {"medication": "x"}}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let receipt: sfm::Receipt = r.json().await.unwrap();
        let rf = &receipt.reseptformidleren;
        assert_eq!(rf.client.id.as_deref(), Some(SFM_CLIENT_ID));
        assert_eq!(rf.original_client_id.as_deref(), Some(EHR_CLIENT_ID));
        assert_eq!(
            rf.jkt.as_deref(),
            Some(receipt.exchanged.sfm_dpop_jkt.as_str())
        );
        child.kill().await.unwrap();
    })
    .await
    .expect("the sfm binary answers in time");
}
