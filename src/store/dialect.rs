//! What the store's rules ([`super::rules`]) need to know about a database: how it stores a
//! timestamp, an id and an integer, how a transaction takes its write lock, how to match a set
//! of ids in one bind, and how committed audit events reach live subscribers.
//!
//! Two implementations: `sqlite::SqliteStore` and `postgres::PgStore`. Everything else about a
//! dialect (its migrations, the gate's statements, connections, checkpoints, LISTEN/NOTIFY)
//! stays in its own folder; each has the gate's two steps, `gate(GateCall)` and
//! `record_upstream(UpstreamCall)`, taking the arguments below.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{Database, Decode, Encode, Pool, Type};
use uuid::Uuid;

use super::{ApprovalId, AuditEvent, NewApproval, StoreError, Ttls, UpstreamResult, Via};

/// A value a dialect stores a Rust type as: bound as a parameter and read back from a row.
pub(super) trait Column<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync + 'static
{
}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync + 'static
{
}

/// One database flavour of the store. The SQL text of the rules is shared (`$N` parameters,
/// which SQLite accepts too); values go through the conversions below.
pub(super) trait Dialect: Send + Sync + Sized + 'static {
    type Db: Database;
    /// A timestamp as stored: SQLite INTEGER microseconds (UTC), Postgres `timestamptz`.
    type Time: Column<Self::Db>;
    /// An approval id as stored: SQLite hyphenated TEXT, Postgres `uuid`.
    type Id: Column<Self::Db>;
    /// An INTEGER column as read: SQLite 64-bit, Postgres `integer` (32-bit).
    type Int: Column<Self::Db> + Into<i64>;

    /// Appended to a `SELECT` that reads a row before a transaction changes it. Postgres locks
    /// the row (`FOR UPDATE`), so concurrent votes on one approval are serialised; SQLite needs
    /// nothing: [`Dialect::BEGIN`] already holds the only write lock.
    const LOCK: &'static str;
    /// The same for the sweeper, which skips rows another replica is sweeping rather than
    /// waiting for them (Postgres `FOR UPDATE SKIP LOCKED`).
    const LOCK_SKIP: &'static str;
    /// How a writing transaction begins. SQLite: `BEGIN IMMEDIATE` (take the write lock now,
    /// waiting up to the busy timeout, instead of failing at the first write); Postgres: `BEGIN`.
    const BEGIN: &'static str;

    fn time(t: DateTime<Utc>) -> Self::Time;
    fn from_time(t: Self::Time) -> Result<DateTime<Utc>, StoreError>;
    fn id(id: Uuid) -> Self::Id;
    fn from_id(id: Self::Id) -> Uuid;

    /// A set of ids bound as one parameter, so a page of any size is one statement: SQLite a
    /// JSON array (TEXT), Postgres `uuid[]`.
    type Ids: for<'q> Encode<'q, Self::Db> + Type<Self::Db> + Send + 'static;
    fn ids(ids: &[Uuid]) -> Self::Ids;
    /// ` IN <the set bound as parameter param>`: SQLite reads the array with `json_each`,
    /// Postgres compares with `= ANY`.
    fn in_ids(param: &str) -> String;

    /// The shared pool (API, sweeper, CLI; on SQLite the one connection).
    fn pool(&self) -> &Pool<Self::Db>;

    /// Hands the audit events of a committed transaction to live subscribers. SQLite: the
    /// in-process feed. Postgres: nothing to do, the `approval_events` trigger NOTIFYs every
    /// replica at commit.
    fn publish(&self, events: Vec<AuditEvent>);
}

/// One call of the gate's step, as both dialects take it: consume the newest approved approval
/// of `new`'s identity (when `consume`), else reuse or create the pending one.
#[derive(Debug, Clone, Copy)]
pub(super) struct GateCall<'a> {
    pub(super) new: &'a NewApproval,
    pub(super) ttl: Ttls,
    pub(super) now: DateTime<Utc>,
    /// `Gateway` for a proxied request, `Api` for `POST /v1/approvals`.
    pub(super) via: Via,
    /// False for `POST /v1/approvals`, which never consumes (and, on Postgres, runs on the
    /// shared pool rather than the gate's connections).
    pub(super) consume: bool,
}

/// The upstream's answer to a request that consumed `id`, as both dialects record it.
#[derive(Debug, Clone)]
pub(super) struct UpstreamCall {
    pub(super) id: Uuid,
    pub(super) status: Option<u16>,
    pub(super) error: Option<String>,
    /// The `upstream` audit event's detail.
    pub(super) detail: Value,
    pub(super) now: DateTime<Utc>,
}

impl UpstreamCall {
    pub(super) fn new(id: ApprovalId, result: UpstreamResult, now: DateTime<Utc>) -> Self {
        let (status, error, detail) = match result {
            UpstreamResult::Status(s) => (Some(s), None, json!({ "status": s })),
            UpstreamResult::Error(e) => (None, Some(e.clone()), json!({ "error": e })),
        };
        Self {
            id: id.0,
            status,
            error,
            detail,
            now,
        }
    }
}
