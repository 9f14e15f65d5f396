use super::*;
use segl_jose::Alg;
use serde_json::{Map, json};

fn claims(scope: Value, identity: Map<String, Value>) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: "https://segl.example".into(),
        aud: "nhn:sfm".into(),
        sub: "epj".into(),
        client_id: "epj".into(),
        scope,
        iat: 100,
        nbf: 100,
        exp: 700,
        jti: "0123456789ABCDEF0123456789ABCDEF".into(),
        client_amr: "private_key_jwt",
        client_name: "Acme EPJ".into(),
        orgnr_parent: "999977774".into(),
        orgnr_supplier: None,
        orgnr_child: Some("999977776".into()),
        client_tenancy: "single-tenant",
        cnf: None,
        identity,
    }
}

fn event(n: i64) -> Event {
    Event::new(
        EventKind::TokenIssued,
        Outcome::Success,
        UnixTime(1_000 + n),
    )
    .with_client(&format!("client-{n}"), Some("A client"))
    .with_jti(&format!("JTI{n}"))
}

/// A well-formed chain of `n` events, seq 1..=n.
fn chain(n: i64) -> Vec<Recorded> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let event = event(seq);
            let hash = chain_hash(&prev, &event, seq);
            let row = Recorded {
                seq,
                event,
                prev_hash: prev.to_vec(),
                hash: hash.to_vec(),
            };
            prev = hash;
            row
        })
        .collect()
}

fn head(rows: &[Recorded]) -> (i64, Vec<u8>) {
    rows.last()
        .map_or((0, GENESIS.to_vec()), |r| (r.seq, r.hash.clone()))
}

fn verify(rows: &[Recorded], checkpoints: &[Checkpoint]) -> Result<Summary, Problem> {
    let (seq, hash) = head(rows);
    verify_chain(rows, checkpoints, Some((seq, &hash)))
}

fn checkpoint_at(rows: &[Recorded], seq: i64) -> Checkpoint {
    let hash: [u8; 32] = match seq {
        0 => GENESIS,
        _ => rows[(seq - 1) as usize].hash.clone().try_into().unwrap(),
    };
    Checkpoint::new("https://segl.example", seq, &hash, UnixTime(5_000))
}

#[test]
fn names_are_the_documented_ones() {
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(
        names,
        [
            "token_issued",
            "token_refreshed",
            "token_exchange",
            "refresh_reuse",
            "code_reuse",
            "revocation",
            "login",
            "client_authentication_failed",
            "key_rotated",
            "delegation_added",
            "delegation_removed",
            "code_issued",
        ]
    );
    assert_eq!(Outcome::Success.name(), "success");
    assert_eq!(Outcome::Failure.name(), "failure");
}

/// The encoding is pinned: changing it would make every stored chain fail to verify.
#[test]
fn canonical_encoding_and_chain_hash_are_stable() {
    let e = Event::new(EventKind::Login, Outcome::Success, UnixTime(1_700_000_000))
        .with_client("ehr", None)
        .with_pid(Some("06828399789"));
    let c = e.canonical();
    assert!(c.starts_with(b"segl-audit-v1"));
    let mut expected = b"segl-audit-v1".to_vec();
    expected.extend_from_slice(&1_700_000_000i64.to_be_bytes());
    expected.extend_from_slice(&[0, 0, 0, 5]);
    expected.extend_from_slice(b"login");
    expected.extend_from_slice(&[1, 0, 0, 0, 3]);
    expected.extend_from_slice(b"ehr");
    expected.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 11]);
    expected.extend_from_slice(b"06828399789");
    expected.extend_from_slice(&[0, 0, 0, 0]); // actor chain
    expected.push(0); // audience
    expected.extend_from_slice(&[0, 0, 0, 0]); // scopes
    expected.push(0); // jti
    expected.extend_from_slice(&[0, 0, 0, 7]);
    expected.extend_from_slice(b"success");
    expected.extend_from_slice(&[0, 0, 0, 0]); // error, source, request id, detail
    assert_eq!(c, expected);

    let mut input = GENESIS.to_vec();
    input.extend_from_slice(&expected);
    input.extend_from_slice(&1i64.to_be_bytes());
    assert_eq!(chain_hash(&GENESIS, &e, 1), segl_jose::sha256(&input));
    assert_ne!(chain_hash(&GENESIS, &e, 1), chain_hash(&GENESIS, &e, 2));
    let other_prev = [1u8; 32];
    assert_ne!(chain_hash(&GENESIS, &e, 1), chain_hash(&other_prev, &e, 1));
}

