//! Stage 6: forward a request upstream and stream the answer back.
//!
//! Input: the downstream request (its parts reused in place) and the downstream connection's
//! facts. Output: the upstream's response with hop-by-hop headers removed, or a [`ProxyError`].
//! Invariants: the path and query reach the upstream byte for byte (never decoded or
//! re-encoded); `Host` is kept as the client sent it; bodies stream both ways, never buffered;
//! the request timeout bounds the wait for the response head only (on `timer.rs`'s coarse clock:
//! it fires up to 100 ms late).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::body::{BodyFault, ProxyBody, UpstreamBody};
use super::h1::{self, Resend};
use super::pool::Pool;
use super::respond::ProxyError;
use super::timer;
use super::APPROVAL_ID;
use crate::config::BodyTimeouts;
use crate::metrics::Metrics;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP: HeaderValue = HeaderValue::from_static("http");
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// Connection-specific fields (RFC 9110 §7.6.1, plus the proxy-auth pair and the legacy
/// `Keep-Alive`/`Proxy-Connection`, as Go's and nginx's proxies also drop them).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Facts about the downstream connection, computed once per connection.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub addr: SocketAddr,
    /// The peer IP as a header value, built once per connection for `X-Forwarded-For`.
    ip: HeaderValue,
}

impl Downstream {
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_canonical().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self { addr, ip }
    }
}

/// The upstream base URL is not usable (config validation should have caught it).
#[derive(Debug, thiserror::Error)]
#[error("upstream url `{0}` needs an http scheme and an authority")]
pub struct UpstreamUrlError(pub String);

/// The upstream: a pool of keep-alive connections and the base URL's parts.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Pool,
    /// The base URL's authority, sent as `Host` only when the client sent none.
    host: HeaderValue,
    /// Base path prefix without a trailing `/`; empty for none.
    prefix: Bytes,
    request_timeout: Duration,
    /// Peers whose `X-Forwarded-Proto` is kept (`[listen] trusted_proxies`).
    trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    body_timeouts: BodyTimeouts,
}

