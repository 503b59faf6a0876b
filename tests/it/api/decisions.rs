//! Votes: quorum, one vote each, one deny denies, bypass, and 409 on non-pending approvals.

use approval_gateway::store::{EventKind, GateOutcome, Status, Store, Via};
use reqwest::StatusCode;

use crate::support::admin::{self, agent, approval, new_approval, operator, serve};

pub(super) async fn quorum_of_two_needs_two_distinct_approvers_and_one_vote_each(store: Store) {
    let api = serve(store, admin::policy(2)).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 2)).await;

    let (s, body) = api
        .decide(a.id, &operator("alice"), "approve", "looks right")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let after_one = approval(&body);
    assert_eq!(after_one.status, Status::Pending);
    assert_eq!(after_one.decisions.len(), 1);
    assert_eq!(after_one.decisions[0].approver, "alice");
    assert_eq!(
        after_one.decisions[0].comment.as_deref(),
        Some("looks right")
    );

    assert_eq!(
        api.decide(a.id, &operator("alice"), "approve", "again")
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api.decide(a.id, &operator("alice"), "deny", "").await.0,
        StatusCode::CONFLICT
    );

    let (s, body) = api
        .decide(a.id, &admin::admin("carol"), "approve", "")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let approved = approval(&body);
    assert_eq!(approved.status, Status::Approved);
    assert!(approved.decided_at.is_some());
    let approvers: Vec<_> = approved
        .decisions
        .iter()
        .map(|d| d.approver.as_str())
        .collect();
    assert_eq!(approvers, ["alice", "carol"]);

    // Every API transition is audited with via = api and the approver as actor.
    let audit = api.store.events_after(0, 100).await.expect("audit");
    let trail: Vec<_> = audit
        .iter()
        .filter(|e| e.approval_id == a.id && e.via == Via::Api)
        .map(|e| (e.event, e.actor.as_str()))
        .collect();
    assert!(trail.contains(&(EventKind::Voted, "alice")), "{trail:?}");
    assert!(trail.contains(&(EventKind::Approved, "carol")), "{trail:?}");

    assert_eq!(
        api.decide(a.id, &operator("dave"), "approve", "").await.0,
        StatusCode::CONFLICT
    );
}

pub(super) async fn one_deny_denies(store: Store) {
    let api = serve(store, admin::policy(2)).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 2)).await;
    assert_eq!(
        api.decide(a.id, &operator("alice"), "approve", "").await.0,
        StatusCode::OK
    );
    let (s, body) = api
        .decide(a.id, &operator("carol"), "deny", "not today")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(approval(&body).status, Status::Denied);
    assert_eq!(
        api.decide(a.id, &operator("dave"), "approve", "").await.0,
        StatusCode::CONFLICT
    );
}

pub(super) async fn decisions_on_expired_consumed_or_withdrawn_approvals_conflict(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let now = chrono::Utc::now();

    // Expired: created two hours ago with a one-hour pending TTL (expiry is read-time).
    let old = new_approval("ws-old", "bob", &[], 1);
    let (expired, _) = api
        .store
        .request(&old, api.ttls, now - chrono::Duration::hours(2))
        .await
        .expect("old");
    let (s, body) = api
        .get(&format!("/v1/approvals/{}", expired.id), &operator("alice"))
        .await;
    assert_eq!(
        (s, approval(&body).status),
        (StatusCode::OK, Status::Expired)
    );
    assert_eq!(
        api.decide(expired.id, &operator("alice"), "approve", "")
            .await
            .0,
        StatusCode::CONFLICT
    );

    // Consumed: approved, then the gate consumed it.
    let new = new_approval("ws-2", "bob", &[], 1);
    let a = api.pending(&new).await;
    assert_eq!(
        api.decide(a.id, &operator("alice"), "approve", "").await.0,
        StatusCode::OK
    );
    let outcome = api
        .store
        .consume_or_create(&new, api.ttls, chrono::Utc::now())
        .await
        .expect("consume");
    assert_eq!(outcome, GateOutcome::Consumed(a.id));
    assert_eq!(
        api.decide(a.id, &operator("carol"), "approve", "").await.0,
        StatusCode::CONFLICT
    );

    // Withdrawn.
    let w = api.pending(&new_approval("ws-3", "bob", &[], 1)).await;
    assert_eq!(api.withdraw(w.id, &agent("bob")).await.0, StatusCode::OK);
    assert_eq!(
        api.decide(w.id, &operator("alice"), "approve", "").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api.decide(w.id, &operator("alice"), "deny", "").await.0,
        StatusCode::CONFLICT
    );
}

pub(super) async fn bypass_is_admin_only_and_needs_a_reason(store: Store) {
    let api = serve(store, admin::policy(3)).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 3)).await;
    assert_eq!(
        api.decide(a.id, &operator("alice"), "bypass", "incident 42")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.decide(a.id, &admin::admin("root"), "bypass", "")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.decide(a.id, &admin::admin("root"), "bypass", "   ")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (s, body) = api
        .decide(a.id, &admin::admin("root"), "bypass", "incident 42")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let bypassed = approval(&body);
    assert_eq!(bypassed.status, Status::Approved);
    assert_eq!(
        bypassed.decisions[0].comment.as_deref(),
        Some("incident 42")
    );
    assert_eq!(body["decisions"][0]["decision"], "bypass");
    assert_eq!(
        api.decide(a.id, &admin::admin("root2"), "bypass", "again")
            .await
            .0,
        StatusCode::CONFLICT
    );
}
