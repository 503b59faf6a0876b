//! Notifications (README, Notifications): every approval transition a `[[notify]]` target asks for is POSTed
//! to it, off the request path.
//!
//! One dispatcher task per process subscribes to the store's live event feed (the feed SSE
//! uses), reads the approval once per event, renders each interested target's body and hands it
//! to that target's bounded queue with `try_send`: a full queue drops the notification and counts
//! it in `approval_gateway_notify_failures_total{target}`, so a slow or dead target never holds
//! anything up. Each target's worker sends up to `MAX_IN_FLIGHT` deliveries at once, each tried
//! `ATTEMPTS` times (backoff 1 s, 4 s, 15 s; each try bounded by `ATTEMPT_TIMEOUT`); every
//! failed try (connection error, timeout, non-2xx) is counted too.
//!
//! Bodies: a `webhook` gets `{"event":"approval.requested","approval":Approval}` and, with a
//! secret, `X-Approval-Gateway-Signature: sha256=<hex HMAC-SHA256 of the raw body>`; a `slack`
//! target gets an incoming-webhook `{"text": …}` naming the action, scope, requester, age and the
//! inbox link. Every delivery carries `X-Approval-Gateway-Delivery: <audit event id>`, the same
//! on every try and on every replica.
//!
//! Several replicas: on Postgres the live feed carries every replica's events (LISTEN/NOTIFY),
//! so each replica with the same `[[notify]]` sends each notification once: N replicas, N
//! deliveries. Receivers dedupe on the delivery header (the audit event id is global).
//!
//! A lagging dispatcher (feed buffer overrun) catches up from the audit table, like SSE.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, Semaphore};

use crate::api::events::sse_name;
use crate::config::Policy;
use crate::metrics::Metrics;
use crate::store::{Approval, AuditEvent, EventKind, Store, VoteKind};

/// Header carrying the body's signature (webhook targets with `secret_env`).
pub(crate) const SIGNATURE_HEADER: &str = "x-approval-gateway-signature";
/// Header carrying the audit event id: the same on every try and every replica.
pub(crate) const DELIVERY_HEADER: &str = "x-approval-gateway-delivery";
/// Notifications waiting per target; more are dropped (and counted).
pub(crate) const QUEUE: usize = 256;
/// Deliveries in flight per target.
pub(crate) const MAX_IN_FLIGHT: usize = 8;
/// Tries per notification.
pub(crate) const ATTEMPTS: usize = 4;
/// Waits between tries (the first try is immediate): four tries within about 20 s.
pub(crate) const BACKOFF: [Duration; ATTEMPTS - 1] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(15),
];
/// One try's bound, connection included.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CATCH_UP_PAGE: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotifyKind {
    Webhook,
    Slack,
}

/// One `[[notify]]` entry, compiled.
#[derive(Clone)]
pub(crate) struct NotifyTarget {
    /// The `target` label: the entry's `name`, or its index in the file.
    pub(crate) label: String,
    pub(crate) kind: NotifyKind,
    pub(crate) url: http::Uri,
    /// The HMAC key (webhook with `secret_env`).
    pub(crate) secret: Option<Vec<u8>>,
    /// The transitions it wants.
    pub(crate) events: Vec<EventKind>,
}

impl std::fmt::Debug for NotifyTarget {
    // Never the URL's path (a Slack webhook URL is a credential) nor the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("label", &self.label)
            .field("kind", &self.kind)
            .field("host", &self.url.host())
            .field("signed", &self.secret.is_some())
            .field("events", &self.events)
            .finish()
    }
}

pub(crate) type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One rendered notification for one target.
#[derive(Debug, Clone)]
struct Delivery {
    event_id: i64,
    body: Bytes,
}

/// The webhook body.
#[derive(Serialize)]
struct WebhookBody<'a> {
    event: &'static str,
    approval: &'a Approval,
}

