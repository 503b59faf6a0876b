//! The approval store: one suite of scenarios (`async fn(&Store)`), each run on SQLite and on
//! Postgres (a fresh database per test; skipped loudly when Postgres is unreachable). Time is
//! passed in, so expiry is tested with future `now` values — no sleeps.

use std::time::Duration;

use approval_gateway::store::*;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

mod races;
mod scenarios;

const PENDING_TTL: Duration = Duration::from_secs(3600);
const APPROVED_TTL: Duration = Duration::from_secs(600);

fn ttls() -> Ttls {
    Ttls {
        pending: PENDING_TTL,
        approved: APPROVED_TTL,
    }
}

/// Now, at the microsecond precision both backends store.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("valid now")
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn req(scope: &str, hash: &str) -> NewApproval {
    NewApproval {
        scope: scope.into(),
        action: "delete_workspace".into(),
        request_hash: hash.into(),
        reason: format!("delete workspace {scope}"),
        context: json!({ "workspace_id": scope }),
        method: Some("DELETE".into()),
        path: Some(format!("/workspaces/{scope}")),
        requester: "agent-7".into(),
        requester_actors: vec!["orchestrator".into()],
        caller: Some("agent".into()),
        approvals_required: 1,
    }
}

fn vote(approver: &str, kind: VoteKind) -> Vote {
    Vote {
        approver: approver.into(),
        kind,
        comment: Some(format!("{approver} says so")),
        via: Via::Api,
    }
}

async fn gate(s: &Store, new: &NewApproval, now: DateTime<Utc>) -> GateOutcome {
    s.consume_or_create(new, ttls(), now)
        .await
        .expect("consume_or_create")
}

/// The pending approval of an outcome (panics on `Consumed`).
fn pending(o: GateOutcome) -> (Approval, bool, Option<ApprovalId>) {
    match o {
        GateOutcome::Pending {
            approval,
            created,
            previous,
        } => (approval, created, previous),
        other => panic!("expected Pending, got {other:?}"),
    }
}

async fn recorded(s: &Store, id: ApprovalId, v: Vote, now: DateTime<Utc>) -> Approval {
    match s.decide(id, &v, ttls(), now).await.expect("decide") {
        DecideOutcome::Recorded(a) => a,
        other => panic!("expected Recorded, got {other:?}"),
    }
}

async fn get(s: &Store, id: ApprovalId, now: DateTime<Utc>) -> Approval {
    s.get(id, now).await.expect("get").expect("approval exists")
}

async fn events_of(s: &Store, id: ApprovalId) -> Vec<EventKind> {
    let all = s.events_after(0, 10_000).await.expect("events");
    all.into_iter()
        .filter(|e| e.approval_id == id)
        .map(|e| e.event)
        .collect()
}

/// An approved approval for `new`, created and approved at `now`.
async fn approved(s: &Store, new: &NewApproval, now: DateTime<Utc>) -> ApprovalId {
    let (a, _, _) = pending(gate(s, new, now).await);
    assert_eq!(
        recorded(s, a.id, vote("alice", VoteKind::Approve), now)
            .await
            .status,
        Status::Approved
    );
    a.id
}

/// One `#[tokio::test]` per backend for each scenario.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                super::$name(&crate::support::db::sqlite().await).await
            })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(store) = crate::support::db::postgres().await {
                    super::$name(&store).await
                }
            })*
        }
    };
}
pub(crate) use on_both_backends;

#[tokio::test]
async fn memory_sqlite_works_and_bad_urls_are_rejected() {
    scenarios::first_call_creates_then_retry_dedups(&crate::support::db::sqlite_memory().await)
        .await;
    assert!(matches!(Store::open("mysql://x"), Err(StoreError::Url(_))));
}

