//! The Molecule canvas mirror (docs/molecule.md §8): every pending gateway approval also has a row in the
//! workspace-server's `approval_requests`, so it shows in the canvas banner; a decision made in
//! the gateway is written back to that row.
//!
//! One worker task per process (started by `app.rs` only when `[molecule] mirror_approvals` and
//! `worker` are on) follows the store's live event feed, like notifications, and *reconciles* the approval an
//! event is about:
//!
//! - pending, no server row yet → `POST {server_url}/workspaces/{ws}/approvals` (`ws` = the scope
//!   when it is a workspace id, else `anchor_workspace`; a scope workspace the server refuses
//!   falls back to the anchor), then `mirror_set` (audited `mirrored`);
//! - left pending (approved, bypassed, consumed → `approved`; denied → `denied`; expired,
//!   withdrawn → `denied` with `decided_by` saying why) with a server row not yet written back →
//!   `POST …/approvals/{server id}/decide`, then `mirror_written_back`. A 404 there means the row
//!   is already decided on the server (e.g. auto-denied): nothing more to write.
//!
//! A failed reconcile is counted (`approval_gateway_mirror_failures_total`) and retried with
//! backoff (1 s doubling to 60 s). Nothing here is on the request path: the gate answers its 202
//! whether or not the server is up.
//!
//! Every [`MirrorSettings::resync`] (10 s) a pass first writes back the outcomes still owed
//! (`mirror_unwritten`: e.g. a write-back that failed before a restart), then reads the server's
//! `GET /approvals/pending` (which auto-denies rows older than 10 minutes, as the canvas's own
//! polling does) and, for every gateway approval still pending: creates the row it lacks (missed
//! while the server was down) or re-creates it when its row is no longer pending there —
//! auto-denied (`decided_by = 'auto-expired'`, not a human's denial: the gateway approval stays
//! pending) or decided on the server without the gateway. When the server's list is full (50
//! rows) absence proves nothing, and no row is re-created on that pass.
//!
//! Several replicas on one Postgres store each see every event: run the mirror on one replica
//! (see docs/molecule.md).

mod server;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::config::{MirrorSettings, Policy};
use crate::metrics::Metrics;
use crate::store::{
    Approval, ApprovalId, AuditEvent, EventKind, ListFilter, MirrorRow, Status, Store, VoteKind,
};
use arc_swap::ArcSwap;

use server::ServerError;

/// The actor of the mirror's audit events.
pub(crate) const ACTOR: &str = "approval-gateway-mirror";
/// Consecutive failures after which `/readyz` says the mirror is failing.
pub(crate) const FAILING_AFTER: u64 = 3;
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
const RETRY_TICK: Duration = Duration::from_millis(250);
/// Gateway approvals examined per resync pass.
const RESYNC_MAX: usize = 5000;
const PAGE: u32 = 500;
/// Outcomes written back per resync pass by the catch-up.
const CATCH_UP_MAX: u32 = 100;

/// How the mirror is doing, for `/readyz` (it never makes readiness fail).
#[derive(Debug, Default)]
pub struct MirrorHealth {
    consecutive: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl MirrorHealth {
    fn ok(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }

    fn failed(&self, why: &str) {
        self.consecutive.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(why.to_owned());
        }
    }

    /// A line for `/readyz` when the last [`FAILING_AFTER`] or more tries all failed.
    pub(crate) fn detail(&self) -> Option<String> {
        let n = self.consecutive.load(Ordering::Relaxed);
        if n < FAILING_AFTER {
            return None;
        }
        let last = self
            .last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default();
        Some(format!(
            "canvas mirror: failing ({n} consecutive failures; last: {last})"
        ))
    }
}

/// Start the mirror worker. Runs until `stop` resolves.
pub(crate) fn spawn(
    settings: MirrorSettings,
    store: Store,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    health: Arc<MirrorHealth>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let server = server::Server::new(&settings)?;
    let feed = store.subscribe();
    let worker = Worker {
        settings,
        server,
        store,
        policy,
        metrics,
        health,
        retry: HashMap::new(),
    };
    Ok(tokio::spawn(worker.run(feed, stop)))
}

struct Worker {
    settings: MirrorSettings,
    server: server::Server,
    store: Store,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    health: Arc<MirrorHealth>,
    /// Approvals whose reconcile failed: when to try again, and the current backoff.
    retry: HashMap<ApprovalId, (Instant, Duration)>,
}

/// Events after which an approval may need a server row or a write-back.
fn relevant(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Requested
            | EventKind::Approved
            | EventKind::Bypassed
            | EventKind::Denied
            | EventKind::Consumed
            | EventKind::Expired
            | EventKind::Withdrawn
    )
}

