//! The store scenarios, each an `async fn(&Store)` run on both backends (see `on_both_backends!`).

use std::time::Duration;

use approval_gateway::store::*;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::*;

pub(super) async fn first_call_creates_then_retry_dedups(s: &Store) {
    let now = t0();
    let (a, created, previous) = pending(gate(s, &req("ws-1", "h1"), now).await);
    assert!(created);
    assert_eq!(previous, None);
    assert_eq!(
        (a.status, a.created_at, a.expires_at),
        (Status::Pending, now, now + secs(3600))
    );
    assert_eq!(
        (a.requester.as_str(), a.requester_actors.clone()),
        ("agent-7", vec!["orchestrator".to_string()])
    );
    assert_eq!(a.context, json!({ "workspace_id": "ws-1" }));
    let (b, created, _) = pending(gate(s, &req("ws-1", "h1"), now + secs(1)).await);
    assert!(!created);
    assert_eq!(b.id, a.id);
    assert_eq!(get(s, a.id, now).await, a);
    assert_eq!(
        events_of(s, a.id).await,
        [EventKind::Requested, EventKind::Deduplicated]
    );
}

async fn approve_consume_then_new_pending(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h1");
    let id = approved(s, &new, now).await;
    let a = get(s, id, now).await;
    assert_eq!(
        (a.decided_at, a.expires_at, a.decisions.len()),
        (Some(now), now + secs(600), 1)
    );
    assert_eq!(
        gate(s, &new, now + secs(1)).await,
        GateOutcome::Consumed(id)
    );
    let (next, created, previous) = pending(gate(s, &new, now + secs(2)).await);
    assert!(created && next.id != id && previous.is_none());
    let c = get(s, id, now + secs(3)).await;
    assert_eq!(
        (c.status, c.consumed_at),
        (Status::Consumed, Some(now + secs(1)))
    );
    s.record_upstream(id, UpstreamResult::Status(204), now + secs(2))
        .await
        .expect("record");
    assert_eq!(get(s, id, now).await.upstream_status, Some(204));
    let evs = events_of(s, id).await;
    assert_eq!(
        evs,
        [
            EventKind::Requested,
            EventKind::Voted,
            EventKind::Approved,
            EventKind::Consumed,
            EventKind::Upstream
        ]
    );
}

async fn record_upstream_error(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h1");
    let id = approved(s, &new, now).await;
    assert_eq!(gate(s, &new, now).await, GateOutcome::Consumed(id));
    s.record_upstream(id, UpstreamResult::Error("connect refused".into()), now)
        .await
        .expect("record");
    let a = get(s, id, now).await;
    assert_eq!(
        (a.upstream_status, a.upstream_error.as_deref()),
        (None, Some("connect refused"))
    );
    let last = s
        .events_after(0, 1000)
        .await
        .expect("events")
        .pop()
        .expect("an event");
    assert_eq!(
        (last.event, last.detail),
        (EventKind::Upstream, json!({ "error": "connect refused" }))
    );
}

async fn context_isolation(s: &Store) {
    let now = t0();
    let id = approved(s, &req("ws-1", "hash-a"), now).await;
    let (other, created, _) = pending(gate(s, &req("ws-1", "hash-b"), now).await);
    assert!(created && other.id != id);
    let (other_scope, created, _) = pending(gate(s, &req("ws-2", "hash-a"), now).await);
    assert!(created && other_scope.id != id);
    assert_eq!(
        gate(s, &req("ws-1", "hash-a"), now).await,
        GateOutcome::Consumed(id)
    );
}

async fn deny_then_retry_creates_fresh_with_previous(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h1");
    let (a, _, _) = pending(gate(s, &new, now).await);
    let denied = recorded(s, a.id, vote("bob", VoteKind::Deny), now + secs(1)).await;
    assert_eq!(
        (denied.status, denied.decided_at),
        (Status::Denied, Some(now + secs(1)))
    );
    let (b, created, previous) = pending(gate(s, &new, now + secs(2)).await);
    assert!(created && b.id != a.id);
    assert_eq!(previous, Some(a.id));
    let (c, created, previous) = pending(gate(s, &new, now + secs(3)).await);
    assert_eq!((c.id, created, previous), (b.id, false, Some(a.id)));
    assert_eq!(
        events_of(s, a.id).await,
        [EventKind::Requested, EventKind::Voted, EventKind::Denied]
    );
    // After a later approval is consumed, the old denial no longer counts as `previous`.
    recorded(s, b.id, vote("alice", VoteKind::Approve), now + secs(4)).await;
    assert_eq!(
        gate(s, &new, now + secs(5)).await,
        GateOutcome::Consumed(b.id)
    );
    let (_, created, previous) = pending(gate(s, &new, now + secs(6)).await);
    assert_eq!((created, previous), (true, None));
}

