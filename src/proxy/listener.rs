//! Stage 1: accept downstream connections and drain them on shutdown.
//!
//! Input: a bound listener, the service and a shutdown future. One task per connection;
//! HTTP/1.1 only (keep-alive, upgrades enabled). HTTP/1 only because the clients of an API
//! gateway speak it, it spares every connection the protocol sniffing of `auto::Builder`, and
//! WebSocket upgrades are HTTP/1. Shutdown: stop accepting, ask every connection to finish its
//! in-flight request and close (hyper's `graceful_shutdown`), wait up to `drain`, then abort the
//! stragglers. hyper-util's `GracefulShutdown` cannot watch an HTTP/1 connection with upgrades
//! enabled, so a `watch` channel carries the signal instead. A client hanging up is not an
//! error (debug log). A client that takes longer than `HEADER_READ_TIMEOUT` to send a request
//! head, or leaves a keep-alive connection idle that long, is disconnected (`upstream/timer.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::upstream::timer::CoarseTimer;
use super::upstream::Downstream;
use super::Proxy;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a client gets to send a request head, counted from when the gateway starts waiting
/// for it (so it also closes idle keep-alive connections).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The downstream HTTP/1 settings: keep-alive, one `write` per response, and `header_read` as
/// the head timeout, on the [`CoarseTimer`] (it fires up to [`super::upstream::timer::TICK`] late).
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
    serve_shard(listener, proxy, shutdown, drain, None).await;
}

