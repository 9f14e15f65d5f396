//! One conformance suite for every [`Store`] implementation.
//!
//! Each case in [`cases`] is a generic async function over a fresh, empty database ([`Db`]);
//! the `conformance!` macro instantiates every case once for SQLite (a new file in a temporary
//! directory) and once for PostgreSQL (a new database `segl_t_<random hex>`, dropped
//! afterwards). The PostgreSQL variants need `SEGL_TEST_POSTGRES_URL`, e.g.
//! `postgres://postgres@127.0.0.1:5432/test`; without it they print that they were skipped and
//! pass.

// This whole file is test code, but clippy only exempts `#[test]` functions themselves from
// the workspace's production-code lints (clippy.toml), not the helpers they call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use segl_store::{
    AuditCheckpoint, AuditEvent, AuditQuery, AuditRecord, Error, JtiKind, PgStore, RecordKind,
    Redemption, Rotation, SqliteStore, Store, StoredKey,
};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming the PostgreSQL server the PG variants run against.
const PG_ENV: &str = "SEGL_TEST_POSTGRES_URL";

/// A fresh, empty database for one test.
struct Db {
    url: String,
}

impl Db {
    /// Opens a store on this database without migrating it.
    async fn open(&self) -> Arc<dyn Store> {
        segl_store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// Opens and migrates a store on this database.
    async fn store(&self) -> Arc<dyn Store> {
        let store = self.open().await;
        store.migrate().await.unwrap();
        store
    }

    /// The rows of `schema_migrations`, read with a separate connection.
    async fn migration_versions(&self) -> Vec<i64> {
        use sqlx::Connection;
        let sql = "SELECT version FROM schema_migrations ORDER BY version";
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        }
    }

    /// The `refresh_tokens` rows of a family, read with a separate connection: how many in all
    /// and how many not replaced.
    async fn refresh_rows(&self, family_id: &str) -> (i64, i64) {
        use sqlx::Connection;
        let columns = "COUNT(*), COUNT(*) - COUNT(replaced_at)";
        if self.url.starts_with("sqlite:") {
            let sql = format!("SELECT {columns} FROM refresh_tokens WHERE family_id = ?");
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(family_id)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        } else {
            let sql = format!("SELECT {columns} FROM refresh_tokens WHERE family_id = $1");
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(family_id)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }

    /// Runs one statement with a separate connection (as someone with direct database access
    /// would); returns the rows it changed.
    async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
            Ok(sqlx::query(sql).execute(&mut conn).await?.rows_affected())
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await?;
            Ok(sqlx::query(sql).execute(&mut conn).await?.rows_affected())
        }
    }

    /// The password in the URL, if any.
    fn password(&self) -> Option<String> {
        let rest = self.url.split_once("://")?.1;
        let userinfo = rest.rsplit_once('@')?.0;
        let password = userinfo.split_once(':')?.1;
        (!password.is_empty()).then(|| password.to_owned())
    }
}

/// A random lowercase hex string (16 digits), unique within this process.
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Runs `test` against a new SQLite database file in a temporary directory.
async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("segl.db").display());
    test(Db { url }).await;
    drop(dir);
}

