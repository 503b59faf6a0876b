//! `Prefer: wait=N` (RFC 7240) on a gated request: how long it asked to be held for a decision
//! (clamped to `[gate] max_wait`), the `Preference-Applied` answer, and the gauge of requests
//! held. The hold itself is `hold.rs`; the wait is the store's (`Store::wait_for_decision`).
//!
//! Pure but for the gauge: inputs are the request's `Prefer` headers and `max_wait`.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use prometheus_client::metrics::gauge::Gauge;

pub(super) static PREFER: HeaderName = HeaderName::from_static("prefer");
pub(super) static PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The wait a request asked for, clamped to `max`; `None` when it asked for none (or zero), the
/// preference is malformed, or waiting is off (`max` is zero). Per RFC 7240 §2 only the first
/// `wait` preference counts, and an unparsable one is ignored.
pub(super) fn requested(headers: &HeaderMap, max: Duration) -> Option<Duration> {
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
pub(super) fn applied(wait: Duration) -> HeaderValue {
    // Digits are always a valid header value.
    HeaderValue::try_from(format!("wait={}", wait.as_secs()))
        .unwrap_or(HeaderValue::from_static("wait"))
}

/// Counts a waiting request in the gauge for exactly as long as it waits, even when the client
/// hangs up and the future is dropped mid-wait.
pub(super) struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    pub(super) fn enter(g: &'a Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
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
