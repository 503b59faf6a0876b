//! The answers about an approval that the gated path builds itself: the 202 for a pending
//! approval (README, "What the gate does, precisely"), and the problem for a request whose
//! awaited approval ended without approval (`Prefer: wait`).
//!
//! Pure builders: inputs are the policy's gate settings and the approval; no I/O.

use bytes::Bytes;
use http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use serde_json::json;

use crate::config::Policy;
use crate::proxy::{Problem, ProxyBody};
use crate::store::{Approval, ApprovalId, Status, VoteKind};

/// The 202: the pending approval's body, `Location` (its API URL) and `Retry-After`.
pub(super) fn pending(
    policy: &Policy,
    approval: &Approval,
    previous: Option<ApprovalId>,
) -> Response<ProxyBody> {
    let received = approval
        .decisions
        .iter()
        .filter(|d| matches!(d.decision, VoteKind::Approve | VoteKind::Bypass))
        .count();
    let mut body = json!({
        "status": "pending_approval",
        "approval_id": approval.id,
        "action": approval.action,
        "reason": approval.reason,
        "scope": approval.scope,
        "expires_at": approval.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "approvals_required": approval.approvals_required,
        "approvals_received": received,
    });
    if let Some(prev) = previous {
        body["previous"] = json!({ "approval_id": prev, "status": "denied" });
    }
    let mut headers = HeaderMap::with_capacity(3);
    let location = format!(
        "{}/v1/approvals/{}",
        policy.gate.public_admin_url, approval.id
    );
    if let Ok(v) = HeaderValue::try_from(location) {
        headers.insert(LOCATION, v);
    }
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from(policy.gate.retry_after.as_secs().max(1)),
    );
    crate::proxy::json(StatusCode::ACCEPTED, headers, Bytes::from(body.to_string()))
}

/// Denied → 403; withdrawn, expired (or anything else not approved) → 409. The detail names the
/// approval so the client can look it up.
pub(super) fn not_approved(id: ApprovalId, status: Status) -> Response<ProxyBody> {
    match status {
        Status::Denied => Problem::new(
            StatusCode::FORBIDDEN,
            "urn:approval-gateway:approval-denied",
            "Approval denied",
            format!("approval {id} was denied; the request was not forwarded"),
        ),
        _ => Problem::new(
            StatusCode::CONFLICT,
            "urn:approval-gateway:approval-not-pending",
            "Approval no longer pending",
            format!(
                "approval {id} was {} while the request waited; it was not forwarded",
                status.as_str()
            ),
        ),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_approved_is_403_when_denied_and_409_otherwise() {
        let id = ApprovalId::new();
        for (status, want) in [
            (Status::Denied, StatusCode::FORBIDDEN),
            (Status::Withdrawn, StatusCode::CONFLICT),
            (Status::Expired, StatusCode::CONFLICT),
        ] {
            let resp = not_approved(id, status);
            assert_eq!(resp.status(), want, "{status:?}");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
        }
    }
}
