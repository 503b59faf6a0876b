//! The Postgres transitions. Hot-path steps are single statements (CTEs) so a state change and
//! its audit row commit together without an explicit transaction; multi-step transitions
//! (create, decide, withdraw, sweep) run in a transaction the caller opened.
//!
//! Inputs: a connection (or transaction), `now`, the TTLs. Outputs: outcomes; audit events
//! reach subscribers through the NOTIFY trigger, not from here.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool, Row as _};
use uuid::Uuid;

use super::common::{self, classify, Row};
use super::postgres::{decode, decode_event, COLS, EVENT_COLS};
use super::*;

/// The gate's first (and usually only) statement, exactly as run: the race test executes this
/// text on two sessions. Binds: `$1` now, `$2` scope, `$3` action, `$4` request_hash, `$5`
/// the requester (the actor of its audit rows), `$6` via, `$7` whether to consume (false for `POST /v1/approvals`).
///
/// One round trip does the whole retry path: consume the newest approved approval of this
/// identity (audited `consumed`), else find the pending one and, if it is live, audit the retry
/// (`deduplicated`). It always returns one row: `consumed_id` (the consumed approval, or null)
/// and the pending row's columns (null when there is none). Single use: the candidate is locked
/// with `FOR UPDATE SKIP LOCKED` and the outer `WHERE` repeats the state conditions, so a second
/// session can never consume it too (BASELINES.md's trap). The pending lookup cannot see the
/// consume (one snapshot), but it never needs to: it reads `pending` rows, the consume touches
/// `approved` ones, and `NOT EXISTS (SELECT 1 FROM c)` skips it when something was consumed.
/// Only approvals the gate made (`method IS NOT NULL`) are consumed: one an agent asked for
/// through `POST /v1/approvals` never authorises a proxied request, even if a reload later adds
/// a route with its action.
pub static GATE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH c AS ( \
           UPDATE approvals SET status = 'consumed', consumed_at = $1 \
           WHERE $7 AND id = (SELECT id FROM approvals \
                       WHERE scope = $2 AND action = $3 AND request_hash = $4 AND requester = $5 \
                         AND status = 'approved' AND expires_at > $1 AND method IS NOT NULL \
                       ORDER BY decided_at DESC, id DESC LIMIT 1 FOR UPDATE SKIP LOCKED) \
             AND status = 'approved' AND consumed_at IS NULL AND expires_at > $1 \
           RETURNING id), \
         ce AS ( \
           INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
           SELECT id, 'consumed', $5, 'gateway', '{{}}'::jsonb, $1 FROM c), \
         p AS ( \
           SELECT {COLS} FROM approvals \
           WHERE scope = $2 AND action = $3 AND request_hash = $4 AND requester = $5 AND status = 'pending' \
             AND NOT EXISTS (SELECT 1 FROM c)), \
         pe AS ( \
           INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
           SELECT id, 'deduplicated', $5, $6, '{{}}'::jsonb, $1 FROM p WHERE expires_at > $1) \
         SELECT (SELECT id FROM c) AS consumed_id, p.* FROM (VALUES (1)) AS one LEFT JOIN p ON true"
    )
});

/// Creates the pending approval and its `requested` audit row in one statement, with the
/// denied approval it follows (SPEC §6.3: the newest with this identity, if denied after the
/// last consumption). No row when a concurrent first call won the partial unique index.
static CREATE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH prev AS ( \
           SELECT a.id FROM (SELECT id, status, decided_at FROM approvals \
                             WHERE scope = $3 AND action = $2 AND request_hash = $6 AND requester = $9 \
                             ORDER BY created_at DESC, id DESC LIMIT 1) a \
           WHERE a.status = 'denied' AND NOT EXISTS ( \
             SELECT 1 FROM approvals b WHERE b.scope = $3 AND b.action = $2 AND b.request_hash = $6 \
               AND b.requester = $9 AND b.consumed_at >= a.decided_at)), \
         i AS ( \
           INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path, \
             requester, requester_actors, caller, approvals_required, created_at, expires_at, previous_id) \
           VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, (SELECT id FROM prev)) \
           ON CONFLICT (scope, action, request_hash, requester) WHERE status = 'pending' DO NOTHING \
           RETURNING {COLS}), \
         e AS ( \
           INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
           SELECT id, 'requested', requester, $15, \
             jsonb_build_object('previous', previous_id, 'method', method, 'path', path), created_at FROM i) \
         SELECT {COLS} FROM i"
    )
});

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