/// Start the dispatcher and one worker per target; `None` when there is no target. Runs until
/// `stop` resolves (deliveries in flight then finish on their own).
pub(crate) fn spawn(
    targets: Vec<NotifyTarget>,
    store: Store,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if targets.is_empty() {
        return Ok(None);
    }
    let client = client()?;
    let mut queues = Vec::with_capacity(targets.len());
    for target in targets {
        let target = Arc::new(target);
        // The series exists from the start, at 0 (an alert can watch its rate at once).
        metrics.notify_failures(&target.label, 0);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(work(
            Arc::clone(&target),
            client.clone(),
            rx,
            Arc::clone(&metrics),
        ));
        queues.push((target, tx));
    }
    let feed = store.subscribe();
    let dispatcher = Dispatcher {
        store,
        policy,
        metrics,
        queues,
        cursor: None,
    };
    Ok(Some(tokio::spawn(dispatcher.run(feed, stop))))
}

pub(crate) fn client() -> anyhow::Result<HttpsClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for notifications: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

struct Dispatcher {
    store: Store,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    queues: Vec<(Arc<NotifyTarget>, mpsc::Sender<Delivery>)>,
    /// The last event id handled (skips events seen twice around a catch-up).
    cursor: Option<i64>,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut feed: tokio::sync::broadcast::Receiver<AuditEvent>,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let received = tokio::select! {
                () = &mut stop => return,
                r = feed.recv() => r,
            };
            match received {
                Ok(ev) => self.handle(&ev).await,
                Err(RecvError::Lagged(missed)) => match self.cursor {
                    Some(after) => self.catch_up(after).await,
                    None => tracing::warn!(
                        missed,
                        "notifications lagged before their first event; events skipped"
                    ),
                },
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn catch_up(&mut self, mut after: i64) {
        loop {
            let batch = match self.store.events_after(after, CATCH_UP_PAGE).await {
                Ok(b) => b,
                Err(e) => {
                    self.metrics.store_errors.inc();
                    tracing::warn!(error = %e, "notifications: catch-up failed; events skipped");
                    return;
                }
            };
            for ev in &batch {
                self.handle(ev).await;
                after = ev.id;
            }
            if batch.len() < CATCH_UP_PAGE as usize {
                return;
            }
        }
    }

    async fn handle(&mut self, ev: &AuditEvent) {
        if self.cursor.is_some_and(|c| ev.id <= c) {
            return;
        }
        self.cursor = Some(ev.id);
        let Some(name) = sse_name(ev.event) else {
            return;
        };
        if !self
            .queues
            .iter()
            .any(|(t, _)| t.events.contains(&ev.event))
        {
            return;
        }
        let approval = match self.store.get(ev.approval_id, Utc::now()).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, approval_id = %ev.approval_id, event = name,
                    "notifications: cannot read the approval; not sent");
                for (t, _) in self
                    .queues
                    .iter()
                    .filter(|(t, _)| t.events.contains(&ev.event))
                {
                    self.metrics.notify_failures(&t.label, 1);
                }
                return;
            }
        };
        let base = self.policy.load().gate.public_admin_url.clone();
        let now = Utc::now();
        for (target, tx) in &self.queues {
            if !target.events.contains(&ev.event) {
                continue;
            }
            let body = match target.kind {
                NotifyKind::Webhook => webhook_body(name, &approval),
                NotifyKind::Slack => slack_body(ev.event, &approval, &base, now),
            };
            let delivery = Delivery {
                event_id: ev.id,
                body,
            };
            if tx.try_send(delivery).is_err() {
                self.metrics.notify_failures(&target.label, 1);
                tracing::warn!(target = %target.label, event = name, approval_id = %approval.id,
                    "notification dropped: the target's queue is full");
            }
        }
    }
}

/// A target's worker: each delivery on its own task, at most [`MAX_IN_FLIGHT`] at once.
async fn work(
    target: Arc<NotifyTarget>,
    client: HttpsClient,
    mut rx: mpsc::Receiver<Delivery>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(d) = rx.recv().await {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (target, client, metrics) = (Arc::clone(&target), client.clone(), Arc::clone(&metrics));
        tokio::spawn(async move {
            deliver(&target, &client, &d, &metrics).await;
            drop(permit);
        });
    }
}