async fn quorum_of_two(s: &Store) {
    let now = t0();
    let new = NewApproval {
        approvals_required: 2,
        ..req("ws-1", "h1")
    };
    let (a, _, _) = pending(gate(s, &new, now).await);
    assert_eq!(a.approvals_required, 2);
    let one = recorded(s, a.id, vote("alice", VoteKind::Approve), now).await;
    assert_eq!((one.status, one.decisions.len()), (Status::Pending, 1));
    match s
        .decide(a.id, &vote("alice", VoteKind::Approve), ttls(), now)
        .await
        .expect("decide")
    {
        DecideOutcome::AlreadyVoted(x) => {
            assert_eq!((x.status, x.decisions.len()), (Status::Pending, 1))
        }
        other => panic!("expected AlreadyVoted, got {other:?}"),
    }
    assert!(matches!(
        gate(s, &new, now).await,
        GateOutcome::Pending { created: false, .. }
    ));
    let two = recorded(s, a.id, vote("carol", VoteKind::Approve), now + secs(1)).await;
    assert_eq!((two.status, two.decisions.len()), (Status::Approved, 2));
    assert_eq!(two.decisions[0].approver, "alice");
    assert_eq!(
        gate(s, &new, now + secs(2)).await,
        GateOutcome::Consumed(a.id)
    );
}

async fn bypass_approves_at_once(s: &Store) {
    let now = t0();
    let new = NewApproval {
        approvals_required: 3,
        ..req("ws-1", "h1")
    };
    let (a, _, _) = pending(gate(s, &new, now).await);
    let b = recorded(s, a.id, vote("root", VoteKind::Bypass), now).await;
    assert_eq!(
        (b.status, b.expires_at),
        (Status::Approved, now + secs(600))
    );
    assert_eq!(b.decisions[0].decision, VoteKind::Bypass);
    assert_eq!(
        events_of(s, a.id).await,
        [EventKind::Requested, EventKind::Voted, EventKind::Bypassed]
    );
    let all = s.events_after(0, 100).await.expect("events");
    let bypassed = all
        .iter()
        .find(|e| e.event == EventKind::Bypassed)
        .expect("bypassed event");
    assert_eq!(bypassed.detail["comment"], json!("root says so"));
    assert_eq!((bypassed.actor.as_str(), bypassed.via), ("root", Via::Api));
    assert_eq!(gate(s, &new, now).await, GateOutcome::Consumed(a.id));
}

async fn not_pending(s: &Store, id: ApprovalId, now: DateTime<Utc>) -> Status {
    match s
        .decide(id, &vote("zed", VoteKind::Approve), ttls(), now)
        .await
        .expect("decide")
    {
        DecideOutcome::NotPending(a) => a.status,
        other => panic!("expected NotPending, got {other:?}"),
    }
}

async fn decide_on_closed_approvals(s: &Store) {
    let now = t0();
    let consumed = approved(s, &req("ws-1", "h1"), now).await;
    assert_eq!(
        gate(s, &req("ws-1", "h1"), now).await,
        GateOutcome::Consumed(consumed)
    );
    assert_eq!(not_pending(s, consumed, now).await, Status::Consumed);
    let (w, _, _) = pending(gate(s, &req("ws-2", "h2"), now).await);
    assert!(matches!(
        s.withdraw(w.id, "agent-7", Via::Api, now).await,
        Ok(WithdrawOutcome::Withdrawn(_))
    ));
    assert_eq!(not_pending(s, w.id, now).await, Status::Withdrawn);
    let (e, _, _) = pending(gate(s, &req("ws-3", "h3"), now).await);
    assert_eq!(
        not_pending(s, e.id, now + secs(3600)).await,
        Status::Expired
    );
    assert_eq!(
        events_of(s, e.id).await,
        [EventKind::Requested, EventKind::Expired]
    );
    let approved_id = approved(s, &req("ws-4", "h4"), now).await;
    assert_eq!(not_pending(s, approved_id, now).await, Status::Approved);
    let missing = s
        .decide(
            ApprovalId::new(),
            &vote("a", VoteKind::Approve),
            ttls(),
            now,
        )
        .await;
    assert!(matches!(missing, Ok(DecideOutcome::NotFound)));
}

