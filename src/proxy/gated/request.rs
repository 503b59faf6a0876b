//! One gated request as one value, [`GatedRequest`], and its steps: [`handle`] classifies the
//! caller, lets the canvas mirror's decide route answer, then asks `gate::decide` for the
//! outcome and carries it out — forward untouched, refuse, read the body (bounded) and decide
//! again, or hold for approval (`hold.rs`).
//!
//! The one place the gated path sends a request upstream is [`GatedRequest::send`].

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{request, Response};
use hyper::body::Incoming;

use crate::caller::{Caller, CallerError};
use crate::config::Policy;
use crate::gate::{self, GateRule, Refusal};
use crate::metrics;
use crate::proxy::access::Note;
use crate::proxy::canvas_decide::{self, Intercepted};
use crate::proxy::{read_within, Downstream, ProxyBody, ProxyError, Shared};
use crate::route::RouteMatch;

/// A request that matched a guard and/or a route. `route` borrows from `policy`.
pub(in crate::proxy) struct Matched<'p> {
    pub(crate) policy: &'p Policy,
    pub(crate) guard: bool,
    pub(crate) route: Option<RouteMatch<'p, Arc<GateRule>>>,
    /// The canvas mirror's decide route (`canvas_decide.rs`), with the mirror on.
    pub(crate) canvas_decide: bool,
}

impl<'p> Matched<'p> {
    /// The route's action, for metrics and logs; `none` for a guard or the canvas route only.
    pub(in crate::proxy) fn action(&self) -> &'p str {
        self.route.as_ref().map_or("none", |r| {
            let rule: &'p GateRule = r.value;
            &rule.action
        })
    }
}

/// One request on the gated path, from its classified caller to its answer.
pub(super) struct GatedRequest<'a> {
    pub(super) shared: &'a Shared,
    pub(super) matched: Matched<'a>,
    pub(super) caller: Caller,
    pub(super) parts: request::Parts,
    pub(super) body: Body,
    pub(super) down: &'a Downstream,
    /// What the access line says of it.
    pub(super) note: &'a mut Note,
}

/// The request body: still unread, or read because the gate reads it (`[gate]
/// max_body_bytes`); either way kept for forwarding.
pub(super) enum Body {
    Unread(Incoming),
    Read(Bytes),
}

/// One gated request, start to finish. Never fails: every error becomes a problem response.
pub(in crate::proxy) async fn handle(
    shared: &Shared,
    matched: Matched<'_>,
    parts: request::Parts,
    body: Incoming,
    down: &Downstream,
    note: &mut Note,
) -> Response<ProxyBody> {
    let caller = match classify(shared, &matched, &parts, note).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    // A decide on a row the canvas mirror made is a vote here, whoever calls (before the
    // unknown-caller rule: an unverified caller gets the mirror's 403).
    let body = if matched.canvas_decide {
        let policy = matched.policy;
        match canvas_decide::handle(shared, policy, &caller, &parts, body, note).await {
            Intercepted::Answered(resp) => return resp,
            Intercepted::NotMirrored(body) => body,
        }
    } else {
        body
    };
    GatedRequest {
        shared,
        matched,
        caller,
        parts,
        body: Body::Unread(body),
        down,
        note,
    }
    .carry_out()
    .await
}

/// Who is calling: the credential as the token sources and JWT rules read it (IO), or the
/// answer to a credential that cannot be read or checked.
async fn classify(
    shared: &Shared,
    matched: &Matched<'_>,
    parts: &request::Parts,
    note: &mut Note,
) -> Result<Caller, Response<ProxyBody>> {
    let e = match matched
        .policy
        .callers
        .classify(&parts.headers, unix_now())
        .await
    {
        Ok(caller) => return Ok(caller),
        Err(e) => e,
    };
    let action = matched.action();
    tracing::info!(action, error = %e, "credential rejected on a gated route");
    let (outcome, error) = match e {
        CallerError::DuplicateAuthorization => (
            metrics::Outcome::bad_request,
            ProxyError::BadRequest(Cow::Borrowed("more than one Authorization header")),
        ),
        CallerError::Undecodable => (
            metrics::Outcome::unauthorized,
            ProxyError::Unauthorized(Cow::Borrowed(
                "the Authorization header could not be decoded as UTF-8",
            )),
        ),
        CallerError::Rejected(_) => (
            metrics::Outcome::unauthorized,
            ProxyError::Unauthorized(Cow::Borrowed("the bearer credential could not be verified")),
        ),
        CallerError::SourceUnavailable(_) => {
            shared.metrics.store_errors.inc();
            (
                metrics::Outcome::store_unavailable,
                ProxyError::StoreUnavailable(None),
            )
        }
    };
    count(shared, note, action, outcome);
    Err(error.into_response())
}