#[tokio::test]
async fn open_never_connects_and_unreachable_is_unavailable() {
    let s = Store::open("postgres://postgres@127.0.0.1:1/nope").expect("open is lazy");
    assert!(!s.is_ready());
    let err = s.ping().await.expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[test]
fn open_outside_a_runtime_is_an_error_not_a_panic() {
    assert!(matches!(
        Store::open("sqlite::memory:"),
        Err(StoreError::Url(_))
    ));
}

#[tokio::test]
async fn sqlite_file_store_creates_its_directory() {
    let dir = std::env::temp_dir().join(format!("ag-dir-{}", uuid::Uuid::new_v4().simple()));
    let s = Store::open(&format!("sqlite://{}/data/approvals.db", dir.display())).expect("open");
    assert!(
        !dir.join("data/approvals.db").exists(),
        "open never connects"
    );
    s.migrate().await.expect("migrate");
    assert!(dir.join("data/approvals.db").exists());
}

/// WAL checkpoints run in the background (`src/store/sqlite/checkpoint.rs`), not inline on the
/// store's one connection: a few gated writes, far fewer frames than SQLite's default inline
/// threshold of 1,000, reach the database file by themselves. Seen from a second connection:
/// the file holds every page of the database once a checkpoint has copied the WAL into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_the_wal_in_the_background() {
    use sqlx::Connection as _;

    let (s, file) = crate::support::db::sqlite_with_file().await;
    for i in 0..40 {
        pending(
            gate(
                &s,
                &req(&format!("ws-ckpt-{i}"), &format!("h-ckpt-{i}")),
                t0(),
            )
            .await,
        );
    }
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", file.display()))
        .await
        .expect("second connection");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut c)
            .await
            .expect("page_count");
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut c)
            .await
            .expect("page_size");
        let on_disk = std::fs::metadata(&file).expect("db file").len();
        if on_disk >= u64::try_from(pages * page_size).expect("size") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the WAL was not checkpointed: the file holds {on_disk} bytes of {pages} pages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.close().await.expect("close");
}

/// Another connection holding SQLite's write lock (the background `RESTART` checkpoint, or the
/// operator CLI on the same file) delays a vote; it must not fail it. A vote reads before it
/// writes, and SQLite fails a read transaction that cannot become a write one at once, without
/// waiting; so the store's transactions take the write lock as they begin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_vote_waits_for_another_writer_instead_of_failing() {
    use sqlx::{Connection as _, Executor as _};

    let (s, file) = crate::support::db::sqlite_with_file().await;
    let (a, _, _) = pending(gate(&s, &req("ws-lock", "h-lock"), t0()).await);
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("second connection");
    other.execute("BEGIN IMMEDIATE").await.expect("write lock");
    let vote = {
        let s = s.clone();
        tokio::spawn(
            async move { recorded(&s, a.id, vote("alice", VoteKind::Approve), t0()).await },
        )
    };
    // Hold the lock long enough for the vote to reach it (well inside the 5 s busy timeout).
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.execute("COMMIT").await.expect("release");
    let decided = vote.await.expect("the vote is recorded, not failed");
    assert_eq!(decided.status, Status::Approved);
    other.close().await.expect("close");
}

/// The Postgres trigger (migration 0003) and `EventKind::is_announced` keep one list in two
/// places: insert one event of every kind, then a marker, and the channel must carry exactly
/// the announced kinds before the marker (notifications arrive in commit order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_trigger_announces_exactly_the_announced_kinds() {
    use sqlx::postgres::PgListener;
    use sqlx::Connection as _;

    let Some((s, url)) = crate::support::db::postgres_with_url().await else {
        return;
    };
    let (a, _, _) = pending(gate(&s, &req("ws-kinds", "h-kinds"), t0()).await);
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener
        .listen(approval_gateway::store::postgres::EVENTS_CHANNEL)
        .await
        .expect("listen");
    let mut c = sqlx::PgConnection::connect(&url).await.expect("session");
    let insert = "INSERT INTO approval_events (approval_id, event, actor, via, at) \
                  VALUES ($1, $2, $3, 'api', now())";
    for (kind, actor) in EventKind::ALL
        .iter()
        .map(|k| (k.as_str(), "kinds"))
        .chain([(EventKind::Requested.as_str(), "marker")])
    {
        sqlx::query(insert)
            .bind(a.id.0)
            .bind(kind)
            .bind(actor)
            .execute(&mut c)
            .await
            .expect("insert event");
    }
    let mut heard = Vec::new();
    loop {
        let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("notification in time")
            .expect("listener open");
        let row: serde_json::Value = serde_json::from_str(note.payload()).expect("row as JSON");
        match row["actor"].as_str() {
            Some("marker") => break,
            Some("kinds") => heard.push(row["event"].as_str().expect("event").to_owned()),
            _ => {}
        }
    }
    let announced: Vec<_> = EventKind::ALL
        .iter()
        .filter(|k| k.is_announced())
        .map(|k| k.as_str())
        .collect();
    assert_eq!(heard, announced);
    let _ = c.close().await;
}
