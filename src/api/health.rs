//! Operational endpoints: `/metrics` (scrape), `/healthz` (process up), `/readyz` (store ready
//! and reachable). Unauthenticated, like every scrape/probe endpoint on an admin listener.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;

use super::error::ApiError;
use super::AdminState;
use crate::metrics::{ActionLabels, Metrics};
use crate::store::{Store, StoreError};

/// `Metrics::encode` writes the Prometheus text format 0.0.4 (what `promtool check metrics` and
/// every Prometheus server read).
pub(super) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(st): State<AdminState>) -> Response {
    st.pending.refresh(&st.store, &st.metrics).await;
    let mut resp = st.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    resp
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 once migrations are applied and the store answers a ping; 503 problem otherwise. A
/// canvas mirror that keeps failing adds a line to the 200 (it never makes readiness fail: the
/// gate works without it).
pub(crate) async fn readyz(State(st): State<AdminState>) -> Result<String, ApiError> {
    let ping = st.store.ping().await;
    if !st.store.is_ready() {
        // Say what is wrong: a store that is down is not one waiting for its migrations.
        return Err(ApiError::NotReady(match ping {
            Ok(()) => "the approval store is reachable but not ready (migrations not applied yet)",
            Err(_) => "the approval store is unreachable",
        }));
    }
    match ping {
        Ok(()) => {
            let mut body = "ready\n".to_owned();
            if let Some(line) = st.mirror.as_ref().and_then(|m| m.detail()) {
                body.push_str(&line);
                body.push('\n');
            }
            Ok(body)
        }
        Err(e) => {
            tracing::warn!(error = %e, "readyz: store ping failed");
            Err(ApiError::NotReady("the approval store is unreachable"))
        }
    }
}

/// A scrape reads the pending gauge at most this stale: a scraper polling faster than this
/// costs the database one count per interval, not one per scrape.
const PENDING_MAX_AGE: Duration = Duration::from_secs(5);

/// A count that takes longer is abandoned (the last values stay): a scrape must answer well
/// inside Prometheus's scrape timeout even while the store is down.
const PENDING_COUNT_TIMEOUT: Duration = Duration::from_secs(1);

/// `approval_gateway_approvals_pending{action}`, counted in the store when `/metrics` is read.
///
/// Why at scrape time: the count visits every pending row (about 90 ms of both cores with
/// 200k pending rows on the benchmark machine, where Postgres runs it as a parallel scan).
/// On the sweeper's 5 s timer it competed with the gate whether anyone read the gauge or not.
///
/// Invariants: at most one count per `PENDING_MAX_AGE`, failed or not, and a scrape never
/// waits for another scrape's count (it serves the values that count will replace). Series
/// are updated in place and an action's series is removed only once it has none pending, so
/// a scrape never sees a gap; a failed or timed-out count keeps the last values and counts a
/// store error.
#[derive(Debug, Default)]
pub struct PendingGauge {
    last: Mutex<Counted>,
}

#[derive(Debug, Default)]
struct Counted {
    /// When the last count started.
    at: Option<Instant>,
    /// The actions with a series, as the last successful count left them.
    shown: Vec<String>,
}

impl PendingGauge {
    pub(crate) async fn refresh(&self, store: &Store, metrics: &Metrics) {
        if store.is_ready() {
            let count = store.pending_counts(chrono::Utc::now());
            self.refresh_with(metrics, count).await;
        }
    }

    /// `count` is polled only if this scrape is the one to count.
    async fn refresh_with(
        &self,
        metrics: &Metrics,
        count: impl Future<Output = Result<Vec<(String, i64)>, StoreError>>,
    ) {
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.at.is_some_and(|at| at.elapsed() < PENDING_MAX_AGE) {
            return;
        }
        last.at = Some(Instant::now());
        match tokio::time::timeout(PENDING_COUNT_TIMEOUT, count).await {
            Ok(Ok(counts)) => {
                let shown = std::mem::take(&mut last.shown);
                last.shown = set_pending(metrics, counts, shown);
            }
            Ok(Err(e)) => {
                metrics.store_errors.inc();
                tracing::warn!(error = %e, "pending gauge count failed; keeping the last values");
            }
            Err(_) => {
                metrics.store_errors.inc();
                tracing::warn!(
                    timeout = ?PENDING_COUNT_TIMEOUT,
                    "pending gauge count timed out; keeping the last values"
                );
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

    fn store_errors(m: &Metrics) -> String {
        let text = m.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("approval_gateway_store_errors_total "));
        line.unwrap_or_default().to_owned()
    }

    fn counts(c: &[(&str, i64)]) -> Vec<(String, i64)> {
        c.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect()
    }

    #[tokio::test]
    async fn a_failed_count_keeps_the_values_and_waits_its_turn() {
        let (m, g) = (Metrics::new(), PendingGauge::default());
        g.refresh_with(&m, async { Ok(counts(&[("a", 2)])) }).await;
        // Fresh: the next scrape inside PENDING_MAX_AGE does not count.
        g.refresh_with(&m, async { panic!("counted again") }).await;
        g.last.lock().await.at = None;
        g.refresh_with(&m, async { Err(StoreError::Corrupt("down".into())) })
            .await;
        assert_eq!(
            pending_lines(&m),
            ["approval_gateway_approvals_pending{action=\"a\"} 2"]
        );
        assert_eq!(store_errors(&m), "approval_gateway_store_errors_total 1");
        // A failure counts as a count: a store that is down is not asked on every scrape.
        g.refresh_with(&m, async { panic!("counted again after a failure") })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_count_is_abandoned() {
        let (m, g) = (Metrics::new(), PendingGauge::default());
        g.refresh_with(&m, std::future::pending()).await;
        assert_eq!(store_errors(&m), "approval_gateway_store_errors_total 1");
    }

    #[tokio::test]
    async fn a_scrape_does_not_wait_for_another_scrapes_count() {
        let m = std::sync::Arc::new(Metrics::new());
        let g = std::sync::Arc::new(PendingGauge::default());
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let (m, g) = (m.clone(), g.clone());
            async move {
                let count = async move {
                    let _ = started_tx.send(());
                    let _ = release_rx.await;
                    Ok(counts(&[("a", 1)]))
                };
                g.refresh_with(&m, count).await;
            }
        });
        started.await.expect("the first scrape counts");
        g.refresh_with(&m, async { panic!("a second count") }).await;
        release.send(()).expect("still counting");
        first.await.expect("first scrape");
        assert_eq!(
            pending_lines(&m),
            ["approval_gateway_approvals_pending{action=\"a\"} 1"]
        );
    }

    #[test]
    fn pending_gauge_is_updated_in_place_and_drops_actions_with_none_left() {
        let m = Metrics::new();
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
