//! The PostgreSQL [`Store`], for many Segl processes sharing one database.
//!
//! Every operation is a single statement in its own (READ COMMITTED) transaction, except
//! `purge_expired` (one transaction of several `DELETE`s), `redeem_code` (a second
//! statement reads a code the first did not redeem), `insert_refresh` / `rotate_refresh`
//! (one transaction each, at the server's default isolation), and `append_audit` (one READ
//! COMMITTED transaction that locks the audit chain head with `SELECT … FOR UPDATE`, inserts the
//! segment with one `INSERT … SELECT FROM UNNEST(…)` and moves the head). `insert_jti` is `INSERT … ON
//! CONFLICT DO NOTHING`, so the primary key decides which of any number of concurrent callers,
//! on any process, recorded the key; `take_record` and `redeem_code` are decided by a `DELETE` /
//! `UPDATE … RETURNING` whose row lock lets exactly one caller change (and so get) the row;
//! `rotate_refresh` is decided by a conditional `UPDATE … WHERE replaced_at IS NULL` in the same
//! way: under READ COMMITTED a caller whose `UPDATE` matched nothing reads the token again (the
//! new statement sees the winner's commit) and answers from what it finds; under REPEATABLE
//! READ or SERIALIZABLE its `UPDATE` fails with a serialization failure instead, and the whole
//! transaction is retried.
//! Operations never hang when the database is down: acquiring a connection times out after 5 s
//! and a whole operation after 15 s (each of `redeem_code`'s two steps), both reported as
//! [`Error::Unavailable`]. Serialization failures and deadlocks (SQLSTATE 40001 / 40P01,
//! possible when the server defaults to SERIALIZABLE) are retried a few times: a failed
//! statement or transaction was rolled back, so it is simply run again. The password in the
//! URL never appears in `Debug` output or error messages.

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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

/// How long a caller waits for a pooled connection (including connecting) before
/// [`Error::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one store operation (all its attempts) may take before [`Error::Unavailable`].
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times an operation is tried when it hits a serialization failure or deadlock.
const MAX_ATTEMPTS: u32 = 4;
/// Pool size per process.
const MAX_CONNECTIONS: u32 = 10;

/// A [`Store`] in a PostgreSQL database.
///
/// Opening does not create the schema: call [`Store::migrate`] once after [`PgStore::open`].
pub struct PgStore {
    pool: PgPool,
    /// The URL with any password replaced by `***`.
    url: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://…` or `postgresql://…`, with any
    /// parameters libpq-style URLs accept in sqlx, e.g. `sslmode`), checking that one
    /// connection can be opened.
    ///
    /// Errors: [`Error::Config`] for a malformed URL or rejected credentials / unknown
    /// database, [`Error::Unavailable`] when the server cannot be reached within 5 s.
    pub async fn open(url: &str) -> Result<Self, Error> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid PostgreSQL URL {shown:?}: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| match map_err(e) {
                Error::Unavailable(m) => Error::Unavailable(format!("connecting to {shown}: {m}")),
                Error::Config(m) => Error::Config(format!("connecting to {shown}: {m}")),
                other => other,
            })?;
        Ok(PgStore { pool, url: shown })
    }

    /// Closes every connection, waiting for the ones in use to be returned. Later calls on
    /// this store fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs `op` with the retry and timeout policy of the module documentation.
    async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send,
        T: Send,
    {
        let attempts = async {
            let mut attempt = 1;
            loop {
                match op().await {
                    Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => {
                        tracing::debug!(error = %e, attempt, what, "retrying store operation");
                        tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                        attempt += 1;
                    }
                    result => return result.map_err(map_err),
                }
            }
        };
        tokio::time::timeout(OPERATION_TIMEOUT, attempts)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(format!(
                    "{what} on {} took longer than {OPERATION_TIMEOUT:?}",
                    self.url
                )))
            })
    }
}

