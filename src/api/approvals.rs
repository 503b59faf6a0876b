//! `/v1/approvals` handlers (README, "Approvals API"): list, show (with `?wait=` long-poll, on
//! `Store::wait_for_decision`), decide, withdraw.
//! (`POST /v1/approvals`, a gated caller's own request, is in `request.rs`.)
//!
//! Each handler authenticates, applies the pure checks of `auth`, calls the store once for the
//! transition (the store audits it with `via = api` and the caller as actor) and then logs and
//! counts the transition here. Request bodies are parsed by hand so every rejection is a problem
//! body.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::ApiError;
use super::{auth, parse_id, parse_json, AdminState};
use crate::caller::Caller;
use crate::metrics::ApprovalEvent;
use crate::store::{
    Approval, ApprovalId, DecideOutcome, ListFilter, Page, Status, Via, Vote, VoteKind,
    WithdrawOutcome,
};

const NO_SUCH_APPROVAL: &str = "no such approval";
/// Longest `?wait=` (seconds).
pub(super) const MAX_WAIT_SECS: u64 = 60;
/// The store's page size when `limit` is absent.
pub(crate) const DEFAULT_LIMIT: u32 = crate::store::DEFAULT_LIST_LIMIT;
/// One limit for the API and the store: a larger `limit` is a 400, never silently clamped.
pub(crate) const MAX_LIMIT: u32 = crate::store::MAX_LIST_LIMIT;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    scope: Option<String>,
    action: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/approvals`: approvers see all; a gated caller sees only its own.
pub(super) async fn list(
    State(st): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let caller = st.authenticate(&headers).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut filter = list_filter(q)?;
    if !caller.is_approver() {
        if !caller.is_gated() {
            return Err(ApiError::Forbidden(
                "this credential may not list approvals",
            ));
        }
        filter.requester = Some(caller.requester());
    }
    Ok(Json(st.store.list(&filter, Utc::now()).await?))
}

fn list_filter(q: ListQuery) -> Result<ListFilter, ApiError> {
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let status = match non_empty(q.status) {
        None => None,
        Some(s) => Some(Status::parse(&s).ok_or_else(|| {
            ApiError::bad_request(
                "status must be one of pending, approved, denied, expired, consumed, withdrawn",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(ListFilter {
        status,
        scope: non_empty(q.scope),
        action: non_empty(q.action),
        requester: None,
        limit,
        cursor: non_empty(q.cursor),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ShowQuery {
    wait: Option<u64>,
}

/// `GET /v1/approvals/{id}[?wait=N]`.
pub(super) async fn show(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Json<Approval>, ApiError> {
    let caller = st.authenticate(&headers).await?;
    let id = parse_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::bad_request(format!(
            "wait must be at most {MAX_WAIT_SECS} seconds"
        )));
    }
    let approval = visible(&caller, st.store.get(id, Utc::now()).await?)?;
    if wait == 0 || approval.status != Status::Pending {
        return Ok(Json(approval));
    }
    let until = wait_deadline(&approval, Duration::from_secs(wait), Utc::now());
    let deadline = tokio::time::Instant::now() + until;
    let approval = st.store.wait_for_decision(id, deadline).await?;
    Ok(Json(visible(&caller, approval)?))
}

fn visible(caller: &Caller, approval: Option<Approval>) -> Result<Approval, ApiError> {
    let approval = approval.ok_or(ApiError::NotFound(NO_SUCH_APPROVAL))?;
    if auth::may_view(caller, &approval) {
        Ok(approval)
    } else {
        Err(ApiError::Forbidden(
            "this credential may not read this approval",
        ))
    }
}

/// How long to wait: `wait`, but no later than the pending approval's expiry (it leaves
/// `pending` then even if the sweeper has not announced it yet).
pub(super) fn wait_deadline(approval: &Approval, wait: Duration, now: DateTime<Utc>) -> Duration {
    let to_expiry = (approval.expires_at - now)
        .to_std()
        .unwrap_or(Duration::ZERO);
    wait.min(to_expiry + Duration::from_millis(50))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: VoteKind,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /v1/approvals/{id}/decisions`.