#[test]
fn canonical_encoding_keeps_field_boundaries() {
    let base = Event::new(EventKind::TokenIssued, Outcome::Success, UnixTime(1));
    let a = base.clone().with_client("ab", Some("c"));
    let b = base.clone().with_client("a", Some("bc"));
    assert_ne!(a.canonical(), b.canonical());
    let mut empty = base.clone();
    empty.client_id = Some(String::new());
    assert_ne!(empty.canonical(), base.canonical(), "absent is not empty");
    let mut two = base.clone();
    two.scopes = vec!["a".into(), "b".into()];
    let mut one = base.clone();
    one.scopes = vec!["ab".into()];
    assert_ne!(two.canonical(), one.canonical());
    let mut moved = base.clone();
    moved.actor_chain = vec!["a".into()];
    let mut other = base;
    other.scopes = vec!["a".into()];
    assert_ne!(moved.canonical(), other.canonical());
}

#[test]
fn issued_reads_the_token_decisions() {
    let mut identity = Map::new();
    identity.insert(
        "act".into(),
        json!({"client_id": "rf-actor", "act": {"client_id": "sfm"}}),
    );
    let c = claims(json!(["nhn:sfm/api", "nhn:sfm/admin"]), identity);
    let e = Event::issued(
        EventKind::TokenExchange,
        UnixTime(42),
        &c,
        Some("06828399789"),
    )
    .with_origin(Some("127.0.0.1"), Some("req-1"));
    assert_eq!(e.time, 42);
    assert_eq!(e.event, "token_exchange");
    assert_eq!(e.outcome, "success");
    assert_eq!(e.client_id.as_deref(), Some("epj"));
    assert_eq!(e.client_name.as_deref(), Some("Acme EPJ"));
    assert_eq!(e.orgnr_parent.as_deref(), Some("999977774"));
    assert_eq!(e.orgnr_child.as_deref(), Some("999977776"));
    assert_eq!(e.orgnr_supplier, None);
    assert_eq!(e.pid.as_deref(), Some("06828399789"));
    assert_eq!(e.actor_chain, ["rf-actor", "sfm"]);
    assert_eq!(e.audience.as_deref(), Some("nhn:sfm"));
    assert_eq!(e.scopes, ["nhn:sfm/api", "nhn:sfm/admin"]);
    assert_eq!(e.jti.as_deref(), Some("0123456789ABCDEF0123456789ABCDEF"));
    assert_eq!(e.source.as_deref(), Some("127.0.0.1"));
    assert_eq!(e.request_id.as_deref(), Some("req-1"));
    assert_eq!(e.error, None);

    // fapi2 scopes are a string; no person, no actors.
    let e = Event::issued(
        EventKind::TokenIssued,
        UnixTime(1),
        &claims(json!("a b"), Map::new()),
        None,
    );
    assert_eq!(e.scopes, ["a", "b"]);
    assert!(e.actor_chain.is_empty());
    assert_eq!(e.pid, None);
}

#[test]
fn refused_events_bound_unverified_input() {
    let hostile = format!("evil\0\n{}", "x".repeat(10_000));
    let e = Event::refused(
        EventKind::ClientAuthenticationFailed,
        UnixTime(1),
        ErrorCode::InvalidClient,
    )
    .with_client(&hostile, None)
    .with_origin(None, Some("id\u{7f}"))
    .with_detail(&"d".repeat(5_000));
    assert_eq!(e.outcome, "failure");
    assert_eq!(e.error.as_deref(), Some("invalid_client"));
    let id = e.client_id.unwrap();
    assert_eq!(id.chars().count(), 255);
    assert!(id.starts_with("evil\u{fffd}\u{fffd}x"));
    assert!(!id.chars().any(char::is_control));
    assert_eq!(e.request_id.as_deref(), Some("id\u{fffd}"));
    assert_eq!(e.detail.unwrap().len(), 1000);
}