/// Whether `e` is a serialization failure or deadlock, after which the (rolled back)
/// statement can simply be run again.
fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40001" || code == "40P01")
}

/// Maps a sqlx error from a PostgreSQL connection to a store [`Error`].
pub(crate) fn map_err(err: sqlx::Error) -> Error {
    from_sqlx(err, database_error)
}

/// Maps an error PostgreSQL returned, by its SQLSTATE
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn database_error(e: &dyn DatabaseError) -> Error {
    let code = e.code().unwrap_or_default();
    let message = format!("postgres: {} (SQLSTATE {code})", e.message());
    let class = code.get(..2).unwrap_or("");
    match (class, &*code) {
        (_, "23505") => Error::Conflict(message),
        // Invalid authorization, unknown database, insufficient privilege.
        ("28", _) | (_, "3D000") | (_, "42501") => Error::Config(message),
        // Data exceptions, other integrity violations, schema mismatches (e.g. an undefined
        // table: not migrated), internal errors / data corruption.
        ("22", _) | ("23", _) | ("42", _) | ("XX", _) => Error::Corrupt(message),
        // Connection exceptions (08), rollbacks (40), insufficient resources (53), operator
        // intervention (57, e.g. shutdown), system errors (58), lock timeouts (55P03), …
        _ => Error::Unavailable(message),
    }
}

/// Deletes the rows of one table that expired before `now` (the one parameter).
const PURGE_EXPIRED: [&str; 6] = [
    "DELETE FROM jti WHERE expires_at < $1",
    "DELETE FROM records WHERE expires_at < $1",
    "DELETE FROM codes WHERE expires_at < $1",
    "DELETE FROM revoked_tokens WHERE expires_at < $1",
    "DELETE FROM refresh_tokens WHERE expires_at < $1",
    "DELETE FROM refresh_families WHERE expires_at < $1",
];

/// Deletes the recorded issues of codes that no longer exist (run after purging `codes`).
const PURGE_ORPHAN_ISSUES: &str = "DELETE FROM code_issues WHERE NOT EXISTS \
     (SELECT 1 FROM codes WHERE codes.key = code_issues.code_key)";

/// Inserts a refresh token (`key`, `family_id`, `data`, `expires_at`), not yet replaced.
const INSERT_REFRESH_TOKEN: &str =
    "INSERT INTO refresh_tokens (key, family_id, data, expires_at) VALUES ($1, $2, $3, $4)";

/// Reads the refresh token `key` for a rotation: the columns of [`TokenRow`].
const READ_FOR_ROTATION: &str = "SELECT t.family_id, t.data, t.expires_at, t.replaced_by, \
     t.replaced_at, f.revoked_at, s.key, s.replaced_at \
     FROM refresh_tokens t \
     JOIN refresh_families f ON f.family_id = t.family_id \
     LEFT JOIN refresh_tokens s ON s.key = t.replaced_by \
     WHERE t.key = $1";

