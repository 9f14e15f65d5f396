//! Segl's persistent state behind one [`Store`] trait, with an embedded SQLite implementation
//! (the default) and a PostgreSQL implementation (for many server processes).
//!
//! The store owns durability and the atomicity of one-time operations: a `jti` is recorded by an
//! `INSERT` whose unique constraint *is* the replay check, so exactly one of any number of
//! concurrent callers, on one process or many, sees it as fresh. It makes no protocol
//! decisions: callers pass opaque keys, timestamps (unix seconds) and already-encrypted blobs.
//! The audit log is kept here too, as a hash chain whose hash function the caller supplies
//! ([`AuditLink`]): the store serializes appenders and never decides what an event means.

mod audit;
mod error;
mod migrate;
mod postgres;
mod refresh;
mod sqlite;

pub use audit::{
    AuditCheckpoint, AuditEvent, AuditGate, AuditHead, AuditLink, AuditQuery, AuditRecord,
    MAX_AUDIT_ITEMS, MAX_AUDIT_TEXT, check_audit_event,
};
pub use error::Error;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::sync::Arc;

/// Which kind of one-time identifier a [`Store::insert_jti`] call records. Kinds never collide:
/// the same `jti` string as a client assertion and as a DPoP proof are different records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JtiKind {
    /// A private_key_jwt client assertion (RFC 7523 §3 item 7).
    ClientAssertion,
    /// A DPoP proof (RFC 9449 §11.1).
    DpopProof,
    /// A request object (RFC 9101).
    RequestObject,
}

impl JtiKind {
    /// The stable number stored for this kind.
    pub fn code(self) -> i16 {
        match self {
            JtiKind::ClientAssertion => 1,
            JtiKind::DpopProof => 2,
            JtiKind::RequestObject => 3,
        }
    }
}

/// Kinds of short-lived records kept by [`Store::put_record`]. Kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A pushed authorization request (RFC 9126), keyed by a digest of its `request_uri`.
    PushedRequest,
    /// A login in progress: the authorization request between `/connect/authorize` and the
    /// identity provider's answer.
    LoginTransaction,
    /// A browser session (single sign-on), keyed by a digest of the session cookie.
    Session,
    /// A login at an upstream identity provider in progress, keyed by a digest of the `state`
    /// sent to it.
    UpstreamLogin,
}

impl RecordKind {
    /// The stable number stored for this kind.
    pub fn code(self) -> i16 {
        match self {
            RecordKind::PushedRequest => 1,
            RecordKind::LoginTransaction => 2,
            RecordKind::Session => 3,
            RecordKind::UpstreamLogin => 4,
        }
    }
}

/// The outcome of [`Store::redeem_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// First redemption: the code is now spent; here is its data.
    Fresh(String),
    /// The code was redeemed before (RFC 6749 §4.1.2: deny, and revoke what it issued):
    /// its data and the `jti`s recorded with [`Store::record_code_issue`].
    Reused {
        /// The code's data.
        data: String,
        /// Token ids issued from the first redemption.
        issued: Vec<String>,
    },
    /// No such code, or it has expired.
    Missing,
}

impl Redemption {
    /// The outcome for a code the redeeming `UPDATE` did not match, from the `(data, jti)`
    /// rows of the backends' "redeemed, unexpired code LEFT JOIN its issues" query (`jti` is
    /// NULL when none were recorded). No rows means [`Redemption::Missing`].
    pub(crate) fn from_reused_rows(rows: Vec<(String, Option<String>)>) -> Redemption {
        let mut rows = rows.into_iter();
        match rows.next() {
            None => Redemption::Missing,
            Some((data, first)) => Redemption::Reused {
                data,
                issued: first
                    .into_iter()
                    .chain(rows.filter_map(|(_, jti)| jti))
                    .collect(),
            },
        }
    }
}

