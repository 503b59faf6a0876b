//! The store's data model: what the rest of the gateway reads and writes (`Approval`, `Status`,
//! `Vote`, the outcomes, `AuditEvent`, `MirrorRow`, `StoreError`), the `approvals` row as both
//! dialects decode it, and the text each enum is stored as.
//!
//! Invariant: a row whose status is `pending`/`approved` and whose `expires_at <= now` is
//! reported as `expired` everywhere ([`Row::into_approval`]), whatever the sweeper has done so
//! far.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// An approval's id (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(pub Uuid);

impl ApprovalId {
    /// A new id: a UUIDv7, so ids sort by creation time.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the hyphenated (or any form `uuid` accepts) text of an id; `None` when it is not a
    /// UUID.
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

/// An approval's lifecycle state. `pending` and `approved` are open; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for votes.
    Pending,
    /// Quorum reached (or bypassed): the next identical request consumes it.
    Approved,
    /// An approver denied it.
    Denied,
    /// Its clock ran out while pending or approved (reported at read time, before the sweeper
    /// writes it).
    Expired,
    /// The gate forwarded the request it approved; it is never used again.
    Consumed,
    /// The requester withdrew it while pending.
    Withdrawn,
}

impl Status {
    /// The status as stored and as the API shows it, e.g. `pending`.
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

    pub(crate) fn parse(s: &str) -> Option<Self> {
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
    /// Counts toward `approvals_required`.
    Approve,
    /// Denies the approval at once.
    Deny,
    /// Approves at once, whatever the quorum (admins only).
    Bypass,
}

/// Where a transition came from, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The gateway itself: the gate, expiry, the canvas mirror and votes on its rows.
    Gateway,
    /// The admin API (`/v1/approvals…`).
    Api,
    /// The `approval-gateway approvals` command.
    Cli,
}

impl Via {
    /// The origin as stored and logged, e.g. `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Gateway => "gateway",
            Via::Api => "api",
            Via::Cli => "cli",
        }
    }
}

/// One recorded decision, as shown in `Approval.decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Who voted: the approver's subject, or its class name when it has none (from the CLI:
    /// `--as`, else `$USER`).
    pub approver: String,
    /// How they voted.
    pub decision: VoteKind,
    /// The voter's comment, if any (required for a bypass).
    pub comment: Option<String>,
    /// When the vote was recorded.
    pub decided_at: DateTime<Utc>,
}

/// An approval as the API serialises it (the README's "Approvals API").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The approval's id.
    pub id: ApprovalId,
    /// Its state now; an open approval past `expires_at` already reads `expired`.
    pub status: Status,
    /// What is asked for: the route's `action` (or the agent's, for `POST /v1/approvals`).
    pub action: String,
    /// What it applies to, rendered from the route's `scope` template (e.g. a workspace id).
    pub scope: String,
    /// Why, in words, for the approver (rendered from the route's `reason`, or the agent's own).
    pub reason: String,
    /// A JSON object of details shown to the approver; with `bind = "request"` it also holds the
    /// bound request.
    pub context: Value,
    /// The identity digest of `(scope, action, context)`, hex (`gate::request_hash`).
    pub request_hash: String,
    /// The gated request's method; `None` for an approval made through `POST /v1/approvals`.
    pub method: Option<String>,
    /// The gated request's path and query as received; `None` like `method`.
    pub path: Option<String>,
    /// Who asked: the caller's subject, or its class name when it has none.
    pub requester: String,
    /// Subjects of the requester's `act` chain (self-approval check). Not part of the
    /// reference shape but harmless to show.
    #[serde(default)]
    pub requester_actors: Vec<String>,
    /// The caller class of the requester, when one matched.
    pub caller: Option<String>,
    /// Distinct approving votes needed (the quorum).
    pub approvals_required: u32,
    /// Every vote so far, oldest first.
    pub decisions: Vec<DecisionRecord>,
    /// When the approval was created.
    pub created_at: DateTime<Utc>,
    /// When it expires: `pending_ttl` after creation while pending, `approval_ttl` after approval
    /// once approved.
    pub expires_at: DateTime<Utc>,
    /// When it was approved, denied or withdrawn; `None` while pending and when it expired
    /// undecided.
    pub decided_at: Option<DateTime<Utc>>,
    /// When the gate consumed it; `None` until then.
    pub consumed_at: Option<DateTime<Utc>>,
    /// The status the upstream answered the consuming request with; `None` until recorded or when
    /// it failed.
    pub upstream_status: Option<u16>,
    /// Why the consuming request got no upstream answer, when it got none.
    pub upstream_error: Option<String>,
    /// Who wrote `reason` and `context` (an extension of the reference shape).
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
    fn of(method: Option<&str>) -> Self {
        if method.is_some() {
            Origin::Proxy
        } else {
            Origin::Agent
        }
    }
}

