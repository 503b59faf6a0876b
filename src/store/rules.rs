//! The store's rules, written once for both dialects: votes and quorum (`decide`), `withdraw`,
//! the sweeper (`expire_due`), reads (`get`, `list` with every approval's decisions in one
//! query), the audit trail (`event`, `events_after`) and the canvas mirror's table.
//!
//! Inputs: a [`Dialect`] (the pool, value conversions, the transaction's lock), `now`, the TTLs.
//! Outputs: outcomes; the audit events a transaction wrote are handed to [`Dialect::publish`]
//! after it commits.
//! Invariants: every state change writes its `approval_events` row in the same transaction;
//! only a pending, not-yet-due row accepts a vote or a withdrawal, and a due one is turned
//! `expired` (audited) on the spot and reported as not pending. The row is read under the
//! dialect's lock ([`Dialect::LOCK`]) before it is judged.

use std::collections::HashMap;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::error::BoxDynError;
use sqlx::{Arguments, ColumnIndex, Database, Encode, Executor, IntoArguments, Row as _, Type};
use uuid::Uuid;

use super::dialect::{Column, Dialect};
use super::model::{classify, parse_event, parse_via, parse_vote, vote_str, Row};
use super::*;

/// Default and maximum page sizes of `list`.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
pub(crate) const MAX_LIMIT: u32 = 200;

/// Actor recorded on transitions the gateway makes on its own (expiry, upstream results).
pub(super) const SYSTEM_ACTOR: &str = "gateway";

/// The `approvals` columns, in the order every `SELECT` of a whole row names them.
pub(super) const COLS: &str =
    "id, status, action, scope, reason, context, request_hash, method, path, \
    requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at, \
    consumed_at, upstream_status, upstream_error, previous_id";

/// The `approval_events` columns.
pub(super) const EVENT_COLS: &str = "id, approval_id, event, actor, via, detail, at";

const MIRROR_SELECT: &str =
    "SELECT approval_id, workspace_id, server_id, mirrored_at, written_back FROM molecule_mirror";

type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
type DbRow<D> = <<D as Dialect>::Db as Database>::Row;
pub(super) type Query<'q, D> =
    sqlx::query::Query<'q, <D as Dialect>::Db, <<D as Dialect>::Db as Database>::Arguments<'q>>;
pub(super) type Tx<D> = sqlx::Transaction<'static, <D as Dialect>::Db>;

/// The rules over one dialect. Stateless: every function takes the dialect (or a connection of
/// it) explicitly.
pub(super) struct Rules<D>(PhantomData<D>);