/// `base` with its database name replaced by `database` (query parameters kept).
fn with_database(base: &str, database: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (base, None),
    };
    let authority_start = main.find("://").map(|i| i + 3).unwrap();
    let authority_end = main[authority_start..]
        .find('/')
        .map_or(main.len(), |i| authority_start + i);
    let mut url = format!("{}/{database}", &main[..authority_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Runs `test` against a new PostgreSQL database created on the server `SEGL_TEST_POSTGRES_URL`
/// names and dropped afterwards (even when the test fails); skips when the variable is unset.
async fn with_postgres<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    use sqlx::Connection;
    let Ok(base) = std::env::var(PG_ENV) else {
        println!("SKIPPED {name}: set {PG_ENV} (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    let database = format!("segl_t_{}", random_hex());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("connect to {PG_ENV}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = with_database(&base, &database);
    // Spawned so that a failing test still reaches the DROP below.
    let outcome = tokio::spawn(test(Db { url })).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {database} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A signing key with recognisable contents.
fn signing_key(kid: &str, created_at: i64, activate_at: i64) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        alg: "RS256".to_owned(),
        public_jwk: format!(r#"{{"kty":"RSA","kid":"{kid}","n":"AQAB","e":"AQAB"}}"#),
        private_key: [&[0u8, 255, 0, 1][..], kid.as_bytes()].concat(),
        created_at,
        activate_at,
    }
}

/// Refresh-token data with recognisable contents.
const RT_DATA: &str = r#"{"client_id":"c","scope":"openid offline_access","note":"ærø ✓"}"#;

/// The outcome a first rotation in family `family_id` (data [`RT_DATA`]) answers.
fn rotated(family_id: &str, expires_at: i64) -> Rotation {
    Rotation::Rotated {
        family_id: family_id.to_owned(),
        data: RT_DATA.to_owned(),
        expires_at,
    }
}

/// The outcome a grace retry in family `family_id` (data [`RT_DATA`]) answers.
fn grace(family_id: &str, expires_at: i64) -> Rotation {
    Rotation::Grace {
        family_id: family_id.to_owned(),
        data: RT_DATA.to_owned(),
        expires_at,
    }
}

/// The outcome of a reuse in family `family_id`.
fn reused(family_id: &str) -> Rotation {
    Rotation::Reused {
        family_id: family_id.to_owned(),
    }
}

/// A deterministic stand-in for the chain hash (the real one is segl-core's): what the store
/// must do is call it with the previous hash, the sequence number and the event, in order.
fn test_link(prev: &[u8; 32], seq: i64, event: &AuditEvent) -> [u8; 32] {
    use std::hash::{Hash, Hasher};
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (i, prev, seq, event).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    out
}

/// An audit event with recognisable contents.
fn audit_event(time: i64, client: &str, pid: Option<&str>, detail: &str) -> AuditEvent {
    AuditEvent {
        time,
        event: "token_issued".to_owned(),
        client_id: Some(client.to_owned()),
        client_name: Some("Acme EPJ ærø ✓".to_owned()),
        orgnr_parent: Some("999977774".to_owned()),
        orgnr_child: None,
        orgnr_supplier: None,
        pid: pid.map(str::to_owned),
        actor_chain: vec![],
        audience: Some("nhn:sfm".to_owned()),
        scopes: vec!["nhn:sfm/api".to_owned(), "openid".to_owned()],
        jti: Some(format!("JTI-{detail}")),
        outcome: "success".to_owned(),
        error: None,
        source: Some("127.0.0.1".to_owned()),
        request_id: Some(format!("req-{detail}")),
        detail: Some(detail.to_owned()),
    }
}

/// Asserts that `records` are the whole chain: seq 1, 2, … and every link made by
/// [`test_link`] from the previous hash.
fn assert_one_chain(records: &[AuditRecord]) {
    let mut prev = [0u8; 32];
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1, "seq");
        assert_eq!(r.prev_hash, prev.to_vec(), "prev_hash of seq {}", r.seq);
        let hash = test_link(&prev, r.seq, &r.event);
        assert_eq!(r.hash, hash.to_vec(), "hash of seq {}", r.seq);
        prev = hash;
    }
}

/// Every audit event of the store, read in pages of 7.
async fn all_audit_events(store: &dyn Store) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    loop {
        let from = out.last().map_or(1, |r| r.seq + 1);
        let page = store.audit_events(from, 7).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The conformance cases; each gets a fresh, empty (unmigrated) database.
mod cases {
    use super::*;

    /// Migrating again (from the same or another store) changes nothing and keeps the data.
    pub async fn migrate_twice_is_idempotent(db: &Db) {
        let store = db.store().await;
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"k", 100)
                .await
                .unwrap()
        );
        store.migrate().await.unwrap();
        db.store().await.migrate().await.unwrap();
        assert_eq!(db.migration_versions().await, vec![1, 2, 3, 4, 5]);
        assert!(
            !store
                .insert_jti(JtiKind::DpopProof, b"k", 100)
                .await
                .unwrap()
        );
    }

    /// Several processes starting at once (each opening the new database and migrating it)
    /// all succeed, and the migrations are applied once.
    pub async fn migrate_concurrently(db: &Db) {
        let (a, b, c, d) = tokio::join!(db.open(), db.open(), db.open(), db.open());
        let results = tokio::join!(a.migrate(), b.migrate(), c.migrate(), d.migrate());
        results.0.unwrap();
        results.1.unwrap();
        results.2.unwrap();
        results.3.unwrap();
        assert_eq!(db.migration_versions().await, vec![1, 2, 3, 4, 5]);
        assert!(
            a.insert_jti(JtiKind::ClientAssertion, b"x", 1)
                .await
                .unwrap()
        );
        assert!(
            !b.insert_jti(JtiKind::ClientAssertion, b"x", 1)
                .await
                .unwrap()
        );
        assert!(
            !d.insert_jti(JtiKind::ClientAssertion, b"x", 1)
                .await
                .unwrap()
        );
    }

    /// Using a store before migrating fails cleanly (no panic, no `Ok(true)`).
    pub async fn unmigrated_store_fails(db: &Db) {
        let store = db.open().await;
        let result = store.insert_jti(JtiKind::DpopProof, b"k", 1).await;
        assert!(matches!(result, Err(Error::Corrupt(_))), "{result:?}");
    }

    /// A fresh key is recorded; the same key again is a replay, whatever its expiry.
    pub async fn jti_fresh_then_replay(db: &Db) {
        let store = db.store().await;
        assert!(
            store
                .insert_jti(JtiKind::ClientAssertion, b"client|jti-1", 1_000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_jti(JtiKind::ClientAssertion, b"client|jti-1", 1_000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_jti(JtiKind::ClientAssertion, b"client|jti-1", 9_000)
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_jti(JtiKind::ClientAssertion, b"client|jti-2", 1_000)
                .await
                .unwrap()
        );
    }

    /// The same key under different kinds is different records.
    pub async fn jti_kinds_are_independent(db: &Db) {
        let store = db.store().await;
        let kinds = [
            JtiKind::ClientAssertion,
            JtiKind::DpopProof,
            JtiKind::RequestObject,
        ];
        for kind in kinds {
            assert!(
                store.insert_jti(kind, b"same", 50).await.unwrap(),
                "{kind:?}"
            );
        }
        for kind in kinds {
            assert!(
                !store.insert_jti(kind, b"same", 50).await.unwrap(),
                "{kind:?}"
            );
        }
    }

    /// Keys are opaque bytes up to 64 long; longer keys are refused.
    pub async fn jti_key_length(db: &Db) {
        let store = db.store().await;
        let max = [0xa5u8; 64];
        assert!(store.insert_jti(JtiKind::DpopProof, &max, 5).await.unwrap());
        assert!(!store.insert_jti(JtiKind::DpopProof, &max, 5).await.unwrap());
        // A key that differs only in length is a different key; bytes are not text.
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, &max[..63], 5)
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, &[0, 0, 0], 5)
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, &[0, 0], 5)
                .await
                .unwrap()
        );
        let result = store.insert_jti(JtiKind::DpopProof, &[1u8; 65], 5).await;
        assert!(matches!(result, Err(Error::Corrupt(_))), "{result:?}");
    }

    /// 16 concurrent callers on a multi-threaded runtime: exactly one sees the key as fresh.
    pub async fn jti_concurrent_inserts_have_one_winner(db: &Db) {
        let stores = [db.store().await, db.open().await];
        for round in 0..5u8 {
            let barrier = Arc::new(tokio::sync::Barrier::new(16));
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let store = Arc::clone(&stores[i % stores.len()]);
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store
                            .insert_jti(JtiKind::DpopProof, &[round; 32], 100)
                            .await
                    })
                })
                .collect();
            let mut fresh = 0;
            for task in tasks {
                if task.await.unwrap().unwrap() {
                    fresh += 1;
                }
            }
            assert_eq!(fresh, 1, "round {round}");
        }
    }

    /// Only records that expired before `now` are purged; a purged key can be recorded again.
    pub async fn purge_expired_removes_only_expired(db: &Db) {
        let store = db.store().await;
        assert_eq!(store.purge_expired(1_000).await.unwrap(), 0);
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"a", 100)
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_jti(JtiKind::ClientAssertion, b"b", 150)
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"c", 200)
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"d", 300)
                .await
                .unwrap()
        );

        // Expired before 200: a and b; c expires exactly at 200 and is kept.
        assert_eq!(store.purge_expired(200).await.unwrap(), 2);
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"a", 400)
                .await
                .unwrap()
        );
        assert!(
            store
                .insert_jti(JtiKind::ClientAssertion, b"b", 400)
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_jti(JtiKind::DpopProof, b"c", 400)
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_jti(JtiKind::DpopProof, b"d", 400)
                .await
                .unwrap()
        );

        assert_eq!(store.purge_expired(200).await.unwrap(), 0);
        assert_eq!(store.purge_expired(301).await.unwrap(), 2);
        assert_eq!(store.purge_expired(i64::MAX).await.unwrap(), 2);
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"d", 400)
                .await
                .unwrap()
        );
    }

    /// Signing keys: insert, list oldest `activate_at` first, duplicate kid, delete.
    pub async fn signing_keys_lifecycle(db: &Db) {
        let store = db.store().await;
        assert!(store.signing_keys().await.unwrap().is_empty());
        let k1 = signing_key("k1", 10, 100);
        let k2 = signing_key("k2", 20, 200);
        let k3 = signing_key("k3", 5, 300);
        for key in [&k2, &k3, &k1] {
            store.insert_signing_key(key).await.unwrap();
        }
        assert_eq!(
            store.signing_keys().await.unwrap(),
            vec![k1.clone(), k2.clone(), k3.clone()]
        );

        let duplicate = signing_key("k2", 99, 999);
        let result = store.insert_signing_key(&duplicate).await;
        assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");
        assert_eq!(
            store.signing_keys().await.unwrap(),
            vec![k1.clone(), k2.clone(), k3.clone()]
        );

        assert!(store.delete_signing_key("k2").await.unwrap());
        assert!(!store.delete_signing_key("k2").await.unwrap());
        assert!(!store.delete_signing_key("nope").await.unwrap());
        assert_eq!(store.signing_keys().await.unwrap(), vec![k1, k3]);
        // A deleted kid can be added again.
        store.insert_signing_key(&duplicate).await.unwrap();
        assert_eq!(store.signing_keys().await.unwrap().len(), 3);
    }

    /// The first stored secret wins, for sequential and concurrent callers and across stores.
    pub async fn secret_or_insert_returns_the_first_value(db: &Db) {
        let a = db.store().await;
        let b = db.open().await;
        assert_eq!(
            a.secret_or_insert("hmac", b"first").await.unwrap(),
            b"first"
        );
        assert_eq!(
            b.secret_or_insert("hmac", b"second").await.unwrap(),
            b"first"
        );
        assert_eq!(
            a.secret_or_insert("other", b"second").await.unwrap(),
            b"second"
        );

        for round in 0..5 {
            let name = format!("race-{round}");
            let (ra, rb) = tokio::join!(
                a.secret_or_insert(&name, b"from-a"),
                b.secret_or_insert(&name, b"from-b"),
            );
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(ra, rb, "{name}");
            assert!(ra == b"from-a" || ra == b"from-b", "{name}");
        }
    }

    /// Everything written survives dropping the store and opening the database again.
    pub async fn data_survives_reopen(db: &Db) {
        let key = signing_key("persist", 1, 2);
        {
            let store = db.store().await;
            assert!(
                store
                    .insert_jti(JtiKind::RequestObject, b"persist", 77)
                    .await
                    .unwrap()
            );
            store.insert_signing_key(&key).await.unwrap();
            assert_eq!(store.secret_or_insert("s", b"v1").await.unwrap(), b"v1");
        }
        let store = db.store().await;
        assert!(
            !store
                .insert_jti(JtiKind::RequestObject, b"persist", 77)
                .await
                .unwrap()
        );
        assert_eq!(store.signing_keys().await.unwrap(), vec![key]);
        assert_eq!(store.secret_or_insert("s", b"v2").await.unwrap(), b"v1");
    }

    /// Records: put, get while live (`expires_at > now`), replace, delete.
    pub async fn records_put_get_replace_delete(db: &Db) {
        let store = db.store().await;
        let kind = RecordKind::LoginTransaction;
        assert_eq!(store.get_record(kind, b"r", 0).await.unwrap(), None);
        let json = r#"{"client_id":"c","scope":"openid","note":"ærø ✓ \"q\""}"#;
        store.put_record(kind, b"r", json, 100).await.unwrap();
        assert_eq!(
            store.get_record(kind, b"r", 99).await.unwrap().as_deref(),
            Some(json)
        );
        // Reading does not consume.
        assert_eq!(
            store.get_record(kind, b"r", 0).await.unwrap().as_deref(),
            Some(json)
        );
        // Expired at exactly `expires_at`.
        assert_eq!(store.get_record(kind, b"r", 100).await.unwrap(), None);
        assert_eq!(store.get_record(kind, b"r", 101).await.unwrap(), None);
        // Same bytes but shorter: a different key.
        assert_eq!(store.get_record(kind, b"", 0).await.unwrap(), None);

        // Replacing changes both the data and the expiry.
        store.put_record(kind, b"r", "second", 50).await.unwrap();
        assert_eq!(
            store.get_record(kind, b"r", 49).await.unwrap().as_deref(),
            Some("second")
        );
        assert_eq!(store.get_record(kind, b"r", 60).await.unwrap(), None);
        store.put_record(kind, b"r", "third", 500).await.unwrap();
        assert_eq!(
            store.get_record(kind, b"r", 400).await.unwrap().as_deref(),
            Some("third")
        );
        // An empty string is data, not absence.
        store.put_record(kind, b"empty", "", 500).await.unwrap();
        assert_eq!(
            store
                .get_record(kind, b"empty", 0)
                .await
                .unwrap()
                .as_deref(),
            Some("")
        );

        assert!(store.delete_record(kind, b"r").await.unwrap());
        assert!(!store.delete_record(kind, b"r").await.unwrap());
        assert_eq!(store.get_record(kind, b"r", 0).await.unwrap(), None);
        // Deleting does not look at the expiry.
        store.put_record(kind, b"old", "x", 10).await.unwrap();
        assert!(store.delete_record(kind, b"old").await.unwrap());
    }

    /// The same key under different record kinds is different records.
    pub async fn records_kinds_are_independent(db: &Db) {
        let store = db.store().await;
        let kinds = [
            RecordKind::PushedRequest,
            RecordKind::LoginTransaction,
            RecordKind::Session,
        ];
        for kind in kinds {
            store
                .put_record(kind, b"same", &format!("{kind:?}"), 100)
                .await
                .unwrap();
        }
        for kind in kinds {
            assert_eq!(
                store.get_record(kind, b"same", 0).await.unwrap(),
                Some(format!("{kind:?}"))
            );
        }
        assert_eq!(
            store
                .take_record(RecordKind::PushedRequest, b"same", 0)
                .await
                .unwrap()
                .as_deref(),
            Some("PushedRequest")
        );
        assert!(
            store
                .delete_record(RecordKind::Session, b"same")
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .get_record(RecordKind::PushedRequest, b"same", 0)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .get_record(RecordKind::LoginTransaction, b"same", 0)
                .await
                .unwrap()
                .as_deref(),
            Some("LoginTransaction")
        );
        assert_eq!(
            store
                .get_record(RecordKind::Session, b"same", 0)
                .await
                .unwrap(),
            None
        );
        // A record key does not collide with a jti or a code of the same bytes.
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"same", 100)
                .await
                .unwrap()
        );
        store.insert_code(b"same", "code", 100).await.unwrap();
        assert_eq!(
            store
                .get_record(RecordKind::LoginTransaction, b"same", 0)
                .await
                .unwrap()
                .as_deref(),
            Some("LoginTransaction")
        );
    }

    /// `take_record` returns a live record once and deletes it; an expired one is not
    /// returned.
    pub async fn records_take_once(db: &Db) {
        let store = db.store().await;
        let kind = RecordKind::PushedRequest;
        assert_eq!(store.take_record(kind, b"t", 0).await.unwrap(), None);
        store.put_record(kind, b"t", "par", 100).await.unwrap();
        assert_eq!(
            store.take_record(kind, b"t", 99).await.unwrap().as_deref(),
            Some("par")
        );
        assert_eq!(store.take_record(kind, b"t", 0).await.unwrap(), None);
        assert_eq!(store.get_record(kind, b"t", 0).await.unwrap(), None);
        assert!(!store.delete_record(kind, b"t").await.unwrap());

        store.put_record(kind, b"e", "expired", 100).await.unwrap();
        assert_eq!(store.take_record(kind, b"e", 100).await.unwrap(), None);
        assert_eq!(store.take_record(kind, b"e", 500).await.unwrap(), None);
        // A record can be put again after it was taken.
        store.put_record(kind, b"t", "again", 100).await.unwrap();
        assert_eq!(
            store.take_record(kind, b"t", 0).await.unwrap().as_deref(),
            Some("again")
        );
    }

    /// 16 concurrent `take_record` calls (on two stores) of one record: exactly one gets it.
    pub async fn records_concurrent_take_has_one_winner(db: &Db) {
        let stores = [db.store().await, db.open().await];
        for round in 0..5u8 {
            let key = [round; 32];
            stores[0]
                .put_record(RecordKind::Session, &key, &format!("round {round}"), 100)
                .await
                .unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(16));
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let store = Arc::clone(&stores[i % stores.len()]);
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.take_record(RecordKind::Session, &key, 50).await
                    })
                })
                .collect();
            let mut taken = Vec::new();
            for task in tasks {
                if let Some(data) = task.await.unwrap().unwrap() {
                    taken.push(data);
                }
            }
            assert_eq!(taken, vec![format!("round {round}")], "round {round}");
        }
    }

    /// Authorization codes: duplicate insert, fresh then reused redemption with the recorded
    /// token ids, unknown and expired codes.
    pub async fn codes_redeem_once_then_reused(db: &Db) {
        let store = db.store().await;
        let data = r#"{"client_id":"c","redirect_uri":"https://app/cb"}"#;
        store.insert_code(b"code-1", data, 100).await.unwrap();
        let result = store.insert_code(b"code-1", "other", 200).await;
        assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");

        assert_eq!(
            store.redeem_code(b"code-1", 10).await.unwrap(),
            Redemption::Fresh(data.to_owned())
        );
        assert_eq!(
            store.redeem_code(b"code-1", 11).await.unwrap(),
            Redemption::Reused {
                data: data.to_owned(),
                issued: vec![]
            }
        );
        store.record_code_issue(b"code-1", "JTI-B").await.unwrap();
        store.record_code_issue(b"code-1", "JTI-A").await.unwrap();
        // Recording the same id again is not an error and not a second entry.
        store.record_code_issue(b"code-1", "JTI-B").await.unwrap();
        let Redemption::Reused { data: got, issued } =
            store.redeem_code(b"code-1", 12).await.unwrap()
        else {
            panic!("expected Reused");
        };
        assert_eq!(got, data);
        let mut issued = issued;
        issued.sort();
        assert_eq!(issued, vec!["JTI-A".to_owned(), "JTI-B".to_owned()]);
        // A duplicate insert is refused after redemption too.
        let result = store.insert_code(b"code-1", "other", 200).await;
        assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");

        // Issues belong to their code only.
        store.insert_code(b"code-2", "two", 100).await.unwrap();
        store.record_code_issue(b"code-2", "JTI-C").await.unwrap();
        assert_eq!(
            store.redeem_code(b"code-2", 10).await.unwrap(),
            Redemption::Fresh("two".to_owned())
        );
        assert_eq!(
            store.redeem_code(b"code-2", 10).await.unwrap(),
            Redemption::Reused {
                data: "two".to_owned(),
                issued: vec!["JTI-C".to_owned()]
            }
        );

        // Once the row has expired, a redeemed code is Missing.
        assert_eq!(
            store.redeem_code(b"code-1", 100).await.unwrap(),
            Redemption::Missing
        );
        assert_eq!(
            store.redeem_code(b"unknown", 10).await.unwrap(),
            Redemption::Missing
        );
    }

    /// An expired code is Missing, never Fresh, and stays unredeemed.
    pub async fn codes_expired_is_missing(db: &Db) {
        let store = db.store().await;
        store.insert_code(b"late", "late", 100).await.unwrap();
        assert_eq!(
            store.redeem_code(b"late", 100).await.unwrap(),
            Redemption::Missing
        );
        assert_eq!(
            store.redeem_code(b"late", 1_000).await.unwrap(),
            Redemption::Missing
        );
        // Redeeming with an earlier clock still works: the failed attempts spent nothing.
        assert_eq!(
            store.redeem_code(b"late", 99).await.unwrap(),
            Redemption::Fresh("late".to_owned())
        );
    }

    /// 16 concurrent redemptions (on two stores) of one code: exactly one Fresh, 15 Reused.
    pub async fn codes_concurrent_redeem_has_one_winner(db: &Db) {
        let stores = [db.store().await, db.open().await];
        for round in 0..5u8 {
            let key = [round; 32];
            let data = format!("code {round}");
            stores[0].insert_code(&key, &data, 100).await.unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(16));
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let store = Arc::clone(&stores[i % stores.len()]);
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.redeem_code(&key, 50).await
                    })
                })
                .collect();
            let (mut fresh, mut reused) = (0, 0);
            for task in tasks {
                match task.await.unwrap().unwrap() {
                    Redemption::Fresh(got) => {
                        assert_eq!(got, data);
                        fresh += 1;
                    }
                    Redemption::Reused { data: got, issued } => {
                        assert_eq!(got, data);
                        assert!(issued.is_empty(), "{issued:?}");
                        reused += 1;
                    }
                    Redemption::Missing => panic!("round {round}: Missing"),
                }
            }
            assert_eq!((fresh, reused), (1, 15), "round {round}");
        }
    }

    /// Revocation: unknown ids are not revoked; a revocation keeps the later expiry; the row
    /// stays (and reports revoked) until purged.
    pub async fn token_revocation(db: &Db) {
        let store = db.store().await;
        assert!(!store.is_token_revoked("A").await.unwrap());
        store.revoke_token("A", 100).await.unwrap();
        assert!(store.is_token_revoked("A").await.unwrap());
        assert!(!store.is_token_revoked("a").await.unwrap());
        assert!(!store.is_token_revoked("B").await.unwrap());

        // An earlier expiry does not shorten the revocation...
        store.revoke_token("A", 50).await.unwrap();
        assert_eq!(store.purge_expired(60).await.unwrap(), 0);
        assert!(store.is_token_revoked("A").await.unwrap());
        // ...a later one extends it.
        store.revoke_token("A", 300).await.unwrap();
        assert_eq!(store.purge_expired(200).await.unwrap(), 0);
        assert!(store.is_token_revoked("A").await.unwrap());
        // Past its expiry (not yet purged) it is still reported; purging removes it.
        assert!(store.is_token_revoked("A").await.unwrap());
        assert_eq!(store.purge_expired(301).await.unwrap(), 1);
        assert!(!store.is_token_revoked("A").await.unwrap());
    }

    /// `purge_expired` removes expired records, codes (with their issues), revocations and
    /// issues of codes that no longer exist, counts every row, and keeps live ones.
    pub async fn purge_expired_removes_login_state(db: &Db) {
        let store = db.store().await;
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"j", 100)
                .await
                .unwrap()
        );
        store
            .put_record(RecordKind::Session, b"old", "old", 100)
            .await
            .unwrap();
        store
            .put_record(RecordKind::PushedRequest, b"old", "old", 100)
            .await
            .unwrap();
        store
            .put_record(RecordKind::Session, b"new", "new", 300)
            .await
            .unwrap();
        store
            .put_record(RecordKind::Session, b"edge", "edge", 200)
            .await
            .unwrap();
        store.insert_code(b"c-old", "old", 100).await.unwrap();
        assert!(matches!(
            store.redeem_code(b"c-old", 50).await.unwrap(),
            Redemption::Fresh(_)
        ));
        store.record_code_issue(b"c-old", "T1").await.unwrap();
        store.record_code_issue(b"c-old", "T2").await.unwrap();
        store.insert_code(b"c-new", "new", 300).await.unwrap();
        store.record_code_issue(b"c-new", "T3").await.unwrap();
        store.revoke_token("R-old", 100).await.unwrap();
        store.revoke_token("R-new", 300).await.unwrap();

        assert_eq!(store.purge_expired(100).await.unwrap(), 0);
        // jti 1 + records 2 + code 1 + its issues 2 + revocation 1.
        assert_eq!(store.purge_expired(200).await.unwrap(), 7);
        assert_eq!(store.purge_expired(200).await.unwrap(), 0);

        // The expired rows are gone even for an earlier clock.
        for kind in [RecordKind::Session, RecordKind::PushedRequest] {
            assert_eq!(store.get_record(kind, b"old", 0).await.unwrap(), None);
            assert!(!store.delete_record(kind, b"old").await.unwrap());
        }
        assert_eq!(
            store.redeem_code(b"c-old", 0).await.unwrap(),
            Redemption::Missing
        );
        assert!(!store.is_token_revoked("R-old").await.unwrap());
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"j", 100)
                .await
                .unwrap()
        );

        // Live rows (and the one expiring exactly at `now`) are kept.
        assert_eq!(
            store
                .get_record(RecordKind::Session, b"new", 0)
                .await
                .unwrap()
                .as_deref(),
            Some("new")
        );
        assert_eq!(
            store
                .get_record(RecordKind::Session, b"edge", 0)
                .await
                .unwrap()
                .as_deref(),
            Some("edge")
        );
        assert!(store.is_token_revoked("R-new").await.unwrap());
        assert_eq!(
            store.redeem_code(b"c-new", 0).await.unwrap(),
            Redemption::Fresh("new".to_owned())
        );
        assert_eq!(
            store.redeem_code(b"c-new", 0).await.unwrap(),
            Redemption::Reused {
                data: "new".to_owned(),
                issued: vec!["T3".to_owned()]
            }
        );

        // The purged code's issues went with it: a new code under the same key starts empty.
        store.insert_code(b"c-old", "again", 500).await.unwrap();
        assert_eq!(
            store.redeem_code(b"c-old", 0).await.unwrap(),
            Redemption::Fresh("again".to_owned())
        );
        assert_eq!(
            store.redeem_code(b"c-old", 0).await.unwrap(),
            Redemption::Reused {
                data: "again".to_owned(),
                issued: vec![]
            }
        );

        // Issues recorded for a code that does not exist are purged too.
        store.record_code_issue(b"nowhere", "T9").await.unwrap();
        assert_eq!(store.purge_expired(0).await.unwrap(), 1);

        // jti j (100) is not expired before 101; everything else is by 10 000.
        // records new + edge, code c-new + issue T3, code c-old, revocation R-new, jti j.
        assert_eq!(store.purge_expired(10_000).await.unwrap(), 7);
    }

    /// Keys longer than 64 bytes and text containing NUL are refused by every new method;
    /// token ids are bounded too.
    pub async fn login_state_input_limits(db: &Db) {
        let store = db.store().await;
        let max = [0x5au8; 64];
        let long = [0x5au8; 65];
        let kind = RecordKind::Session;
        store.put_record(kind, &max, "ok", 100).await.unwrap();
        assert_eq!(
            store.get_record(kind, &max, 0).await.unwrap().as_deref(),
            Some("ok")
        );
        store.insert_code(&max, "ok", 100).await.unwrap();
        store.record_code_issue(&max, "J").await.unwrap();
        assert!(matches!(
            store.redeem_code(&max, 0).await.unwrap(),
            Redemption::Fresh(_)
        ));

        let corrupt = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Corrupt(_))), "{r:?}");
        corrupt(store.put_record(kind, &long, "x", 100).await);
        corrupt(store.get_record(kind, &long, 0).await.map(drop));
        corrupt(store.take_record(kind, &long, 0).await.map(drop));
        corrupt(store.delete_record(kind, &long).await.map(drop));
        corrupt(store.insert_code(&long, "x", 100).await);
        corrupt(store.redeem_code(&long, 0).await.map(drop));
        corrupt(store.record_code_issue(&long, "J").await);

        corrupt(store.put_record(kind, b"k", "a\0b", 100).await);
        corrupt(store.insert_code(b"k", "a\0b", 100).await);
        corrupt(store.record_code_issue(b"k", "a\0b").await);
        corrupt(store.revoke_token("a\0b", 100).await);
        corrupt(store.is_token_revoked("a\0b").await.map(drop));

        let id = "J".repeat(255);
        store.revoke_token(&id, 100).await.unwrap();
        assert!(store.is_token_revoked(&id).await.unwrap());
        store.record_code_issue(b"k", &id).await.unwrap();
        let too_long = "J".repeat(256);
        corrupt(store.revoke_token(&too_long, 100).await);
        corrupt(store.is_token_revoked(&too_long).await.map(drop));
        corrupt(store.record_code_issue(b"k", &too_long).await);
        // Nothing was written by the refused calls.
        assert_eq!(store.get_record(kind, b"k", 0).await.unwrap(), None);
        assert_eq!(
            store.redeem_code(b"k", 0).await.unwrap(),
            Redemption::Missing
        );
    }

    /// Records, codes (with their redemption state and issues) and revocations survive
    /// dropping the store and opening the database again.
    pub async fn login_state_survives_reopen(db: &Db) {
        {
            let store = db.store().await;
            store
                .put_record(RecordKind::Session, b"s", "session", 100)
                .await
                .unwrap();
            store.insert_code(b"redeemed", "r", 100).await.unwrap();
            assert!(matches!(
                store.redeem_code(b"redeemed", 0).await.unwrap(),
                Redemption::Fresh(_)
            ));
            store.record_code_issue(b"redeemed", "T").await.unwrap();
            store.insert_code(b"fresh", "f", 100).await.unwrap();
            store.revoke_token("R", 100).await.unwrap();
        }
        let store = db.store().await;
        assert_eq!(
            store
                .get_record(RecordKind::Session, b"s", 0)
                .await
                .unwrap()
                .as_deref(),
            Some("session")
        );
        assert_eq!(
            store.redeem_code(b"redeemed", 0).await.unwrap(),
            Redemption::Reused {
                data: "r".to_owned(),
                issued: vec!["T".to_owned()]
            }
        );
        assert_eq!(
            store.redeem_code(b"fresh", 0).await.unwrap(),
            Redemption::Fresh("f".to_owned())
        );
        assert!(store.is_token_revoked("R").await.unwrap());
    }

    /// First use rotates (the successor carries the family, data and expiry); a retry naming
    /// the same successor inside the grace window (boundary included) is Grace and changes
    /// nothing; the successor is then a live token of its own.
    pub async fn refresh_rotate_then_grace(db: &Db) {
        let store = db.store().await;
        store
            .insert_refresh(b"t0", "fam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        assert_eq!(db.refresh_rows("fam").await, (1, 1));
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 10, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
        assert_eq!(db.refresh_rows("fam").await, (2, 1));
        for now in [10, 12, 15] {
            assert_eq!(
                store.rotate_refresh(b"t0", b"t1", now, 5).await.unwrap(),
                grace("fam", 1_000),
                "now {now}"
            );
        }
        // A clock behind the one that rotated still counts as inside the window.
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 8, 5).await.unwrap(),
            grace("fam", 1_000)
        );
        assert_eq!(db.refresh_rows("fam").await, (2, 1));
        // The owner is found by the replaced token and by its successor.
        let owner = Some(("fam".to_owned(), "client".to_owned()));
        assert_eq!(store.refresh_owner(b"t0", 10).await.unwrap(), owner);
        assert_eq!(store.refresh_owner(b"t1", 10).await.unwrap(), owner);
        assert_eq!(store.refresh_owner(b"t2", 10).await.unwrap(), None);
        // Using the successor rotates it in turn; the family stays valid.
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 20, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 21, 5).await.unwrap(),
            grace("fam", 1_000)
        );
        assert_eq!(db.refresh_rows("fam").await, (3, 1));
        assert_eq!(store.refresh_owner(b"t2", 21).await.unwrap(), owner);
    }

    /// A retry after the grace window is a reuse: the family is revoked and every token of it
    /// (the successor, the old one) is Revoked from then on, though still found by
    /// `refresh_owner`.
    pub async fn refresh_retry_after_grace_is_reuse(db: &Db) {
        let store = db.store().await;
        store
            .insert_refresh(b"t0", "fam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 10, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 16, 5).await.unwrap(),
            reused("fam")
        );
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 17, 5).await.unwrap(),
            Rotation::Revoked
        );
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 17, 5).await.unwrap(),
            Rotation::Revoked
        );
        assert_eq!(db.refresh_rows("fam").await, (2, 1));
        let owner = Some(("fam".to_owned(), "client".to_owned()));
        assert_eq!(store.refresh_owner(b"t0", 17).await.unwrap(), owner);
        assert_eq!(store.refresh_owner(b"t1", 17).await.unwrap(), owner);
        // With a zero grace window, only a retry in the same second is Grace.
        store
            .insert_refresh(b"u0", "zero", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        assert_eq!(
            store.rotate_refresh(b"u0", b"u1", 10, 0).await.unwrap(),
            rotated("zero", 1_000)
        );
        assert_eq!(
            store.rotate_refresh(b"u0", b"u1", 10, 0).await.unwrap(),
            grace("zero", 1_000)
        );
        assert_eq!(
            store.rotate_refresh(b"u0", b"u1", 11, 0).await.unwrap(),
            reused("zero")
        );
    }

    /// Once the successor has been used, the old token is a reuse even inside the grace
    /// window: the family is revoked, and every successor is Revoked.
    pub async fn refresh_old_token_after_successor_used_is_reuse(db: &Db) {
        let store = db.store().await;
        store
            .insert_refresh(b"t0", "fam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 10, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 11, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 12, 5).await.unwrap(),
            reused("fam")
        );
        for (old, new) in [(&b"t2"[..], &b"t3"[..]), (b"t1", b"t2"), (b"t0", b"t1")] {
            assert_eq!(
                store.rotate_refresh(old, new, 13, 5).await.unwrap(),
                Rotation::Revoked
            );
        }
        assert_eq!(db.refresh_rows("fam").await, (3, 1));
    }

    /// A replaced token used with a different successor (not a retry) is a reuse: the family
    /// is revoked and no row is added.
    pub async fn refresh_different_successor_is_reuse(db: &Db) {
        let store = db.store().await;
        store
            .insert_refresh(b"t0", "fam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        store
            .insert_refresh(b"o0", "other", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 10, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
        assert_eq!(
            store.rotate_refresh(b"t0", b"tX", 10, 5).await.unwrap(),
            reused("fam")
        );
        assert_eq!(db.refresh_rows("fam").await, (2, 1));
        assert_eq!(store.refresh_owner(b"tX", 10).await.unwrap(), None);
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 11, 5).await.unwrap(),
            Rotation::Revoked
        );
        // Another family is not affected.
        assert_eq!(
            store.rotate_refresh(b"o0", b"o1", 11, 5).await.unwrap(),
            rotated("other", 1_000)
        );
    }

    /// Unknown and expired tokens are Missing (before any revocation or reuse check) and
    /// change nothing; `refresh_owner` does not find them.
    pub async fn refresh_missing_and_expired(db: &Db) {
        let store = db.store().await;
        assert_eq!(
            store.rotate_refresh(b"nope", b"n1", 0, 5).await.unwrap(),
            Rotation::Missing
        );
        assert_eq!(store.refresh_owner(b"nope", 0).await.unwrap(), None);
        store
            .insert_refresh(b"t0", "fam", "client", RT_DATA, 100)
            .await
            .unwrap();
        // Expired at exactly `expires_at`.
        for now in [100, 101, 10_000] {
            assert_eq!(
                store.rotate_refresh(b"t0", b"t1", now, 5).await.unwrap(),
                Rotation::Missing,
                "now {now}"
            );
            assert_eq!(store.refresh_owner(b"t0", now).await.unwrap(), None);
        }
        assert_eq!(db.refresh_rows("fam").await, (1, 1));
        // The failed attempts spent nothing: with an earlier clock it rotates.
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 99, 5).await.unwrap(),
            rotated("fam", 100)
        );
        // The successor expires with the family.
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 100, 5).await.unwrap(),
            Rotation::Missing
        );
        assert_eq!(store.refresh_owner(b"t1", 100).await.unwrap(), None);
        // An expired token of a revoked family is Missing too.
        assert!(store.revoke_refresh_family("fam").await.unwrap());
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 100, 5).await.unwrap(),
            Rotation::Missing
        );
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 99, 5).await.unwrap(),
            Rotation::Revoked
        );
    }

    /// 16 concurrent rotations (on two stores) of one token into the same successor: exactly
    /// one Rotated, 15 Grace, and the family ends with two rows, one of them live.
    pub async fn refresh_concurrent_rotation_has_one_winner(db: &Db) {
        let stores = [db.store().await, db.open().await];
        for round in 0..5u8 {
            let family = format!("fam-{round}");
            let (old, new, next) = ([round; 32], [round | 0x80; 32], [round | 0x40; 32]);
            stores[0]
                .insert_refresh(&old, &family, "client", RT_DATA, 1_000)
                .await
                .unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(16));
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let store = Arc::clone(&stores[i % stores.len()]);
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.rotate_refresh(&old, &new, 50, 5).await
                    })
                })
                .collect();
            let (mut rotations, mut graces) = (0, 0);
            for task in tasks {
                match task.await.unwrap().unwrap() {
                    r if r == rotated(&family, 1_000) => rotations += 1,
                    r if r == grace(&family, 1_000) => graces += 1,
                    other => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!((rotations, graces), (1, 15), "round {round}");
            assert_eq!(db.refresh_rows(&family).await, (2, 1), "round {round}");
            // The one successor is live and rotates in turn.
            assert_eq!(
                stores[1].rotate_refresh(&new, &next, 51, 5).await.unwrap(),
                rotated(&family, 1_000),
                "round {round}"
            );
            assert_eq!(
                stores[0].refresh_owner(&next, 51).await.unwrap(),
                Some((family.clone(), "client".to_owned()))
            );
        }
    }

    /// 16 concurrent rotations (on two stores) of one token, each naming its own successor
    /// (a stolen token used alongside the legitimate one): exactly one Rotated; of the others at
    /// least one sees the reuse and revokes the family, the rest see it Reused or already
    /// Revoked. The family ends revoked, with the winner's successor as its only other row.
    pub async fn refresh_concurrent_different_successors_revoke(db: &Db) {
        let stores = [db.store().await, db.open().await];
        for round in 0..5u8 {
            let family = format!("fam-{round}");
            let old = [round; 32];
            stores[0]
                .insert_refresh(&old, &family, "client", RT_DATA, 1_000)
                .await
                .unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(16));
            let tasks: Vec<_> = (0..16u8)
                .map(|i| {
                    let store = Arc::clone(&stores[usize::from(i) % stores.len()]);
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let new = [round | 0x80, i];
                        (new, store.rotate_refresh(&old, &new, 50, 5).await)
                    })
                })
                .collect();
            let (mut winners, mut reuses, mut revoked) = (Vec::new(), 0, 0);
            for task in tasks {
                match task.await.unwrap() {
                    (new, Ok(r)) if r == rotated(&family, 1_000) => winners.push(new),
                    (_, Ok(r)) if r == reused(&family) => reuses += 1,
                    (_, Ok(Rotation::Revoked)) => revoked += 1,
                    (_, other) => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}");
            assert!(reuses >= 1, "round {round}");
            assert_eq!(reuses + revoked, 15, "round {round}");
            assert_eq!(db.refresh_rows(&family).await, (2, 1), "round {round}");
            assert_eq!(
                stores[1]
                    .rotate_refresh(&winners[0], b"next", 51, 5)
                    .await
                    .unwrap(),
                Rotation::Revoked,
                "round {round}"
            );
        }
    }

    /// Revoking a family (found by any of its tokens) makes every token of it Revoked;
    /// revoking is idempotent and reports whether the family exists.
    pub async fn jti_batch_gives_each_verdict(db: &Db) {
        let store = db.store().await;
        assert!(
            store
                .insert_jti(JtiKind::DpopProof, b"seen", 100)
                .await
                .unwrap()
        );
        let verdicts = store
            .insert_jtis(&[
                (JtiKind::ClientAssertion, b"new", 100),
                (JtiKind::DpopProof, b"seen", 100),
                (JtiKind::DpopProof, b"other", 100),
            ])
            .await
            .unwrap();
        assert_eq!(verdicts, vec![true, false, true]);
        assert!(
            !store
                .insert_jti(JtiKind::ClientAssertion, b"new", 100)
                .await
                .unwrap(),
            "committed"
        );
        assert!(
            store
                .insert_jtis(&[(JtiKind::DpopProof, &[0u8; 65], 100)])
                .await
                .is_err(),
            "key bound"
        );
    }

    pub async fn refresh_lookup_reports_liveness(db: &Db) {
        let store = db.store().await;
        assert_eq!(store.refresh_lookup(b"l0", 10).await.unwrap(), None);
        store
            .insert_refresh(b"l0", "lfam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        let found = store.refresh_lookup(b"l0", 10).await.unwrap().unwrap();
        assert_eq!(
            (
                found.family_id.as_str(),
                found.client_id.as_str(),
                found.data.as_str(),
                found.live
            ),
            ("lfam", "client", RT_DATA, true)
        );
        store.rotate_refresh(b"l0", b"l1", 10, 5).await.unwrap();
        assert!(
            !store.refresh_lookup(b"l0", 11).await.unwrap().unwrap().live,
            "replaced"
        );
        assert!(store.refresh_lookup(b"l1", 11).await.unwrap().unwrap().live);
        store.revoke_refresh_family("lfam").await.unwrap();
        assert!(
            !store.refresh_lookup(b"l1", 11).await.unwrap().unwrap().live,
            "revoked family"
        );
        assert_eq!(
            store.refresh_lookup(b"l1", 1_000).await.unwrap(),
            None,
            "expired"
        );
    }

    pub async fn refresh_family_revocation(db: &Db) {
        let store = db.store().await;
        assert!(!store.revoke_refresh_family("fam").await.unwrap());
        store
            .insert_refresh(b"t0", "fam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        store
            .insert_refresh(b"o0", "other", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 10, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
        let (family, client) = store.refresh_owner(b"t0", 11).await.unwrap().unwrap();
        assert_eq!((family.as_str(), client.as_str()), ("fam", "client"));
        assert!(store.revoke_refresh_family(&family).await.unwrap());
        assert!(store.revoke_refresh_family(&family).await.unwrap());
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 12, 5).await.unwrap(),
            Rotation::Revoked
        );
        // Even the grace retry of the old token.
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 12, 5).await.unwrap(),
            Rotation::Revoked
        );
        assert_eq!(db.refresh_rows("fam").await, (2, 1));
        assert_eq!(
            store.refresh_owner(b"t1", 12).await.unwrap(),
            Some(("fam".to_owned(), "client".to_owned()))
        );
        // Family ids are exact.
        assert!(!store.revoke_refresh_family("FAM").await.unwrap());
        assert_eq!(
            store.rotate_refresh(b"o0", b"o1", 12, 5).await.unwrap(),
            rotated("other", 1_000)
        );
    }

    /// `insert_refresh` refuses a duplicate key and a family of another client (writing
    /// nothing), adds tokens to an existing family of the same client, and `rotate_refresh`
    /// refuses a successor key that exists; keys, data and ids are bounded.
    pub async fn refresh_conflicts_and_limits(db: &Db) {
        let store = db.store().await;
        store
            .insert_refresh(b"t0", "fam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        let conflict =
            |r: Result<(), Error>| assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
        conflict(
            store
                .insert_refresh(b"t0", "fam", "client", "x", 1_000)
                .await,
        );
        conflict(
            store
                .insert_refresh(b"t0", "fam2", "client", "x", 1_000)
                .await,
        );
        // The failed insert did not create its family.
        assert!(!store.revoke_refresh_family("fam2").await.unwrap());
        conflict(
            store
                .insert_refresh(b"u0", "fam", "intruder", "x", 1_000)
                .await,
        );
        assert_eq!(store.refresh_owner(b"u0", 0).await.unwrap(), None);
        // Another token of the same client's family; the later expiry is kept.
        store
            .insert_refresh(b"v0", "fam", "client", RT_DATA, 2_000)
            .await
            .unwrap();
        assert_eq!(db.refresh_rows("fam").await, (2, 2));
        assert_eq!(
            store.rotate_refresh(b"v0", b"v1", 1_500, 5).await.unwrap(),
            rotated("fam", 2_000)
        );
        assert_eq!(store.purge_expired(1_500).await.unwrap(), 1);
        assert_eq!(
            store.rotate_refresh(b"v1", b"v2", 1_600, 5).await.unwrap(),
            rotated("fam", 2_000)
        );

        // A successor key that is already a token (or the token itself): nothing changes.
        store
            .insert_refresh(b"w0", "wam", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        let result = store.rotate_refresh(b"w0", b"v2", 10, 5).await;
        assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");
        let result = store.rotate_refresh(b"w0", b"w0", 10, 5).await;
        assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");
        assert_eq!(db.refresh_rows("wam").await, (1, 1));
        assert_eq!(
            store.rotate_refresh(b"w0", b"w1", 10, 5).await.unwrap(),
            rotated("wam", 1_000)
        );

        let max = [0x5au8; 64];
        let long = [0x5au8; 65];
        store
            .insert_refresh(&max, &"F".repeat(255), &"C".repeat(255), "", 1_000)
            .await
            .unwrap();
        assert_eq!(
            store
                .rotate_refresh(&max, &[0x5b; 64], 10, 5)
                .await
                .unwrap(),
            Rotation::Rotated {
                family_id: "F".repeat(255),
                data: String::new(),
                expires_at: 1_000
            }
        );
        let corrupt = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Corrupt(_))), "{r:?}");
        corrupt(store.insert_refresh(&long, "f", "c", "x", 1_000).await);
        corrupt(store.insert_refresh(b"k", "f", "c", "a\0b", 1_000).await);
        corrupt(store.insert_refresh(b"k", "f\0", "c", "x", 1_000).await);
        corrupt(store.insert_refresh(b"k", "f", "c\0", "x", 1_000).await);
        corrupt(
            store
                .insert_refresh(b"k", &"f".repeat(256), "c", "x", 1_000)
                .await,
        );
        corrupt(
            store
                .insert_refresh(b"k", "f", &"c".repeat(256), "x", 1_000)
                .await,
        );
        corrupt(store.rotate_refresh(&long, b"n", 0, 5).await.map(drop));
        corrupt(store.rotate_refresh(b"t0", &long, 0, 5).await.map(drop));
        corrupt(store.refresh_owner(&long, 0).await.map(drop));
        corrupt(store.revoke_refresh_family("f\0").await.map(drop));
        corrupt(
            store
                .revoke_refresh_family(&"f".repeat(256))
                .await
                .map(drop),
        );
        assert_eq!(store.refresh_owner(b"k", 0).await.unwrap(), None);
    }

    /// Delegations: add (again is a no-op), list sorted by bytes, remove.
    pub async fn delegations_add_remove_list(db: &Db) {
        let store = db.store().await;
        assert!(store.delegations().await.unwrap().is_empty());
        for (from, to) in [
            ("999977774", "313745392"),
            ("111111111", "313745392"),
            ("999977774", "100000000"),
            ("abc", "x"),
            ("Zed", "x"),
        ] {
            store.add_delegation(from, to).await.unwrap();
        }
        store
            .add_delegation("999977774", "313745392")
            .await
            .unwrap();
        let pair = |from: &str, to: &str| (from.to_owned(), to.to_owned());
        assert_eq!(
            store.delegations().await.unwrap(),
            vec![
                pair("111111111", "313745392"),
                pair("999977774", "100000000"),
                pair("999977774", "313745392"),
                pair("Zed", "x"),
                pair("abc", "x"),
            ]
        );
        assert!(
            store
                .remove_delegation("999977774", "313745392")
                .await
                .unwrap()
        );
        assert!(
            !store
                .remove_delegation("999977774", "313745392")
                .await
                .unwrap()
        );
        // The direction matters.
        assert!(
            !store
                .remove_delegation("313745392", "111111111")
                .await
                .unwrap()
        );
        assert_eq!(store.delegations().await.unwrap().len(), 4);
        // Removed delegations can be added again; purging never removes delegations.
        store
            .add_delegation("999977774", "313745392")
            .await
            .unwrap();
        assert_eq!(store.purge_expired(i64::MAX).await.unwrap(), 0);
        assert_eq!(store.delegations().await.unwrap().len(), 5);

        let corrupt = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Corrupt(_))), "{r:?}");
        corrupt(store.add_delegation("1\0", "2").await);
        corrupt(store.add_delegation("1", &"2".repeat(256)).await);
        corrupt(store.remove_delegation("1\0", "2").await.map(drop));
        corrupt(
            store
                .remove_delegation(&"1".repeat(256), "2")
                .await
                .map(drop),
        );
        assert_eq!(store.delegations().await.unwrap().len(), 5);
    }

    /// `purge_expired` removes expired refresh tokens (replaced or not) and families (revoked
    /// or not), counting each row, and keeps live ones.
    pub async fn purge_expired_removes_refresh_state(db: &Db) {
        let store = db.store().await;
        store
            .insert_refresh(b"a0", "a", "client", RT_DATA, 100)
            .await
            .unwrap();
        assert_eq!(
            store.rotate_refresh(b"a0", b"a1", 10, 5).await.unwrap(),
            rotated("a", 100)
        );
        store
            .insert_refresh(b"r0", "r", "client", RT_DATA, 100)
            .await
            .unwrap();
        assert!(store.revoke_refresh_family("r").await.unwrap());
        store
            .insert_refresh(b"e0", "e", "client", RT_DATA, 200)
            .await
            .unwrap();
        store
            .insert_refresh(b"b0", "b", "client", RT_DATA, 300)
            .await
            .unwrap();

        assert_eq!(store.purge_expired(100).await.unwrap(), 0);
        // a: two tokens + family; r: token + family.
        assert_eq!(store.purge_expired(200).await.unwrap(), 5);
        assert_eq!(store.purge_expired(200).await.unwrap(), 0);
        assert_eq!(db.refresh_rows("a").await, (0, 0));
        for key in [&b"a0"[..], b"a1", b"r0"] {
            assert_eq!(store.refresh_owner(key, 0).await.unwrap(), None);
            assert_eq!(
                store.rotate_refresh(key, b"z", 0, 5).await.unwrap(),
                Rotation::Missing
            );
        }
        assert!(!store.revoke_refresh_family("a").await.unwrap());
        assert!(!store.revoke_refresh_family("r").await.unwrap());
        // A purged key and family can be used again.
        store
            .insert_refresh(b"a0", "a", "client", RT_DATA, 1_000)
            .await
            .unwrap();
        // The one expiring exactly at `now`, and the live one, are kept.
        assert_eq!(
            store.rotate_refresh(b"e0", b"e1", 0, 5).await.unwrap(),
            rotated("e", 200)
        );
        assert_eq!(
            store.rotate_refresh(b"b0", b"b1", 0, 5).await.unwrap(),
            rotated("b", 300)
        );
        // e: two tokens + family; b: two tokens + family; a: token + family.
        assert_eq!(store.purge_expired(10_000).await.unwrap(), 8);
    }

    /// Refresh tokens (with their rotation and revocation state) and delegations survive
    /// dropping the store and opening the database again.
    pub async fn refresh_state_survives_reopen(db: &Db) {
        {
            let store = db.store().await;
            store
                .insert_refresh(b"t0", "fam", "client", RT_DATA, 1_000)
                .await
                .unwrap();
            assert_eq!(
                store.rotate_refresh(b"t0", b"t1", 10, 5).await.unwrap(),
                rotated("fam", 1_000)
            );
            store
                .insert_refresh(b"r0", "revoked", "client", RT_DATA, 1_000)
                .await
                .unwrap();
            assert!(store.revoke_refresh_family("revoked").await.unwrap());
            store
                .add_delegation("999977774", "313745392")
                .await
                .unwrap();
        }
        let store = db.store().await;
        assert_eq!(
            store.rotate_refresh(b"t0", b"t1", 11, 5).await.unwrap(),
            grace("fam", 1_000)
        );
        assert_eq!(
            store.refresh_owner(b"t1", 11).await.unwrap(),
            Some(("fam".to_owned(), "client".to_owned()))
        );
        assert_eq!(
            store.rotate_refresh(b"r0", b"r1", 11, 5).await.unwrap(),
            Rotation::Revoked
        );
        assert_eq!(
            store.delegations().await.unwrap(),
            vec![("999977774".to_owned(), "313745392".to_owned())]
        );
        assert_eq!(
            store.rotate_refresh(b"t1", b"t2", 12, 5).await.unwrap(),
            rotated("fam", 1_000)
        );
    }

    /// Appending extends one chain: consecutive sequence numbers, each link made from the
    /// previous hash, the head moved; events read back exactly as written.
    pub async fn audit_append_and_read_back(db: &Db) {
        let store = db.store().await;
        let head = store.audit_head().await.unwrap();
        assert_eq!((head.seq, head.hash), (0, vec![0u8; 32]));
        assert!(store.audit_events(1, 10).await.unwrap().is_empty());
        assert_eq!(store.append_audit(&[], &test_link).await.unwrap(), 0);

        let mut first = vec![
            audit_event(100, "epj", None, "a"),
            audit_event(101, "ehr", Some("06828399789"), "b"),
        ];
        first[1].actor_chain = vec!["sfm".to_owned(), "rf actor".to_owned()];
        first[1].orgnr_child = Some("999977776".to_owned());
        first[1].outcome = "failure".to_owned();
        first[1].error = Some("invalid_grant".to_owned());
        first[1].scopes = vec![];
        assert_eq!(store.append_audit(&first, &test_link).await.unwrap(), 2);
        let mut minimal = AuditEvent {
            time: 102,
            event: "key_rotated".to_owned(),
            outcome: "success".to_owned(),
            ..AuditEvent::default()
        };
        minimal.detail = Some("kid=abc".to_owned());
        assert_eq!(
            store
                .append_audit(std::slice::from_ref(&minimal), &test_link)
                .await
                .unwrap(),
            3
        );
        assert_eq!(store.append_audit(&[], &test_link).await.unwrap(), 3);

        let all = all_audit_events(store.as_ref()).await;
        assert_one_chain(&all);
        let events: Vec<AuditEvent> = all.iter().map(|r| r.event.clone()).collect();
        assert_eq!(events, [first[0].clone(), first[1].clone(), minimal]);
        let head = store.audit_head().await.unwrap();
        assert_eq!((head.seq, &head.hash), (3, &all[2].hash));
        // Reads start anywhere.
        let tail = store.audit_events(2, 1).await.unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0], all[1]);
        assert!(store.audit_events(4, 10).await.unwrap().is_empty());
    }

    /// Several processes (stores), each with several tasks, appending segments at once: one
    /// unbroken chain, every event once, every segment contiguous.
    pub async fn audit_concurrent_appenders_form_one_chain(db: &Db) {
        const STORES: usize = 3;
        const TASKS: usize = 4;
        const ROUNDS: usize = 8;
        let mut stores = Vec::new();
        for _ in 0..STORES {
            stores.push(db.store().await);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (p, store) in stores.iter().enumerate() {
            for t in 0..TASKS {
                let store = store.clone();
                tasks.spawn(async move {
                    for round in 0..ROUNDS {
                        let batch: Vec<AuditEvent> = (0..1 + round % 3)
                            .map(|i| audit_event(1, "c", None, &format!("{p}-{t}-{round}-{i}")))
                            .collect();
                        store.append_audit(&batch, &test_link).await.unwrap();
                    }
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let all = all_audit_events(stores[0].as_ref()).await;
        let per_task: usize = (0..ROUNDS).map(|r| 1 + r % 3).sum();
        assert_eq!(all.len(), STORES * TASKS * per_task);
        assert_one_chain(&all);
        assert_eq!(stores[1].audit_head().await.unwrap().seq, all.len() as i64);
        let details: Vec<String> = all
            .iter()
            .map(|r| r.event.detail.clone().unwrap())
            .collect();
        let unique: std::collections::HashSet<&String> = details.iter().collect();
        assert_eq!(unique.len(), details.len(), "every event once");
        // A segment's events are adjacent and in order: each `…-i` with i > 0 follows `…-(i-1)`.
        for (k, d) in details.iter().enumerate() {
            let (segment, i) = d.rsplit_once('-').unwrap();
            let i: usize = i.parse().unwrap();
            if i > 0 {
                assert_eq!(
                    details[k - 1],
                    format!("{segment}-{}", i - 1),
                    "{details:?}"
                );
            }
        }
    }

    /// Queries by person, client, organization (any of the three) and time, paged by seq.
    pub async fn audit_query_filters_and_pages(db: &Db) {
        let store = db.store().await;
        let mut events = vec![
            audit_event(100, "epj", None, "1"),
            audit_event(200, "ehr", Some("06828399789"), "2"),
            audit_event(300, "ehr", Some("13116900216"), "3"),
            audit_event(400, "sfm", Some("06828399789"), "4"),
            audit_event(500, "epj", None, "5"),
        ];
        events[1].orgnr_parent = Some("111111111".to_owned());
        events[2].orgnr_child = Some("111111111".to_owned());
        events[3].orgnr_parent = None;
        events[3].orgnr_supplier = Some("111111111".to_owned());
        store.append_audit(&events, &test_link).await.unwrap();
        let seqs = |q: AuditQuery| {
            let store = store.clone();
            async move {
                store
                    .query_audit(&q)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.seq)
                    .collect::<Vec<_>>()
            }
        };
        let all = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        assert_eq!(seqs(all.clone()).await, [1, 2, 3, 4, 5]);
        let pid = Some("06828399789".to_owned());
        assert_eq!(
            seqs(AuditQuery {
                pid: pid.clone(),
                ..all.clone()
            })
            .await,
            [2, 4]
        );
        let client = Some("epj".to_owned());
        assert_eq!(
            seqs(AuditQuery {
                client_id: client,
                ..all.clone()
            })
            .await,
            [1, 5]
        );
        let org = Some("111111111".to_owned());
        assert_eq!(seqs(AuditQuery { org, ..all.clone() }).await, [2, 3, 4]);
        let org = Some("999977774".to_owned());
        assert_eq!(seqs(AuditQuery { org, ..all.clone() }).await, [1, 3, 5]);
        assert_eq!(
            seqs(AuditQuery {
                from: Some(200),
                to: Some(400),
                ..all.clone()
            })
            .await,
            [2, 3, 4]
        );
        assert_eq!(
            seqs(AuditQuery {
                pid,
                from: Some(201),
                ..all.clone()
            })
            .await,
            [4]
        );
        let page = AuditQuery {
            limit: 2,
            ..all.clone()
        };
        assert_eq!(seqs(page.clone()).await, [1, 2]);
        assert_eq!(
            seqs(AuditQuery {
                after_seq: 2,
                ..page.clone()
            })
            .await,
            [3, 4]
        );
        assert_eq!(
            seqs(AuditQuery {
                after_seq: 4,
                ..page
            })
            .await,
            [5]
        );
        let nobody = Some("x'; DELETE FROM audit_events; --".to_owned());
        assert!(
            seqs(AuditQuery {
                pid: nobody,
                ..all.clone()
            })
            .await
            .is_empty()
        );
        assert_eq!(seqs(all).await.len(), 5);
        // The rows come back whole.
        let found = store
            .query_audit(&AuditQuery {
                client_id: Some("sfm".to_owned()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].event, events[3]);
    }

    /// An event the store cannot keep exactly is refused, and nothing of its batch is written.
    pub async fn audit_refuses_what_it_cannot_keep(db: &Db) {
        let store = db.store().await;
        let good = audit_event(1, "epj", None, "ok");
        let mut nul = good.clone();
        nul.client_id = Some("a\0b".to_owned());
        let mut separator = good.clone();
        separator.scopes = vec!["a\u{1f}b".to_owned()];
        let mut empty_item = good.clone();
        empty_item.actor_chain = vec![String::new()];
        let mut long = good.clone();
        long.detail = Some("x".repeat(segl_store::MAX_AUDIT_TEXT + 1));
        let mut nameless = good.clone();
        nameless.event = String::new();
        for bad in [nul, separator, empty_item, long, nameless] {
            let result = store.append_audit(&[good.clone(), bad], &test_link).await;
            assert!(matches!(result, Err(Error::Corrupt(_))), "{result:?}");
        }
        assert_eq!(store.audit_head().await.unwrap().seq, 0);
        assert!(store.audit_events(1, 10).await.unwrap().is_empty());
        let mut max = good.clone();
        max.detail = Some("é".repeat(segl_store::MAX_AUDIT_TEXT / 2));
        max.scopes = vec!["s".to_owned(); segl_store::MAX_AUDIT_ITEMS];
        assert_eq!(
            store
                .append_audit(&[max.clone()], &test_link)
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.audit_events(1, 1).await.unwrap()[0].event, max);
    }

    /// Checkpoints are kept in seq order (several may name one seq).
    pub async fn audit_checkpoints_round_trip(db: &Db) {
        let store = db.store().await;
        assert!(store.audit_checkpoints().await.unwrap().is_empty());
        let cp = |seq: i64, jws: &str| AuditCheckpoint {
            seq,
            time: 1_000 + seq,
            kid: "kid-1".to_owned(),
            public_jwk: r#"{"kty":"EC"}"#.to_owned(),
            jws: jws.to_owned(),
        };
        for c in [cp(5, "b"), cp(2, "a"), cp(5, "c")] {
            store.insert_audit_checkpoint(&c).await.unwrap();
        }
        assert_eq!(
            store.audit_checkpoints().await.unwrap(),
            [cp(2, "a"), cp(5, "b"), cp(5, "c")]
        );
        let result = store.insert_audit_checkpoint(&cp(6, "x\0")).await;
        assert!(matches!(result, Err(Error::Corrupt(_))), "{result:?}");
        assert_eq!(store.audit_checkpoints().await.unwrap().len(), 3);
    }

    /// Events refuse `UPDATE` and `DELETE` (until someone drops the triggers); purging never
    /// touches the audit log; everything survives reopening.
    pub async fn audit_is_append_only_and_durable(db: &Db) {
        {
            let store = db.store().await;
            store
                .append_audit(&[audit_event(1, "epj", None, "a")], &test_link)
                .await
                .unwrap();
            store
                .insert_audit_checkpoint(&AuditCheckpoint {
                    seq: 1,
                    time: 1,
                    kid: "k".to_owned(),
                    public_jwk: "{}".to_owned(),
                    jws: "j".to_owned(),
                })
                .await
                .unwrap();
            assert_eq!(store.purge_expired(i64::MAX).await.unwrap(), 0);
        }
        assert!(
            db.execute("UPDATE audit_events SET client_id = 'mallory'")
                .await
                .is_err()
        );
        assert!(db.execute("DELETE FROM audit_events").await.is_err());
        let store = db.store().await;
        let all = all_audit_events(store.as_ref()).await;
        assert_eq!(all.len(), 1);
        assert_one_chain(&all);
        assert_eq!(all[0].event.client_id.as_deref(), Some("epj"));
        assert_eq!(store.audit_checkpoints().await.unwrap().len(), 1);
        assert_eq!(
            store
                .append_audit(&[audit_event(2, "epj", None, "b")], &test_link)
                .await
                .unwrap(),
            2
        );
        assert_one_chain(&all_audit_events(store.as_ref()).await);
    }

    /// `ping` succeeds on a reachable database; `Debug` never shows a password.
    pub async fn ping_works(db: &Db) {
        let store = db.open().await;
        store.ping().await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        let shown = format!("{store:?}");
        if let Some(password) = db.password() {
            assert!(!shown.contains(&password), "{shown}");
        }
    }
}

/// Instantiates every listed case for SQLite and for PostgreSQL.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::with_sqlite(|db| async move { super::cases::$case(&db).await }).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::with_postgres(
                        concat!("postgres::", stringify!($case)),
                        |db| async move { super::cases::$case(&db).await },
                    )
                    .await;
                }
            )*
        }
    };
}

