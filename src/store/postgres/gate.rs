//! The gate's steps on Postgres, on the gate's own connections (`conns.rs`; `POST
//! /v1/approvals` on the shared pool): a retry or a consume is one statement ([`GATE_SQL`]);
//! creating adds one ([`CREATE_SQL`]); the upstream's answer is one more (`record_upstream`). Each is an autocommit statement that carries its own
//! audit rows, so no transaction is held open across round trips; audit events reach
//! subscribers through the NOTIFY trigger.
//!
//! Inputs: the approval asked for, `now`, the TTLs. Outputs: the gate's outcome.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use super::PgStore;
use crate::store::dialect::{GateCall, UpstreamCall};
use crate::store::model::{classify, Row};
use crate::store::rules::{deadline, Rules, COLS, SYSTEM_ACTOR};
use crate::store::*;

type R = Rules<PgStore>;

/// The gate's first (and usually only) statement, exactly as run: the race test executes this
/// text on two sessions. Binds: `$1` now, `$2` scope, `$3` action, `$4` request_hash, `$5`
/// the requester (the actor of its audit rows), `$6` via, `$7` whether to consume (false for `POST /v1/approvals`).
///
/// One round trip does the whole retry path: consume the newest approved approval of this
/// identity (audited `consumed`), else find the pending one and, if it is live, audit the retry
/// (`deduplicated`). It always returns one row: `consumed_id` (the consumed approval, or null)
/// and the pending row's columns (null when there is none). Single use: the candidate is locked
/// with `FOR UPDATE SKIP LOCKED` and the outer `WHERE` repeats the state conditions, so a second
/// session can never consume it too: one that waited on the row re-checks its state after the
/// other committed, and one that skipped it consumes nothing. The pending lookup cannot see the
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
/// denied approval it follows (the newest with this identity, if denied after the last
/// consumption: the README's "What the gate does", step 3). No row when a concurrent first call won the partial unique index.
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

impl PgStore {
    /// The gate's step (see [`Store::consume_or_create`] and [`Store::request`]). A proxied
    /// request's runs on the gate's connections; `POST /v1/approvals` on the shared pool.
    pub(in crate::store) async fn gate(
        &self,
        call: GateCall<'_>,
    ) -> Result<GateOutcome, StoreError> {
        if !call.consume {
            let mut c = self.pool.acquire().await.map_err(classify)?;
            return consume_or_open(&mut c, call).await;
        }
        self.gate
            .run(|mut c| {
                Box::pin(async move {
                    let r = consume_or_open(&mut c, call).await;
                    (c, r)
                })
            })
            .await
    }

    /// See [`Store::record_upstream`]. One statement: the update and its audit row commit
    /// together.
    pub(in crate::store) async fn record_upstream(
        &self,
        up: UpstreamCall,
    ) -> Result<(), StoreError> {
        let sql = "WITH u AS (UPDATE approvals SET upstream_status = $2, upstream_error = $3 WHERE id = $1 RETURNING id) \
             INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
             SELECT id, 'upstream', $4, 'gateway', $5, $6 FROM u";
        self.gate
            .run(|mut c| {
                let q = sqlx::query(sql)
                    .bind(up.id)
                    .bind(up.status.map(i32::from))
                    .bind(up.error.clone())
                    .bind(SYSTEM_ACTOR)
                    .bind(up.detail.clone())
                    .bind(up.now);
                Box::pin(async move {
                    let r = q.execute(&mut c).await.map(drop).map_err(classify);
                    (c, r)
                })
            })
            .await
    }
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
        .bind(via.as_str())
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
    let row = R::decode_row(&r)?;
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
async fn consume_or_open(
    c: &mut PgConnection,
    call: GateCall<'_>,
) -> Result<GateOutcome, StoreError> {
    let GateCall {
        new,
        ttl,
        now,
        via,
        consume,
    } = call;
    // Losing the creation race to a concurrent first call means the winner's row exists now:
    // the next lookup reuses it. Three rounds only run out if that row is decided each time.
    for _ in 0..3 {
        match gate_step(c, new, now, via, consume).await? {
            Found::Consumed(id) => return Ok(GateOutcome::Consumed(id)),
            Found::Live(row) => return R::pending(c, *row, false, now).await,
            Found::Due => expire_identity(c, new, now).await?,
            Found::Nothing => {}
        }
        if let Some(row) = create(c, new, ttl, now, via).await? {
            return R::pending(c, row, true, now).await;
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
    .bind(SYSTEM_ACTOR)
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
    let row = R::bind_new(sqlx::query(&CREATE_SQL), new)
        .bind(required)
        .bind(now)
        .bind(deadline(now, ttl.pending))
        .bind(via.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
    row.as_ref().map(R::decode_row).transpose()
}
