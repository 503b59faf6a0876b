//! The data plane: the request path, reading top to bottom.
//!
//! ```text
//! listener (accept, drain) ─▶ handle(): lookup ─┬▶ no hit: upstream::Upstream::send
//!                                               └▶ hit: gated/ [caller::classify ─▶ gate::decide
//!                                                  ─▶ store] ─▶ send once | 202 | problem
//! ```
//!
//! Input: a downstream request and its connection's facts. Output: always a response (errors
//! are mapped by `error.rs`, the one place that does so). Invariant: the pass-through path does
//! no buffering, no boxing and no store access.
//!
//! The upstream client (`upstream/`) sits below everything here and imports none of it; the
//! per-shard design (threads, pool, timer, store connections) is described in
//! `upstream/shard.rs`.

mod access;
mod body;
mod canvas_decide;
mod gated;
pub mod listener;
mod error;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

pub(crate) use body::read_within;
pub(crate) use error::{json, Problem, ProxyError};
pub(crate) use upstream::body::ProxyBody;
pub(crate) use upstream::Downstream;
pub use upstream::{Upstream, UpstreamUrlError};

use arc_swap::ArcSwap;

use crate::config::Policy;
use crate::gate::{GateRule, Mode};
use crate::metrics::Metrics;
use crate::route::{self, RouteMatch};
use crate::store::Store;

/// Default time in-flight requests get to finish after shutdown begins.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// The data plane's state; cloning is one `Arc` increment.
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

/// Everything a request needs: the upstream, the swappable policy, the store, the metrics.
#[derive(Debug)]
pub(crate) struct Shared {
    upstream: Upstream,
    metrics: Arc<Metrics>,
    /// Routes, guards, callers and gate settings; swapped whole on reload, read lock-free.
    policy: Arc<ArcSwap<Policy>>,
    store: Store,
    /// Work a request leaves running after its answer (recording a consumed approval's
    /// upstream result); a stopping shard waits for it ([`Proxy::finish_background`]).
    background: tokio_util::task::TaskTracker,
    /// The canvas mirror is on: decide calls on its rows are votes here (`canvas_decide.rs`).
    canvas_decide: bool,
}

impl Proxy {
    /// A proxy forwarding to `upstream`, reading the live `policy`, holding approvals in `store`
    /// and counting into `metrics`.
    pub fn new(
        upstream: Upstream,
        metrics: Arc<Metrics>,
        policy: Arc<ArcSwap<Policy>>,
        store: Store,
    ) -> Self {
        Self::with_canvas_decide(upstream, metrics, policy, store, false)
    }

    /// [`Proxy::new`], answering decide calls on the canvas mirror's rows (`docs/molecule.md`
    /// §8) as votes in the gateway when `canvas_decide` is on.
    pub(crate) fn with_canvas_decide(
        upstream: Upstream,
        metrics: Arc<Metrics>,
        policy: Arc<ArcSwap<Policy>>,
        store: Store,
        canvas_decide: bool,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                upstream,
                metrics,
                policy,
                store,
                background: tokio_util::task::TaskTracker::new(),
                canvas_decide,
            }),
        }
    }

    /// Wait (at most `within`) for the work requests left running after their answers, so a
    /// stopping shard does not drop a consumed approval's upstream result with its runtime.
    pub(crate) async fn finish_background(&self, within: Duration) {
        let background = &self.shared.background;
        background.close();
        if tokio::time::timeout(within, background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = background.len(),
                "stopping before every upstream result was recorded"
            );
        }
    }

    /// This proxy for one shard thread: the same upstream, policy and metrics, and a store
    /// handle whose connections belong to the calling thread's runtime
    /// ([`Store::for_this_thread`]). Call it on the shard's runtime.
    pub(crate) fn for_this_thread(&self) -> Proxy {
        let s = &*self.shared;
        Proxy::with_canvas_decide(
            s.upstream.clone(),
            Arc::clone(&s.metrics),
            Arc::clone(&s.policy),
            s.store.for_this_thread(),
            s.canvas_decide,
        )
    }

    /// One request, start to finish. Never fails: every error becomes a problem response.
    ///
    /// Flag off: straight to the upstream, no route evaluation, no store. Otherwise a method
    /// no guard or route names is forwarded at once; for the rest, guards and routes are looked
    /// up on one normalisation of the path. Only a hit goes down the gated path (`gated/`),
    /// everything else is forwarded untouched.
    pub(crate) async fn handle(
        self,
        req: Request<Incoming>,
        down: Downstream,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let shared = &*self.shared;
        let policy = shared.policy.load();
        if policy.gate.mode == Mode::Off {
            drop(policy);
            return Ok(shared.pass_through_logged(req, &down).await);
        }
        let hit = lookup(
            &policy,
            req.method(),
            req.uri().path(),
            shared.canvas_decide,
        );
        let Some(Hit {
            guard,
            route,
            canvas_decide,
        }) = hit
        else {
            drop(policy);
            return Ok(shared.pass_through_logged(req, &down).await);
        };
        // A hit: keep this policy for the whole request, even if a reload swaps it meanwhile.
        let policy = arc_swap::Guard::into_inner(policy);
        let (rule, params) = route.unzip();
        let route = rule
            .as_ref()
            .zip(params)
            .map(|(value, params)| RouteMatch { value, params });
        let matched = gated::Matched {
            policy: &policy,
            guard,
            route,
            canvas_decide,
        };
        let action = matched.action();
        // Captured only when the access log is on (the owned path is the one allocation).
        let line = access::enabled().then(|| (req.method().clone(), req.uri().path().to_owned()));
        let (parts, body) = req.into_parts();
        let mut note = access::Note::default();
        let resp = gated::handle(shared, matched, parts, body, &down, &mut note).await;
        if let Some((method, path)) = line {
            access::log(&method, &path, action, resp.status(), &note);
        }
        Ok(resp)
    }
}

