//! Every metric name in one place; label values are bounded (action names from config, fixed
//! outcome/event/kind sets — never a raw path or a caller id). Served at `/metrics` on the admin
//! listener in the Prometheus text format.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub(crate) const REQUESTS: &str = "approval_gateway_requests";
pub(crate) const UPSTREAM_DURATION: &str = "approval_gateway_upstream_request_duration_seconds";
pub(crate) const UPSTREAM_ERRORS: &str = "approval_gateway_upstream_errors";
pub(crate) const APPROVALS: &str = "approval_gateway_approvals";
pub(crate) const APPROVALS_PENDING: &str = "approval_gateway_approvals_pending";
pub(crate) const STORE_ERRORS: &str = "approval_gateway_store_errors";
pub(crate) const GATE_MODE: &str = "approval_gateway_gate_mode";
pub(crate) const CONFIG_RELOADS: &str = "approval_gateway_config_reloads";
pub(crate) const REQUESTS_WAITING: &str = "approval_gateway_requests_waiting";
pub(crate) const NOTIFY_FAILURES: &str = "approval_gateway_notify_failures";
pub(crate) const MIRROR_FAILURES: &str = "approval_gateway_mirror_failures";

/// `outcome` label of `approval_gateway_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Outcome {
    passthrough,
    forwarded,
    pending,
    shadow_would_gate,
    guard_denied,
    unauthorized,
    store_unavailable,
    bad_request,
    /// Held with `Prefer: wait` and answered because the approval was denied, withdrawn or
    /// expired meanwhile.
    not_approved,
    /// A decide call on a canvas-mirrored approval, answered as a vote in the gateway
    /// (the canvas mirror, docs/molecule.md §8).
    canvas_decided,
}

/// `event` label of `approval_gateway_approvals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ApprovalEvent {
    requested,
    deduplicated,
    approved,
    bypassed,
    denied,
    consumed,
    expired,
    withdrawn,
}