/// One attempt of [`Store::insert_refresh`], in one transaction: creates the family or keeps
/// the later expiry of an existing one, then inserts the token when the family is
/// `client_id`'s. `Ok(false)` (nothing written) when it belongs to another client.
async fn insert_refresh_once(
    pool: &PgPool,
    key: &[u8],
    family_id: &str,
    client_id: &str,
    data: &str,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let owner: String = sqlx::query_scalar(
        "INSERT INTO refresh_families (family_id, client_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (family_id) DO UPDATE SET expires_at = \
         CASE WHEN EXCLUDED.expires_at > refresh_families.expires_at \
         THEN EXCLUDED.expires_at ELSE refresh_families.expires_at END \
         RETURNING client_id",
    )
    .bind(family_id)
    .bind(client_id)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    if owner != client_id {
        // Dropping `tx` rolls the upsert back.
        return Ok(false);
    }
    sqlx::query(INSERT_REFRESH_TOKEN)
        .bind(key)
        .bind(family_id)
        .bind(data)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// One attempt of [`Store::rotate_refresh`], in one transaction: read the token, then do what
/// [`crate::refresh::decide`] says. When the conditional `UPDATE` matches nothing (a concurrent
/// caller replaced the token and committed while this one waited for the row lock) the token
/// is read again. `Ok(None)` when that keeps happening (it cannot: see
/// [`crate::refresh::MAX_PASSES`]).
async fn rotate_refresh_once(
    pool: &PgPool,
    old_key: &[u8],
    new_key: &[u8],
    now: i64,
    grace: i64,
) -> Result<Option<Rotation>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    for _ in 0..MAX_PASSES {
        let row: Option<TokenRow> = sqlx::query_as(READ_FOR_ROTATION)
            .bind(old_key)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match decide(row.map(TokenState::from), new_key, now, grace) {
            Step::Answer(outcome) => outcome,
            Step::RevokeFamily { family_id } => {
                sqlx::query(
                    "UPDATE refresh_families SET revoked_at = $2 \
                     WHERE family_id = $1 AND revoked_at IS NULL",
                )
                .bind(&family_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Rotation::Reused { family_id }
            }
            Step::Replace {
                family_id,
                data,
                expires_at,
            } => {
                let done = sqlx::query(
                    "UPDATE refresh_tokens SET replaced_by = $2, replaced_at = $3 \
                     WHERE key = $1 AND replaced_at IS NULL",
                )
                .bind(old_key)
                .bind(new_key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    continue;
                }
                sqlx::query(INSERT_REFRESH_TOKEN)
                    .bind(new_key)
                    .bind(&family_id)
                    .bind(&data)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                Rotation::Rotated {
                    family_id,
                    data,
                    expires_at,
                }
            }
        };
        tx.commit().await?;
        return Ok(Some(outcome));
    }
    Ok(None)
}

/// Names what exists when inserting a refresh token hit a unique violation: the token's key
/// is the only unique value [`insert_refresh_once`] and [`rotate_refresh_once`] insert.
fn refresh_insert_conflict(err: Error) -> Error {
    match err {
        Error::Conflict(_) => Error::Conflict("a refresh token with this key exists".to_owned()),
        other => other,
    }
}

/// Reads one `signing_keys` row.
fn stored_key(row: &PgRow) -> Result<StoredKey, sqlx::Error> {
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
fn audit_record(row: &PgRow) -> Result<AuditRecord, sqlx::Error> {
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

/// Inserts a whole segment in one statement: one array per column of [`audit::COLUMNS`].
const INSERT_AUDIT_EVENTS: &str = "INSERT INTO audit_events (seq, time, event, client_id, \
     client_name, orgnr_parent, orgnr_child, orgnr_supplier, pid, actor_chain, audience, scopes, \
     jti, outcome, error, source, request_id, detail, prev_hash, hash) \
     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
     $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], \
     $13::TEXT[], $14::TEXT[], $15::TEXT[], $16::TEXT[], $17::TEXT[], $18::TEXT[], \
     $19::BYTEA[], $20::BYTEA[])";

/// One attempt of [`Store::append_audit`]: a READ COMMITTED transaction (whatever the
/// server's default, so that an appender that waited for the head's row lock reads the head
/// its predecessor committed instead of failing to serialize) that locks the head, inserts the
/// segment and moves the head.
/// One attempt of a group commit: the replay records (one statement for all of them), then the
/// audit segment when there are events, in one READ COMMITTED transaction. Returns the `jti`
/// verdicts and the last seq (the old head's when there are no events).
async fn commit_group_once(
    pool: &PgPool,
    jtis: &[(JtiKind, &[u8], i64)],
    events: &[AuditEvent],
    gated: &AuditGate<'_>,
    link: &AuditLink<'_>,
) -> Result<Result<(Vec<bool>, i64), Error>, sqlx::Error> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await?;
    let fresh = insert_jtis_in(&mut tx, jtis).await?;
    let allowed = gated(&fresh);
    if let Some(Err(e)) = allowed
        .iter()
        .map(audit::check_audit_event)
        .find(Result::is_err)
    {
        return Ok(Err(e));
    }
    let events: Vec<&AuditEvent> = events.iter().chain(&allowed).collect();
    if events.is_empty() {
        tx.commit().await?;
        return Ok(Ok((fresh, 0)));
    }
    let seq = match append_segment(&mut tx, &events, link).await? {
        Ok(seq) => seq,
        Err(e) => return Ok(Err(e)),
    };
    tx.commit().await?;
    Ok(Ok((fresh, seq)))
}

