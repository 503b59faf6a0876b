//! The store handle the rest of the gateway holds: every store operation (run on the backend
//! chosen by URL: the shared rules, or the dialect's own gate), readiness, and the live
//! audit-event feed.
//!
//! Inputs: the store URL (`sqlite:…` or `postgres://…`). Outputs: `Store` (cheap to clone).
//! Invariants: `open` never connects, so the gateway starts while the database is down;
//! `is_ready` turns true only after migrations succeeded (and, on Postgres, once the event
//! listener is subscribed, so no committed event is missed by local subscribers after that).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::dialect::{GateCall, UpstreamCall};
use super::postgres::PgStore;
use super::rules::Rules;
use super::sqlite::SqliteStore;
use super::{
    Approval, ApprovalId, AuditEvent, DecideOutcome, GateOutcome, ListFilter, MirrorRow,
    NewApproval, Page, StoreError, Ttls, UpstreamResult, Via, Vote, WithdrawOutcome,
};

/// Buffered events per subscriber before a slow one starts lagging (it then re-reads with
/// `events_after`).
const FEED_CAPACITY: usize = 1024;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// The approval store: what the gate, the admin API, the sweeper and the CLI hold. Cheap to clone
/// (an `Arc`); [`Store::open`] picks the backend (SQLite or Postgres) from the URL.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
    /// Postgres: gate connections of this thread's own ([`Store::for_this_thread`]), else `None`.
    local: Option<Arc<PgStore>>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    ready: AtomicBool,
    feed: Arc<broadcast::Sender<AuditEvent>>,
}

