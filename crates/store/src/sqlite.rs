//! The embedded SQLite [`Store`]: one database file shared by the tasks of one process (and, with
//! WAL and a busy timeout, by several processes on one machine).
//!
//! A database file is switched to `journal_mode = WAL` when opened; every connection runs with
//! `synchronous = FULL` (a committed `jti` is on disk before the request that recorded it is
//! answered), `busy_timeout = 5 s` and foreign keys on. Writers are serialized by SQLite's
//! write lock; `insert_jti` is a single `INSERT … ON CONFLICT DO NOTHING` statement, so the
//! primary key decides which of several concurrent callers recorded the key, and
//! `take_record` / `redeem_code` decide with a single `DELETE` / `UPDATE … RETURNING`
//! statement, so the one writer that changes the row is the one that gets it.
//! `rotate_refresh` and `insert_refresh` run their statements in one `BEGIN IMMEDIATE`
//! transaction: it takes the write lock before the first read, so no other writer, in this
//! process or another, can change the token between the read and the writes that depend on it.
//! `append_audit` does the same with the audit chain head: read, insert the segment, move the
//! head, all under the write lock. The group commits' connection leaves WAL checkpoints to
//! a connection beside it (see [`Checkpoints`]).

use crate::audit::{self, QueryParam};
use crate::error::{check_id, check_key, check_text, check_token_id, from_sqlx};
use crate::refresh::{MAX_PASSES, Step, TokenRow, TokenState, decide};
use crate::{
    AuditCheckpoint, AuditEvent, AuditGate, AuditHead, AuditLink, AuditQuery, AuditRecord, Error,
    JtiKind, RecordKind, Redemption, RefreshRecord, Rotation, Store, StoredKey, redact_url,
};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::error::DatabaseError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long SQLite waits for another connection's write lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pool size for a database file.
const MAX_CONNECTIONS: u32 = 8;
/// Group commits between two WAL checkpoints (see [`Checkpoints`]). A loaded group commit
/// writes a few dozen pages, so this is about SQLite's own default of 1,000 pages.
const CHECKPOINT_EVERY: u32 = 16;
/// WAL pages left after a checkpoint above which the writer finishes the checkpoint itself
/// before its next commit, so that the WAL starts over from its beginning (see [`Checkpoints`]).
const WAL_RESTART_PAGES: i64 = 4_000;

