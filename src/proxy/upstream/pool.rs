//! Keep-alive HTTP/1.1 connections to the upstream, pooled per shard (`shard.rs`).
//!
//! Input: the upstream's `host:port` and connect timeout. Output: an idle pooled connection,
//! else a new one, and, once a response body has been read to its end, the connection handed
//! back. Two kinds are pooled apart: hyper's ([`SendRequest`], for requests with a body and
//! upgrades; handed back by a `Lease`) and the hand-written client's ([`Conn`], for requests
//! without a body; handed back through its [`Home`]). Why not hyper-util's legacy `Client`:
//! per request it boxes futures, locks a shared pool keyed by a hashed `(scheme, authority)`, and
//! spawns a task to wait until the connection is reusable. Here a checkout is a pop from a
//! per-shard stack and a hand-back a push, with no lock, no allocation and no task; on a
//! runtime with one thread per shard a request never leaves its thread.
//! Invariants: only connections whose last response body was read to its end (and whose
//! `SendRequest` is ready) are reused; a connection idle for `POOL_IDLE` is closed instead of
//! reused; at most `MAX_IDLE` idle connections per upstream per shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::h1::Conn;
use super::shard;

/// Idle upstream connections are closed after this, below common upstream idle timeouts so
/// the pool rarely hands out a connection the upstream is closing.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(30);

/// Idle connections kept per upstream per shard; more are closed when handed back.
pub(crate) const MAX_IDLE: usize = 256;

/// Why a new upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection within the connect timeout.
    #[error("connect timed out")]
    Timeout,
    /// Resolving the address or connecting failed.
    #[error("connect failed")]
    Io(#[source] std::io::Error),
    /// hyper's HTTP/1.1 handshake on the new connection failed.
    #[error("http/1.1 handshake failed")]
    Handshake(#[source] hyper::Error),
}

type Sender = SendRequest<ProxyBody>;

/// Which finished first in [`Pool::ready_or_connect`].
enum Won {
    Ready,
    Closed,
    Connected(Result<Sender, ConnectError>),
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

/// One upstream's idle connections on this shard, of either kind.
pub(super) struct Shelf {
    pool: u64,
    conns: Vec<Idle<Sender>>,
    raw: Vec<Idle<Conn>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The connection pool of one upstream (its idle connections live on each shard's shelf).
#[derive(Debug, Clone)]
pub struct Pool {
    key: PoolKey,
    /// `host:port`, resolved at each connect (an IP literal resolves without a lookup).
    addr: String,
    connect_timeout: Duration,
}

/// Which pool a connection goes back to.
#[derive(Debug, Clone, Copy)]
struct PoolKey(u64);

impl Pool {
    /// A pool for the upstream at `addr` (`host:port`, resolved at each connect), giving up a
    /// connect after `connect_timeout`.
    pub fn new(addr: String, connect_timeout: Duration) -> Self {
        Self {
            key: PoolKey(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            addr,
            connect_timeout,
        }
    }

    /// An idle connection of this shard, if any: the newest ready one, else the newest one
    /// whose driver has not caught up yet (for [`Pool::ready_or_connect`]). Stale and closed
    /// ones are dropped, i.e. closed. `now` is the caller's clock reading (it has one already).
    pub(crate) fn take_idle(&self, now: Instant) -> Option<Sender> {
        shard::shelves(|shelves| {
            let conns = &mut shelves.iter_mut().find(|s| s.pool == self.key.0)?.conns;
            // Newest first. A connection handed back a moment ago may not be ready yet (its
            // driver has not yet seen the end of the response): skip it but keep it.
            let mut i = conns.len();
            let mut lagging = None;
            while i > 0 {
                i -= 1;
                if now.saturating_duration_since(conns[i].since) >= POOL_IDLE {
                    // Everything at and below `i` is older still: close them all.
                    conns.drain(..=i);
                    return None;
                }
                if conns[i].conn.is_ready() {
                    return Some(conns.remove(i).conn);
                }
                if conns[i].conn.is_closed() {
                    conns.remove(i);
                } else if lagging.is_none() {
                    lagging = Some(i);
                }
            }
            lagging.map(|i| conns.remove(i).conn)
        })
    }

    /// An idle connection of the hand-written client on this shard, if any: the newest one
    /// nothing arrived on while it was idle. Stale and closed ones are dropped, i.e. closed.
    pub fn take_raw(&self, now: Instant) -> Option<Conn> {
        shard::shelves(|shelves| {
            let raw = &mut shelves.iter_mut().find(|s| s.pool == self.key.0)?.raw;
            while let Some(idle) = raw.pop() {
                if now.saturating_duration_since(idle.since) >= POOL_IDLE {
                    // The rest are older still.
                    raw.clear();
                    return None;
                }
                if idle.conn.idle_ok() {
                    return Some(idle.conn);
                }
            }
            None
        })
    }

    /// `candidate` once it is ready to send, or a new connection if that is open first (then
    /// `candidate` goes back to the pool). On a multi-threaded runtime the next request of a
    /// client often arrives before the driver of its last upstream connection has seen the end
    /// of the response; opening a new connection each time would pile up connections.
    pub(crate) async fn ready_or_connect(
        &self,
        mut candidate: Sender,
    ) -> Result<Sender, ConnectError> {
        let connect = self.connect();
        tokio::pin!(connect);
        let ready = std::future::poll_fn(|cx| candidate.poll_ready(cx));
        let won = tokio::select! {
            biased;
            r = ready => r.map_or(Won::Closed, |()| Won::Ready),
            c = &mut connect => Won::Connected(c),
        };
        match won {
            Won::Ready => Ok(candidate),
            Won::Connected(new) => {
                shelve(self.key, candidate);
                new
            }
            // The candidate closed: the new connection it is.
            Won::Closed => connect.await,
        }
    }

    /// Open a new TCP connection to the upstream.
    async fn dial(&self) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.addr))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Io)?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "upstream set_nodelay failed");
        }
        Ok(stream)
    }

    /// Open a new connection for the hand-written client.
    pub async fn connect_raw(&self) -> Result<Conn, ConnectError> {
        self.dial().await.map(Conn::new)
    }

    /// Where the hand-written client's connections go back to.
    pub fn home(&self) -> Home {
        Home(self.key)
    }

    /// Open a new connection and spawn its driver task (upgrades enabled, for tunnels).
    pub(crate) async fn connect(&self) -> Result<Sender, ConnectError> {
        let stream = self.dial().await?;
        let (tx, conn) = http1::Builder::new()
            // One flattened `write` per request, as on the downstream side (see listener.rs).
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }

    /// A lease that hands `tx` back to this pool once its response body is read to the end.
    pub(crate) fn lease(&self, tx: Sender) -> Lease {
        Lease { tx, key: self.key }
    }
}