impl Worker {
    async fn run(
        mut self,
        mut feed: tokio::sync::broadcast::Receiver<AuditEvent>,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut resync = tokio::time::interval(self.settings.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = tokio::time::interval(RETRY_TICK);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                r = feed.recv() => match r {
                    Ok(ev) if relevant(ev.event) => self.attempt(ev.approval_id).await,
                    Ok(_) => {}
                    // The resync pass finds every pending approval the skipped events were about.
                    Err(RecvError::Lagged(_)) => self.resync().await,
                    Err(RecvError::Closed) => return,
                },
                _ = resync.tick() => self.resync().await,
                _ = retry.tick() => self.retry_due().await,
            }
        }
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ApprovalId> = self
            .retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.attempt(id).await;
        }
    }

    /// Reconcile one approval; on failure count it and schedule a retry with backoff.
    async fn attempt(&mut self, id: ApprovalId) {
        match self.reconcile(id).await {
            Ok(()) => {
                self.retry.remove(&id);
                self.health.ok();
            }
            Err(e) => self.failed(id, &e),
        }
    }

    fn failed(&mut self, id: ApprovalId, e: &Failure) {
        self.metrics.mirror_failures.inc();
        let why = e.to_string();
        self.health.failed(&why);
        let backoff = match self.retry.get(&id) {
            Some((_, b)) => (*b * 2).min(RETRY_MAX),
            None => RETRY_FIRST,
        };
        tracing::warn!(approval_id = %id, error = %why, retry_in = ?backoff,
            "canvas mirror: could not update the server's approval row");
        self.retry.insert(id, (Instant::now() + backoff, backoff));
    }

    async fn reconcile(&self, id: ApprovalId) -> Result<(), Failure> {
        let store = &self.store;
        let Some(a) = store.get(id, Utc::now()).await? else {
            return Ok(());
        };
        let row = store.mirror_get(id).await?;
        match (a.status, row) {
            (Status::Pending, None) => self.create(&a).await,
            (Status::Pending, Some(_)) | (_, None) => Ok(()),
            (_, Some(row)) if row.written_back.is_some() => Ok(()),
            (_, Some(row)) => self.write_back(&a, &row).await,
        }
    }

    /// Create the approval's server row and record it (replacing an older one).
    async fn create(&self, a: &Approval) -> Result<(), Failure> {
        let base = self.policy.load().gate.public_admin_url.clone();
        let body = server::create_body(a, &base);
        let anchor = self.settings.anchor_workspace.to_string();
        let ws = workspace_of(&a.scope).unwrap_or_else(|| anchor.clone());
        let created = match self.server.create(&ws, &body).await {
            // The scope names no workspace the server knows (its insert fails: 500), or the
            // server refuses it: the anchor carries the row. Not on 401/403/503 (the token or
            // the server is the problem; retried as is).
            Err(ServerError::Status(status @ (400 | 404 | 500), _)) if ws != anchor => {
                tracing::info!(approval_id = %a.id, scope = %a.scope, status,
                    "canvas mirror: the scope's workspace refused the row; using the anchor");
                self.server
                    .create(&anchor, &body)
                    .await
                    .map(|id| (anchor, id))
            }
            other => other.map(|id| (ws, id)),
        };
        let (workspace_id, server_id) = created?;
        let row = MirrorRow {
            approval_id: a.id,
            workspace_id,
            server_id,
            mirrored_at: Utc::now(),
            written_back: None,
        };
        self.store.mirror_set(&row, ACTOR).await?;
        tracing::info!(approval_id = %a.id, server_id = %row.server_id,
            workspace_id = %row.workspace_id, "canvas mirror: server row created");
        Ok(())
    }

    /// Apply the gateway's outcome to the server row.
    async fn write_back(&self, a: &Approval, row: &MirrorRow) -> Result<(), Failure> {
        let (decision, decided_by) = outcome(a);
        let applied = self
            .server
            .decide(&row.workspace_id, &row.server_id, decision, &decided_by)
            .await?;
        if !applied {
            tracing::info!(approval_id = %a.id, server_id = %row.server_id,
                "canvas mirror: the server row was already decided (or is gone)");
        }
        self.store.mirror_written_back(a.id, decision).await?;
        tracing::info!(approval_id = %a.id, server_id = %row.server_id, decision,
            decided_by = %decided_by, "canvas mirror: decision written back");
        Ok(())
    }

    /// The periodic pass: every pending gateway approval has a live (pending) server row.
    async fn resync(&mut self) {
        if !self.store.is_ready() {
            return;
        }
        // Outcomes not yet written back (a write-back that failed before a restart).
        match self.store.mirror_unwritten(CATCH_UP_MAX).await {
            Ok(ids) => {
                for id in ids {
                    if !self.retry.contains_key(&id) {
                        self.attempt(id).await;
                    }
                }
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, "canvas mirror: cannot list unwritten outcomes");
            }
        }
        let pending = match self.gateway_pending().await {
            Ok(p) => p,
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, "canvas mirror: cannot list pending approvals");
                return;
            }
        };
        if pending.is_empty() {
            return;
        }
        let server_pending = match self.server.pending().await {
            Ok(rows) => rows,
            Err(e) => {
                self.metrics.mirror_failures.inc();
                self.health.failed(&e.to_string());
                tracing::warn!(error = %e, "canvas mirror: cannot read the server's pending rows");
                // The rows never made are retried with backoff meanwhile; the first pass that
                // reaches the server creates the rest.
                return;
            }
        };
        let complete = server_pending.len() < server::PENDING_LIST_MAX;
        let live: HashSet<&str> = server_pending.iter().map(String::as_str).collect();
        for a in &pending {
            let row = match self.store.mirror_get(a.id).await {
                Ok(r) => r,
                Err(e) => {
                    self.failed(a.id, &Failure::Store(e));
                    continue;
                }
            };
            match row {
                None => self.attempt(a.id).await,
                Some(row) if complete && !live.contains(row.server_id.as_str()) => {
                    tracing::info!(approval_id = %a.id, server_id = %row.server_id,
                        "canvas mirror: the server row is no longer pending (auto-expired or \
                         decided outside the gateway); creating a new one");
                    match self.create(a).await {
                        Ok(()) => {
                            self.retry.remove(&a.id);
                            self.health.ok();
                        }
                        Err(e) => self.failed(a.id, &e),
                    }
                }
                Some(_) => {}
            }
        }
    }

    async fn gateway_pending(&self) -> Result<Vec<Approval>, crate::store::StoreError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let filter = ListFilter {
                status: Some(Status::Pending),
                limit: PAGE,
                cursor,
                ..ListFilter::default()
            };
            let page = self.store.list(&filter, Utc::now()).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) if out.len() < RESYNC_MAX => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }
}

