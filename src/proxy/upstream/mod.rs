//! The upstream client: send a request upstream and stream the answer back, through one entry
//! point, `Upstream::send`. Nothing here knows the gate, the store or the proxy above it.
//!
//! ```text
//! send ─▶ headers::prepare_request ─┬─ no body, no upgrade ─▶ Hop::write_head ─▶ h1 (hand-written)
//!                                   └─ body or upgrade ─────▶ Hop::apply ──────▶ streamed (hyper)
//!         both on pool.rs's per-shard idle connections, under timer.rs's request timeout
//! ```
//!
//! - `headers.rs`: the header rules, once for both send paths;
//! - `h1.rs`: the hand-written HTTP/1.1 client (requests without a body);
//! - `streamed.rs`: hyper's client (requests with a body, upgrades and their tunnels);
//! - `pool.rs`: keep-alive connections of both kinds; `body.rs`: the body type of both legs;
//! - `timer.rs`: the coarse per-shard clock; `shard.rs`: the per-shard state they live in;
//! - `error.rs`: what can go wrong here (`UpstreamError`; `proxy/error.rs` maps it to statuses).
//!
//! Input: the downstream request (its parts reused in place) and the downstream connection's
//! facts. Output: the upstream's response with hop-by-hop headers removed, or an
//! `UpstreamError`. Invariants: the path and query reach the upstream byte for byte (never
//! decoded or re-encoded); `Host` is kept as the client sent it; bodies stream both ways, never
//! buffered; the request timeout bounds the wait for the response head only (on `timer.rs`'s
//! coarse clock: it fires up to 100 ms late).

pub(crate) mod body;
mod error;
pub mod h1;
mod headers;
pub mod pool;
mod shard;
mod streamed;
pub(crate) mod timer;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::HeaderValue;
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri};
use http_body::Body as _;

use self::body::ProxyBody;
use self::h1::Resend;
use self::headers::Hop;
use self::pool::Pool;
use crate::config::BodyTimeouts;
use crate::metrics::Metrics;

pub(crate) use self::error::UpstreamError;
pub(crate) use self::headers::APPROVAL_ID;

/// Facts about the downstream connection, computed once per connection.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    pub(crate) addr: SocketAddr,
    /// The peer IP as a header value, built once per connection for `X-Forwarded-For`.
    ip: HeaderValue,
}

impl Downstream {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_canonical().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self { addr, ip }
    }
}

/// The upstream base URL is not usable (config validation should have caught it).
#[derive(Debug, thiserror::Error)]
#[error("upstream url `{0}` needs an http scheme and an authority")]
pub struct UpstreamUrlError(pub(crate) String);

/// The upstream: a pool of keep-alive connections and the base URL's parts.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Pool,
    /// The header rules' upstream side: the default `Host`, the trusted front proxies.
    hop: Hop,
    /// Base path prefix without a trailing `/`; empty for none.
    prefix: Bytes,
    request_timeout: Duration,
    body_timeouts: BodyTimeouts,
}

impl Upstream {
    /// The upstream `[upstream]` configures: its URL's authority and base path, the connect and
    /// request timeouts. Fails when the URL is not `http://` with an authority.
    pub fn new(cfg: &crate::config::Upstream) -> Result<Self, UpstreamUrlError> {
        let bad = || UpstreamUrlError(cfg.url.to_string());
        cfg.url
            .scheme()
            .filter(|s| *s == &Scheme::HTTP)
            .ok_or_else(bad)?;
        let authority = cfg.url.authority().ok_or_else(bad)?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
        let prefix = cfg.url.path().trim_end_matches('/');
        Ok(Self {
            pool: Pool::new(addr, cfg.connect_timeout),
            hop: Hop {
                host,
                trusted_proxies: cfg.trusted_proxies.clone().into(),
            },
            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
            request_timeout: cfg.request_timeout,
            body_timeouts: BodyTimeouts::default(),
        })
    }

    /// The request-body timeouts (`[listen]`; 30 s each until set).
    pub(crate) fn with_body_timeouts(mut self, timeouts: BodyTimeouts) -> Self {
        self.body_timeouts = timeouts;
        self
    }

    pub(crate) fn body_timeouts(&self) -> BodyTimeouts {
        self.body_timeouts
    }