impl GatedRequest<'_> {
    /// Decide (reading the body first when the gate asks for it), then carry the outcome out.
    async fn carry_out(mut self) -> Response<ProxyBody> {
        loop {
            match self.decide() {
                gate::Outcome::ReadBody => {
                    if let Err(refused) = self.read_body().await {
                        return refused;
                    }
                }
                gate::Outcome::Forward { would_refuse } => {
                    if let Some(why) = would_refuse {
                        self.count(metrics::Outcome::shadow_would_gate);
                        tracing::info!(
                            event = "would_refuse_unknown_caller",
                            action = self.matched.action(),
                            why,
                            "shadow mode: an unknown caller on a gated route would be refused"
                        );
                    }
                    self.count(metrics::Outcome::passthrough);
                    return self.forward().await;
                }
                gate::Outcome::Shadow(g) => {
                    self.count(metrics::Outcome::shadow_would_gate);
                    tracing::info!(
                        event = "would_gate", action = self.matched.action(), scope = %g.scope,
                        request_hash = %g.request_hash, requester = %self.caller.requester(),
                        "shadow mode: this request would need an approval"
                    );
                    return self.forward().await;
                }
                gate::Outcome::Refuse(refusal) => return self.refuse(refusal),
                gate::Outcome::Hold(g) => return self.hold(g).await,
            }
        }
    }

    /// The gate's pure decision on this request as it stands.
    fn decide(&self) -> gate::Outcome {
        let gate = &self.matched.policy.gate;
        let call = gate::Call {
            method: &self.parts.method,
            uri: &self.parts.uri,
            headers: &self.parts.headers,
            caller: &self.caller,
            guard: self.matched.guard,
            route: self.matched.route.as_ref().map(|r| (&**r.value, &r.params)),
            body: match &self.body {
                Body::Read(bytes) => Some(&bytes[..]),
                Body::Unread(_) => None,
            },
        };
        gate::decide(
            &call,
            &gate::Settings {
                mode: gate.mode,
                unknown_callers: gate.unknown_callers,
                approvals_required: gate.approvals_required,
            },
        )
    }

    /// Buffer the body for the gate, up to the cap, within the read timeout (a slow-loris body
    /// must not hold the request open; it is never forwarded).
    async fn read_body(&mut self) -> Result<(), Response<ProxyBody>> {
        let Body::Unread(body) = std::mem::replace(&mut self.body, Body::Read(Bytes::new())) else {
            return Ok(());
        };
        let limit = self.matched.policy.gate.max_body_bytes;
        let within = self.shared.upstream.body_timeouts().read;
        match read_within(body, limit, within).await {
            Ok(bytes) => {
                self.body = Body::Read(bytes);
                Ok(())
            }
            Err(error) => {
                self.count(metrics::Outcome::bad_request);
                Err(error.into_response())
            }
        }
    }

    /// Answer the gate's refusal; nothing is forwarded.
    fn refuse(mut self, refusal: Refusal) -> Response<ProxyBody> {
        let action = self.matched.action();
        let (outcome, error) = match refusal {
            Refusal::UnknownCaller(why) => {
                tracing::info!(action, why, "unknown caller refused on a gated route");
                (
                    metrics::Outcome::unauthorized,
                    ProxyError::UnknownCaller(why),
                )
            }
            Refusal::NoSubject => {
                tracing::warn!(
                    action,
                    caller = self.caller.class_name(),
                    "gated credential without a subject refused"
                );
                (
                    metrics::Outcome::unauthorized,
                    ProxyError::Unauthorized(Cow::Borrowed(
                        "the gated credential names no subject, so no approval can be bound to \
                         its caller",
                    )),
                )
            }
            Refusal::AmbiguousPath(why) => {
                tracing::info!(action, why, "ambiguous path from a gated caller refused");
                (
                    metrics::Outcome::bad_request,
                    ProxyError::AmbiguousPath(why),
                )
            }
            Refusal::Guard => {
                tracing::info!(
                    caller = self.caller.class_name(),
                    path = self.parts.uri.path(),
                    "guard denied a gated caller"
                );
                (
                    metrics::Outcome::guard_denied,
                    ProxyError::Forbidden(Cow::Borrowed(
                        "this operation may not be called with a gated credential",
                    )),
                )
            }
            Refusal::Unreadable(e) => (
                metrics::Outcome::bad_request,
                ProxyError::BadRequest(Cow::Owned(e.to_string())),
            ),
        };
        self.count(outcome);
        error.into_response()
    }

    /// Forward untouched (no approval involved).
    async fn forward(self) -> Response<ProxyBody> {
        self.send(None)
            .await
            .unwrap_or_else(ProxyError::into_response)
    }

    /// Send the request upstream, timed for the access line; `approval`: the id of the approval
    /// it consumed. The one place the gated path sends.
    pub(super) async fn send(
        self,
        approval: Option<&HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let body = match self.body {
            Body::Unread(body) => ProxyBody::Incoming(body),
            Body::Read(bytes) => ProxyBody::full(bytes),
        };
        let shared = self.shared;
        let req = http::Request::from_parts(self.parts, body);
        let sent = shared
            .upstream
            .send(req, self.down, &shared.metrics, approval);
        Ok(self.note.timed(sent).await?)
    }

    /// Count `outcome` in the metrics under the route's action and note it for the access line.
    pub(super) fn count(&mut self, outcome: metrics::Outcome) {
        count(self.shared, self.note, self.matched.action(), outcome);
    }
}

/// Count `outcome` under `action` in the metrics and note it for the access line.
pub(in crate::proxy) fn count(
    shared: &Shared,
    note: &mut Note,
    action: &str,
    outcome: metrics::Outcome,
) {
    shared.metrics.request(action, outcome);
    note.outcome = outcome;
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
