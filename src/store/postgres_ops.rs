//! The Postgres transitions. Hot-path steps are single statements (CTEs) so a state change and
//! its audit row commit together without an explicit transaction; multi-step transitions
//! (create, decide, withdraw, sweep) run in a transaction the caller opened.
//!
//! Inputs: a connection (or transaction), `now`, the TTLs. Outputs: outcomes; audit events
//! reach subscribers through the NOTIFY trigger, not from here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{Connection as _, PgConnection, PgPool, Row as _};
use uuid::Uuid;

use super::common::{self, classify, Row};
use super::postgres::{decode, decode_event, COLS, EVENT_COLS};
use super::*;

/// The gate's consume step, exactly as run (the race test executes this text on two sessions).
/// Binds: `$1` now, `$2` scope, `$3` action, `$4` request_hash, `$5` actor. Returns the consumed
/// approval's id, or no row. The candidate is locked with `FOR UPDATE SKIP LOCKED` and the outer
/// `WHERE` repeats the state conditions, so a second session can never consume it too.
pub const CONSUME_SQL: &str = "WITH c AS ( \
       UPDATE approvals SET status = 'consumed', consumed_at = $1 \
       WHERE id = (SELECT id FROM approvals \
                   WHERE scope = $2 AND action = $3 AND request_hash = $4 \
                     AND status = 'approved' AND expires_at > $1 \
                   ORDER BY decided_at DESC, id DESC LIMIT 1 FOR UPDATE SKIP LOCKED) \
         AND status = 'approved' AND consumed_at IS NULL AND expires_at > $1 \
       RETURNING id) \
     INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
     SELECT id, 'consumed', $5, 'gateway', '{}'::jsonb, $1 FROM c RETURNING approval_id";

pub(super) struct Opened {
    pub approval: Approval,
    pub created: bool,
    pub previous: Option<ApprovalId>,
}

pub(super) async fn event(
    c: &mut PgConnection,
    id: Uuid,
    kind: EventKind,
    actor: &str,
    via: Via,
    detail: Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO approval_events (approval_id, event, actor, via, detail, at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(kind.as_str())
        .bind(actor)
        .bind(common::via_str(via))
        .bind(detail)
        .bind(now)
        .execute(&mut *c)
        .await
        .map(drop)
        .map_err(classify)
}

pub(super) async fn event_by_id(pool: &PgPool, id: i64) -> Result<Option<AuditEvent>, StoreError> {
    let sql = format!("SELECT {EVENT_COLS} FROM approval_events WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode_event).transpose()
}

fn decision(r: &sqlx::postgres::PgRow) -> Result<(Uuid, DecisionRecord), StoreError> {
    let g = StoreError::Query;
    let record = DecisionRecord {
        approver: r.try_get("approver").map_err(g)?,
        decision: common::parse_vote(r.try_get("decision").map_err(g)?)?,
        comment: r.try_get("comment").map_err(g)?,
        decided_at: r.try_get("decided_at").map_err(g)?,
    };
    Ok((r.try_get("approval_id").map_err(g)?, record))
}

/// Rows → approvals, with every row's decisions fetched in one query.
pub(super) async fn with_decisions(
    c: &mut PgConnection,
    rows: Vec<Row>,
    now: DateTime<Utc>,
) -> Result<Vec<Approval>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let found = sqlx::query(
        "SELECT approval_id, approver, decision, comment, decided_at FROM approval_decisions \
         WHERE approval_id = ANY($1) ORDER BY decided_at, approver",
    )
    .bind(&ids)
    .fetch_all(&mut *c)
    .await
    .map_err(classify)?;
    let mut by_id: HashMap<Uuid, Vec<DecisionRecord>> = HashMap::new();
    for r in &found {
        let (id, d) = decision(r)?;
        by_id.entry(id).or_default().push(d);
    }
    rows.into_iter()
        .map(|row| {
            let ds = by_id.remove(&row.id).unwrap_or_default();
            row.into_approval(ds, now)
        })
        .collect()
}

pub(super) async fn fetch_row(
    c: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<Row>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn load(
    c: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Approval>, StoreError> {
    match fetch_row(c, id, false).await? {
        Some(row) => Ok(with_decisions(c, vec![row], now).await?.pop()),
        None => Ok(None),
    }
}

pub(super) async fn load_some(
    c: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Approval, StoreError> {
    load(c, id, now)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished")))
}

pub(super) async fn consume(
    c: &mut PgConnection,
    new: &NewApproval,
    now: DateTime<Utc>,
) -> Result<Option<ApprovalId>, StoreError> {
    let row = sqlx::query(CONSUME_SQL)
        .bind(now)
        .bind(&new.scope)
        .bind(&new.action)
        .bind(&new.request_hash)
        .bind(&new.requester)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.map(|r| {
        r.try_get("approval_id")
            .map(ApprovalId)
            .map_err(StoreError::Query)
    })
    .transpose()
}

async fn pending_row(c: &mut PgConnection, new: &NewApproval) -> Result<Option<Row>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE scope = $1 AND action = $2 AND request_hash = $3 AND status = 'pending'"
    );
    let row = sqlx::query(&sql)
        .bind(&new.scope)
        .bind(&new.action)
        .bind(&new.request_hash)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode).transpose()
}

/// Turns this identity's due pending row (if any) into `expired`, audited, in one statement.
async fn expire_identity(
    c: &mut PgConnection,
    new: &NewApproval,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH e AS (UPDATE approvals SET status = 'expired' \
                    WHERE scope = $1 AND action = $2 AND request_hash = $3 AND status = 'pending' AND expires_at <= $4 \
                    RETURNING id, expires_at) \
         INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
         SELECT id, 'expired', $5, 'gateway', jsonb_build_object('from', 'pending', 'expires_at', expires_at), $4 FROM e",
    )
    .bind(&new.scope)
    .bind(&new.action)
    .bind(&new.request_hash)
    .bind(now)
    .bind(common::SYSTEM_ACTOR)
    .execute(&mut *c)
    .await
    .map(drop)
    .map_err(classify)
}

