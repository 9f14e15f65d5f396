//! [`ApiError`]: the one mapping from every failure to an HTTP answer. Protocol errors go out
//! as RFC 6749 §5.2 JSON; infrastructure failures are logged here and answered as
//! `temporarily_unavailable` (503) or `server_error` (500) — never as `invalid_grant` or
//! `invalid_client`, which clients treat as final.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segl_core::OAuthError;
use segl_proto::{ErrorCode, ErrorResponse};

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// A protocol error.
    OAuth(OAuthError),
    /// The body exceeds the limit (413).
    TooLarge(usize),
    /// The store failed.
    Store(segl_store::Error),
    /// A bug or an unexpected failure; the detail is logged, never sent.
    Internal(String),
    /// Over a rate limit (429 with `Retry-After`).
    RateLimited(std::time::Duration),
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        ApiError::OAuth(e)
    }
}

impl From<segl_store::Error> for ApiError {
    fn from(e: segl_store::Error) -> Self {
        ApiError::Store(e)
    }
}

impl From<segl_jose::Error> for ApiError {
    fn from(e: segl_jose::Error) -> Self {
        ApiError::Internal(format!("signing: {e}"))
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A JSON error answer with `Cache-Control: no-store`.
pub fn oauth_response(status: StatusCode, error: OAuthError) -> Response {
    let body = ErrorResponse {
        error: error.code,
        error_description: Some(error.description),
    };
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::OAuth(e) => {
                tracing::info!(error = %e.code, description = %e.description, "request refused");
                oauth_response(status_of(e.code), e)
            }
            ApiError::TooLarge(limit) => oauth_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                OAuthError::invalid_request(format!("request body is larger than {limit} bytes")),
            ),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                let code = match e {
                    segl_store::Error::Unavailable(_) => ErrorCode::TemporarilyUnavailable,
                    _ => ErrorCode::ServerError,
                };
                oauth_response(
                    status_of(code),
                    OAuthError::new(
                        code,
                        "the server cannot complete this request now; retry later",
                    ),
                )
            }
            ApiError::RateLimited(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut r = oauth_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    OAuthError::new(
                        ErrorCode::TemporarilyUnavailable,
                        format!("rate limit reached: retry after {secs} s"),
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                oauth_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    OAuthError::new(ErrorCode::ServerError, "internal error"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store outage is never a final-sounding protocol error (SECURITY.md, reliability §1).
    #[test]
    fn store_failures_are_5xx_with_retry_after() {
        let r = ApiError::Store(segl_store::Error::Unavailable("down".into())).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let r = ApiError::Store(segl_store::Error::Corrupt("bad row".into())).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        for code in [ErrorCode::InvalidClient, ErrorCode::InvalidToken] {
            assert_eq!(status_of(code), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(status_of(ErrorCode::InvalidGrant), StatusCode::BAD_REQUEST);
    }
}
