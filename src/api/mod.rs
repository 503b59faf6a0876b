//! The admin listener: approvals API (README, Approvals API), web inbox, `/metrics`, `/healthz`, `/readyz`.
//!
//! Input: HTTP requests from approvers, requesters and scrapers. Approver authentication reuses
//! the proxy's caller classification (`Policy::callers`, read from the current policy on every
//! request so a reload applies at once). Output: JSON (`Approval`), SSE, HTML; every error is an
//! `application/problem+json` body mapped in one place (`error.rs`).
//!
//! Invariants: every transition goes through the store (which audits it with `via = api` and the
//! caller as actor); this module adds the JSON log line and the metric. Self-approval and
//! gated-caller checks are pure (`auth.rs`). Nothing here polls: waits ride the store's event feed.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;

use crate::caller::Caller;
use crate::config::Policy;
use crate::metrics::{ApprovalEvent, Metrics};
use crate::reload::Reloader;
use crate::store::{Approval, ApprovalId, Store};

pub(crate) mod approvals;
pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod events;
pub mod health;
pub(crate) mod inbox;
pub(crate) mod request;

pub(crate) use error::ApiError;

/// Shared state of the admin listener (cheap to clone: handles and `Arc`s).
#[derive(Clone)]
pub struct AdminState {
    /// The approval store the API reads and decides in.
    pub store: Store,
    /// The current policy (callers, gate settings incl. TTLs), swapped whole on reload.
    pub policy: Arc<ArcSwap<Policy>>,
    /// The process's metrics, served at `/metrics` and counted by decisions.
    pub metrics: Arc<Metrics>,
    /// The pending gauge, counted when `/metrics` is read.
    pub pending: Arc<health::PendingGauge>,
    /// Hot reload from the config file (`POST /v1/admin/reload`); `None` when the process was
    /// not started from a file (tests, `demo`).
    pub reloader: Option<Arc<Reloader>>,
    /// The canvas mirror's health (a `/readyz` detail line), when the mirror runs.
    pub mirror: Option<Arc<crate::mirror::MirrorHealth>>,
}

/// The admin router. The caller serves it on the admin listener.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .merge(inbox::routes())
        .route("/v1/approvals", get(approvals::list).post(request::request))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/decisions", post(approvals::decide))
        .route("/v1/approvals/{id}/withdraw", post(approvals::withdraw))
        .route("/v1/events", get(events::stream))
        .route("/v1/admin/reload", post(admin_reload))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { ApiError::NotFound("no such resource on the admin listener") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session_csrf,
        ))
        .with_state(state)
}

/// A state-changing request signed in by a session cookie (no bearer) must come from the
/// admin listener's own origin (`auth::check_session_request`), before any handler runs.
async fn session_csrf(
    axum::extract::State(st): axum::extract::State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let policy = st.policy.load_full();
    match auth::check_session_request(
        req.method(),
        req.headers(),
        &policy.callers,
        &policy.gate.public_admin_url,
    ) {
        Ok(()) => next.run(req).await,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

/// `POST /v1/admin/reload` (approvers only): the same as SIGHUP.
async fn admin_reload(
    axum::extract::State(st): axum::extract::State<AdminState>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let caller = st.authenticate(&headers).await?;
    auth::require_approver(&caller)?;
    let reloader = st.reloader.as_ref().ok_or(ApiError::Conflict(
        "this process was not started from a config file",
    ))?;
    tracing::info!(by = %auth::approver_name(&caller), "reload requested through the admin API");
    match reloader.reload() {
        Ok(()) => Ok(axum::Json(serde_json::json!({"status": "reloaded"}))),
        Err(errors) => {
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            Err(ApiError::InvalidConfig(list.join("; ")))
        }
    }
}

impl AdminState {
    /// Classify the request's caller with the current policy (401/503 on failure).
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        // `load_full`: an owned Arc may be held across the await (a guard should not).
        let policy = self.policy.load_full();
        let now_unix = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        auth::authenticate(&policy.callers, headers, now_unix).await
    }

    /// A transition made through the API: one JSON log line (no tokens) and one metric.
    fn transition(&self, approval: &Approval, event: ApprovalEvent, actor: &str) {
        log_transition(approval, event, actor, crate::store::Via::Api);
        self.metrics.approval(&approval.action, event);
    }
}

/// The audit log line of a transition (the store has audited it already).
pub(crate) fn log_transition(
    approval: &Approval,
    event: ApprovalEvent,
    actor: &str,
    via: crate::store::Via,
) {
    tracing::info!(
        target: "audit",
        approval_id = %approval.id,
        event = ?event,
        actor = %actor,
        via = via.as_str(),
        action = %approval.action,
        scope = %approval.scope,
        status = approval.status.as_str(),
        "approval transition"
    );
}

/// A vote short of quorum: logged (the store audits it), not counted.
pub(crate) fn log_vote(approval: &Approval, actor: &str, via: crate::store::Via) {
    tracing::info!(
        target: "audit",
        approval_id = %approval.id,
        event = "voted",
        actor = %actor,
        via = via.as_str(),
        action = %approval.action,
        status = approval.status.as_str(),
        "approval vote"
    );
}

/// A path id; 400 when it is not a UUID.
fn parse_id(raw: &str) -> Result<ApprovalId, ApiError> {
    ApprovalId::parse(raw).ok_or_else(|| ApiError::bad_request("the approval id is not a UUID"))
}

/// A JSON body; 400 (naming the problem) when it does not parse.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}
