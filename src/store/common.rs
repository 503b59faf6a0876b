//! Dialect-independent pieces of the two store backends: row → `Approval` assembly (with
//! read-time expiry), text ↔ enum parsing, the list cursor, limits, and error classification.
//!
//! Invariant: a row whose status is `pending`/`approved` and whose `expires_at <= now` is
//! reported as `expired` everywhere, whatever the sweeper has done so far.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Approval, ApprovalId, DecisionRecord, EventKind, Origin, Status, StoreError, Ttls, Via,
    VoteKind,
};

/// Default and maximum page sizes of `list`.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// Actor recorded on transitions the gateway makes on its own (expiry).
pub(crate) const SYSTEM_ACTOR: &str = "gateway";

/// An `approvals` row decoded into Rust types, before decisions and read-time expiry.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: Uuid,
    pub status: String,
    pub action: String,
    pub scope: String,
    pub reason: String,
    pub context: Value,
    pub request_hash: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub requester: String,
    pub requester_actors: Value,
    pub caller: Option<String>,
    pub approvals_required: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub consumed_at: Option<DateTime<Utc>>,
    pub upstream_status: Option<i64>,
    pub upstream_error: Option<String>,
    pub previous_id: Option<Uuid>,
}

impl Row {
    pub fn status(&self) -> Result<Status, StoreError> {
        Status::parse(&self.status).ok_or_else(|| corrupt("status", &self.status))
    }

    /// Open (pending/approved) and past its deadline.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status.as_str(), "pending" | "approved") && self.expires_at <= now
    }

    pub fn into_approval(
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

pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?}"))
}

pub(crate) fn vote_str(kind: VoteKind) -> &'static str {
    match kind {
        VoteKind::Approve => "approve",
        VoteKind::Deny => "deny",
        VoteKind::Bypass => "bypass",
    }
}

pub(crate) fn parse_vote(s: &str) -> Result<VoteKind, StoreError> {
    match s {
        "approve" => Ok(VoteKind::Approve),
        "deny" => Ok(VoteKind::Deny),
        "bypass" => Ok(VoteKind::Bypass),
        other => Err(corrupt("decision", other)),
    }
}

pub(crate) fn via_str(via: Via) -> &'static str {
    match via {
        Via::Gateway => "gateway",
        Via::Api => "api",
        Via::Cli => "cli",
    }
}

pub(crate) fn parse_via(s: &str) -> Result<Via, StoreError> {
    match s {
        "gateway" => Ok(Via::Gateway),
        "api" => Ok(Via::Api),
        "cli" => Ok(Via::Cli),
        other => Err(corrupt("via", other)),
    }
}

pub(crate) fn parse_event(s: &str) -> Result<EventKind, StoreError> {
    EventKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| corrupt("event", s))
}

/// The audit detail of a `mirrored` event, the same on both backends.
pub(crate) fn mirrored_detail(row: &super::MirrorRow, replaced: Option<&str>) -> Value {
    serde_json::json!({
        "workspace_id": row.workspace_id,
        "server_id": row.server_id,
        "replaced": replaced,
    })
}

/// `limit` of a list call: 0 means the default, otherwise clamped to 1..=200.
pub(crate) fn clamp_limit(limit: u32) -> u32 {
    if limit == 0 {
        DEFAULT_LIMIT
    } else {
        limit.clamp(1, MAX_LIMIT)
    }
}

/// The keyset position of a row, opaque to clients: hex of `<created_at micros>.<uuid>`.
pub(crate) fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    hex::encode(format!(
        "{}.{}",
        created_at.timestamp_micros(),
        id.hyphenated()
    ))
}

/// Decodes a cursor. A malformed one is an error (`InvalidCursor`, 400), not "first page":
/// silently restarting would make a client loop forever.
pub(crate) fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let raw = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    let (micros, id) = raw.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// Classifies a driver error: can't reach or talk to the database → `Unavailable`; anything the
/// database itself rejected → `Query`. The server ending the session (SQLSTATE class 08,
/// connection exception, or 57P, e.g. `57P01` when an administrator or a shutdown terminates
/// it) counts as unreachable: the connection is gone, not the statement wrong.
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
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

/// `now + ttl`, saturating instead of overflowing on absurd TTLs.
pub(crate) fn deadline(now: DateTime<Utc>, ttl: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The pure quorum rule: what a just-recorded vote does to a pending approval. `approvals` is
/// the number of distinct approve votes including this one. Returns the new status, its audit
/// event and the new `expires_at` (approved → `now + ttl.approved`), or `None` (still pending).
pub(crate) fn next_state(
    kind: VoteKind,
    approvals: i64,
    required: i64,
    ttl: Ttls,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Option<(Status, EventKind, DateTime<Utc>)> {
    match kind {
        VoteKind::Deny => Some((Status::Denied, EventKind::Denied, expires_at)),
        VoteKind::Bypass => Some((
            Status::Approved,
            EventKind::Bypassed,
            deadline(now, ttl.approved),
        )),
        VoteKind::Approve if approvals >= required => Some((
            Status::Approved,
            EventKind::Approved,
            deadline(now, ttl.approved),
        )),
        VoteKind::Approve => None,
    }
}

/// Event detail for a vote.
pub(crate) fn vote_detail(kind: VoteKind, comment: &Option<String>) -> Value {
    serde_json::json!({ "decision": vote_str(kind), "comment": comment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid");
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        for bad in ["", "zz", &hex::encode("12"), &hex::encode("x.y")] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn quorum_rule() {
        let now = DateTime::from_timestamp_micros(1_000_000).expect("valid");
        let ttl = Ttls {
            pending: std::time::Duration::from_secs(60),
            approved: std::time::Duration::from_secs(10),
        };
        let approved_until = now + chrono::TimeDelta::seconds(10);
        let pending_until = now + chrono::TimeDelta::seconds(60);
        let cases = [
            (
                VoteKind::Approve,
                1,
                1,
                Some((Status::Approved, EventKind::Approved, approved_until)),
            ),
            (VoteKind::Approve, 1, 2, None),
            (
                VoteKind::Approve,
                2,
                2,
                Some((Status::Approved, EventKind::Approved, approved_until)),
            ),
            (
                VoteKind::Deny,
                1,
                2,
                Some((Status::Denied, EventKind::Denied, pending_until)),
            ),
            (
                VoteKind::Bypass,
                0,
                3,
                Some((Status::Approved, EventKind::Bypassed, approved_until)),
            ),
        ];
        for (kind, approvals, required, want) in cases {
            assert_eq!(
                next_state(kind, approvals, required, ttl, now, pending_until),
                want,
                "{kind:?} {approvals}/{required}"
            );
        }
    }

    #[test]
    fn limits_clamp() {
        for (input, want) in [(0, 50), (1, 1), (200, 200), (201, 200), (u32::MAX, 200)] {
            assert_eq!(clamp_limit(input), want);
        }
    }

    #[test]
    fn enums_round_trip() {
        for k in [VoteKind::Approve, VoteKind::Deny, VoteKind::Bypass] {
            assert_eq!(parse_vote(vote_str(k)).ok(), Some(k));
        }
        for v in [Via::Gateway, Via::Api, Via::Cli] {
            assert_eq!(parse_via(via_str(v)).ok(), Some(v));
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
