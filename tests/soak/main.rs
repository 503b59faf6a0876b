//! Soak: thousands of mixed requests through two gateway replicas on one Postgres store (and
//! one replica on SQLite), with upstream faults, a replica restart and killed database
//! connections, then the invariants checked from the audit table and the upstream's record.
//!
//! ```sh
//! cargo test --test soak -- --nocapture                     # the default: SOAK_SECONDS=20 (CI)
//! SOAK_SECONDS=300 cargo test --test soak -- --nocapture    # a long run
//! SOAK_SECONDS=60 SOAK_MAX_REQUESTS=500000 SOAK_SEED=42 cargo test --test soak -- --nocapture
//! AG_REQUIRE_POSTGRES=1 cargo test --test soak              # fail instead of skipping without Postgres
//! ```
//!
//! `SOAK_SECONDS` bounds the traffic phase of the Postgres run (default 20; the SQLite run, in
//! parallel, gets a quarter of it); `SOAK_MAX_REQUESTS` bounds the requests of each run (default
//! 100000); `SOAK_SEED` replays a run's random choices (its timing still varies). All traffic
//! is to 127.0.0.1. Postgres: `AG_TEST_POSTGRES_URL` as for `tests/it`; each run makes its own
//! database and the connection kill only touches that database.
//!
//! What a run does: gated callers (distinct subjects, claim `org_token_id`) send
//! `DELETE /workspaces/{id}`, `DELETE /workspaces/{id}?purge=true` and
//! `PUT /workspaces/{id}/secrets` (JSON bodies, in two key orders) and retry them, sometimes
//! holding with `Prefer: wait`; ungated callers (an agent reading, anonymous reads, an approver
//! writing, sometimes with a forged `Approval-Id`) pass through; approvers list pending
//! approvals on a random replica's admin API and approve or deny. On a schedule: the upstream
//! answers 500, answers slowly, answers slower than `request_timeout`, cuts a response short,
//! drops the connection unanswered; a replica is stopped gracefully while requests are held on
//! it (one of them approved during the drain) and replaced; on Postgres every connection to the
//! run's database is killed twice. The invariants are in `check.rs`.

#![allow(clippy::unwrap_used)]
// A test binary exports nothing: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

#[path = "../it/support/mod.rs"]
mod support;

mod check;
mod replica;
mod traffic;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_gateway::store::{
    Approval, ApprovalId, ListFilter, Status, Store, Ttls, Via, Vote, VoteKind,
};
use bytes::Bytes;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use replica::Replica;
use support::db;
use support::gateway::{human, sqlite_url};
use support::upstream::{FakeUpstream, Reply};
use traffic::{Kind, Req, Rng, Shared};

const GATED_SUBJECTS: [&str; 3] = ["agent-0", "agent-1", "agent-2"];
const TASKS_PER_SUBJECT: usize = 3;
const PASS_TASKS: usize = 6;
const HELD: usize = 3;
/// `Prefer: wait` of the requests held on a replica while it stops (at most `MAX_WAIT`).
const HELD_WAIT: u64 = 2;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn soak_seconds() -> f64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(20.0)
}