    /// Send `req` upstream; returns the response to relay. Records the time to the response
    /// head and upstream errors in `metrics`. `approval`: the id of the approval this request
    /// consumed, sent as `Approval-Id` (a client-sent one is always removed). Such a request is
    /// sent exactly once ([`Resend::Never`]), on a new connection: one the pool kept may have
    /// been closed by the upstream meanwhile, and it could not be retried. When that one send
    /// fails after the request went out, its fate is unknown and the caller gets the error.
    pub(crate) async fn send(
        &self,
        mut req: Request<ProxyBody>,
        down: &Downstream,
        metrics: &Metrics,
        approval: Option<&HeaderValue>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        if req.method() == Method::CONNECT {
            return Err(UpstreamError::BadRequest("CONNECT is not supported".into()));
        }
        let upgrade = headers::prepare_request(&mut req);
        let resend = match approval {
            None => Resend::IfUnprocessed,
            Some(id) => {
                req.headers_mut().insert(APPROVAL_ID.clone(), id.clone());
                Resend::Never
            }
        };
        *req.uri_mut() = self.upstream_uri(req.uri())?;
        if upgrade.is_none() && req.body().is_end_stream() {
            // The common case: no body, no upgrade. The hand-written client (`h1.rs`).
            let (head, _) = req.into_parts();
            // Its response comes without hop-by-hop fields (dropped as it is parsed).
            return self
                .timed(metrics, |started| {
                    self.send_bodiless(&head, down, started, resend)
                })
                .await;
        }
        streamed::send(self, req, down, metrics, upgrade, resend).await
    }

    /// Run one send under the request timeout (it bounds the wait for the response head),
    /// recording its duration and any upstream error in `metrics`.
    async fn timed<T, F>(
        &self,
        metrics: &Metrics,
        send: impl FnOnce(Instant) -> F,
    ) -> Result<T, UpstreamError>
    where
        F: std::future::Future<Output = Result<T, UpstreamError>>,
    {
        let started = timer::now();
        let result = timer::timeout(started, self.request_timeout, send(started)).await;
        metrics
            .upstream_duration
            .observe((timer::now() - started).as_secs_f64());
        result
            .unwrap_or(Err(UpstreamError::Timeout))
            .inspect_err(|e| {
                if let Some(kind) = e.metric_kind() {
                    metrics.upstream_error(kind);
                }
            })
    }

    /// Send a request without a body with the hand-written client, on an idle pooled
    /// connection, else a new one; retried once on a new connection when `h1` says it may be.
    /// With [`Resend::Never`]: on a new connection, once.
    async fn send_bodiless(
        &self,
        head: &http::request::Parts,
        down: &Downstream,
        now: Instant,
        resend: Resend,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let encode = |buf: &mut Vec<u8>| self.hop.write_head(buf, head, down);
        let home = self.pool.home();
        let pooled = match resend {
            Resend::IfUnprocessed => self.pool.take_raw(now),
            Resend::Never => None,
        };
        if let Some(conn) = pooled {
            match h1::round_trip(conn, &head.method, encode, resend, home).await {
                Ok(resp) => return Ok(resp),
                Err(failed) if failed.retry => {
                    tracing::debug!(error = %failed.error, "pooled upstream connection failed; retrying on a new one");
                }
                Err(failed) => return Err(UpstreamError::Response(failed.error)),
            }
        }
        let conn = self
            .pool
            .connect_raw()
            .await
            .map_err(UpstreamError::Connect)?;
        h1::round_trip(conn, &head.method, encode, Resend::Never, home)
            .await
            .map_err(|failed| UpstreamError::Response(failed.error))
    }

    /// Origin form for the upstream: the base path prefix + the request's path and query, as
    /// sent (the pooled connections are to the upstream already, so no scheme or authority).
    fn upstream_uri(&self, original: &Uri) -> Result<Uri, UpstreamError> {
        let Some(pq) = original.path_and_query() else {
            return Err(UpstreamError::BadRequest(
                "the request target has no path".into(),
            ));
        };
        let pq = if self.prefix.is_empty() {
            pq.clone()
        } else {
            let mut buf = BytesMut::with_capacity(self.prefix.len() + pq.as_str().len());
            buf.put_slice(&self.prefix);
            buf.put_slice(pq.as_str().as_bytes());
            PathAndQuery::from_maybe_shared(buf.freeze())
                .map_err(|_| UpstreamError::BadRequest("the request target is invalid".into()))?
        };
        Ok(Uri::from(pq))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An upstream at `url` with 1 s timeouts and no trusted proxies.
    pub(super) fn upstream(url: &str) -> Upstream {
        let cfg = crate::config::Upstream {
            url: url.parse().unwrap(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            trusted_proxies: Vec::new(),
        };
        Upstream::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn uri_keeps_path_and_query_bytes_and_adds_the_prefix() {
        let raw = "/a/%2F/%7e//../b?x=%20&y";
        let up = upstream("http://127.0.0.1:1");
        assert_eq!(
            up.upstream_uri(&raw.parse().unwrap()).unwrap().to_string(),
            raw
        );
        let up = upstream("http://h:2/base/");
        assert_eq!(
            up.upstream_uri(&format!("http://client{raw}").parse().unwrap())
                .unwrap()
                .to_string(),
            format!("/base{raw}")
        );
        assert!(Upstream::new(&crate::config::Upstream {
            url: "/only/path".parse().unwrap(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            trusted_proxies: Vec::new(),
        })
        .is_err());
    }
}