/// Inserts replay records with one `INSERT … SELECT FROM UNNEST … ON CONFLICT DO NOTHING
/// RETURNING`: a key is fresh when its row came back. A key repeated in `items` is fresh only
/// at its first place.
async fn insert_jtis_in(
    conn: &mut sqlx::PgConnection,
    items: &[(JtiKind, &[u8], i64)],
) -> Result<Vec<bool>, sqlx::Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut first = std::collections::HashSet::with_capacity(items.len());
    let unique: Vec<&(JtiKind, &[u8], i64)> = items
        .iter()
        .filter(|(k, key, _)| first.insert((k.code(), *key)))
        .collect();
    let inserted: Vec<(i16, Vec<u8>)> = sqlx::query_as(
        "INSERT INTO jti (kind, key, expires_at) \
         SELECT * FROM UNNEST($1::smallint[], $2::bytea[], $3::bigint[]) \
         ON CONFLICT (kind, key) DO NOTHING RETURNING kind, key",
    )
    .bind(unique.iter().map(|(k, _, _)| k.code()).collect::<Vec<_>>())
    .bind(
        unique
            .iter()
            .map(|(_, key, _)| key.to_vec())
            .collect::<Vec<_>>(),
    )
    .bind(unique.iter().map(|(_, _, e)| *e).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut new: std::collections::HashSet<(i16, Vec<u8>)> = inserted.into_iter().collect();
    Ok(items
        .iter()
        .map(|(k, key, _)| new.remove(&(k.code(), key.to_vec())))
        .collect())
}

async fn append_audit_once(
    pool: &PgPool,
    events: &[AuditEvent],
    link: &AuditLink<'_>,
) -> Result<Result<i64, Error>, sqlx::Error> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await?;
    let events: Vec<&AuditEvent> = events.iter().collect();
    let seq = match append_segment(&mut tx, &events, link).await? {
        Ok(seq) => seq,
        Err(e) => return Ok(Err(e)),
    };
    tx.commit().await?;
    Ok(Ok(seq))
}