struct Plan {
    name: &'static str,
    url: String,
    replicas: usize,
    run: Duration,
    kill_connections: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_soak_two_replicas_with_faults_keeps_the_invariants() {
    let Some(url) = db::postgres_url().await else {
        return;
    };
    soak(Plan {
        name: "postgres",
        url,
        replicas: 2,
        run: Duration::from_secs_f64(soak_seconds()),
        kill_connections: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_soak_one_replica_with_faults_keeps_the_invariants() {
    soak(Plan {
        name: "sqlite",
        url: sqlite_url(),
        replicas: 1,
        run: Duration::from_secs_f64((soak_seconds() / 4.0).max(2.0)),
        kill_connections: false,
    })
    .await;
}

/// A fault, at a fraction of the run.
#[derive(Clone)]
enum Fault {
    Upstream(Reply, &'static str),
    Restart,
    KillConnections,
}

/// With one replica (SQLite) the restart stops all traffic while it drains, so it comes last.
fn schedule(kill: bool, restart_at: f64) -> Vec<(f64, Fault)> {
    let ok = Reply::Fixed {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(b"ok"),
    };
    let normal = Fault::Upstream(ok, "normal");
    let mut s: Vec<(f64, Fault)> = vec![
        (
            0.08,
            Fault::Upstream(
                Reply::Fixed {
                    status: 500,
                    headers: vec![],
                    body: Bytes::from_static(b"boom"),
                },
                "500s",
            ),
        ),
        (0.16, normal.clone()),
        (
            0.20,
            Fault::Upstream(Reply::Delay(Duration::from_millis(300)), "slow (300ms)"),
        ),
        (0.28, normal.clone()),
        (restart_at, Fault::Restart),
        (0.45, Fault::Upstream(Reply::Cut, "cut mid-response")),
        (0.50, normal.clone()),
        (
            0.55,
            Fault::Upstream(Reply::Drop, "connection dropped unanswered"),
        ),
        (0.59, normal.clone()),
        (
            0.66,
            Fault::Upstream(
                Reply::Delay(replica::REQUEST_TIMEOUT + Duration::from_millis(500)),
                "slower than request_timeout",
            ),
        ),
        (0.72, normal),
    ];
    if kill {
        s.push((0.62, Fault::KillConnections));
        s.push((0.82, Fault::KillConnections));
    }
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

async fn soak(plan: Plan) {
    // The gateway's errors on stderr (`RUST_LOG=warn` for the expected 502s of the faults too).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
        ))
        .with_writer(std::io::stderr)
        .try_init();
    let started = Instant::now();
    let seed = env_u64(
        "SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let max_requests = env_u64("SOAK_MAX_REQUESTS", 100_000);
    println!(
        "soak[{}]: seed {seed}, {:?} of traffic, at most {max_requests} requests, {} replica(s)",
        plan.name, plan.run, plan.replicas
    );
    let mut rng = Rng::new(seed);
    let upstream = FakeUpstream::start().await;
    // The checker's own handle on the store (migrates it first): reads at the end, and the vote
    // made while a replica drains.
    let checker = Store::open(&plan.url).unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        checker.migrate_until_ready(std::future::pending()),
    )
    .await
    .expect("store migrated in time");
    let mut replicas = Vec::new();
    for _ in 0..plan.replicas {
        replicas.push(replica::start(&plan.url, &upstream.url()).await);
    }
    let sh = Shared::new(
        replicas.iter().map(|r| (r.proxy, r.admin)).collect(),
        plan.run,
        max_requests,
    );

    let mut clients = tokio::task::JoinSet::new();
    for subject in GATED_SUBJECTS {
        for _ in 0..TASKS_PER_SUBJECT {
            let r = Rng::new(rng.next());
            clients.spawn(traffic::gated_caller(sh.clone(), subject.to_owned(), r));
        }
    }
    for _ in 0..PASS_TASKS {
        clients.spawn(traffic::pass_caller(sh.clone(), Rng::new(rng.next())));
    }
    for name in traffic::APPROVERS {
        clients.spawn(traffic::approver(sh.clone(), name, Rng::new(rng.next())));
    }
    let faults = tokio::spawn(run_faults(
        sh.clone(),
        upstream.clone(),
        replicas,
        checker.clone(),
        plan.url.clone(),
        schedule(
            plan.kill_connections,
            if plan.replicas > 1 { 0.33 } else { 0.78 },
        ),
        Rng::new(rng.next()),
    ));
    while let Some(r) = clients.join_next().await {
        r.expect("client task");
    }
    let (replicas, fault_log) = faults.await.expect("fault task");
    let traffic_done = started.elapsed();

    // Every forwarded request's upstream result is recorded off the response path: let it land.
    // (Approvals consumed by a statement whose connection was killed never get one: stop once
    // the count has not moved for half a second.)
    let since = Instant::now();
    let (mut last, mut still_since) = (usize::MAX, Instant::now());
    loop {
        let missing = all_approvals(&checker)
            .await
            .iter()
            .filter(|a| {
                a.status == Status::Consumed
                    && a.upstream_status.is_none()
                    && a.upstream_error.is_none()
            })
            .count();
        if missing != last {
            (last, still_since) = (missing, Instant::now());
        }
        if missing == 0
            || still_since.elapsed() > Duration::from_millis(500)
            || since.elapsed() > Duration::from_secs(3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed_pending = list_pending_over_http(&replicas[0]).await;
    for r in replicas {
        r.stop().await;
    }

    let approvals = all_approvals(&checker).await;
    let mut events = Vec::new();
    loop {
        let after = events
            .last()
            .map_or(0, |e: &approval_gateway::store::AuditEvent| e.id);
        let page = checker.events_after(after, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let recorded = upstream.wait_for_requests(0).await;
    let sent = sh.log.lock().unwrap().clone();
    let findings = check::all(&check::Evidence {
        sent: &sent,
        recorded: &recorded,
        approvals: &approvals,
        events: &events,
        listed_pending: &listed_pending,
        stops: &sh.stops.lock().unwrap().clone(),
        // The shutdown loss was fixed (shards wait for the recording tasks): strict always.
        strict_shutdown: true,
    });

    // ---- summary ---------------------------------------------------------------------------
    let gated = sent.iter().filter(|s| s.kind == Kind::Gated).count();
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    for s in &sent {
        let k = format!(
            "{}:{}",
            if s.kind == Kind::Gated {
                "gated"
            } else {
                "pass"
            },
            s.status()
                .map_or("transport-error".to_owned(), |c| c.to_string())
        );
        *by_status.entry(k).or_default() += 1;
    }
    let cut_short = sent
        .iter()
        .filter(|s| matches!(s.seen, traffic::Seen::Response { body_ok: false, .. }))
        .count();
    let mut approvals_by = std::collections::BTreeMap::<&str, usize>::new();
    for a in &approvals {
        *approvals_by.entry(a.status.as_str()).or_default() += 1;
    }
    let decisions = sh.decisions.lock().unwrap().clone();
    println!(
        "soak[{}]: {} requests sent ({gated} gated, {} pass-through) in {:.1}s; \
         {} reached the upstream ({} gated, each with its approval)",
        plan.name,
        sent.len(),
        sent.len() - gated,
        traffic_done.as_secs_f64(),
        recorded.len(),
        findings.forwarded_gated,
    );
    println!(
        "soak[{}]: client statuses {by_status:?}; {cut_short} bodies cut short",
        plan.name
    );
    println!(
        "soak[{}]: approvals {approvals_by:?}; {} audit events; votes: {decisions:?}",
        plan.name,
        events.len()
    );
    println!(
        "soak[{}]: gated 200s seen by clients {} ({} cut short) = consumed with upstream 200 {}",
        plan.name, findings.gated_200_clients, findings.gated_200_truncated, findings.consumed_200
    );
    for line in &fault_log {
        println!("soak[{}]: fault {line}", plan.name);
    }
    for n in &findings.notes {
        println!("soak[{}]: note: {n}", plan.name);
    }
    println!(
        "soak[{}]: done in {:.1}s",
        plan.name,
        started.elapsed().as_secs_f64()
    );
    assert!(
        findings.violations.is_empty(),
        "soak[{}] (seed {seed}) broke invariants:\n  {}",
        plan.name,
        findings.violations.join("\n  ")
    );
    assert!(
        findings.forwarded_gated > 0 && sent.len() > 500,
        "soak[{}] too little traffic to mean anything",
        plan.name
    );
}

/// Every approval in the store, via the store API (keyset pages).
async fn all_approvals(store: &Store) -> Vec<Approval> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let filter = ListFilter {
            limit: 500,
            cursor,
            ..Default::default()
        };
        let page = store.list(&filter, chrono::Utc::now()).await.unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// The ids `GET /v1/approvals?status=pending` lists, every page, as an approver.
async fn list_pending_over_http(r: &Replica) -> HashSet<String> {
    let client = traffic::client();
    let bearer = human("alice");
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("http://{}/v1/approvals?status=pending&limit=200", r.admin);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            ids.insert(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// Runs the fault schedule; returns the replicas (as replaced) and what was injected.
async fn run_faults(
    sh: Arc<Shared>,
    upstream: FakeUpstream,
    mut replicas: Vec<Replica>,
    checker: Store,
    url: String,
    schedule: Vec<(f64, Fault)>,
    mut rng: Rng,
) -> (Vec<Replica>, Vec<String>) {
    let start = Instant::now();
    let run = sh.deadline.saturating_duration_since(start);
    let mut log = Vec::new();
    for (at, fault) in schedule {
        tokio::time::sleep_until((start + run.mul_f64(at)).into()).await;
        if sh.stopped() {
            log.push("(run ended before the rest of the schedule)".into());
            break;
        }
        let t = start.elapsed().as_secs_f64();
        match fault {
            Fault::Upstream(reply, what) => {
                upstream.set_reply(reply);
                log.push(format!("{t:.1}s upstream: {what}"));
            }
            Fault::KillConnections => {
                let killed = kill_connections(&url).await;
                log.push(format!(
                    "{t:.1}s killed {killed} Postgres connections of this run's database"
                ));
            }
            Fault::Restart => {
                let idx = replicas.len() - 1;
                let line =
                    restart(&sh, &mut replicas, idx, &checker, &url, &upstream, &mut rng).await;
                log.push(format!("{t:.1}s {line}"));
            }
        }
    }
    upstream.set_reply(Reply::Fixed {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(b"ok"),
    });
    (replicas, log)
}

/// Stop replica `idx` gracefully while `HELD` requests wait on it (`Prefer: wait`), approve one
/// of them while it drains, then start a replacement.
async fn restart(
    sh: &Arc<Shared>,
    replicas: &mut Vec<Replica>,
    idx: usize,
    checker: &Store,
    url: &str,
    upstream: &FakeUpstream,
    rng: &mut Rng,
) -> String {
    let proxy = replicas[idx].proxy;
    let subject = "agent-held";
    let bearer = traffic::agent_token(subject);
    let mut held = tokio::task::JoinSet::new();
    for k in 0..HELD {
        let (sh, bearer, mut rng) = (sh.clone(), bearer.clone(), Rng::new(rng.next()));
        held.spawn(async move {
            let req = Req {
                kind: Kind::Gated,
                subject,
                bearer: Some(&bearer),
                method: reqwest::Method::DELETE,
                path_and_query: format!("/workspaces/ws-held-{k}"),
                body: None,
                prefer_wait: Some(HELD_WAIT),
                forged_approval_id: None,
            };
            traffic::send(&sh, &traffic::client(), &mut rng, req, Some(proxy))
                .await
                .and_then(|s| s.status())
        });
    }
    // Wait (bounded) until the first held request's approval exists and it is being held.
    let since = Instant::now();
    let mut to_approve = None;
    while since.elapsed() < Duration::from_secs(2) {
        to_approve = checker
            .list(
                &ListFilter {
                    status: Some(Status::Pending),
                    scope: Some("ws-held-0".into()),
                    requester: Some(subject.into()),
                    limit: 1,
                    ..Default::default()
                },
                chrono::Utc::now(),
            )
            .await
            .ok()
            .and_then(|p| p.items.first().map(|a| a.id));
        if to_approve.is_some() && replicas[idx].metrics.requests_waiting.get() >= HELD as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = replicas[idx].metrics.requests_waiting.get();
    sh.replicas.write().unwrap()[idx] = None;
    let old = replicas.remove(idx);
    let stop_began = Instant::now();
    let began_at = sh.started.elapsed().as_secs_f64();
    let stopping = old.begin_stop();
    let mut approved_in_drain = "no approval found to approve";
    if let Some(id) = to_approve {
        approved_in_drain = vote_approve(checker, id).await;
    }
    stopping.done().await;
    let drained = stop_began.elapsed();
    sh.stops
        .lock()
        .unwrap()
        .push((proxy, began_at, sh.started.elapsed().as_secs_f64()));
    let mut outcomes = Vec::new();
    while let Some(r) = held.join_next().await {
        outcomes.push(r.expect("held request"));
    }
    outcomes.sort();
    let fresh = replica::start(url, &upstream.url()).await;
    sh.replicas.write().unwrap()[idx] = Some((fresh.proxy, fresh.admin));
    replicas.insert(idx, fresh);
    let new_addr = replicas[idx].proxy;
    format!(
        "replica {idx} ({proxy}) stopped gracefully with {waiting} requests held (one approved during the \
         drain: {approved_in_drain}); drained in {:.1}s; held requests answered {outcomes:?}; \
         replaced by {new_addr}",
        drained.as_secs_f64()
    )
}

async fn vote_approve(checker: &Store, id: ApprovalId) -> &'static str {
    let vote = Vote {
        approver: "dave".into(),
        kind: VoteKind::Approve,
        comment: Some("approved while the replica drains".into()),
        via: Via::Cli,
    };
    let ttls = Ttls {
        pending: Duration::from_secs(86400),
        approved: Duration::from_secs(3600),
    };
    match checker.decide(id, &vote, ttls, chrono::Utc::now()).await {
        Ok(approval_gateway::store::DecideOutcome::Recorded(_)) => "approved",
        Ok(_) => "already decided by an approver",
        Err(_) => "the vote failed",
    }
}

/// Terminates every other session on the database of `url` (never the server itself).
async fn kill_connections(url: &str) -> i64 {
    let Ok(mut c) = PgConnection::connect(url).await else {
        return -1;
    };
    let n = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut c)
    .await
    .unwrap_or(-1);
    let _ = c.close().await;
    n
}

/// Found by the soak (`check::SHUTDOWN_BUG`), alone and deterministic: a request that consumed
/// an approval is forwarded, the replica is asked to stop while the upstream is answering, the
/// client gets its 200 — and the approval must still get the upstream's status (the recording
/// task used to be dropped with the stopping shard's runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_result_is_recorded_when_the_replica_stops_after_forwarding() {
    let upstream = FakeUpstream::start().await;
    let url = sqlite_url();
    let checker = Store::open(&url).unwrap();
    checker.migrate_until_ready(std::future::pending()).await;
    let gw = replica::start(&url, &upstream.url()).await;
    let client = traffic::client();
    let bearer = traffic::agent_token("agent-stop");
    let target = format!("http://{}/workspaces/ws-stop", gw.proxy);
    let first = client
        .delete(&target)
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let id = first.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .and_then(ApprovalId::parse)
        .unwrap();
    assert_eq!(vote_approve(&checker, id).await, "approved");

    upstream.set_reply(Reply::Delay(Duration::from_millis(300)));
    let retry = tokio::spawn(async move {
        client
            .delete(&target)
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .status()
    });
    upstream.wait_for_requests(1).await;
    let stopping = gw.begin_stop();
    assert_eq!(retry.await.unwrap(), 200, "forwarded once, answered");
    stopping.done().await;

    let mut recorded = None;
    for _ in 0..100 {
        let a = checker.get(id, chrono::Utc::now()).await.unwrap().unwrap();
        assert_eq!(a.status, Status::Consumed);
        if a.upstream_status.is_some() || a.upstream_error.is_some() {
            recorded = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = recorded.expect("the upstream's 200 is recorded on the consumed approval");
    assert_eq!(a.upstream_status, Some(200));
}
