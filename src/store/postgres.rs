//! The production backend: Postgres through sqlx, shared by several gateway replicas.
//!
//! Inputs: a `postgres://` URL. Outputs: the `ApprovalStore` operations, and (once started) a
//! listener task that turns `NOTIFY approval_events, '<event row as JSON>'` (sent by a trigger
//! at commit, from every replica; just the id when the row is too big) into `AuditEvent`s on
//! the handle's broadcast feed. The gate's hot path runs on its own connections
//! (`postgres_conns.rs`), everything else on the shared sqlx pool.
//!
//! Invariants: single use across replicas — the consume `UPDATE` locks its candidate with
//! `FOR UPDATE SKIP LOCKED` and repeats the state conditions in the outer `WHERE`, so a session
//! that waited on, or skipped, a row another session is consuming consumes nothing
//! (BASELINES.md's trap). One pending row per identity comes from the partial unique index.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection as _, PgPool, Postgres, QueryBuilder, Row as _};
use tokio::sync::broadcast;

use super::common::{self, classify, Row};
use super::postgres_conns::{Conns, PING_IDLE_AFTER};
use super::postgres_decide as decide;
use super::postgres_ops as ops;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub use super::postgres_ops::GATE_SQL;

/// The NOTIFY channel the `approval_events` trigger announces on.
pub const EVENTS_CHANNEL: &str = "approval_events";

/// Connections: the replica's sqlx pool (API, sweeper, CLI, event listener), and the gate's
/// own set per store handle (each proxy shard has one, see `Store::for_this_thread`).
const POOL_MAX: u32 = 16;
const GATE_CONNS_MAX: usize = 8;

#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The gate's hot path: `consume_or_create` and `record_upstream`.
    gate: Conns,
    opts: Arc<PgConnectOptions>,
    listening: AtomicBool,
}

pub(super) const COLS: &str =
    "id, status, action, scope, reason, context, request_hash, method, path, \
    requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at, \
    consumed_at, upstream_status, upstream_error, previous_id";

pub(super) const EVENT_COLS: &str = "id, approval_id, event, actor, via, detail, at";

impl PgStore {
    /// Never connects (the pool is lazy). Must be called inside a Tokio runtime.
    pub fn open(url: &str) -> Result<Self, StoreError> {
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
    pub(super) fn sibling(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            gate: Conns::new(Arc::clone(&self.opts), GATE_CONNS_MAX),
            opts: Arc::clone(&self.opts),
            listening: AtomicBool::new(false),
        }
    }

    /// Subscribe to the events channel and spawn the task feeding `feed`; returns once LISTEN
    /// is in place. The task ends when the feed (the last `Store` clone) is dropped.
    pub(super) async fn start_listener(
        &self,
        feed: Weak<broadcast::Sender<AuditEvent>>,
    ) -> Result<(), StoreError> {
        if self.listening.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(classify)?;
        listener.listen(EVENTS_CHANNEL).await.map_err(classify)?;
        self.listening.store(true, Ordering::Release);
        tokio::spawn(relay(listener, self.pool.clone(), feed));
        Ok(())
    }
}

