//! The `http` token source: a credential the gateway cannot check itself (a browser session
//! cookie) is recognised by asking an HTTP endpoint, the pattern of Ory Oathkeeper's
//! `cookie_session` authenticator. For Molecule it is the control plane's tenant-member check
//! (`GET $CP_UPSTREAM_URL/cp/auth/tenant-member?slug=…` with the request's `Cookie`), the same
//! check the workspace-server's `AdminAuth` makes.
//!
//! Input: the request's headers. Only the configured `forward_headers` are sent; a request that
//! carries none of them skips the source. Output:
//! - 200 with a JSON object whose fields satisfy the optional `when` → recognised; the object's
//!   fields plus the configured static `claims` are the caller's claims, and `subject_field`
//!   (e.g. `user_id`) is copied into the subject claim;
//! - 401 or 403 (or a 200 that fails `when`) → not recognised;
//! - anything else, a transport error or the timeout → [`CallerError::SourceUnavailable`]
//!   (503 on gated routes, fail closed).
//!
//! Answers are cached by the SHA-256 of the forwarded header names and values (never the
//! values themselves): positive answers for `cache_ttl`, negative ones for `negative_cache_ttl`,
//! errors not at all. The cache holds at most `MAX_CACHED` (10,000) entries; expired ones are
//! dropped when it fills, and if none has expired it starts over (a flood of distinct cookies
//! costs requests to the endpoint, never unbounded memory).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderName;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{CallerError, When};

/// Most cached answers kept at once.
pub(super) const MAX_CACHED: usize = 10_000;
/// Largest answer body read from the endpoint.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// What a `kind = "http"` source is configured with (everything but the client and cache).
#[derive(Debug, Clone)]
pub struct HttpSourceSettings {
    /// The endpoint asked, with `GET` (`url_env` or `url`).
    pub url: http::Uri,
    /// The request headers sent to it; a request with none of them skips the source.
    pub forward_headers: Vec<HeaderName>,
    /// Bound on one ask, connection included (default 2 s); past it, the source is unavailable.
    pub timeout: Duration,
    /// How long a recognised answer is reused (default 30 s).
    pub cache_ttl: Duration,
    /// How long a not-recognised answer is reused (default 5 s).
    pub negative_cache_ttl: Duration,
    /// Must hold on the answer's fields for the credential to count as recognised.
    pub when: Option<When>,
    /// The answer's field copied into `subject_claim`.
    pub subject_field: Option<String>,
    /// The claim the subject is stored under (the `[jwt] subject_claim`, default `sub`).
    pub subject_claim: String,
    /// Static claims added to the answer's fields.
    pub claims: Map<String, Value>,
}

/// A compiled `kind = "http"` source: settings, a client and the answer cache.
pub struct HttpSource {
    settings: HttpSourceSettings,
    client: HttpsClient,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

#[derive(Clone)]
struct Cached {
    until: Instant,
    claims: Option<Arc<Map<String, Value>>>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// Build the client; no IO happens here.
    pub fn new(settings: HttpSourceSettings) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            settings,
            client: Client::builder(TokioExecutor::new()).build(connector),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Does the request carry any of the headers this source forwards (e.g. `Cookie`)?
    pub(super) fn forwards_any(&self, headers: &http::HeaderMap) -> bool {
        self.settings
            .forward_headers
            .iter()
            .any(|h| headers.contains_key(h))
    }

    /// Recognise the request's session, if it carries one of the forwarded headers.
    pub async fn lookup(
        &self,
        name: &Arc<str>,
        headers: &http::HeaderMap,
    ) -> Result<Option<Map<String, Value>>, CallerError> {
        let forwarded: Vec<(&HeaderName, &http::HeaderValue)> = self
            .settings
            .forward_headers
            .iter()
            .flat_map(|h| headers.get_all(h).iter().map(move |v| (h, v)))
            .collect();
        if forwarded.is_empty() {
            return Ok(None);
        }
        let key = cache_key(&forwarded);
        let now = Instant::now();
        if let Some(hit) = self.cached(&key, now) {
            return Ok(hit.claims.map(|c| (*c).clone()));
        }
        let unavailable = |why: &dyn std::fmt::Display| {
            tracing::warn!(source = %name, error = %why, "session source failed");
            CallerError::SourceUnavailable(Arc::clone(name))
        };
        let answer = tokio::time::timeout(self.settings.timeout, self.ask(&forwarded))
            .await
            .map_err(|_| unavailable(&"timed out"))?
            .map_err(|e| unavailable(&e))?;
        let claims = match answer {
            Answer::Recognised(fields) => self.claims_from(fields),
            Answer::Refused => None,
        };
        let ttl = if claims.is_some() {
            self.settings.cache_ttl
        } else {
            self.settings.negative_cache_ttl
        };
        let claims = claims.map(Arc::new);
        self.remember(key, now + ttl, claims.clone());
        Ok(claims.map(|c| (*c).clone()))
    }

    fn cached(&self, key: &[u8; 32], now: Instant) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|c| c.until > now).cloned()
    }

    fn remember(&self, key: [u8; 32], until: Instant, claims: Option<Arc<Map<String, Value>>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, Cached { until, claims });
    }

    /// The answer's fields as claims, or `None` when `when` does not hold on them.
    fn claims_from(&self, mut fields: Map<String, Value>) -> Option<Map<String, Value>> {
        if let Some(when) = &self.settings.when {
            if !when.holds(&fields) {
                return None;
            }
        }
        if let Some(field) = &self.settings.subject_field {
            let subject = fields.get(field).cloned().unwrap_or(Value::Null);
            fields.insert(self.settings.subject_claim.clone(), subject);
        }
        for (k, v) in &self.settings.claims {
            fields.insert(k.clone(), v.clone());
        }
        Some(fields)
    }

    async fn ask(
        &self,
        forwarded: &[(&HeaderName, &http::HeaderValue)],
    ) -> Result<Answer, AskError> {
        let mut req = http::Request::get(self.settings.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| AskError::Answer(e.to_string()))?;
        for (name, value) in forwarded {
            req.headers_mut().append((*name).clone(), (*value).clone());
        }
        let resp = self.client.request(req).await?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => return Ok(Answer::Refused),
            other => return Err(AskError::Answer(format!("status {other}"))),
        }
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| AskError::Answer("unreadable body".into()))?
            .to_bytes();
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(fields)) => Ok(Answer::Recognised(fields)),
            _ => Err(AskError::Answer("a 200 without a JSON object".into())),
        }
    }
}

enum Answer {
    Recognised(Map<String, Value>),
    Refused,
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("transport: {0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    #[error("{0}")]
    Answer(String),
}

/// SHA-256 over the forwarded names and values, each framed by its length.
fn cache_key(forwarded: &[(&HeaderName, &http::HeaderValue)]) -> [u8; 32] {
    let mut h = Sha256::new();
    for (name, value) in forwarded {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    h.finalize().into()
}
