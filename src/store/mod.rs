//! Stage 5: the approval store. The only module that talks to the database.
//!
//! One trait, [`ApprovalStore`], two sqlx implementations (SQLite: the embedded single-node
//! default; Postgres: production, several replicas). Every operation is idempotent and returns an
//! outcome enum, so a retried request gets the same answer. Every transition appends a row to
//! `approval_events` in the same transaction (the audit trail; nothing is ever deleted).
//!
//! Time is passed in (`now`) so tests control expiry. Expiry is enforced at read time in every
//! query (`expires_at > now`); the sweeper (`expire_due`) only turns due rows into `expired`
//! transitions so events and metrics see them.

use std::fmt;
use std::time::Duration;

mod common;

/// The most approvals one list call returns (larger `limit`s are refused by the API).
pub use common::MAX_LIMIT as MAX_LIST_LIMIT;
mod handle;
pub mod postgres;
mod postgres_conns;
mod postgres_decide;
mod postgres_ops;
pub mod sqlite;
mod sqlite_checkpoint;
mod sqlite_decide;
mod sqlite_ops;
mod wait;

pub use handle::Store;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// An approval's id (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(pub Uuid);

impl ApprovalId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok().map(Self)
    }
}

impl Default for ApprovalId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Consumed,
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Consumed => "consumed",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "approved" => Status::Approved,
            "denied" => Status::Denied,
            "expired" => Status::Expired,
            "consumed" => Status::Consumed,
            "withdrawn" => Status::Withdrawn,
            _ => return None,
        })
    }
}

/// A vote's kind. `Bypass` is an admin's break-glass approval (comment required).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoteKind {
    Approve,
    Deny,
    Bypass,
}

/// Where a transition came from, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Gateway,
    Api,
    Cli,
}

/// One recorded decision, as shown in `Approval.decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub approver: String,
    pub decision: VoteKind,
    pub comment: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// The `Approval` JSON of SPEC §7 (serialised as is by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub status: Status,
    pub action: String,
    pub scope: String,
    pub reason: String,
    pub context: Value,
    pub request_hash: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub requester: String,
    /// Subjects of the requester's `act` chain (self-approval check). Not part of the SPEC shape
    /// but harmless to show.
    #[serde(default)]
    pub requester_actors: Vec<String>,
    pub caller: Option<String>,
    pub approvals_required: u32,
    pub decisions: Vec<DecisionRecord>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub consumed_at: Option<DateTime<Utc>>,
    pub upstream_status: Option<u16>,
    pub upstream_error: Option<String>,
    /// Who wrote `reason` and `context` (an extension of SPEC §7's shape).
    pub origin: Origin,
}

/// Who created an approval, and so who wrote its `reason` and `context`. Derived from the row
/// without a column: only `POST /v1/approvals` makes approvals without a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The gate, from a proxied request and the route's templates.
    Proxy,
    /// A gated caller through `POST /v1/approvals`: its text is the requesting agent's own.
    Agent,
}

impl Origin {
    pub fn of(method: Option<&str>) -> Self {
        if method.is_some() {
            Origin::Proxy
        } else {
            Origin::Agent
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Proxy => "proxy",
            Origin::Agent => "agent",
        }
    }
}

/// What a gated request (or `POST /v1/approvals`) asks approval for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    pub scope: String,
    pub action: String,
    pub request_hash: String,
    pub reason: String,
    /// A JSON object.
    pub context: Value,
    pub method: Option<String>,
    pub path: Option<String>,
    pub requester: String,
    pub requester_actors: Vec<String>,
    pub caller: Option<String>,
    pub approvals_required: u32,
}

/// The two clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// A pending approval expires this long after creation.
    pub pending: Duration,
    /// An approved, unconsumed approval expires this long after approval.
    pub approved: Duration,
}

