//! Postgres votes, withdrawal and the sweeper, each inside a transaction the caller opened.
//!
//! Inputs: the transaction, the vote or actor, `now`, the TTLs. Outputs: the outcome; audit
//! events reach subscribers through the NOTIFY trigger.
//! Invariant: the approval row is locked (`FOR UPDATE`) before it is judged, so concurrent
//! votes on one approval are serialised; only a pending, not-yet-due row accepts a vote or a
//! withdrawal, and a due one is turned `expired` (audited) on the spot.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::common::{self, classify, Row};
use super::postgres::{decode, COLS};
use super::postgres_ops::{event, fetch_row, load_some, with_decisions};
use super::*;

async fn mark_expired(
    c: &mut PgConnection,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE approvals SET status = 'expired' WHERE id = $1 AND status IN ('pending','approved')")
        .bind(row.id)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
    let detail = json!({ "from": row.status, "expires_at": row.expires_at });
    event(
        c,
        row.id,
        EventKind::Expired,
        common::SYSTEM_ACTOR,
        Via::Gateway,
        detail,
        now,
    )
    .await
}

/// A locked row no longer open to votes/withdrawal: expire it first if due, then report it.
async fn not_open(
    c: &mut PgConnection,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<Option<Approval>, StoreError> {
    if row.is_due(now) {
        mark_expired(c, row, now).await?;
    } else if row.status == "pending" {
        return Ok(None);
    }
    Ok(Some(load_some(c, row.id, now).await?))
}

pub(super) async fn decide(
    c: &mut PgConnection,
    id: Uuid,
    vote: &Vote,
    ttl: Ttls,
    now: DateTime<Utc>,
) -> Result<DecideOutcome, StoreError> {
    let Some(row) = fetch_row(c, id, true).await? else {
        return Ok(DecideOutcome::NotFound);
    };
    if let Some(a) = not_open(c, &row, now).await? {
        return Ok(DecideOutcome::NotPending(a));
    }
    let inserted = sqlx::query(
        "INSERT INTO approval_decisions (approval_id, approver, decision, comment, decided_at, via) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (approval_id, approver) DO NOTHING",
    )
    .bind(id)
    .bind(&vote.approver)
    .bind(common::vote_str(vote.kind))
    .bind(&vote.comment)
    .bind(now)
    .bind(common::via_str(vote.via))
    .execute(&mut *c)
    .await
    .map_err(classify)?;
    if inserted.rows_affected() == 0 {
        return Ok(DecideOutcome::AlreadyVoted(load_some(c, id, now).await?));
    }
    let detail = common::vote_detail(vote.kind, &vote.comment);
    event(
        c,
        id,
        EventKind::Voted,
        &vote.approver,
        vote.via,
        detail.clone(),
        now,
    )
    .await?;
    let approvals: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM approval_decisions WHERE approval_id = $1 AND decision = 'approve'",
    )
    .bind(id)
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
            "UPDATE approvals SET status = $2, decided_at = $3, expires_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(now)
        .bind(expires)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        event(c, id, kind, &vote.approver, vote.via, detail, now).await?;
    }
    Ok(DecideOutcome::Recorded(load_some(c, id, now).await?))
}

pub(super) async fn withdraw(
    c: &mut PgConnection,
    id: Uuid,
    actor: &str,
    via: Via,
    now: DateTime<Utc>,
) -> Result<WithdrawOutcome, StoreError> {
    let Some(row) = fetch_row(c, id, true).await? else {
        return Ok(WithdrawOutcome::NotFound);
    };
    if let Some(a) = not_open(c, &row, now).await? {
        return Ok(WithdrawOutcome::NotPending(a));
    }
    sqlx::query("UPDATE approvals SET status = 'withdrawn', decided_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await
        .map_err(classify)?;
    event(c, id, EventKind::Withdrawn, actor, via, json!({}), now).await?;
    Ok(WithdrawOutcome::Withdrawn(load_some(c, id, now).await?))
}

/// The sweeper: every due open row becomes `expired`, audited with its former status. Rows
/// another replica is sweeping (locked) are skipped, not waited for.
pub(super) async fn expire_due(
    c: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<Approval>, StoreError> {
    let cols = COLS
        .split(", ")
        .map(|col| format!("a.{col}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH e AS (UPDATE approvals a SET status = 'expired' \
                    FROM (SELECT id, status AS old FROM approvals \
                          WHERE status IN ('pending','approved') AND expires_at <= $1 FOR UPDATE SKIP LOCKED) o \
                    WHERE a.id = o.id RETURNING {cols}, o.old), \
              ev AS (INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
                     SELECT id, 'expired', $2, 'gateway', jsonb_build_object('from', old, 'expires_at', expires_at), $1 FROM e) \
         SELECT {COLS} FROM e ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(common::SYSTEM_ACTOR)
        .fetch_all(&mut *c)
        .await
        .map_err(classify)?;
    let rows: Vec<Row> = rows.iter().map(decode).collect::<Result<_, _>>()?;
    with_decisions(c, rows, now).await
}
