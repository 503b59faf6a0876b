//! The access log: one structured line per request on the `tracing` target `access`.
//!
//! Fields: `method`, `path` (never the query, which may carry credentials), `action` (route
//! action or `none`), `outcome` (the `approval_gateway_requests_total` outcome label), `status`,
//! `upstream_ms` (time to the upstream's response head; absent when nothing was forwarded) and
//! `approval_id` when the request consumed or is waiting on one. Never tokens, headers or bodies.
//!
//! Cost: callers check [`enabled`] once per request (a cached callsite-interest lookup); when
//! the target is off (`RUST_LOG=info,access=off`) the pass-through path does nothing more.

use std::future::Future;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::metrics::Outcome;
use crate::store::ApprovalId;

/// Is the access log on? Checked once per request before anything is captured for it.
#[inline]
pub(super) fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// What the gated path learned about one request, for its access line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Note {
    pub(super) outcome: Outcome,
    pub(super) approval: Option<ApprovalId>,
    pub(super) upstream: Option<Duration>,
}

impl Default for Note {
    fn default() -> Self {
        Self {
            outcome: Outcome::passthrough,
            approval: None,
            upstream: None,
        }
    }
}

impl Note {
    /// Await `forward`, remembering how long the upstream took.
    pub(super) async fn timed<T>(&mut self, forward: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = forward.await;
        self.upstream = Some(start.elapsed());
        out
    }
}

/// Write the line.
pub(super) fn log(method: &Method, path: &str, action: &str, status: StatusCode, note: &Note) {
    let upstream_ms = note.upstream.map(|d| d.as_secs_f64() * 1000.0);
    tracing::info!(
        target: "access",
        method = method.as_str(),
        path,
        action,
        outcome = ?note.outcome,
        status = status.as_u16(),
        upstream_ms,
        approval_id = note.approval.map(tracing::field::display),
    );
}