/// Appends `events` as one chain segment in the caller's transaction, holding the head row
/// (`FOR UPDATE`) until it commits; returns the last seq.
async fn append_segment(
    conn: &mut sqlx::PgConnection,
    events: &[&AuditEvent],
    link: &AuditLink<'_>,
) -> Result<Result<i64, Error>, sqlx::Error> {
    let Some((mut seq, hash)) = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Err(Error::Corrupt(
            "the audit chain head is missing".to_owned(),
        )));
    };
    let mut prev = match audit::head_hash(&hash) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let n = events.len();
    let mut seqs = Vec::with_capacity(n);
    let mut prevs = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    for event in events {
        let Some(next) = seq.checked_add(1) else {
            return Ok(Err(Error::Corrupt(
                "the audit sequence overflowed".to_owned(),
            )));
        };
        seq = next;
        let hash = link(&prev, seq, event);
        seqs.push(seq);
        prevs.push(prev.to_vec());
        hashes.push(hash.to_vec());
        prev = hash;
    }
    let text =
        |f: fn(&AuditEvent) -> Option<String>| events.iter().map(|e| f(e)).collect::<Vec<_>>();
    sqlx::query(INSERT_AUDIT_EVENTS)
        .bind(&seqs)
        .bind(events.iter().map(|e| e.time).collect::<Vec<_>>())
        .bind(text(|e| Some(e.event.clone())))
        .bind(text(|e| e.client_id.clone()))
        .bind(text(|e| e.client_name.clone()))
        .bind(text(|e| e.orgnr_parent.clone()))
        .bind(text(|e| e.orgnr_child.clone()))
        .bind(text(|e| e.orgnr_supplier.clone()))
        .bind(text(|e| e.pid.clone()))
        .bind(text(|e| Some(audit::join(&e.actor_chain))))
        .bind(text(|e| e.audience.clone()))
        .bind(text(|e| Some(audit::join(&e.scopes))))
        .bind(text(|e| e.jti.clone()))
        .bind(text(|e| Some(e.outcome.clone())))
        .bind(text(|e| e.error.clone()))
        .bind(text(|e| e.source.clone()))
        .bind(text(|e| e.request_id.clone()))
        .bind(text(|e| e.detail.clone()))
        .bind(&prevs)
        .bind(&hashes)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev[..])
        .execute(&mut *conn)
        .await?;
    Ok(Ok(seq))
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), Error> {
        // Not under `run`: waiting for another process's migration is bounded by the
        // `lock_timeout` the migrator sets, and a long migration must not be cut off.
        crate::migrate::postgres(&self.pool).await
    }

    async fn ping(&self) -> Result<(), Error> {
        self.run("ping", || sqlx::query("SELECT 1").execute(&self.pool))
            .await?;
        Ok(())
    }

    /// Keys longer than 64 bytes are rejected with [`Error::Corrupt`] (see the trait).
    async fn insert_jti(&self, kind: JtiKind, key: &[u8], expires_at: i64) -> Result<bool, Error> {
        check_key("jti key", key)?;
        let done = self
            .run("insert_jti", || {
                sqlx::query(
                    "INSERT INTO jti (kind, key, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (kind, key) DO NOTHING",
                )
                .bind(kind.code())
                .bind(key)
                .bind(expires_at)
                .execute(&self.pool)
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One transaction: one commit for all the records.
    async fn insert_jtis(&self, items: &[(JtiKind, &[u8], i64)]) -> Result<Vec<bool>, Error> {
        for (_, key, _) in items {
            check_key("jti key", key)?;
        }
        self.run("insert_jtis", || async move {
            let mut tx = self.pool.begin().await?;
            let out = insert_jtis_in(&mut tx, items).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    /// One transaction: the expired rows of every table, then the issues of codes that no
    /// longer exist.
    async fn purge_expired(&self, now: i64) -> Result<u64, Error> {
        self.run("purge_expired", || async move {
            let mut tx = self.pool.begin().await?;
            let mut purged = 0u64;
            for sql in PURGE_EXPIRED {
                let done = sqlx::query(sql).bind(now).execute(&mut *tx).await?;
                purged = purged.saturating_add(done.rows_affected());
            }
            let done = sqlx::query(PURGE_ORPHAN_ISSUES).execute(&mut *tx).await?;
            purged = purged.saturating_add(done.rows_affected());
            tx.commit().await?;
            Ok(purged)
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, Error> {
        let rows = self
            .run("signing_keys", || {
                sqlx::query(
                    "SELECT kid, alg, public_jwk, private_key, created_at, activate_at \
                     FROM signing_keys ORDER BY activate_at, created_at, kid",
                )
                .fetch_all(&self.pool)
            })
            .await?;
        rows.iter()
            .map(|row| stored_key(row).map_err(map_err))
            .collect()
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), Error> {
        self.run("insert_signing_key", || {
            sqlx::query(
                "INSERT INTO signing_keys \
                 (kid, alg, public_jwk, private_key, created_at, activate_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.public_jwk)
            .bind(&key.private_key)
            .bind(key.created_at)
            .bind(key.activate_at)
            .execute(&self.pool)
        })
        .await
        .map_err(|e| match e {
            Error::Conflict(_) => {
                Error::Conflict(format!("a signing key with kid {:?} exists", key.kid))
            }
            other => other,
        })?;
        Ok(())
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<bool, Error> {
        let done = self
            .run("delete_signing_key", || {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(&self.pool)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, Error> {
        // Under READ COMMITTED the INSERT waits for a concurrent inserter of the same name to
        // commit, so the SELECT that follows sees the first value.
        self.run("secret_or_insert", || {
            sqlx::query(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
        })
        .await?;
        // Secrets are never deleted, so the row is there now: ours or the first caller's.
        self.run("secret_or_insert", || {
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
        })
        .await?
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
        self.run("put_record", || {
            sqlx::query(
                "INSERT INTO records (kind, key, data, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kind, key) \
                 DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at",
            )
            .bind(kind.code())
            .bind(key)
            .bind(data)
            .bind(expires_at)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn get_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        now: i64,
    ) -> Result<Option<String>, Error> {
        check_key("record key", key)?;
        self.run("get_record", || {
            sqlx::query_scalar(
                "SELECT data FROM records WHERE kind = $1 AND key = $2 AND expires_at > $3",
            )
            .bind(kind.code())
            .bind(key)
            .bind(now)
            .fetch_optional(&self.pool)
        })
        .await
    }

    /// One `DELETE … RETURNING` statement: a concurrent caller waits for the row lock and then
    /// finds the row gone, so exactly one returns it.
    async fn take_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        now: i64,
    ) -> Result<Option<String>, Error> {
        check_key("record key", key)?;
        self.run("take_record", || {
            sqlx::query_scalar(
                "DELETE FROM records WHERE kind = $1 AND key = $2 AND expires_at > $3 \
                 RETURNING data",
            )
            .bind(kind.code())
            .bind(key)
            .bind(now)
            .fetch_optional(&self.pool)
        })
        .await
    }

    async fn delete_record(&self, kind: RecordKind, key: &[u8]) -> Result<bool, Error> {
        check_key("record key", key)?;
        let done = self
            .run("delete_record", || {
                sqlx::query("DELETE FROM records WHERE kind = $1 AND key = $2")
                    .bind(kind.code())
                    .bind(key)
                    .execute(&self.pool)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_code(&self, key: &[u8], data: &str, expires_at: i64) -> Result<(), Error> {
        check_key("code key", key)?;
        check_text("code data", data)?;
        self.run("insert_code", || {
            sqlx::query("INSERT INTO codes (key, data, expires_at) VALUES ($1, $2, $3)")
                .bind(key)
                .bind(data)
                .bind(expires_at)
                .execute(&self.pool)
        })
        .await
        .map_err(|e| match e {
            Error::Conflict(_) => {
                Error::Conflict("an authorization code with this key exists".to_owned())
            }
            other => other,
        })?;
        Ok(())
    }

    /// An `UPDATE … RETURNING` that only matches an unredeemed, unexpired code decides the
    /// one fresh redemption: a concurrent caller waits for the row lock, re-checks the
    /// condition on the committed row (READ COMMITTED; under SERIALIZABLE it fails and is
    /// retried) and matches nothing. A read of the committed row then tells a reuse from a
    /// missing code.
    async fn redeem_code(&self, key: &[u8], now: i64) -> Result<Redemption, Error> {
        check_key("code key", key)?;
        // Two separately retried steps, never one: retrying both after the UPDATE committed
        // would report the caller's own redemption as a reuse.
        let fresh: Option<String> = self
            .run("redeem_code", || {
                sqlx::query_scalar(
                    "UPDATE codes SET redeemed_at = $2 \
                     WHERE key = $1 AND redeemed_at IS NULL AND expires_at > $2 \
                     RETURNING data",
                )
                .bind(key)
                .bind(now)
                .fetch_optional(&self.pool)
            })
            .await?;
        if let Some(data) = fresh {
            return Ok(Redemption::Fresh(data));
        }
        let rows: Vec<(String, Option<String>)> = self
            .run("redeem_code", || {
                sqlx::query_as(
                    "SELECT c.data, i.jti FROM codes c \
                     LEFT JOIN code_issues i ON i.code_key = c.key \
                     WHERE c.key = $1 AND c.redeemed_at IS NOT NULL AND c.expires_at > $2 \
                     ORDER BY i.jti",
                )
                .bind(key)
                .bind(now)
                .fetch_all(&self.pool)
            })
            .await?;
        Ok(Redemption::from_reused_rows(rows))
    }

    async fn record_code_issue(&self, key: &[u8], jti: &str) -> Result<(), Error> {
        check_key("code key", key)?;
        check_token_id(jti)?;
        self.run("record_code_issue", || {
            sqlx::query(
                "INSERT INTO code_issues (code_key, jti) VALUES ($1, $2) \
                 ON CONFLICT (code_key, jti) DO NOTHING",
            )
            .bind(key)
            .bind(jti)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), Error> {
        check_token_id(jti)?;
        self.run("revoke_token", || {
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE revoked_tokens.expires_at < EXCLUDED.expires_at",
            )
            .bind(jti)
            .bind(expires_at)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool, Error> {
        check_token_id(jti)?;
        self.run("is_token_revoked", || {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1)")
                .bind(jti)
                .fetch_one(&self.pool)
        })
        .await
    }

    /// One transaction (see `insert_refresh_once`), retried as a whole.
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
        let inserted = self
            .run("insert_refresh", || {
                insert_refresh_once(&self.pool, key, family_id, client_id, data, expires_at)
            })
            .await
            .map_err(refresh_insert_conflict)?;
        if !inserted {
            return Err(Error::Conflict(format!(
                "refresh family {family_id:?} belongs to another client"
            )));
        }
        Ok(())
    }

    /// One transaction (see `rotate_refresh_once`), retried as a whole: a serialization
    /// failure or deadlock rolled everything back, so the retry decides afresh.
    async fn rotate_refresh(
        &self,
        old_key: &[u8],
        new_key: &[u8],
        now: i64,
        grace: i64,
    ) -> Result<Rotation, Error> {
        check_key("refresh token key", old_key)?;
        check_key("refresh token key", new_key)?;
        self.run("rotate_refresh", || {
            rotate_refresh_once(&self.pool, old_key, new_key, now, grace)
        })
        .await
        .map_err(refresh_insert_conflict)?
        .ok_or_else(|| {
            Error::Unavailable(
                "refresh token rotation kept losing to concurrent rotations".to_owned(),
            )
        })
    }

    async fn refresh_lookup(&self, key: &[u8], now: i64) -> Result<Option<RefreshRecord>, Error> {
        check_key("refresh token key", key)?;
        let row: Option<(String, String, String, Option<i64>, Option<i64>)> = self
            .run("refresh_lookup", || {
                sqlx::query_as(
                    "SELECT t.family_id, f.client_id, t.data, t.replaced_at, f.revoked_at FROM refresh_tokens t \
                     JOIN refresh_families f ON f.family_id = t.family_id \
                     WHERE t.key = $1 AND t.expires_at > $2",
                )
                .bind(key)
                .bind(now)
                .fetch_optional(&self.pool)
            })
            .await?;
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
        let done = self
            .run("revoke_refresh_family", || {
                sqlx::query(
                    "UPDATE refresh_families SET revoked_at = \
                     COALESCE(revoked_at, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)) \
                     WHERE family_id = $1",
                )
                .bind(family_id)
                .execute(&self.pool)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_delegation(&self, from: &str, to: &str) -> Result<(), Error> {
        check_id("organization number", from)?;
        check_id("organization number", to)?;
        self.run("add_delegation", || {
            sqlx::query(
                "INSERT INTO delegations (from_org, to_org) VALUES ($1, $2) \
                 ON CONFLICT (from_org, to_org) DO NOTHING",
            )
            .bind(from)
            .bind(to)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn remove_delegation(&self, from: &str, to: &str) -> Result<bool, Error> {
        check_id("organization number", from)?;
        check_id("organization number", to)?;
        let done = self
            .run("remove_delegation", || {
                sqlx::query("DELETE FROM delegations WHERE from_org = $1 AND to_org = $2")
                    .bind(from)
                    .bind(to)
                    .execute(&self.pool)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `COLLATE "C"` compares bytes, as SQLite does, whatever the database's collation.
    async fn delegations(&self) -> Result<Vec<(String, String)>, Error> {
        self.run("delegations", || {
            sqlx::query_as(
                "SELECT from_org, to_org FROM delegations \
                 ORDER BY from_org COLLATE \"C\", to_org COLLATE \"C\"",
            )
            .fetch_all(&self.pool)
        })
        .await
    }

    /// One transaction (see `append_audit_once`), retried as a whole: a failed attempt was
    /// rolled back, and the retry links to whatever head it then finds.
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
        self.run("append_audit", || {
            append_audit_once(&self.pool, events, link)
        })
        .await?
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
        let (fresh, _) = self
            .run("commit_group", || {
                commit_group_once(&self.pool, jtis, events, gated, link)
            })
            .await??;
        Ok(fresh)
    }

    async fn audit_head(&self) -> Result<AuditHead, Error> {
        let (seq, hash): (i64, Vec<u8>) = self
            .run("audit_head", || {
                sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_optional(&self.pool)
            })
            .await?
            .ok_or_else(|| Error::Corrupt("the audit chain head is missing".to_owned()))?;
        Ok(AuditHead { seq, hash })
    }

    async fn audit_events(&self, from_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, Error> {
        let sql = format!(
            "SELECT {} FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT $2",
            audit::COLUMNS
        );
        let rows = self
            .run("audit_events", || {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(from_seq)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
            })
            .await?;
        rows.iter()
            .map(|row| audit_record(row).map_err(map_err))
            .collect()
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, Error> {
        let (conditions, params) = audit::query_sql(query, |n| format!("${n}"));
        let sql = format!(
            "SELECT {} FROM audit_events WHERE {conditions} ORDER BY seq LIMIT ${}",
            audit::COLUMNS,
            params.len() + 1
        );
        let rows = self
            .run("query_audit", || {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for param in &params {
                    q = match param {
                        QueryParam::Int(i) => q.bind(*i),
                        QueryParam::Text(t) => q.bind(t.clone()),
                    };
                }
                q.bind(i64::from(query.limit)).fetch_all(&self.pool)
            })
            .await?;
        rows.iter()
            .map(|row| audit_record(row).map_err(map_err))
            .collect()
    }

    async fn insert_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<(), Error> {
        for text in [&checkpoint.kid, &checkpoint.public_jwk, &checkpoint.jws] {
            check_text("audit checkpoint", text)?;
        }
        self.run("insert_audit_checkpoint", || {
            sqlx::query(
                "INSERT INTO audit_checkpoints (seq, time, kid, public_jwk, jws) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(checkpoint.seq)
            .bind(checkpoint.time)
            .bind(&checkpoint.kid)
            .bind(&checkpoint.public_jwk)
            .bind(&checkpoint.jws)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>, Error> {
        let rows: Vec<(i64, i64, String, String, String)> = self
            .run("audit_checkpoints", || {
                sqlx::query_as(
                    "SELECT seq, time, kid, public_jwk, jws FROM audit_checkpoints \
                     ORDER BY seq, id",
                )
                .fetch_all(&self.pool)
            })
            .await?;
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