/// A [`Store`] in a SQLite database file (or a private in-memory database).
///
/// Opening does not create the schema: call [`Store::migrate`] once after [`SqliteStore::open`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// The connection of the durable writer's group commits (a database file; `None` in
    /// memory, where the pool's one connection is the database, and once closed). One
    /// connection for the hot write path keeps its page cache warm: SQLite drops a
    /// connection's cache whenever another connection has written.
    writer: tokio::sync::Mutex<Option<sqlx::SqliteConnection>>,
    /// The WAL checkpoints of the writer's commits.
    checkpoints: Arc<Checkpoints>,
    /// The URL the store was opened with, for `Debug` and messages.
    url: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database `url` names: `sqlite://PATH`, `sqlite:PATH`
    /// or `sqlite::memory:` (also `sqlite://?mode=memory`). Query parameters understood by sqlx
    /// (`mode`, `cache`, `immutable`, `vfs`) are accepted.
    ///
    /// An in-memory database lives in the single connection of this store's pool, which is
    /// never closed while the store exists; it is private to this `SqliteStore`.
    ///
    /// Errors: [`Error::Config`] for a malformed URL, [`Error::Unavailable`] when the file
    /// cannot be opened or is locked for longer than the busy timeout.
    pub async fn open(url: &str) -> Result<Self, Error> {
        let shown = redact_url(url);
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| Error::Config(format!("not a sqlite: URL: {shown:?}")))?;
        let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
        let in_memory = path == ":memory:"
            || params
                .split('&')
                .any(|p| p.eq_ignore_ascii_case("mode=memory"));
        if path.is_empty() && !in_memory {
            return Err(Error::Config(format!(
                "SQLite URL {shown:?} names no file: use sqlite://PATH or sqlite::memory:"
            )));
        }

        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid SQLite URL {shown:?}: {e}")))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full)
            // Statement journals (a multi-row INSERT inside a transaction keeps one so that the
            // statement alone can be undone) in memory rather than in temporary files.
            .pragma("temp_store", "memory");

        // The writer does not checkpoint the WAL in its commits (the answers to the requests
        // of a group commit would wait for it): see [`Checkpoints`].
        let writer_options = options.clone().pragma("wal_autocheckpoint", "0");
        let pool = if in_memory {
            // One connection that is never reaped: the database lives exactly as long as it.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
        } else {
            SqlitePoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.create_if_missing(true))
                .await
        }
        .map_err(|e| in_context(&shown, e))?;
        if !in_memory {
            enable_wal(&pool).await.map_err(|e| in_context(&shown, e))?;
        }
        let writer = if in_memory {
            None
        } else {
            Some(
                sqlx::ConnectOptions::connect(&writer_options)
                    .await
                    .map_err(|e| in_context(&shown, e))?,
            )
        };
        Ok(SqliteStore {
            pool,
            writer: tokio::sync::Mutex::new(writer),
            checkpoints: Arc::default(),
            url: shown,
        })
    }

    /// Closes every connection, waiting for the ones in use to be returned. Later calls on
    /// this store fail with [`Error::Unavailable`]; an in-memory database is gone.
    pub async fn close(&self) {
        if let Some(conn) = self.writer.lock().await.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        self.pool.close().await;
    }

    /// Counts a group commit of the writer, and every [`CHECKPOINT_EVERY`] of them starts a
    /// checkpoint beside it (unless one is still running): see [`Checkpoints`].
    fn checkpoint_later(&self) {
        let state = &self.checkpoints;
        if state
            .commits
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
            < CHECKPOINT_EVERY
            || state.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        state.commits.store(0, Ordering::Relaxed);
        let pool = self.pool.clone();
        let state = Arc::clone(state);
        tokio::spawn(async move {
            match checkpoint(&pool).await {
                Ok(wal_pages) if wal_pages > WAL_RESTART_PAGES => {
                    state.inline.store(true, Ordering::Release);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
            state.running.store(false, Ordering::Release);
        });
    }
}

/// The WAL checkpoints of the writer's group commits.
///
/// SQLite checkpoints (copies the WAL's pages into the database file) in the commit that takes
/// the WAL past `wal_autocheckpoint` pages, after the commit is durable but before the
/// statement returns, so every request of that group commit would wait for a copy of about a
/// thousand pages that its answer does not need. The writer connection therefore runs with
/// `wal_autocheckpoint = 0`, and every [`CHECKPOINT_EVERY`] group commits a task runs a
/// passive checkpoint on a pooled connection, beside the writer, which goes on committing.
///
/// SQLite starts the WAL over from its beginning only in a write transaction that begins when
/// every page of the WAL has been copied, which a checkpoint beside a busy writer seldom
/// leaves. So when a checkpoint finds more than [`WAL_RESTART_PAGES`] in the WAL, the writer
/// runs the next checkpoint itself before its next transaction (it copies only what was
/// written since the last one), and that transaction starts the WAL over: the WAL stays
/// bounded under any load. Connections other than the writer keep SQLite's own checkpoints.
#[derive(Debug, Default)]
struct Checkpoints {
    /// The writer's group commits since the last checkpoint was started.
    commits: AtomicU32,
    /// A checkpoint task is running.
    running: AtomicBool,
    /// The writer is to checkpoint before its next transaction.
    inline: AtomicBool,
}

/// A passive checkpoint (it neither waits for nor blocks the writer) on `conn`; returns how
/// many pages the WAL holds.
async fn checkpoint(conn: impl sqlx::SqliteExecutor<'_>) -> Result<i64, Error> {
    let (_busy, wal_pages, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(conn)
            .await
            .map_err(map_err)?;
    Ok(wal_pages)
}

/// Maps an error from opening the database `shown`, naming it in the message.
fn in_context(shown: &str, err: sqlx::Error) -> Error {
    match map_err(err) {
        Error::Unavailable(m) => Error::Unavailable(format!("opening {shown}: {m}")),
        Error::Config(m) => Error::Config(format!("opening {shown}: {m}")),
        Error::Corrupt(m) => Error::Corrupt(format!("opening {shown}: {m}")),
        Error::Conflict(m) => Error::Conflict(format!("opening {shown}: {m}")),
    }
}

/// Switches the database file to WAL (a persistent property of the file, so connections opened
/// later, in this process or another, use it too).
///
/// Not done as a per-connection pragma: switching needs an exclusive lock that SQLite does not
/// wait for with the busy handler, so when several processes create the file at once one of
/// them gets `SQLITE_BUSY` at once. Retried here until [`BUSY_TIMEOUT`].
async fn enable_wal(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut delay = Duration::from_millis(2);
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await
        {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(mode, "SQLite refused WAL journal mode; using {mode}");
                }
                return Ok(());
            }
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` is `SQLITE_BUSY` or `SQLITE_LOCKED` (any extended code).
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Maps a sqlx error from a SQLite connection to a store [`Error`].
pub(crate) fn map_err(err: sqlx::Error) -> Error {
    from_sqlx(err, database_error)
}

/// Maps an error SQLite returned, by its (extended) result code.
fn database_error(e: &dyn DatabaseError) -> Error {
    let message = format!("sqlite: {e}");
    if e.is_unique_violation() {
        return Error::Conflict(message);
    }
    // sqlx reports the extended result code; the primary code is its low byte.
    let code = e
        .code()
        .and_then(|c| c.parse::<i32>().ok())
        .unwrap_or(libsqlite3_codes::ERROR);
    match code & 0xff {
        libsqlite3_codes::PERM | libsqlite3_codes::READONLY | libsqlite3_codes::AUTH => {
            Error::Config(message)
        }
        libsqlite3_codes::ERROR
        | libsqlite3_codes::CORRUPT
        | libsqlite3_codes::CONSTRAINT
        | libsqlite3_codes::MISMATCH
        | libsqlite3_codes::NOTADB => Error::Corrupt(message),
        // BUSY, LOCKED, NOMEM, INTERRUPT, IOERR, FULL, CANTOPEN, SCHEMA, …: a retry may work.
        _ => Error::Unavailable(message),
    }
}

/// The SQLite primary result codes this module distinguishes (<https://sqlite.org/rescode.html>).
mod libsqlite3_codes {
    pub(super) const ERROR: i32 = 1;
    pub(super) const PERM: i32 = 3;
    pub(super) const READONLY: i32 = 8;
    pub(super) const CORRUPT: i32 = 11;
    pub(super) const CONSTRAINT: i32 = 19;
    pub(super) const MISMATCH: i32 = 20;
    pub(super) const AUTH: i32 = 23;
    pub(super) const NOTADB: i32 = 26;
}

/// Deletes the rows of one table that expired before `now` (the one parameter).
const PURGE_EXPIRED: [&str; 6] = [
    "DELETE FROM jti WHERE expires_at < ?",
    "DELETE FROM records WHERE expires_at < ?",
    "DELETE FROM codes WHERE expires_at < ?",
    "DELETE FROM revoked_tokens WHERE expires_at < ?",
    "DELETE FROM refresh_tokens WHERE expires_at < ?",
    "DELETE FROM refresh_families WHERE expires_at < ?",
];

/// Deletes the recorded issues of codes that no longer exist (run after purging `codes`).
const PURGE_ORPHAN_ISSUES: &str = "DELETE FROM code_issues WHERE NOT EXISTS \
     (SELECT 1 FROM codes WHERE codes.key = code_issues.code_key)";

/// Creates a refresh-token family (`family_id`, `client_id`, `expires_at`) or keeps the later
/// expiry of an existing one, returning the family's owner either way.
const UPSERT_REFRESH_FAMILY: &str = "INSERT INTO refresh_families (family_id, client_id, expires_at) \
     VALUES (?, ?, ?) ON CONFLICT (family_id) DO UPDATE SET expires_at = \
     CASE WHEN excluded.expires_at > refresh_families.expires_at \
     THEN excluded.expires_at ELSE refresh_families.expires_at END \
     RETURNING client_id";

/// Inserts a refresh token (`key`, `family_id`, `data`, `expires_at`), not yet replaced.
const INSERT_REFRESH_TOKEN: &str =
    "INSERT INTO refresh_tokens (key, family_id, data, expires_at) VALUES (?, ?, ?, ?)";

/// Reads the refresh token `key` for a rotation: the columns of [`TokenRow`].
const READ_FOR_ROTATION: &str = "SELECT t.family_id, t.data, t.expires_at, t.replaced_by, \
     t.replaced_at, f.revoked_at, s.key, s.replaced_at \
     FROM refresh_tokens t \
     JOIN refresh_families f ON f.family_id = t.family_id \
     LEFT JOIN refresh_tokens s ON s.key = t.replaced_by \
     WHERE t.key = ?";

/// Maps the error of inserting a refresh token: a unique violation names what exists.
fn refresh_insert_err(err: sqlx::Error) -> Error {
    match map_err(err) {
        Error::Conflict(_) => Error::Conflict("a refresh token with this key exists".to_owned()),
        other => other,
    }
}

/// Reads one `signing_keys` row.
fn stored_key(row: &SqliteRow) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        public_jwk: row.try_get("public_jwk")?,
        private_key: row.try_get("private_key")?,
        created_at: row.try_get("created_at")?,
        activate_at: row.try_get("activate_at")?,
    })
}

/// Reads one `audit_events` row (the columns of [`audit::COLUMNS`]).
fn audit_record(row: &SqliteRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            time: row.try_get("time")?,
            event: row.try_get("event")?,
            client_id: row.try_get("client_id")?,
            client_name: row.try_get("client_name")?,
            orgnr_parent: row.try_get("orgnr_parent")?,
            orgnr_child: row.try_get("orgnr_child")?,
            orgnr_supplier: row.try_get("orgnr_supplier")?,
            pid: row.try_get("pid")?,
            actor_chain: audit::split(&row.try_get::<String, _>("actor_chain")?),
            audience: row.try_get("audience")?,
            scopes: audit::split(&row.try_get::<String, _>("scopes")?),
            jti: row.try_get("jti")?,
            outcome: row.try_get("outcome")?,
            error: row.try_get("error")?,
            source: row.try_get("source")?,
            request_id: row.try_get("request_id")?,
            detail: row.try_get("detail")?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Inserts a batch of audit rows: the JSON array of [`AuditRow`]s bound to the one parameter.
const INSERT_AUDIT_EVENTS: &str = "INSERT INTO audit_events (seq, time, event, client_id, \
     client_name, orgnr_parent, orgnr_child, orgnr_supplier, pid, actor_chain, audience, scopes, \
     jti, outcome, error, source, request_id, detail, prev_hash, hash) \
     SELECT value ->> 'seq', value ->> 'time', value ->> 'event', value ->> 'client_id', \
     value ->> 'client_name', value ->> 'orgnr_parent', value ->> 'orgnr_child', \
     value ->> 'orgnr_supplier', value ->> 'pid', value ->> 'actor_chain', \
     value ->> 'audience', value ->> 'scopes', value ->> 'jti', value ->> 'outcome', \
     value ->> 'error', value ->> 'source', value ->> 'request_id', value ->> 'detail', \
     unhex(value ->> 'prev_hash'), unhex(value ->> 'hash') \
     FROM jsonb_each(?)";

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), Error> {
        crate::migrate::sqlite(&self.pool).await
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Keys longer than 64 bytes are rejected with [`Error::Corrupt`] (see the trait).
    async fn insert_jti(&self, kind: JtiKind, key: &[u8], expires_at: i64) -> Result<bool, Error> {
        check_key("jti key", key)?;
        let done = sqlx::query(
            "INSERT INTO jti (kind, key, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (kind, key) DO NOTHING",
        )
        .bind(kind.code())
        .bind(key)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    /// One `BEGIN IMMEDIATE` transaction: one commit (one fsync) for all the records.
    async fn insert_jtis(&self, items: &[(JtiKind, &[u8], i64)]) -> Result<Vec<bool>, Error> {
        for (_, key, _) in items {
            check_key("jti key", key)?;
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let out = insert_jtis_in(&mut tx, items).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    /// One write transaction: the expired rows of every table, then the issues of codes
    /// that no longer exist.
    async fn purge_expired(&self, now: i64) -> Result<u64, Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let mut purged = 0u64;
        for sql in PURGE_EXPIRED {
            let done = sqlx::query(sql)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            purged = purged.saturating_add(done.rows_affected());
        }
        let done = sqlx::query(PURGE_ORPHAN_ISSUES)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        purged = purged.saturating_add(done.rows_affected());
        tx.commit().await.map_err(map_err)?;
        Ok(purged)
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, Error> {
        let rows = sqlx::query(
            "SELECT kid, alg, public_jwk, private_key, created_at, activate_at \
             FROM signing_keys ORDER BY activate_at, created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| stored_key(row).map_err(map_err))
            .collect()
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO signing_keys \
             (kid, alg, public_jwk, private_key, created_at, activate_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.public_jwk)
        .bind(&key.private_key)
        .bind(key.created_at)
        .bind(key.activate_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match map_err(e) {
            Error::Conflict(_) => {
                Error::Conflict(format!("a signing key with kid {:?} exists", key.kid))
            }
            other => other,
        })?;
        Ok(())
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, Error> {
        sqlx::query(
            "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        // Secrets are never deleted, so the row is there now: ours or the first caller's.
        sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .ok_or_else(|| Error::Corrupt(format!("secret {name:?} vanished after insert")))
    }

    /// Keys longer than 64 bytes and data containing NUL are rejected with
    /// [`Error::Corrupt`].
    async fn put_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        data: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        check_key("record key", key)?;
        check_text("record data", data)?;
        sqlx::query(
            "INSERT INTO records (kind, key, data, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (kind, key) \
             DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
        )
        .bind(kind.code())
        .bind(key)
        .bind(data)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        now: i64,
    ) -> Result<Option<String>, Error> {
        check_key("record key", key)?;
        sqlx::query_scalar("SELECT data FROM records WHERE kind = ? AND key = ? AND expires_at > ?")
            .bind(kind.code())
            .bind(key)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)
    }

    /// One `DELETE … RETURNING` statement: SQLite's write lock lets exactly one of
    /// concurrent callers delete (and so return) the row.
    async fn take_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        now: i64,
    ) -> Result<Option<String>, Error> {
        check_key("record key", key)?;
        // `fetch_all`, not `fetch_optional`: the statement is stepped to completion, so its
        // autocommit transaction ends (and the write lock is released) before we return.
        let taken: Vec<String> = sqlx::query_scalar(
            "DELETE FROM records WHERE kind = ? AND key = ? AND expires_at > ? RETURNING data",
        )
        .bind(kind.code())
        .bind(key)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(taken.into_iter().next())
    }

    async fn delete_record(&self, kind: RecordKind, key: &[u8]) -> Result<bool, Error> {
        check_key("record key", key)?;
        let done = sqlx::query("DELETE FROM records WHERE kind = ? AND key = ?")
            .bind(kind.code())
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_code(&self, key: &[u8], data: &str, expires_at: i64) -> Result<(), Error> {
        check_key("code key", key)?;
        check_text("code data", data)?;
        sqlx::query("INSERT INTO codes (key, data, expires_at) VALUES (?, ?, ?)")
            .bind(key)
            .bind(data)
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(|e| match map_err(e) {
                Error::Conflict(_) => {
                    Error::Conflict("an authorization code with this key exists".to_owned())
                }
                other => other,
            })?;
        Ok(())
    }

    /// An `UPDATE … RETURNING` that only matches an unredeemed, unexpired code decides the
    /// one fresh redemption (SQLite serializes writers); when it matches nothing, a read of
    /// the committed row tells a reuse from a missing code.
    async fn redeem_code(&self, key: &[u8], now: i64) -> Result<Redemption, Error> {
        check_key("code key", key)?;
        // `fetch_all` (at most one row): see `take_record`.
        let fresh: Vec<String> = sqlx::query_scalar(
            "UPDATE codes SET redeemed_at = ? \
             WHERE key = ? AND redeemed_at IS NULL AND expires_at > ? RETURNING data",
        )
        .bind(now)
        .bind(key)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        if let Some(data) = fresh.into_iter().next() {
            return Ok(Redemption::Fresh(data));
        }
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT c.data, i.jti FROM codes c \
             LEFT JOIN code_issues i ON i.code_key = c.key \
             WHERE c.key = ? AND c.redeemed_at IS NOT NULL AND c.expires_at > ? \
             ORDER BY i.jti",
        )
        .bind(key)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(Redemption::from_reused_rows(rows))
    }

    async fn record_code_issue(&self, key: &[u8], jti: &str) -> Result<(), Error> {
        check_key("code key", key)?;
        check_token_id(jti)?;
        sqlx::query(
            "INSERT INTO code_issues (code_key, jti) VALUES (?, ?) \
             ON CONFLICT (code_key, jti) DO NOTHING",
        )
        .bind(key)
        .bind(jti)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), Error> {
        check_token_id(jti)?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) \
             ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE revoked_tokens.expires_at < excluded.expires_at",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool, Error> {
        check_token_id(jti)?;
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM revoked_tokens WHERE jti = ?")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(found.is_some())
    }

    /// One `BEGIN IMMEDIATE` transaction: the family upsert (which returns its owner), then
    /// the token.
    async fn insert_refresh(
        &self,
        key: &[u8],
        family_id: &str,
        client_id: &str,
        data: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        check_key("refresh token key", key)?;
        check_id("refresh family id", family_id)?;
        check_id("client id", client_id)?;
        check_text("refresh token data", data)?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        // `fetch_all` (one row): the `RETURNING` statement is stepped to completion.
        let owners: Vec<String> = sqlx::query_scalar(UPSERT_REFRESH_FAMILY)
            .bind(family_id)
            .bind(client_id)
            .bind(expires_at)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        if owners.first().map(String::as_str) != Some(client_id) {
            // Dropping `tx` rolls the upsert back.
            return Err(Error::Conflict(format!(
                "refresh family {family_id:?} belongs to another client"
            )));
        }
        sqlx::query(INSERT_REFRESH_TOKEN)
            .bind(key)
            .bind(family_id)
            .bind(data)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(refresh_insert_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// One `BEGIN IMMEDIATE` transaction: read the token, then do what
    /// `refresh::decide` says. The write lock is held from the start, so the
    /// conditional `UPDATE` cannot lose here; it is checked anyway, as on PostgreSQL.
    async fn rotate_refresh(
        &self,
        old_key: &[u8],
        new_key: &[u8],
        now: i64,
        grace: i64,
    ) -> Result<Rotation, Error> {
        check_key("refresh token key", old_key)?;
        check_key("refresh token key", new_key)?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        for _ in 0..MAX_PASSES {
            let rows: Vec<TokenRow> = sqlx::query_as(READ_FOR_ROTATION)
                .bind(old_key)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
            let outcome = match decide(
                rows.into_iter().next().map(TokenState::from),
                new_key,
                now,
                grace,
            ) {
                Step::Answer(outcome) => outcome,
                Step::RevokeFamily { family_id } => {
                    sqlx::query(
                        "UPDATE refresh_families SET revoked_at = ? \
                         WHERE family_id = ? AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(&family_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    Rotation::Reused { family_id }
                }
                Step::Replace {
                    family_id,
                    data,
                    expires_at,
                } => {
                    let done = sqlx::query(
                        "UPDATE refresh_tokens SET replaced_by = ?, replaced_at = ? \
                         WHERE key = ? AND replaced_at IS NULL",
                    )
                    .bind(new_key)
                    .bind(now)
                    .bind(old_key)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if done.rows_affected() != 1 {
                        continue;
                    }
                    sqlx::query(INSERT_REFRESH_TOKEN)
                        .bind(new_key)
                        .bind(&family_id)
                        .bind(&data)
                        .bind(expires_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(refresh_insert_err)?;
                    Rotation::Rotated {
                        family_id,
                        data,
                        expires_at,
                    }
                }
            };
            tx.commit().await.map_err(map_err)?;
            return Ok(outcome);
        }
        Err(Error::Unavailable(
            "refresh token rotation kept losing to concurrent rotations".to_owned(),
        ))
    }

    async fn refresh_lookup(&self, key: &[u8], now: i64) -> Result<Option<RefreshRecord>, Error> {
        check_key("refresh token key", key)?;
        let row: Option<(String, String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT t.family_id, f.client_id, t.data, t.replaced_at, f.revoked_at FROM refresh_tokens t \
             JOIN refresh_families f ON f.family_id = t.family_id \
             WHERE t.key = ? AND t.expires_at > ?",
        )
        .bind(key)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(row.map(
            |(family_id, client_id, data, replaced, revoked)| RefreshRecord {
                family_id,
                client_id,
                data,
                live: replaced.is_none() && revoked.is_none(),
            },
        ))
    }

    /// `COALESCE` keeps the first revocation time, so the `UPDATE` matches the family whether
    /// or not it was revoked before: its row count tells whether it exists.
    async fn revoke_refresh_family(&self, family_id: &str) -> Result<bool, Error> {
        check_id("refresh family id", family_id)?;
        let done = sqlx::query(
            "UPDATE refresh_families \
             SET revoked_at = COALESCE(revoked_at, CAST(strftime('%s', 'now') AS INTEGER)) \
             WHERE family_id = ?",
        )
        .bind(family_id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_delegation(&self, from: &str, to: &str) -> Result<(), Error> {
        check_id("organization number", from)?;
        check_id("organization number", to)?;
        sqlx::query(
            "INSERT INTO delegations (from_org, to_org) VALUES (?, ?) \
             ON CONFLICT (from_org, to_org) DO NOTHING",
        )
        .bind(from)
        .bind(to)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn remove_delegation(&self, from: &str, to: &str) -> Result<bool, Error> {
        check_id("organization number", from)?;
        check_id("organization number", to)?;
        let done = sqlx::query("DELETE FROM delegations WHERE from_org = ? AND to_org = ?")
            .bind(from)
            .bind(to)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// SQLite's default `BINARY` collation compares bytes.
    async fn delegations(&self) -> Result<Vec<(String, String)>, Error> {
        sqlx::query_as("SELECT from_org, to_org FROM delegations ORDER BY from_org, to_org")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)
    }

    /// One `BEGIN IMMEDIATE` transaction: the write lock is taken before the head is read, so
    /// no other appender, in this process or another, can move it until the commit.
    async fn append_audit(
        &self,
        events: &[AuditEvent],
        link: &AuditLink<'_>,
    ) -> Result<i64, Error> {
        for event in events {
            audit::check_audit_event(event)?;
        }
        if events.is_empty() {
            return Ok(self.audit_head().await?.seq);
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let events: Vec<&AuditEvent> = events.iter().collect();
        let seq = append_segment(&mut tx, &events, link).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(seq)
    }

    async fn commit_group(
        &self,
        jtis: &[(JtiKind, &[u8], i64)],
        events: &[AuditEvent],
        gated: &AuditGate<'_>,
        link: &AuditLink<'_>,
    ) -> Result<Vec<bool>, Error> {
        for (_, key, _) in jtis {
            check_key("jti key", key)?;
        }
        for event in events {
            audit::check_audit_event(event)?;
        }
        let mut writer = self.writer.lock().await;
        match writer.as_mut() {
            Some(conn) => {
                if self.checkpoints.inline.swap(false, Ordering::AcqRel)
                    && let Err(e) = checkpoint(&mut *conn).await
                {
                    tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
                }
                let fresh = commit_group_on(conn, jtis, events, gated, link).await?;
                self.checkpoint_later();
                Ok(fresh)
            }
            None => {
                let mut conn = self.pool.acquire().await.map_err(map_err)?;
                commit_group_on(&mut conn, jtis, events, gated, link).await
            }
        }
    }

    async fn audit_head(&self) -> Result<AuditHead, Error> {
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?
                .ok_or_else(|| Error::Corrupt("the audit chain head is missing".to_owned()))?;
        Ok(AuditHead { seq, hash })
    }

    async fn audit_events(&self, from_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, Error> {
        let sql = format!(
            "SELECT {} FROM audit_events WHERE seq >= ? ORDER BY seq LIMIT ?",
            audit::COLUMNS
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|row| audit_record(row).map_err(map_err))
            .collect()
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, Error> {
        let (conditions, params) = audit::query_sql(query, |_| "?".to_owned());
        let sql = format!(
            "SELECT {} FROM audit_events WHERE {conditions} ORDER BY seq LIMIT ?",
            audit::COLUMNS
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for param in params {
            q = match param {
                QueryParam::Int(i) => q.bind(i),
                QueryParam::Text(t) => q.bind(t),
            };
        }
        let rows = q
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|row| audit_record(row).map_err(map_err))
            .collect()
    }

    async fn insert_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<(), Error> {
        for text in [&checkpoint.kid, &checkpoint.public_jwk, &checkpoint.jws] {
            check_text("audit checkpoint", text)?;
        }
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, time, kid, public_jwk, jws) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(checkpoint.seq)
        .bind(checkpoint.time)
        .bind(&checkpoint.kid)
        .bind(&checkpoint.public_jwk)
        .bind(&checkpoint.jws)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>, Error> {
        let rows: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT seq, time, kid, public_jwk, jws FROM audit_checkpoints ORDER BY seq, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(seq, time, kid, public_jwk, jws)| AuditCheckpoint {
                seq,
                time,
                kid,
                public_jwk,
                jws,
            })
            .collect())
    }
}

/// [`Store::commit_group`] on `conn`: `BEGIN IMMEDIATE`, the replay records, the events
/// (the gated ones as the verdicts allow), `COMMIT`.
async fn commit_group_on(
    conn: &mut sqlx::SqliteConnection,
    jtis: &[(JtiKind, &[u8], i64)],
    events: &[AuditEvent],
    gated: &AuditGate<'_>,
    link: &AuditLink<'_>,
) -> Result<Vec<bool>, Error> {
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE")
        .await
        .map_err(map_err)?;
    let fresh = insert_jtis_in(&mut tx, jtis).await?;
    let allowed = gated(&fresh);
    for event in &allowed {
        audit::check_audit_event(event)?;
    }
    let all: Vec<&AuditEvent> = events.iter().chain(&allowed).collect();
    if !all.is_empty() {
        append_segment(&mut tx, &all, link).await?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(fresh)
}

/// Inserts a batch of replay keys with one statement: the batch is one JSON parameter that
/// `jsonb_each` unrolls (its elements stay in SQLite's binary JSON, so each column is read
/// without re-parsing text), so the statement is prepared once and the whole batch is one call
/// on SQLite's worker thread, however many keys it holds. `RETURNING` names the keys that were
/// new; a key repeated within the batch is new only at its first place.
async fn insert_jtis_in(
    conn: &mut sqlx::SqliteConnection,
    items: &[(JtiKind, &[u8], i64)],
) -> Result<Vec<bool>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i16, String, i64)> = items
        .iter()
        .map(|(kind, key, expires_at)| (kind.code(), hex::encode(key), *expires_at))
        .collect();
    let batch = serde_json::to_string(&rows).map_err(|e| Error::Corrupt(e.to_string()))?;
    let inserted: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "INSERT INTO jti (kind, key, expires_at) \
         SELECT value ->> 0, unhex(value ->> 1), value ->> 2 FROM jsonb_each(?) WHERE true \
         ON CONFLICT (kind, key) DO NOTHING RETURNING kind, key",
    )
    .bind(batch)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut new: std::collections::HashSet<(i64, Vec<u8>)> = inserted.into_iter().collect();
    Ok(items
        .iter()
        .map(|(kind, key, _)| new.remove(&(i64::from(kind.code()), key.to_vec())))
        .collect())
}

/// An audit row as one element of the JSON batch [`INSERT_AUDIT_EVENTS`] unrolls.
#[derive(serde::Serialize)]
struct AuditRow<'a> {
    seq: i64,
    time: i64,
    event: &'a str,
    client_id: Option<&'a str>,
    client_name: Option<&'a str>,
    orgnr_parent: Option<&'a str>,
    orgnr_child: Option<&'a str>,
    orgnr_supplier: Option<&'a str>,
    pid: Option<&'a str>,
    audience: Option<&'a str>,
    jti: Option<&'a str>,
    outcome: &'a str,
    error: Option<&'a str>,
    source: Option<&'a str>,
    request_id: Option<&'a str>,
    detail: Option<&'a str>,
    actor_chain: String,
    scopes: String,
    prev_hash: String,
    hash: String,
}

/// Appends `events` as one chain segment in the caller's write transaction (which holds the
/// write lock, so no other appender can move the head meanwhile); returns the last seq. The
/// hashes are chained here; the rows go in with one statement ([`INSERT_AUDIT_EVENTS`]).
async fn append_segment(
    conn: &mut sqlx::SqliteConnection,
    events: &[&AuditEvent],
    link: &AuditLink<'_>,
) -> Result<i64, Error> {
    let (mut seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?
            .ok_or_else(|| Error::Corrupt("the audit chain head is missing".to_owned()))?;
    let mut prev = audit::head_hash(&hash)?;
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| Error::Corrupt("the audit sequence overflowed".to_owned()))?;
        let hash = link(&prev, seq, event);
        rows.push(AuditRow {
            seq,
            time: event.time,
            event: &event.event,
            client_id: event.client_id.as_deref(),
            client_name: event.client_name.as_deref(),
            orgnr_parent: event.orgnr_parent.as_deref(),
            orgnr_child: event.orgnr_child.as_deref(),
            orgnr_supplier: event.orgnr_supplier.as_deref(),
            pid: event.pid.as_deref(),
            audience: event.audience.as_deref(),
            jti: event.jti.as_deref(),
            outcome: &event.outcome,
            error: event.error.as_deref(),
            source: event.source.as_deref(),
            request_id: event.request_id.as_deref(),
            detail: event.detail.as_deref(),
            actor_chain: audit::join(&event.actor_chain),
            scopes: audit::join(&event.scopes),
            prev_hash: hex::encode(&prev[..]),
            hash: hex::encode(&hash[..]),
        });
        prev = hash;
    }
    let batch = serde_json::to_string(&rows).map_err(|e| Error::Corrupt(e.to_string()))?;
    sqlx::query(INSERT_AUDIT_EVENTS)
        .bind(batch)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    sqlx::query("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
        .bind(seq)
        .bind(&prev[..])
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(seq)
}