#[derive(Debug)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// The backend an operation runs on: on Postgres, this handle's own gate connections when it
/// has them ([`Store::for_this_thread`]).
enum On<'a> {
    Sqlite(&'a SqliteStore),
    Postgres(&'a PgStore),
}

/// Runs `$body` with `$d` bound to the backend of `$store` (one expression, two dialects).
macro_rules! on_backend {
    ($store:expr, $d:ident => $body:expr) => {
        match $store.on() {
            On::Sqlite($d) => $body,
            On::Postgres($d) => $body,
        }
    };
}

impl Store {
    /// Never connects: a pool is created lazily, so the gateway starts with the store down.
    /// Err only for a bad URL. Must be called inside a Tokio runtime.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        // sqlx spawns pool maintenance tasks on creation; without a runtime that would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Url(
                "the store must be opened inside a Tokio runtime".into(),
            ));
        }
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(SqliteStore::open(url, feed.clone())?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgStore::open(url)?)
        } else {
            return Err(StoreError::Url("expected sqlite:… or postgres://…".into()));
        };
        let inner = Inner {
            backend,
            ready: AtomicBool::new(false),
            feed: Arc::new(feed),
        };
        Ok(Store {
            inner: Arc::new(inner),
            local: None,
        })
    }

    /// The same store (readiness, event feed, API pool) with, on Postgres, a set of gate
    /// connections of its own, opened on the calling thread's runtime: for a proxy shard. A
    /// socket is registered with the reactor of the runtime that opened it; used from another
    /// runtime, every read and write wakes that runtime's thread first. A shard's own set keeps
    /// each gated request's round trips on its thread. SQLite has one connection on a worker
    /// thread of its own either way: shared as is.
    pub(crate) fn for_this_thread(&self) -> Store {
        let local = match &self.inner.backend {
            Backend::Postgres(pg) => Some(Arc::new(pg.sibling())),
            Backend::Sqlite(_) => None,
        };
        Store {
            inner: Arc::clone(&self.inner),
            local,
        }
    }

    fn on(&self) -> On<'_> {
        if let Some(local) = &self.local {
            return On::Postgres(local);
        }
        match &self.inner.backend {
            Backend::Sqlite(s) => On::Sqlite(s),
            Backend::Postgres(p) => On::Postgres(p),
        }
    }

    /// Apply migrations (idempotent). [`Store::migrate_until_ready`] does it in the background.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_backend!(self, d => d.migrate().await)
    }

    /// Is the store reachable?
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, d => Rules::ping(d).await)
    }

    /// The gate's atomic step: consume the newest approved, unconsumed, unexpired approval with
    /// `new`'s identity; otherwise create-or-reuse the pending one. Two concurrent callers never
    /// consume the same approval; concurrent first calls create one pending row. Audits
    /// `consumed`, `requested` or `deduplicated`.
    pub async fn consume_or_create(
        &self,
        new: &NewApproval,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<GateOutcome, StoreError> {
        let call = GateCall {
            new,
            ttl,
            now,
            via: Via::Gateway,
            consume: true,
        };
        on_backend!(self, d => d.gate(call).await)
    }

    /// Create-or-reuse a pending approval without consuming (`POST /v1/approvals`).
    /// Returns the approval and whether it was created.
    pub async fn request(
        &self,
        new: &NewApproval,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<(Approval, bool), StoreError> {
        let call = GateCall {
            new,
            ttl,
            now,
            via: Via::Api,
            consume: false,
        };
        match on_backend!(self, d => d.gate(call).await)? {
            GateOutcome::Pending {
                approval, created, ..
            } => Ok((approval, created)),
            GateOutcome::Consumed(_) => Err(StoreError::Corrupt(
                "a request for approval consumed one".into(),
            )),
        }
    }

    /// Record what the upstream answered to a request that consumed `id` (audited `upstream`).
    pub async fn record_upstream(
        &self,
        id: ApprovalId,
        result: UpstreamResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let up = UpstreamCall::new(id, result, now);
        on_backend!(self, d => d.record_upstream(up).await)
    }

    /// One approval, with its decisions. A due pending/approved row reads as `expired`.
    pub async fn get(
        &self,
        id: ApprovalId,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>, StoreError> {
        on_backend!(self, d => Rules::get(d, id, now).await)
    }

    /// Newest first, keyset-paginated, each approval with its decisions.
    pub async fn list(&self, filter: &ListFilter, now: DateTime<Utc>) -> Result<Page, StoreError> {
        on_backend!(self, d => Rules::list(d, filter, now).await)
    }

    /// Record a vote. Quorum: approved when `approvals_required` distinct approvers approved; one
    /// deny denies; a bypass approves at once. Policy checks (self-approval, who may bypass) are
    /// the caller's; the store enforces pending-ness, expiry and one vote per approver.
    pub async fn decide(
        &self,
        id: ApprovalId,
        vote: &Vote,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<DecideOutcome, StoreError> {
        on_backend!(self, d => Rules::decide(d, id, vote, ttl, now).await)
    }

    /// Withdraw a pending approval (the requester's check is the caller's).
    pub async fn withdraw(
        &self,
        id: ApprovalId,
        actor: &str,
        via: Via,
        now: DateTime<Utc>,
    ) -> Result<WithdrawOutcome, StoreError> {
        on_backend!(self, d => Rules::withdraw(d, id, actor, via, now).await)
    }

    /// Turn every due pending/approved approval into an `expired` transition; returns them.
    pub async fn expire_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>, StoreError> {
        on_backend!(self, d => Rules::expire_due(d, now).await)
    }

    /// Audit events with `id > after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        on_backend!(self, d => Rules::events_after(d, after, limit).await)
    }

    /// Pending (unexpired) approvals per action, for the `approvals_pending` gauge.
    pub async fn pending_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        on_backend!(self, d => Rules::pending_counts(d, now).await)
    }

    /// The canvas mirror's row of an approval.
    pub async fn mirror_get(&self, id: ApprovalId) -> Result<Option<MirrorRow>, StoreError> {
        on_backend!(self, d => Rules::mirror_get(d, id).await)
    }

    /// The mirror row showing an approval as the server row `server_id`.
    pub async fn mirror_find(&self, server_id: &str) -> Result<Option<MirrorRow>, StoreError> {
        on_backend!(self, d => Rules::mirror_find(d, server_id).await)
    }

    /// Record (or replace) the server row of `row.approval_id`, in one transaction with its
    /// `mirrored` audit event (actor `actor`, detail: workspace, server id, the replaced id).
    pub async fn mirror_set(&self, row: &MirrorRow, actor: &str) -> Result<(), StoreError> {
        on_backend!(self, d => Rules::mirror_set(d, row, actor).await)
    }

    /// Note that `decision` was written back to the approval's server row.
    pub async fn mirror_written_back(
        &self,
        id: ApprovalId,
        decision: &str,
    ) -> Result<(), StoreError> {
        on_backend!(self, d => Rules::mirror_written_back(d, id, decision).await)
    }

    /// Approvals that have left `pending` while their server row has not been written back
    /// (oldest mapping first, at most `limit`): the mirror's catch-up after a restart.
    pub async fn mirror_unwritten(&self, limit: u32) -> Result<Vec<ApprovalId>, StoreError> {
        on_backend!(self, d => Rules::mirror_unwritten(d, limit).await)
    }

    /// True once migrations have been applied (gating needs it; /readyz reports it).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Background task: retry `migrate` with capped backoff until it succeeds, then mark ready.
    /// Returns when done or on shutdown.
    pub async fn migrate_until_ready(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = BACKOFF_START;
        loop {
            match self.try_ready().await {
                Ok(()) => {
                    self.inner.ready.store(true, Ordering::Release);
                    tracing::info!("store ready");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "store not ready"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    async fn try_ready(&self) -> Result<(), StoreError> {
        self.migrate().await?;
        match &self.inner.backend {
            Backend::Postgres(pg) => pg.start_listener(Arc::downgrade(&self.inner.feed)).await?,
            Backend::Sqlite(sqlite) => sqlite.start_checkpointer(Arc::downgrade(&self.inner.feed)),
        }
        Ok(())
    }

    /// Every committed audit event that [`super::EventKind::is_announced`] (all but retries,
    /// upstream results and the mirror's bookkeeping), live (Postgres: from every replica via LISTEN/NOTIFY).
    /// Delivery starts once the store is ready; a lagging receiver should catch up with
    /// `events_after`.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.inner.feed.subscribe()
    }
}