/// What [`GATE_SQL`] found.
enum Found {
    Consumed(ApprovalId),
    /// The live pending approval; the retry is audited already.
    Live(Box<Row>),
    /// A pending row past its deadline (not audited): expire it, then create a new one.
    Due,
    Nothing,
}

async fn gate_step(
    c: &mut PgConnection,
    new: &NewApproval,
    now: DateTime<Utc>,
    via: Via,
    consume: bool,
) -> Result<Found, StoreError> {
    let r = sqlx::query(&GATE_SQL)
        .bind(now)
        .bind(&new.scope)
        .bind(&new.action)
        .bind(&new.request_hash)
        .bind(&new.requester)
        .bind(common::via_str(via))
        .bind(consume)
        .fetch_one(&mut *c)
        .await
        .map_err(classify)?;
    let g = StoreError::Query;
    if let Some(id) = r.try_get::<Option<Uuid>, _>("consumed_id").map_err(g)? {
        return Ok(Found::Consumed(ApprovalId(id)));
    }
    if r.try_get::<Option<Uuid>, _>("id").map_err(g)?.is_none() {
        return Ok(Found::Nothing);
    }
    let row = decode(&r)?;
    Ok(if row.is_due(now) {
        Found::Due
    } else {
        Found::Live(Box::new(row))
    })
}

/// Steps 1–2 of the gate (`consume`), and `POST /v1/approvals` (not `consume`): consume an
/// approved approval, else reuse the live pending one, else create it. A retry or a consume is
/// one statement; creating adds one (and one more to expire a due pending row first). All are
/// autocommit statements that each carry their audit rows, so no transaction is held open.
pub(super) async fn consume_or_open(
    c: &mut PgConnection,
    new: &NewApproval,
    ttl: Ttls,
    now: DateTime<Utc>,
    via: Via,
    consume: bool,
) -> Result<GateOutcome, StoreError> {
    // Losing the creation race to a concurrent first call means the winner's row exists now:
    // the next lookup reuses it. Three rounds only run out if that row is decided each time.
    for _ in 0..3 {
        match gate_step(c, new, now, via, consume).await? {
            Found::Consumed(id) => return Ok(GateOutcome::Consumed(id)),
            Found::Live(row) => return reused(c, *row, now).await,
            Found::Due => expire_identity(c, new, now).await?,
            Found::Nothing => {}
        }
        if let Some(row) = create(c, new, ttl, now, via).await? {
            let previous = row.previous_id.map(ApprovalId);
            return Ok(GateOutcome::Pending {
                approval: row.into_approval(Vec::new(), now)?,
                created: true,
                previous,
            });
        }
    }
    Err(StoreError::Corrupt(
        "the pending approval kept changing while it was being reused".into(),
    ))
}

/// Turns this identity's due pending row (if any) into `expired`, audited, in one statement.
async fn expire_identity(
    c: &mut PgConnection,
    new: &NewApproval,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH e AS (UPDATE approvals SET status = 'expired' \
                    WHERE scope = $1 AND action = $2 AND request_hash = $3 AND requester = $6 AND status = 'pending' AND expires_at <= $4 \
                    RETURNING id, expires_at) \
         INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
         SELECT id, 'expired', $5, 'gateway', jsonb_build_object('from', 'pending', 'expires_at', expires_at), $4 FROM e",
    )
    .bind(&new.scope)
    .bind(&new.action)
    .bind(&new.request_hash)
    .bind(now)
    .bind(common::SYSTEM_ACTOR)
    .bind(&new.requester)
    .execute(&mut *c)
    .await
    .map(drop)
    .map_err(classify)
}

async fn create(
    c: &mut PgConnection,
    new: &NewApproval,
    ttl: Ttls,
    now: DateTime<Utc>,
    via: Via,
) -> Result<Option<Row>, StoreError> {
    let required = i32::try_from(new.approvals_required.max(1)).unwrap_or(i32::MAX);
    let row = sqlx::query(&CREATE_SQL)
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
        .bind(common::via_str(via))
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode).transpose()
}

async fn reused(
    c: &mut PgConnection,
    row: Row,
    now: DateTime<Utc>,
) -> Result<GateOutcome, StoreError> {
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
    Ok(GateOutcome::Pending {
        approval,
        created: false,
        previous,
    })
}
