//! Property test: random sequences of the one-time-use operations — `insert_jti` /
//! `insert_jtis`, `put_record` / `get_record` / `take_record`, `insert_code` / `redeem_code` /
//! `record_code_issue`, and `purge_expired` — give on a real store exactly what a few lines
//! of in-memory model say the [`Store`] contract promises:
//!
//! - a `jti` is fresh once; later inserts are replays while the row exists, that is until a
//!   purge after its expiry (`expires_at < now`), after which the key is fresh again;
//! - a record is taken at most once, only while live (`expires_at > now`); `put` replaces;
//! - a code is `Fresh` once, then `Reused` (with the token ids recorded for it, sorted) while
//!   unexpired, and `Missing` when unknown or expired; inserting an existing key conflicts.
//!
//! SQLite always (a database file in a temporary directory); PostgreSQL too when
//! `SEGL_TEST_POSTGRES_URL` is set (a new database, dropped afterwards), as in the
//! conformance suite. Each case uses its own key prefix, so cases share one database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use segl_store::{Error, JtiKind, RecordKind, Redemption, Store};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const JTI_KINDS: [JtiKind; 3] = [
    JtiKind::ClientAssertion,
    JtiKind::DpopProof,
    JtiKind::RequestObject,
];
const RECORD_KINDS: [RecordKind; 4] = [
    RecordKind::PushedRequest,
    RecordKind::LoginTransaction,
    RecordKind::Session,
    RecordKind::UpstreamLogin,
];

/// One operation; keys, kinds and times come from small ranges so that they collide.
#[derive(Debug, Clone)]
enum Op {
    InsertJti {
        kind: usize,
        key: u8,
        exp: i64,
    },
    InsertJtis {
        items: Vec<(usize, u8, i64)>,
    },
    Put {
        kind: usize,
        key: u8,
        data: u8,
        exp: i64,
    },
    Get {
        kind: usize,
        key: u8,
        now: i64,
    },
    Take {
        kind: usize,
        key: u8,
        now: i64,
    },
    InsertCode {
        key: u8,
        data: u8,
        exp: i64,
    },
    Redeem {
        key: u8,
        now: i64,
    },
    RecordIssue {
        key: u8,
        jti: u8,
    },
    Purge {
        now: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..4;
    let t = 0i64..12;
    prop_oneof![
        3 => (0..3usize, key.clone(), t.clone()).prop_map(|(kind, key, exp)| Op::InsertJti { kind, key, exp }),
        1 => prop::collection::vec((0..3usize, key.clone(), t.clone()), 1..4).prop_map(|items| Op::InsertJtis { items }),
        2 => (0..4usize, key.clone(), 0u8..3, t.clone()).prop_map(|(kind, key, data, exp)| Op::Put { kind, key, data, exp }),
        1 => (0..4usize, key.clone(), t.clone()).prop_map(|(kind, key, now)| Op::Get { kind, key, now }),
        2 => (0..4usize, key.clone(), t.clone()).prop_map(|(kind, key, now)| Op::Take { kind, key, now }),
        2 => (key.clone(), 0u8..3, t.clone()).prop_map(|(key, data, exp)| Op::InsertCode { key, data, exp }),
        3 => (key.clone(), t.clone()).prop_map(|(key, now)| Op::Redeem { key, now }),
        1 => (key.clone(), 0u8..3).prop_map(|(key, jti)| Op::RecordIssue { key, jti }),
        1 => t.prop_map(|now| Op::Purge { now }),
    ]
}

/// What the contract says the store holds.
#[derive(Default)]
struct Model {
    jtis: HashMap<(usize, u8), i64>,
    records: HashMap<(usize, u8), (String, i64)>,
    /// key → (data, expires_at, redeemed)
    codes: HashMap<u8, (String, i64, bool)>,
    issues: HashMap<u8, BTreeSet<String>>,
}

impl Model {
    fn insert_jti(&mut self, kind: usize, key: u8, exp: i64) -> bool {
        match self.jtis.entry((kind, key)) {
            Entry::Occupied(_) => false,
            Entry::Vacant(e) => {
                e.insert(exp);
                true
            }
        }
    }

