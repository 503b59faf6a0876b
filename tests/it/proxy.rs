//! The data plane end to end: a real proxy listener in front of the recording fake upstream.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use approval_gateway::metrics::Metrics;
use approval_gateway::proxy::{self, Proxy, Upstream};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::support::upstream::{FakeUpstream, Reply};

type Body = BoxBody<Bytes, Infallible>;

struct Gateway {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// The flag is off: a transparent proxy whose store is never touched (here: unreachable).
fn flag_off_proxy(cfg: &approval_gateway::config::Upstream, metrics: &Arc<Metrics>) -> Proxy {
    let policy = approval_gateway::config::parse("", &|_| None)
        .unwrap()
        .policy;
    let store =
        approval_gateway::store::Store::open("postgres://postgres@127.0.0.1:1/none").unwrap();
    Proxy::new(
        Upstream::new(cfg).unwrap(),
        metrics.clone(),
        Arc::new(arc_swap::ArcSwap::new(policy)),
        store,
    )
}

async fn gateway(upstream_url: &str, request_timeout: Duration) -> Gateway {
    gateway_with_drain(upstream_url, request_timeout, Duration::from_secs(10)).await
}

async fn gateway_with_drain(
    upstream_url: &str,
    request_timeout: Duration,
    drain: Duration,
) -> Gateway {
    let cfg = approval_gateway::config::Upstream {
        trusted_proxies: Vec::new(),
        url: upstream_url.parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout,
    };
    let metrics = Arc::new(Metrics::new());
    let proxy = flag_off_proxy(&cfg, &metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy::listener::serve(
        listener,
        proxy,
        async move {
            let _ = stopped.await;
        },
        drain,
    ));
    Gateway {
        addr,
        metrics,
        stop: Some(stop),
        task,
    }
}

async fn connect(addr: SocketAddr) -> SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn empty() -> Body {
    Empty::new().boxed()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", "gw.example")
        .body(empty())
        .unwrap()
}

async fn send(
    sender: &mut SendRequest<Body>,
    req: Request<Body>,
) -> (http::response::Parts, Bytes) {
    sender.ready().await.unwrap();
    let resp: Response<Incoming> = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn method_path_and_query_reach_the_upstream_byte_for_byte() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let mut c = connect(gw.addr).await;
    let cases = [
        ("GET", "/workspaces/ws-1"),
        ("DELETE", "/workspaces/a%2Fb?force=true&x=%7E"),
        ("POST", "/a//b/../c/%7e/./d?q=a%20b&q=c+d&&"),
        ("PATCH", "/"),
        ("PURGE", "/x?"),
    ];
    for (i, (method, target)) in cases.into_iter().enumerate() {
        let req = Request::builder()
            .method(method)
            .uri(target)
            .header("host", "gw.example")
            .body(empty())
            .unwrap();
        let (parts, body) = send(&mut c, req).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(&body[..], b"ok");
        let seen = &up.wait_for_requests(i + 1).await[i];
        assert_eq!(seen.method.as_str(), method);
        assert_eq!(seen.path_and_query, target);
    }
    assert_eq!(gw.metrics.passthrough.get(), 5);
}

#[tokio::test]
async fn a_base_path_prefix_is_prepended() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&format!("{}/api/v1", up.url()), Duration::from_secs(5)).await;
    let mut c = connect(gw.addr).await;
    send(&mut c, get("/x/%2F?y=1")).await;
    assert_eq!(up.last().await.path_and_query, "/api/v1/x/%2F?y=1");
}

/// The headers the upstream saw for a request to `/h` built by `req`, sent once through each
/// upstream client: the hand-written one (a DELETE, no body) and hyper's (a POST with a body).
async fn headers_seen(
    req: impl Fn(http::request::Builder) -> http::request::Builder,
) -> Vec<(&'static str, http::HeaderMap)> {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let mut c = connect(gw.addr).await;
    let full = BodyExt::boxed(http_body_util::Full::new(Bytes::from_static(b"payload")));
    let mut seen = Vec::new();
    for (case, method, body) in [
        ("no body", http::Method::DELETE, empty()),
        ("a body", http::Method::POST, full),
    ] {
        let builder = Request::builder().method(method).uri("/h");
        send(&mut c, req(builder).body(body).unwrap()).await;
        seen.push((case, up.last().await.headers));
    }
    seen
}

