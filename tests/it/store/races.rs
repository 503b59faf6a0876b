//! Real concurrency against both backends (multi-thread runtime): single use of an approval,
//! one pending row per identity, and — on Postgres, directly in SQL on two sessions — the
//! consume statement's behaviour when another session holds the row. The trap it guards: an
//! `UPDATE … WHERE id = (SELECT id … LIMIT 1)` without a lock lets two sessions consume one
//! approval (under READ COMMITTED the loser re-checks only `id = …` after its wait), so the
//! subquery locks (`FOR UPDATE`) and the outer `WHERE` repeats the state conditions.

use std::time::Duration;

use approval_gateway::store::postgres::GATE_SQL;
use approval_gateway::store::*;
use sqlx::{Connection, PgConnection, Row};
use tokio::task::JoinSet;

use super::{approved, req, t0, ttls};

const RACERS: usize = 50;

async fn race(s: &Store, new: &NewApproval) -> Vec<GateOutcome> {
    let now = t0();
    let mut set = JoinSet::new();
    for _ in 0..RACERS {
        let (s, new) = (s.clone(), new.clone());
        set.spawn(async move { s.consume_or_create(&new, ttls(), now).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task").expect("consume_or_create"));
    }
    out
}

fn pending_ids(outcomes: &[GateOutcome]) -> (Vec<ApprovalId>, usize) {
    let mut ids = Vec::new();
    let mut created = 0;
    for o in outcomes {
        if let GateOutcome::Pending {
            approval,
            created: c,
            ..
        } = o
        {
            ids.push(approval.id);
            created += usize::from(*c);
        }
    }
    (ids, created)
}

async fn one_approval_is_consumed_once(s: &Store) {
    let new = req("ws-race", "h-race");
    let id = approved(s, &new, t0()).await;
    let outcomes = race(s, &new).await;
    let consumed: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, GateOutcome::Consumed(_)))
        .collect();
    assert_eq!(consumed, [&GateOutcome::Consumed(id)]);
    let (ids, created) = pending_ids(&outcomes);
    assert_eq!(ids.len(), RACERS - 1);
    assert!(
        ids.iter().all(|p| *p == ids[0] && *p != id),
        "one shared new pending row"
    );
    assert_eq!(created, 1);
}

async fn concurrent_first_calls_make_one_pending(s: &Store) {
    let outcomes = race(s, &req("ws-first", "h-first")).await;
    let (ids, created) = pending_ids(&outcomes);
    assert_eq!(ids.len(), RACERS);
    assert!(ids.iter().all(|p| *p == ids[0]));
    assert_eq!(created, 1);
    let f = ListFilter {
        status: Some(Status::Pending),
        ..Default::default()
    };
    assert_eq!(s.list(&f, t0()).await.expect("list").items.len(), 1);
    let events = s.events_after(0, 1000).await.expect("events");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event == EventKind::Requested)
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event == EventKind::Deduplicated)
            .count(),
        RACERS - 1
    );
}

super::on_both_backends!(
    one_approval_is_consumed_once,
    concurrent_first_calls_make_one_pending
);

/// Runs the store's gate statement on `c`; the consumed id, if any.
async fn consume_sql(c: &mut PgConnection, new: &NewApproval) -> Option<uuid::Uuid> {
    let row = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::query(&GATE_SQL)
            .bind(t0())
            .bind(&new.scope)
            .bind(&new.action)
            .bind(&new.request_hash)
            .bind(&new.requester)
            .bind("gateway")
            .bind(true)
            .fetch_one(&mut *c),
    )
    .await
    .expect("the gate statement never blocks on a locked row")
    .expect("gate statement");
    row.get("consumed_id")
}

