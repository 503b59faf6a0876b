//! Bare upstream for `bench/run`: the "direct" target and the server behind every proxy.
//!
//! Inputs: `--listen ADDR` (default 127.0.0.1:18081), `--threads N` (tokio workers, default 2).
//! Output: every request is answered 200 with a fixed ~100-byte JSON body, except requests that
//! carry a body, which get it echoed back (the gated path forwards DELETE/POST bodies).
//! Invariant: no per-request allocation beyond what hyper needs, so the upstream's cost is a
//! stable floor that the proxies' numbers sit on.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// 100 bytes exactly, so "a ~100-byte JSON body" is literal.
const BODY: &[u8] =
    br#"{"id":"ws-1","name":"bench","status":"running","tier":2,"runtime":"langgraph","ok":true,"n":1234567}"#;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let has_body = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
    let body = if has_body {
        // Echo: the gated forward's body comes back, so a client can check it arrived intact.
        match req.into_body().collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::from_static(BODY),
        }
    } else {
        Bytes::from_static(BODY)
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let addr: SocketAddr = arg("--listen")
        .unwrap_or_else(|| "127.0.0.1:18081".into())
        .parse()
        .expect("--listen must be host:port");
    let threads: usize = arg("--threads")
        .map(|t| t.parse().expect("--threads must be a number"))
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(addr));
}

async fn serve(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    eprintln!("bench-upstream listening on {addr}");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .await;
                });
            }
        }
    }
}
