//! SQLite votes, withdrawal and the sweeper, each inside the caller's transaction.
//!
//! Inputs: the transaction's connection, the vote or actor, `now`, the TTLs. Outputs: the
//! outcome, plus the audit events written (pushed onto `events`, published after commit).
//! Invariant: only a pending, not-yet-due row accepts a vote or a withdrawal; a due one is
//! turned `expired` (audited) on the spot and reported as not pending.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::common::{self, classify, Row};
use super::sqlite::{decode, micros, COLS};
use super::sqlite_ops::{event, fetch_row, id_text, load_some, mark_expired};
use super::*;

/// A row that is no longer open to votes/withdrawal: expire it first if due, then report it.
async fn not_open(
    c: &mut SqliteConnection,
    row: &Row,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
) -> Result<Option<Approval>, StoreError> {
    if row.is_due(now) {
        mark_expired(c, row, now, events).await?;
    } else if row.status == "pending" {
        return Ok(None);
    }
    Ok(Some(load_some(c, row.id, now).await?))
}

pub(super) async fn decide(
    c: &mut SqliteConnection,
    id: Uuid,
    vote: &Vote,
    ttl: Ttls,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
) -> Result<DecideOutcome, StoreError> {
    let Some(row) = fetch_row(c, id).await? else {
        return Ok(DecideOutcome::NotFound);
    };
    if let Some(a) = not_open(c, &row, now, events).await? {
        return Ok(DecideOutcome::NotPending(a));
    }
    let inserted = sqlx::query(
        "INSERT INTO approval_decisions (approval_id, approver, decision, comment, decided_at, via) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (approval_id, approver) DO NOTHING",
    )
    .bind(id_text(id))
    .bind(&vote.approver)
    .bind(common::vote_str(vote.kind))
    .bind(&vote.comment)
    .bind(micros(now))
    .bind(common::via_str(vote.via))
    .execute(&mut *c)
    .await
    .map_err(classify)?;
    if inserted.rows_affected() == 0 {
        return Ok(DecideOutcome::AlreadyVoted(load_some(c, id, now).await?));
    }
    let detail = common::vote_detail(vote.kind, &vote.comment);
    events.push(
        event(
            c,
            id,
            EventKind::Voted,
            &vote.approver,
            vote.via,
            detail.clone(),
            now,
        )
        .await?,
    );
    let approvals: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM approval_decisions WHERE approval_id = ?1 AND decision = 'approve'",
    )
    .bind(id_text(id))
    .fetch_one(&mut *c)
    .await
    .map_err(classify)?;
    let next = common::next_state(
        vote.kind,
        approvals,
        row.approvals_required,
        ttl,
        now,
        row.expires_at,
    );
    if let Some((status, kind, expires)) = next {
        sqlx::query(
            "UPDATE approvals SET status = ?2, decided_at = ?3, expires_at = ?4 WHERE id = ?1",
        )
        .bind(id_text(id))
        .bind(status.as_str())
        .bind(micros(now))
        .bind(micros(expires))
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        events.push(event(c, id, kind, &vote.approver, vote.via, detail, now).await?);
    }
    Ok(DecideOutcome::Recorded(load_some(c, id, now).await?))
}

pub(super) async fn withdraw(
    c: &mut SqliteConnection,
    id: Uuid,
    actor: &str,
    via: Via,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
) -> Result<WithdrawOutcome, StoreError> {
    let Some(row) = fetch_row(c, id).await? else {
        return Ok(WithdrawOutcome::NotFound);
    };
    if let Some(a) = not_open(c, &row, now, events).await? {
        return Ok(WithdrawOutcome::NotPending(a));
    }
    sqlx::query("UPDATE approvals SET status = 'withdrawn', decided_at = ?2 WHERE id = ?1 AND status = 'pending'")
        .bind(id_text(id))
        .bind(micros(now))
        .execute(&mut *c)
        .await
        .map_err(classify)?;
    events.push(event(c, id, EventKind::Withdrawn, actor, via, json!({}), now).await?);
    Ok(WithdrawOutcome::Withdrawn(load_some(c, id, now).await?))
}

pub(super) async fn expire_due(
    c: &mut SqliteConnection,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
) -> Result<Vec<Approval>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE status IN ('pending','approved') AND expires_at <= ?1 ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql)
        .bind(micros(now))
        .fetch_all(&mut *c)
        .await
        .map_err(classify)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let row = decode(r)?;
        mark_expired(c, &row, now, events).await?;
        out.push(load_some(c, row.id, now).await?);
    }
    Ok(out)
}