#[test]
fn an_intact_chain_verifies() {
    let rows = chain(5);
    let summary = verify(&rows, &[]).unwrap();
    assert_eq!(summary.events, 5);
    assert_eq!(summary.last_seq, 5);
    assert_eq!(summary.head.to_vec(), rows[4].hash);
    assert_eq!(summary.checkpoints, 0);
    // Without a head to compare, too.
    assert_eq!(verify_chain(&rows, &[], None).unwrap(), summary);
}

#[test]
fn an_empty_chain_verifies() {
    let summary = verify_chain(&[], &[], Some((0, &GENESIS))).unwrap();
    assert_eq!(summary.events, 0);
    assert_eq!(summary.last_seq, 0);
    assert_eq!(summary.head, GENESIS);
}

#[test]
fn a_changed_event_is_a_hash_mismatch_at_its_seq() {
    let mut rows = chain(5);
    rows[2].event.client_id = Some("mallory".into());
    assert_eq!(verify(&rows, &[]), Err(Problem::HashMismatch { seq: 3 }));
    let mut rows = chain(5);
    rows[3].event.time += 1;
    assert_eq!(verify(&rows, &[]), Err(Problem::HashMismatch { seq: 4 }));
    let mut rows = chain(5);
    rows[0].hash[0] ^= 1;
    assert_eq!(verify(&rows, &[]), Err(Problem::HashMismatch { seq: 1 }));
}

#[test]
fn a_removed_event_is_a_gap() {
    let mut rows = chain(5);
    rows.remove(2);
    assert_eq!(verify(&rows, &[]), Err(Problem::Missing { seq: 3 }));
    let mut rows = chain(5);
    rows.remove(0);
    assert_eq!(verify(&rows, &[]), Err(Problem::Missing { seq: 1 }));
}

#[test]
fn reordered_events_break_the_prev_hash_link() {
    // The rows of seq 2 and 3 swap places (their sequence numbers are exchanged).
    let mut rows = chain(5);
    rows.swap(1, 2);
    rows[1].seq = 2;
    rows[2].seq = 3;
    assert_eq!(
        verify(&rows, &[]),
        Err(Problem::PrevHashMismatch { seq: 2 })
    );
    // A prev_hash changed on its own.
    let mut rows = chain(5);
    rows[4].prev_hash = vec![0; 32];
    assert_eq!(
        verify(&rows, &[]),
        Err(Problem::PrevHashMismatch { seq: 5 })
    );
    // A prev_hash of the wrong length.
    let mut rows = chain(2);
    rows[0].prev_hash = vec![];
    assert_eq!(
        verify(&rows, &[]),
        Err(Problem::PrevHashMismatch { seq: 1 })
    );
}

#[test]
fn rows_out_of_sequence_order_are_refused() {
    let mut rows = chain(3);
    rows.swap(1, 2);
    assert_eq!(verify(&rows, &[]), Err(Problem::Missing { seq: 2 }));
    let mut rows = chain(3);
    let dup = rows[1].clone();
    rows.insert(2, dup);
    assert_eq!(
        verify(&rows, &[]),
        Err(Problem::OutOfOrder { seq: 2, after: 2 })
    );
}

