//! The request path for requests that match a guard or a destructive route (flag not off):
//! caller::classify → guard check → gate::decide → store → forward | 202.
//!
//! Fail closed: nothing here forwards a gated request unless the store consumed an approval for
//! exactly this identity. Store errors are 503, unverifiable credentials 401, unreadable body
//! fields 400, oversized bodies 413 — all mapped by `respond`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::header::{HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use http::{request, HeaderMap, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{read_limited, Downstream, ProxyBody, ProxyError, Shared};
use crate::caller::{Caller, CallerError};
use crate::config::Policy;
use crate::gate::{self, Decision, GateRule, Gated, RequestView};
use crate::metrics::{ApprovalEvent, Outcome};
use crate::route::RouteMatch;
use crate::store::{Approval, ApprovalId, GateOutcome, NewApproval, UpstreamResult, VoteKind};

/// Request and response header naming the approval a forwarded request consumed.
pub static APPROVAL_ID: HeaderName = HeaderName::from_static("approval-id");

/// A request that matched a guard and/or a route. `route` borrows from `policy`.
pub(super) struct Matched<'p> {
    pub policy: &'p Policy,
    pub guard: bool,
    pub route: Option<RouteMatch<'p, Arc<GateRule>>>,
}

pub(super) async fn handle(
    shared: &Shared,
    m: Matched<'_>,
    parts: request::Parts,
    body: Incoming,
    down: &Downstream,
) -> Response<ProxyBody> {
    let action = m.route.as_ref().map_or("none", |r| &*r.value.action);
    let caller = match m.policy.callers.classify(&parts.headers, unix_now()).await {
        Ok(caller) => caller,
        Err(e) => return reject_credential(shared, action, e),
    };
    if m.guard && caller.is_gated() {
        shared.metrics.request(action, Outcome::guard_denied);
        tracing::info!(
            caller = caller.class_name(),
            path = parts.uri.path(),
            "guard denied a gated caller"
        );
        return ProxyError::Forbidden(Cow::Borrowed(
            "this operation may not be called with a gated credential",
        ))
        .into_response();
    }
    let Some(route) = m.route else {
        return shared
            .pass(action, parts, ProxyBody::Incoming(body), down)
            .await;
    };
    gate_route(shared, m.policy, &route, &caller, parts, body, down).await
}

async fn gate_route(
    shared: &Shared,
    policy: &Policy,
    route: &RouteMatch<'_, Arc<GateRule>>,
    caller: &Caller,
    parts: request::Parts,
    body: Incoming,
    down: &Downstream,
) -> Response<ProxyBody> {
    let rule = &**route.value;
    let action = &*rule.action;
    if !caller.is_gated() {
        return shared
            .pass(action, parts, ProxyBody::Incoming(body), down)
            .await;
    }
    // Buffer the body only when a template reads it, up to the cap.
    let (bytes, body) = if rule.needs_body() {
        match read_limited(body, policy.gate.max_body_bytes).await {
            Ok(b) => (Some(b.clone()), ProxyBody::full(b)),
            Err(e) => {
                shared.metrics.request(action, Outcome::bad_request);
                return ProxyError::from(e).into_response();
            }
        }
    } else {
        (None, ProxyBody::Incoming(body))
    };
    let view = RequestView {
        params: &route.params,
        uri: &parts.uri,
        headers: &parts.headers,
        caller,
        body: bytes.as_deref(),
    };
    match gate::decide(
        rule,
        &view,
        policy.gate.mode,
        policy.gate.approvals_required,
    ) {
        Err(e) => {
            shared.metrics.request(action, Outcome::bad_request);
            ProxyError::BadRequest(Cow::Owned(e.to_string())).into_response()
        }
        Ok(Decision::Pass) => shared.pass(action, parts, body, down).await,
        Ok(Decision::Shadow(g)) => {
            shared.metrics.request(action, Outcome::shadow_would_gate);
            tracing::info!(
                event = "would_gate", action, scope = %g.scope, request_hash = %g.request_hash,
                requester = %caller.requester(), "shadow mode: this request would need an approval"
            );
            shared.forward(parts, body, down).await
        }
        Ok(Decision::Enforce(g)) => enforce(shared, policy, g, caller, parts, body, down).await,
    }
}

