//! The embedded single-node backend: SQLite through sqlx.
//!
//! Inputs: a `sqlite:` URL (a file, created with its parent directory if absent, or
//! `sqlite::memory:` for tests). Outputs: the `ApprovalStore` operations; committed audit events
//! are published on the in-process broadcast channel the handle hands out.
//!
//! Invariant (single use): the pool has exactly ONE connection, so every transaction runs alone
//! — SQLite's single writer, made explicit. The consume `UPDATE` still repeats its state
//! conditions in the outer `WHERE`, so it stays correct should the file be shared by another
//! process (WAL + busy timeout serialise writers across processes).
//! WAL checkpoints run on a connection of their own, off the request path
//! (`sqlite_checkpoint.rs`); it never touches rows.
//! Timestamps are stored as INTEGER microseconds (UTC).

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::common::{self, classify, corrupt, Row};
use super::sqlite_checkpoint as checkpoint;
use super::sqlite_decide as decide;
use super::sqlite_ops as ops;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    events: broadcast::Sender<AuditEvent>,
    /// The background checkpointer's connection options; `None` for `:memory:` (no WAL).
    checkpoint_opts: Option<Box<SqliteConnectOptions>>,
    checkpointing: AtomicBool,
}

impl SqliteStore {
    /// Never connects (the pool is lazy). Must be called inside a Tokio runtime.
    pub fn open(url: &str, events: broadcast::Sender<AuditEvent>) -> Result<Self, StoreError> {
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
        // Checkpoints run in the background (`sqlite_checkpoint.rs`); inline only as a backstop.
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

    /// Spawns the background checkpointer (once; not for `:memory:`). It ends when `alive`
    /// (the last `Store` clone) is dropped.
    pub(super) fn start_checkpointer<T: Send + Sync + 'static>(&self, alive: Weak<T>) {
        let Some(opts) = &self.checkpoint_opts else {
            return;
        };
        if !self.checkpointing.swap(true, Ordering::AcqRel) {
            tokio::spawn(checkpoint::run((**opts).clone(), alive));
        }
    }

    /// Every store transaction writes, so it takes the write lock as it begins, waiting up to
    /// the busy timeout while another connection holds it (the background `RESTART`
    /// checkpoint, or the operator CLI on the same file). A deferred `BEGIN` would take the
    /// lock at the first write instead, and SQLite does not wait there: a read transaction
    /// that cannot become a write one fails at once with `SQLITE_BUSY`.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)
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

pub(super) const COLS: &str =
    "id, status, action, scope, reason, context, request_hash, method, path, \
    requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at, \
    consumed_at, upstream_status, upstream_error, previous_id";

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt("timestamp", &v.to_string()))
}

fn opt_time(v: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    v.map(time).transpose()
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| corrupt("uuid", s))
}

fn json_text(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|_| corrupt("json", s))
}

pub(super) fn decode(r: &SqliteRow) -> Result<Row, StoreError> {
    let g = |e: sqlx::Error| StoreError::Query(e);
    Ok(Row {
        id: uuid(r.try_get("id").map_err(g)?)?,
        status: r.try_get("status").map_err(g)?,
        action: r.try_get("action").map_err(g)?,
        scope: r.try_get("scope").map_err(g)?,
        reason: r.try_get("reason").map_err(g)?,
        context: json_text(r.try_get("context").map_err(g)?)?,
        request_hash: r.try_get("request_hash").map_err(g)?,
        method: r.try_get("method").map_err(g)?,
        path: r.try_get("path").map_err(g)?,
        requester: r.try_get("requester").map_err(g)?,
        requester_actors: json_text(r.try_get("requester_actors").map_err(g)?)?,
        caller: r.try_get("caller").map_err(g)?,
        approvals_required: r.try_get("approvals_required").map_err(g)?,
        created_at: time(r.try_get("created_at").map_err(g)?)?,
        expires_at: time(r.try_get("expires_at").map_err(g)?)?,
        decided_at: opt_time(r.try_get("decided_at").map_err(g)?)?,
        consumed_at: opt_time(r.try_get("consumed_at").map_err(g)?)?,
        upstream_status: r.try_get("upstream_status").map_err(g)?,
        upstream_error: r.try_get("upstream_error").map_err(g)?,
        previous_id: r
            .try_get::<Option<String>, _>("previous_id")
            .map_err(g)?
            .as_deref()
            .map(uuid)
            .transpose()?,
    })
}

pub(super) fn decode_event(r: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let g = |e: sqlx::Error| StoreError::Query(e);
    Ok(AuditEvent {
        id: r.try_get("id").map_err(g)?,
        approval_id: ApprovalId(uuid(r.try_get("approval_id").map_err(g)?)?),
        event: common::parse_event(r.try_get("event").map_err(g)?)?,
        actor: r.try_get("actor").map_err(g)?,
        via: common::parse_via(r.try_get("via").map_err(g)?)?,
        detail: json_text(r.try_get("detail").map_err(g)?)?,
        at: time(r.try_get("at").map_err(g)?)?,
    })
}