/// What a request matched, when it matched anything.
struct Hit {
    /// A guard matched.
    guard: bool,
    /// The route that matched, with its parameters.
    route: Option<(Arc<GateRule>, route::Params)>,
    /// The canvas mirror's decide route (with the mirror on): it goes down the gated path even
    /// without a rule.
    canvas_decide: bool,
}

/// What the request matched, on one normalisation of its path; `None` for a miss. Most
/// unmatched traffic is ruled out by its method alone, before the path is read. The rule comes
/// back as its own `Arc` (one increment, on hits only), so the caller can let go of its borrow
/// of the policy and match nothing twice. `canvas`: the canvas mirror is on.
fn lookup(policy: &Policy, method: &http::Method, raw_path: &str, canvas: bool) -> Option<Hit> {
    let canvas = canvas && method == http::Method::POST;
    if !canvas && !policy.guards.has_method(method) && !policy.routes.has_method(method) {
        return None;
    }
    let path = route::normalise(raw_path);
    let canvas_decide = canvas && canvas_decide::matches(method, &path);
    let guard = policy.guards.find_normalized(method, &path).is_some();
    let route = policy
        .routes
        .find_normalized(method, &path)
        .map(|m| (Arc::clone(m.value), m.params));
    (guard || route.is_some() || canvas_decide).then_some(Hit {
        guard,
        route,
        canvas_decide,
    })
}

impl Shared {
    /// The hot path plus its access line when the `access` target is on; when it is off this
    /// costs one cached callsite-interest check.
    async fn pass_through_logged(
        &self,
        req: Request<Incoming>,
        down: &Downstream,
    ) -> Response<ProxyBody> {
        if !access::enabled() {
            return self.pass_through(req, down).await;
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let mut note = access::Note::default();
        let resp = note.timed(self.pass_through(req, down)).await;
        access::log(&method, &path, "none", resp.status(), &note);
        resp
    }

    /// The hot path: count, send, map errors.
    async fn pass_through(&self, req: Request<Incoming>, down: &Downstream) -> Response<ProxyBody> {
        self.metrics.passthrough.inc();
        let req = req.map(ProxyBody::Incoming);
        match self.upstream.send(req, down, &self.metrics, None).await {
            Ok(resp) => resp,
            Err(e) => ProxyError::from(e).into_response(),
        }
    }
}

/// Run the data plane on `listener` until `shutdown`, then drain for [`DEFAULT_DRAIN`].
pub async fn serve(listener: TcpListener, proxy: Proxy, shutdown: impl Future<Output = ()>) {
    listener::serve(listener, proxy, shutdown, DEFAULT_DRAIN).await;
}