/// A connection out of the pool while its response body is relayed.
#[derive(Debug)]
pub(crate) struct Lease {
    tx: Sender,
    key: PoolKey,
}

impl Lease {
    /// The response was read to its end: make the connection reusable. It is shelved even if
    /// its driver has not caught up yet (on a multi-threaded runtime it often has not);
    /// [`Pool::take_idle`] skips it until it is ready. No task, no wait.
    pub(crate) fn release(self) {
        if !self.tx.is_closed() {
            shelve(self.key, self.tx);
        }
    }
}

/// The pool a hand-written client connection goes back to once its response is read.
#[derive(Debug, Clone, Copy)]
pub struct Home(PoolKey);

impl Home {
    /// Shelve `conn` on this shard for the next request without a body.
    pub(crate) fn put(self, conn: Conn) {
        on_shelf(self.0, |shelf| push(&mut shelf.raw, conn));
    }
}

fn shelve(key: PoolKey, tx: Sender) {
    on_shelf(key, |shelf| push(&mut shelf.conns, tx));
}

/// Run `f` on this shard's shelf of pool `key`, creating it on first use.
fn on_shelf(key: PoolKey, f: impl FnOnce(&mut Shelf)) {
    shard::shelves(|shelves| {
        let shelf = match shelves.iter().position(|s| s.pool == key.0) {
            Some(i) => &mut shelves[i],
            None => {
                shelves.push(Shelf {
                    pool: key.0,
                    conns: Vec::new(),
                    raw: Vec::new(),
                });
                let last = shelves.len() - 1;
                &mut shelves[last]
            }
        };
        f(shelf);
    });
}

/// Push `conn` on top of an idle stack, closing stale ones at the bottom (never popped since)
/// and closing `conn` instead when the stack is full.
fn push<T>(stack: &mut Vec<Idle<T>>, conn: T) {
    let now = super::timer::now();
    if stack
        .first()
        .is_some_and(|i| now.duration_since(i.since) >= POOL_IDLE)
    {
        stack.retain(|i| now.duration_since(i.since) < POOL_IDLE);
    }
    if stack.len() < MAX_IDLE {
        stack.push(Idle { conn, since: now });
    }
}