/// [`serve`], as one of several shards when `link` is given: a connection accepted while this
/// shard holds more than its share is handed to the least busy shard (see [`Balance`]), and
/// connections handed here are served like accepted ones.
async fn serve_shard(
    listener: TcpListener,
    proxy: Proxy,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    mut link: Option<ShardLink>,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    let http = http1_builder(HEADER_READ_TIMEOUT);
    let spawn_conn = |conns: &mut JoinSet<()>, stream, addr, open| {
        serve_connection(conns, &http, stream, addr, &proxy, stop_rx.clone(), open);
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            Some((std, addr, open)) = handed_over(&mut link) => {
                if let Some((stream, open)) = adopt(std, open) {
                    spawn_conn(&mut conns, stream, addr, Some(open));
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => match &link {
                    None => spawn_conn(&mut conns, stream, addr, None),
                    Some(l) => {
                        if let Some((stream, open)) = l.keep_or_hand_off(stream, addr) {
                            spawn_conn(&mut conns, stream, addr, Some(open));
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    // Connections handed here before another shard noticed this one stopping: serve them too,
    // so each is closed gracefully with the rest (an idle one at once). `recv`, not `try_recv`:
    // after `close` it also waits for a send already under way, then returns `None`.
    if let Some(l) = link.as_mut() {
        l.inbox.close();
        while let Some((std, addr, open)) = l.inbox.recv().await {
            if let Some((stream, open)) = adopt(std, open) {
                spawn_conn(&mut conns, stream, addr, Some(open));
            }
        }
    }
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
    // What requests left to finish after their answer (the upstream's result of a consumed
    // approval): recorded before the shard's runtime, and its tasks, go away.
    proxy.finish_background(drain).await;
}

/// The next connection another shard handed to this one (pending forever without a link).
async fn handed_over(link: &mut Option<ShardLink>) -> Option<Handed> {
    match link {
        Some(l) => l.inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Serve one downstream connection on its own task until it closes, or until `stop` fires and
/// its in-flight request is answered. `open` is dropped when the connection ends.
fn serve_connection(
    conns: &mut JoinSet<()>,
    http: &http1::Builder,
    stream: TcpStream,
    addr: SocketAddr,
    proxy: &Proxy,
    mut stop: watch::Receiver<()>,
    open: Option<OpenConn>,
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
        let _open = open;
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

/// A connection on its way to another shard, already in that shard's count.
type Handed = (std::net::TcpStream, SocketAddr, OpenConn);

/// Keeps the shards' connection counts within two of each other. `SO_REUSEPORT` hashes each
/// connection to a shard, so 32 connections split anywhere from 15/17 to 11/21 (measured over
/// a handful of wrk runs); a shard has one core and its
/// own store connections, so the clients of the busier one waited about twice as long
/// (measured on the gated path at 32 connections: per-connection mean latency 9.3 ms on one
/// shard, 17.7 ms on the other). A connection is moved at most once, right after `accept`, and
/// only while the counts are uneven; then it stays on the shard it landed on.
#[derive(Debug)]
struct Balance {
    /// Open connections per shard, counting those on their way to it.
    open: Vec<AtomicUsize>,
    inboxes: Vec<mpsc::UnboundedSender<Handed>>,
}

/// The shard to hand a just-accepted connection to, if keeping it on `me` would leave `me`
/// more than two connections above the least busy shard. `open`: each shard's open
/// connections, before this one.
fn pick_shard(me: usize, open: &[usize]) -> Option<usize> {
    let (least, &fewest) = open.iter().enumerate().min_by_key(|&(_, n)| n)?;
    (open.get(me)?.saturating_add(1) > fewest.saturating_add(2)).then_some(least)
}

/// One shard's end of the [`Balance`].
#[derive(Debug)]
struct ShardLink {
    me: usize,
    balance: Arc<Balance>,
    inbox: mpsc::UnboundedReceiver<Handed>,
}

impl ShardLink {
    fn links(shards: usize) -> Vec<ShardLink> {
        let (inboxes, rxs): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Arc::new(Balance {
            open: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            inboxes,
        });
        rxs.into_iter()
            .enumerate()
            .map(|(me, inbox)| ShardLink {
                me,
                balance: Arc::clone(&balance),
                inbox,
            })
            .collect()
    }

    /// `shard`'s count of one more connection, until the guard drops.
    fn count(&self, shard: usize) -> OpenConn {
        self.balance.open[shard].fetch_add(1, Relaxed);
        OpenConn {
            balance: Arc::clone(&self.balance),
            shard,
        }
    }

    /// The stream (counted here) when it is to be served here; `None` once another shard has it.
    fn keep_or_hand_off(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Option<(TcpStream, OpenConn)> {
        // A shard that stopped (or died) takes no connections: never the least busy.
        let open: Vec<usize> = (self.balance.open.iter().zip(&self.balance.inboxes))
            .map(|(n, inbox)| {
                if inbox.is_closed() {
                    usize::MAX
                } else {
                    n.load(Relaxed)
                }
            })
            .collect();
        let Some(to) = pick_shard(self.me, &open) else {
            return Some((stream, self.count(self.me)));
        };
        let std = match stream.into_std() {
            Ok(std) => std,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to another shard; closing it");
                return None;
            }
        };
        match self.balance.inboxes[to].send((std, addr, self.count(to))) {
            Ok(()) => None,
            // That shard has stopped (its count went back with the message): serve it here.
            Err(mpsc::error::SendError((std, _, _))) => adopt(std, self.count(self.me)),
        }
    }
}

/// A connection from another shard, registered on this shard's reactor.
fn adopt(std: std::net::TcpStream, open: OpenConn) -> Option<(TcpStream, OpenConn)> {
    TcpStream::from_std(std)
        .inspect_err(|e| tracing::warn!(error = %e, "cannot take over a connection"))
        .ok()
        .map(|stream| (stream, open))
}

/// One open connection in its shard's count, until dropped.
#[derive(Debug)]
struct OpenConn {
    balance: Arc<Balance>,
    shard: usize,
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.balance.open[self.shard].fetch_sub(1, Relaxed);
    }
}

/// The data plane running on its own threads (see [`serve_sharded`]).
#[derive(Debug)]
pub struct Sharded {
    /// The address all shards listen on (the real port when `addr` had port 0).
    pub local_addr: SocketAddr,
    done: Vec<oneshot::Receiver<()>>,
    balance: Option<Arc<Balance>>,
}

impl Sharded {
    /// Open downstream connections per shard; empty with a single shard (nothing to balance,
    /// so nothing is counted).
    pub fn open_connections(&self) -> Vec<usize> {
        self.balance.as_ref().map_or_else(Vec::new, |b| {
            b.open.iter().map(|n| n.load(Relaxed)).collect()
        })
    }

    /// Wait until every shard has drained and stopped.
    pub async fn join(self) {
        for done in self.done {
            // A shard that panicked drops its sender: it is stopped all the same.
            let _ = done.await;
        }
    }
}

/// Serve `proxy` on `shards` threads, each running its own single-threaded runtime and its own
/// `SO_REUSEPORT` listener on `addr` (the kernel spreads connections over them, and a shard
/// holding more than its share hands a new one on, see `Balance`). A connection,
/// its handling and its upstream connections then stay on one thread: no cross-thread wake-ups,
/// no work-stealing bookkeeping, and the upstream pool's per-shard stacks are hit every time
/// (`upstream/shard.rs`).
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
    let first = bind_reuseport(addr)?.into_std()?;
    serve_sharded_from(first, shards, proxy, shutdown, drain)
}

/// Bind `addr` with `SO_REUSEPORT` and listen at once, so connections queue in the kernel
/// before the shards start; hand the result to [`serve_sharded_from`]. Needs a runtime context.
/// Fails, naming the address, when something already listens there (see [`probe`]).
pub(crate) fn bind_reuseport(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    reuseport_socket(probe(addr)?)?.listen(1024)
}

/// Make sure nothing listens on `addr`; returns it with port 0 resolved. `SO_REUSEPORT` lets any
/// process of the same user bind a port that such a process already listens on, so a second
/// gateway started on the address would start too and the kernel would split the connections
/// between the two. A socket bound without `SO_REUSEPORT` cannot share the port with a
/// listening one, so binding one (no listen: it never accepts a connection) tells, and it is
/// closed before the shards bind. `SO_REUSEADDR` keeps a previous run's TIME_WAIT connections
/// from counting as a use.
///
/// The race left: two gateways starting within the same few microseconds can both probe before
/// either has bound its shards, and both start. Closing it would need one listening socket
/// shared by every shard (no `SO_REUSEPORT`), giving up the per-shard accept queues.
fn probe(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    match socket.bind(addr) {
        Ok(()) => socket.local_addr(),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
            e.kind(),
            format!("{addr} is already in use (is another gateway running there?)"),
        )),
        Err(e) => Err(e),
    }
}

/// Like [`serve_sharded`], on an already listening first socket (see [`bind_reuseport`]); the
/// other shards bind the same address with `SO_REUSEPORT`.
pub(crate) fn serve_sharded_from(
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
    let links = if shard_count > 1 {
        ShardLink::links(shard_count)
    } else {
        Vec::new()
    };
    let balance = links.first().map(|l| Arc::clone(&l.balance));
    let mut links = links.into_iter();
    for (i, socket) in sockets.into_iter().enumerate() {
        let link = links.next();
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
                    serve_shard(listener, proxy, stopped, drain, link).await;
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
    Ok(Sharded {
        local_addr,
        done,
        balance,
    })
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

#[cfg(test)]
mod tests {
    use super::pick_shard;

    #[test]
    fn a_new_connection_moves_only_when_keeping_it_would_leave_a_gap_above_two() {
        let cases: &[(usize, &[usize], Option<usize>)] = &[
            (0, &[0], None),
            (0, &[0, 0], None),
            (0, &[1, 0], None),
            (0, &[2, 0], Some(1)),
            (1, &[0, 2], Some(0)),
            (0, &[5, 4], None),
            (0, &[6, 4], Some(1)),
            (2, &[3, 1, 4, 2], Some(1)),
            // The first of equally idle shards.
            (0, &[9, 3, 3], Some(1)),
            // Already the least busy: stays.
            (1, &[4, 0, 4], None),
            // Stopped shards count as full.
            (0, &[5, usize::MAX], None),
            (0, &[5, usize::MAX, 2], Some(2)),
            (5, &[0, 0], None),
        ];
        for &(me, open, want) in cases {
            assert_eq!(pick_shard(me, open), want, "shard {me} of {open:?}");
        }
    }
}
