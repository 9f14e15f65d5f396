//! Segl's persistent state behind one [`Store`] trait, with an embedded SQLite implementation
//! (the default) and a PostgreSQL implementation (for many server processes).
//!
//! The store owns durability and the atomicity of one-time operations: a `jti` is recorded by an
//! `INSERT` whose unique constraint *is* the replay check, so exactly one of any number of
//! concurrent callers, on one process or many, sees it as fresh. It makes no protocol
//! decisions: callers pass opaque keys, timestamps (unix seconds) and already-encrypted blobs.

mod error;
mod migrate;
mod postgres;
mod sqlite;

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

    /// Deletes one-time records whose `expires_at` is before `now`; returns how many.
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