async fn enforce(
    shared: &Shared,
    policy: &Policy,
    g: Gated,
    caller: &Caller,
    mut parts: request::Parts,
    body: ProxyBody,
    down: &Downstream,
) -> Response<ProxyBody> {
    let action = Arc::clone(&g.action);
    if !shared.store.is_ready() {
        return store_unavailable(shared, &action, None);
    }
    let new = new_approval(g, caller, &parts);
    let outcome = shared
        .store
        .backend()
        .consume_or_create(&new, policy.gate.ttls, Utc::now())
        .await;
    match outcome {
        Err(e) => store_unavailable(shared, &action, Some(e)),
        Ok(GateOutcome::Consumed(id)) => {
            shared.metrics.approval(&action, ApprovalEvent::consumed);
            shared.metrics.request(&action, Outcome::forwarded);
            tracing::info!(event = "consumed", approval_id = %id, action = %action, "approval consumed; forwarding");
            let value = id_header(id);
            parts.headers.insert(APPROVAL_ID.clone(), value.clone());
            let resp = shared.forward_raw(parts, body, down).await;
            let result = match &resp {
                Ok(r) => UpstreamResult::Status(r.status().as_u16()),
                Err(e) => UpstreamResult::Error(e.to_string()),
            };
            record_upstream(shared, id, result);
            let mut resp = resp.unwrap_or_else(ProxyError::into_response);
            resp.headers_mut().insert(APPROVAL_ID.clone(), value);
            resp
        }
        Ok(GateOutcome::Pending {
            approval,
            created,
            previous,
        }) => {
            let event = if created {
                ApprovalEvent::requested
            } else {
                ApprovalEvent::deduplicated
            };
            shared.metrics.approval(&action, event);
            shared.metrics.request(&action, Outcome::pending);
            pending_response(policy, &approval, previous)
        }
    }
}

fn new_approval(g: Gated, caller: &Caller, parts: &request::Parts) -> NewApproval {
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    NewApproval {
        scope: g.scope,
        action: g.action.to_string(),
        request_hash: g.request_hash,
        reason: g.reason,
        context: Value::Object(g.context),
        method: Some(parts.method.as_str().to_owned()),
        path: Some(path.to_owned()),
        requester: caller.requester(),
        requester_actors: caller.actors.clone(),
        caller: caller.class_name().map(str::to_owned),
        approvals_required: g.approvals_required,
    }
}

/// The upstream's answer is recorded off the response path; a failure is logged, never lost
/// silently (the consumption itself is already durable and audited).
fn record_upstream(shared: &Shared, id: ApprovalId, result: UpstreamResult) {
    let store = shared.store.clone();
    let metrics = Arc::clone(&shared.metrics);
    tokio::spawn(async move {
        if let Err(e) = store
            .backend()
            .record_upstream(id, result, Utc::now())
            .await
        {
            metrics.store_errors.inc();
            tracing::error!(approval_id = %id, error = %e, "could not record the upstream result");
        }
    });
}

/// The SPEC §6 202 body and headers.
pub(super) fn pending_response(
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
    super::json(StatusCode::ACCEPTED, headers, Bytes::from(body.to_string()))
}

fn reject_credential(shared: &Shared, action: &str, e: CallerError) -> Response<ProxyBody> {
    tracing::info!(action, error = %e, "credential rejected on a gated route");
    match e {
        CallerError::DuplicateAuthorization => {
            shared.metrics.request(action, Outcome::bad_request);
            ProxyError::BadRequest(Cow::Borrowed("more than one Authorization header"))
                .into_response()
        }
        CallerError::Rejected(_) => {
            shared.metrics.request(action, Outcome::unauthorized);
            ProxyError::Unauthorized(Cow::Borrowed("the bearer credential could not be verified"))
                .into_response()
        }
        CallerError::SourceUnavailable(_) => {
            shared.metrics.store_errors.inc();
            shared.metrics.request(action, Outcome::store_unavailable);
            ProxyError::StoreUnavailable(None).into_response()
        }
    }
}

fn store_unavailable(
    shared: &Shared,
    action: &str,
    e: Option<crate::store::StoreError>,
) -> Response<ProxyBody> {
    shared.metrics.store_errors.inc();
    shared.metrics.request(action, Outcome::store_unavailable);
    if let Some(e) = &e {
        tracing::error!(action, error = %e, "approval store failed; answering 503");
    } else {
        tracing::warn!(action, "approval store not ready; answering 503");
    }
    ProxyError::StoreUnavailable(e).into_response()
}

fn id_header(id: ApprovalId) -> HeaderValue {
    // A hyphenated UUID is always a valid header value.
    HeaderValue::try_from(id.to_string()).unwrap_or(HeaderValue::from_static("invalid"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
