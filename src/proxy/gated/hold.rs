//! Hold for approval (enforce mode): the store consumes an approved approval of this identity
//! and requester, and the request is sent once with `Approval-Id`; otherwise the store creates
//! or finds the pending approval and the answer is the 202 (`approval_response.rs`).
//!
//! `Prefer: wait=N` (`prefer_wait.rs`): a request the store answered pending is held until its
//! approval is decided (`Store::wait_for_decision`) — approved → consumed through the same
//! atomic step and forwarded (`Preference-Applied: wait=N`); denied → 403; withdrawn or
//! expired → 409; timeout → the 202. The body, buffered or still unread, is kept meanwhile.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::header::HeaderValue;
use http::Response;
use serde_json::Value;

use super::approval_response;
use super::prefer_wait::{self, Waiting, PREFERENCE_APPLIED};
use super::request::GatedRequest;
use crate::gate::Gated;
use crate::metrics::{self, ApprovalEvent};
use crate::proxy::upstream::APPROVAL_ID;
use crate::proxy::{ProxyBody, ProxyError, Shared};
use crate::store::{
    Approval, ApprovalId, GateOutcome, NewApproval, Status, StoreError, UpstreamResult,
};

impl GatedRequest<'_> {
    /// Consume an approval of `g`'s identity and forward, or answer with the pending one.
    pub(super) async fn hold(mut self, g: Gated) -> Response<ProxyBody> {
        if !self.shared.store.is_ready() {
            return self.store_unavailable(None);
        }
        let wait = prefer_wait::requested(&self.parts.headers, self.matched.policy.gate.max_wait);
        let new = self.new_approval(g);
        self.consume_or_pend(&new, wait).await
    }

    /// The store's one atomic step for `new`: consumed → forward once; pending → the 202, or,
    /// when the request asked to `wait`, hold it until the approval is decided: approved → the
    /// same step once more (so a concurrent retry cannot also use it); denied → 403;
    /// withdrawn/expired → 409; still pending at the end of the wait → the 202.
    async fn consume_or_pend(
        mut self,
        new: &NewApproval,
        mut wait: Option<Duration>,
    ) -> Response<ProxyBody> {
        let mut waited = None;
        let mut resp = loop {
            let (approval, created, previous) = match self.consume_or_create(new).await {
                Err(e) => break self.store_unavailable(Some(e)),
                Ok(GateOutcome::Consumed(id)) => break self.forward_consumed(id).await,
                Ok(GateOutcome::Pending {
                    approval,
                    created,
                    previous,
                }) => (approval, created, previous),
            };
            self.count_pending_approval(created);
            let Some(limit) = wait.take() else {
                break self.pending(&approval, previous);
            };
            waited = Some(limit);
            // The body (buffered or still unread) is kept for forwarding after an approval.
            match self.wait_for_decision(approval.id, limit).await {
                Err(e) => break self.store_unavailable(Some(e)),
                Ok(Status::Pending) => break self.pending(&approval, previous),
                // Consumed: another request with this identity used it; the step then answers
                // with a fresh pending approval, as a retry would get.
                Ok(Status::Approved | Status::Consumed) => {}
                Ok(status) => break self.not_approved(approval.id, status),
            }
        };
        if let Some(waited) = waited {
            resp.headers_mut()
                .insert(PREFERENCE_APPLIED.clone(), prefer_wait::applied(waited));
        }
        resp
    }

    /// Hold (counted in the waiting gauge) until approval `id` leaves `pending` or `limit`
    /// passes; its status as last read.
    async fn wait_for_decision(
        &self,
        id: ApprovalId,
        limit: Duration,
    ) -> Result<Status, StoreError> {
        let _waiting = Waiting::enter(&self.shared.metrics.requests_waiting);
        let deadline = tokio::time::Instant::now() + limit;
        match self.shared.store.wait_for_decision(id, deadline).await? {
            Some(approval) => Ok(approval.status),
            None => Err(StoreError::Corrupt(format!("approval {id} vanished"))),
        }
    }

    /// The approval a request waited on was denied (403), withdrawn or expired (409): nothing
    /// is forwarded; a later retry without an approval asks again.
    fn not_approved(&mut self, id: ApprovalId, status: Status) -> Response<ProxyBody> {
        self.count(metrics::Outcome::not_approved);
        self.note.approval = Some(id);
        approval_response::not_approved(id, status)
    }

    /// The 202 for a pending approval.
    fn pending(
        &mut self,
        approval: &Approval,
        previous: Option<ApprovalId>,
    ) -> Response<ProxyBody> {
        self.count(metrics::Outcome::pending);
        self.note.approval = Some(approval.id);
        approval_response::pending(self.matched.policy, approval, previous)
    }

    async fn consume_or_create(&self, new: &NewApproval) -> Result<GateOutcome, StoreError> {
        let ttls = self.matched.policy.gate.ttls;
        self.shared
            .store
            .consume_or_create(new, ttls, Utc::now())
            .await
    }

    fn count_pending_approval(&self, created: bool) {
        let event = if created {
            ApprovalEvent::requested
        } else {
            ApprovalEvent::deduplicated
        };
        self.shared.metrics.approval(self.matched.action(), event);
    }

    /// Forward a request that consumed approval `id`: `Approval-Id` upstream and downstream, the
    /// upstream's answer recorded on the approval. One approval, one execution: it is sent at
    /// most once (`Upstream::send` with `Resend::Never`); when that send fails the client gets the error
    /// (502/504) and the approval records whether the upstream may have acted on it.
    async fn forward_consumed(mut self, id: ApprovalId) -> Response<ProxyBody> {
        let action = self.matched.action();
        self.shared
            .metrics
            .approval(action, ApprovalEvent::consumed);
        tracing::info!(event = "consumed", approval_id = %id, action, "approval consumed; forwarding");
        self.count(metrics::Outcome::forwarded);
        self.note.approval = Some(id);
        let shared = self.shared;
        let value = id_header(id);
        let resp = self.send(Some(&value)).await;
        let result = match &resp {
            Ok(r) => UpstreamResult::Status(r.status().as_u16()),
            Err(e) => UpstreamResult::Error(e.upstream_outcome().into_owned()),
        };
        record_upstream(shared, id, result);
        let mut resp = resp.unwrap_or_else(ProxyError::into_response);
        resp.headers_mut().insert(APPROVAL_ID.clone(), value);
        resp
    }

    /// The approval this request needs, with who asks for it and what it asks.
    fn new_approval(&self, g: Gated) -> NewApproval {
        let (parts, caller) = (&self.parts, &self.caller);
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

    fn store_unavailable(&mut self, e: Option<StoreError>) -> Response<ProxyBody> {
        self.shared.metrics.store_errors.inc();
        self.count(metrics::Outcome::store_unavailable);
        let action = self.matched.action();
        if let Some(e) = &e {
            tracing::error!(action, error = %e, "approval store failed; answering 503");
        } else {
            tracing::warn!(action, "approval store not ready; answering 503");
        }
        ProxyError::StoreUnavailable(e).into_response()
    }
}

/// The upstream's answer is recorded off the response path; a failure is logged, never lost
/// silently (the consumption itself is already durable and audited).
fn record_upstream(shared: &Shared, id: ApprovalId, result: UpstreamResult) {
    let store = shared.store.clone();
    let metrics = Arc::clone(&shared.metrics);
    shared.background.spawn(async move {
        if let Err(e) = store.record_upstream(id, result, Utc::now()).await {
            metrics.store_errors.inc();
            tracing::error!(approval_id = %id, error = %e, "could not record the upstream result");
        }
    });
}

fn id_header(id: ApprovalId) -> HeaderValue {
    // A hyphenated UUID is always a valid header value.
    HeaderValue::try_from(id.to_string()).unwrap_or(HeaderValue::from_static("invalid"))
}
