//! The JOSE error type: detailed enough for logs and for a helpful `error_description`.

/// What went wrong while parsing, verifying or signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is not a well-formed JWS/JWK/JSON.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The JSON has the same member twice (RFC 7515 §4: we reject rather than pick one).
    #[error("duplicate JSON member \"{0}\"")]
    DuplicateMember(String),
    /// The `alg` is unknown, `none`, symmetric, or not allowed here.
    #[error("algorithm {0} is not allowed")]
    AlgNotAllowed(String),
    /// The key cannot be used (wrong type, too small, malformed, private where public is needed).
    #[error("unusable key: {0}")]
    Key(&'static str),
    /// No trusted key fits the JWS header.
    #[error("no registered key matches")]
    NoMatchingKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The JWS is larger than we accept.
    #[error("JWT too large")]
    TooLarge,
    /// The crypto library refused an operation that should not fail.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}