async fn pending_expiry(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h1");
    let (a, _, _) = pending(gate(s, &new, now).await);
    let later = now + secs(3600);
    assert_eq!(get(s, a.id, later - secs(1)).await.status, Status::Pending);
    assert_eq!(get(s, a.id, later).await.status, Status::Expired);
    let (b, created, _) = pending(gate(s, &new, later).await);
    assert!(created && b.id != a.id);
    assert_eq!(
        events_of(s, a.id).await,
        [EventKind::Requested, EventKind::Expired]
    );
    assert_eq!(get(s, a.id, now).await.status, Status::Expired);
}

async fn approval_expiry(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h1");
    let id = approved(s, &new, now).await;
    let later = now + secs(600);
    assert_eq!(get(s, id, later - secs(1)).await.status, Status::Approved);
    assert_eq!(get(s, id, later).await.status, Status::Expired);
    let (b, created, _) = pending(gate(s, &new, later).await);
    assert!(
        created && b.id != id,
        "an expired approval is never consumed"
    );
    let swept = s.expire_due(later).await.expect("sweep");
    assert_eq!(
        swept.iter().map(|a| (a.id, a.status)).collect::<Vec<_>>(),
        [(id, Status::Expired)]
    );
    assert_eq!(get(s, id, now).await.status, Status::Expired);
    assert_eq!(events_of(s, id).await.last(), Some(&EventKind::Expired));
}

async fn expire_due_sweeps_once(s: &Store) {
    let now = t0();
    let (p, _, _) = pending(gate(s, &req("ws-1", "h1"), now).await);
    let a = approved(s, &req("ws-2", "h2"), now).await;
    let (fresh, _, _) = pending(gate(s, &req("ws-3", "h3"), now + secs(3000)).await);
    assert!(s
        .expire_due(now + secs(599))
        .await
        .expect("sweep")
        .is_empty());
    let swept = s.expire_due(now + secs(3600)).await.expect("sweep");
    let mut ids: Vec<_> = swept.iter().map(|x| x.id).collect();
    ids.sort();
    let mut want = vec![p.id, a];
    want.sort();
    assert_eq!(ids, want);
    assert!(swept.iter().all(|x| x.status == Status::Expired));
    assert!(s
        .expire_due(now + secs(3600))
        .await
        .expect("sweep")
        .is_empty());
    assert_eq!(
        get(s, fresh.id, now + secs(3600)).await.status,
        Status::Pending
    );
    let expired: Vec<_> = s
        .events_after(0, 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.event == EventKind::Expired)
        .collect();
    assert_eq!(expired.len(), 2);
    assert!(expired
        .iter()
        .any(|e| e.detail["from"] == json!("approved")));
}

async fn withdraw_pending(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h1");
    let (a, _, _) = pending(gate(s, &new, now).await);
    match s
        .withdraw(a.id, "agent-7", Via::Api, now)
        .await
        .expect("withdraw")
    {
        WithdrawOutcome::Withdrawn(w) => assert_eq!(w.status, Status::Withdrawn),
        other => panic!("expected Withdrawn, got {other:?}"),
    }
    let again = s
        .withdraw(a.id, "agent-7", Via::Api, now)
        .await
        .expect("withdraw");
    assert!(matches!(again, WithdrawOutcome::NotPending(x) if x.status == Status::Withdrawn));
    let missing = s
        .withdraw(ApprovalId::new(), "agent-7", Via::Api, now)
        .await
        .expect("withdraw");
    assert_eq!(missing, WithdrawOutcome::NotFound);
    let (b, created, previous) = pending(gate(s, &new, now).await);
    assert!(created && b.id != a.id && previous.is_none());
    assert_eq!(
        events_of(s, a.id).await,
        [EventKind::Requested, EventKind::Withdrawn]
    );
}