/// Session `first` consumes inside an open transaction; `second` must get nothing, both while
/// `first` is open and after it commits. Then the rollback case: the approval survives.
async fn two_sessions(first: &mut PgConnection, second: &mut PgConnection, s: &Store, scope: &str) {
    let new = req(scope, "h-two");
    let id = approved(s, &new, t0()).await;
    sqlx::query("BEGIN")
        .execute(&mut *first)
        .await
        .expect("begin");
    assert_eq!(consume_sql(first, &new).await, Some(id.0));
    assert_eq!(
        consume_sql(second, &new).await,
        None,
        "a locked approval is not consumed twice"
    );
    sqlx::query("COMMIT")
        .execute(&mut *first)
        .await
        .expect("commit");
    assert_eq!(
        consume_sql(second, &new).await,
        None,
        "a consumed approval is not consumed twice"
    );

    let new = req(scope, "h-rollback");
    let id = approved(s, &new, t0()).await;
    sqlx::query("BEGIN")
        .execute(&mut *first)
        .await
        .expect("begin");
    assert_eq!(consume_sql(first, &new).await, Some(id.0));
    assert_eq!(consume_sql(second, &new).await, None);
    sqlx::query("ROLLBACK")
        .execute(&mut *first)
        .await
        .expect("rollback");
    assert_eq!(
        consume_sql(second, &new).await,
        Some(id.0),
        "a rolled-back consume leaves it approved"
    );
    assert_eq!(consume_sql(first, &new).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_sessions_consume_once_in_both_orders() {
    let Some((s, url)) = crate::support::db::postgres_with_url().await else {
        return;
    };
    let mut a = PgConnection::connect(&url).await.expect("session a");
    let mut b = PgConnection::connect(&url).await.expect("session b");
    two_sessions(&mut a, &mut b, &s, "ws-ab").await;
    two_sessions(&mut b, &mut a, &s, "ws-ba").await;
    let _ = a.close().await;
    let _ = b.close().await;
}

/// Two replicas (two `Store`s, two pools) on one database: 25 racers each after one approval
/// → exactly one consumes; events committed by one replica reach the other's subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_share_single_use_and_events() {
    let Some(url) = crate::support::db::postgres_url().await else {
        return;
    };
    let a = Store::open(&url).expect("url");
    let b = Store::open(&url).expect("url");
    for s in [&a, &b] {
        tokio::time::timeout(
            Duration::from_secs(60),
            s.migrate_until_ready(std::future::pending()),
        )
        .await
        .expect("ready");
    }
    let mut feed_b = b.subscribe();
    let new = req("ws-replicas", "h-replicas");
    let id = approved(&a, &new, t0()).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), feed_b.recv())
            .await
            .expect("replica b hears replica a in time")
            .expect("feed open");
        seen.push((e.approval_id, e.event));
    }
    assert_eq!(
        seen,
        [
            (id, EventKind::Requested),
            (id, EventKind::Voted),
            (id, EventKind::Approved)
        ]
    );
    let mut set = JoinSet::new();
    for i in 0..RACERS {
        let (s, new) = (if i % 2 == 0 { a.clone() } else { b.clone() }, new.clone());
        set.spawn(async move { s.consume_or_create(&new, ttls(), t0()).await });
    }
    let mut consumed = 0;
    while let Some(r) = set.join_next().await {
        consumed += usize::from(matches!(
            r.expect("task").expect("gate"),
            GateOutcome::Consumed(_)
        ));
    }
    assert_eq!(consumed, 1);
}

#[tokio::test]
async fn migrate_until_ready_stops_on_shutdown_while_the_store_is_down() {
    let s = Store::open("postgres://postgres@127.0.0.1:1/nope").expect("open is lazy");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let s = s.clone();
        async move {
            s.migrate_until_ready(async move {
                let _ = rx.await;
            })
            .await
        }
    });
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("returns on shutdown")
        .expect("task");
    assert!(!s.is_ready());
}

/// The database drops the gate's connections (a restart, a proxy in between): the next gated
/// call reconnects and answers, rather than failing once per stale connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gate_reconnects_after_its_connections_are_killed() {
    let Some((s, url)) = crate::support::db::postgres_with_url().await else {
        return;
    };
    let new = req("ws-kill", "h-kill");
    let first = s.consume_or_create(&new, ttls(), t0()).await;
    let id = match first.expect("first call") {
        GateOutcome::Pending { approval, .. } => approval.id,
        other => panic!("expected Pending, got {other:?}"),
    };
    let mut admin = PgConnection::connect(&url).await.expect("admin session");
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) k",
    )
    .fetch_one(&mut admin)
    .await
    .expect("terminate");
    assert!(killed >= 1, "the gate's idle connection was there to kill");
    let again = s.consume_or_create(&new, ttls(), t0()).await;
    match again.expect("the retry reconnects") {
        GateOutcome::Pending {
            approval, created, ..
        } => assert_eq!((approval.id, created), (id, false)),
        other => panic!("expected Pending, got {other:?}"),
    }
    let _ = admin.close().await;
}
