//! The request path for requests that match a guard or a destructive route (flag not off):
//! caller::classify → guard check → gate::decide → store → forward | 202.
//!
//! Fail closed: nothing here forwards a gated request unless the store consumed an approval for
//! exactly this identity. Store errors are 503, unverifiable credentials 401, unreadable body
//! fields 400, oversized bodies 413 — all mapped by `respond`.
//!
//! `Prefer: wait=N` (RFC 7240, clamped to `[gate] max_wait`): a request the store answered
//! Pending is held (`wait.rs`) until its approval is decided — approved → consumed through the
//! same atomic step and forwarded (`Preference-Applied: wait=N`); denied → 403; withdrawn or
//! expired → 409; timeout → the 202. The body, buffered or still unread, is kept meanwhile.
//! Every outcome is also noted for the access line (`access.rs`).

use std::borrow::Cow;
use std::sync::Arc;

use chrono::Utc;
use http::header::{HeaderName, HeaderValue};
use http::{request, Response};
use hyper::body::Incoming;
use serde_json::Value;

use super::access::Note;
use super::timer;
use super::wait::{self, Waited, PREFERENCE_APPLIED};
use super::{read_limited, Downstream, ProxyBody, ProxyError, Shared};
use crate::caller::{self, Caller, CallerError};
use crate::config::Policy;
use crate::gate::{self, Decision, GateRule, Gated, Mode, RequestView, UnknownCallers};
use crate::metrics::{ApprovalEvent, Outcome};
use crate::route::{self, RouteMatch};
use crate::store::{
    Approval, ApprovalId, GateOutcome, NewApproval, Status, StoreError, UpstreamResult,
};

/// Request and response header naming the approval a forwarded request consumed.
pub static APPROVAL_ID: HeaderName = HeaderName::from_static("approval-id");

/// A request that matched a guard and/or a route. `route` borrows from `policy`.
pub(super) struct Matched<'p> {
    pub policy: &'p Policy,
    pub guard: bool,
    pub route: Option<RouteMatch<'p, Arc<GateRule>>>,
    /// The canvas mirror's decide route (`canvas_decide.rs`), with the mirror on.
    pub canvas_decide: bool,
}

pub(super) async fn handle(
    shared: &Shared,
    m: Matched<'_>,
    parts: request::Parts,
    body: Incoming,
    down: &Downstream,
    note: &mut Note,
) -> Response<ProxyBody> {
    let action = m.route.as_ref().map_or("none", |r| &*r.value.action);
    let caller = match m.policy.callers.classify(&parts.headers, unix_now()).await {
        Ok(caller) => caller,
        Err(e) => return reject_credential(shared, note, action, e),
    };
    // A decide on a row the canvas mirror made is a vote here, whoever calls (before the
    // unknown-caller rule: an unverified caller gets the mirror's 403).
    let body = if m.canvas_decide {
        match super::canvas_decide::handle(shared, m.policy, &caller, &parts, body, note).await {
            super::canvas_decide::Intercepted::Answered(resp) => return resp,
            super::canvas_decide::Intercepted::NotMirrored(body) => body,
        }
    } else {
        body
    };
    if !caller.recognised {
        if let Some(resp) = unknown_caller(shared, &m, &parts, note) {
            return resp;
        }
    }
    // An approval is bound to its requester: a gated credential that names nobody (no
    // `subject_claim`) would share one requester, the class name, with every other such
    // credential, and so each other's approvals.
    if caller.is_gated() && caller.subject.is_none() {
        count(shared, note, action, Outcome::unauthorized);
        tracing::warn!(
            action,
            caller = caller.class_name(),
            "gated credential without a subject refused"
        );
        return ProxyError::Unauthorized(Cow::Borrowed(
            "the gated credential names no subject, so no approval can be bound to its caller",
        ))
        .into_response();
    }
    // The gate decides on the path it forwards: a gated caller's path must have one reading.
    // Only a gated caller's identity uses it: nobody else pays for decoding it.
    let path = if !caller.is_gated() {
        String::new()
    } else {
        match route::path::plain(parts.uri.path()) {
            Ok(path) => path.into_owned(),
            Err(why) => {
                count(shared, note, action, Outcome::bad_request);
                tracing::info!(action, why, "ambiguous path from a gated caller refused");
                return ProxyError::AmbiguousPath(why).into_response();
            }
        }
    };
    if m.guard && caller.is_gated() {
        count(shared, note, action, Outcome::guard_denied);
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
        return pass(shared, note, action, parts, ProxyBody::Incoming(body), down).await;
    };
    let req = GatedRequest {
        policy: m.policy,
        route: &route,
        caller: &caller,
        path: &path,
    };
    gate_route(shared, req, parts, body, down, note).await
}

