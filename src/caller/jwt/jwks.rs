//! Keys published at `jwt.jwks_url`: fetched at start, cached, refreshed on an unknown `kid`.
//!
//! Input: the URL (http or https, Mozilla roots via webpki-roots) and [`JwksTiming`]. Output: a
//! snapshot of the keys last fetched successfully ([`JwksCache::snapshot`]), which the verifier
//! searches after the keys from `hs_secret_env`/`public_key_file`/`jwks_file`.
//!
//! Behaviour:
//! - The first fetch is started when the verifier is built inside a tokio runtime (else on the
//!   first token that needs it). The gateway starts whether or not the IdP answers; until a fetch
//!   succeeds, tokens signed by URL keys are rejected (401 on gated routes).
//! - A token whose `kid` no key has (or for which no key fits) triggers [`JwksCache::refresh`]:
//!   at most one fetch per `min_interval` (default 30 s), single-flight (concurrent callers wait
//!   for the fetch in progress and do not start another), then verification is retried once.
//! - A fetch that fails (connect error, `timeout` — default 5 s —, non-2xx status, body over
//!   1 MiB, not a JWKS, no usable key) keeps the cached keys and logs a warning. A successful
//!   fetch replaces the URL keys whole, so a key the IdP withdrew stops verifying. Symmetric
//!   (`oct`) keys at the URL are ignored: a published secret verifies nothing.
//!
//! Invariants: tokens never reach this module, so they cannot be logged here; the std lock is
//! held only to swap or clone an `Arc`, never across an `.await`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::keys::{jwks_keys, Key, KeyKind};

/// Largest JWKS document accepted; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// How often the IdP may be asked, and how long one fetch may take.
#[derive(Debug, Clone, Copy)]
pub struct JwksTiming {
    /// Minimum time between the starts of two fetches (the unknown-`kid` rate limit).
    pub min_interval: Duration,
    /// Whole-fetch deadline (connect, response head and body).
    pub timeout: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a fetch left the cache as it was. Logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum JwksFetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    #[error("answered HTTP {0}")]
    Status(http::StatusCode),
    #[error("body unreadable or over {MAX_DOCUMENT_BYTES} bytes")]
    Body,
    #[error("not a usable JWKS document: {0}")]
    Document(String),
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The URL keys and the machinery to refresh them. Shared by reference from the verifier.
pub(super) struct JwksCache {
    url: http::Uri,
    client: HttpsClient,
    timing: JwksTiming,
    keys: RwLock<Arc<[Key]>>,
    /// Completed fetch attempts (successful or not); bumped after `keys` is stored, so a caller
    /// that saw an older value knows a fetch finished since.
    attempts: AtomicU64,
    /// Start of the last attempt. An async mutex on purpose: holding it across the fetch is what
    /// makes refreshes single-flight.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.url)
            .field("timing", &self.timing)
            .field("keys", &self.snapshot().len())
            .finish()
    }
}

impl JwksCache {
    /// Parse the URL and build the client; no IO happens here.
    pub(super) fn new(url: &str, timing: JwksTiming) -> Result<Self, String> {
        let bad = |why: &str| format!("jwt.jwks_url {url:?} {why}");
        let url: http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
            return Err(bad("must be an http:// or https:// URL"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| bad(&format!("cannot set up TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timing,
            keys: RwLock::new(Arc::from(Vec::new())),
            attempts: AtomicU64::new(0),
            last_attempt: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys of the last successful fetch (empty before one).
    pub(super) fn snapshot(&self) -> Arc<[Key]> {
        // A poisoned lock still holds a whole `Arc`: the writer only ever assigns one.
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Completed fetch attempts; pass the value seen before [`Self::snapshot`] to [`Self::refresh`].
    pub(super) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// Fetch now unless a fetch completed since `seen` (the caller's snapshot is already stale
    /// news) or one started less than `min_interval` ago. Concurrent callers queue on the mutex
    /// and, finding `attempts` moved on, return without fetching again.
    pub(super) async fn refresh(&self, seen: u64) {
        let mut last = self.last_attempt.lock().await;
        if self.attempts() != seen {
            return;
        }
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.timing.min_interval) {
            tracing::debug!(url = %self.url, "JWKS refresh skipped: rate limited");
            return;
        }
        *last = Some(now);
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::from(keys);
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS fetch failed; keeping cached keys");
            }
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }

    /// The start-up fetch: a no-op when another fetch already happened.
    pub(super) async fn prefetch(&self) {
        self.refresh(0).await;
    }

    async fn fetch(&self) -> Result<Vec<Key>, JwksFetchError> {
        let timeout = self.timing.timeout;
        tokio::time::timeout(timeout, self.fetch_body())
            .await
            .map_err(|_| JwksFetchError::Timeout(timeout))?
            .and_then(|body| parse(&body))
    }

    async fn fetch_body(&self) -> Result<Bytes, JwksFetchError> {
        let req = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| JwksFetchError::Document(e.to_string()))?;
        let resp = self.client.request(req).await?;
        if !resp.status().is_success() {
            return Err(JwksFetchError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES);
        Ok(body
            .collect()
            .await
            .map_err(|_| JwksFetchError::Body)?
            .to_bytes())
    }
}

/// The usable keys of a JWKS document. Individual bad entries are logged and skipped (one odd
/// key must not hide the others); a document with none left is an error, so a broken IdP answer
/// cannot empty the cache.
fn parse(body: &[u8]) -> Result<Vec<Key>, JwksFetchError> {
    let json = std::str::from_utf8(body).map_err(|_| JwksFetchError::Body)?;
    let mut problems = Vec::new();
    let mut keys = jwks_keys(json, "jwt.jwks_url", &mut problems);
    // A symmetric key served over HTTP is no secret: anyone who can read it could mint tokens.
    keys.retain(|k| {
        let symmetric = k.kind == KeyKind::Hmac;
        if symmetric {
            problems.push(format!("jwt.jwks_url key {:?} is symmetric (oct)", k.kid));
        }
        !symmetric
    });
    if keys.is_empty() {
        let why = problems
            .first()
            .cloned()
            .unwrap_or_else(|| "no keys".into());
        return Err(JwksFetchError::Document(why));
    }
    for problem in problems {
        tracing::warn!(%problem, "JWKS key skipped");
    }
    Ok(keys)
}

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod tests;
