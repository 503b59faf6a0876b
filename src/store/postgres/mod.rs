//! The production backend: Postgres through sqlx, shared by several gateway replicas.
//!
//! Inputs: a `postgres://` URL. Outputs: the `Dialect` the shared rules run on (on the shared
//! sqlx pool), the gate's steps (`gate.rs`, on the gate's own connections, `conns.rs`), and the
//! listener (`listen.rs`) that turns the `approval_events` trigger's NOTIFYs, from every
//! replica, into events on the handle's broadcast feed.
//!
//! Invariants: single use across replicas — the consume `UPDATE` locks its candidate with
//! `FOR UPDATE SKIP LOCKED` and repeats the state conditions in the outer `WHERE` (`gate.rs`).
//! One pending row per identity comes from the partial unique index. A transaction that reads a
//! row before changing it locks it (`FOR UPDATE`).

mod conns;
mod gate;
mod listen;

use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgPool, Pool, Postgres};
use uuid::Uuid;

use self::conns::{Conns, PING_IDLE_AFTER};
use super::dialect::Dialect;
use super::{AuditEvent, StoreError};

pub use self::gate::GATE_SQL;
pub use self::listen::EVENTS_CHANNEL;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Connections: the replica's sqlx pool (API, sweeper, CLI, event listener), and the gate's
/// own set per store handle (each proxy shard has one, see `Store::for_this_thread`).
const POOL_MAX: u32 = 16;
const GATE_CONNS_MAX: usize = 8;

#[derive(Debug)]
pub(in crate::store) struct PgStore {
    pool: PgPool,
    /// The gate's hot path: `consume_or_create` and `record_upstream`.
    gate: Conns,
    opts: Arc<PgConnectOptions>,
    listening: AtomicBool,
}

impl PgStore {
    /// Never connects (the pool is lazy). Must be called inside a Tokio runtime.
    pub(in crate::store) fn open(url: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_MAX)
            .min_connections(0)
            // Fail closed quickly when the database is down (the proxy answers 503).
            .acquire_timeout(Duration::from_secs(3))
            // sqlx's default pings every connection it hands out; ping only those idle long
            // enough to have gone stale (a failed ping closes it and the pool opens another).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(opts.clone());
        let opts = Arc::new(opts);
        Ok(Self {
            pool,
            gate: Conns::new(Arc::clone(&opts), GATE_CONNS_MAX),
            opts,
            listening: AtomicBool::new(false),
        })
    }

    /// The same store with a gate connection set of its own, opened on the calling thread's
    /// runtime when first used.
    pub(in crate::store) fn sibling(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            gate: Conns::new(Arc::clone(&self.opts), GATE_CONNS_MAX),
            opts: Arc::clone(&self.opts),
            listening: AtomicBool::new(false),
        }
    }

    /// Apply migrations (idempotent). sqlx takes an advisory lock, so replicas starting
    /// together migrate once.
    pub(in crate::store) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(StoreError::Migrate)
    }
}

impl Dialect for PgStore {
    type Db = Postgres;
    type Time = DateTime<Utc>;
    type Id = Uuid;
    type Int = i32;
    type Ids = Vec<Uuid>;

    const LOCK: &'static str = " FOR UPDATE";
    const LOCK_SKIP: &'static str = " FOR UPDATE SKIP LOCKED";
    const BEGIN: &'static str = "BEGIN";

    fn time(t: DateTime<Utc>) -> DateTime<Utc> {
        t
    }

    fn from_time(t: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        Ok(t)
    }

    fn id(id: Uuid) -> Uuid {
        id
    }

    fn from_id(id: Uuid) -> Uuid {
        id
    }

    fn ids(ids: &[Uuid]) -> Vec<Uuid> {
        ids.to_vec()
    }

    fn in_ids(param: &str) -> String {
        format!(" = ANY({param})")
    }

    fn pool(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn publish(&self, _events: Vec<AuditEvent>) {}
}
