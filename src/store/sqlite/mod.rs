//! The embedded single-node backend: SQLite through sqlx.
//!
//! Inputs: a `sqlite:` URL (a file, created with its parent directory if absent, or
//! `sqlite::memory:` for tests). Outputs: the [`Dialect`] the shared rules run on, the gate's
//! steps (`gate.rs`), and committed audit events published on the in-process broadcast channel
//! the handle hands out.
//!
//! Invariant (single use): the pool has exactly ONE connection, so every transaction runs alone
//! — SQLite's single writer, made explicit. The consume `UPDATE` still repeats its state
//! conditions in the outer `WHERE`, so it stays correct should the file be shared by another
//! process (WAL + busy timeout serialise writers across processes).
//! WAL checkpoints run on a connection of their own, off the request path (`checkpoint.rs`); it
//! never touches rows.
//! Timestamps are stored as INTEGER microseconds (UTC), ids as hyphenated TEXT, JSON as TEXT.

mod checkpoint;
mod gate;

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite, SqlitePool};
use tokio::sync::broadcast;
use uuid::fmt::Hyphenated;
use uuid::Uuid;

use super::dialect::Dialect;
use super::model::corrupt;
use super::{AuditEvent, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug)]
pub(in crate::store) struct SqliteStore {
    pool: SqlitePool,
    events: broadcast::Sender<AuditEvent>,
    /// The background checkpointer's connection options; `None` for `:memory:` (no WAL).
    checkpoint_opts: Option<Box<SqliteConnectOptions>>,
    checkpointing: AtomicBool,
}

impl SqliteStore {
    /// Never connects (the pool is lazy). Must be called inside a Tokio runtime.
    pub(in crate::store) fn open(
        url: &str,
        events: broadcast::Sender<AuditEvent>,
    ) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let memory = url.contains(":memory:");
        if !memory {
            create_parent(opts.get_filename());
        }
        let checkpoint_opts = (!memory).then(|| Box::new(opts.clone()));
        // Checkpoints run in the background (`checkpoint.rs`); inline only as a backstop.
        let opts = opts.pragma(
            "wal_autocheckpoint",
            checkpoint::INLINE_AFTER_FRAMES.to_string(),
        );
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(10))
            // An in-process database does not go stale; sqlx's default ping per checkout would
            // cost one more trip to the connection's worker thread per gated request.
            .test_before_acquire(false)
            .connect_lazy_with(opts);
        Ok(Self {
            pool,
            events,
            checkpoint_opts,
            checkpointing: AtomicBool::new(false),
        })
    }

    /// Apply migrations (idempotent).
    pub(in crate::store) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(StoreError::Migrate)
    }

    /// Spawns the background checkpointer (once; not for `:memory:`). It ends when `alive`
    /// (the last `Store` clone) is dropped.
    pub(in crate::store) fn start_checkpointer<T: Send + Sync + 'static>(&self, alive: Weak<T>) {
        let Some(opts) = &self.checkpoint_opts else {
            return;
        };
        if !self.checkpointing.swap(true, Ordering::AcqRel) {
            tokio::spawn(checkpoint::run((**opts).clone(), alive));
        }
    }
}

impl Dialect for SqliteStore {
    type Db = Sqlite;
    type Time = i64;
    type Id = Hyphenated;
    type Int = i64;
    type Ids = String;

    const LOCK: &'static str = "";
    const LOCK_SKIP: &'static str = "";
    /// Every store transaction writes, so it takes the write lock as it begins, waiting up to
    /// the busy timeout while another connection holds it (the background `RESTART`
    /// checkpoint, or the operator CLI on the same file). A deferred `BEGIN` would take the
    /// lock at the first write instead, and SQLite does not wait there: a read transaction
    /// that cannot become a write one fails at once with `SQLITE_BUSY`.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    fn time(t: DateTime<Utc>) -> i64 {
        t.timestamp_micros()
    }

    fn from_time(t: i64) -> Result<DateTime<Utc>, StoreError> {
        DateTime::from_timestamp_micros(t).ok_or_else(|| corrupt("timestamp", &t.to_string()))
    }

    fn id(id: Uuid) -> Hyphenated {
        id.hyphenated()
    }

    fn from_id(id: Hyphenated) -> Uuid {
        id.into_uuid()
    }

    fn ids(ids: &[Uuid]) -> String {
        // A JSON array of hyphenated ids (`Uuid` serialises so).
        serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
    }

    fn in_ids(param: &str) -> String {
        format!(" IN (SELECT value FROM json_each({param}))")
    }

    fn pool(&self) -> &Pool<Sqlite> {
        &self.pool
    }

    fn publish(&self, events: Vec<AuditEvent>) {
        for e in events.into_iter().filter(|e| e.event.is_announced()) {
            // No subscribers is fine: the audit row is already committed.
            let _ = self.events.send(e);
        }
    }
}

/// Best effort: if it fails, the first connection reports the real error (store unavailable).
fn create_parent(file: &Path) {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the SQLite directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_sqlite_stores_them() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid");
        assert_eq!(SqliteStore::time(at), 1_700_000_000_123_456);
        assert_eq!(SqliteStore::from_time(SqliteStore::time(at)).ok(), Some(at));
        assert!(SqliteStore::from_time(i64::MAX).is_err());
        let id = Uuid::now_v7();
        assert_eq!(SqliteStore::from_id(SqliteStore::id(id)), id);
        assert_eq!(
            SqliteStore::ids(&[id, id]),
            format!("[\"{0}\",\"{0}\"]", id.hyphenated())
        );
        assert_eq!(
            SqliteStore::in_ids("$1"),
            " IN (SELECT value FROM json_each($1))"
        );
    }
}
