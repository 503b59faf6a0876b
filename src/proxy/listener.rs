//! Stage 1: accept downstream connections and drain them on shutdown.
//!
//! Input: a bound listener, the service and a shutdown future. One task per connection;
//! HTTP/1.1 only (keep-alive, upgrades enabled). HTTP/1 only because the clients of an API
//! gateway speak it, it spares every connection the protocol sniffing of `auto::Builder`, and
//! WebSocket upgrades are HTTP/1. Shutdown: stop accepting, ask every connection to finish its
//! in-flight request and close (hyper's `graceful_shutdown`), wait up to `drain`, then abort the
//! stragglers. hyper-util's `GracefulShutdown` cannot watch an HTTP/1 connection with upgrades
//! enabled, so a `watch` channel carries the signal instead. A client hanging up is not an
//! error (debug log). A client that takes longer than [`HEADER_READ_TIMEOUT`] to send a request
//! head, or leaves a keep-alive connection idle that long, is disconnected (`timer.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::forward::Downstream;
use super::timer::CoarseTimer;
use super::Proxy;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a client gets to send a request head, counted from when the gateway starts waiting
/// for it (so it also closes idle keep-alive connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The downstream HTTP/1 settings: keep-alive, one `write` per response, and `header_read` as
/// the head timeout, on the [`CoarseTimer`] (it fires up to [`super::timer::TICK`] late).
pub(crate) fn http1_builder(header_read: Duration) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(CoarseTimer)
        .header_read_timeout(header_read)
        // Flatten head and body into one buffer and one `write`: cheaper than `writev` for the
        // small messages an API carries (measured with bench/callgrind-passthrough.sh).
        .writev(false)
        .keep_alive(true);
    http
}

/// Serve `proxy` on `listener` until `shutdown` resolves, then drain for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    let http = http1_builder(HEADER_READ_TIMEOUT);
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

/// The data plane running on its own threads (see [`serve_sharded`]).
#[derive(Debug)]
pub struct Sharded {
    /// The address all shards listen on (the real port when `addr` had port 0).
    pub local_addr: SocketAddr,
    done: Vec<oneshot::Receiver<()>>,
}

impl Sharded {
    /// Wait until every shard has drained and stopped.
    pub async fn join(self) {
        for done in self.done {
            // A shard that panicked drops its sender: it is stopped all the same.
            let _ = done.await;
        }
    }
}

/// Serve `proxy` on `shards` threads, each running its own single-threaded runtime and its own
/// `SO_REUSEPORT` listener on `addr` (the kernel spreads connections over them). A connection,
/// its handling and its upstream connections then stay on one thread: no cross-thread wake-ups,
/// no work-stealing bookkeeping, and the upstream pool's thread-local stacks are hit every time.
/// The cost: no stealing either, so one slow shard cannot borrow an idle core. Each shard stops
/// accepting once `shutdown` turns `true` (or its sender is dropped) and drains like [`serve`].
/// Binding happens here, so a bad address fails before any thread starts; it returns once
/// every shard listens.
pub fn serve_sharded(
    addr: SocketAddr,
    shards: usize,
    proxy: Proxy,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<Sharded> {
    let first = reuseport_socket(addr)?.listen(1024)?.into_std()?;
    serve_sharded_from(first, shards, proxy, shutdown, drain)
}

/// Bind `addr` with `SO_REUSEPORT` and listen at once, so connections queue in the kernel
/// before the shards start; hand the result to [`serve_sharded_from`]. Needs a runtime context.
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    reuseport_socket(addr)?.listen(1024)
}

/// Like [`serve_sharded`], on an already listening first socket (see [`bind_reuseport`]); the
/// other shards bind the same address with `SO_REUSEPORT`.
pub fn serve_sharded_from(
    first: std::net::TcpListener,
    shards: usize,
    proxy: Proxy,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<Sharded> {
    let local_addr = first.local_addr()?;
    let mut sockets = vec![Shard::Listening(first)];
    for _ in 1..shards.max(1) {
        sockets.push(Shard::Bound(reuseport_socket(local_addr)?));
    }
    let shard_count = sockets.len();
    let mut done = Vec::with_capacity(shard_count);
    let (listening_tx, listening) = std::sync::mpsc::channel();
    for (i, socket) in sockets.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        done.push(rx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (proxy, mut stop) = (proxy.clone(), shutdown.clone());
        let listening_tx = listening_tx.clone();
        std::thread::Builder::new()
            .name(format!("proxy-shard-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    // Registering with this shard's own reactor happens here, for the
                    // listener and for the store connections the shard will open.
                    let proxy = proxy.for_this_thread();
                    let listener = socket.listen();
                    let reported = listener.as_ref().map(|_| ()).map_err(|e| e.kind());
                    let _ = listening_tx.send(reported);
                    drop(listening_tx);
                    let Ok(listener) = listener else { return };
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    serve(listener, proxy, stopped, drain).await;
                });
                let _ = tx.send(());
            })?;
    }
    drop(listening_tx);
    // Return only once every shard listens, so a client connecting right away is served.
    // (A brief block of the caller's thread, at start-up only.)
    for reported in listening.iter().take(shard_count) {
        reported.map_err(std::io::Error::from)?;
    }
    Ok(Sharded { local_addr, done })
}

/// A shard's socket before its runtime registers it.
enum Shard {
    Listening(std::net::TcpListener),
    Bound(TcpSocket),
}

impl Shard {
    fn listen(self) -> std::io::Result<TcpListener> {
        match self {
            Shard::Listening(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            }
            Shard::Bound(s) => s.listen(1024),
        }
    }
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}