#[tokio::test]
async fn headers_are_kept_hop_by_hop_removed_and_forwarded_headers_appended() {
    let seen = headers_seen(|b| {
        b.header("host", "api.example:8443")
            .header("authorization", "Bearer abc")
            .header("x-custom", "one")
            .header("x-custom", "two")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic Zm9v")
            .header("te", "trailers")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-for", "198.51.100.1")
            .header("x-forwarded-port", "8443")
            .header("x-forwarded-proto", "https")
    })
    .await;
    for (case, h) in seen {
        assert_eq!(h["host"], "api.example:8443", "{case}");
        assert_eq!(h["authorization"], "Bearer abc");
        let custom: Vec<_> = h.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["one", "two"], "{case}");
        for gone in [
            "x-private",
            "keep-alive",
            "proxy-authorization",
            "te",
            "upgrade",
        ] {
            assert!(
                !h.contains_key(gone),
                "{case}: {gone} must not reach the upstream: {h:?}"
            );
        }
        // hyper's client adds its own `connection` only when needed; never the client's tokens.
        assert!(h
            .get("connection")
            .is_none_or(|v| !v.to_str().unwrap().contains("x-private")));
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["203.0.113.9, 198.51.100.1, 127.0.0.1"], "{case}");
        // Replaced, not appended: the client is no trusted front proxy.
        let proto: Vec<_> = h.get_all("x-forwarded-proto").iter().collect();
        assert_eq!(proto, ["http"], "{case}");
        assert_eq!(h["x-forwarded-host"], "api.example:8443", "{case}");
        assert_eq!(h["x-forwarded-port"], "8443", "{case}");
    }
}

#[tokio::test]
async fn without_a_host_the_upstreams_authority_is_sent_and_no_forwarded_host() {
    for (case, h) in headers_seen(|b| b).await {
        let host = h["host"].to_str().unwrap();
        assert!(host.starts_with("127.0.0.1:"), "{case}: {host}");
        assert!(!h.contains_key("x-forwarded-host"), "{case}: {h:?}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{case}");
    }
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let up = FakeUpstream::start().await;
    up.reply(
        200,
        vec![
            ("connection", "x-upstream-private"),
            ("x-upstream-private", "1"),
            ("keep-alive", "timeout=9"),
            ("x-kept", "yes"),
        ],
        "body",
    );
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let (parts, body) = send(&mut connect(gw.addr).await, get("/")).await;
    assert_eq!(&body[..], b"body");
    assert_eq!(parts.headers["x-kept"], "yes");
    assert!(!parts.headers.contains_key("x-upstream-private"));
    assert!(!parts.headers.contains_key("keep-alive"));
}

#[tokio::test]
async fn an_8_mib_chunked_upload_arrives_intact() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up.url(), Duration::from_secs(30)).await;
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..128u32)
        .map(|i| Ok(Frame::data(Bytes::from(vec![(i % 251) as u8; 64 * 1024]))))
        .collect();
    let expected: Vec<u8> = (0..128u32)
        .flat_map(|i| vec![(i % 251) as u8; 64 * 1024])
        .collect();
    let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)));
    let req = Request::put("/upload")
        .header("host", "gw.example")
        .body(body)
        .unwrap();
    let (parts, _) = send(&mut connect(gw.addr).await, req).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = up.last().await;
    assert_eq!(seen.body.len(), 8 * 1024 * 1024);
    assert!(seen.body[..] == expected[..], "upload corrupted");
}