/// The outcome of [`Store::rotate_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// First use of a live refresh token: it is now replaced by the successor, which was
    /// inserted with the same family, data and absolute expiry.
    Rotated {
        /// The family.
        family_id: String,
        /// The grant's data.
        data: String,
        /// The family's absolute expiry.
        expires_at: i64,
    },
    /// A retry with the just-replaced token inside the grace window, naming the same successor
    /// that has not been used yet: answer safely again; nothing changes.
    Grace {
        /// The family.
        family_id: String,
        /// The grant's data.
        data: String,
        /// The family's absolute expiry.
        expires_at: i64,
    },
    /// Any other use of a replaced token: the whole family has now been revoked.
    Reused {
        /// The revoked family.
        family_id: String,
    },
    /// The family was revoked earlier.
    Revoked,
    /// No such token, or it has expired.
    Missing,
}

/// A refresh token as [`Store::refresh_lookup`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// Its family.
    pub family_id: String,
    /// The client the family belongs to.
    pub client_id: String,
    /// The grant's data.
    pub data: String,
    /// Not replaced, and its family not revoked (it would rotate if used now).
    pub live: bool,
}

/// A token-signing key as stored: the public JWK in clear, the private key encrypted by the
/// caller (the store never sees a key-encryption key).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id (RFC 7638 thumbprint), unique.
    pub kid: String,
    /// JWS algorithm name, e.g. `RS256`.
    pub alg: String,
    /// The public JWK as JSON text.
    pub public_jwk: String,
    /// The private key, encrypted (nonce || AEAD ciphertext).
    pub private_key: Vec<u8>,
    /// When the key was created (unix seconds).
    pub created_at: i64,
    /// From when the key signs (unix seconds). The newest key whose `activate_at` has passed
    /// signs; the keys before it are retired at the moment their successor activated.
    pub activate_at: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activate_at", &self.activate_at)
            .finish_non_exhaustive()
    }
}