/// Result of the gate's one atomic step. (Returned once per gated request; boxing the
/// `Approval` would buy nothing.)
#[must_use]
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum GateOutcome {
    /// An approved, unconsumed, unexpired approval was consumed: forward the request.
    Consumed(ApprovalId),
    /// No approval to consume: the pending one (new when `created`). `previous` names the denied
    /// approval this one follows, when the newest with that identity was denied (SPEC §6.3).
    Pending {
        approval: Approval,
        created: bool,
        previous: Option<ApprovalId>,
    },
}

/// What happened to the forwarded request, recorded on the consumed approval.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamResult {
    Status(u16),
    Error(String),
}

/// A vote to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub approver: String,
    pub kind: VoteKind,
    pub comment: Option<String>,
    pub via: Via,
}

#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum DecideOutcome {
    /// The vote was recorded; the approval as it now stands (maybe approved/denied).
    Recorded(Approval),
    NotFound,
    /// Not pending (decided, expired, consumed, withdrawn): 409.
    NotPending(Approval),
    /// This approver already voted: 409.
    AlreadyVoted(Approval),
}

#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum WithdrawOutcome {
    Withdrawn(Approval),
    NotFound,
    NotPending(Approval),
}

/// Filters of `GET /v1/approvals`. `cursor` is opaque (from a previous `Page`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub scope: Option<String>,
    pub action: Option<String>,
    pub requester: Option<String>,
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub items: Vec<Approval>,
    pub next_cursor: Option<String>,
}

/// Audit event names (`approval_events.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Requested,
    Deduplicated,
    Voted,
    Approved,
    Bypassed,
    Denied,
    Consumed,
    Upstream,
    Expired,
    Withdrawn,
    /// The approval got a row in the Molecule server's approvals (SPEC §12; audit only).
    Mirrored,
}

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 11] = [
        EventKind::Requested,
        EventKind::Deduplicated,
        EventKind::Voted,
        EventKind::Approved,
        EventKind::Bypassed,
        EventKind::Denied,
        EventKind::Consumed,
        EventKind::Upstream,
        EventKind::Expired,
        EventKind::Withdrawn,
        EventKind::Mirrored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Requested => "requested",
            EventKind::Deduplicated => "deduplicated",
            EventKind::Voted => "voted",
            EventKind::Approved => "approved",
            EventKind::Bypassed => "bypassed",
            EventKind::Denied => "denied",
            EventKind::Consumed => "consumed",
            EventKind::Upstream => "upstream",
            EventKind::Expired => "expired",
            EventKind::Withdrawn => "withdrawn",
            EventKind::Mirrored => "mirrored",
        }
    }

    /// Whether the event reaches the live feed ([`handle::Store::subscribe`]) as well as the audit
    /// table. A retry of a pending request and the upstream's answer to a consumed one are
    /// audited only: they change no approval's status, nothing waits for them, and they are the
    /// two events of the hot path. On Postgres an announced event is a `NOTIFY`, and every
    /// committing transaction that notifies holds one cluster-wide lock through its commit,
    /// WAL flush included; leaving these two out keeps retries and upstream results off that
    /// lock. Postgres mirrors this list in its trigger (migration 0003).
    pub fn is_announced(self) -> bool {
        !matches!(
            self,
            EventKind::Deduplicated | EventKind::Upstream | EventKind::Mirrored
        )
    }
}

/// One `approval_events` row. `id` increases monotonically (SSE `id:` / `Last-Event-ID`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub approval_id: ApprovalId,
    pub event: EventKind,
    pub actor: String,
    pub via: Via,
    pub detail: Value,
    pub at: DateTime<Utc>,
}

/// Where a gateway approval shows in the Molecule canvas: its row in the server's
/// `approval_requests` (SPEC §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRow {
    pub approval_id: ApprovalId,
    /// The workspace the server row belongs to (the scope, or the anchor workspace).
    pub workspace_id: String,
    /// The server row's id.
    pub server_id: String,
    pub mirrored_at: DateTime<Utc>,
    /// The decision written back to the server row (`approved` / `denied`), once done.
    pub written_back: Option<String>,
}