/// `Some(response)` when an unrecognised caller must not pass here: `unknown_callers =
/// "refuse"` (the route's, else `[gate]`'s) in enforce mode → 401. Shadow mode logs and counts
/// what it would refuse, and lets it pass.
fn unknown_caller(
    shared: &Shared,
    m: &Matched<'_>,
    parts: &request::Parts,
    note: &mut Note,
) -> Option<Response<ProxyBody>> {
    let gate = &m.policy.gate;
    let (action, mode, policy) = match &m.route {
        Some(r) => (
            &*r.value.action,
            gate.mode.min(r.value.mode.unwrap_or(Mode::Enforce)),
            r.value.unknown_callers.unwrap_or(gate.unknown_callers),
        ),
        None => ("none", gate.mode, gate.unknown_callers),
    };
    if policy == UnknownCallers::Pass || mode == Mode::Off {
        return None;
    }
    let why = match caller::bearer(&parts.headers) {
        Ok(Some(_)) => "the bearer credential is not recognised",
        _ if parts.headers.contains_key(http::header::AUTHORIZATION) => {
            "the Authorization header is not a `Bearer ` credential the gateway reads"
        }
        _ => "the request carries no credential",
    };
    if mode == Mode::Shadow {
        count(shared, note, action, Outcome::shadow_would_gate);
        tracing::info!(
            event = "would_refuse_unknown_caller",
            action,
            why,
            "shadow mode: an unknown caller on a gated route would be refused"
        );
        return None;
    }
    count(shared, note, action, Outcome::unauthorized);
    tracing::info!(action, why, "unknown caller refused on a gated route");
    Some(ProxyError::UnknownCaller(why).into_response())
}

/// What the gate needs of one request on a gated route, besides its head and body.
struct GatedRequest<'a> {
    policy: &'a Policy,
    route: &'a RouteMatch<'a, Arc<GateRule>>,
    caller: &'a Caller,
    /// The decoded plain path (`route::path::plain`); empty for callers that are not gated.
    path: &'a str,
}

/// Count `outcome` in the metrics and remember it for the access line.
fn count(shared: &Shared, note: &mut Note, action: &str, outcome: Outcome) {
    shared.metrics.request(action, outcome);
    note.outcome = outcome;
}

/// A matched request that is not gated after all (e.g. an ungated caller): forward as is.
async fn pass(
    shared: &Shared,
    note: &mut Note,
    action: &str,
    parts: request::Parts,
    body: ProxyBody,
    down: &Downstream,
) -> Response<ProxyBody> {
    count(shared, note, action, Outcome::passthrough);
    note.timed(shared.forward(parts, body, down)).await
}

