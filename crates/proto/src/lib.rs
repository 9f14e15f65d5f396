//! Wire types shared by the Segl server, its client library, the verifier and the CLI.
//!
//! This crate owns the *names* of the protocol: endpoint paths, grant types, error codes,
//! HelseID claim and scope names, and the JSON shapes of token responses, error responses and
//! discovery metadata. It does no I/O and makes no decisions.

pub mod claims;
pub mod discovery;
pub mod error;
pub mod paths;
pub mod token;

pub use error::{ErrorCode, ErrorResponse};

/// `client_assertion_type` for private_key_jwt (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Grant type names (RFC 6749, RFC 8693).
pub mod grant {
    /// `client_credentials` (RFC 6749 §4.4).
    pub const CLIENT_CREDENTIALS: &str = "client_credentials";
    /// `authorization_code` (RFC 6749 §4.1).
    pub const AUTHORIZATION_CODE: &str = "authorization_code";
    /// `refresh_token` (RFC 6749 §6).
    pub const REFRESH_TOKEN: &str = "refresh_token";
    /// Token exchange (RFC 8693).
    pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
}

/// JWT `typ` header values (RFC 8725 §3.11 explicit typing).
pub mod typ {
    /// Access tokens (RFC 9068).
    pub const ACCESS_TOKEN: &str = "at+jwt";
    /// Client assertions (RFC 7523 as updated).
    pub const CLIENT_AUTHENTICATION: &str = "client-authentication+jwt";
    /// DPoP proofs (RFC 9449).
    pub const DPOP: &str = "dpop+jwt";
    /// Plain JWT.
    pub const JWT: &str = "JWT";
}