/// SPEC §6.3: the newest approval with this identity, if denied after the last consumption.
async fn previous_denied(
    c: &mut PgConnection,
    new: &NewApproval,
) -> Result<Option<Uuid>, StoreError> {
    sqlx::query_scalar(
        "SELECT id FROM (SELECT id, status, decided_at FROM approvals \
                         WHERE scope = $1 AND action = $2 AND request_hash = $3 \
                         ORDER BY created_at DESC, id DESC LIMIT 1) a \
         WHERE a.status = 'denied' AND NOT EXISTS ( \
           SELECT 1 FROM approvals b WHERE b.scope = $1 AND b.action = $2 AND b.request_hash = $3 \
             AND b.consumed_at >= a.decided_at)",
    )
    .bind(&new.scope)
    .bind(&new.action)
    .bind(&new.request_hash)
    .fetch_optional(&mut *c)
    .await
    .map_err(classify)
}

async fn insert_pending(
    c: &mut PgConnection,
    new: &NewApproval,
    ttl: Ttls,
    now: DateTime<Utc>,
    previous: Option<Uuid>,
) -> Result<Option<Row>, StoreError> {
    let sql = format!(
        "INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path, requester, \
           requester_actors, caller, approvals_required, created_at, expires_at, previous_id) \
         VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (scope, action, request_hash) WHERE status = 'pending' DO NOTHING RETURNING {COLS}"
    );
    let required = i32::try_from(new.approvals_required.max(1)).unwrap_or(i32::MAX);
    let row = sqlx::query(&sql)
        .bind(ApprovalId::new().0)
        .bind(&new.action)
        .bind(&new.scope)
        .bind(&new.reason)
        .bind(&new.context)
        .bind(&new.request_hash)
        .bind(&new.method)
        .bind(&new.path)
        .bind(&new.requester)
        .bind(json!(new.requester_actors))
        .bind(&new.caller)
        .bind(required)
        .bind(now)
        .bind(common::deadline(now, ttl.pending))
        .bind(previous)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode).transpose()
}

/// Step 2 of the gate (and `request`). The common retry path (a live pending row exists) is two
/// autocommit statements; creating runs in a transaction.
pub(super) async fn open_pending(
    c: &mut PgConnection,
    new: &NewApproval,
    ttl: Ttls,
    now: DateTime<Utc>,
    via: Via,
) -> Result<Opened, StoreError> {
    if let Some(row) = pending_row(c, new).await? {
        if !row.is_due(now) {
            return reuse(c, row, new, now, via).await;
        }
    }
    let mut tx = c.begin().await.map_err(classify)?;
    expire_identity(&mut tx, new, now).await?;
    let previous = previous_denied(&mut tx, new).await?;
    let opened = match insert_pending(&mut tx, new, ttl, now, previous).await? {
        Some(row) => {
            let detail = json!({ "previous": previous, "method": new.method, "path": new.path });
            event(
                &mut tx,
                row.id,
                EventKind::Requested,
                &new.requester,
                via,
                detail,
                now,
            )
            .await?;
            let previous = row.previous_id.map(ApprovalId);
            Opened {
                approval: row.into_approval(Vec::new(), now)?,
                created: true,
                previous,
            }
        }
        // A concurrent first call won the partial unique index: reuse its row.
        None => match pending_row(&mut tx, new).await? {
            Some(row) => reuse(&mut tx, row, new, now, via).await?,
            None => return Err(StoreError::Corrupt("pending row vanished".into())),
        },
    };
    tx.commit().await.map_err(classify)?;
    Ok(opened)
}

async fn reuse(
    c: &mut PgConnection,
    row: Row,
    new: &NewApproval,
    now: DateTime<Utc>,
    via: Via,
) -> Result<Opened, StoreError> {
    event(
        c,
        row.id,
        EventKind::Deduplicated,
        &new.requester,
        via,
        json!({}),
        now,
    )
    .await?;
    let previous = row.previous_id.map(ApprovalId);
    // With a quorum of one, a still-pending approval has no decisions (any vote closes it):
    // skip the round trip on the hot retry path.
    let approval = if row.approvals_required <= 1 {
        row.into_approval(Vec::new(), now)?
    } else {
        with_decisions(c, vec![row], now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("approval vanished".into()))?
    };
    Ok(Opened {
        approval,
        created: false,
        previous,
    })
}
