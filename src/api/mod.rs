//! The admin listener: approvals API (SPEC §7), web inbox, `/metrics`, `/healthz`, `/readyz`.
//!
//! Input: HTTP requests from approvers, requesters and scrapers. Approver authentication reuses
//! the proxy's caller classification (`Policy::callers`). Output: JSON (`Approval`), SSE,
//! HTML; every error is an `application/problem+json` body mapped in one place.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::config::Policy;
use crate::metrics::Metrics;
use crate::store::Store;

pub mod inbox;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    /// The current policy (callers, gate settings incl. TTLs), swapped whole on reload.
    pub policy: Arc<ArcSwap<Policy>>,
    pub metrics: Arc<Metrics>,
}

/// The admin router (health and metrics; the approvals API lands next).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .merge(inbox::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.store.is_ready() && state.store.backend().ping().await.is_ok() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
