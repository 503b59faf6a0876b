//! Stage 5: the approval store. The only module that talks to the database.
//!
//! [`Store`] (`handle.rs`) is what the rest of the gateway holds; its operations run on one of
//! two sqlx backends (SQLite: the embedded single-node default; Postgres: production, several
//! replicas). The rules — votes and quorum, withdrawal, expiry, reads, the audit trail, the
//! canvas mirror's table — are written once (`rules.rs`) over a small per-dialect trait
//! (`dialect.rs`); `sqlite/` and `postgres/` hold only what truly differs: the gate's statements,
//! connection handling, SQLite's WAL checkpoints, Postgres's LISTEN/NOTIFY. The types are in
//! `model.rs`.
//!
//! Every operation is idempotent and returns an outcome enum, so a retried request gets the
//! same answer. Every transition appends a row to `approval_events` in the same transaction
//! (the audit trail; nothing is ever deleted).
//!
//! Time is passed in (`now`) so tests control expiry. Expiry is enforced at read time in every
//! query (`expires_at > now`); the sweeper (`expire_due`) only turns due rows into `expired`
//! transitions so events and metrics see them.

mod dialect;
mod handle;
mod model;
pub mod postgres;
mod rules;
mod sqlite;
mod wait;

pub use handle::Store;
pub use model::{
    Approval, ApprovalId, AuditEvent, DecideOutcome, DecisionRecord, EventKind, GateOutcome,
    ListFilter, MirrorRow, NewApproval, Origin, Page, Status, StoreError, Ttls, UpstreamResult,
    Via, Vote, VoteKind, WithdrawOutcome,
};

/// The page size of a list call that names none.
pub(crate) use rules::DEFAULT_LIMIT as DEFAULT_LIST_LIMIT;
/// The most approvals one list call returns (larger `limit`s are refused by the API).
pub(crate) use rules::MAX_LIMIT as MAX_LIST_LIMIT;