#[tokio::test]
async fn the_response_body_streams_before_the_upstream_finishes() {
    let up = FakeUpstream::start().await;
    up.set_reply(Reply::Stream {
        size: 64 * 1024,
        count: 64,
    });
    let gw = gateway(&up.url(), Duration::from_secs(30)).await;
    let mut c = connect(gw.addr).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/big")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // The upstream holds everything after its first chunk until released: the first bytes can
    // only arrive here if the proxy streams.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    up.release();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(first.len() + rest.len(), 64 * 64 * 1024);
    assert!(rest.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn status_codes_pass_through() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let mut c = connect(gw.addr).await;
    for (status, body) in [
        (200, "ok"),
        (204, ""),
        (304, ""),
        (404, "nope"),
        (500, "boom"),
    ] {
        up.reply(status, vec![], body);
        let (parts, got) = send(&mut c, get("/s")).await;
        assert_eq!(parts.status.as_u16(), status);
        assert_eq!(&got[..], body.as_bytes());
    }
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let mut c = connect(gw.addr).await;
    for _ in 0..10 {
        let (parts, _) = send(&mut c, get("/k")).await;
        assert_eq!(parts.status, StatusCode::OK);
    }
    assert_eq!(up.wait_for_requests(10).await.len(), 10);
    assert_eq!(up.connections(), 1);
}

async fn assert_problem(parts: &http::response::Parts, body: &Bytes, status: u16) {
    assert_eq!(parts.status.as_u16(), status);
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["status"], status);
    for member in ["type", "title", "detail"] {
        assert!(v[member].is_string(), "{member} missing in {v}");
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_problem() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = gateway(&url, Duration::from_secs(5)).await;
    let (parts, body) = send(&mut connect(gw.addr).await, get("/")).await;
    assert_problem(&parts, &body, 502).await;
    assert!(
        !String::from_utf8_lossy(&body).contains("127.0.0.1"),
        "no internals in the body"
    );
    assert!(gw
        .metrics
        .encode()
        .contains("approval_gateway_upstream_errors_total{kind=\"connect\"} 1"));
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_problem() {
    let up = FakeUpstream::start().await;
    up.set_reply(Reply::Hold);
    let gw = gateway(&up.url(), Duration::from_millis(200)).await;
    let (parts, body) = send(&mut connect(gw.addr).await, get("/slow")).await;
    assert_problem(&parts, &body, 504).await;
    assert!(gw
        .metrics
        .encode()
        .contains("approval_gateway_upstream_errors_total{kind=\"timeout\"} 1"));
    up.release();
}

#[tokio::test]
async fn a_websocket_upgrade_round_trips() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/workspaces/ws-1/terminal", gw.addr))
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "world"] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2])
    );
    let seen = up.last().await;
    assert_eq!(seen.path_and_query, "/workspaces/ws-1/terminal");
    assert_eq!(seen.headers["upgrade"], "websocket");
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let up = FakeUpstream::start().await;
    up.set_reply(Reply::Hold);
    let mut gw = gateway(&up.url(), Duration::from_secs(30)).await;
    let mut c = connect(gw.addr).await;
    let in_flight = tokio::spawn(async move { send(&mut c, get("/slow")).await });
    up.wait_for_requests(1).await;

    gw.stop.take().unwrap().send(()).unwrap();
    // Wait for the condition "no longer accepting".
    while TcpStream::connect(gw.addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
    assert!(
        !gw.task.is_finished(),
        "the drain waits for the in-flight request"
    );
    up.release();
    let (parts, body) = in_flight.await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"held");
    tokio::time::timeout(Duration::from_secs(10), gw.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_drain_deadline_closes_requests_that_outlive_it() {
    let up = FakeUpstream::start().await;
    up.set_reply(Reply::Hold);
    let mut gw = gateway_with_drain(
        &up.url(),
        Duration::from_secs(30),
        Duration::from_millis(100),
    )
    .await;
    let mut c = connect(gw.addr).await;
    c.ready().await.unwrap();
    let in_flight = c.send_request(get("/stuck"));
    let in_flight = tokio::spawn(in_flight);
    up.wait_for_requests(1).await;
    gw.stop.take().unwrap().send(()).unwrap();
    // serve() returns once the deadline passed, and the stuck request is cut off.
    tokio::time::timeout(Duration::from_secs(10), gw.task)
        .await
        .unwrap()
        .unwrap();
    assert!(in_flight.await.unwrap().is_err());
    up.release();
}

#[tokio::test]
async fn head_keeps_the_upstreams_content_length() {
    let up = FakeUpstream::start().await;
    up.reply(200, vec![], "twelve bytes");
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let mut c = connect(gw.addr).await;
    let req = Request::head("/h")
        .header("host", "gw.example")
        .body(empty())
        .unwrap();
    let (parts, body) = send(&mut c, req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-length"], "12");
    assert!(body.is_empty());
    // The connection stays usable after a body-less HEAD answer.
    let (parts, body) = send(&mut c, get("/after")).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"twelve bytes");
}

#[tokio::test]
async fn an_upstream_closing_its_connection_gets_a_new_one_next_time() {
    let up = FakeUpstream::start().await;
    up.set_reply(Reply::Fixed {
        status: 200,
        headers: vec![("connection", "close")],
        body: Bytes::from_static(b"bye"),
    });
    let gw = gateway(&up.url(), Duration::from_secs(5)).await;
    let mut c = connect(gw.addr).await;
    for _ in 0..3 {
        let (parts, body) = send(&mut c, get("/c")).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(&body[..], b"bye");
    }
    assert_eq!(up.connections(), 3);
}

/// A flag-off proxy in front of `up` on `n` shard threads; raise the flag to stop it.
fn sharded(
    up: &FakeUpstream,
    n: usize,
) -> (
    proxy::listener::Sharded,
    Arc<Metrics>,
    tokio::sync::watch::Sender<bool>,
) {
    let cfg = approval_gateway::config::Upstream {
        trusted_proxies: Vec::new(),
        url: up.url().parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    };
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shards = proxy::listener::serve_sharded(
        "127.0.0.1:0".parse().unwrap(),
        n,
        flag_off_proxy(&cfg, &metrics),
        stopped,
        Duration::from_secs(5),
    )
    .unwrap();
    (shards, metrics, stop)
}

#[tokio::test]
async fn sharded_listeners_serve_every_connection_and_stop_on_shutdown() {
    let up = FakeUpstream::start().await;
    let (shards, metrics, stop) = sharded(&up, 2);
    for _ in 0..8 {
        let mut c = connect(shards.local_addr).await;
        for _ in 0..2 {
            let (parts, body) = send(&mut c, get("/s")).await;
            assert_eq!(parts.status, StatusCode::OK);
            assert_eq!(&body[..], b"ok");
        }
    }
    assert_eq!(metrics.passthrough.get(), 16);
    // Each shard keeps its own upstream connections: at most one per shard here.
    assert!(up.connections() <= 2, "{} connections", up.connections());
    stop.send(true).unwrap();
    shards.join().await;
}

/// `SO_REUSEPORT` alone spreads connections at random (without the hand-off this test saw
/// splits such as [6, 9, 3, 6] and [10, 5, 8, 1]);
/// the shards hand new connections on so that their counts stay within two of each other.
#[tokio::test]
async fn sharded_listeners_keep_their_connection_counts_even() {
    let up = FakeUpstream::start().await;
    let (shards, metrics, stop) = sharded(&up, 4);
    let mut clients = Vec::new();
    for _ in 0..24 {
        let mut c = connect(shards.local_addr).await;
        // Answered, so counted on the shard that serves it (handed over or not).
        let (parts, _) = send(&mut c, get("/even")).await;
        assert_eq!(parts.status, StatusCode::OK);
        clients.push(c);
    }
    let open = shards.open_connections();
    assert_eq!(open.iter().sum::<usize>(), 24, "{open:?}");
    let (min, max) = (open.iter().min().unwrap(), open.iter().max().unwrap());
    assert!(max - min <= 2, "uneven shards: {open:?}");
    for mut c in clients {
        let (parts, _) = send(&mut c, get("/again")).await;
        assert_eq!(
            parts.status,
            StatusCode::OK,
            "a handed-over connection keeps serving"
        );
    }
    // Every connection closed (the senders dropped above): each shard's count returns to 0.
    tokio::time::timeout(Duration::from_secs(10), async {
        while shards.open_connections().iter().any(|n| *n > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("counts stay {:?}", shards.open_connections()));
    assert_eq!(metrics.passthrough.get(), 48);
    stop.send(true).unwrap();
    shards.join().await;
}

#[tokio::test]
async fn with_two_host_lines_both_clients_forward_the_first() {
    for (case, h) in headers_seen(|b| {
        b.header("host", "first.example")
            .header("host", "second.example")
    })
    .await
    {
        assert_eq!(h["x-forwarded-host"], "first.example", "{case}: {h:?}");
    }
}
