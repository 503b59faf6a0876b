//! The data plane: the request path, reading top to bottom.
//!
//! ```text
//! listener (accept, drain) ─▶ handle(): [route::find ─▶ caller::classify ─▶ gate::decide ─▶ store]
//!                                        ─▶ forward::Upstream::forward | respond (202 / problem)
//! ```
//!
//! Input: a downstream request and its connection's facts. Output: always a response (errors
//! are mapped by `respond`, the one place that does so). Invariant: the pass-through path does
//! no buffering, no boxing and no store access.

pub mod body;
pub mod forward;
pub mod listener;
pub mod pool;
pub mod respond;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

pub use body::{read_limited, BodyError, ProxyBody};
pub use forward::{Downstream, Upstream, UpstreamUrlError};
pub use respond::{json, Problem, ProxyError};

use crate::metrics::Metrics;

/// Default time in-flight requests get to finish after shutdown begins.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// Shared, immutable state of the data plane; cloning is one `Arc` increment.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    metrics: Arc<Metrics>,
    // The lead adds here: the swappable policy (routes, guards, callers, gate settings) and the
    // approval store.
}

impl Proxy {
    pub fn new(upstream: Upstream, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner { upstream, metrics }),
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// One request, start to finish. Never fails: every error becomes a problem response.
    pub async fn handle(
        self,
        req: Request<Incoming>,
        down: Downstream,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // Stages to come, in order: route::find (guards first) → caller::classify →
        // gate::decide → store (consume or 202). Requests that match no route fall through here.
        self.inner.metrics.passthrough.inc();
        let req = req.map(ProxyBody::Incoming);
        Ok(
            match self
                .inner
                .upstream
                .forward(req, &down, &self.inner.metrics)
                .await
            {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            },
        )
    }
}

/// Run the data plane on `listener` until `shutdown`, then drain for [`DEFAULT_DRAIN`].
pub async fn serve(listener: TcpListener, proxy: Proxy, shutdown: impl Future<Output = ()>) {
    listener::serve(listener, proxy, shutdown, DEFAULT_DRAIN).await;
}