/// What a gated request (or `POST /v1/approvals`) asks approval for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    /// What it applies to (see [`Approval::scope`]).
    pub scope: String,
    /// What is asked for (see [`Approval::action`]).
    pub action: String,
    /// The identity digest; with scope and action, what finds an existing approval.
    pub request_hash: String,
    /// Why, in words, for the approver.
    pub reason: String,
    /// A JSON object.
    pub context: Value,
    /// The gated request's method; `None` for `POST /v1/approvals`.
    pub method: Option<String>,
    /// The gated request's path and query; `None` like `method`.
    pub path: Option<String>,
    /// Who asks: the caller's subject, or its class name when it has none.
    pub requester: String,
    /// Subjects of the requester's `act` chain; none may vote on it.
    pub requester_actors: Vec<String>,
    /// The requester's caller class, when one matched.
    pub caller: Option<String>,
    /// Distinct approving votes needed.
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
    /// approval this one follows, when the newest with that identity was denied (the README's "What the gate does", step 3).
    Pending {
        /// The pending approval as it now stands.
        approval: Approval,
        /// This call created it (otherwise the request repeats an open one).
        created: bool,
        /// The denied approval this one follows, if any.
        previous: Option<ApprovalId>,
    },
}

/// What happened to the forwarded request, recorded on the consumed approval.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamResult {
    /// The upstream answered with this status.
    Status(u16),
    /// No answer; the text says what happened (and whether the upstream may have acted).
    Error(String),
}

/// A vote to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    /// Who votes: the approver's subject, or its class name when it has none (one vote each).
    pub approver: String,
    /// Approve, deny or bypass.
    pub kind: VoteKind,
    /// The voter's comment (required for a bypass).
    pub comment: Option<String>,
    /// Where the vote came from, for the audit trail.
    pub via: Via,
}

/// What became of a vote ([`Store::decide`](super::Store::decide)).
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum DecideOutcome {
    /// The vote was recorded; the approval as it now stands (maybe approved/denied).
    Recorded(Approval),
    /// No approval has that id: 404.
    NotFound,
    /// Not pending (decided, expired, consumed, withdrawn): 409.
    NotPending(Approval),
    /// This approver already voted: 409.
    AlreadyVoted(Approval),
}

/// What became of a withdrawal ([`Store::withdraw`](super::Store::withdraw)).
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum WithdrawOutcome {
    /// Withdrawn; the approval as it now stands.
    Withdrawn(Approval),
    /// No approval has that id: 404.
    NotFound,
    /// Not pending, so it cannot be withdrawn: 409.
    NotPending(Approval),
}

/// Filters of `GET /v1/approvals`. `cursor` is opaque (from a previous `Page`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only approvals in this state (`expired` includes open ones past their deadline).
    pub status: Option<Status>,
    /// Only approvals with exactly this scope.
    pub scope: Option<String>,
    /// Only approvals with exactly this action.
    pub action: Option<String>,
    /// Only approvals this requester asked for.
    pub requester: Option<String>,
    /// At most this many items: 0 means the default (50); more than 200 is capped at 200.
    pub limit: u32,
    /// Continue after the last item of a previous page (its `next_cursor`).
    pub cursor: Option<String>,
}