/// Everything Segl persists. Implementations must be safe to share between tasks and between
/// processes using the same database.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Applies every migration not yet applied (idempotent; safe when several processes start
    /// at once).
    async fn migrate(&self) -> Result<(), Error>;

    /// A cheap round trip that fails when the database cannot be reached.
    async fn ping(&self) -> Result<(), Error>;

    /// Records a one-time identifier. `key` is an opaque digest chosen by the caller (at most
    /// 64 bytes) that already includes the issuing client and the `jti`. Returns `Ok(true)` when
    /// this is the first time the key is recorded and `Ok(false)` when it is already there
    /// (a replay). The record is kept at least until `expires_at`.
    async fn insert_jti(&self, kind: JtiKind, key: &[u8], expires_at: i64) -> Result<bool, Error>;

    /// Records several one-time identifiers in one transaction (one durable commit): the
    /// verdict of each, in order, as [`Store::insert_jti`] gives it.
    async fn insert_jtis(&self, items: &[(JtiKind, &[u8], i64)]) -> Result<Vec<bool>, Error> {
        let mut out = Vec::with_capacity(items.len());
        for (kind, key, expires_at) in items {
            out.push(self.insert_jti(*kind, key, *expires_at).await?);
        }
        Ok(out)
    }

    /// Deletes every row whose `expires_at` is before `now` (a row expiring exactly at `now` is
    /// kept): `jti`s, records, authorization codes together with the token ids recorded for
    /// them, revocations, and refresh tokens and refresh-token families (replaced, revoked or
    /// not); also the token ids recorded for codes that no longer exist. Returns how many rows
    /// were deleted in all. One transaction.
    async fn purge_expired(&self, now: i64) -> Result<u64, Error>;

    /// Every stored signing key, oldest `activate_at` first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, Error>;

    /// Adds a signing key. A duplicate `kid` is [`Error::Conflict`].
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), Error>;

    /// Deletes a signing key by `kid`; returns whether it existed.
    async fn delete_signing_key(&self, kid: &str) -> Result<bool, Error>;

    /// Returns the secret stored under `name`, storing `candidate` first if there is none. All
    /// processes sharing the database thus agree on one value (used for HMAC keys).
    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, Error>;

    /// Stores a short-lived record (`key` at most 64 bytes, `data` opaque text, typically
    /// JSON). An existing record of the same kind and key is replaced (data and expiry, even
    /// when the existing one is still live). The record is live while `expires_at > now`.
    ///
    /// Errors: [`Error::Corrupt`] for a longer key or `data` containing NUL (which
    /// PostgreSQL cannot store; refused on every backend alike).
    async fn put_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        data: &str,
        expires_at: i64,
    ) -> Result<(), Error>;

    /// Reads a record that has not expired at `now` (that is, `expires_at > now`), without
    /// consuming it.
    async fn get_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        now: i64,
    ) -> Result<Option<String>, Error>;

    /// Reads and deletes a record in one atomic step: of concurrent callers, on one process or
    /// many, exactly one gets it. An expired record (`expires_at <= now`) is not returned and
    /// is left for [`Store::purge_expired`].
    async fn take_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        now: i64,
    ) -> Result<Option<String>, Error>;

    /// Deletes a record, expired or not; returns whether it existed.
    async fn delete_record(&self, kind: RecordKind, key: &[u8]) -> Result<bool, Error>;

    /// Stores a new authorization code (`key` a digest of the code, at most 64 bytes; `data`
    /// opaque text without NUL). The row is kept until `expires_at` even after redemption, so
    /// that a second redemption is recognised.
    ///
    /// Errors: [`Error::Conflict`] when a code with this key exists (redeemed, expired but not
    /// yet purged, or live); [`Error::Corrupt`] for a longer key or `data` containing NUL.
    async fn insert_code(&self, key: &[u8], data: &str, expires_at: i64) -> Result<(), Error>;

    /// Redeems a code atomically: of concurrent callers, on one process or many, exactly one
    /// gets [`Redemption::Fresh`]; the others, and later ones, get [`Redemption::Reused`]
    /// while the code has not expired at `now` (`expires_at > now`). A code that has expired
    /// (redeemed or not) or does not exist is [`Redemption::Missing`]; an expired code is
    /// never marked redeemed.
    ///
    /// The token ids in `Reused` are the ones recorded *so far*: a reuse that races the first
    /// redemption may be seen before that redemption's caller has recorded what it issued.
    async fn redeem_code(&self, key: &[u8], now: i64) -> Result<Redemption, Error>;

    /// Records that a token with id `jti` was issued from the code `key`, for
    /// [`Redemption::Reused`]. Recording the same pair again does nothing. The code is not
    /// checked to exist; the ids are deleted with the code by [`Store::purge_expired`] (or,
    /// when there is no such code, by the next purge).
    ///
    /// Errors: [`Error::Corrupt`] for a key over 64 bytes, or a `jti` over 255 bytes or
    /// containing NUL.
    async fn record_code_issue(&self, key: &[u8], jti: &str) -> Result<(), Error>;

    /// Marks an access token id as revoked until `expires_at` (its own expiry). Revoking an
    /// id again keeps the later of the two expiries.
    ///
    /// Errors: [`Error::Corrupt`] for a `jti` over 255 bytes or containing NUL.
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), Error>;

    /// Whether an access token id has been revoked: `true` while its revocation is stored,
    /// including after its `expires_at` until [`Store::purge_expired`] removes it (the token
    /// itself has expired by then, so the answer no longer matters). Takes no `now`.
    ///
    /// Errors: [`Error::Corrupt`] for a `jti` over 255 bytes or containing NUL (no such id
    /// can have been revoked, but a revocation check fails closed).
    async fn is_token_revoked(&self, jti: &str) -> Result<bool, Error>;

    /// Stores the first refresh token of a new family (`key` a digest of the token, at most 64
    /// bytes; `data` the grant, opaque text without NUL). The family (`family_id`, owned by
    /// `client_id`) is created when absent and expires, absolutely, at `expires_at`: every
    /// token rotated from this one has the same expiry. Adding a token to a family that
    /// already exists (same client) keeps the later of the two expiries, so no token outlives
    /// its family. One transaction.
    ///
    /// Errors: [`Error::Conflict`] when a refresh token with this key exists (replaced,
    /// expired but not yet purged, or live), or when the family exists and belongs to another
    /// client (nothing is written); [`Error::Corrupt`] for a longer key, `data` containing
    /// NUL, or a `family_id` / `client_id` over 255 bytes or containing NUL.
    async fn insert_refresh(
        &self,
        key: &[u8],
        family_id: &str,
        client_id: &str,
        data: &str,
        expires_at: i64,
    ) -> Result<(), Error>;

    /// Uses a refresh token, atomically: one transaction (SQLite: `BEGIN IMMEDIATE`;
    /// PostgreSQL: retried on serialization failure or deadlock) reads the token `old_key`
    /// with its family and decides, in this order:
    /// - unknown, or expired at `now` (`expires_at <= now`) → [`Rotation::Missing`];
    /// - its family was revoked → [`Rotation::Revoked`];
    /// - live and not yet replaced: mark it replaced by `new_key` at `now` (a conditional
    ///   `UPDATE … WHERE replaced_at IS NULL`, so of concurrent callers exactly one does),
    ///   insert `new_key` with the same family, data and expiry → [`Rotation::Rotated`];
    /// - replaced by this same `new_key` no more than `grace` seconds before `now`
    ///   (`now - replaced_at <= grace`), and that successor not replaced itself →
    ///   [`Rotation::Grace`], changing nothing;
    /// - replaced otherwise (a different `new_key`, after the grace window, or after the
    ///   successor was used) → the family is revoked at `now` → [`Rotation::Reused`].
    ///
    /// Of concurrent callers with the same `old_key` and `new_key`, on one process or many,
    /// exactly one gets `Rotated` and the others `Grace` (inside the window): never two
    /// successors. `new_key` must be derived from the old token (so a retry names the same
    /// successor) and is at most 64 bytes.
    ///
    /// Errors: [`Error::Conflict`] when the token would be rotated but `new_key` is already a
    /// refresh token (including `new_key == old_key`; nothing changes); [`Error::Corrupt`]
    /// for a key over 64 bytes.
    async fn rotate_refresh(
        &self,
        old_key: &[u8],
        new_key: &[u8],
        now: i64,
        grace: i64,
    ) -> Result<Rotation, Error>;

    /// The `(family_id, client_id)` of a refresh token whose row exists and has not expired at
    /// `now` (`expires_at > now`): live or replaced, in a revoked family or not — so that
    /// revocation (RFC 7009) finds the family by any of its tokens. `None` for an unknown or
    /// expired token.
    ///
    /// Errors: [`Error::Corrupt`] for a key over 64 bytes.
    async fn refresh_owner(&self, key: &[u8], now: i64) -> Result<Option<(String, String)>, Error> {
        Ok(self
            .refresh_lookup(key, now)
            .await?
            .map(|r| (r.family_id, r.client_id)))
    }

    /// A refresh token that has not expired, live or not (no change is made): what a caller
    /// checks before using it (owner, DPoP binding), and what introspection reports.
    ///
    /// Errors: [`Error::Corrupt`] for a key over 64 bytes.
    async fn refresh_lookup(&self, key: &[u8], now: i64) -> Result<Option<RefreshRecord>, Error>;

    /// Revokes a refresh-token family (every token of it then rotates to
    /// [`Rotation::Revoked`]); returns whether the family exists. Idempotent: revoking again
    /// keeps the first revocation. Takes no `now`: the revocation time is stored from the
    /// database's clock and is informational only (only its being set is ever read).
    ///
    /// Errors: [`Error::Corrupt`] for a `family_id` over 255 bytes or containing NUL.
    async fn revoke_refresh_family(&self, family_id: &str) -> Result<bool, Error>;

    /// Records a delegation from a customer organization `from` to a supplier `to`
    /// (multi-tenancy; organization numbers as text). Recording it again does nothing.
    ///
    /// Errors: [`Error::Corrupt`] for an organization number over 255 bytes or containing NUL.
    async fn add_delegation(&self, from: &str, to: &str) -> Result<(), Error>;

    /// Removes a delegation; returns whether it existed.
    ///
    /// Errors: [`Error::Corrupt`] for an organization number over 255 bytes or containing NUL.
    async fn remove_delegation(&self, from: &str, to: &str) -> Result<bool, Error>;

    /// Every delegation `(from, to)`, sorted by `from` then `to`, comparing bytes (the same
    /// order on every backend, whatever the database's collation).
    async fn delegations(&self) -> Result<Vec<(String, String)>, Error>;

    /// Appends `events`, in order, to the audit chain as one segment, in one transaction: each
    /// gets the next sequence number and the hash `link(previous hash, seq, event)`, and the
    /// chain head moves to the last one. Concurrent appenders, in one process or many, are
    /// serialized by the head row (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `SELECT … FOR
    /// UPDATE` in a READ COMMITTED transaction), so they extend one unbroken chain and a
    /// segment is never interleaved with another. Returns the last sequence number (the
    /// unchanged head's for an empty batch, which writes nothing).
    ///
    /// Errors: [`Error::Corrupt`] when an event fails [`check_audit_event`] (nothing is
    /// written) or the head is unreadable.
    async fn append_audit(&self, events: &[AuditEvent], link: &AuditLink<'_>)
    -> Result<i64, Error>;

    /// The group commit of a server's durable writer: [`Store::insert_jtis`] for `jtis` and
    /// [`Store::append_audit`] for `events` followed by `gated(verdicts)`, in **one**
    /// transaction, so that concurrent requests' replay records and audit events share one
    /// durable commit, and a request can have its replay records and the event of what they
    /// allow it to issue committed together. Returns the `jti` verdicts in order (a key
    /// repeated within `jtis` is fresh only the first time). Nothing is written when it fails;
    /// an event (of either kind) that fails [`check_audit_event`] fails the whole commit.
    async fn commit_group(
        &self,
        jtis: &[(JtiKind, &[u8], i64)],
        events: &[AuditEvent],
        gated: &AuditGate<'_>,
        link: &AuditLink<'_>,
    ) -> Result<Vec<bool>, Error>;

    /// The chain head: the last sequence number and hash (0 and 32 zero bytes when empty).
    async fn audit_head(&self) -> Result<AuditHead, Error>;

    /// Up to `limit` audit events with `seq >= from_seq`, in sequence order (a gap in the
    /// numbers is returned as it is: the verifier reports it).
    async fn audit_events(&self, from_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, Error>;

    /// The audit events `query` selects, in sequence order (see [`AuditQuery`]).
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, Error>;

    /// Stores a signed checkpoint. Several may name the same `seq`.
    ///
    /// Errors: [`Error::Corrupt`] for text containing NUL.
    async fn insert_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<(), Error>;

    /// Every stored checkpoint, by `seq` then in the order they were stored.
    async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>, Error>;
}

/// Opens the store a database URL names: `sqlite://PATH` (created if missing; `sqlite::memory:`
/// for a private in-memory database) or `postgres://…` / `postgresql://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url).await?))
    } else {
        Err(Error::Config(format!(
            "unsupported database URL scheme in {:?}: use sqlite://FILE or postgres://…",
            redact_url(url)
        )))
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = url.get(scheme_end + 3..at).unwrap_or("");
            match userinfo.split_once(':') {
                Some((user, _)) => format!(
                    "{}{}:***{}",
                    url.get(..scheme_end + 3).unwrap_or(""),
                    user,
                    url.get(at..).unwrap_or("")
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
