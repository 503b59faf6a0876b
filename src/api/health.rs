//! Operational endpoints: `/metrics` (scrape), `/healthz` (process up), `/readyz` (store ready
//! and reachable). Unauthenticated, like every scrape/probe endpoint on an admin listener.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;

use super::error::ApiError;
use super::AdminState;
use crate::metrics::{ActionLabels, Metrics};
use crate::store::Store;

/// `Metrics::encode` writes the Prometheus text format 0.0.4 (what `promtool check metrics` and
/// every Prometheus server read).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(st): State<AdminState>) -> Response {
    st.pending.refresh(&st.store, &st.metrics).await;
    let mut resp = st.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    resp
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 once migrations are applied and the store answers a ping; 503 problem otherwise.
pub async fn readyz(State(st): State<AdminState>) -> Result<&'static str, ApiError> {
    if !st.store.is_ready() {
        return Err(ApiError::NotReady(
            "the approval store is not ready (migrations not applied yet)",
        ));
    }
    match st.store.backend().ping().await {
        Ok(()) => Ok("ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readyz: store ping failed");
            Err(ApiError::NotReady("the approval store is unreachable"))
        }
    }
}

/// A scrape reads the pending gauge at most this stale: a scraper polling faster than this
/// costs the database one count per interval, not one per scrape.
const PENDING_MAX_AGE: Duration = Duration::from_secs(5);

/// `approval_gateway_approvals_pending{action}`, counted in the store when `/metrics` is read.
///
/// Why at scrape time: the count visits every pending row (about 90 ms of both cores with
/// 200k pending rows on the benchmark machine, where Postgres runs it as a parallel scan).
/// On the sweeper's 5 s timer it competed with the gate whether anyone read the gauge or not. Invariant: series are updated in place and an action's series is removed only once
/// it has none pending, so a scrape never sees a gap; a failed count keeps the last values
/// (and counts a store error).
#[derive(Debug, Default)]
pub struct PendingGauge {
    /// When the gauge was last counted, and the actions it showed then.
    last: Mutex<(Option<Instant>, Vec<String>)>,
}

impl PendingGauge {
    pub async fn refresh(&self, store: &Store, metrics: &Metrics) {
        if !store.is_ready() {
            return;
        }
        // Concurrent scrapes wait for the one counting, then share its result.
        let mut last = self.last.lock().await;
        if last.0.is_some_and(|at| at.elapsed() < PENDING_MAX_AGE) {
            return;
        }
        match store.backend().pending_counts(chrono::Utc::now()).await {
            Ok(counts) => {
                let shown = std::mem::take(&mut last.1);
                *last = (Some(Instant::now()), set_pending(metrics, counts, shown));
            }
            Err(e) => {
                metrics.store_errors.inc();
                tracing::warn!(error = %e, "pending gauge refresh failed");
            }
        }
    }
}

/// Sets the pending gauge to `counts` and removes the series of actions with none pending any
/// more (`shown`: the actions set last time; returns this time's).
fn set_pending(metrics: &Metrics, counts: Vec<(String, i64)>, shown: Vec<String>) -> Vec<String> {
    let now: Vec<String> = counts.iter().map(|(a, _)| a.clone()).collect();
    for (action, n) in counts {
        metrics
            .approvals_pending
            .get_or_create(&ActionLabels { action })
            .set(n);
    }
    for action in shown.into_iter().filter(|a| !now.contains(a)) {
        metrics.approvals_pending.remove(&ActionLabels { action });
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_lines(m: &Metrics) -> Vec<String> {
        m.encode()
            .lines()
            .filter(|l| l.starts_with("approval_gateway_approvals_pending{"))
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn pending_gauge_is_updated_in_place_and_drops_actions_with_none_left() {
        let m = Metrics::new();
        let counts = |c: &[(&str, i64)]| c.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect();
        let shown = set_pending(&m, counts(&[("a", 2), ("b", 1)]), Vec::new());
        assert_eq!(
            pending_lines(&m),
            [
                "approval_gateway_approvals_pending{action=\"a\"} 2",
                "approval_gateway_approvals_pending{action=\"b\"} 1"
            ]
        );
        let shown = set_pending(&m, counts(&[("a", 3)]), shown);
        assert_eq!(shown, ["a"]);
        assert_eq!(
            pending_lines(&m),
            ["approval_gateway_approvals_pending{action=\"a\"} 3"]
        );
    }
}
