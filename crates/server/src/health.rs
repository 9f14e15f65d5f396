//! `/health/live` (the process answers) and `/health/ready` (the store answers too).

use crate::App;
use axum::extract::State;
use axum::http::StatusCode;

/// Liveness: always 200 while the process serves.
pub(crate) async fn live() -> &'static str {
    "ok"
}

/// Readiness: 200 when the store answers a ping, else 503.
pub(crate) async fn ready(State(app): State<App>) -> (StatusCode, &'static str) {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}