async fn deliver(target: &NotifyTarget, client: &HttpsClient, d: &Delivery, metrics: &Metrics) {
    for attempt in 0..ATTEMPTS {
        if let Some(wait) = attempt.checked_sub(1).and_then(|i| BACKOFF.get(i)) {
            tokio::time::sleep(*wait).await;
        }
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(target, client, d)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                metrics.notify_failures(&target.label, 1);
                tracing::warn!(target = %target.label, delivery = d.event_id, try_ = attempt + 1,
                    error = %e, "notification failed");
            }
            Err(_) => {
                metrics.notify_failures(&target.label, 1);
                tracing::warn!(target = %target.label, delivery = d.event_id, try_ = attempt + 1,
                    "notification timed out");
            }
        }
    }
    tracing::error!(target = %target.label, delivery = d.event_id, tries = ATTEMPTS,
        "notification given up");
}

async fn post(target: &NotifyTarget, client: &HttpsClient, d: &Delivery) -> Result<(), String> {
    let mut req = http::Request::post(target.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "approval-gateway")
        .header(DELIVERY_HEADER, d.event_id.to_string());
    if let Some(secret) = &target.secret {
        req = req.header(SIGNATURE_HEADER, signature(secret, &d.body));
    }
    let req = req
        .body(Full::new(d.body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Drop the body unread: the connection is closed rather than reused, which is fine here.
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", status.as_u16()))
    }
}

/// `sha256=<lowercase hex HMAC-SHA256 of body>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook_body(event: &'static str, approval: &Approval) -> Bytes {
    let body = WebhookBody { event, approval };
    // Serialising plain data into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The inbox link of an approval.
pub(crate) fn link(public_admin_url: &str, approval: &Approval) -> String {
    format!("{public_admin_url}/#/approvals/{}", approval.id)
}

/// A Slack incoming-webhook body: `text` (also the fallback of notifications on phones).
fn slack_body(kind: EventKind, a: &Approval, base: &str, now: DateTime<Utc>) -> Bytes {
    let text = slack_text(kind, a, base, now);
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default())
}

pub(crate) fn slack_text(kind: EventKind, a: &Approval, base: &str, now: DateTime<Utc>) -> String {
    let what = match kind {
        EventKind::Requested => "Approval requested",
        EventKind::Approved => "Approved",
        EventKind::Denied => "Denied",
        EventKind::Bypassed => "Approved by break-glass bypass",
        EventKind::Consumed => "Approval used: request forwarded",
        EventKind::Expired => "Approval expired",
        EventKind::Withdrawn => "Approval withdrawn",
        _ => "Approval updated",
    };
    let by = match kind {
        EventKind::Approved | EventKind::Denied | EventKind::Bypassed => a
            .decisions
            .iter()
            .rev()
            .find(|d| match kind {
                EventKind::Denied => d.decision == VoteKind::Deny,
                EventKind::Bypassed => d.decision == VoteKind::Bypass,
                _ => d.decision == VoteKind::Approve,
            })
            .map(|d| format!(" by {}", esc(&d.approver)))
            .unwrap_or_default(),
        _ => String::new(),
    };
    format!(
        "{what}{by}: `{}` on `{}`, requested by {} {} ago: {}\n<{}|Open in the approvals inbox>",
        esc(&a.action),
        esc(&a.scope),
        esc(&a.requester),
        age(now - a.created_at),
        esc(&a.reason),
        link(base, a),
    )
}

/// Slack's three control characters.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ages_read_like_people_write_them() {
        assert_eq!(age(chrono::TimeDelta::seconds(42)), "42s");
        assert_eq!(age(chrono::TimeDelta::seconds(150)), "2m");
        assert_eq!(age(chrono::TimeDelta::seconds(3 * 3600 + 120)), "3h 2m");
        assert_eq!(age(chrono::TimeDelta::seconds(-5)), "0s");
        assert_eq!(esc("a<b>&c"), "a&lt;b&gt;&amp;c");
    }
}