    fn purge(&mut self, now: i64) {
        self.jtis.retain(|_, exp| *exp >= now);
        self.records.retain(|_, (_, exp)| *exp >= now);
        self.codes.retain(|_, (_, exp, _)| *exp >= now);
        let codes = &self.codes;
        self.issues.retain(|key, _| codes.contains_key(key));
    }
}

/// The case's own bytes for key `k`.
fn key(prefix: u64, k: u8) -> Vec<u8> {
    let mut out = prefix.to_be_bytes().to_vec();
    out.push(k);
    out
}

fn data(d: u8) -> String {
    format!("{{\"data\":{d}}}")
}

async fn check(store: &dyn Store, prefix: u64, ops: &[Op]) {
    let mut m = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let at = format!("op {i}: {op:?}");
        match *op {
            Op::InsertJti { kind, key: k, exp } => {
                let got = store
                    .insert_jti(JTI_KINDS[kind], &key(prefix, k), exp)
                    .await
                    .unwrap();
                assert_eq!(got, m.insert_jti(kind, k, exp), "{at}");
            }
            Op::InsertJtis { ref items } => {
                let keys: Vec<Vec<u8>> = items.iter().map(|(_, k, _)| key(prefix, *k)).collect();
                let batch: Vec<(JtiKind, &[u8], i64)> = items
                    .iter()
                    .zip(&keys)
                    .map(|((kind, _, exp), k)| (JTI_KINDS[*kind], k.as_slice(), *exp))
                    .collect();
                let got = store.insert_jtis(&batch).await.unwrap();
                let want: Vec<bool> = items
                    .iter()
                    .map(|(kind, k, exp)| m.insert_jti(*kind, *k, *exp))
                    .collect();
                assert_eq!(got, want, "{at}");
            }
            Op::Put {
                kind,
                key: k,
                data: d,
                exp,
            } => {
                store
                    .put_record(RECORD_KINDS[kind], &key(prefix, k), &data(d), exp)
                    .await
                    .unwrap();
                m.records.insert((kind, k), (data(d), exp));
            }
            Op::Get { kind, key: k, now } => {
                let got = store
                    .get_record(RECORD_KINDS[kind], &key(prefix, k), now)
                    .await
                    .unwrap();
                let want = m
                    .records
                    .get(&(kind, k))
                    .filter(|(_, exp)| *exp > now)
                    .map(|(d, _)| d.clone());
                assert_eq!(got, want, "{at}");
            }
            Op::Take { kind, key: k, now } => {
                let got = store
                    .take_record(RECORD_KINDS[kind], &key(prefix, k), now)
                    .await
                    .unwrap();
                let live = m.records.get(&(kind, k)).is_some_and(|(_, exp)| *exp > now);
                let want = if live {
                    m.records.remove(&(kind, k)).map(|(d, _)| d)
                } else {
                    None
                };
                assert_eq!(got, want, "{at}");
            }
            Op::InsertCode {
                key: k,
                data: d,
                exp,
            } => {
                let got = store.insert_code(&key(prefix, k), &data(d), exp).await;
                match m.codes.entry(k) {
                    Entry::Occupied(_) => {
                        assert!(matches!(got, Err(Error::Conflict(_))), "{at}: {got:?}");
                    }
                    Entry::Vacant(e) => {
                        got.unwrap();
                        e.insert((data(d), exp, false));
                    }
                }
            }
            Op::Redeem { key: k, now } => {
                let got = store.redeem_code(&key(prefix, k), now).await.unwrap();
                let want = match m.codes.get_mut(&k) {
                    Some((d, exp, redeemed)) if *exp > now => {
                        if *redeemed {
                            Redemption::Reused {
                                data: d.clone(),
                                issued: m
                                    .issues
                                    .get(&k)
                                    .map(|s| s.iter().cloned().collect())
                                    .unwrap_or_default(),
                            }
                        } else {
                            *redeemed = true;
                            Redemption::Fresh(d.clone())
                        }
                    }
                    _ => Redemption::Missing,
                };
                assert_eq!(got, want, "{at}");
            }
            Op::RecordIssue { key: k, jti } => {
                let jti = format!("t{jti}");
                store
                    .record_code_issue(&key(prefix, k), &jti)
                    .await
                    .unwrap();
                m.issues.entry(k).or_default().insert(jti);
            }
            Op::Purge { now } => {
                store.purge_expired(now).await.unwrap();
                m.purge(now);
            }
        }
    }
}

/// Runs the model check on `store`: `cases` random sequences of up to 40 operations.
fn run(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>, cases: u32) {
    static PREFIX: AtomicU64 = AtomicU64::new(1);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            let prefix = PREFIX.fetch_add(1, Ordering::Relaxed);
            rt.block_on(check(store.as_ref(), prefix, &ops));
            Ok(())
        })
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sqlite_one_time_operations_follow_the_model() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("segl.db").display());
    let store = rt.block_on(async {
        let store = segl_store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    run(&rt, store, 40);
}

#[test]
fn postgres_one_time_operations_follow_the_model() {
    use sqlx::Connection;
    let Ok(base) = std::env::var("SEGL_TEST_POSTGRES_URL") else {
        println!(
            "SKIPPED postgres_one_time_operations_follow_the_model: set SEGL_TEST_POSTGRES_URL"
        );
        return;
    };
    let rt = runtime();
    let database = format!("segl_t_model_{}", std::process::id());
    let (url, mut admin) = rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await
            .unwrap();
        // The same server, the new database (query parameters kept).
        let (main, query) = base
            .split_once('?')
            .map_or((base.as_str(), None), |(m, q)| (m, Some(q)));
        let authority = main.find("://").unwrap() + 3;
        let end = main[authority..]
            .find('/')
            .map_or(main.len(), |i| authority + i);
        let mut url = format!("{}/{database}", &main[..end]);
        if let Some(q) = query {
            url = format!("{url}?{q}");
        }
        (url, admin)
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let store = rt.block_on(async {
            let store = segl_store::open(&url).await.unwrap();
            store.migrate().await.unwrap();
            store
        });
        run(&rt, store, 24);
    }));
    rt.block_on(async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {database} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    });
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