impl Upstream {
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
            host,
            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
            request_timeout: cfg.request_timeout,
            trusted_proxies: cfg.trusted_proxies.clone().into(),
            body_timeouts: BodyTimeouts::default(),
        })
    }

    /// The request-body timeouts (`[listen]`; 30 s each until set).
    pub fn with_body_timeouts(mut self, timeouts: BodyTimeouts) -> Self {
        self.body_timeouts = timeouts;
        self
    }

    pub fn body_timeouts(&self) -> BodyTimeouts {
        self.body_timeouts
    }

    /// The `X-Forwarded-Proto` to send: how the gateway was reached (`http`; it does not
    /// terminate TLS), or, from a trusted front proxy, the one value it sent if that is `http`
    /// or `https`. Replaced rather than appended: the workspace-server builds its external URLs
    /// from this field, and `"https, http"` breaks them.
    fn forwarded_proto(&self, headers: &HeaderMap, down: &Downstream) -> HeaderValue {
        if self.trusted_proxies.is_empty()
            || !self
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&down.addr.ip().to_canonical()))
        {
            return HTTP;
        }
        let mut sent = headers.get_all(&X_FORWARDED_PROTO).iter();
        match (sent.next(), sent.next()) {
            (Some(v), None)
                if v.as_bytes().eq_ignore_ascii_case(b"https")
                    || v.as_bytes().eq_ignore_ascii_case(b"http") =>
            {
                v.clone()
            }
            _ => HTTP,
        }
    }

    /// Send `req` upstream; returns the response to relay. Records the time to the response
    /// head and upstream errors in `metrics`. `approval`: the id of the approval this request
    /// consumed, sent as `Approval-Id` (a client-sent one is always removed). Such a request is
    /// sent exactly once ([`Resend::Never`]), on a new connection: one the pool kept may have
    /// been closed by the upstream meanwhile, and it could not be retried. When that one send
    /// fails after the request went out, its fate is unknown and the caller gets the error.
    pub async fn forward(
        &self,
        mut req: Request<ProxyBody>,
        down: &Downstream,
        metrics: &Metrics,
        approval: Option<&HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported".into()));
        }
        let upgrade = prepare_request(&mut req);
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
        let proto = self.forwarded_proto(req.headers(), down);
        append_forwarded_all(req.headers_mut(), down, proto);
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
        // A body relayed as it arrives: a stall aborts the upstream request.
        let idle = self.body_timeouts.idle;
        let mut req = req.map(|body| body.idle_after(idle));
        let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (tx, mut resp) = self
            .timed(metrics, |started| self.send(req, started, resend))
            .await?;

        strip_hop_by_hop(resp.headers_mut());
        match (upgrade, downstream_upgrade) {
            (Some(proto), Some(down_up)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                // The connection becomes the tunnel: it never goes back to the pool.
                let up_up = hyper::upgrade::on(&mut resp);
                resp.headers_mut().insert(header::CONNECTION, UPGRADE_TOKEN);
                resp.headers_mut().entry(header::UPGRADE).or_insert(proto);
                tokio::spawn(tunnel(down_up, up_up));
                Ok(resp.map(ProxyBody::Incoming))
            }
            _ => {
                let lease = self.pool.lease(tx);
                Ok(resp.map(|b| ProxyBody::Upstream(UpstreamBody::new(b, lease))))
            }
        }
    }

    /// Run one send under the request timeout (it bounds the wait for the response head),
    /// recording its duration and any upstream error in `metrics`.
    async fn timed<T, F>(
        &self,
        metrics: &Metrics,
        send: impl FnOnce(Instant) -> F,
    ) -> Result<T, ProxyError>
    where
        F: std::future::Future<Output = Result<T, ProxyError>>,
    {
        let started = timer::now();
        let result = timer::timeout(started, self.request_timeout, send(started)).await;
        metrics
            .upstream_duration
            .observe((timer::now() - started).as_secs_f64());
        result
            .unwrap_or(Err(ProxyError::UpstreamTimeout))
            .inspect_err(|e| {
                if let Some(kind) = e.upstream_kind() {
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
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let encode = |buf: &mut Vec<u8>| self.encode_head(buf, head, down);
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
                Err(failed) => return Err(ProxyError::UpstreamResponse(failed.error)),
            }
        }
        let conn = self
            .pool
            .connect_raw()
            .await
            .map_err(ProxyError::UpstreamConnect)?;
        h1::round_trip(conn, &head.method, encode, Resend::Never, home)
            .await
            .map_err(|failed| ProxyError::UpstreamResponse(failed.error))
    }

    /// The request head for the hand-written client, written straight into `buf`: the
    /// prepared fields in order, `Host` (the upstream's authority when the client named none),
    /// and this hop joined onto the `X-Forwarded-*` fields, as [`append_forwarded_all`] and the
    /// `Host` default do on the map for hyper. Writing them here spares the map its growth
    /// and rehash: three inserts into a full map were about 2k instructions per request.
    fn encode_head(&self, buf: &mut Vec<u8>, head: &http::request::Parts, down: &Downstream) {
        let target = head.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        h1::request_line(buf, &head.method, target);
        let (mut host, mut forwarded) = (None, 0u8);
        for (name, value) in &head.headers {
            let bit = forwarded_bit(name);
            if bit != 0 {
                // Written joined with ours below.
                forwarded |= bit;
                continue;
            }
            if *name == header::HOST && host.is_none() {
                // The first line, as `HeaderMap::get` (the hyper path) reads it.
                host = Some(value);
            }
            h1::field(buf, name, value.as_bytes());
        }
        if host.is_none() {
            h1::field(buf, &header::HOST, self.host.as_bytes());
        }
        let proto = self.forwarded_proto(&head.headers, down);
        let ours = [
            Some(down.ip.as_bytes()),
            Some(proto.as_bytes()),
            host.map(HeaderValue::as_bytes),
        ];
        for (i, (name, ours)) in FORWARDED.into_iter().zip(ours).enumerate() {
            if let Some(ours) = ours {
                // `X-Forwarded-Proto` (index 1) is replaced, never joined.
                let present = i != 1 && forwarded & (1 << i) != 0;
                write_forwarded(buf, &head.headers, name, present, ours);
            }
        }
        buf.extend_from_slice(b"\r\n");
    }

    /// Send `req` on an idle pooled connection, else on a new one. A pooled connection the
    /// upstream closed before the request went out is retried once on a new connection. With
    /// [`Resend::Never`]: on a new connection, once.
    async fn send(
        &self,
        req: Request<ProxyBody>,
        now: Instant,
        resend: Resend,
    ) -> Result<(SendRequest<ProxyBody>, Response<Incoming>), ProxyError> {
        let pooled = match resend {
            Resend::IfUnprocessed => self.pool.take_idle(now),
            Resend::Never => None,
        };
        let idle = match pooled {
            Some(tx) if !tx.is_ready() => Some(
                self.pool
                    .ready_or_connect(tx)
                    .await
                    .map_err(ProxyError::UpstreamConnect)?,
            ),
            idle => idle,
        };
        let req = match idle {
            Some(mut tx) => match tx.try_send_request(req).await {
                Ok(resp) => return Ok((tx, resp)),
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => return Err(classify(e.into_error())),
                },
            },
            None => req,
        };
        let mut tx = self
            .pool
            .connect()
            .await
            .map_err(ProxyError::UpstreamConnect)?;
        let resp = tx.send_request(req).await.map_err(classify)?;
        Ok((tx, resp))
    }

    /// Origin form for the upstream: the base path prefix + the request's path and query, as
    /// sent (the pooled connections are to the upstream already, so no scheme or authority).
    fn upstream_uri(&self, original: &Uri) -> Result<Uri, ProxyError> {
        let Some(pq) = original.path_and_query() else {
            return Err(ProxyError::BadRequest(
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
                .map_err(|_| ProxyError::BadRequest("the request target is invalid".into()))?
        };
        Ok(Uri::from(pq))
    }
}

/// Which side failed: the client's own body erroring (it hung up mid-upload) surfaces as a
/// hyper "user" error and is not the upstream's fault.
fn classify(e: hyper::Error) -> ProxyError {
    // hyper reports a failing request body as a user error whose cause is the body's own
    // error: the downstream connection's `hyper::Error`, or the idle timeout.
    let body_fault = e
        .is_user()
        .then(|| std::error::Error::source(&e))
        .flatten()
        .and_then(|cause| cause.downcast_ref::<BodyFault>());
    match body_fault {
        Some(BodyFault::Hyper(_)) => {
            tracing::debug!(error = %e, "client aborted its request body");
            ProxyError::ClientAborted
        }
        Some(BodyFault::Idle) => {
            tracing::debug!("client's request body stalled; upstream request aborted");
            ProxyError::BodyTimeout
        }
        _ => ProxyError::UpstreamProtocol(e),
    }
}

/// Rewrite the request's headers in place for the upstream: hop-by-hop fields and a client-sent
/// `Approval-Id` removed (only the gateway sets it, on a request that consumed an approval), `Host`
/// taken from an absolute-form target when the client sent none, HTTP/1.1. Returns the
/// `Upgrade` value when the client asks for a protocol upgrade (kept on the upstream request).
/// The `X-Forwarded-*` fields are added by the sender: [`append_forwarded_all`] on the map
/// for hyper, [`Upstream::encode_head`] as it writes the head for the hand-written client.
fn prepare_request(req: &mut Request<ProxyBody>) -> Option<HeaderValue> {
    let headers = req.headers_mut();
    let upgrade = if connection_has(headers, "upgrade") {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip(headers, true);
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, UPGRADE_TOKEN);
        headers.insert(header::UPGRADE, proto.clone());
    }
    if !req.headers().contains_key(header::HOST) {
        // HTTP/2-style or absolute-form request without Host: keep the authority the client named.
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    // The pooled upstream connections speak HTTP/1.1 whatever the client spoke.
    *req.version_mut() = Version::HTTP_11;
    upgrade
}

/// Append this hop to `X-Forwarded-For` and (when the client named a host) `-Host`; set
/// `X-Forwarded-Proto` to `proto` ([`Upstream::forwarded_proto`]), replacing the client's.
fn append_forwarded_all(headers: &mut HeaderMap, down: &Downstream, proto: HeaderValue) {
    append_forwarded(headers, X_FORWARDED_FOR, &down.ip);
    headers.insert(X_FORWARDED_PROTO, proto);
    if let Some(host) = headers.get(header::HOST).cloned() {
        append_forwarded(headers, X_FORWARDED_HOST, &host);
    }
}

/// The fields this hop appends to, in the order the hand-written head writes them.
const FORWARDED: [HeaderName; 3] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST];