conformance!(
    migrate_twice_is_idempotent,
    migrate_concurrently,
    unmigrated_store_fails,
    jti_fresh_then_replay,
    jti_kinds_are_independent,
    jti_key_length,
    jti_concurrent_inserts_have_one_winner,
    purge_expired_removes_only_expired,
    signing_keys_lifecycle,
    secret_or_insert_returns_the_first_value,
    data_survives_reopen,
    ping_works,
    records_put_get_replace_delete,
    records_kinds_are_independent,
    records_take_once,
    records_concurrent_take_has_one_winner,
    codes_redeem_once_then_reused,
    codes_expired_is_missing,
    codes_concurrent_redeem_has_one_winner,
    token_revocation,
    purge_expired_removes_login_state,
    login_state_input_limits,
    login_state_survives_reopen,
    refresh_rotate_then_grace,
    refresh_retry_after_grace_is_reuse,
    refresh_old_token_after_successor_used_is_reuse,
    refresh_different_successor_is_reuse,
    refresh_missing_and_expired,
    refresh_concurrent_rotation_has_one_winner,
    refresh_concurrent_different_successors_revoke,
    refresh_family_revocation,
    refresh_lookup_reports_liveness,
    jti_batch_gives_each_verdict,
    refresh_conflicts_and_limits,
    delegations_add_remove_list,
    purge_expired_removes_refresh_state,
    refresh_state_survives_reopen,
    audit_append_and_read_back,
    audit_concurrent_appenders_form_one_chain,
    audit_query_filters_and_pages,
    audit_refuses_what_it_cannot_keep,
    audit_checkpoints_round_trip,
    audit_is_append_only_and_durable,
);

