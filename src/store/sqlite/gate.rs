//! The gate's steps on SQLite, each one transaction on the single connection: consume an
//! approved approval, else reuse the live pending one, else create it (`gate`); and the
//! upstream's answer (`record_upstream`).
//!
//! Inputs: the approval asked for, `now`, the TTLs. Outputs: the outcome; the audit events
//! written are published after commit. Invariant: every state change writes its
//! `approval_events` row in the same transaction.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Row as _, SqliteConnection};
use uuid::Uuid;

use super::SqliteStore;
use crate::store::dialect::{Dialect as _, GateCall, UpstreamCall};
use crate::store::model::{classify, Row};
use crate::store::rules::{deadline, Query, Rules, COLS, SYSTEM_ACTOR};
use crate::store::*;

type R = Rules<SqliteStore>;

impl SqliteStore {
    /// The gate's step (see [`Store::consume_or_create`] and [`Store::request`]).
    pub(in crate::store) async fn gate(
        &self,
        call: GateCall<'_>,
    ) -> Result<GateOutcome, StoreError> {
        let mut tx = R::begin(self).await?;
        let mut events = Vec::new();
        let consumed = match call.consume {
            true => consume(&mut tx, call.new, call.now, &mut events).await?,
            false => None,
        };
        let outcome = match consumed {
            Some(id) => GateOutcome::Consumed(id),
            None => open_pending(&mut tx, call, &mut events).await?,
        };
        R::commit(self, tx, events).await?;
        Ok(outcome)
    }

    /// See [`Store::record_upstream`].
    pub(in crate::store) async fn record_upstream(
        &self,
        up: UpstreamCall,
    ) -> Result<(), StoreError> {
        let mut tx = R::begin(self).await?;
        let done = sqlx::query(
            "UPDATE approvals SET upstream_status = ?2, upstream_error = ?3 WHERE id = ?1",
        )
        .bind(Self::id(up.id))
        .bind(up.status.map(i64::from))
        .bind(&up.error)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let mut events = Vec::new();
        if done.rows_affected() > 0 {
            let (kind, actor) = (EventKind::Upstream, SYSTEM_ACTOR);
            let e = R::event(&mut tx, up.id, kind, actor, Via::Gateway, up.detail, up.now);
            events.push(e.await?);
        }
        R::commit(self, tx, events).await
    }
}

/// Step 1 of the gate: consume the newest approved, unconsumed, unexpired approval the gate
/// made (never one asked for through `POST /v1/approvals`, which has no method).
async fn consume(
    c: &mut SqliteConnection,
    new: &NewApproval,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
) -> Result<Option<ApprovalId>, StoreError> {
    // The outer WHERE repeats the state conditions: should another process have consumed the
    // row between the subquery and the update, nothing is consumed twice.
    let row = sqlx::query(
        "UPDATE approvals SET status = 'consumed', consumed_at = ?1 \
         WHERE id = (SELECT id FROM approvals WHERE scope = ?2 AND action = ?3 AND request_hash = ?4 \
                     AND requester = ?5 AND status = 'approved' AND expires_at > ?1 AND method IS NOT NULL \
                     ORDER BY decided_at DESC, id DESC LIMIT 1) \
           AND status = 'approved' AND consumed_at IS NULL AND expires_at > ?1 \
         RETURNING id",
    )
    .bind(SqliteStore::time(now))
    .bind(&new.scope)
    .bind(&new.action)
    .bind(&new.request_hash)
    .bind(&new.requester)
    .fetch_optional(&mut *c)
    .await
    .map_err(classify)?;
    let Some(row) = row else { return Ok(None) };
    let id = SqliteStore::from_id(row.try_get("id").map_err(StoreError::Query)?);
    let consumed = EventKind::Consumed;
    let e = R::event(
        c,
        id,
        consumed,
        &new.requester,
        Via::Gateway,
        json!({}),
        now,
    );
    events.push(e.await?);
    Ok(Some(ApprovalId(id)))
}

/// Binds `?1`..`?4`: the identity the gate looks approvals up by.
fn identity<'q>(q: Query<'q, SqliteStore>, new: &'q NewApproval) -> Query<'q, SqliteStore> {
    q.bind(&new.scope)
        .bind(&new.action)
        .bind(&new.request_hash)
        .bind(&new.requester)
}

async fn pending_row(
    c: &mut SqliteConnection,
    new: &NewApproval,
) -> Result<Option<Row>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE scope = ?1 AND action = ?2 AND request_hash = ?3 AND requester = ?4 \
           AND status = 'pending'"
    );
    let row = identity(sqlx::query(&sql), new)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(R::decode_row).transpose()
}

/// The approval a new one follows: the newest with this identity, if it was denied after the
/// last consumption (the README's "What the gate does", step 3).
async fn previous_denied(
    c: &mut SqliteConnection,
    new: &NewApproval,
) -> Result<Option<Uuid>, StoreError> {
    let sql = "SELECT id FROM approvals a WHERE scope = ?1 AND action = ?2 AND request_hash = ?3 AND requester = ?4 \
           AND status = 'denied' \
           AND a.created_at = (SELECT MAX(created_at) FROM approvals \
                               WHERE scope = ?1 AND action = ?2 AND request_hash = ?3 AND requester = ?4) \
           AND NOT EXISTS (SELECT 1 FROM approvals b WHERE b.scope = ?1 AND b.action = ?2 AND b.request_hash = ?3 \
                           AND b.requester = ?4 AND b.consumed_at >= a.decided_at) \
         ORDER BY id DESC LIMIT 1";
    let row = identity(sqlx::query(sql), new)
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    match row {
        Some(r) => Ok(Some(SqliteStore::from_id(
            r.try_get("id").map_err(StoreError::Query)?,
        ))),
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
    let row = R::bind_new(sqlx::query(&sql), new)
        .bind(i64::from(new.approvals_required.max(1)))
        .bind(SqliteStore::time(now))
        .bind(SqliteStore::time(deadline(now, ttl.pending)))
        .bind(previous.map(SqliteStore::id))
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(R::decode_row).transpose()
}

/// Step 2 of the gate (and `request`): reuse the live pending approval, or create one.
async fn open_pending(
    c: &mut SqliteConnection,
    call: GateCall<'_>,
    events: &mut Vec<AuditEvent>,
) -> Result<GateOutcome, StoreError> {
    let GateCall {
        new, ttl, now, via, ..
    } = call;
    let existing = match pending_row(c, new).await? {
        Some(row) if row.is_due(now) => {
            events.push(R::mark_expired(c, &row, now).await?);
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
    events.push(R::event(c, row.id, kind, &new.requester, via, detail, now).await?);
    R::pending(c, row, created, now).await
}
