//! The store's error type. Callers map [`Error::Unavailable`] to 503 `temporarily_unavailable`
//! and never to `invalid_grant`/`invalid_client` (SECURITY.md, reliability §1).

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached, timed out, or failed in a way a retry may fix.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint was violated where the caller did not expect a replay.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database URL or options are wrong.
    #[error("store configuration: {0}")]
    Config(String),
    /// Data in the database is not what this version of Segl wrote.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
}

/// Maps a sqlx error to a store [`Error`]. Failures that mean the same on every backend are
/// mapped here; errors the database server itself returned are passed to `database`, which
/// knows that backend's error codes.
pub(crate) fn from_sqlx(
    err: sqlx::Error,
    database: impl FnOnce(&dyn sqlx::error::DatabaseError) -> Error,
) -> Error {
    match err {
        sqlx::Error::Database(db) => database(db.as_ref()),
        sqlx::Error::Configuration(e) => Error::Config(e.to_string()),
        sqlx::Error::InvalidArgument(e) => Error::Config(e),
        sqlx::Error::Io(e) => Error::Unavailable(format!("i/o error talking to the database: {e}")),
        sqlx::Error::Tls(e) => {
            Error::Unavailable(format!("TLS error talking to the database: {e}"))
        }
        sqlx::Error::Protocol(e) => Error::Unavailable(format!("database protocol error: {e}")),
        sqlx::Error::PoolTimedOut => {
            Error::Unavailable("timed out waiting for a database connection".to_owned())
        }
        sqlx::Error::PoolClosed => Error::Unavailable("the database pool is closed".to_owned()),
        sqlx::Error::WorkerCrashed => {
            Error::Unavailable("the database worker thread crashed".to_owned())
        }
        e @ (sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)) => Error::Corrupt(e.to_string()),
        // Anything else (new sqlx variants included) is treated as retryable: a 503 is the
        // safe answer when we do not know what happened.
        e => Error::Unavailable(e.to_string()),
    }
}

/// The longest `key` the store accepts, in bytes (a SHA-512 digest): the keys of
/// [`crate::Store::insert_jti`], [`crate::Store::put_record`] and the other record methods,
/// of [`crate::Store::insert_code`] and the other code methods, and of
/// [`crate::Store::insert_refresh`] and the other refresh-token methods.
pub(crate) const MAX_KEY_LEN: usize = 64;

/// Rejects a key longer than [`MAX_KEY_LEN`] with [`Error::Corrupt`]: callers pass a
/// fixed-size digest, so a longer key is a programming error, and we refuse to write data no
/// version of Segl is meant to write rather than store an unbounded caller-controlled value.
/// `what` names the key in the message (e.g. `"jti key"`).
pub(crate) fn check_key(what: &str, key: &[u8]) -> Result<(), Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::Corrupt(format!(
            "{what} is {} bytes; at most {MAX_KEY_LEN} are allowed",
            key.len()
        )));
    }
    Ok(())
}

/// The longest identifier the store accepts, in bytes: token ids
/// ([`crate::Store::record_code_issue`], [`crate::Store::revoke_token`],
/// [`crate::Store::is_token_revoked`]), refresh-token family and client ids
/// ([`crate::Store::insert_refresh`] and the other refresh methods) and organization numbers
/// ([`crate::Store::add_delegation`] and the other delegation methods). Segl's own `jti`s are
/// 32 hex digits and organization numbers nine digits; the bound keeps an unbounded
/// caller-controlled value out of a unique index (PostgreSQL refuses index entries over about
/// 2.7 kB with an error that would otherwise be reported as [`Error::Unavailable`]).
pub(crate) const MAX_ID_LEN: usize = 255;

/// Rejects a token id longer than [`MAX_ID_LEN`] bytes or containing NUL (see [`check_id`]).
pub(crate) fn check_token_id(jti: &str) -> Result<(), Error> {
    check_id("token id", jti)
}

/// Rejects an identifier longer than [`MAX_ID_LEN`] bytes or containing NUL (see
/// [`check_text`]) with [`Error::Corrupt`]. `what` names the identifier in the message (e.g.
/// `"refresh family id"`).
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), Error> {
    if id.len() > MAX_ID_LEN {
        return Err(Error::Corrupt(format!(
            "{what} is {} bytes; at most {MAX_ID_LEN} are allowed",
            id.len()
        )));
    }
    check_text(what, id)
}

/// Rejects text containing a NUL character with [`Error::Corrupt`]. PostgreSQL cannot store
/// NUL in a `TEXT` column while SQLite can; refusing it on every backend keeps them
/// interchangeable (JSON never contains a raw NUL, so only a caller bug produces one).
/// `what` names the value in the message (e.g. `"record data"`).
pub(crate) fn check_text(what: &str, text: &str) -> Result<(), Error> {
    if text.contains('\0') {
        return Err(Error::Corrupt(format!(
            "{what} contains a NUL character, which the store does not accept"
        )));
    }
    Ok(())
}