#[tokio::test]
async fn open_rejects_unsupported_schemes() {
    for url in [
        "",
        "sqlite",
        "mysql://root:hunter2@localhost/segl",
        "redis://127.0.0.1",
        "file:///tmp/segl.db",
    ] {
        match segl_store::open(url).await {
            Err(Error::Config(message)) => assert!(!message.contains("hunter2"), "{message}"),
            other => panic!("{url:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn open_rejects_malformed_urls() {
    for url in [
        "sqlite://",
        "sqlite://x.db?mode=bogus",
        "sqlite:x.db?nonsense=1",
    ] {
        let result = SqliteStore::open(url).await;
        assert!(
            matches!(result, Err(Error::Config(_))),
            "{url:?}: {result:?}"
        );
    }
    let result = SqliteStore::open("postgres://localhost/segl").await;
    assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
    let result = PgStore::open("postgres://localhost:notaport/segl").await;
    assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
}

#[tokio::test]
async fn postgres_closed_port_is_unavailable_quickly() {
    let started = Instant::now();
    let result = segl_store::open("postgres://segl:hunter2@127.0.0.1:1/segl").await;
    let elapsed = started.elapsed();
    match result {
        Err(Error::Unavailable(message)) => assert!(!message.contains("hunter2"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
}

#[tokio::test]
async fn sqlite_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("no/such/dir/segl.db").display()
    );
    let result = SqliteStore::open(&url).await;
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
}

#[tokio::test]
async fn sqlite_url_forms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forms.db");
    let a = segl_store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    a.migrate().await.unwrap();
    assert!(a.insert_jti(JtiKind::DpopProof, b"k", 1).await.unwrap());
    // `sqlite:PATH` names the same file.
    let b = segl_store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    b.migrate().await.unwrap();
    assert!(!b.insert_jti(JtiKind::DpopProof, b"k", 1).await.unwrap());
    assert!(path.exists());
    // The file is in WAL mode, with durable commits.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_memory_database_survives_and_is_private() {
    let a = segl_store::open("sqlite::memory:").await.unwrap();
    let b = segl_store::open("sqlite::memory:").await.unwrap();
    a.migrate().await.unwrap();
    b.migrate().await.unwrap();
    assert!(a.insert_jti(JtiKind::DpopProof, b"k", 1).await.unwrap());
    // Concurrent callers share the one connection.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.insert_jti(JtiKind::DpopProof, b"m", 1).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        fresh += usize::from(task.await.unwrap());
    }
    assert_eq!(fresh, 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!a.insert_jti(JtiKind::DpopProof, b"k", 1).await.unwrap());
    assert!(b.insert_jti(JtiKind::DpopProof, b"k", 1).await.unwrap());
    a.ping().await.unwrap();
}

#[tokio::test]
async fn postgres_unknown_database_is_config() {
    let Ok(base) = std::env::var(PG_ENV) else {
        println!("SKIPPED postgres_unknown_database_is_config: set {PG_ENV}");
        return;
    };
    let url = with_database(&base, &format!("segl_missing_{}", random_hex()));
    let result = PgStore::open(&url).await;
    assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
}

/// A database at schema version 4 (`jti` a WITHOUT ROWID table) keeps its replay records
/// through version 5, which moves them to a rowid table with the same unique key.
#[tokio::test]
async fn sqlite_version_5_keeps_the_replay_records() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("segl.db").display());
    {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for script in [
            include_str!("../migrations/sqlite/0001_init.sql"),
            include_str!("../migrations/sqlite/0002_login.sql"),
            include_str!("../migrations/sqlite/0003_refresh.sql"),
            include_str!("../migrations/sqlite/0004_audit.sql"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(script))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations \
             (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL); \
             INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0); \
             INSERT INTO jti (kind, key, expires_at) VALUES (2, x'6b', 4000000000), (2, x'6c', 1);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let store = segl_store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let db = Db { url: url.clone() };
    assert_eq!(db.migration_versions().await, vec![1, 2, 3, 4, 5]);
    // The record made before the upgrade is still a replay; a new one is fresh once; the
    // expired one is still purged through the rebuilt index, and its key is then fresh.
    let mut verdicts = Vec::new();
    for key in [b"k", b"n", b"n"] {
        verdicts.push(
            store
                .insert_jti(JtiKind::DpopProof, key, 100)
                .await
                .unwrap(),
        );
    }
    assert_eq!(store.purge_expired(2).await.unwrap(), 1);
    verdicts.push(
        store
            .insert_jti(JtiKind::DpopProof, b"l", 100)
            .await
            .unwrap(),
    );
    assert_eq!(verdicts, [false, true, false, true]);
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let sql: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jti'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!sql.to_uppercase().contains("WITHOUT ROWID"), "{sql}");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jti' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(indexes.iter().any(|n| n == "jti_expires_at"), "{indexes:?}");
}

/// The writer's group commits do not checkpoint the WAL themselves; checkpoints beside them
/// (and, when those fall behind, one on the writer) keep the WAL bounded, and every record
/// stays where it was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commits_keep_the_wal_bounded() {
    use sqlx::Connection;
    const COMMITS: u32 = 2_000;
    const KEYS: u32 = 16;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segl.db");
    let db = Db {
        url: format!("sqlite://{}", path.display()),
    };
    let store = db.store().await;
    let key = |n: u32| {
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(random_hex().as_bytes());
        k[28..].copy_from_slice(&n.to_be_bytes());
        k
    };
    let mut sample = Vec::new();
    let mut largest_wal = 0;
    for c in 0..COMMITS {
        let keys: Vec<[u8; 32]> = (0..KEYS).map(|i| key(c * KEYS + i)).collect();
        let jtis: Vec<(JtiKind, &[u8], i64)> = keys
            .iter()
            .map(|k| (JtiKind::DpopProof, &k[..], 4_000_000_000))
            .collect();
        let detail = c.to_string();
        let gated = |fresh: &[bool]| {
            assert!(fresh.iter().all(|f| *f));
            vec![audit_event(1_700_000_000, "wal", None, &detail)]
        };
        let fresh = store
            .commit_group(&jtis, &[], &gated, &test_link)
            .await
            .unwrap();
        assert_eq!(fresh.len(), KEYS as usize);
        if c % 100 == 0 {
            sample.push(keys[0]);
        }
        let wal = std::fs::metadata(dir.path().join("segl.db-wal")).map_or(0, |m| m.len());
        largest_wal = largest_wal.max(wal);
    }
    // About 20 pages a commit, 40,000 in all: without checkpoints the WAL would hold them all.
    // With them it stays under the restart threshold of 4,000 pages and what is written while
    // the writer catches up (a page is 4 KiB plus a 24-byte frame header).
    assert!(
        largest_wal < 6_000 * 4_120,
        "the WAL grew to {largest_wal} bytes"
    );
    for k in &sample {
        assert!(
            !store
                .insert_jti(JtiKind::DpopProof, k, 4_000_000_000)
                .await
                .unwrap(),
            "a committed key was lost"
        );
    }
    let records = all_audit_events(store.as_ref()).await;
    assert_eq!(records.len(), COMMITS as usize);
    assert_one_chain(&records);
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jti")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, i64::from(COMMITS * KEYS));
}