async fn request_creates_or_reuses_without_consuming(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h1");
    let id = approved(s, &new, now).await;
    let (a, created) = s.request(&new, ttls(), now).await.expect("request");
    assert!(created && a.id != id);
    let (b, created) = s.request(&new, ttls(), now).await.expect("request");
    assert_eq!((b.id, created), (a.id, false));
    assert_eq!(get(s, id, now).await.status, Status::Approved);
    let evs = s.events_after(0, 100).await.expect("events");
    assert_eq!(
        evs.iter().find(|e| e.approval_id == a.id).map(|e| e.via),
        Some(Via::Api)
    );
}

async fn an_approval_an_agent_asked_for_is_never_consumed_by_the_gate(s: &Store) {
    let now = t0();
    let gated = req("ws-1", "h1");
    let asked = NewApproval {
        method: None,
        path: None,
        ..gated.clone()
    };
    let (a, created) = s.request(&asked, ttls(), now).await.unwrap();
    assert!(created);
    let approve = vote("alice", VoteKind::Approve);
    assert_eq!(
        recorded(s, a.id, approve, now).await.status,
        Status::Approved
    );
    // The same identity from the proxy: a pending approval of its own, not a consume.
    let (b, created, _) = pending(gate(s, &gated, now).await);
    assert!(created && b.id != a.id);
    assert_eq!(get(s, a.id, now).await.status, Status::Approved);
}

