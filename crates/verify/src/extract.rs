//! axum integration (feature `axum`): [`VerifiedToken`] as an extractor for any state `S` with
//! `Arc<Verifier>: FromRef<S>`, and [`VerifyError`] as the response that refuses the request.
//!
//! The extractor reads the method, the request path (the original one, before any `nest`, so
//! that `htu` is the URL the client called) and every `Authorization` and `DPoP` header line.

use crate::{VerifiedToken, Verifier, VerifyError};
use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use segl_proto::ErrorResponse;
use std::sync::Arc;

static DPOP: HeaderName = HeaderName::from_static("dpop");

impl<S> FromRequestParts<S> for VerifiedToken
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = VerifyError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |original| &original.0);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let (Some(authorization), Some(dpop)) = (
            values(&parts.headers, &AUTHORIZATION),
            values(&parts.headers, &DPOP),
        ) else {
            return Err(verifier.invalid_request("a header value is not visible ASCII"));
        };
        verifier
            .verify(&crate::RequestParts {
                method: parts.method.as_str(),
                target,
                authorization: &authorization,
                dpop: &dpop,
            })
            .await
    }
}

/// Every value of header `name`, or `None` if one is not visible ASCII.
fn values<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Vec<&'h str>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect()
}

impl IntoResponse for VerifyError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "access token check unavailable");
        } else {
            tracing::debug!(error = %self, "access token refused");
        }
        let body = match self.error_code() {
            Some(error) => serde_json::to_vec(&ErrorResponse {
                error,
                error_description: self.description().map(crate::error::header_safe),
            })
            .unwrap_or_default(),
            None => Vec::new(),
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers() {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        if self.error_code().is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        } else {
            headers.remove(CONTENT_TYPE);
        }
        response
    }
}
