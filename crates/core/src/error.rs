//! [`OAuthError`]: what the protocol says went wrong, as an RFC error code plus a description
//! for the client's developer. The server maps it to a status code and JSON body.

use segl_proto::ErrorCode;
use segl_proto::error::sanitize_description;

/// A protocol error: an RFC error code and a description safe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The `error` code.
    pub code: ErrorCode,
    /// The `error_description` (printable ASCII without `"` and `\`).
    pub description: String,
}

impl OAuthError {
    /// An error with `code` and a description (sanitised for the wire).
    pub fn new(code: ErrorCode, description: impl AsRef<str>) -> OAuthError {
        OAuthError {
            code,
            description: sanitize_description(description.as_ref()),
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl AsRef<str>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_client`.
    pub fn invalid_client(description: impl AsRef<str>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidClient, description)
    }

    /// `invalid_scope`.
    pub fn invalid_scope(description: impl AsRef<str>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidScope, description)
    }

    /// `invalid_target`.
    pub fn invalid_target(description: impl AsRef<str>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidTarget, description)
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}
