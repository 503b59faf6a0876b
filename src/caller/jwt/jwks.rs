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
pub(crate) struct JwksTiming {
    /// Minimum time between the starts of two fetches (the unknown-`kid` rate limit).
    pub(crate) min_interval: Duration,
    /// Whole-fetch deadline (connect, response head and body).
    pub(crate) timeout: Duration,
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
pub(super) enum JwksFetchError {
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
mod tests {
    //! `jwt.jwks_url` against a fake IdP (a hyper server on port 0 that counts its requests): the
    //! start-up fetch, rotation, the rate limit, and an IdP that is down, hung or answers garbage.
    //! Synchronisation waits on the request counter, never on sleeps.

    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::future::join_all;
    use http_body_util::Full;
    use hyper::{service::service_fn, Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;
    use tokio::sync::watch;

    use super::super::tests::settings;
    use super::{JwksCache, JwksTiming};
    use crate::caller::{CallerError, Callers, JwtSettings, JwtVerifier};

    const NOW: u64 = 1_700_000_000;
    const RSA1_PRIV: &[u8] = include_bytes!("../../../tests/fixtures/keys/rsa_private.pem");
    const RSA2_PRIV: &[u8] = include_bytes!("../../../tests/fixtures/keys/rsa2_private.pem");
    const JWKS: &str = include_str!("../../../tests/fixtures/keys/jwks.json");
    const JWKS_ROTATED: &str = include_str!("../../../tests/fixtures/keys/jwks_rotated.json");
    const NO_KEY: Result<(), CallerError> = Err(CallerError::Rejected("no key for token"));

    /// What the fake IdP answers next.
    #[derive(Clone, Copy)]
    enum Answer {
        Jwks(&'static str),
        Status(StatusCode),
        Body(&'static str),
        Hang,
    }

    struct FakeIdp {
        addr: SocketAddr,
        answer: Arc<Mutex<Answer>>,
        hits: watch::Receiver<usize>,
    }

    impl FakeIdp {
        async fn start(answer: Answer) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let answer = Arc::new(Mutex::new(answer));
            let (hits_tx, hits) = watch::channel(0);
            let hits_tx = Arc::new(hits_tx);
            let shared = Arc::clone(&answer);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (answer, hits_tx) = (Arc::clone(&shared), Arc::clone(&hits_tx));
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        hits_tx.send_modify(|n| *n += 1);
                        let answer = *answer.lock().expect("answer");
                        respond(answer)
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc),
                    );
                }
            });
            Self { addr, answer, hits }
        }

        fn set(&self, answer: Answer) {
            *self.answer.lock().expect("answer") = answer;
        }

        fn hits(&self) -> usize {
            *self.hits.borrow()
        }

        async fn wait_hits(&self, n: usize) {
            let mut rx = self.hits.clone();
            rx.wait_for(|h| *h >= n).await.expect("idp alive");
        }