pub(super) async fn decisions(
    c: &mut SqliteConnection,
    id: Uuid,
) -> Result<Vec<DecisionRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT approver, decision, comment, decided_at FROM approval_decisions \
         WHERE approval_id = ?1 ORDER BY decided_at, approver",
    )
    .bind(id.hyphenated().to_string())
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?;
    rows.iter()
        .map(|r| {
            Ok(DecisionRecord {
                approver: r.try_get("approver").map_err(StoreError::Query)?,
                decision: common::parse_vote(r.try_get("decision").map_err(StoreError::Query)?)?,
                comment: r.try_get("comment").map_err(StoreError::Query)?,
                decided_at: time(r.try_get("decided_at").map_err(StoreError::Query)?)?,
            })
        })
        .collect()
}

#[async_trait]
impl ApprovalStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(StoreError::Migrate)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(classify)
    }

    async fn consume_or_create(
        &self,
        new: &NewApproval,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<GateOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut events = Vec::new();
        let outcome = match ops::consume(&mut tx, new, now, &mut events).await? {
            Some(id) => GateOutcome::Consumed(id),
            None => {
                let o =
                    ops::open_pending(&mut tx, new, ttl, now, Via::Gateway, &mut events).await?;
                GateOutcome::Pending {
                    approval: o.approval,
                    created: o.created,
                    previous: o.previous,
                }
            }
        };
        tx.commit().await.map_err(classify)?;
        self.publish(events);
        Ok(outcome)
    }

    async fn request(
        &self,
        new: &NewApproval,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<(Approval, bool), StoreError> {
        let mut tx = self.write_tx().await?;
        let mut events = Vec::new();
        let o = ops::open_pending(&mut tx, new, ttl, now, Via::Api, &mut events).await?;
        tx.commit().await.map_err(classify)?;
        self.publish(events);
        Ok((o.approval, o.created))
    }

    async fn record_upstream(
        &self,
        id: ApprovalId,
        result: UpstreamResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (status, error, detail) = match &result {
            UpstreamResult::Status(s) => (Some(i64::from(*s)), None, json!({ "status": s })),
            UpstreamResult::Error(e) => (None, Some(e.clone()), json!({ "error": e })),
        };
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE approvals SET upstream_status = ?2, upstream_error = ?3 WHERE id = ?1",
        )
        .bind(id.to_string())
        .bind(status)
        .bind(error)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let mut events = Vec::new();
        if done.rows_affected() > 0 {
            let e = ops::event(
                &mut tx,
                id.0,
                EventKind::Upstream,
                common::SYSTEM_ACTOR,
                Via::Gateway,
                detail,
                now,
            )
            .await?;
            events.push(e);
        }
        tx.commit().await.map_err(classify)?;
        self.publish(events);
        Ok(())
    }

    async fn get(
        &self,
        id: ApprovalId,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>, StoreError> {
        let mut c = self.pool.acquire().await.map_err(classify)?;
        ops::load(&mut c, id.0, now).await
    }

    async fn list(&self, filter: &ListFilter, now: DateTime<Utc>) -> Result<Page, StoreError> {
        let limit = common::clamp_limit(filter.limit);
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {COLS} FROM approvals WHERE 1=1"));
        let n = micros(now);
        match filter.status {
            Some(s @ (Status::Pending | Status::Approved)) => {
                q.push(" AND status = ")
                    .push_bind(s.as_str())
                    .push(" AND expires_at > ")
                    .push_bind(n);
            }
            Some(Status::Expired) => {
                q.push(" AND (status = 'expired' OR (status IN ('pending','approved') AND expires_at <= ")
                    .push_bind(n)
                    .push("))");
            }
            Some(s) => {
                q.push(" AND status = ").push_bind(s.as_str());
            }
            None => {}
        }
        for (col, v) in [
            ("scope", &filter.scope),
            ("action", &filter.action),
            ("requester", &filter.requester),
        ] {
            if let Some(v) = v {
                q.push(format!(" AND {col} = ")).push_bind(v.clone());
            }
        }
        if let Some(cursor) = &filter.cursor {
            let (at, id) = common::decode_cursor(cursor).ok_or(StoreError::InvalidCursor)?;
            let (at, id) = (micros(at), id.hyphenated().to_string());
            q.push(" AND (created_at < ")
                .push_bind(at)
                .push(" OR (created_at = ")
                .push_bind(at);
            q.push(" AND id < ").push_bind(id).push("))");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let mut c = self.pool.acquire().await.map_err(classify)?;
        let rows = q.build().fetch_all(&mut *c).await.map_err(classify)?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(limit as usize) {
            let row = decode(r)?;
            let ds = decisions(&mut c, row.id).await?;
            items.push(row.into_approval(ds, now)?);
        }
        let next_cursor = match items.last() {
            Some(last) if rows.len() > limit as usize => {
                Some(common::encode_cursor(last.created_at, last.id.0))
            }
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    async fn decide(
        &self,
        id: ApprovalId,
        vote: &Vote,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<DecideOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut events = Vec::new();
        let outcome = decide::decide(&mut tx, id.0, vote, ttl, now, &mut events).await?;
        tx.commit().await.map_err(classify)?;
        self.publish(events);
        Ok(outcome)
    }

    async fn withdraw(
        &self,
        id: ApprovalId,
        actor: &str,
        via: Via,
        now: DateTime<Utc>,
    ) -> Result<WithdrawOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut events = Vec::new();
        let outcome = decide::withdraw(&mut tx, id.0, actor, via, now, &mut events).await?;
        tx.commit().await.map_err(classify)?;
        self.publish(events);
        Ok(outcome)
    }

    async fn expire_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut events = Vec::new();
        let expired = decide::expire_due(&mut tx, now, &mut events).await?;
        tx.commit().await.map_err(classify)?;
        self.publish(events);
        Ok(expired)
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, approval_id, event, actor, via, detail, at FROM approval_events \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter().map(decode_event).collect()
    }

    async fn pending_counts(&self, now: DateTime<Utc>) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT action, COUNT(*) AS n FROM approvals WHERE status = 'pending' AND expires_at > ?1 \
             GROUP BY action ORDER BY action",
        )
        .bind(micros(now))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("action").map_err(StoreError::Query)?,
                    r.try_get("n").map_err(StoreError::Query)?,
                ))
            })
            .collect()
    }

    async fn mirror_get(&self, id: ApprovalId) -> Result<Option<MirrorRow>, StoreError> {
        let row = sqlx::query(&format!("{MIRROR_SELECT} WHERE approval_id = ?1"))
            .bind(ops::id_text(id.0))
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(decode_mirror).transpose()
    }

    async fn mirror_find(&self, server_id: &str) -> Result<Option<MirrorRow>, StoreError> {
        let row = sqlx::query(&format!("{MIRROR_SELECT} WHERE server_id = ?1"))
            .bind(server_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(decode_mirror).transpose()
    }

    async fn mirror_set(&self, row: &MirrorRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let replaced: Option<String> =
            sqlx::query_scalar("SELECT server_id FROM molecule_mirror WHERE approval_id = ?1")
                .bind(ops::id_text(row.approval_id.0))
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
        sqlx::query(
            "INSERT INTO molecule_mirror (approval_id, workspace_id, server_id, mirrored_at, written_back) \
             VALUES (?1, ?2, ?3, ?4, NULL) ON CONFLICT (approval_id) DO UPDATE SET \
             workspace_id = excluded.workspace_id, server_id = excluded.server_id, \
             mirrored_at = excluded.mirrored_at, written_back = NULL",
        )
        .bind(ops::id_text(row.approval_id.0))
        .bind(&row.workspace_id)
        .bind(&row.server_id)
        .bind(micros(row.mirrored_at))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let detail = common::mirrored_detail(row, replaced.as_deref());
        ops::event(
            &mut tx,
            row.approval_id.0,
            EventKind::Mirrored,
            actor,
            Via::Gateway,
            detail,
            row.mirrored_at,
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn mirror_written_back(&self, id: ApprovalId, decision: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE molecule_mirror SET written_back = ?2 WHERE approval_id = ?1")
            .bind(ops::id_text(id.0))
            .bind(decision)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(classify)
    }

    async fn mirror_unwritten(&self, limit: u32) -> Result<Vec<ApprovalId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(UNWRITTEN_SELECT)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        ids.iter().map(|id| uuid(id).map(ApprovalId)).collect()
    }
}

/// Mirrored approvals no longer pending whose server row still waits for the outcome.
const UNWRITTEN_SELECT: &str = "SELECT m.approval_id FROM molecule_mirror m \
     JOIN approvals a ON a.id = m.approval_id \
     WHERE m.written_back IS NULL AND a.status <> 'pending' ORDER BY m.mirrored_at LIMIT ?1";

const MIRROR_SELECT: &str =
    "SELECT approval_id, workspace_id, server_id, mirrored_at, written_back FROM molecule_mirror";

fn decode_mirror(r: &SqliteRow) -> Result<MirrorRow, StoreError> {
    let g = StoreError::Query;
    Ok(MirrorRow {
        approval_id: ApprovalId(uuid(r.try_get("approval_id").map_err(g)?)?),
        workspace_id: r.try_get("workspace_id").map_err(g)?,
        server_id: r.try_get("server_id").map_err(g)?,
        mirrored_at: time(r.try_get("mirrored_at").map_err(g)?)?,
        written_back: r.try_get("written_back").map_err(g)?,
    })
}
