//! Prometheus metrics at `/metrics`: requests by endpoint and status, request latency, tokens
//! issued by grant, and the latency of the store operations on the token path. Labels are
//! route paths, status codes, grant types and operation names — never a client, person or token.

use crate::App;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

/// The process's recorder (installed once, shared by every app in the process).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// Counts and times every request by its route.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("segl_http_requests_total", "path" => path.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("segl_http_request_duration_seconds", "path" => path)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts an issued access token.
pub(crate) fn token_issued(grant: &'static str) {
    metrics::counter!("segl_tokens_issued_total", "grant" => grant).increment(1);
}

/// Times a store operation.
pub(crate) async fn store_op<T>(op: &'static str, fut: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = fut.await;
    metrics::histogram!("segl_store_operation_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    out
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn render(State(_app): State<App>) -> Response {
    let body = handle().map(|h| h.render()).unwrap_or_default();
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Keeps histograms bounded (called from the maintenance loop).
pub(crate) fn upkeep() {
    if let Some(h) = handle() {
        h.run_upkeep();
    }
}