pub(crate) async fn decide(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Approval>, ApiError> {
    let caller = st.authenticate(&headers).await?;
    auth::require_approver(&caller)?;
    let id = parse_id(&id)?;
    let vote = vote_from(&caller, parse_json(&body?)?)?;
    let ttls = st.policy.load().gate.ttls;
    let approval = cast_vote(&st.store, &st.metrics, ttls, &caller, id, &vote).await?;
    Ok(Json(approval))
}

/// Record `vote` by `caller` on approval `id` with every check of the API (approver class,
/// self-approval over both `act` chains, only admins bypass; the store: pending, unexpired, one
/// vote per approver), then log and count the transition. Shared by `POST
/// /v1/approvals/{id}/decisions` and the canvas decide route (`proxy::canvas_decide`).
pub(crate) async fn cast_vote(
    store: &crate::store::Store,
    metrics: &crate::metrics::Metrics,
    ttls: crate::store::Ttls,
    caller: &Caller,
    id: ApprovalId,
    vote: &Vote,
) -> Result<Approval, ApiError> {
    auth::require_approver(caller)?;
    let now = Utc::now();
    let current = visible(caller, store.get(id, now).await?)?;
    auth::check_vote(caller, &current, vote.kind)?;
    match store.decide(id, vote, ttls, now).await? {
        DecideOutcome::Recorded(approval) => {
            match vote_event(vote.kind, approval.status) {
                Some(event) => {
                    super::log_transition(&approval, event, &vote.approver, vote.via);
                    metrics.approval(&approval.action, event);
                }
                None => super::log_vote(&approval, &vote.approver, vote.via),
            }
            Ok(approval)
        }
        DecideOutcome::NotFound => Err(ApiError::NotFound(NO_SUCH_APPROVAL)),
        DecideOutcome::NotPending(_) => {
            Err(ApiError::Conflict("the approval is no longer pending"))
        }
        DecideOutcome::AlreadyVoted(_) => Err(ApiError::Conflict(
            "this approver has already voted on this approval",
        )),
    }
}

/// The vote a decision body asks for; a bypass needs an admin and a reason.
fn vote_from(caller: &Caller, body: DecisionBody) -> Result<Vote, ApiError> {
    let comment = body
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if body.decision == VoteKind::Bypass {
        if !caller.is_admin() {
            return Err(ApiError::Forbidden("only an admin may bypass the quorum"));
        }
        if comment.is_none() {
            return Err(ApiError::bad_request(
                "a bypass requires a non-empty comment giving the reason",
            ));
        }
    }
    Ok(Vote {
        approver: auth::approver_name(caller),
        kind: body.decision,
        comment,
        via: Via::Api,
    })
}

/// Which counted transition a recorded vote caused, if any (a vote short of quorum is none).
pub(super) fn vote_event(kind: VoteKind, status: Status) -> Option<ApprovalEvent> {
    match (kind, status) {
        (VoteKind::Bypass, Status::Approved) => Some(ApprovalEvent::bypassed),
        (VoteKind::Approve, Status::Approved) => Some(ApprovalEvent::approved),
        (VoteKind::Deny, Status::Denied) => Some(ApprovalEvent::denied),
        _ => None,
    }
}

/// `POST /v1/approvals/{id}/withdraw`: the gated requester, while pending.
pub(crate) async fn withdraw(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Approval>, ApiError> {
    let caller = st.authenticate(&headers).await?;
    let id = parse_id(&id)?;
    let now = Utc::now();
    let current = st
        .store
        .get(id, now)
        .await?
        .ok_or(ApiError::NotFound(NO_SUCH_APPROVAL))?;
    auth::check_withdraw(&caller, &current)?;
    let actor = caller.requester();
    match st.store.withdraw(id, &actor, Via::Api, now).await? {
        WithdrawOutcome::Withdrawn(approval) => {
            st.transition(&approval, ApprovalEvent::withdrawn, &actor);
            Ok(Json(approval))
        }
        WithdrawOutcome::NotFound => Err(ApiError::NotFound(NO_SUCH_APPROVAL)),
        WithdrawOutcome::NotPending(_) => {
            Err(ApiError::Conflict("the approval is no longer pending"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_status_changing_votes_are_counted() {
        assert_eq!(vote_event(VoteKind::Approve, Status::Pending), None);
        assert_eq!(
            vote_event(VoteKind::Approve, Status::Approved),
            Some(ApprovalEvent::approved)
        );
        assert_eq!(
            vote_event(VoteKind::Deny, Status::Denied),
            Some(ApprovalEvent::denied)
        );
        assert_eq!(
            vote_event(VoteKind::Bypass, Status::Approved),
            Some(ApprovalEvent::bypassed)
        );
    }

    #[test]
    fn list_query_validation() {
        let q = |status: Option<&str>, limit| ListQuery {
            status: status.map(str::to_owned),
            scope: Some(String::new()),
            action: None,
            limit,
            cursor: None,
        };
        let f = list_filter(q(Some("pending"), None)).expect("valid");
        assert_eq!(
            (f.status, f.limit, f.scope),
            (Some(Status::Pending), DEFAULT_LIMIT, None)
        );
        assert!(list_filter(q(Some("nope"), None)).is_err());
        assert!(list_filter(q(None, Some(0))).is_err());
        assert!(list_filter(q(None, Some(MAX_LIMIT + 1))).is_err());
        assert_eq!(list_filter(q(Some(""), None)).expect("valid").status, None);
    }

    #[test]
    fn a_wait_never_outlasts_the_pending_expiry() {
        let now = Utc::now();
        let json = serde_json::json!({
            "id": ApprovalId::new(), "status": "pending", "action": "a", "scope": "s", "reason": "r",
            "context": {}, "request_hash": "h", "method": null, "path": null, "requester": "bob",
            "caller": null, "approvals_required": 1, "decisions": [], "created_at": now,
            "expires_at": now + chrono::Duration::seconds(5), "decided_at": null, "consumed_at": null,
            "upstream_status": null, "upstream_error": null, "origin": "agent"
        });
        let a: Approval = serde_json::from_value(json).expect("approval");
        let wait = wait_deadline(&a, Duration::from_secs(60), now);
        assert!(
            wait > Duration::from_secs(4) && wait < Duration::from_secs(6),
            "{wait:?}"
        );
        assert_eq!(
            wait_deadline(&a, Duration::from_secs(2), now),
            Duration::from_secs(2)
        );
        let past = wait_deadline(
            &a,
            Duration::from_secs(60),
            now + chrono::Duration::seconds(10),
        );
        assert!(past < Duration::from_secs(1));
    }

    #[test]
    fn decision_bodies() {
        assert!(parse_json::<DecisionBody>(br#"{"decision":"approve"}"#).is_ok());
        assert!(parse_json::<DecisionBody>(br#"{"decision":"maybe"}"#).is_err());
        assert!(parse_json::<DecisionBody>(b"not json").is_err());
    }
}