        fn settings(&self) -> JwtSettings {
            JwtSettings {
                jwks_url: Some(format!("http://{}/.well-known/jwks.json", self.addr)),
                ..settings(vec![Algorithm::RS256])
            }
        }
    }

    async fn respond(answer: Answer) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let (status, body) = match answer {
            Answer::Jwks(doc) => (StatusCode::OK, doc),
            Answer::Status(status) => (status, "{}"),
            Answer::Body(body) => (StatusCode::OK, body),
            Answer::Hang => std::future::pending().await,
        };
        let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *resp.status_mut() = status;
        Ok(resp)
    }

    fn timing(min_interval: Duration) -> JwksTiming {
        JwksTiming {
            min_interval,
            timeout: Duration::from_millis(300),
        }
    }

    fn token(private_pem: &[u8], kid: &str) -> String {
        let header = Header {
            kid: Some(kid.to_owned()),
            ..Header::new(Algorithm::RS256)
        };
        let key = EncodingKey::from_rsa_pem(private_pem).expect("rsa key");
        encode(&header, &json!({"sub": kid}), &key).expect("encode")
    }

    async fn check(v: &JwtVerifier, token: &str) -> Result<(), CallerError> {
        v.verify_with_refresh(token, NOW).await.map(|_| ())
    }

    #[tokio::test]
    async fn start_up_fetch_loads_the_keys_once() {
        let idp = FakeIdp::start(Answer::Jwks(JWKS)).await;
        let v = JwtVerifier::new(idp.settings()).expect("verifier");
        idp.wait_hits(1).await;
        // Whether or not the start-up fetch has finished, this must not start a second one.
        assert_eq!(check(&v, &token(RSA1_PRIV, "rsa-1")).await, Ok(()));
        assert!(v.verify(&token(RSA1_PRIV, "rsa-1"), NOW).is_ok(), "cached");
        assert_eq!(idp.hits(), 1);
    }

    #[tokio::test]
    async fn rotated_key_is_fetched_on_its_unknown_kid_and_accepted() {
        let idp = FakeIdp::start(Answer::Jwks(JWKS)).await;
        let v = JwtVerifier::with_jwks_timing(idp.settings(), timing(Duration::ZERO)).expect("v");
        v.prefetch().await;
        assert_eq!(idp.hits(), 1);
        let rotated = token(RSA2_PRIV, "rsa-2");
        assert_eq!(
            check(&v, &rotated).await,
            NO_KEY,
            "IdP does not publish it yet"
        );
        assert_eq!(idp.hits(), 2, "the unknown kid asked the IdP");

        idp.set(Answer::Jwks(JWKS_ROTATED));
        let callers = Callers {
            classes: Vec::new(),
            jwt: Some(v),
            sources: Vec::new(),
            subject_claim: "sub".into(),
        };
        let mut headers = http::HeaderMap::new();
        let bearer = format!("Bearer {rotated}").parse().expect("header");
        headers.insert(http::header::AUTHORIZATION, bearer);
        let caller = callers.classify(&headers, NOW).await.expect("accepted");
        assert_eq!(caller.subject.as_deref(), Some("rsa-2"));
        assert_eq!(idp.hits(), 3);
        let v = callers.jwt.as_ref().expect("verifier");
        assert_eq!(check(v, &token(RSA1_PRIV, "rsa-1")).await, Ok(()));
        assert_eq!(idp.hits(), 3, "a known kid never fetches");
    }

    #[tokio::test]
    async fn unknown_kid_flood_fetches_once_per_window() {
        let idp = FakeIdp::start(Answer::Jwks(JWKS)).await;
        let window = Duration::from_secs(3600);
        let v = JwtVerifier::with_jwks_timing(idp.settings(), timing(window)).expect("v");
        let flood: Vec<String> = (0..50)
            .map(|i| token(RSA1_PRIV, &format!("k{i}")))
            .collect();
        let results = join_all(flood.iter().map(|t| check(&v, t))).await;
        assert!(results.iter().all(|r| *r == NO_KEY), "{results:?}");
        assert_eq!(
            idp.hits(),
            1,
            "single-flight: one fetch for 50 concurrent tokens"
        );
        assert_eq!(check(&v, &token(RSA1_PRIV, "rsa-1")).await, Ok(()));

        idp.set(Answer::Jwks(JWKS_ROTATED));
        let results = join_all(flood.iter().map(|t| check(&v, t))).await;
        assert!(results.iter().all(|r| *r == NO_KEY), "{results:?}");
        let rotated = token(RSA2_PRIV, "rsa-2");
        assert_eq!(check(&v, &rotated).await, NO_KEY, "still inside the window");
        assert_eq!(idp.hits(), 1, "rate limited");
    }

    #[tokio::test]
    async fn idp_failures_keep_serving_cached_keys() {
        let idp = FakeIdp::start(Answer::Jwks(JWKS)).await;
        let v = JwtVerifier::with_jwks_timing(idp.settings(), timing(Duration::ZERO)).expect("v");
        v.prefetch().await;
        let known = token(RSA1_PRIV, "rsa-1");
        let unknown = token(RSA2_PRIV, "rsa-2");
        let failures = [
            Answer::Status(StatusCode::SERVICE_UNAVAILABLE),
            Answer::Status(StatusCode::NOT_FOUND),
            Answer::Body("<html>maintenance</html>"),
            Answer::Body(r#"{"keys": []}"#),
            Answer::Body(r#"{"keys": [{"kty": "RSA", "kid": "x"}]}"#),
            Answer::Body(r#"{"keys": [{"kty": "oct", "kid": "rsa-2", "k": "c2VjcmV0"}]}"#),
            Answer::Hang,
        ];
        for (i, answer) in failures.into_iter().enumerate() {
            idp.set(answer);
            assert_eq!(check(&v, &unknown).await, NO_KEY, "failure #{i}");
            assert_eq!(idp.hits(), i + 2, "failure #{i} was fetched");
            assert_eq!(
                check(&v, &known).await,
                Ok(()),
                "failure #{i} kept the cache"
            );
        }
    }

    #[tokio::test]
    async fn idp_down_at_start_rejects_until_a_fetch_succeeds() {
        let idp = FakeIdp::start(Answer::Status(StatusCode::BAD_GATEWAY)).await;
        let v = JwtVerifier::with_jwks_timing(idp.settings(), timing(Duration::ZERO))
            .expect("loads with the IdP down");
        v.spawn_prefetch();
        idp.wait_hits(1).await;
        let t = token(RSA1_PRIV, "rsa-1");
        assert_eq!(check(&v, &t).await, NO_KEY);

        idp.set(Answer::Jwks(JWKS));
        assert_eq!(check(&v, &t).await, Ok(()), "the first fetch that succeeds");
        assert_eq!(check(&v, &t).await, Ok(()));
        let hits = idp.hits();
        assert!((2..=3).contains(&hits), "{hits}");
    }

    #[tokio::test]
    async fn unreachable_idp_rejects_without_failing_the_load() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let s = JwtSettings {
            jwks_url: Some(format!("http://{addr}/jwks.json")),
            ..settings(vec![Algorithm::RS256])
        };
        let v = JwtVerifier::with_jwks_timing(s, timing(Duration::ZERO)).expect("loads");
        assert_eq!(check(&v, &token(RSA1_PRIV, "rsa-1")).await, NO_KEY);
    }

    #[test]
    fn https_urls_get_a_tls_client_and_other_schemes_are_refused() {
        assert!(JwksCache::new("https://idp.example/jwks.json", JwksTiming::default()).is_ok());
        assert!(JwksCache::new("http://127.0.0.1:1/jwks.json", JwksTiming::default()).is_ok());
        assert!(JwksCache::new("file:///etc/jwks.json", JwksTiming::default()).is_err());
        assert!(JwksCache::new("not a url", JwksTiming::default()).is_err());
    }
}
