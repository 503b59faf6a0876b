//! Reads: list filters and cursor, long-poll, the SSE stream with resume, health and metrics.

use std::time::Duration;

use approval_gateway::store::{Status, Store};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::admin::{self, agent, approval, new_approval, operator, serve};

pub(super) async fn list_filters_and_cursor_pagination(store: Store) {
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
    assert_eq!(
        api.get("/v1/approvals?cursor=garbage", &operator("alice"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

pub(super) async fn long_poll_returns_when_decided(store: Store) {
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

pub(super) async fn events_stream_live_and_resume_with_last_event_id(store: Store) {
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

pub(super) async fn health_readiness_and_metrics(store: Store) {
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
        .starts_with("text/plain; version=0.0.4"));
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