/// `kind` label of `approval_gateway_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum UpstreamErrorKind {
    /// No connection to the upstream (502).
    connect,
    /// No response head within `upstream.request_timeout` (504).
    timeout,
    /// The upstream broke HTTP or the connection mid-exchange.
    protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ApprovalLabels {
    pub(crate) action: String,
    pub(crate) event: ApprovalEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ActionLabels {
    pub(crate) action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: UpstreamErrorKind,
}

/// `target` of the notification metrics: a `[[notify]]` entry's name or index (bounded by config).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct TargetLabels {
    pub(crate) target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

/// The registry and handles to every metric. One per process, shared behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    /// `requests{route="none",outcome="passthrough"}`, resolved once: the hot path's only metric.
    pub passthrough: Counter,
    pub(crate) upstream_duration: Histogram,
    pub(crate) upstream_errors: Family<KindLabels, Counter>,
    pub(crate) approvals: Family<ApprovalLabels, Counter>,
    pub(crate) approvals_pending: Family<ActionLabels, Gauge>,
    pub(crate) store_errors: Counter,
    pub(crate) gate_mode: Gauge,
    pub(crate) config_reloads: Family<ResultLabels, Counter>,
    /// Gated requests currently held open by `Prefer: wait` on this replica.
    pub requests_waiting: Gauge,
    /// Notification tries that failed and notifications dropped (README, Notifications).
    pub(crate) notify_failures: Family<TargetLabels, Counter>,
    /// Canvas mirror calls and store steps that failed (docs/molecule.md §8).
    pub(crate) mirror_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            REQUESTS,
            "Requests seen by the proxy, by route action and outcome",
            requests.clone(),
        );
        let upstream_duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            UPSTREAM_DURATION,
            "Time to the upstream's response head",
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            UPSTREAM_ERRORS,
            "Upstream requests that failed, by kind",
            upstream_errors.clone(),
        );
        let approvals = Family::<ApprovalLabels, Counter>::default();
        registry.register(
            APPROVALS,
            "Approval transitions made by this replica",
            approvals.clone(),
        );
        let approvals_pending = Family::<ActionLabels, Gauge>::default();
        registry.register(
            APPROVALS_PENDING,
            "Pending, unexpired approvals in the store",
            approvals_pending.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            STORE_ERRORS,
            "Store operations that failed",
            store_errors.clone(),
        );
        let gate_mode = Gauge::default();
        registry.register(
            GATE_MODE,
            "Gate mode: 0 off, 1 shadow, 2 enforce",
            gate_mode.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            CONFIG_RELOADS,
            "Configuration reloads, by result",
            config_reloads.clone(),
        );
        let requests_waiting = Gauge::default();
        registry.register(
            REQUESTS_WAITING,
            "Gated requests held open waiting for a decision (Prefer: wait)",
            requests_waiting.clone(),
        );
        let notify_failures = Family::<TargetLabels, Counter>::default();
        registry.register(
            NOTIFY_FAILURES,
            "Notification tries that failed (error, timeout, non-2xx) and notifications dropped \
             on a full queue, by [[notify]] target",
            notify_failures.clone(),
        );
        let mirror_failures = Counter::default();
        registry.register(
            MIRROR_FAILURES,
            "Canvas mirror tries that failed (creating, re-creating or deciding the \
             workspace-server's approval rows), each retried with backoff",
            mirror_failures.clone(),
        );
        let passthrough = requests
            .get_or_create(&RequestLabels {
                route: "none".to_owned(),
                outcome: Outcome::passthrough,
            })
            .clone();
        Self {
            registry,
            requests,
            passthrough,
            upstream_duration,
            upstream_errors,
            approvals,
            approvals_pending,
            store_errors,
            gate_mode,
            config_reloads,
            requests_waiting,
            notify_failures,
            mirror_failures,
        }
    }

    /// Add `n` to `approval_gateway_notify_failures_total{target}` (0 creates the series).
    pub(crate) fn notify_failures(&self, target: &str, n: u64) {
        self.notify_failures
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc_by(n);
    }

    pub(crate) fn request(&self, route: &str, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                outcome,
            })
            .inc();
    }

    pub(crate) fn approval(&self, action: &str, event: ApprovalEvent) {
        self.approvals
            .get_or_create(&ApprovalLabels {
                action: action.to_owned(),
                event,
            })
            .inc();
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// The Prometheus text exposition (format 0.0.4, what `promtool check metrics` and every
    /// Prometheus server read). prometheus-client writes OpenMetrics, which names a counter
    /// family without its `_total` suffix in `# HELP`/`# TYPE` and ends with `# EOF`; rewrite
    /// those few lines (scrape-time only, never on the request path).
    pub fn encode(&self) -> String {
        let mut open_metrics = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry);
        let mut out = String::with_capacity(open_metrics.len() + 128);
        for line in open_metrics.lines() {
            if line == "# EOF" {
                continue;
            }
            match counter_meta(line) {
                Some((prefix, name, rest)) => {
                    out.push_str(prefix);
                    out.push_str(name);
                    out.push_str("_total");
                    out.push_str(rest);
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }
}

const COUNTERS: [&str; 7] = [
    REQUESTS,
    UPSTREAM_ERRORS,
    APPROVALS,
    STORE_ERRORS,
    CONFIG_RELOADS,
    NOTIFY_FAILURES,
    MIRROR_FAILURES,
];

/// `# HELP <counter> …` / `# TYPE <counter> counter` → (prefix, name, rest).
fn counter_meta(line: &str) -> Option<(&'static str, &'static str, &str)> {
    let (prefix, tail) = if let Some(t) = line.strip_prefix("# HELP ") {
        ("# HELP ", t)
    } else {
        ("# TYPE ", line.strip_prefix("# TYPE ")?)
    };
    let name = COUNTERS
        .into_iter()
        .find(|n| tail.strip_prefix(n).is_some_and(|r| r.starts_with(' ')))?;
    Some((prefix, name, &tail[name.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_the_contract_names() {
        let m = Metrics::new();
        m.request("delete_workspace", Outcome::pending);
        m.approval("delete_workspace", ApprovalEvent::requested);
        m.upstream_error(UpstreamErrorKind::timeout);
        m.store_errors.inc();
        m.gate_mode.set(2);
        m.passthrough.inc();
        m.notify_failures("0", 2);
        let text = m.encode();
        for needle in [
            "approval_gateway_requests_total{route=\"delete_workspace\",outcome=\"pending\"} 1",
            "approval_gateway_requests_total{route=\"none\",outcome=\"passthrough\"} 1",
            "approval_gateway_approvals_total{action=\"delete_workspace\",event=\"requested\"} 1",
            "approval_gateway_upstream_errors_total{kind=\"timeout\"} 1",
            "approval_gateway_store_errors_total 1",
            "approval_gateway_gate_mode 2",
            "approval_gateway_notify_failures_total{target=\"0\"} 2",
            "# TYPE approval_gateway_notify_failures_total counter",
            "approval_gateway_upstream_request_duration_seconds_bucket",
            "# TYPE approval_gateway_requests_total counter",
            "# HELP approval_gateway_store_errors_total ",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# TYPE approval_gateway_requests counter"));
        // Every counter's HELP/TYPE names it with `_total`, as its samples (promtool says "no
        // help text" otherwise; the mirror's counter once slipped through).
        for line in text
            .lines()
            .filter(|l| l.starts_with('#') && l.contains("counter"))
        {
            let name = line.split(' ').nth(2).unwrap_or("");
            if line.starts_with("# TYPE ") {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
    }
}