/// The server's `workspace_id` for a scope that is a workspace id.
fn workspace_of(scope: &str) -> Option<String> {
    uuid::Uuid::parse_str(scope.trim())
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The decision and `decided_by` written to the server row for a decided approval.
fn outcome(a: &Approval) -> (&'static str, String) {
    let last = |kind: VoteKind| {
        a.decisions
            .iter()
            .rev()
            .find(|d| d.decision == kind)
            .map(|d| d.approver.clone())
    };
    match a.status {
        Status::Approved | Status::Consumed => {
            let by = match last(VoteKind::Bypass) {
                Some(admin) => format!("{admin} (break-glass bypass, approval-gateway)"),
                None => {
                    let names: Vec<&str> = a
                        .decisions
                        .iter()
                        .filter(|d| d.decision == VoteKind::Approve)
                        .map(|d| d.approver.as_str())
                        .collect();
                    format!("{} (approval-gateway)", names.join(", "))
                }
            };
            ("approved", by)
        }
        Status::Denied => (
            "denied",
            format!(
                "{} (approval-gateway)",
                last(VoteKind::Deny).unwrap_or_default()
            ),
        ),
        Status::Expired => ("denied", "approval-gateway: expired".to_owned()),
        Status::Withdrawn => (
            "denied",
            "approval-gateway: withdrawn by the requester".to_owned(),
        ),
        Status::Pending => ("denied", "approval-gateway".to_owned()),
    }
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("server: {0}")]
    Server(#[from] ServerError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_that_are_workspace_ids() {
        assert_eq!(
            workspace_of("3F1C2B9E-8D7A-4C1E-9B2F-0A1B2C3D4E5F").as_deref(),
            Some("3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f")
        );
        assert_eq!(workspace_of("org:unanchored"), None);
    }

    #[test]
    fn health_reports_only_repeated_failures() {
        let h = MirrorHealth::default();
        h.failed("a");
        h.failed("b");
        assert_eq!(h.detail(), None);
        h.failed("connection refused");
        let d = h.detail().expect("failing");
        assert!(
            d.contains("3 consecutive") && d.contains("connection refused"),
            "{d}"
        );
        h.ok();
        assert_eq!(h.detail(), None);
    }
}
