//! The durable audit log (issue 9): the real server records its events in the store's hash
//! chain, `segl audit query` finds them with the right fields and no secrets, `segl audit
//! verify` accepts the intact chain and names the seq of every kind of tampering, and a token is
//! never answered without its event.

use crate::both;
use crate::harness::*;
use crate::login::{Browser, Flow, SCOPES, query_of};
use serde_json::{Value, json};
use std::time::Duration;

const PID: &str = "06828399789";
const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn claims_of(jwt: &str) -> serde_json::Map<String, Value> {
    segl_jose::UnverifiedJws::parse(jwt)
        .unwrap()
        .unverified_claims()
        .clone()
}

/// Runs `segl ARGS --config …`; returns (success, stdout, stderr).
fn segl(fx: &Fixture, args: &[&str]) -> (bool, String, String) {
    let out = fx.run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `segl audit query ARGS --format json`, one object per line.
fn query(fx: &Fixture, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "query", "--format", "json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = segl(fx, &all);
    assert!(ok, "{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `segl audit verify`: Ok(stdout) or Err(stderr).
fn verify(fx: &Fixture) -> Result<String, String> {
    match segl(fx, &["audit", "verify"]) {
        (true, stdout, _) => Ok(stdout),
        (false, _, stderr) => Err(stderr),
    }
}

/// Asserts that verification fails naming `needle` (e.g. "seq 3 is missing").
#[track_caller]
fn verify_fails_with(fx: &Fixture, needle: &str) {
    let err = verify(fx).expect_err("verification must fail");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// Runs SQL against the fixture's database directly, as someone with write access would.
async fn sql(fx: &Fixture, statement: &str) -> Result<u64, sqlx::Error> {
    use sqlx::Connection as _;
    let statement = sqlx::AssertSqlSafe(statement.to_owned());
    if fx.database.starts_with("sqlite:") {
        let url = format!("sqlite://{}", path_str(&fx.dir.path().join("segl.db")));
        let mut db = sqlx::SqliteConnection::connect(&url).await?;
        Ok(sqlx::query(statement)
            .execute(&mut db)
            .await?
            .rows_affected())
    } else {
        let mut db = sqlx::PgConnection::connect(&fx.database).await?;
        Ok(sqlx::query(statement)
            .execute(&mut db)
            .await?
            .rows_affected())
    }
}

/// Tokens, codes and assertions a scenario handled: none may appear in the audit log.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn add(&mut self, secret: &str) {
        assert!(!secret.is_empty());
        self.0.push(secret.to_owned());
        // A JWT's signature alone is a secret's fingerprint too.
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
            self.0.push(signature.to_owned());
        }
    }

    #[track_caller]
    fn assert_absent(&self, text: &str) {
        for secret in &self.0 {
            assert!(
                !text.contains(secret.as_str()),
                "a secret reached the audit log"
            );
        }
    }
}

/// Everything that makes audit events, in order; returns what a test needs to check them.
struct Scenario {
    cc_jti: String,
    code_jti: String,
    refresh_jti: String,
    exchange_jti: String,
    secrets: Secrets,
}

async fn play(fx: &Fixture, server: &Server) -> Scenario {
    let mut secrets = Secrets::default();
    // client_credentials.
    let epj = fx.client("epj");
    let form = fx.cc_form(&epj, Some("nhn:sfm/api"));
    secrets.add(&form[3].1);
    let r = server.token(&form).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cc = r.body["access_token"].as_str().unwrap().to_owned();
    secrets.add(&cc);
    // A refused assertion (wrong audience), then a replayed one.
    let mut bad = fx.cc_form(&epj, None);
    bad[3].1 = fx.assertion(&epj, json!({"aud": "https://elsewhere"}));
    secrets.add(&bad[3].1);
    server.token(&bad).await.expect_error(401, "invalid_client");
    server
        .token(&form)
        .await
        .expect_error(401, "invalid_client");

    // A person logs in; the code gives tokens with a refresh token.
    let mut flow = Flow::new(fx, server);
    let mut browser = Browser::new();
    let scopes = format!("{SCOPES} offline_access");
    let back = flow.login(&mut browser, PID, &[("scope", &scopes)]).await;
    let code = query_of(&back)["code"].clone();
    secrets.add(&code);
    let r = flow.exchange(&code).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = r.body["access_token"].as_str().unwrap().to_owned();
    let rt = r.body["refresh_token"].as_str().unwrap().to_owned();
    secrets.add(&at);
    secrets.add(&rt);
    secrets.add(r.body["id_token"].as_str().unwrap());
    // Refresh.
    let r = flow
        .post(
            "/connect/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refreshed = r.body["access_token"].as_str().unwrap().to_owned();
    let rt2 = r.body["refresh_token"].as_str().unwrap().to_owned();
    secrets.add(&refreshed);
    secrets.add(&rt2);
    // SFM exchanges the person's token for a Reseptformidleren token.
    let mut sfm = Flow::new(fx, server);
    sfm.client = fx.client("sfm");
    let r = sfm
        .post(
            "/connect/token",
            &[
                ("grant_type", TE),
                ("subject_token", &at),
                ("subject_token_type", AT),
                ("scope", "nhn:reseptformidleren/rf"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let exchanged = r.body["access_token"].as_str().unwrap().to_owned();
    secrets.add(&exchanged);
    // The code again: refused, and what it issued is revoked.
    flow.exchange(&code)
        .await
        .expect_error(400, "invalid_grant");
    // The owner revokes its (already revoked) refresh family and its refreshed access token.
    let r = flow
        .post("/connect/revocation", &[("token", &refreshed)])
        .await;
    assert_eq!(r.status, 200);
    Scenario {
        cc_jti: claims_of(&cc)["jti"].as_str().unwrap().to_owned(),
        code_jti: claims_of(&at)["jti"].as_str().unwrap().to_owned(),
        refresh_jti: claims_of(&refreshed)["jti"].as_str().unwrap().to_owned(),
        exchange_jti: claims_of(&exchanged)["jti"].as_str().unwrap().to_owned(),
        secrets,
    }
}

/// The one event named `name` (or the `n`-th of several).
fn nth<'a>(events: &'a [Value], name: &str, n: usize) -> &'a Value {
    events
        .iter()
        .filter(|e| e["event"] == name)
        .nth(n)
        .unwrap_or_else(|| panic!("no {name} #{n} in {events:#?}"))
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

both!(
    events_are_recorded_queried_and_verified,
    |backend| async move {
        let fx = Fixture::new(backend, "[audit]\ncheckpoint_interval = 1\n").await;
        let server = fx.start().await;
        let started = now();
        let s = play(&fx, &server).await;
        let (ok, _, err) = segl(
            &fx,
            &[
                "delegations",
                "add",
                "--from",
                "999977774",
                "--to",
                "313745392",
            ],
        );
        assert!(ok, "{err}");
        let (ok, _, err) = segl(&fx, &["keys", "rotate", "--activate-in", "3600"]);
        assert!(ok, "{err}");

        let events = query(&fx, &[]);
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "key_rotated",
                "token_issued",
                "client_authentication_failed",
                "client_authentication_failed",
                "login",
                "code_issued",
                "token_issued",
                "token_refreshed",
                "token_exchange",
                "code_reuse",
                "revocation",
                "delegation_added",
                "key_rotated",
            ]
        );
        assert_eq!(seqs(&events), (1..=13).collect::<Vec<_>>());

        // client_credentials: the client, its organization, the API, the token id, the request.
        let cc = nth(&events, "token_issued", 0);
        assert_eq!(cc["client_id"], "epj");
        assert_eq!(cc["client_name"], "Acme EPJ at Granfjelldal");
        assert_eq!(cc["orgnr_parent"], "999977774");
        assert_eq!(cc["audience"], "nhn:sfm");
        assert_eq!(cc["scopes"], json!(["nhn:sfm/api"]));
        assert_eq!(cc["jti"], s.cc_jti.as_str());
        assert_eq!(cc["outcome"], "success");
        assert_eq!(cc["pid"], Value::Null);
        assert_eq!(cc["source"], "127.0.0.1");
        assert!(cc["request_id"].as_str().unwrap().len() >= 16, "{cc}");
        assert_eq!(cc["detail"], "grant=client_credentials");
        let t = cc["time"].as_i64().unwrap();
        assert!(t >= started - 1 && t <= now() + 1, "{cc}");
        assert_eq!(cc["time_utc"].as_str().unwrap().len(), 20);
        assert_eq!(cc["hash"].as_str().unwrap().len(), 64);

        let refused = nth(&events, "client_authentication_failed", 0);
        assert_eq!(refused["outcome"], "failure");
        assert_eq!(refused["error"], "invalid_client");
        assert_eq!(refused["client_id"], "epj");
        let replay = nth(&events, "client_authentication_failed", 1);
        assert_eq!(replay["detail"], "replayed_assertion=true");

        let login = nth(&events, "login", 0);
        assert_eq!(login["client_id"], "ehr");
        assert_eq!(login["pid"], PID);
        assert!(
            login["detail"]
                .as_str()
                .unwrap()
                .contains("idp=testidp-oidc security_level=4")
        );

        let code = nth(&events, "token_issued", 1);
        assert_eq!(code["client_id"], "ehr");
        assert_eq!(code["pid"], PID);
        assert_eq!(code["jti"], s.code_jti.as_str());
        assert_eq!(code["audience"], "nhn:sfm");
        let detail = code["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("grant=authorization_code refresh_family="),
            "{detail}"
        );
        let family = detail.rsplit('=').next().unwrap();

        let refreshed = nth(&events, "token_refreshed", 0);
        assert_eq!(refreshed["pid"], PID);
        assert_eq!(refreshed["jti"], s.refresh_jti.as_str());
        assert_eq!(refreshed["detail"], format!("refresh_family={family}"));

        let exchange = nth(&events, "token_exchange", 0);
        assert_eq!(exchange["client_id"], "sfm");
        assert_eq!(exchange["client_name"], "Sentral forskrivningsmodul");
        assert_eq!(exchange["actor_chain"], json!(["sfm"]));
        assert_eq!(exchange["orgnr_parent"], "999977774");
        assert_eq!(exchange["audience"], "nhn:reseptformidleren");
        assert_eq!(exchange["pid"], PID);
        assert_eq!(exchange["jti"], s.exchange_jti.as_str());
        assert_eq!(
            exchange["detail"],
            format!("original_client=ehr subject_jti={}", s.code_jti)
        );

        let reuse = nth(&events, "code_reuse", 0);
        assert_eq!(
            (&reuse["outcome"], &reuse["error"]),
            (&json!("failure"), &json!("invalid_grant"))
        );
        assert_eq!(reuse["pid"], PID);
        assert_eq!(reuse["detail"], "revoked=2");

        let revocation = nth(&events, "revocation", 0);
        assert_eq!(revocation["client_id"], "ehr");
        assert_eq!(revocation["jti"], s.refresh_jti.as_str());

        let delegation = nth(&events, "delegation_added", 0);
        assert_eq!(delegation["orgnr_parent"], "999977774");
        assert_eq!(delegation["orgnr_supplier"], "313745392");
        assert_eq!(delegation["source"], Value::Null);
        for (i, via) in ["via=start", "via=rotate"].iter().enumerate() {
            let key = nth(&events, "key_rotated", i);
            let detail = key["detail"].as_str().unwrap();
            assert!(
                detail.starts_with("kid=") && detail.ends_with(via),
                "{detail}"
            );
        }

        // No token, code, refresh token or assertion anywhere: not in the query output, not in
        // the table rows.
        let (ok, table, _) = segl(&fx, &["audit", "query"]);
        assert!(ok);
        s.secrets.assert_absent(&table);
        s.secrets
            .assert_absent(&events.iter().map(Value::to_string).collect::<String>());
        assert!(table.lines().next().unwrap().contains("event"), "{table}");
        assert_eq!(table.lines().count(), 14, "{table}");

        // Filters: person, client, organization (parent or supplier), time.
        let by_pid = query(&fx, &["--pid", PID]);
        assert_eq!(seqs(&by_pid), [5, 6, 7, 8, 9, 10]);
        assert_eq!(seqs(&query(&fx, &["--client", "sfm"])), [9]);
        assert_eq!(seqs(&query(&fx, &["--org", "313745392"])), [12]);
        // (A refused assertion names the client it claimed, but no organization.)
        assert_eq!(
            seqs(&query(&fx, &["--org", "999977774", "--client", "epj"])),
            [2]
        );
        let (from, to) = (format!("{}", started - 3600), rfc3339(now() + 3600));
        assert_eq!(query(&fx, &["--from", &from, "--to", &to]).len(), 13);
        assert!(query(&fx, &["--to", &rfc3339(started - 60)]).is_empty());
        assert_eq!(seqs(&query(&fx, &["--pid", PID, "--limit", "2"])), [5, 6]);
        let (ok, _, err) = segl(&fx, &["audit", "query", "--from", "yesterday"]);
        assert!(!ok && err.contains("--from"), "{err}");

        // The intact chain verifies, with the checkpoints written every second.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let out = verify(&fx).unwrap();
        assert!(
            out.starts_with("ok: 13 events, last seq 13, head "),
            "{out}"
        );
        let head = &events[12]["hash"];
        assert!(out.contains(head.as_str().unwrap()), "{out}");
        assert!(
            out.contains("agree with the chain (latest at seq 13)"),
            "{out}"
        );
    }
);

/// `t` (after 1970) as RFC 3339 UTC, by H. Hinnant's `civil_from_days`.
fn rfc3339(t: i64) -> String {
    let z = t.div_euclid(86_400) + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

both!(tampering_is_named_by_seq, |backend| async move {
    let fx = Fixture::new(backend, "[audit]\ncheckpoint_interval = 1\n").await;
    let mut server = fx.start().await;
    let epj = fx.client("epj");
    for _ in 0..7 {
        let r = server.token(&fx.cc_form(&epj, None)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Seq 1 is the first key; 2..=8 the tokens. Wait for a checkpoint of seq 8.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    assert!(verify(&fx).unwrap().starts_with("ok: 8 events, last seq 8"));

    // The table refuses changes until the triggers are dropped, as an attacker would.
    assert!(
        sql(
            &fx,
            "UPDATE audit_events SET client_id = 'mallory' WHERE seq = 3"
        )
        .await
        .is_err()
    );
    assert!(
        sql(&fx, "DELETE FROM audit_events WHERE seq = 3")
            .await
            .is_err()
    );
    if fx.database.starts_with("sqlite:") {
        sql(&fx, "DROP TRIGGER audit_events_no_update")
            .await
            .unwrap();
        sql(&fx, "DROP TRIGGER audit_events_no_delete")
            .await
            .unwrap();
    } else {
        sql(&fx, "DROP TRIGGER audit_events_no_update ON audit_events")
            .await
            .unwrap();
    }

    // An event changed.
    sql(
        &fx,
        "UPDATE audit_events SET client_id = 'mallory' WHERE seq = 3",
    )
    .await
    .unwrap();
    verify_fails_with(&fx, "seq 3: the event does not match its hash");
    sql(
        &fx,
        "UPDATE audit_events SET client_id = 'epj' WHERE seq = 3",
    )
    .await
    .unwrap();
    assert!(verify(&fx).is_ok());

    // Two events swapped.
    for step in [
        "UPDATE audit_events SET seq = -1 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = 5",
        "UPDATE audit_events SET seq = 5 WHERE seq = -1",
    ] {
        sql(&fx, step).await.unwrap();
    }
    verify_fails_with(&fx, "seq 4: prev_hash does not match");
    for step in [
        "UPDATE audit_events SET seq = -1 WHERE seq = 5",
        "UPDATE audit_events SET seq = 5 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = -1",
    ] {
        sql(&fx, step).await.unwrap();
    }
    assert!(verify(&fx).is_ok());

    // The last event removed: the head and the checkpoint still name it.
    sql(
        &fx,
        "CREATE TABLE kept AS SELECT * FROM audit_events WHERE seq = 8",
    )
    .await
    .unwrap();
    sql(&fx, "DELETE FROM audit_events WHERE seq = 8")
        .await
        .unwrap();
    verify_fails_with(&fx, "seq 8 is missing: the chain ends at seq 7");
    sql(&fx, "INSERT INTO audit_events SELECT * FROM kept")
        .await
        .unwrap();
    assert!(verify(&fx).is_ok());

    // A checkpoint altered.
    sql(
        &fx,
        "UPDATE audit_checkpoints SET seq = seq + 100 WHERE seq = 8",
    )
    .await
    .unwrap();
    verify_fails_with(
        &fx,
        "checkpoint at seq 108: the signed checkpoint is for seq 8",
    );
    sql(
        &fx,
        "UPDATE audit_checkpoints SET seq = seq - 100 WHERE seq = 108",
    )
    .await
    .unwrap();
    assert!(verify(&fx).is_ok());

    // An event removed from the middle.
    sql(&fx, "DELETE FROM audit_events WHERE seq = 6")
        .await
        .unwrap();
    verify_fails_with(&fx, "seq 6 is missing (the event was removed)");
});

both!(no_token_without_its_event, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let epj = fx.client("epj");
    assert_eq!(server.token(&fx.cc_form(&epj, None)).await.status, 200);
    // The audit log cannot be written: the token is refused with 503, not handed out.
    sql(&fx, "ALTER TABLE audit_head RENAME TO audit_head_away")
        .await
        .unwrap();
    let r = server.token(&fx.cc_form(&epj, None)).await;
    r.expect_error(503, "temporarily_unavailable");
    assert!(r.body.get("access_token").is_none());
    assert_eq!(r.headers["retry-after"], "5");
    sql(&fx, "ALTER TABLE audit_head_away RENAME TO audit_head")
        .await
        .unwrap();
    // Service resumes, and the log holds exactly the answered tokens.
    assert_eq!(server.token(&fx.cc_form(&epj, None)).await.status, 200);
    let issued = query(&fx, &["--client", "epj"]);
    assert_eq!(issued.len(), 2);
    assert!(verify(&fx).unwrap().starts_with("ok: 3 events"));
});

both!(concurrent_tokens_share_commits, |backend| async move {
    let fx = Fixture::new(backend, "[rate_limit]\naddress_rate = 0\nclient_rate = 0\n").await;
    let server = fx.start().await;
    let epj = fx.client("epj");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let form = fx.cc_form(&epj, None);
        let url = format!("{}/connect/token", server.base);
        tasks.spawn(async move {
            reqwest::Client::new()
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    assert!(tasks.join_all().await.iter().all(|s| *s == 200));
    // A second process on the same database extends the same chain.
    let other = fx.start_on(free_port(), &[]).await;
    assert_eq!(other.token(&fx.cc_form(&epj, None)).await.status, 200);
    let out = verify(&fx).unwrap();
    assert!(out.starts_with("ok: 42 events, last seq 42"), "{out}");
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    // The batch sizes are measured (how many share a commit depends on timing; the writer's
    // unit tests show queued events going into one transaction).
    assert_eq!(count("segl_audit_batch_events_sum"), 40.0);
    assert!(count("segl_audit_batch_events_count") >= 1.0, "{metrics}");
});
