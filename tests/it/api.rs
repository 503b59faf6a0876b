//! The approvals API (SPEC §7) end to end: the admin router on port 0 over a real store, every
//! case run on SQLite and on Postgres (a fresh database each; skipped loudly when unreachable).

use std::time::Duration;

use approval_gateway::store::{GateOutcome, Status, Store};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{self, agent, approval, mint, new_approval, operator, serve, viewer};

macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(crate::support::db::sqlite().await).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                if let Some(store) = crate::support::db::postgres().await {
                    super::$case(store).await
                }
            })*
        }
    };
}

on_both_stores!(
    credentials_are_required_and_only_approvers_decide,
    self_approval_is_forbidden_by_subject_and_by_act_chain,
    quorum_of_two_needs_two_distinct_approvers_and_one_vote_each,
    one_deny_denies,
    decisions_on_expired_consumed_or_withdrawn_approvals_conflict,
    bypass_is_admin_only_and_needs_a_reason,
    only_the_requester_withdraws,
    requesting_approval_creates_then_deduplicates,
    list_filters_and_cursor_pagination,
    long_poll_returns_when_decided,
    events_stream_live_and_resume_with_last_event_id,
    health_readiness_and_metrics,
);

async fn credentials_are_required_and_only_approvers_decide(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 1)).await;
    let path = format!("/v1/approvals/{}", a.id);

    let (s, body) = api.call(Method::GET, "/v1/approvals", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"], 401);
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "eve", "role": "admin", "exp": chrono::Utc::now().timestamp() + 60 }),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .expect("token");
    assert_eq!(api.get(&path, &forged).await.0, StatusCode::UNAUTHORIZED);
    let twice = api
        .http
        .get(format!("{}{path}", api.base))
        .header("authorization", format!("Bearer {}", operator("olga")))
        .header("authorization", format!("Bearer {}", operator("olga")))
        .send()
        .await
        .expect("request");
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        api.decide(a.id, &forged, "approve", "").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Verified but not an approver: 403 everywhere an approver is needed.
    assert_eq!(
        api.get("/v1/approvals", &viewer("vic")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get(&path, &viewer("vic")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.decide(a.id, &viewer("vic"), "approve", "").await.0,
        StatusCode::FORBIDDEN
    );
    // A gated caller never decides, even on someone else's request and whatever its claims.
    let gated_admin = mint(json!({ "sub": "zed", "org_token_id": "t", "role": "admin" }));
    assert_eq!(
        api.decide(a.id, &gated_admin, "approve", "").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.decide(a.id, &gated_admin, "bypass", "why").await.0,
        StatusCode::FORBIDDEN
    );
    // ...and reads only its own approvals.
    assert_eq!(api.get(&path, &agent("zed")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.get(&path, &agent("bob")).await.0, StatusCode::OK);

    let (s, got) = api.get(&path, &operator("olga")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(approval(&got).id, a.id);
    assert_eq!(
        api.get("/v1/approvals/not-a-uuid", &operator("olga"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let missing = format!("/v1/approvals/{}", uuid::Uuid::now_v7());
    assert_eq!(
        api.get(&missing, &operator("olga")).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = api
        .call(
            Method::POST,
            &format!("{path}/decisions"),
            Some(&operator("olga")),
            Some(json!({ "decision": "maybe" })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

async fn self_approval_is_forbidden_by_subject_and_by_act_chain(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    // bob asked, through agent-7 acting for him.
    let a = api
        .pending(&new_approval("ws-1", "bob", &["agent-7"], 1))
        .await;
    for (who, token) in [
        ("the requester itself", operator("bob")),
        (
            "the agent that acted for the requester",
            operator("agent-7"),
        ),
        (
            "the requester acting through another's token",
            mint(json!({ "sub": "carol", "role": "operator", "act": { "sub": "bob" } })),
        ),
        (
            "the same agent acting for someone else",
            mint(json!({ "sub": "dave", "role": "operator", "act": { "sub": "agent-7" } })),
        ),
        ("an admin who is the requester", admin::admin("bob")),
    ] {
        let (s, body) = api.decide(a.id, &token, "approve", "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}: {body}");
    }
    assert_eq!(
        api.decide(a.id, &admin::admin("bob"), "bypass", "urgent")
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // A request made through the API by an agent acting for bob carries the chain too.
    let body =
        json!({ "action": "rotate_keys", "scope": "ws-2", "reason": "rotate", "context": {} });
    let token = mint(json!({ "sub": "bob", "org_token_id": "t", "act": { "sub": "agent-9" } }));
    let (s, made) = api
        .call(Method::POST, "/v1/approvals", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let made = approval(&made);
    assert_eq!(
        (made.requester.as_str(), made.requester_actors.clone()),
        ("bob", vec!["agent-9".to_owned()])
    );
    assert_eq!(
        api.decide(made.id, &operator("agent-9"), "approve", "")
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let (s, body) = api
        .decide(a.id, &operator("alice"), "approve", "fine")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(approval(&body).status, Status::Approved);
}

async fn quorum_of_two_needs_two_distinct_approvers_and_one_vote_each(store: Store) {
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

    assert_eq!(
        api.decide(a.id, &operator("dave"), "approve", "").await.0,
        StatusCode::CONFLICT
    );
}

async fn one_deny_denies(store: Store) {
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

async fn decisions_on_expired_consumed_or_withdrawn_approvals_conflict(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let now = chrono::Utc::now();

    // Expired: created two hours ago with a one-hour pending TTL (expiry is read-time).
    let old = new_approval("ws-old", "bob", &[], 1);
    let (expired, _) = api
        .store
        .backend()
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
        .backend()
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

async fn bypass_is_admin_only_and_needs_a_reason(store: Store) {
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

async fn only_the_requester_withdraws(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 1)).await;
    assert_eq!(
        api.withdraw(a.id, &agent("mallory")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.withdraw(a.id, &operator("bob")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.withdraw(a.id, &admin::admin("root")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(
            Method::POST,
            &format!("/v1/approvals/{}/withdraw", a.id),
            None,
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, body) = api.withdraw(a.id, &agent("bob")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(approval(&body).status, Status::Withdrawn);
    assert_eq!(
        api.withdraw(a.id, &agent("bob")).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api.withdraw(uuid::Uuid::now_v7(), &agent("bob")).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn requesting_approval_creates_then_deduplicates(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let body = json!({ "action": "drop_db", "scope": "ws-9", "reason": "cleanup", "context": { "db": "x" } });
    let (s, first) = api
        .call(
            Method::POST,
            "/v1/approvals",
            Some(&agent("bob")),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let first = approval(&first);
    assert_eq!(
        (
            first.status,
            first.requester.as_str(),
            first.caller.as_deref()
        ),
        (Status::Pending, "bob", Some("agent"))
    );
    assert_eq!(
        first.request_hash,
        approval_gateway::gate::hash::request_hash("ws-9", "drop_db", &json!({ "db": "x" }))
    );
    assert_eq!(first.context, json!({ "db": "x" }));

    let (s, again) = api
        .call(
            Method::POST,
            "/v1/approvals",
            Some(&agent("bob")),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(approval(&again).id, first.id);

    let other = json!({ "action": "drop_db", "scope": "ws-9", "reason": "cleanup" });
    let (s, no_context) = api
        .call(
            Method::POST,
            "/v1/approvals",
            Some(&agent("bob")),
            Some(other),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(approval(&no_context).context, json!({}));

    for token in [operator("alice"), admin::admin("root"), viewer("vic")] {
        assert_eq!(
            api.call(
                Method::POST,
                "/v1/approvals",
                Some(&token),
                Some(body.clone())
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
    }
    for bad in [
        json!({ "action": "x" }),
        json!({ "action": "x", "scope": "s", "reason": "r", "context": [1] }),
        json!({ "action": "", "scope": "s", "reason": "r" }),
    ] {
        assert_eq!(
            api.call(
                Method::POST,
                "/v1/approvals",
                Some(&agent("bob")),
                Some(bad)
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );
    }
}

async fn list_filters_and_cursor_pagination(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let mut ids = Vec::new();
    for (i, who) in ["bob", "bob", "bob", "ann", "ann"].iter().enumerate() {
        ids.push(
            api.pending(&new_approval(&format!("ws-{i}"), who, &[], 1))
                .await
                .id,
        );
    }
    assert_eq!(
        api.decide(ids[0], &operator("alice"), "approve", "")
            .await
            .0,
        StatusCode::OK
    );

    let mut seen = Vec::new();
    let mut path = "/v1/approvals?limit=2".to_owned();
    loop {
        let (s, page) = api.get(&path, &operator("alice")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| approval(i).id));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/approvals?limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every approval once, newest first");

    let list = |q: &'static str, token: String| {
        let api = &api;
        async move {
            let (s, page) = api.get(&format!("/v1/approvals?{q}"), &token).await;
            assert_eq!(s, StatusCode::OK, "{q}: {page}");
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(approval)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list("scope=ws-3", operator("alice"))
            .await
            .iter()
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        [ids[3]]
    );
    assert_eq!(list("status=approved", operator("alice")).await.len(), 1);
    assert_eq!(list("status=pending", operator("alice")).await.len(), 4);
    assert_eq!(
        list("action=delete_workspace&status=pending", operator("alice"))
            .await
            .len(),
        4
    );
    assert_eq!(list("action=other", operator("alice")).await.len(), 0);
    // A gated requester lists only its own.
    let own = list("", agent("ann")).await;
    assert!(own.len() == 2 && own.iter().all(|a| a.requester == "ann"));
    assert_eq!(
        api.get("/v1/approvals?status=bogus", &operator("alice"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get("/v1/approvals?limit=0", &operator("alice")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get("/v1/approvals?limit=x", &operator("alice")).await.0,
        StatusCode::BAD_REQUEST
    );
}

async fn long_poll_returns_when_decided(store: Store) {
    let api = std::sync::Arc::new(serve(store, admin::policy(1)).await);
    let a = api.pending(&new_approval("ws-1", "bob", &[], 1)).await;
    let path = format!("/v1/approvals/{}", a.id);
    assert_eq!(
        api.get(&format!("{path}?wait=61"), &agent("bob")).await.0,
        StatusCode::BAD_REQUEST
    );
    let (s, still) = api.get(&format!("{path}?wait=1"), &agent("bob")).await;
    assert_eq!(
        (s, approval(&still).status),
        (StatusCode::OK, Status::Pending)
    );

    let waiter = {
        let api = api.clone();
        let path = path.clone();
        tokio::spawn(async move { api.get(&format!("{path}?wait=60"), &agent("bob")).await })
    };
    let started = std::time::Instant::now();
    assert_eq!(
        api.decide(a.id, &operator("alice"), "approve", "").await.0,
        StatusCode::OK
    );
    let (s, body) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(
        (s, approval(&body).status),
        (StatusCode::OK, Status::Approved)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // A pending approval that expires during the wait is answered at its expiry, not at `wait`.
    let almost = chrono::Utc::now() - chrono::Duration::seconds(3600 - 1);
    let soon = new_approval("ws-soon", "bob", &[], 1);
    let (soon, _) = api
        .store
        .backend()
        .request(&soon, api.ttls, almost)
        .await
        .expect("request");
    let started = std::time::Instant::now();
    let (s, body) = api
        .get(&format!("/v1/approvals/{}?wait=30", soon.id), &agent("bob"))
        .await;
    assert_eq!(
        (s, approval(&body).status),
        (StatusCode::OK, Status::Expired)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Already decided: answers at once.
    assert_eq!(
        approval(&api.get(&format!("{path}?wait=60"), &agent("bob")).await.1).status,
        Status::Approved
    );
}

async fn events_stream_live_and_resume_with_last_event_id(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    assert_eq!(
        api.call(Method::GET, "/v1/events", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call(Method::GET, "/v1/events", Some(&agent("bob")), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let watcher = operator("watcher");
    let mut live = api.events(&watcher, None).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 1)).await;
    let (event, first_id, data) = live.next().await;
    assert_eq!((event.as_str(), data.id), ("approval.requested", a.id));
    drop(live);

    // Missed while disconnected: approved, a new request, its withdrawal, a bypass.
    assert_eq!(
        api.decide(a.id, &operator("alice"), "approve", "").await.0,
        StatusCode::OK
    );
    let b = api.pending(&new_approval("ws-2", "bob", &[], 1)).await;
    assert_eq!(api.withdraw(b.id, &agent("bob")).await.0, StatusCode::OK);
    let c = api.pending(&new_approval("ws-3", "bob", &[], 1)).await;
    assert_eq!(
        api.decide(c.id, &admin::admin("root"), "bypass", "incident")
            .await
            .0,
        StatusCode::OK
    );

    let mut resumed = api.events(&watcher, Some(first_id)).await;
    let mut got = Vec::new();
    let mut last = first_id;
    for _ in 0..5 {
        let (event, id, data) = resumed.next().await;
        assert!(id > last, "ids increase: {id} after {last}");
        last = id;
        got.push((event, data.id));
    }
    let want = [
        ("approval.approved", a.id),
        ("approval.requested", b.id),
        ("approval.withdrawn", b.id),
        ("approval.requested", c.id),
        ("approval.bypassed", c.id),
    ];
    let got: Vec<_> = got.iter().map(|(e, id)| (e.as_str(), *id)).collect();
    assert_eq!(got, want);

    // Then live, with nothing replayed twice in between.
    let d = api.pending(&new_approval("ws-4", "bob", &[], 1)).await;
    let (event, id, data) = resumed.next().await;
    assert_eq!((event.as_str(), data.id), ("approval.requested", d.id));
    assert!(id > last);

    // `?last_event_id=` works like the header (for clients that cannot set headers).
    let url = format!("{}/v1/events?last_event_id={last}", api.base);
    let resp = api
        .http
        .get(url)
        .bearer_auth(&watcher)
        .send()
        .await
        .expect("events");
    let mut by_query = admin::Sse::from_response(resp);
    let (event, _, data) = by_query.next().await;
    assert_eq!((event.as_str(), data.id), ("approval.requested", d.id));
    let bad = api
        .call(
            Method::GET,
            "/v1/events?last_event_id=x",
            Some(&watcher),
            None,
        )
        .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
}

async fn health_readiness_and_metrics(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let plain = |path: &'static str| {
        let api = &api;
        async move {
            let resp = api
                .http
                .get(format!("{}{path}", api.base))
                .send()
                .await
                .expect("get");
            let ct = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            (resp.status(), ct, resp.text().await.expect("text"))
        }
    };
    assert_eq!(plain("/healthz").await.0, StatusCode::OK);
    assert_eq!(plain("/readyz").await.0, StatusCode::OK);
    let a = api.pending(&new_approval("ws-1", "bob", &[], 1)).await;
    assert_eq!(
        api.decide(a.id, &operator("alice"), "deny", "").await.0,
        StatusCode::OK
    );
    let b = api.pending(&new_approval("ws-2", "bob", &[], 1)).await;
    assert_eq!(
        api.decide(b.id, &operator("alice"), "approve", "").await.0,
        StatusCode::OK
    );
    let c = api.pending(&new_approval("ws-3", "bob", &[], 1)).await;
    assert_eq!(api.withdraw(c.id, &agent("bob")).await.0, StatusCode::OK);
    let (s, ct, text) = plain("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct
        .unwrap_or_default()
        .starts_with("application/openmetrics-text"));
    for event in ["denied", "approved", "withdrawn"] {
        let line = format!(
            "approval_gateway_approvals_total{{action=\"delete_workspace\",event=\"{event}\"}} 1"
        );
        assert!(text.contains(&line), "{line} missing in\n{text}");
    }
    let (s, body) = api.call(Method::GET, "/nope", None, None).await;
    assert_eq!(
        (s, body["status"].clone()),
        (StatusCode::NOT_FOUND, Value::from(404))
    );
}

#[tokio::test]
async fn readyz_is_503_until_the_store_is_migrated() {
    // Never migrated (and unreachable): not ready, with a problem body; healthz still 200.
    let store = Store::open("postgres://postgres@127.0.0.1:1/none").expect("url");
    let api = serve(store, admin::policy(1)).await;
    let (s, body) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (s, body["status"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, Value::from(503))
    );
    assert_eq!(
        api.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
}
