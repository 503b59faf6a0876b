//! Operational endpoints: `/metrics` (scrape), `/healthz` (process up), `/readyz` (store ready
//! and reachable). Unauthenticated, like every scrape/probe endpoint on an admin listener.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AdminState;

/// prometheus-client's text encoder writes the OpenMetrics 1.0 text format (`_total` suffixes,
/// a final `# EOF`), so that is the content type it is served with; Prometheus negotiates it.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(State(st): State<AdminState>) -> Response {
    let mut resp = st.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    resp
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 once migrations are applied and the store answers a ping; 503 problem otherwise.
pub async fn readyz(State(st): State<AdminState>) -> Result<&'static str, ApiError> {
    if !st.store.is_ready() {
        return Err(ApiError::NotReady(
            "the approval store is not ready (migrations not applied yet)",
        ));
    }
    match st.store.backend().ping().await {
        Ok(()) => Ok("ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readyz: store ping failed");
            Err(ApiError::NotReady("the approval store is unreachable"))
        }
    }
}