/// The bounds say what the rules ask of the dialect's sqlx driver (run a statement on a
/// connection, bind and read text, integers and JSON, name columns); both drivers do.
impl<D> Rules<D>
where
    D: Dialect,
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    String: Column<D::Db>,
    Option<String>: Column<D::Db>,
    i64: Column<D::Db>,
    Value: Column<D::Db>,
    for<'a> &'a str: ColumnIndex<DbRow<D>>,
{
    // ---- transactions and decoding ------------------------------------------------------------

    /// A writing transaction, begun as the dialect begins them ([`Dialect::BEGIN`]).
    pub(super) async fn begin(d: &D) -> Result<Tx<D>, StoreError> {
        d.pool().begin_with(D::BEGIN).await.map_err(classify)
    }

    /// Commits, then publishes the events the transaction wrote.
    pub(super) async fn commit(
        d: &D,
        tx: Tx<D>,
        events: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        tx.commit().await.map_err(classify)?;
        d.publish(events);
        Ok(())
    }

    pub(super) fn decode_row(r: &DbRow<D>) -> Result<Row, StoreError> {
        let g = StoreError::Query;
        Ok(Row {
            id: D::from_id(r.try_get("id").map_err(g)?),
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
            approvals_required: r
                .try_get::<D::Int, _>("approvals_required")
                .map_err(g)?
                .into(),
            created_at: D::from_time(r.try_get("created_at").map_err(g)?)?,
            expires_at: D::from_time(r.try_get("expires_at").map_err(g)?)?,
            decided_at: Self::opt_time(r.try_get("decided_at").map_err(g)?)?,
            consumed_at: Self::opt_time(r.try_get("consumed_at").map_err(g)?)?,
            upstream_status: r
                .try_get::<Option<D::Int>, _>("upstream_status")
                .map_err(g)?
                .map(Into::into),
            upstream_error: r.try_get("upstream_error").map_err(g)?,
            previous_id: r
                .try_get::<Option<D::Id>, _>("previous_id")
                .map_err(g)?
                .map(D::from_id),
        })
    }

    fn opt_time(t: Option<D::Time>) -> Result<Option<DateTime<Utc>>, StoreError> {
        t.map(D::from_time).transpose()
    }

    pub(super) fn decode_event(r: &DbRow<D>) -> Result<AuditEvent, StoreError> {
        let g = StoreError::Query;
        Ok(AuditEvent {
            id: r.try_get("id").map_err(g)?,
            approval_id: ApprovalId(D::from_id(r.try_get("approval_id").map_err(g)?)),
            event: parse_event(&r.try_get::<String, _>("event").map_err(g)?)?,
            actor: r.try_get("actor").map_err(g)?,
            via: parse_via(&r.try_get::<String, _>("via").map_err(g)?)?,
            detail: r.try_get("detail").map_err(g)?,
            at: D::from_time(r.try_get("at").map_err(g)?)?,
        })
    }

    fn decode_mirror(r: &DbRow<D>) -> Result<MirrorRow, StoreError> {
        let g = StoreError::Query;
        Ok(MirrorRow {
            approval_id: ApprovalId(D::from_id(r.try_get("approval_id").map_err(g)?)),
            workspace_id: r.try_get("workspace_id").map_err(g)?,
            server_id: r.try_get("server_id").map_err(g)?,
            mirrored_at: D::from_time(r.try_get("mirrored_at").map_err(g)?)?,
            written_back: r.try_get("written_back").map_err(g)?,
        })
    }

    // ---- building blocks, inside the caller's connection or transaction -------------------------

    /// Appends an audit row; returns it as an event (published after commit).
    pub(super) async fn event(
        c: &mut Conn<D>,
        id: Uuid,
        kind: EventKind,
        actor: &str,
        via: Via,
        detail: Value,
        now: DateTime<Utc>,
    ) -> Result<AuditEvent, StoreError> {
        let row = sqlx::query(
            "INSERT INTO approval_events (approval_id, event, actor, via, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(D::id(id))
        .bind(kind.as_str())
        .bind(actor)
        .bind(via.as_str())
        .bind(&detail)
        .bind(D::time(now))
        .fetch_one(&mut *c)
        .await
        .map_err(classify)?;
        Ok(AuditEvent {
            id: row.try_get("id").map_err(StoreError::Query)?,
            approval_id: ApprovalId(id),
            event: kind,
            actor: actor.to_owned(),
            via,
            detail,
            at: now,
        })
    }

    /// One row, locked ([`Dialect::LOCK`]) when `lock`.
    pub(super) async fn fetch_row(
        c: &mut Conn<D>,
        id: Uuid,
        lock: bool,
    ) -> Result<Option<Row>, StoreError> {
        let lock = if lock { D::LOCK } else { "" };
        let sql = format!("SELECT {COLS} FROM approvals WHERE id = $1{lock}");
        let row = sqlx::query(&sql)
            .bind(D::id(id))
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
        row.as_ref().map(Self::decode_row).transpose()
    }

    /// Rows → approvals, with every row's decisions fetched in one query.
    pub(super) async fn with_decisions(
        c: &mut Conn<D>,
        rows: Vec<Row>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Approval>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let sql = format!(
            "SELECT approval_id, approver, decision, comment, decided_at FROM approval_decisions \
             WHERE approval_id{} ORDER BY decided_at, approver",
            D::in_ids("$1")
        );
        let found = sqlx::query(&sql)
            .bind(D::ids(&ids))
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?;
        let mut by_id: HashMap<Uuid, Vec<DecisionRecord>> = HashMap::new();
        let g = StoreError::Query;
        for r in &found {
            let id = D::from_id(r.try_get("approval_id").map_err(g)?);
            by_id.entry(id).or_default().push(DecisionRecord {
                approver: r.try_get("approver").map_err(g)?,
                decision: parse_vote(&r.try_get::<String, _>("decision").map_err(g)?)?,
                comment: r.try_get("comment").map_err(g)?,
                decided_at: D::from_time(r.try_get("decided_at").map_err(g)?)?,
            });
        }
        rows.into_iter()
            .map(|row| {
                let ds = by_id.remove(&row.id).unwrap_or_default();
                row.into_approval(ds, now)
            })
            .collect()
    }

    pub(super) async fn load(
        c: &mut Conn<D>,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>, StoreError> {
        match Self::fetch_row(c, id, false).await? {
            Some(row) => Ok(Self::with_decisions(c, vec![row], now).await?.pop()),
            None => Ok(None),
        }
    }

    async fn load_some(
        c: &mut Conn<D>,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Approval, StoreError> {
        Self::load(c, id, now)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished")))
    }

    /// Binds `$1`..`$11` of both dialects' insert of a pending approval: a new id, then
    /// `action, scope, reason, context, request_hash, method, path, requester,
    /// requester_actors, caller`.
    pub(super) fn bind_new<'q>(q: Query<'q, D>, new: &'q NewApproval) -> Query<'q, D> {
        q.bind(D::id(ApprovalId::new().0))
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
    }

    /// The gate's answer for a pending row it created (`created`) or found. A new row has no
    /// decisions, nor has a still-pending one with a quorum of one (any vote closes it): the
    /// hot retry path skips that read.
    pub(super) async fn pending(
        c: &mut Conn<D>,
        row: Row,
        created: bool,
        now: DateTime<Utc>,
    ) -> Result<GateOutcome, StoreError> {
        let previous = row.previous_id.map(ApprovalId);
        let approval = if created || row.approvals_required <= 1 {
            row.into_approval(Vec::new(), now)?
        } else {
            Self::with_decisions(c, vec![row], now)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("approval vanished".into()))?
        };
        Ok(GateOutcome::Pending {
            approval,
            created,
            previous,
        })
    }

    /// Turns a due open row into `expired`, audited with its former status.
    pub(super) async fn mark_expired(
        c: &mut Conn<D>,
        row: &Row,
        now: DateTime<Utc>,
    ) -> Result<AuditEvent, StoreError> {
        sqlx::query(
            "UPDATE approvals SET status = 'expired' \
             WHERE id = $1 AND status IN ('pending','approved')",
        )
        .bind(D::id(row.id))
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        Self::event(
            c,
            row.id,
            EventKind::Expired,
            SYSTEM_ACTOR,
            Via::Gateway,
            expired_detail(row),
            now,
        )
        .await
    }

    /// A locked row that is no longer open to votes/withdrawal: expire it first if due, then
    /// report it. `None`: pending and live.
    async fn not_open(
        c: &mut Conn<D>,
        row: &Row,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<Option<Approval>, StoreError> {
        if row.is_due(now) {
            events.push(Self::mark_expired(c, row, now).await?);
        } else if row.status == "pending" {
            return Ok(None);
        }
        Ok(Some(Self::load_some(c, row.id, now).await?))
    }

    // ---- transitions --------------------------------------------------------------------------

    /// Record a vote (see [`Store::decide`]).
    pub(super) async fn decide(
        d: &D,
        id: ApprovalId,
        vote: &Vote,
        ttl: Ttls,
        now: DateTime<Utc>,
    ) -> Result<DecideOutcome, StoreError> {
        let mut tx = Self::begin(d).await?;
        let mut events = Vec::new();
        let outcome = Self::decide_in(&mut tx, id.0, vote, ttl, now, &mut events).await?;
        Self::commit(d, tx, events).await?;
        Ok(outcome)
    }

    async fn decide_in(
        c: &mut Conn<D>,
        id: Uuid,
        vote: &Vote,
        ttl: Ttls,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<DecideOutcome, StoreError> {
        let Some(row) = Self::fetch_row(c, id, true).await? else {
            return Ok(DecideOutcome::NotFound);
        };
        if let Some(a) = Self::not_open(c, &row, now, events).await? {
            return Ok(DecideOutcome::NotPending(a));
        }
        let inserted = sqlx::query(
            "INSERT INTO approval_decisions (approval_id, approver, decision, comment, decided_at, via) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (approval_id, approver) DO NOTHING \
             RETURNING approver",
        )
        .bind(D::id(id))
        .bind(&vote.approver)
        .bind(vote_str(vote.kind))
        .bind(&vote.comment)
        .bind(D::time(now))
        .bind(vote.via.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(classify)?;
        if inserted.is_none() {
            return Ok(DecideOutcome::AlreadyVoted(
                Self::load_some(c, id, now).await?,
            ));
        }
        let detail = vote_detail(vote.kind, &vote.comment);
        let voted = EventKind::Voted;
        events
            .push(Self::event(c, id, voted, &vote.approver, vote.via, detail.clone(), now).await?);
        let approvals: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM approval_decisions \
             WHERE approval_id = $1 AND decision = 'approve'",
        )
        .bind(D::id(id))
        .fetch_one(&mut *c)
        .await
        .map_err(classify)?
        .try_get("n")
        .map_err(StoreError::Query)?;
        let next = next_state(
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
            .bind(D::id(id))
            .bind(status.as_str())
            .bind(D::time(now))
            .bind(D::time(expires))
            .execute(&mut *c)
            .await
            .map_err(classify)?;
            events.push(Self::event(c, id, kind, &vote.approver, vote.via, detail, now).await?);
        }
        Ok(DecideOutcome::Recorded(Self::load_some(c, id, now).await?))
    }

    /// Withdraw a pending approval (see [`Store::withdraw`]).
    pub(super) async fn withdraw(
        d: &D,
        id: ApprovalId,
        actor: &str,
        via: Via,
        now: DateTime<Utc>,
    ) -> Result<WithdrawOutcome, StoreError> {
        let mut tx = Self::begin(d).await?;
        let mut events = Vec::new();
        let outcome = Self::withdraw_in(&mut tx, id.0, actor, via, now, &mut events).await?;
        Self::commit(d, tx, events).await?;
        Ok(outcome)
    }

    async fn withdraw_in(
        c: &mut Conn<D>,
        id: Uuid,
        actor: &str,
        via: Via,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<WithdrawOutcome, StoreError> {
        let Some(row) = Self::fetch_row(c, id, true).await? else {
            return Ok(WithdrawOutcome::NotFound);
        };
        if let Some(a) = Self::not_open(c, &row, now, events).await? {
            return Ok(WithdrawOutcome::NotPending(a));
        }
        sqlx::query(
            "UPDATE approvals SET status = 'withdrawn', decided_at = $2 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(D::id(id))
        .bind(D::time(now))
        .execute(&mut *c)
        .await
        .map_err(classify)?;
        events.push(Self::event(c, id, EventKind::Withdrawn, actor, via, json!({}), now).await?);
        Ok(WithdrawOutcome::Withdrawn(
            Self::load_some(c, id, now).await?,
        ))
    }

    /// The sweeper: every due open row becomes `expired`, audited with its former status, in one
    /// transaction. On Postgres, rows another replica is sweeping are skipped, not waited for.
    pub(super) async fn expire_due(d: &D, now: DateTime<Utc>) -> Result<Vec<Approval>, StoreError> {
        let mut tx = Self::begin(d).await?;
        let sql = format!(
            "SELECT {COLS} FROM approvals WHERE status IN ('pending','approved') AND expires_at <= $1 \
             ORDER BY created_at, id{}",
            D::LOCK_SKIP
        );
        let found = sqlx::query(&sql)
            .bind(D::time(now))
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        let rows: Vec<Row> = found
            .iter()
            .map(Self::decode_row)
            .collect::<Result<_, _>>()?;
        let mut events = Vec::with_capacity(rows.len());
        if !rows.is_empty() {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            let sql = format!(
                "UPDATE approvals SET status = 'expired' \
                 WHERE status IN ('pending','approved') AND id{}",
                D::in_ids("$1")
            );
            sqlx::query(&sql)
                .bind(D::ids(&ids))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            for row in &rows {
                let detail = expired_detail(row);
                let actor = SYSTEM_ACTOR;
                let expired = EventKind::Expired;
                events.push(
                    Self::event(&mut tx, row.id, expired, actor, Via::Gateway, detail, now).await?,
                );
            }
        }
        // The rows as read: still open, past their deadline, so they read as `expired`.
        let expired = Self::with_decisions(&mut tx, rows, now).await?;
        Self::commit(d, tx, events).await?;
        Ok(expired)
    }

    // ---- reads --------------------------------------------------------------------------------

    pub(super) async fn ping(d: &D) -> Result<(), StoreError> {
        let mut c = d.pool().acquire().await.map_err(classify)?;
        sqlx::query("SELECT 1")
            .execute(&mut *c)
            .await
            .map(drop)
            .map_err(classify)
    }

    pub(super) async fn get(
        d: &D,
        id: ApprovalId,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>, StoreError> {
        let mut c = d.pool().acquire().await.map_err(classify)?;
        Self::load(&mut c, id.0, now).await
    }

    /// Newest first, keyset-paginated on `(created_at, id)`.
    pub(super) async fn list(
        d: &D,
        filter: &ListFilter,
        now: DateTime<Utc>,
    ) -> Result<Page, StoreError> {
        let limit = clamp_limit(filter.limit);
        let mut q = Stmt::<D::Db>::new(format!("SELECT {COLS} FROM approvals WHERE 1=1"));
        match filter.status {
            Some(s @ (Status::Pending | Status::Approved)) => {
                q.push(" AND status = ").bind(s.as_str());
                q.push(" AND expires_at > ").bind(D::time(now));
            }
            Some(Status::Expired) => {
                q.push(" AND (status = 'expired' OR (status IN ('pending','approved') AND expires_at <= ")
                    .bind(D::time(now))
                    .push("))");
            }
            Some(s) => {
                q.push(" AND status = ").bind(s.as_str());
            }
            None => {}
        }
        for (col, v) in [
            ("scope", &filter.scope),
            ("action", &filter.action),
            ("requester", &filter.requester),
        ] {
            if let Some(v) = v {
                q.push(&format!(" AND {col} = ")).bind(v.clone());
            }
        }
        if let Some(cursor) = &filter.cursor {
            let (at, id) = decode_cursor(cursor).ok_or(StoreError::InvalidCursor)?;
            q.push(" AND (created_at, id) < (").bind(D::time(at));
            q.push(", ").bind(D::id(id)).push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .bind(i64::from(limit) + 1);
        let (sql, args) = q.finish()?;
        let mut c = d.pool().acquire().await.map_err(classify)?;
        let found = sqlx::query_with(&sql, args)
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?;
        let more = found.len() > limit as usize;
        let rows = found
            .iter()
            .take(limit as usize)
            .map(Self::decode_row)
            .collect::<Result<Vec<_>, _>>()?;
        let items = Self::with_decisions(&mut c, rows, now).await?;
        let next_cursor = match items.last() {
            Some(last) if more => Some(encode_cursor(last.created_at, last.id.0)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    pub(super) async fn events_after(
        d: &D,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let sql =
            format!("SELECT {EVENT_COLS} FROM approval_events WHERE id > $1 ORDER BY id LIMIT $2");
        let mut c = d.pool().acquire().await.map_err(classify)?;
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .map_err(classify)?;
        rows.iter().map(Self::decode_event).collect()
    }

    pub(super) async fn pending_counts(
        d: &D,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut c = d.pool().acquire().await.map_err(classify)?;
        let rows = sqlx::query(
            "SELECT action, COUNT(*) AS n FROM approvals WHERE status = 'pending' AND expires_at > $1 \
             GROUP BY action ORDER BY action",
        )
        .bind(D::time(now))
        .fetch_all(&mut *c)
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

    // ---- the canvas mirror's table ------------------------------------------------------------

    pub(super) async fn mirror_get(d: &D, id: ApprovalId) -> Result<Option<MirrorRow>, StoreError> {
        let mut c = d.pool().acquire().await.map_err(classify)?;
        let row = sqlx::query(&format!("{MIRROR_SELECT} WHERE approval_id = $1"))
            .bind(D::id(id.0))
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
        row.as_ref().map(Self::decode_mirror).transpose()
    }

    pub(super) async fn mirror_find(
        d: &D,
        server_id: &str,
    ) -> Result<Option<MirrorRow>, StoreError> {
        let mut c = d.pool().acquire().await.map_err(classify)?;
        let row = sqlx::query(&format!("{MIRROR_SELECT} WHERE server_id = $1"))
            .bind(server_id)
            .fetch_optional(&mut *c)
            .await
            .map_err(classify)?;
        row.as_ref().map(Self::decode_mirror).transpose()
    }

    /// Record (or replace) the server row of `row.approval_id` with its `mirrored` event.
    pub(super) async fn mirror_set(d: &D, row: &MirrorRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = Self::begin(d).await?;
        let sql = format!(
            "SELECT server_id FROM molecule_mirror WHERE approval_id = $1{}",
            D::LOCK
        );
        let replaced: Option<String> = sqlx::query(&sql)
            .bind(D::id(row.approval_id.0))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .map(|r| r.try_get("server_id"))
            .transpose()
            .map_err(StoreError::Query)?;
        sqlx::query(
            "INSERT INTO molecule_mirror (approval_id, workspace_id, server_id, mirrored_at, written_back) \
             VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (approval_id) DO UPDATE SET \
             workspace_id = excluded.workspace_id, server_id = excluded.server_id, \
             mirrored_at = excluded.mirrored_at, written_back = NULL",
        )
        .bind(D::id(row.approval_id.0))
        .bind(&row.workspace_id)
        .bind(&row.server_id)
        .bind(D::time(row.mirrored_at))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let detail = mirrored_detail(row, replaced.as_deref());
        let id = row.approval_id.0;
        let e = Self::event(
            &mut tx,
            id,
            EventKind::Mirrored,
            actor,
            Via::Gateway,
            detail,
            row.mirrored_at,
        )
        .await?;
        Self::commit(d, tx, vec![e]).await
    }

    pub(super) async fn mirror_written_back(
        d: &D,
        id: ApprovalId,
        decision: &str,
    ) -> Result<(), StoreError> {
        let mut c = d.pool().acquire().await.map_err(classify)?;
        sqlx::query("UPDATE molecule_mirror SET written_back = $2 WHERE approval_id = $1")
            .bind(D::id(id.0))
            .bind(decision)
            .execute(&mut *c)
            .await
            .map(drop)
            .map_err(classify)
    }

    /// Mirrored approvals no longer pending whose server row still waits for the outcome.
    pub(super) async fn mirror_unwritten(d: &D, limit: u32) -> Result<Vec<ApprovalId>, StoreError> {
        let mut c = d.pool().acquire().await.map_err(classify)?;
        let rows = sqlx::query(
            "SELECT m.approval_id FROM molecule_mirror m JOIN approvals a ON a.id = m.approval_id \
             WHERE m.written_back IS NULL AND a.status <> 'pending' ORDER BY m.mirrored_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let id = r.try_get("approval_id").map_err(StoreError::Query)?;
                Ok(ApprovalId(D::from_id(id)))
            })
            .collect()
    }
}

/// A statement assembled at run time (`list`'s filters): SQL text with `$N` parameters, which
/// both dialects read, and their values in order.
struct Stmt<'q, DB: Database> {
    sql: String,
    args: <DB as Database>::Arguments<'q>,
    n: usize,
    /// The first value that could not be encoded (reported by `finish`).
    failed: Option<BoxDynError>,
}

impl<'q, DB: Database> Stmt<'q, DB> {
    fn new(sql: String) -> Self {
        Self {
            sql,
            args: Default::default(),
            n: 0,
            failed: None,
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn bind<T: 'q + Encode<'q, DB> + Type<DB>>(&mut self, value: T) -> &mut Self {
        if let Err(e) = self.args.add(value) {
            self.failed.get_or_insert(e);
        }
        self.n += 1;
        self.sql.push_str(&format!("${}", self.n));
        self
    }

    fn finish(self) -> Result<(String, <DB as Database>::Arguments<'q>), StoreError> {
        match self.failed {
            Some(e) => Err(StoreError::Query(sqlx::Error::Encode(e))),
            None => Ok((self.sql, self.args)),
        }
    }
}

// ---- pure pieces ------------------------------------------------------------------------------

/// `limit` of a list call: 0 means the default, otherwise clamped to 1..=200.
fn clamp_limit(limit: u32) -> u32 {
    if limit == 0 {
        DEFAULT_LIMIT
    } else {
        limit.clamp(1, MAX_LIMIT)
    }
}

/// The keyset position of a row, opaque to clients: hex of `<created_at micros>.<uuid>`.
fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    hex::encode(format!(
        "{}.{}",
        created_at.timestamp_micros(),
        id.hyphenated()
    ))
}

/// Decodes a cursor. A malformed one is an error (`InvalidCursor`, 400), not "first page":
/// silently restarting would make a client loop forever.
fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let raw = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    let (micros, id) = raw.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// `now + ttl`, saturating instead of overflowing on absurd TTLs.
pub(super) fn deadline(now: DateTime<Utc>, ttl: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The pure quorum rule: what a just-recorded vote does to a pending approval. `approvals` is
/// the number of distinct approve votes including this one. Returns the new status, its audit
/// event and the new `expires_at` (approved → `now + ttl.approved`), or `None` (still pending).
fn next_state(
    kind: VoteKind,
    approvals: i64,
    required: i64,
    ttl: Ttls,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Option<(Status, EventKind, DateTime<Utc>)> {
    match kind {
        VoteKind::Deny => Some((Status::Denied, EventKind::Denied, expires_at)),
        VoteKind::Bypass => Some((
            Status::Approved,
            EventKind::Bypassed,
            deadline(now, ttl.approved),
        )),
        VoteKind::Approve if approvals >= required => Some((
            Status::Approved,
            EventKind::Approved,
            deadline(now, ttl.approved),
        )),
        VoteKind::Approve => None,
    }
}

/// Event detail for a vote.
fn vote_detail(kind: VoteKind, comment: &Option<String>) -> Value {
    json!({ "decision": vote_str(kind), "comment": comment })
}

/// Event detail for an expiry: the status it left and the deadline it passed.
fn expired_detail(row: &Row) -> Value {
    json!({ "from": row.status, "expires_at": row.expires_at })
}

/// The audit detail of a `mirrored` event.
fn mirrored_detail(row: &MirrorRow, replaced: Option<&str>) -> Value {
    json!({
        "workspace_id": row.workspace_id,
        "server_id": row.server_id,
        "replaced": replaced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid");
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        for bad in ["", "zz", &hex::encode("12"), &hex::encode("x.y")] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn quorum_rule() {
        let now = DateTime::from_timestamp_micros(1_000_000).expect("valid");
        let ttl = Ttls {
            pending: std::time::Duration::from_secs(60),
            approved: std::time::Duration::from_secs(10),
        };
        let approved_until = now + chrono::TimeDelta::seconds(10);
        let pending_until = now + chrono::TimeDelta::seconds(60);
        let cases = [
            (
                VoteKind::Approve,
                1,
                1,
                Some((Status::Approved, EventKind::Approved, approved_until)),
            ),
            (VoteKind::Approve, 1, 2, None),
            (
                VoteKind::Approve,
                2,
                2,
                Some((Status::Approved, EventKind::Approved, approved_until)),
            ),
            (
                VoteKind::Deny,
                1,
                2,
                Some((Status::Denied, EventKind::Denied, pending_until)),
            ),
            (
                VoteKind::Bypass,
                0,
                3,
                Some((Status::Approved, EventKind::Bypassed, approved_until)),
            ),
        ];
        for (kind, approvals, required, want) in cases {
            assert_eq!(
                next_state(kind, approvals, required, ttl, now, pending_until),
                want,
                "{kind:?} {approvals}/{required}"
            );
        }
    }

    #[test]
    fn limits_clamp() {
        for (input, want) in [(0, 50), (1, 1), (200, 200), (201, 200), (u32::MAX, 200)] {
            assert_eq!(clamp_limit(input), want);
        }
    }

    #[test]
    fn deadline_saturates() {
        let now = DateTime::from_timestamp_micros(0).expect("valid");
        assert_eq!(
            deadline(now, std::time::Duration::MAX),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