async fn gate_route(
    shared: &Shared,
    req: GatedRequest<'_>,
    parts: request::Parts,
    body: Incoming,
    down: &Downstream,
    note: &mut Note,
) -> Response<ProxyBody> {
    let GatedRequest {
        policy,
        route,
        caller,
        path,
    } = req;
    let rule = &**route.value;
    let action = &*rule.action;
    if !caller.is_gated() {
        return pass(shared, note, action, parts, ProxyBody::Incoming(body), down).await;
    }
    // Buffer the body only when a template reads it, up to the cap, within the read timeout
    // (a slow-loris body must not hold the request open; it is never forwarded).
    let (bytes, body) = if rule.needs_body() {
        let limit = policy.gate.max_body_bytes;
        let within = shared.upstream.body_timeouts().read;
        match timer::timeout(timer::now(), within, read_limited(body, limit)).await {
            Ok(Ok(b)) => (Some(b.clone()), ProxyBody::full(b)),
            Ok(Err(e)) => {
                count(shared, note, action, Outcome::bad_request);
                return ProxyError::from(e).into_response();
            }
            Err(timer::Elapsed) => {
                count(shared, note, action, Outcome::bad_request);
                return ProxyError::BodyTimeout.into_response();
            }
        }
    } else {
        (None, ProxyBody::Incoming(body))
    };
    let view = RequestView {
        method: &parts.method,
        path,
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
            count(shared, note, action, Outcome::bad_request);
            ProxyError::BadRequest(Cow::Owned(e.to_string())).into_response()
        }
        Ok(Decision::Pass) => pass(shared, note, action, parts, body, down).await,
        Ok(Decision::Shadow(g)) => {
            count(shared, note, action, Outcome::shadow_would_gate);
            tracing::info!(
                event = "would_gate", action, scope = %g.scope, request_hash = %g.request_hash,
                requester = %caller.requester(), "shadow mode: this request would need an approval"
            );
            note.timed(shared.forward(parts, body, down)).await
        }
        Ok(Decision::Enforce(g)) => {
            enforce(shared, policy, g, caller, parts, body, down, note).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn enforce(
    shared: &Shared,
    policy: &Policy,
    g: Gated,
    caller: &Caller,
    parts: request::Parts,
    body: ProxyBody,
    down: &Downstream,
    note: &mut Note,
) -> Response<ProxyBody> {
    let action = Arc::clone(&g.action);
    if !shared.store.is_ready() {
        return store_unavailable(shared, note, &action, None);
    }
    let wait = wait::requested(&parts.headers, policy.gate.max_wait);
    let new = new_approval(g, caller, &parts);
    match consume_or_create(shared, policy, &new).await {
        Err(e) => store_unavailable(shared, note, &action, Some(e)),
        Ok(GateOutcome::Consumed(id)) => {
            forward_consumed(shared, note, &action, id, parts, body, down).await
        }
        Ok(GateOutcome::Pending {
            approval,
            created,
            previous,
        }) => {
            count_pending_approval(shared, &action, created);
            let Some(wait) = wait else {
                return pending(shared, note, policy, &approval, previous);
            };
            // The body (buffered or still unread) is kept for forwarding after an approval.
            let held = Held { parts, body };
            let mut resp = after_wait(
                shared, policy, &new, approval, previous, wait, held, down, note,
            )
            .await;
            resp.headers_mut()
                .insert(PREFERENCE_APPLIED.clone(), wait::applied(wait));
            resp
        }
    }
}

/// A request held open while it waits, body untouched.
struct Held {
    parts: request::Parts,
    body: ProxyBody,
}

/// Wait for `approval` to be decided, then: approved → consume (through the same atomic step,
/// so a concurrent retry cannot also use it) and forward; denied → 403; withdrawn/expired →
/// 409; timeout → the normal 202.
#[allow(clippy::too_many_arguments)]
async fn after_wait(
    shared: &Shared,
    policy: &Policy,
    new: &NewApproval,
    approval: Approval,
    previous: Option<ApprovalId>,
    wait: std::time::Duration,
    held: Held,
    down: &Downstream,
    note: &mut Note,
) -> Response<ProxyBody> {
    let action = new.action.as_str();
    let gauge = &shared.metrics.requests_waiting;
    match wait::until_settled(&shared.store, gauge, approval.id, wait).await {
        Waited::TimedOut => pending(shared, note, policy, &approval, previous),
        Waited::Failed(e) => store_unavailable(shared, note, action, Some(e)),
        // Consumed: another request with this identity used it; the step below then answers
        // with a fresh pending approval, as a retry would get.
        Waited::Settled(Status::Approved | Status::Consumed) => {
            match consume_or_create(shared, policy, new).await {
                Err(e) => store_unavailable(shared, note, action, Some(e)),
                Ok(GateOutcome::Consumed(id)) => {
                    let Held { parts, body } = held;
                    forward_consumed(shared, note, action, id, parts, body, down).await
                }
                Ok(GateOutcome::Pending {
                    approval,
                    created,
                    previous,
                }) => {
                    count_pending_approval(shared, action, created);
                    pending(shared, note, policy, &approval, previous)
                }
            }
        }
        Waited::Settled(status) => not_approved(shared, note, action, approval.id, status),
    }
}

/// The approval a request waited on was denied (403), withdrawn or expired (409): nothing is
/// forwarded; a later retry without an approval asks again (SPEC §6.3).
fn not_approved(
    shared: &Shared,
    note: &mut Note,
    action: &str,
    id: ApprovalId,
    status: Status,
) -> Response<ProxyBody> {
    count(shared, note, action, Outcome::not_approved);
    note.approval = Some(id);
    super::pending::not_approved(id, status)
}

async fn consume_or_create(
    shared: &Shared,
    policy: &Policy,
    new: &NewApproval,
) -> Result<GateOutcome, StoreError> {
    shared
        .store
        .backend()
        .consume_or_create(new, policy.gate.ttls, Utc::now())
        .await
}

fn count_pending_approval(shared: &Shared, action: &str, created: bool) {
    let event = if created {
        ApprovalEvent::requested
    } else {
        ApprovalEvent::deduplicated
    };
    shared.metrics.approval(action, event);
}

fn pending(
    shared: &Shared,
    note: &mut Note,
    policy: &Policy,
    approval: &Approval,
    previous: Option<ApprovalId>,
) -> Response<ProxyBody> {
    count(shared, note, &approval.action, Outcome::pending);
    note.approval = Some(approval.id);
    super::pending::response(policy, approval, previous)
}

/// Forward a request that consumed approval `id`: `Approval-Id` upstream and downstream, the
/// upstream's answer recorded on the approval. One approval, one execution: it is sent at most
/// once (see [`super::Upstream::forward`]); when that send fails the client gets the error
/// (502/504) and the approval records whether the upstream may have acted on it.
async fn forward_consumed(
    shared: &Shared,
    note: &mut Note,
    action: &str,
    id: ApprovalId,
    parts: request::Parts,
    body: ProxyBody,
    down: &Downstream,
) -> Response<ProxyBody> {
    shared.metrics.approval(action, ApprovalEvent::consumed);
    count(shared, note, action, Outcome::forwarded);
    note.approval = Some(id);
    tracing::info!(event = "consumed", approval_id = %id, action, "approval consumed; forwarding");
    let value = id_header(id);
    let resp = note
        .timed(shared.forward_raw(parts, body, down, Some(&value)))
        .await;
    let result = match &resp {
        Ok(r) => UpstreamResult::Status(r.status().as_u16()),
        Err(e) => UpstreamResult::Error(e.upstream_outcome().into_owned()),
    };
    record_upstream(shared, id, result);
    let mut resp = resp.unwrap_or_else(ProxyError::into_response);
    resp.headers_mut().insert(APPROVAL_ID.clone(), value);
    resp
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
    shared.background.spawn(async move {
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

fn reject_credential(
    shared: &Shared,
    note: &mut Note,
    action: &str,
    e: CallerError,
) -> Response<ProxyBody> {
    tracing::info!(action, error = %e, "credential rejected on a gated route");
    match e {
        CallerError::DuplicateAuthorization => {
            count(shared, note, action, Outcome::bad_request);
            ProxyError::BadRequest(Cow::Borrowed("more than one Authorization header"))
                .into_response()
        }
        CallerError::Undecodable => {
            count(shared, note, action, Outcome::unauthorized);
            ProxyError::Unauthorized(Cow::Borrowed(
                "the Authorization header could not be decoded as UTF-8",
            ))
            .into_response()
        }
        CallerError::Rejected(_) => {
            count(shared, note, action, Outcome::unauthorized);
            ProxyError::Unauthorized(Cow::Borrowed("the bearer credential could not be verified"))
                .into_response()
        }
        CallerError::SourceUnavailable(_) => {
            shared.metrics.store_errors.inc();
            count(shared, note, action, Outcome::store_unavailable);
            ProxyError::StoreUnavailable(None).into_response()
        }
    }
}

fn store_unavailable(
    shared: &Shared,
    note: &mut Note,
    action: &str,
    e: Option<StoreError>,
) -> Response<ProxyBody> {
    shared.metrics.store_errors.inc();
    count(shared, note, action, Outcome::store_unavailable);
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