#[test]
fn checkpoints_pin_the_chain() {
    let rows = chain(6);
    let checkpoints = [
        checkpoint_at(&rows, 0),
        checkpoint_at(&rows, 4),
        checkpoint_at(&rows, 2),
        checkpoint_at(&rows, 6),
    ];
    assert_eq!(verify(&rows, &checkpoints).unwrap().checkpoints, 4);

    // A rewrite from seq 3 on, consistently re-hashed: only the checkpoint at 4 notices.
    let mut forged = rows.clone();
    let mut prev: [u8; 32] = forged[1].hash.clone().try_into().unwrap();
    for row in forged.iter_mut().skip(2) {
        if row.seq == 3 {
            row.event.client_id = Some("mallory".into());
        }
        row.prev_hash = prev.to_vec();
        prev = chain_hash(&prev, &row.event, row.seq);
        row.hash = prev.to_vec();
    }
    assert!(
        verify(&forged, &[]).is_ok(),
        "without checkpoints it looks fine"
    );
    assert_eq!(
        verify(&forged, &checkpoints),
        Err(Problem::CheckpointMismatch { seq: 4 })
    );
}

#[test]
fn a_truncated_chain_is_caught_by_the_head_or_a_checkpoint() {
    let rows = chain(5);
    let (seq, hash) = head(&rows);
    let cut = &rows[..3];
    assert_eq!(
        verify_chain(cut, &[], Some((seq, &hash))),
        Err(Problem::Truncated {
            missing: 4,
            last: 3,
            recorded: 5,
            source_name: "the chain head"
        })
    );
    // The head was moved back too, but a checkpoint had seen seq 5.
    let (cut_seq, cut_hash) = head(cut);
    assert_eq!(
        verify_chain(cut, &[checkpoint_at(&rows, 5)], Some((cut_seq, &cut_hash))),
        Err(Problem::Truncated {
            missing: 4,
            last: 3,
            recorded: 5,
            source_name: "a signed checkpoint"
        })
    );
    // A head that names the last seq with another hash.
    assert_eq!(
        verify_chain(&rows, &[], Some((5, &[9u8; 32]))),
        Err(Problem::HeadMismatch { seq: 5 })
    );
    // A head behind the chain (rows added outside Segl).
    assert_eq!(
        verify_chain(&rows, &[], Some((4, &rows[3].hash))),
        Err(Problem::HeadMismatch { seq: 5 })
    );
}

#[test]
fn problems_name_their_seq() {
    let texts = [
        Problem::HashMismatch { seq: 7 }.to_string(),
        Problem::Missing { seq: 7 }.to_string(),
        Problem::PrevHashMismatch { seq: 7 }.to_string(),
        Problem::CheckpointMismatch { seq: 7 }.to_string(),
        Problem::HeadMismatch { seq: 7 }.to_string(),
        Problem::Truncated {
            missing: 7,
            last: 6,
            recorded: 9,
            source_name: "the chain head",
        }
        .to_string(),
    ];
    for text in texts {
        assert!(
            text.starts_with("seq 7") || text.contains("at seq 7"),
            "{text}"
        );
    }
}

#[test]
fn checkpoints_are_signed_and_verified() {
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let other = SigningKey::generate(Alg::ES256).unwrap();
    let cp = Checkpoint::new("https://segl.example", 12, &[7u8; 32], UnixTime(99));
    assert_eq!(cp.hash, "07".repeat(32));
    let jws = cp.sign(&key).unwrap();
    let keys = [key.verifying_key().unwrap()];
    assert_eq!(Checkpoint::verify(&jws, &keys).unwrap(), cp);
    let wrong = [other.verifying_key().unwrap()];
    assert!(Checkpoint::verify(&jws, &wrong).is_err());
    // A JWT of another type signed by the right key is not a checkpoint.
    let token = segl_jose::sign_jwt(&key, "at+jwt", &cp).unwrap();
    assert!(
        Checkpoint::verify(&token, &keys)
            .unwrap_err()
            .contains("typ")
    );
    // A tampered payload does not verify.
    let mut parts: Vec<&str> = jws.split('.').collect();
    let forged = segl_jose::b64_encode(
        serde_json::to_vec(&Checkpoint {
            seq: 13,
            ..cp.clone()
        })
        .unwrap(),
    );
    parts[1] = &forged;
    assert!(Checkpoint::verify(&parts.join("."), &keys).is_err());
    assert!(Checkpoint::verify("not a jws", &keys).is_err());
}
