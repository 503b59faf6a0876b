//! The SQLite transitions, each run inside the caller's transaction on the single connection.
//!
//! Inputs: an open transaction's connection, `now`, the TTLs. Outputs: the outcome, plus every
//! audit event written (pushed onto `events`, published by the caller after commit).
//! Invariant: every state change writes its `approval_events` row in the same transaction.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{Row as _, SqliteConnection};
use uuid::Uuid;

use super::common::{self, classify, Row};
use super::sqlite::{decisions, decode, micros, COLS};
use super::*;

/// What `open_pending` found or made.
pub(super) struct Opened {
    pub approval: Approval,
    pub created: bool,
    pub previous: Option<ApprovalId>,
}

pub(super) fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub(super) async fn event(
    c: &mut SqliteConnection,
    id: Uuid,
    kind: EventKind,
    actor: &str,
    via: Via,
    detail: Value,
    now: DateTime<Utc>,
) -> Result<AuditEvent, StoreError> {
    let row = sqlx::query(
        "INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
    )
    .bind(id_text(id))
    .bind(kind.as_str())
    .bind(actor)
    .bind(common::via_str(via))
    .bind(detail.to_string())
    .bind(micros(now))
    .fetch_one(&mut *c)
    .await
    .map_err(classify)?;
    let event_id: i64 = row.try_get("id").map_err(StoreError::Query)?;
    Ok(AuditEvent {
        id: event_id,
        approval_id: ApprovalId(id),
        event: kind,
        actor: actor.to_owned(),
        via,
        detail,
        at: now,
    })
}

pub(super) async fn fetch_row(
    c: &mut SqliteConnection,
    id: Uuid,
) -> Result<Option<Row>, StoreError> {
    let sql = format!("SELECT {COLS} FROM approvals WHERE id = ?1");
    let row = sqlx::query(&sql)
        .bind(id_text(id))
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn load(
    c: &mut SqliteConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Approval>, StoreError> {
    match fetch_row(c, id).await? {
        Some(row) => {
            let ds = decisions(c, id).await?;
            Ok(Some(row.into_approval(ds, now)?))
        }
        None => Ok(None),
    }
}

pub(super) async fn load_some(
    c: &mut SqliteConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Approval, StoreError> {
    load(c, id, now)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished")))
}

/// Step 1 of the gate: consume the newest approved, unconsumed, unexpired approval the gate
/// made (never one asked for through `POST /v1/approvals`, which has no method).
pub(super) async fn consume(
    c: &mut SqliteConnection,
    new: &NewApproval,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
) -> Result<Option<ApprovalId>, StoreError> {
    // The outer WHERE repeats the state conditions (BASELINES.md's consume trap).
    let row = sqlx::query(
        "UPDATE approvals SET status = 'consumed', consumed_at = ?1 \
         WHERE id = (SELECT id FROM approvals WHERE scope = ?2 AND action = ?3 AND request_hash = ?4 \
                     AND requester = ?5 AND status = 'approved' AND expires_at > ?1 AND method IS NOT NULL \
                     ORDER BY decided_at DESC, id DESC LIMIT 1) \
           AND status = 'approved' AND consumed_at IS NULL AND expires_at > ?1 \
         RETURNING id",
    )
    .bind(micros(now))
    .bind(&new.scope)
    .bind(&new.action)
    .bind(&new.request_hash)
    .bind(&new.requester)
    .fetch_optional(&mut *c)
    .await
    .map_err(classify)?;
    let Some(row) = row else { return Ok(None) };
    let id = Uuid::parse_str(row.try_get("id").map_err(StoreError::Query)?)
        .map_err(|_| StoreError::Corrupt("consumed id".into()))?;
    events.push(
        event(
            c,
            id,
            EventKind::Consumed,
            &new.requester,
            Via::Gateway,
            json!({}),
            now,
        )
        .await?,
    );
    Ok(Some(ApprovalId(id)))
}

async fn pending_row(
    c: &mut SqliteConnection,
    new: &NewApproval,
) -> Result<Option<Row>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE scope = ?1 AND action = ?2 AND request_hash = ?3 AND requester = ?4 \
           AND status = 'pending'"
    );
    let row = sqlx::query(&sql)
        .bind(&new.scope)
        .bind(&new.action)
        .bind(&new.request_hash)
        .bind(&new.requester)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode).transpose()
}