/// One page of `GET /v1/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The approvals, newest first.
    pub items: Vec<Approval>,
    /// Pass as `ListFilter.cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Audit event names (`approval_events.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The approval was created.
    Requested,
    /// A request repeated an open approval's identity (audit only).
    Deduplicated,
    /// A vote was recorded (every vote; a deciding one is followed by `Approved`, `Denied` or
    /// `Bypassed`).
    Voted,
    /// Quorum reached.
    Approved,
    /// An admin's break-glass vote approved it.
    Bypassed,
    /// A vote denied it.
    Denied,
    /// The gate consumed it and forwarded the request.
    Consumed,
    /// The upstream's answer to the consuming request was recorded (audit only).
    Upstream,
    /// Its clock ran out (written by the sweeper, or by a later write that finds it due).
    Expired,
    /// The requester withdrew it.
    Withdrawn,
    /// The approval got a row in the Molecule server's approvals (docs/molecule.md, "The canvas mirror"; audit only).
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

    /// The name as stored in `approval_events.event`, e.g. `requested`.
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

    /// Whether the event reaches the live feed ([`super::Store::subscribe`]) as well as the audit
    /// table. A retry of a pending request, the upstream's answer to a consumed one and the
    /// canvas mirror's bookkeeping are audited only: they change no approval's status and
    /// nothing waits for them; the first two are the events of the hot path. On Postgres an
    /// announced event is a `NOTIFY`, and every committing transaction that notifies holds one
    /// cluster-wide lock through its commit, WAL flush included; leaving these out keeps
    /// retries and upstream results off that lock. Postgres mirrors this list in its trigger
    /// (migration 0005).
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
    /// The row's id, increasing: SSE `id:` and the resume point of `events_after`.
    pub id: i64,
    /// The approval it is about.
    pub approval_id: ApprovalId,
    /// What happened.
    pub event: EventKind,
    /// Who did it: an approver's or requester's subject, or `gateway` for the gateway itself.
    pub actor: String,
    /// Where it came from.
    pub via: Via,
    /// Event-specific JSON (e.g. a vote's decision and comment, an upstream status); `{}` when
    /// none.
    pub detail: Value,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// Where a gateway approval shows in the Molecule canvas: its row in the server's
/// `approval_requests` (docs/molecule.md, "The canvas mirror").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRow {
    /// The gateway approval.
    pub approval_id: ApprovalId,
    /// The workspace the server row belongs to (the scope, or the anchor workspace).
    pub workspace_id: String,
    /// The server row's id.
    pub server_id: String,
    /// When the server row was created.
    pub mirrored_at: DateTime<Utc>,
    /// The decision written back to the server row (`approved` / `denied`), once done.
    pub written_back: Option<String>,
}

/// Store failures. Never shown to downstream: the proxy answers 503, the API 503/500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or dropped the session.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The schema is not there yet; `migrate` has not finished.
    #[error("store not ready (migrations not applied yet)")]
    NotReady,
    /// The database rejected a statement.
    #[error("store query failed: {0}")]
    Query(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The store URL could not be parsed.
    #[error("invalid store url: {0}")]
    Url(String),
    /// A row holds a value the gateway does not know (e.g. an unknown status).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// `ListFilter.cursor` was not one this store produced (the API answers 400).
    #[error("invalid list cursor")]
    InvalidCursor,
}

/// An `approvals` row decoded into Rust types, before decisions and read-time expiry.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) id: Uuid,
    pub(super) status: String,
    pub(super) action: String,
    pub(super) scope: String,
    pub(super) reason: String,
    pub(super) context: Value,
    pub(super) request_hash: String,
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
    pub(super) requester: String,
    pub(super) requester_actors: Value,
    pub(super) caller: Option<String>,
    pub(super) approvals_required: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) decided_at: Option<DateTime<Utc>>,
    pub(super) consumed_at: Option<DateTime<Utc>>,
    pub(super) upstream_status: Option<i64>,
    pub(super) upstream_error: Option<String>,
    pub(super) previous_id: Option<Uuid>,
}

