//! Stage 1: accept downstream connections and drain them on shutdown.
//!
//! Input: a bound listener, the service and a shutdown future. One task per connection;
//! HTTP/1.1 only (keep-alive, upgrades enabled). HTTP/1 only because the clients of an API
//! gateway speak it, it spares every connection the protocol sniffing of `auto::Builder`, and
//! WebSocket upgrades are HTTP/1. Shutdown: stop accepting, ask every connection to finish its
//! in-flight request and close (hyper's `graceful_shutdown`), wait up to `drain`, then abort the
//! stragglers. hyper-util's `GracefulShutdown` cannot watch an HTTP/1 connection with upgrades
//! enabled, so a `watch` channel carries the signal instead. A client hanging up is not an
//! error (debug log).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::forward::Downstream;
use super::Proxy;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve `proxy` on `listener` until `shutdown` resolves, then drain for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => serve_connection(&mut conns, &http, stream, addr, &proxy, stop_rx.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(connections = conns.len(), "proxy listener closed; draining");
    drop(stop_tx);
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "drain deadline passed; closing remaining connections"
        );
    }
    conns.shutdown().await;
}

/// Serve one downstream connection on its own task until it closes, or until `stop` fires and
/// its in-flight request is answered.
fn serve_connection(
    conns: &mut JoinSet<()>,
    http: &http1::Builder,
    stream: TcpStream,
    addr: SocketAddr,
    proxy: &Proxy,
    mut stop: watch::Receiver<()>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let down = Downstream::new(addr);
    let proxy = proxy.clone();
    let svc = service_fn(move |req: Request<Incoming>| proxy.clone().handle(req, down.clone()));
    let conn = http
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    conns.spawn(async move {
        tokio::pin!(conn);
        let ended = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(peer = %addr, error = %e, "downstream connection ended with an error");
        }
    });
}