/// Store failures. Never shown to downstream: the proxy answers 503, the API 503/500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("store not ready (migrations not applied yet)")]
    NotReady,
    #[error("store query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("invalid store url: {0}")]
    Url(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// `ListFilter.cursor` was not one this store produced (the API answers 400).
    #[error("invalid list cursor")]
    InvalidCursor,
}

/// The approval store. Implementations: `sqlite::SqliteStore`, `postgres::PgStore`.
#[async_trait::async_trait]
pub trait ApprovalStore: Send + Sync + fmt::Debug {
    /// Apply migrations (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Is the store reachable?
    async fn ping(&self) -> Result<(), StoreError>;

    /// The gate's atomic step (SPEC §6): consume the newest approved, unconsumed, unexpired
    /// approval with `new`'s identity; otherwise create-or-reuse the pending one. Two concurrent
    /// callers never consume the same approval; concurrent first calls create one pending row.
    /// Audits `consumed`, `requested` or `deduplicated`.
    async fn consume_or_create(
        &self,
        new: &NewApproval,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<GateOutcome, StoreError>;

    /// Create-or-reuse a pending approval without consuming (`POST /v1/approvals`).
    /// Returns the approval and whether it was created.
    async fn request(
        &self,
        new: &NewApproval,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<(Approval, bool), StoreError>;

    /// Record what the upstream answered to a request that consumed `id` (audited `upstream`).
    async fn record_upstream(
        &self,
        id: ApprovalId,
        result: UpstreamResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// One approval, with its decisions. A due pending/approved row reads as `expired`.
    async fn get(&self, id: ApprovalId, now: DateTime<Utc>)
        -> Result<Option<Approval>, StoreError>;

    /// Newest first, keyset-paginated.
    async fn list(&self, filter: &ListFilter, now: DateTime<Utc>) -> Result<Page, StoreError>;

    /// Record a vote. Quorum: approved when `approvals_required` distinct approvers approved; one
    /// deny denies; a bypass approves at once. Policy checks (self-approval, who may bypass) are
    /// the caller's; the store enforces pending-ness, expiry and one vote per approver.
    async fn decide(
        &self,
        id: ApprovalId,
        vote: &Vote,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<DecideOutcome, StoreError>;

    /// Withdraw a pending approval (the requester's check is the caller's).
    async fn withdraw(
        &self,
        id: ApprovalId,
        actor: &str,
        via: Via,
        now: DateTime<Utc>,
    ) -> Result<WithdrawOutcome, StoreError>;

    /// Turn every due pending/approved approval into an `expired` transition; returns them.
    async fn expire_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>, StoreError>;

    /// Audit events with `id > after`, oldest first, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;

    /// Pending (unexpired) approvals per action, for the `approvals_pending` gauge.
    async fn pending_counts(&self, now: DateTime<Utc>) -> Result<Vec<(String, i64)>, StoreError>;

    /// The canvas mirror's row of an approval.
    async fn mirror_get(&self, id: ApprovalId) -> Result<Option<MirrorRow>, StoreError>;

    /// The mirror row showing an approval as the server row `server_id`.
    async fn mirror_find(&self, server_id: &str) -> Result<Option<MirrorRow>, StoreError>;

    /// Record (or replace) the server row of `row.approval_id`, in one transaction with its
    /// `mirrored` audit event (actor `actor`, detail: workspace, server id, the replaced id).
    async fn mirror_set(&self, row: &MirrorRow, actor: &str) -> Result<(), StoreError>;

    /// Note that `decision` was written back to the approval's server row.
    async fn mirror_written_back(&self, id: ApprovalId, decision: &str) -> Result<(), StoreError>;

    /// Approvals that have left `pending` while their server row has not been written back
    /// (oldest mapping first, at most `limit`): the mirror's catch-up after a restart.
    async fn mirror_unwritten(&self, limit: u32) -> Result<Vec<ApprovalId>, StoreError>;
}