impl Row {
    pub(super) fn status(&self) -> Result<Status, StoreError> {
        Status::parse(&self.status).ok_or_else(|| corrupt("status", &self.status))
    }

    /// Open (pending/approved) and past its deadline.
    pub(super) fn is_due(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status.as_str(), "pending" | "approved") && self.expires_at <= now
    }

    pub(super) fn into_approval(
        self,
        decisions: Vec<DecisionRecord>,
        now: DateTime<Utc>,
    ) -> Result<Approval, StoreError> {
        let status = if self.is_due(now) {
            Status::Expired
        } else {
            self.status()?
        };
        let requester_actors = match self.requester_actors {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Approval {
            origin: Origin::of(self.method.as_deref()),
            id: ApprovalId(self.id),
            status,
            action: self.action,
            scope: self.scope,
            reason: self.reason,
            context: self.context,
            request_hash: self.request_hash,
            method: self.method,
            path: self.path,
            requester: self.requester,
            requester_actors,
            caller: self.caller,
            approvals_required: u32::try_from(self.approvals_required).unwrap_or(1),
            decisions,
            created_at: self.created_at,
            expires_at: self.expires_at,
            decided_at: self.decided_at,
            consumed_at: self.consumed_at,
            upstream_status: self.upstream_status.and_then(|s| u16::try_from(s).ok()),
            upstream_error: self.upstream_error,
        })
    }
}

pub(super) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?}"))
}

pub(super) fn vote_str(kind: VoteKind) -> &'static str {
    match kind {
        VoteKind::Approve => "approve",
        VoteKind::Deny => "deny",
        VoteKind::Bypass => "bypass",
    }
}

pub(super) fn parse_vote(s: &str) -> Result<VoteKind, StoreError> {
    match s {
        "approve" => Ok(VoteKind::Approve),
        "deny" => Ok(VoteKind::Deny),
        "bypass" => Ok(VoteKind::Bypass),
        other => Err(corrupt("decision", other)),
    }
}

pub(super) fn parse_via(s: &str) -> Result<Via, StoreError> {
    match s {
        "gateway" => Ok(Via::Gateway),
        "api" => Ok(Via::Api),
        "cli" => Ok(Via::Cli),
        other => Err(corrupt("via", other)),
    }
}

pub(super) fn parse_event(s: &str) -> Result<EventKind, StoreError> {
    EventKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| corrupt("event", s))
}

/// Classifies a driver error: can't reach or talk to the database → `Unavailable`; anything the
/// database itself rejected → `Query`. The server ending the session (SQLSTATE class 08,
/// connection exception, or 57P, e.g. `57P01` when an administrator or a shutdown terminates
/// it) counts as unreachable: the connection is gone, not the statement wrong.
pub(super) fn classify(err: sqlx::Error) -> StoreError {
    let session_ended = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
    };
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(err),
        e if session_ended(&e) => StoreError::Unavailable(e),
        other => StoreError::Query(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for k in [VoteKind::Approve, VoteKind::Deny, VoteKind::Bypass] {
            assert_eq!(parse_vote(vote_str(k)).ok(), Some(k));
        }
        for v in [Via::Gateway, Via::Api, Via::Cli] {
            assert_eq!(parse_via(v.as_str()).ok(), Some(v));
        }
        for s in [
            Status::Pending,
            Status::Approved,
            Status::Denied,
            Status::Expired,
            Status::Consumed,
            Status::Withdrawn,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for k in EventKind::ALL {
            assert_eq!(parse_event(k.as_str()).ok(), Some(k));
            // No wildcard: a new kind fails to compile here until it is added to `ALL` too.
            match k {
                EventKind::Requested
                | EventKind::Deduplicated
                | EventKind::Voted
                | EventKind::Approved
                | EventKind::Bypassed
                | EventKind::Denied
                | EventKind::Consumed
                | EventKind::Upstream
                | EventKind::Expired
                | EventKind::Withdrawn
                | EventKind::Mirrored => {}
            }
        }
        assert!(parse_event("nope").is_err());
    }
}