/// Notification → event → broadcast. The payload is the event row as JSON (migration 0002),
/// or its id alone when the row is too big for a payload; only then is the row read. Events
/// are decoded only while someone subscribes (SSE streams, waiting requests).
async fn relay(mut listener: PgListener, pool: PgPool, feed: Weak<broadcast::Sender<AuditEvent>>) {
    loop {
        let note = tokio::time::timeout(Duration::from_secs(15), listener.recv()).await;
        let Some(feed) = feed.upgrade() else { return };
        match note {
            Err(_idle) => {}
            Ok(Ok(note)) if feed.receiver_count() > 0 => {
                match announced(&pool, note.payload()).await {
                    Ok(Some(e)) => {
                        let _ = feed.send(e);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, payload_len = note.payload().len(), "cannot read announced audit event")
                    }
                }
            }
            Ok(Ok(_unheard)) => {}
            Ok(Err(e)) => {
                // recv() reconnects and re-subscribes on the next call; events in between are
                // still in `approval_events` for `events_after` readers.
                tracing::warn!(error = %e, "event listener lost its connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The event a NOTIFY payload announces: the row itself as JSON, or an id to read.
async fn announced(pool: &PgPool, payload: &str) -> Result<Option<AuditEvent>, StoreError> {
    if let Ok(id) = payload.parse::<i64>() {
        return ops::event_by_id(pool, id).await;
    }
    let raw: NotifiedEvent = serde_json::from_str(payload)
        .map_err(|e| StoreError::Corrupt(format!("audit event payload: {e}")))?;
    Ok(Some(AuditEvent {
        id: raw.id,
        approval_id: ApprovalId(raw.approval_id),
        event: common::parse_event(&raw.event)?,
        actor: raw.actor,
        via: common::parse_via(&raw.via)?,
        detail: raw.detail,
        at: raw.at,
    }))
}

/// An `approval_events` row as `row_to_json` writes it.
#[derive(serde::Deserialize)]
struct NotifiedEvent {
    id: i64,
    approval_id: uuid::Uuid,
    event: String,
    actor: String,
    via: String,
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

pub(super) fn decode(r: &PgRow) -> Result<Row, StoreError> {
    let g = StoreError::Query;
    Ok(Row {
        id: r.try_get("id").map_err(g)?,
        status: r.try_get("status").map_err(g)?,
        action: r.try_get("action").map_err(g)?,
        scope: r.try_get("scope").map_err(g)?,
        reason: r.try_get("reason").map_err(g)?,
        context: r.try_get("context").map_err(g)?,
        request_hash: r.try_get("request_hash").map_err(g)?,
        method: r.try_get("method").map_err(g)?,
        path: r.try_get("path").map_err(g)?,
        requester: r.try_get("requester").map_err(g)?,
        requester_actors: r.try_get("requester_actors").map_err(g)?,
        caller: r.try_get("caller").map_err(g)?,
        approvals_required: i64::from(r.try_get::<i32, _>("approvals_required").map_err(g)?),
        created_at: r.try_get("created_at").map_err(g)?,
        expires_at: r.try_get("expires_at").map_err(g)?,
        decided_at: r.try_get("decided_at").map_err(g)?,
        consumed_at: r.try_get("consumed_at").map_err(g)?,
        upstream_status: r
            .try_get::<Option<i32>, _>("upstream_status")
            .map_err(g)?
            .map(i64::from),
        upstream_error: r.try_get("upstream_error").map_err(g)?,
        previous_id: r.try_get("previous_id").map_err(g)?,
    })
}

pub(super) fn decode_event(r: &PgRow) -> Result<AuditEvent, StoreError> {
    let g = StoreError::Query;
    Ok(AuditEvent {
        id: r.try_get("id").map_err(g)?,
        approval_id: ApprovalId(r.try_get("approval_id").map_err(g)?),
        event: common::parse_event(r.try_get("event").map_err(g)?)?,
        actor: r.try_get("actor").map_err(g)?,
        via: common::parse_via(r.try_get("via").map_err(g)?)?,
        detail: r.try_get("detail").map_err(g)?,
        at: r.try_get("at").map_err(g)?,
    })
}

#[async_trait]
impl ApprovalStore for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes an advisory lock, so replicas starting together migrate once.
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
        self.gate
            .run(|mut c| {
                Box::pin(async move {
                    let r = ops::consume_or_open(&mut c, new, ttl, now, Via::Gateway, true).await;
                    (c, r)
                })
            })
            .await
    }

    async fn request(
        &self,
        new: &NewApproval,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<(Approval, bool), StoreError> {
        let mut c = self.pool.acquire().await.map_err(classify)?;
        match ops::consume_or_open(&mut c, new, ttl, now, Via::Api, false).await? {
            GateOutcome::Pending {
                approval, created, ..
            } => Ok((approval, created)),
            GateOutcome::Consumed(_) => Err(StoreError::Corrupt(
                "a request for approval consumed one".into(),
            )),
        }
    }

    async fn record_upstream(
        &self,
        id: ApprovalId,
        result: UpstreamResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (status, error, detail) = match &result {
            UpstreamResult::Status(s) => (Some(i32::from(*s)), None, json!({ "status": s })),
            UpstreamResult::Error(e) => (None, Some(e.clone()), json!({ "error": e })),
        };
        // One statement: the update and its audit row commit together.
        let sql = "WITH u AS (UPDATE approvals SET upstream_status = $2, upstream_error = $3 WHERE id = $1 RETURNING id) \
             INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
             SELECT id, 'upstream', $4, 'gateway', $5, $6 FROM u";
        self.gate
            .run(|mut c| {
                let q = sqlx::query(sql)
                    .bind(id.0)
                    .bind(status)
                    .bind(error.clone())
                    .bind(common::SYSTEM_ACTOR)
                    .bind(detail.clone())
                    .bind(now);
                Box::pin(async move {
                    let r = q.execute(&mut c).await.map(drop).map_err(classify);
                    (c, r)
                })
            })
            .await
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
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {COLS} FROM approvals WHERE true"));
        match filter.status {
            Some(s @ (Status::Pending | Status::Approved)) => {
                q.push(" AND status = ")
                    .push_bind(s.as_str())
                    .push(" AND expires_at > ")
                    .push_bind(now);
            }
            Some(Status::Expired) => {
                q.push(" AND (status = 'expired' OR (status IN ('pending','approved') AND expires_at <= ")
                    .push_bind(now)
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
            q.push(" AND (created_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let mut c = self.pool.acquire().await.map_err(classify)?;
        let rows = q.build().fetch_all(&mut *c).await.map_err(classify)?;
        let rows: Vec<Row> = rows.iter().map(decode).collect::<Result<_, _>>()?;
        let more = rows.len() > limit as usize;
        let items =
            ops::with_decisions(&mut c, rows.into_iter().take(limit as usize).collect(), now)
                .await?;
        let next_cursor = match items.last() {
            Some(last) if more => Some(common::encode_cursor(last.created_at, last.id.0)),
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
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let outcome = decide::decide(&mut tx, id.0, vote, ttl, now).await?;
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    async fn withdraw(
        &self,
        id: ApprovalId,
        actor: &str,
        via: Via,
        now: DateTime<Utc>,
    ) -> Result<WithdrawOutcome, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let outcome = decide::withdraw(&mut tx, id.0, actor, via, now).await?;
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    async fn expire_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let expired = decide::expire_due(&mut tx, now).await?;
        tx.commit().await.map_err(classify)?;
        Ok(expired)
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let sql =
            format!("SELECT {EVENT_COLS} FROM approval_events WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(decode_event).collect()
    }

    async fn pending_counts(&self, now: DateTime<Utc>) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT action, COUNT(*) AS n FROM approvals WHERE status = 'pending' AND expires_at > $1 \
             GROUP BY action ORDER BY action",
        )
        .bind(now)
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
        let row = sqlx::query(&format!("{MIRROR_SELECT} WHERE approval_id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(decode_mirror).transpose()
    }

    async fn mirror_find(&self, server_id: &str) -> Result<Option<MirrorRow>, StoreError> {
        let row = sqlx::query(&format!("{MIRROR_SELECT} WHERE server_id = $1"))
            .bind(server_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(decode_mirror).transpose()
    }

    async fn mirror_set(&self, row: &MirrorRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let replaced: Option<String> = sqlx::query_scalar(
            "SELECT server_id FROM molecule_mirror WHERE approval_id = $1 FOR UPDATE",
        )
        .bind(row.approval_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO molecule_mirror (approval_id, workspace_id, server_id, mirrored_at, written_back) \
             VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (approval_id) DO UPDATE SET \
             workspace_id = excluded.workspace_id, server_id = excluded.server_id, \
             mirrored_at = excluded.mirrored_at, written_back = NULL",
        )
        .bind(row.approval_id.0)
        .bind(&row.workspace_id)
        .bind(&row.server_id)
        .bind(row.mirrored_at)
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
        sqlx::query("UPDATE molecule_mirror SET written_back = $2 WHERE approval_id = $1")
            .bind(id.0)
            .bind(decision)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(classify)
    }

    async fn mirror_unwritten(&self, limit: u32) -> Result<Vec<ApprovalId>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(UNWRITTEN_SELECT)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(ids.into_iter().map(ApprovalId).collect())
    }
}

/// Mirrored approvals no longer pending whose server row still waits for the outcome.
const UNWRITTEN_SELECT: &str = "SELECT m.approval_id FROM molecule_mirror m \
     JOIN approvals a ON a.id = m.approval_id \
     WHERE m.written_back IS NULL AND a.status <> 'pending' ORDER BY m.mirrored_at LIMIT $1";

const MIRROR_SELECT: &str =
    "SELECT approval_id, workspace_id, server_id, mirrored_at, written_back FROM molecule_mirror";

fn decode_mirror(r: &PgRow) -> Result<MirrorRow, StoreError> {
    let g = StoreError::Query;
    Ok(MirrorRow {
        approval_id: ApprovalId(r.try_get("approval_id").map_err(g)?),
        workspace_id: r.try_get("workspace_id").map_err(g)?,
        server_id: r.try_get("server_id").map_err(g)?,
        mirrored_at: r.try_get("mirrored_at").map_err(g)?,
        written_back: r.try_get("written_back").map_err(g)?,
    })
}