async fn list_filters_and_pages(s: &Store) {
    let now = t0();
    let mut ids = Vec::new();
    for i in 0..7i64 {
        let mut new = req(&format!("ws-{}", i % 2), &format!("h{i}"));
        if i == 6 {
            new.action = "drop_database".into();
            new.requester = "agent-9".into();
        }
        let (a, _, _) = pending(gate(s, &new, now + secs(i)).await);
        ids.push(a.id);
    }
    recorded(s, ids[0], vote("bob", VoteKind::Deny), now).await;
    let b = &s;
    let all = b.list(&ListFilter::default(), now).await.expect("list");
    assert_eq!(
        all.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(all.next_cursor, None);
    let f = |f: ListFilter| async move { b.list(&f, now).await.expect("list").items.len() };
    assert_eq!(
        f(ListFilter {
            status: Some(Status::Pending),
            ..Default::default()
        })
        .await,
        6
    );
    assert_eq!(
        f(ListFilter {
            status: Some(Status::Denied),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        f(ListFilter {
            scope: Some("ws-0".into()),
            ..Default::default()
        })
        .await,
        4
    );
    assert_eq!(
        f(ListFilter {
            action: Some("drop_database".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        f(ListFilter {
            requester: Some("agent-9".into()),
            ..Default::default()
        })
        .await,
        1
    );
    let due = ListFilter {
        status: Some(Status::Expired),
        ..Default::default()
    };
    assert_eq!(
        b.list(&due, now + secs(3603))
            .await
            .expect("list")
            .items
            .len(),
        3,
        "pending h1..h3 are due; h0 was denied"
    );
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = b
            .list(
                &ListFilter {
                    limit: 3,
                    cursor: cursor.clone(),
                    ..Default::default()
                },
                now,
            )
            .await
            .expect("page");
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|a| a.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>());
    let bad = b
        .list(
            &ListFilter {
                cursor: Some("not-a-cursor".into()),
                ..Default::default()
            },
            now,
        )
        .await;
    assert!(matches!(bad, Err(StoreError::InvalidCursor)));
    assert_eq!(
        b.pending_counts(now).await.expect("counts"),
        [
            ("delete_workspace".to_string(), 5),
            ("drop_database".to_string(), 1)
        ]
    );
}

async fn events_in_order(s: &Store) {
    let now = t0();
    approved(s, &req("ws-1", "h1"), now).await;
    let _ = gate(s, &req("ws-1", "h1"), now).await;
    let all = s.events_after(0, 100).await.expect("events");
    assert_eq!(all.len(), 4);
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "ids increase: {all:?}"
    );
    let kinds: Vec<_> = all.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Requested,
            EventKind::Voted,
            EventKind::Approved,
            EventKind::Consumed
        ]
    );
    let tail = s.events_after(all[1].id, 100).await.expect("events");
    assert_eq!(tail, all[2..]);
    assert_eq!(
        s.events_after(all[0].id, 1).await.expect("events"),
        all[1..2]
    );
    assert_eq!(
        all[1].detail,
        json!({ "decision": "approve", "comment": "alice says so" })
    );
}

/// Live events equal the announced audit rows, field for field — also one too big for a
/// Postgres NOTIFY payload (a long comment), which the listener reads from the table instead.
/// A retry and an upstream result are audited but not announced.
async fn subscribe_receives_live_events(s: &Store) {
    let mut rx = s.subscribe();
    let (a, _, _) = pending(gate(s, &req("ws-1", "h1"), t0()).await);
    pending(gate(s, &req("ws-1", "h1"), t0()).await);
    recorded(s, a.id, vote("alice", VoteKind::Approve), t0()).await;
    assert_eq!(
        gate(s, &req("ws-1", "h1"), t0() + secs(1)).await,
        GateOutcome::Consumed(a.id)
    );
    s.record_upstream(a.id, UpstreamResult::Status(204), t0() + secs(1))
        .await
        .expect("record");
    let (b, _, _) = pending(gate(s, &req("ws-2", "h2"), t0()).await);
    let long = Vote {
        comment: Some("no ".repeat(4000)),
        ..vote("bob", VoteKind::Deny)
    };
    recorded(s, b.id, long, t0()).await;
    let mut live = Vec::new();
    while live.len() < 7 {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("event in time")
            .expect("feed open");
        if e.approval_id == a.id || e.approval_id == b.id {
            live.push(e);
        }
    }
    let kinds: Vec<_> = live.iter().map(|e| (e.approval_id, e.event)).collect();
    assert_eq!(
        kinds,
        [
            (a.id, EventKind::Requested),
            (a.id, EventKind::Voted),
            (a.id, EventKind::Approved),
            (a.id, EventKind::Consumed),
            (b.id, EventKind::Requested),
            (b.id, EventKind::Voted),
            (b.id, EventKind::Denied),
        ]
    );
    let stored = s.events_after(0, 1000).await.expect("events");
    let quiet: Vec<_> = stored
        .iter()
        .filter(|e| !e.event.is_announced())
        .map(|e| e.event)
        .collect();
    assert_eq!(quiet, [EventKind::Deduplicated, EventKind::Upstream]);
    let announced: Vec<_> = stored
        .into_iter()
        .filter(|e| e.event.is_announced())
        .collect();
    assert_eq!(live, announced, "live events are the announced audit rows");
}

async fn ping_works(s: &Store) {
    s.ping().await.expect("ping");
    s.migrate().await.expect("migrations are idempotent");
}

/// The canvas mirror's mapping: set, found both ways, replaced (audited, not announced),
/// written back.
async fn mirror_mapping(s: &Store) {
    let now = t0();
    let new = req("ws-1", "h-mirror");
    let id = match gate(s, &new, now).await {
        GateOutcome::Pending { approval, .. } => approval.id,
        other => panic!("{other:?}"),
    };
    let b = &s;
    assert_eq!(b.mirror_get(id).await.expect("get"), None);
    let mut live = s.subscribe();
    let row = MirrorRow {
        approval_id: id,
        workspace_id: "ws-1".into(),
        server_id: "srv-1".into(),
        mirrored_at: now,
        written_back: None,
    };
    b.mirror_set(&row, "gateway").await.expect("set");
    assert_eq!(b.mirror_get(id).await.expect("get"), Some(row.clone()));
    assert_eq!(
        b.mirror_find("srv-1").await.expect("find"),
        Some(row.clone())
    );
    let again = MirrorRow {
        server_id: "srv-2".into(),
        mirrored_at: now + secs(1),
        ..row.clone()
    };
    b.mirror_set(&again, "gateway").await.expect("replace");
    assert_eq!(b.mirror_find("srv-1").await.expect("find"), None);
    assert_eq!(b.mirror_get(id).await.expect("get"), Some(again.clone()));
    assert!(
        b.mirror_unwritten(10).await.expect("unwritten").is_empty(),
        "still pending: nothing to write back"
    );
    let _ = b
        .decide(id, &vote("alice", VoteKind::Approve), ttls(), now)
        .await
        .expect("decide");
    assert_eq!(b.mirror_unwritten(10).await.expect("unwritten"), vec![id]);
    b.mirror_written_back(id, "approved")
        .await
        .expect("written back");
    assert_eq!(
        b.mirror_get(id)
            .await
            .expect("get")
            .and_then(|r| r.written_back),
        Some("approved".into())
    );
    assert!(b.mirror_unwritten(10).await.expect("unwritten").is_empty());
    let events = b.events_after(0, 1000).await.expect("events");
    let mirrored: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::Mirrored)
        .collect();
    assert_eq!(mirrored.len(), 2);
    assert_eq!(mirrored[1].detail["replaced"], "srv-1");
    assert_eq!(mirrored[1].detail["server_id"], "srv-2");
    let mut announced = Vec::new();
    while let Ok(ev) = live.try_recv() {
        announced.push(ev.event);
    }
    // (On Postgres the vote's events may still be on their way: only the absence is asserted.)
    assert!(
        !announced.contains(&EventKind::Mirrored),
        "mirrored is audited, not announced: {announced:?}"
    );
}

/// A page's decisions are read for the whole page at once (one query on both dialects): each
/// approval gets its own, in order, and the sweeper's answer carries them too. The `expired`
/// event's detail is built alike on both dialects.
async fn list_and_sweep_carry_each_approvals_own_decisions(s: &Store) {
    let now = t0();
    let two = |ws, h| NewApproval {
        approvals_required: 2,
        ..req(ws, h)
    };
    let (a, _, _) = pending(gate(s, &two("ws-1", "h1"), now).await);
    let (b, _, _) = pending(gate(s, &two("ws-2", "h2"), now + secs(1)).await);
    let (c, _, _) = pending(gate(s, &two("ws-3", "h3"), now + secs(2)).await);
    recorded(s, a.id, vote("alice", VoteKind::Approve), now + secs(3)).await;
    recorded(s, b.id, vote("bob", VoteKind::Approve), now + secs(4)).await;
    recorded(s, a.id, vote("carol", VoteKind::Deny), now + secs(5)).await;
    let approvers =
        |x: &Approval| -> Vec<String> { x.decisions.iter().map(|d| d.approver.clone()).collect() };
    let page = s
        .list(&ListFilter::default(), now + secs(6))
        .await
        .expect("list");
    let by_id = |id| page.items.iter().find(|x| x.id == id).expect("listed");
    assert_eq!(approvers(by_id(a.id)), ["alice", "carol"]);
    assert_eq!(approvers(by_id(b.id)), ["bob"]);
    assert!(by_id(c.id).decisions.is_empty());
    let swept = s.expire_due(now + secs(3700)).await.expect("sweep");
    let ids: Vec<_> = swept.iter().map(|x| x.id).collect();
    assert_eq!(ids, [b.id, c.id]);
    assert_eq!(approvers(&swept[0]), ["bob"]);
    let expired = s
        .events_after(0, 1000)
        .await
        .expect("events")
        .into_iter()
        .find(|e| e.event == EventKind::Expired && e.approval_id == b.id)
        .expect("expired event");
    assert_eq!(
        expired.detail,
        json!({ "from": "pending", "expires_at": b.expires_at })
    );
}

super::on_both_backends!(
    mirror_mapping,
    first_call_creates_then_retry_dedups,
    approve_consume_then_new_pending,
    record_upstream_error,
    context_isolation,
    deny_then_retry_creates_fresh_with_previous,
    quorum_of_two,
    bypass_approves_at_once,
    decide_on_closed_approvals,
    pending_expiry,
    approval_expiry,
    expire_due_sweeps_once,
    list_and_sweep_carry_each_approvals_own_decisions,
    withdraw_pending,
    request_creates_or_reuses_without_consuming,
    an_approval_an_agent_asked_for_is_never_consumed_by_the_gate,
    list_filters_and_pages,
    events_in_order,
    subscribe_receives_live_events,
    ping_works,
);