/// SPEC §6.3: the newest approval with this identity, if denied after the last consumption.
async fn previous_denied(
    c: &mut SqliteConnection,
    new: &NewApproval,
) -> Result<Option<Uuid>, StoreError> {
    let row = sqlx::query(
        "SELECT id FROM approvals a WHERE scope = ?1 AND action = ?2 AND request_hash = ?3 AND requester = ?4 \
           AND status = 'denied' \
           AND a.created_at = (SELECT MAX(created_at) FROM approvals \
                               WHERE scope = ?1 AND action = ?2 AND request_hash = ?3 AND requester = ?4) \
           AND NOT EXISTS (SELECT 1 FROM approvals b WHERE b.scope = ?1 AND b.action = ?2 AND b.request_hash = ?3 \
                           AND b.requester = ?4 AND b.consumed_at >= a.decided_at) \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(&new.scope)
    .bind(&new.action)
    .bind(&new.request_hash)
    .bind(&new.requester)
    .fetch_optional(&mut *c)
    .await
    .map_err(classify)?;
    match row {
        Some(r) => Ok(Uuid::parse_str(r.try_get("id").map_err(StoreError::Query)?).ok()),
        None => Ok(None),
    }
}

async fn insert_pending(
    c: &mut SqliteConnection,
    new: &NewApproval,
    ttl: Ttls,
    now: DateTime<Utc>,
    previous: Option<Uuid>,
) -> Result<Option<Row>, StoreError> {
    let sql = format!(
        "INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path, requester, \
           requester_actors, caller, approvals_required, created_at, expires_at, previous_id) \
         VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         ON CONFLICT (scope, action, request_hash, requester) WHERE status = 'pending' DO NOTHING RETURNING {COLS}"
    );
    let row = sqlx::query(&sql)
        .bind(id_text(ApprovalId::new().0))
        .bind(&new.action)
        .bind(&new.scope)
        .bind(&new.reason)
        .bind(new.context.to_string())
        .bind(&new.request_hash)
        .bind(&new.method)
        .bind(&new.path)
        .bind(&new.requester)
        .bind(json!(new.requester_actors).to_string())
        .bind(&new.caller)
        .bind(i64::from(new.approvals_required.max(1)))
        .bind(micros(now))
        .bind(micros(common::deadline(now, ttl.pending)))
        .bind(previous.map(id_text))
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn mark_expired(
    c: &mut SqliteConnection,
    row: &Row,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE approvals SET status = 'expired' WHERE id = ?1 AND status IN ('pending','approved')")
        .bind(id_text(row.id))
        .execute(&mut *c)
        .await
        .map_err(classify)?;
    let detail = json!({ "from": row.status, "expires_at": row.expires_at });
    events.push(
        event(
            c,
            row.id,
            EventKind::Expired,
            common::SYSTEM_ACTOR,
            Via::Gateway,
            detail,
            now,
        )
        .await?,
    );
    Ok(())
}

/// Step 2 of the gate (and `request`): reuse the live pending approval, or create one.
pub(super) async fn open_pending(
    c: &mut SqliteConnection,
    new: &NewApproval,
    ttl: Ttls,
    now: DateTime<Utc>,
    via: Via,
    events: &mut Vec<AuditEvent>,
) -> Result<Opened, StoreError> {
    let existing = match pending_row(c, new).await? {
        Some(row) if row.is_due(now) => {
            mark_expired(c, &row, now, events).await?;
            None
        }
        other => other,
    };
    let (row, created) = match existing {
        Some(row) => (row, false),
        None => {
            let previous = previous_denied(c, new).await?;
            match insert_pending(c, new, ttl, now, previous).await? {
                Some(row) => (row, true),
                None => (
                    pending_row(c, new)
                        .await?
                        .ok_or(StoreError::Corrupt("pending row vanished".into()))?,
                    false,
                ),
            }
        }
    };
    let previous = row.previous_id.map(ApprovalId);
    let (kind, detail) = match created {
        true => (
            EventKind::Requested,
            json!({ "previous": previous, "method": new.method, "path": new.path }),
        ),
        false => (EventKind::Deduplicated, json!({})),
    };
    events.push(event(c, row.id, kind, &new.requester, via, detail, now).await?);
    // A new row, or a pending one with a quorum of one, has no decisions (any vote closes it).
    let ds = if created || row.approvals_required <= 1 {
        Vec::new()
    } else {
        decisions(c, row.id).await?
    };
    Ok(Opened {
        approval: row.into_approval(ds, now)?,
        created,
        previous,
    })
}
