//! A recording fake upstream: a hyper server on port 0 that records every request (method,
//! path+query bytes, headers, body) and answers as told — a fixed reply, a streamed reply that
//! pauses after its first chunk, a held reply (until `release`), a slow one, one cut short
//! mid-body, or a WebSocket echo for requests asking `Upgrade: websocket`.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The request target's path and query, exactly as received.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body ended in an error (the sender aborted it) rather than at its end.
    pub body_aborted: bool,
}

/// How the upstream answers.
#[derive(Debug, Clone)]
pub enum Reply {
    Fixed {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: Bytes,
    },
    /// `count` chunks of `size` bytes of `b'x'`, chunked; pauses after the first until `release`.
    Stream { size: usize, count: usize },
    /// Waits for `release`, then answers 200 `held`.
    Hold,
    /// Records the request, then closes the connection without answering (a crash mid-request).
    Drop,
    /// Waits this long, then answers 200 `ok` (a slow upstream).
    Delay(std::time::Duration),
    /// Answers 200 with `Content-Length: 64` but only 8 bytes of body, then closes the
    /// connection (a crash mid-response).
    Cut,
}

struct State {
    recorded: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
    released: watch::Sender<bool>,
    reply: Mutex<Reply>,
    connections: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            recorded: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            released: watch::channel(false).0,
            reply: Mutex::new(Reply::Fixed {
                status: 200,
                headers: vec![],
                body: Bytes::from_static(b"ok"),
            }),
            connections: AtomicUsize::new(0),
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(st.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    pub fn reply(
        &self,
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    ) {
        self.set_reply(Reply::Fixed {
            status,
            headers,
            body: Bytes::from_static(body.as_bytes()),
        });
    }

    /// Let held and paused replies proceed (permanently).
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests recorded so far (for asserting that nothing arrived).
    pub fn received(&self) -> usize {
        *self.state.count.borrow()
    }

    /// Wait until at least `n` requests were recorded; returns all recorded so far.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        let mut rx = self.state.count.subscribe();
        rx.wait_for(|c| *c >= n).await.expect("upstream alive");
        self.state.recorded.lock().unwrap().clone()
    }

    pub async fn last(&self) -> Recorded {
        let n = *self.state.count.borrow();
        self.wait_for_requests(n.max(1))
            .await
            .pop()
            .expect("a request")
    }
}

/// An `Err` makes hyper close the connection without writing a response ([`Reply::Drop`]).
async fn answer(
    st: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let websocket = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let on_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (body, body_aborted) = match body.collect().await {
        Ok(c) => (c.to_bytes(), false),
        Err(_) => (Bytes::new(), true),
    };
    let recorded = Recorded {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body,
        body_aborted,
    };
    st.recorded.lock().unwrap().push(recorded);
    st.count.send_modify(|c| *c += 1);

    if let Some(on_upgrade) = on_upgrade {
        return Ok(accept_websocket(&parts.headers, on_upgrade));
    }
    let reply = st.reply.lock().unwrap().clone();
    let mut released = st.released.subscribe();
    Ok(match reply {
        Reply::Fixed {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(Full::new(body).boxed());
            *resp.status_mut() = StatusCode::from_u16(status).expect("status");
            for (k, v) in headers {
                resp.headers_mut()
                    .append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            resp
        }
        Reply::Drop => {
            return Err(std::io::Error::other("told to drop the connection"));
        }
        Reply::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Response::new(Full::new(Bytes::from_static(b"ok")).boxed())
        }
        Reply::Cut => {
            // A body of unknown length (so hyper trusts the declared one) that ends 56 bytes
            // early, after a pause that lets the head and first bytes go out: hyper finds it
            // short and closes the connection mid-response.
            let frames = futures_util::stream::unfold(0u8, |i| async move {
                match i {
                    0 => Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"partial!"))),
                        1,
                    )),
                    _ => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        None
                    }
                }
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            resp.headers_mut()
                .insert("content-length", HeaderValue::from_static("64"));
            resp
        }
        Reply::Hold => {
            let _ = released.wait_for(|r| *r).await;
            Response::new(Full::new(Bytes::from_static(b"held")).boxed())
        }
        Reply::Stream { size, count } => {
            let chunk = Bytes::from(vec![b'x'; size]);
            let frames = futures_util::stream::unfold(0usize, move |i| {
                let (chunk, mut released) = (chunk.clone(), released.clone());
                async move {
                    if i == count {
                        return None;
                    }
                    if i == 1 {
                        let _ = released.wait_for(|r| *r).await;
                    }
                    Some((Ok::<_, Infallible>(Frame::data(chunk)), i + 1))
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(frames)))
        }
    })
}

fn accept_websocket(headers: &HeaderMap, on_upgrade: hyper::upgrade::OnUpgrade) -> Response<Body> {
    let key = headers
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() || ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&key).expect("accept key"),
    );
    resp
}
