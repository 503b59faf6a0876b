//! Waiting for a decision (RFC 7240 `Prefer: wait=N`) on a gated request the store answered
//! Pending: hold the request open until its approval leaves `pending` or N seconds pass.
//!
//! Inputs: the request's `Prefer` headers and `[gate] max_wait`; the store's live event feed.
//! Output: how the wait ended ([`Waited`]); `gated.rs` turns that into a forward, a problem or the
//! normal 202. Invariants: the feed is subscribed BEFORE the approval's status is re-read, so a
//! decision committed in between is never missed; nothing polls; the wait itself writes nothing,
//! so a client that hangs up (hyper drops the handler future) leaves the approval pending.

use std::time::Duration;

use chrono::Utc;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::store::{ApprovalId, Status, Store, StoreError};

pub static PREFER: HeaderName = HeaderName::from_static("prefer");
pub static PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The wait a request asked for, clamped to `max`; `None` when it asked for none (or zero), the
/// preference is malformed, or waiting is off (`max` is zero). Per RFC 7240 §2 only the first
/// `wait` preference counts, and an unparsable one is ignored.
pub fn requested(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    let secs = headers
        .get_all(&PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|pref| {
            // `wait=10; param` — parameters after `;` do not concern `wait`.
            let head = pref.split(';').next().unwrap_or("");
            let (name, value) = head.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').to_owned())
        })?;
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Any number of digits is a valid delta-seconds; one too large to parse is just "long".
    let asked = secs.parse::<u64>().map_or(u64::MAX, |n| n);
    let wait = Duration::from_secs(asked).min(max);
    (!wait.is_zero()).then_some(wait)
}

/// `Preference-Applied: wait=N` for a wait of `wait`.
pub fn applied(wait: Duration) -> HeaderValue {
    // Digits are always a valid header value.
    HeaderValue::try_from(format!("wait={}", wait.as_secs()))
        .unwrap_or(HeaderValue::from_static("wait"))
}

/// How a wait ended.
#[derive(Debug)]
pub enum Waited {
    /// The approval left `pending`: approved, denied, withdrawn, expired or consumed.
    Settled(Status),
    TimedOut,
    Failed(StoreError),
}

/// Counts a waiting request in the gauge for exactly as long as it waits, even when the client
/// hangs up and the future is dropped mid-wait.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn enter(g: &'a Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Hold until approval `id` leaves `pending` (on any replica sharing the store) or `limit` passes.
pub async fn until_settled(
    store: &Store,
    gauge: &Gauge,
    id: ApprovalId,
    limit: Duration,
) -> Waited {
    let _waiting = Waiting::enter(gauge);
    let deadline = Instant::now() + limit;
    // Subscribe first: every event committed after this point reaches `feed`, so the re-read
    // below plus the feed cover every decision, whenever it lands.
    let mut feed = store.subscribe();
    loop {
        match store.backend().get(id, Utc::now()).await {
            Err(e) => return Waited::Failed(e),
            Ok(None) => {
                return Waited::Failed(StoreError::Corrupt(format!("approval {id} vanished")))
            }
            Ok(Some(a)) if a.status != Status::Pending => return Waited::Settled(a.status),
            Ok(Some(_)) => {}
        }
        // Sleep until an event about this approval arrives (then re-read: the event alone does
        // not say whether a vote reached the quorum) or until the deadline.
        loop {
            match tokio::time::timeout_at(deadline, feed.recv()).await {
                Err(_) => return Waited::TimedOut,
                Ok(Ok(ev)) if ev.approval_id == id => break,
                Ok(Ok(_)) => {}
                // Events were dropped; ours may be among them: re-read.
                Ok(Err(RecvError::Lagged(_))) => break,
                // The store outlives every request, so the feed cannot close while we hold it;
                // if it ever did, waiting out the deadline would be all that is left.
                Ok(Err(RecvError::Closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    return Waited::TimedOut;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&PREFER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn prefer_wait_is_parsed_clamped_or_ignored() {
        let max = Duration::from_secs(60);
        let s = |n| Some(Duration::from_secs(n));
        let cases: &[(&[&str], Option<Duration>)] = &[
            (&[], None),
            (&["wait=10"], s(10)),
            (&["WAIT = 7"], s(7)),
            (&["respond-async, wait=5"], s(5)),
            (&["handling=lenient", "wait=3"], s(3)),
            (&["wait=\"4\""], s(4)),
            (&["wait=9; foo=bar"], s(9)),
            (&["wait=600"], s(60)),
            (&["wait=99999999999999999999999"], s(60)),
            (&["wait=0"], None),
            (&["wait=-1"], None),
            (&["wait=1.5"], None),
            (&["wait="], None),
            (&["wait"], None),
            (&["wait=abc, wait=5"], None),
            (&["wait=2, wait=5"], s(2)),
            (&["waiting=5"], None),
        ];
        for (values, want) in cases {
            assert_eq!(requested(&prefer(values), max), *want, "{values:?}");
        }
        assert_eq!(requested(&prefer(&["wait=5"]), Duration::ZERO), None);
    }

    #[test]
    fn preference_applied_names_the_wait() {
        assert_eq!(applied(Duration::from_secs(30)), "wait=30");
    }
}
