//! The store handle the rest of the gateway holds: the backend chosen by URL, readiness, and
//! the live audit-event feed.
//!
//! Inputs: the store URL (`sqlite:…` or `postgres://…`). Outputs: `Store` (cheap to clone).
//! Invariants: `open` never connects, so the gateway starts while the database is down;
//! `is_ready` turns true only after migrations succeeded (and, on Postgres, once the event
//! listener is subscribed, so no committed event is missed by local subscribers after that).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{ApprovalStore, AuditEvent, StoreError};

/// Buffered events per subscriber before a slow one starts lagging (it then re-reads with
/// `events_after`).
const FEED_CAPACITY: usize = 1024;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
    /// Postgres: gate connections of this thread's own ([`Store::for_this_thread`]), else `None`.
    local: Option<Arc<PgStore>>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    ready: AtomicBool,
    feed: Arc<broadcast::Sender<AuditEvent>>,
}

#[derive(Debug)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Never connects: a pool is created lazily, so the gateway starts with the store down.
    /// Err only for a bad URL. Must be called inside a Tokio runtime.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        // sqlx spawns pool maintenance tasks on creation; without a runtime that would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Url(
                "the store must be opened inside a Tokio runtime".into(),
            ));
        }
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(SqliteStore::open(url, feed.clone())?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgStore::open(url)?)
        } else {
            return Err(StoreError::Url("expected sqlite:… or postgres://…".into()));
        };
        let inner = Inner {
            backend,
            ready: AtomicBool::new(false),
            feed: Arc::new(feed),
        };
        Ok(Store {
            inner: Arc::new(inner),
            local: None,
        })
    }

    /// The same store (readiness, event feed, API pool) with, on Postgres, a set of gate
    /// connections of its own, opened on the calling thread's runtime: for a proxy shard. A
    /// socket is registered with the reactor of the runtime that opened it; used from another
    /// runtime, every read and write wakes that runtime's thread first. A shard's own set keeps
    /// each gated request's round trips on its thread. SQLite has one connection on a worker
    /// thread of its own either way: shared as is.
    pub fn for_this_thread(&self) -> Store {
        let local = match &self.inner.backend {
            Backend::Postgres(pg) => Some(Arc::new(pg.sibling())),
            Backend::Sqlite(_) => None,
        };
        Store {
            inner: Arc::clone(&self.inner),
            local,
        }
    }

    pub fn backend(&self) -> &dyn ApprovalStore {
        if let Some(local) = &self.local {
            return &**local;
        }
        match &self.inner.backend {
            Backend::Sqlite(s) => s,
            Backend::Postgres(s) => s,
        }
    }

    /// True once migrations have been applied (gating needs it; /readyz reports it).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Background task: retry `migrate` with capped backoff until it succeeds, then mark ready.
    /// Returns when done or on shutdown.
    pub async fn migrate_until_ready(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = BACKOFF_START;
        loop {
            match self.try_ready().await {
                Ok(()) => {
                    self.inner.ready.store(true, Ordering::Release);
                    tracing::info!("store ready");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "store not ready"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    async fn try_ready(&self) -> Result<(), StoreError> {
        self.backend().migrate().await?;
        match &self.inner.backend {
            Backend::Postgres(pg) => pg.start_listener(Arc::downgrade(&self.inner.feed)).await?,
            Backend::Sqlite(sqlite) => sqlite.start_checkpointer(Arc::downgrade(&self.inner.feed)),
        }
        Ok(())
    }

    /// Every committed audit event that [`super::EventKind::is_announced`] (all but retries and
    /// upstream results), live (Postgres: from every replica via LISTEN/NOTIFY).
    /// Delivery starts once the store is ready; a lagging receiver should catch up with
    /// `events_after`.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.inner.feed.subscribe()
    }
}