/// Which [`FORWARDED`] field a name is, as a bit (`1 << index`; 0 for any other name).
fn forwarded_bit(name: &HeaderName) -> u8 {
    FORWARDED
        .iter()
        .position(|f| f == name)
        .map_or(0, |i| 1 << i)
}

/// Write `name: <the client's values>, ours` as one line (as [`append_forwarded`] joins them).
fn write_forwarded(
    buf: &mut Vec<u8>,
    headers: &HeaderMap,
    name: HeaderName,
    present: bool,
    ours: &[u8],
) {
    buf.extend_from_slice(name.as_str().as_bytes());
    buf.extend_from_slice(b": ");
    if present {
        for v in headers.get_all(&name) {
            buf.extend_from_slice(v.as_bytes());
            buf.extend_from_slice(b", ");
        }
    }
    buf.extend_from_slice(ours);
    buf.extend_from_slice(b"\r\n");
}

/// Whether a `Connection` header lists `token` (case-insensitive).
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Remove connection-specific fields in place: the fixed list and every field `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// The bit of `Approval-Id` in [`strip`]'s set: bit 9, after the nine [`HOP_BY_HOP`] bits.
const APPROVAL_ID_BIT: u16 = 1 << 9;

/// [`strip_hop_by_hop`], and with `approval_id` also `Approval-Id`: the one header-rules place
/// both send paths (hyper's and `h1.rs`) go through, so a client can never name an approval to
/// the upstream; the gateway sets that field itself after this, on consumed requests only.
fn strip(headers: &mut HeaderMap, approval_id: bool) {
    // One pass of cheap name comparisons (standard names compare as enum tags, a custom name
    // against a standard one fails on the tag) records which fields are present; most messages
    // carry none or only `Connection`, so this beats hashing and probing for each name.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if approval_id && *name == APPROVAL_ID {
            present |= APPROVAL_ID_BIT;
        }
    }
    if present == 0 {
        return;
    }
    // `HOP_BY_HOP[0]` is `Connection`: drop the fields it names. The usual tokens (`keep-alive`,
    // `close`, `upgrade`) are on the fixed list or name no field, so the list of other names is
    // only built when there are some.
    if present & 1 != 0 && connection_tokens(headers).any(names_other_field) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| names_other_field(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.into_iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & APPROVAL_ID_BIT != 0 {
        headers.remove(&APPROVAL_ID);
    }
}

/// The comma-separated tokens of every `Connection` line, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Whether `name` is on the fixed hop-by-hop list (for `h1.rs`, which drops them as it parses).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Whether a `Connection` token names a field beyond the fixed hop-by-hop list.
pub(super) fn names_other_field(token: &[u8]) -> bool {
    !token.is_empty()
        && !token.eq_ignore_ascii_case(b"close")
        && !HOP_BY_HOP
            .iter()
            .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
}

/// Add `ours` to a list header: insert it when absent, else join with `, ` after the existing
/// values (one line, since some upstreams read only the first line).
fn append_forwarded(headers: &mut HeaderMap, name: HeaderName, ours: &HeaderValue) {
    // One lookup: `entry` hashes the name once for both the check and the insert.
    let mut entry = match headers.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(ours.clone());
            return;
        }
        header::Entry::Occupied(o) => o,
    };
    let mut buf = BytesMut::with_capacity(64);
    for v in entry.iter() {
        buf.put_slice(v.as_bytes());
        buf.put_slice(b", ");
    }
    buf.put_slice(ours.as_bytes());
    if let Ok(joined) = HeaderValue::from_maybe_shared(buf.freeze()) {
        // `insert` replaces every existing line with the one joined line.
        entry.insert(joined);
    }
}

/// Relay bytes between the upgraded downstream and upstream connections until either closes.
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection closed");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_list_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        let mut h = map(&[
            ("connection", "Keep-Alive"),
            ("connection", " upgrade ,, x-other"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("x-other", "1"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = map(&[("x-kept", "yes"), ("host", "h")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[test]
    fn forwarded_values_join_existing_ones() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        append_forwarded(
            &mut h,
            X_FORWARDED_FOR,
            &HeaderValue::from_static("3.3.3.3"),
        );
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 3.3.3.3");
        let mut h = HeaderMap::new();
        append_forwarded(
            &mut h,
            X_FORWARDED_FOR,
            &HeaderValue::from_static("3.3.3.3"),
        );
        assert_eq!(h[X_FORWARDED_FOR], "3.3.3.3");
    }

    fn upstream(url: &str) -> Upstream {
        let cfg = crate::config::Upstream {
            url: url.parse().unwrap(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            trusted_proxies: Vec::new(),
        };
        Upstream::new(&cfg).unwrap()
    }

    /// `X-Forwarded-Proto` is how the gateway was reached, unless a trusted front proxy sent
    /// exactly one `http`/`https`.
    #[test]
    fn forwarded_proto_is_replaced_unless_a_trusted_proxy_sent_it() {
        let mut up = upstream("http://10.0.0.1:8081");
        let from = |ip: &str| Downstream::new(format!("{ip}:5555").parse().unwrap());
        let sent = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(X_FORWARDED_PROTO, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(
            up.forwarded_proto(&sent(&["https"]), &from("192.0.2.7")),
            "http"
        );
        up.trusted_proxies = vec!["192.0.2.0/24".parse().unwrap()].into();
        assert_eq!(
            up.forwarded_proto(&sent(&["https"]), &from("192.0.2.7")),
            "https"
        );
        assert_eq!(
            up.forwarded_proto(&sent(&["https"]), &from("198.51.100.1")),
            "http"
        );
        assert_eq!(
            up.forwarded_proto(&sent(&["https", "http"]), &from("192.0.2.7")),
            "http"
        );
        assert_eq!(
            up.forwarded_proto(&sent(&["gopher"]), &from("192.0.2.7")),
            "http"
        );
        assert_eq!(up.forwarded_proto(&sent(&[]), &from("192.0.2.7")), "http");
    }

    #[test]
    fn the_bodiless_head_joins_forwarded_fields_and_defaults_host() {
        let up = upstream("http://10.0.0.1:8081");
        let down = Downstream::new("192.0.2.7:5555".parse().unwrap());
        let (mut head, ()) = Request::delete("/w/1?x=%2F")
            .header("x-forwarded-for", "203.0.113.9")
            .header("accept", "*/*")
            .header("x-forwarded-for", "198.51.100.1")
            .body(())
            .unwrap()
            .into_parts();
        let encode = |head: &http::request::Parts| {
            let mut buf = Vec::new();
            up.encode_head(&mut buf, head, &down);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            encode(&head),
            "DELETE /w/1?x=%2F HTTP/1.1\r\naccept: */*\r\nhost: 10.0.0.1:8081\r\n\
             x-forwarded-for: 203.0.113.9, 198.51.100.1, 192.0.2.7\r\n\
             x-forwarded-proto: http\r\n\r\n"
        );
        head.headers
            .insert(header::HOST, HeaderValue::from_static("api.example"));
        head.headers
            .insert(X_FORWARDED_HOST, HeaderValue::from_static("edge.example"));
        assert_eq!(
            encode(&head),
            "DELETE /w/1?x=%2F HTTP/1.1\r\naccept: */*\r\nhost: api.example\r\n\
             x-forwarded-for: 203.0.113.9, 198.51.100.1, 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: edge.example, api.example\r\n\r\n"
        );
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
