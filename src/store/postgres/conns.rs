//! The gate's own Postgres connections: a small set kept outside sqlx's `Pool`.
//!
//! Why: sqlx's pool spawns a task per release that pings the connection (a round trip the
//! database serves for every gated request), and its checkout goes through a semaphore, an
//! idle queue and a metadata hook. The gate's statements are single autocommit statements, so
//! it needs much less: a stack of idle connections behind a mutex that is never held across an
//! `.await`, and a semaphore bounding how many exist.
//!
//! Invariants: a connection goes back to the stack only after the operation on it succeeded;
//! one dropped mid-statement (the client went away) or after an error is closed, so no
//! connection with a half-read reply is ever reused. A connection idle for
//! [`PING_IDLE_AFTER`] is pinged before use; a failed ping closes it and another is tried.
//! Connections are opened on the caller's runtime, so a proxy shard's set lives on its reactor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::Semaphore;

use crate::store::model::classify;
use crate::store::StoreError;

/// An idle connection is pinged before use once it has been idle this long.
pub(super) const PING_IDLE_AFTER: Duration = Duration::from_secs(10);

/// How long a caller waits for a free connection (or for a new one to open) before the store
/// counts as unavailable: the proxy then fails closed with a 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub(super) struct Conns {
    opts: Arc<PgConnectOptions>,
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// One permit per connection that may exist, idle or leased.
    permits: Semaphore,
}

impl Conns {
    pub(super) fn new(opts: Arc<PgConnectOptions>, max: usize) -> Self {
        Self {
            opts,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max),
        }
    }

    /// Runs `op` on a connection (handed over and back, so a future dropped mid-statement
    /// drops, i.e. closes, its connection) and keeps the connection if `op` succeeded. When a
    /// reused connection fails with a connection error (the database restarted, something in
    /// between dropped it), `op` runs once more on a new connection, so a restart costs no
    /// request a 503. Repeating is safe for the gate's statements: a consume either committed
    /// (then the repeat finds nothing to consume, and nothing is forwarded) or it did not.
    pub(super) async fn run<'a, T>(
        &self,
        mut op: impl FnMut(PgConnection) -> BoxFuture<'a, (PgConnection, Result<T, StoreError>)>,
    ) -> Result<T, StoreError> {
        let _permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| classify(sqlx::Error::PoolTimedOut))?
            .map_err(|_| classify(sqlx::Error::PoolClosed))?;
        let (conn, reused) = self.checkout(false).await?;
        let failed = match op(conn).await {
            (conn, Ok(v)) => {
                self.give_back(conn);
                return Ok(v);
            }
            (_closed, Err(e @ StoreError::Unavailable(_))) if reused => e,
            (_closed, Err(e)) => return Err(e),
        };
        tracing::debug!(error = %failed, "a reused store connection failed; retrying on a new one");
        let (conn, _) = self.checkout(true).await?;
        let (conn, result) = op(conn).await;
        if result.is_ok() {
            self.give_back(conn);
        }
        result
    }

    /// The most recently used idle connection (unless `fresh`) and `true`, else a new one and
    /// `false`. The caller holds a permit.
    async fn checkout(&self, fresh: bool) -> Result<(PgConnection, bool), StoreError> {
        while let Some((mut conn, since)) = self.pop().filter(|_| !fresh) {
            if since.elapsed() < PING_IDLE_AFTER || conn.ping().await.is_ok() {
                return Ok((conn, true));
            }
            tracing::debug!("an idle store connection failed its ping; closing it");
        }
        let conn = tokio::time::timeout(ACQUIRE_TIMEOUT, self.opts.connect())
            .await
            .map_err(|_| classify(sqlx::Error::PoolTimedOut))?
            .map_err(classify)?;
        Ok((conn, false))
    }

    fn pop(&self) -> Option<(PgConnection, Instant)> {
        self.idle.lock().map_or(None, |mut idle| idle.pop())
    }

    fn give_back(&self, conn: PgConnection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((conn, Instant::now()));
        }
    }
}
