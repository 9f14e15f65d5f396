//! The store's part of a token request: the group commit of its replay records and its audit
//! event ([`Store::commit_group`]), as the server's durable writer makes it for a batch of
//! `n` concurrent client_credentials requests with DPoP (two replay keys and one gated
//! `token_issued` event per request).
//!
//! On an SQLite file (the default deployment: WAL, `synchronous = FULL`, so every commit is a
//! write and a sync of the WAL) and on an in-memory SQLite database (the same SQL without the
//! durability: the difference is what the disk costs). Each database starts with
//! [`PREFILLED`] live replay records, so new keys land on random pages of the unique index as
//! they do in a running server. The times are wall-clock per commit; the `item` throughput is
//! per request.
//!
//! `cargo bench -p segl-store --bench commit`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use divan::Bencher;
use divan::counter::ItemsCount;
use segl_store::{AuditEvent, JtiKind, SqliteStore, Store};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live replay records in each database before the first sample.
const PREFILLED: u64 = 200_000;
/// Far in the future: nothing expires during a run.
const EXPIRES: i64 = 4_000_000_000;

fn main() {
    divan::main();
}

struct Backend {
    runtime: tokio::runtime::Runtime,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

fn backend(cell: &'static OnceLock<Backend>, file: bool) -> &'static Backend {
    cell.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = if file {
            format!("sqlite://{}", dir.path().join("bench.db").display())
        } else {
            "sqlite::memory:".to_owned()
        };
        let store = runtime.block_on(async {
            let store = SqliteStore::open(&url).await.unwrap();
            store.migrate().await.unwrap();
            for _ in 0..PREFILLED / 1_000 {
                let keys: Vec<[u8; 32]> = (0..1_000).map(|_| fresh_key()).collect();
                let jtis: Vec<(JtiKind, &[u8], i64)> = keys
                    .iter()
                    .map(|k| (JtiKind::DpopProof, &k[..], EXPIRES))
                    .collect();
                store
                    .commit_group(&jtis, &[], &|_| Vec::new(), &link)
                    .await
                    .unwrap();
            }
            store
        });
        Backend {
            runtime,
            store,
            _dir: dir,
        }
    })
}

/// A replay key as the server derives them: a SHA-256, so keys spread over the whole index.
fn fresh_key() -> [u8; 32] {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    segl_jose::sha256(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes())
}

/// The chain link: SHA-256 over the previous hash, the sequence number and two of the event's
/// fields. A stand-in (the store cannot call the server's link, which converts the event and
/// hashes its canonical JSON), so the figures leave out the few µs of that conversion.
fn link(prev: &[u8; 32], seq: i64, event: &AuditEvent) -> [u8; 32] {
    let mut input = prev.to_vec();
    input.extend_from_slice(&seq.to_be_bytes());
    input.extend_from_slice(event.request_id.as_deref().unwrap_or("").as_bytes());
    input.extend_from_slice(event.jti.as_deref().unwrap_or("").as_bytes());
    segl_jose::sha256(&input)
}

/// The `token_issued` event of one request, with the fields a client_credentials token has.
fn event(n: usize) -> AuditEvent {
    AuditEvent {
        time: 1_800_000_000,
        event: "token_issued".to_owned(),
        client_id: Some("bench".to_owned()),
        client_name: Some("Bench EPJ".to_owned()),
        orgnr_parent: Some("999977774".to_owned()),
        orgnr_child: None,
        orgnr_supplier: None,
        pid: None,
        actor_chain: vec![],
        audience: Some("bench:api".to_owned()),
        scopes: vec!["bench:api/read".to_owned()],
        jti: Some(format!("{n:032x}")),
        outcome: "success".to_owned(),
        error: None,
        source: Some("127.0.0.1".to_owned()),
        request_id: Some(format!("req-{n}")),
        detail: None,
    }
}

/// One group commit of `keys.len()` requests, each with its assertion's and its proof's key:
/// every key fresh, every event appended.
fn commit(backend: &Backend, keys: &[([u8; 32], [u8; 32])]) {
    let jtis: Vec<(JtiKind, &[u8], i64)> = keys
        .iter()
        .flat_map(|(assertion, proof)| {
            [
                (JtiKind::ClientAssertion, &assertion[..], EXPIRES),
                (JtiKind::DpopProof, &proof[..], EXPIRES),
            ]
        })
        .collect();
    let gated = |fresh: &[bool]| -> Vec<AuditEvent> {
        assert!(fresh.iter().all(|f| *f), "a fresh key was refused");
        (0..fresh.len() / 2).map(event).collect()
    };
    let fresh = backend
        .runtime
        .block_on(backend.store.commit_group(&jtis, &[], &gated, &link))
        .unwrap();
    assert_eq!(fresh.len(), keys.len() * 2);
}

fn run(bencher: Bencher, backend: &'static Backend, requests: usize) {
    bencher
        .counter(ItemsCount::new(requests))
        .with_inputs(|| {
            (0..requests)
                .map(|_| (fresh_key(), fresh_key()))
                .collect::<Vec<_>>()
        })
        .bench_local_values(|keys| commit(backend, &keys));
}

/// A durable commit on an SQLite file, `requests` requests per commit.
#[divan::bench(args = [1, 4, 16, 64])]
fn sqlite_file(bencher: Bencher, requests: usize) {
    static CELL: OnceLock<Backend> = OnceLock::new();
    run(bencher, backend(&CELL, true), requests);
}

/// The same on an in-memory SQLite database: the SQL without the disk.
#[divan::bench(args = [1, 4, 16, 64])]
fn sqlite_memory(bencher: Bencher, requests: usize) {
    static CELL: OnceLock<Backend> = OnceLock::new();
    run(bencher, backend(&CELL, false), requests);
}
