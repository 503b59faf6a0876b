//! The gate end to end: a real gateway (port 0), a recording upstream, a real store.

use std::time::Duration;

use approval_gateway::store::{ApprovalId, ListFilter, Status, Ttls, Via, Vote, VoteKind};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::gateway::{agent, concurrent_deletes, human, start, Backend, Gateway, SECRET};
use crate::support::{db, raw};

const TTLS: Ttls = Ttls {
    pending: Duration::from_secs(3600),
    approved: Duration::from_secs(3600),
};

async fn send(
    gw: &Gateway,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> reqwest::Response {
    let mut req = gw.client.request(method, gw.url(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    req.send().await.expect("gateway answers")
}

async fn delete(gw: &Gateway, path: &str, bearer: &str) -> reqwest::Response {
    send(gw, Method::DELETE, path, Some(bearer), None).await
}

async fn approve(gw: &Gateway, id: &str, approver: &str) {
    crate::support::gateway::approve_in(&gw.store, id, approver).await;
}

async fn deny(gw: &Gateway, id: &str) {
    let id = ApprovalId::parse(id).expect("uuid");
    let vote = Vote {
        approver: "bob".into(),
        kind: VoteKind::Deny,
        comment: Some("no".into()),
        via: Via::Cli,
    };
    let _ = gw
        .store
        .decide(id, &vote, TTLS, chrono::Utc::now())
        .await
        .expect("decide");
}

async fn pending_id(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "pending_approval");
    body["approval_id"].as_str().unwrap().to_owned()
}

async fn postgres() -> Option<Backend> {
    db::postgres_url().await.map(Backend::Postgres)
}

// ---- the full cycle, on both backends ----------------------------------------------------------

async fn full_cycle(backend: Backend) {
    let gw = start("enforce", backend, "").await;
    let agent = agent();
    let first = delete(&gw, "/workspaces/ws-1", &agent).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(first.headers()["retry-after"], "5");
    assert!(first.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = first.json().await.unwrap();
    let id = body["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("http://127.0.0.1:9090/v1/approvals/{id}"));
    assert_eq!(body["action"], "delete_workspace");
    assert_eq!(body["reason"], "delete workspace ws-1");
    assert_eq!(body["scope"], "ws-1");
    assert_eq!(body["approvals_required"], 1);
    assert_eq!(body["approvals_received"], 0);
    assert!(chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).is_ok());

    // A retry reuses the pending approval; nothing reached the upstream.
    assert_eq!(
        pending_id(delete(&gw, "/workspaces/ws-1", &agent).await).await,
        id
    );
    approve(&gw, &id, "alice").await;

    let forwarded = delete(&gw, "/workspaces/ws-1", &agent).await;
    assert_eq!(forwarded.status(), StatusCode::OK);
    assert_eq!(forwarded.headers()["approval-id"], id.as_str());
    let seen = gw.upstream.wait_for_requests(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::DELETE);
    assert_eq!(seen[0].headers["approval-id"], id.as_str());

    // Single use: the next retry is a new pending approval.
    let again = pending_id(delete(&gw, "/workspaces/ws-1", &agent).await).await;
    assert_ne!(again, id);

    // The upstream status is recorded on the consumed approval (off the response path).
    let parsed = ApprovalId::parse(&id).unwrap();
    let mut recorded = None;
    for _ in 0..500 {
        let a = gw
            .store
            .get(parsed, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        if a.upstream_status.is_some() {
            recorded = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a = recorded.expect("upstream status recorded");
    assert_eq!((a.status, a.upstream_status), (Status::Consumed, Some(200)));
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn sqlite_gated_request_is_held_approved_forwarded_once() {
    full_cycle(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_gated_request_is_held_approved_forwarded_once() {
    if let Some(b) = postgres().await {
        full_cycle(b).await;
    }
}

// ---- who and what is gated -----------------------------------------------------------------

#[tokio::test]
async fn ungated_callers_and_other_routes_pass_through() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let r = delete(&gw, "/workspaces/ws-1", &human("alice")).await;
    assert_eq!(r.status(), StatusCode::OK, "an approver class is not gated");
    let r = send(&gw, Method::GET, "/workspaces/ws-1", Some(&agent()), None).await;
    assert_eq!(r.status(), StatusCode::OK, "GET is not a destructive route");
    let r = send(&gw, Method::GET, "/workspaces/ws-1", None, None).await;
    assert_eq!(r.status(), StatusCode::OK, "anonymous off the gated routes");
    assert_eq!(gw.upstream.wait_for_requests(3).await.len(), 3);
    gw.stop().await;
}

/// `[gate] unknown_callers = "refuse"` (the default): on a gated route, a caller nobody
/// recognised is 401 and never forwarded; "pass" lets the upstream judge it.
#[tokio::test]
async fn unknown_callers_are_refused_on_gated_routes_by_default() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    for (bearer, why) in [
        (None, "no credential"),
        (Some("opaque-not-a-jwt"), "not recognised"),
    ] {
        let r = send(&gw, Method::DELETE, "/workspaces/ws-1", bearer, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{bearer:?}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["type"], "urn:approval-gateway:unknown-caller");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(why) || detail.contains("credential"),
            "{detail}"
        );
    }
    let basic = gw
        .client
        .delete(gw.url("/workspaces/ws-1"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED, "another scheme");
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;

    let gw = start(
        "enforce",
        Backend::Sqlite,
        "[gate]\nunknown_callers = \"pass\"\n",
    )
    .await;
    let r = send(&gw, Method::DELETE, "/workspaces/ws-1", None, None).await;
    assert_eq!(r.status(), StatusCode::OK, "pass: the upstream judges it");
    gw.stop().await;

    let gw = start("shadow", Backend::Sqlite, "").await;
    let r = send(&gw, Method::DELETE, "/workspaces/ws-1", None, None).await;
    assert_eq!(r.status(), StatusCode::OK, "shadow: logged, forwarded");
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

/// A gated caller's path must have one reading: what the gate decided on is what the upstream
/// (gin, which does not clean paths) routes. Ambiguous forms are a 400, never forwarded.
#[tokio::test]
async fn normalised_paths_are_gated_too() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    let r = delete(&gw, "/workspaces/%78", &agent).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "an unreserved escape");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "x");
    for path in [
        "//workspaces/x",
        "/workspaces/./x",
        "/workspaces/x/",
        "/workspaces/y/../x",
        "/workspaces/a%2Fb",
        "/workspaces/X%FF",
    ] {
        let auth = raw::bearer(&agent);
        let r = raw::send(gw.proxy, "DELETE", path.as_bytes(), &[&auth], b"").await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.body.contains("urn:approval-gateway:ambiguous-path"),
            "{path}"
        );
    }
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn context_isolation_an_approval_never_authorises_another_request() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    let a = pending_id(delete(&gw, "/workspaces/ws-a", &agent).await).await;
    approve(&gw, &a, "alice").await;
    let b = delete(&gw, "/workspaces/ws-b", &agent).await;
    assert_eq!(
        b.status(),
        StatusCode::ACCEPTED,
        "ws-a's approval does not open ws-b"
    );

    let key_a = r#"{"key":"KEY_A","value":"1"}"#;
    let key_b = r#"{"key":"KEY_B","value":"1"}"#;
    let sa = send(
        &gw,
        Method::PUT,
        "/workspaces/ws-a/secrets",
        Some(&agent),
        Some(key_a),
    )
    .await;
    let sa = pending_id(sa).await;
    approve(&gw, &sa, "alice").await;
    let sb = send(
        &gw,
        Method::PUT,
        "/workspaces/ws-a/secrets",
        Some(&agent),
        Some(key_b),
    )
    .await;
    assert_eq!(
        sb.status(),
        StatusCode::ACCEPTED,
        "KEY_A's approval does not open KEY_B"
    );
    // The request is bound whole (`bind = "request"`): another value is another approval.
    let other_value = r#"{"key":"KEY_A","value":"2"}"#;
    let fa = send(
        &gw,
        Method::PUT,
        "/workspaces/ws-a/secrets",
        Some(&agent),
        Some(other_value),
    )
    .await;
    assert_eq!(fa.status(), StatusCode::ACCEPTED, "the value is bound too");
    // Key order and white space are not: the same JSON consumes the approval.
    let reordered = r#"{ "value": "1", "key": "KEY_A" }"#;
    let fa = send(
        &gw,
        Method::PUT,
        "/workspaces/ws-a/secrets",
        Some(&agent),
        Some(reordered),
    )
    .await;
    assert_eq!(fa.status(), StatusCode::OK);
    let seen = gw.upstream.wait_for_requests(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        &seen[0].body[..],
        reordered.as_bytes(),
        "the buffered body is forwarded intact"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_denial_is_a_vote_on_that_request_and_a_retry_asks_again() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    let first = pending_id(delete(&gw, "/workspaces/ws-1", &agent).await).await;
    deny(&gw, &first).await;
    let r = delete(&gw, "/workspaces/ws-1", &agent).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_ne!(body["approval_id"], first.as_str());
    assert_eq!(
        body["previous"],
        json!({"approval_id": first, "status": "denied"})
    );
    gw.stop().await;
}

// ---- failing closed ------------------------------------------------------------------------

#[tokio::test]
async fn unverifiable_credentials_on_gated_routes_are_401_and_forwarded_elsewhere() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let forged = {
        let claims = json!({"sub": "agent-1", "org_token_id": "t", "exp": chrono::Utc::now().timestamp() + 60});
        let key = jsonwebtoken::EncodingKey::from_secret(b"not-the-secret");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    // alg: none, by hand.
    let none = {
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = json!({"sub": "x", "org_token_id": "t"});
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(claims)
        )
    };
    let expired = {
        let claims = json!({"sub": "a", "org_token_id": "t", "exp": 1});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    for bad in [&forged, &none, &expired] {
        let r = delete(&gw, "/workspaces/ws-1", bad).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // The same credential elsewhere is the upstream's business.
    let r = send(&gw, Method::GET, "/workspaces/ws-1", Some(&forged), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn guards_stop_gated_callers_whatever_the_mode_but_off() {
    for mode in ["enforce", "shadow"] {
        let gw = start(mode, Backend::Sqlite, "").await;
        let path = "/workspaces/ws-1/approvals/ap-1/decide";
        let r = send(&gw, Method::POST, path, Some(&agent()), Some("{}")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{mode}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let r = send(&gw, Method::POST, path, Some(&human("alice")), Some("{}")).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{mode}: a human may decide upstream"
        );
        gw.stop().await;
    }
    let gw = start("off", Backend::Sqlite, "").await;
    let path = "/workspaces/ws-1/approvals/ap-1/decide";
    let r = send(&gw, Method::POST, path, Some(&agent()), Some("{}")).await;
    assert_eq!(r.status(), StatusCode::OK, "off is a transparent proxy");
    gw.stop().await;
}

#[tokio::test]
async fn unreadable_body_fields_are_400_and_oversized_bodies_413() {
    let gw = start(
        "enforce",
        Backend::Sqlite,
        "[gate]\nmax_body_bytes = 1024\n",
    )
    .await;
    let agent = agent();
    let path = "/workspaces/ws-1/secrets";
    for (body, why) in [
        (r#"{"value":"v"}"#, "missing key"),
        ("not json", "not JSON"),
        (
            r#"{"key":"A","KEY":"B","value":"v"}"#,
            "duplicated in another letter case",
        ),
        (r#"{"key":"A","key":"B"}"#, "duplicated exactly"),
        (r#"["key"]"#, "not an object"),
    ] {
        let r = send(&gw, Method::POST, path, Some(&agent), Some(body)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["status"], 400);
        assert!(
            problem["detail"].as_str().unwrap().contains("key"),
            "{why}: {problem}"
        );
    }
    // Go binds `KEY` to `key`: a single upper-case field is the same request as `key`.
    let r = send(
        &gw,
        Method::POST,
        path,
        Some(&agent),
        Some(r#"{"KEY":"A","value":"v"}"#),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "write secret A");
    let big = format!(r#"{{"key":"A","value":"{}"}}"#, "x".repeat(4096));
    let r = send(&gw, Method::POST, path, Some(&agent), Some(&big)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Ungated callers are never buffered or limited.
    let r = send(&gw, Method::POST, path, Some(&human("alice")), Some(&big)).await;
    assert_eq!(r.status(), StatusCode::OK);
    gw.stop().await;
}

#[tokio::test]
async fn store_down_gated_routes_are_503_while_pass_through_keeps_working() {
    let gw = start("enforce", Backend::Down, "").await;
    let r = delete(&gw, "/workspaces/ws-1", &agent()).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = send(&gw, Method::GET, "/workspaces/ws-1", Some(&agent()), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = delete(&gw, "/workspaces/ws-1", &human("alice")).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "ungated callers do not need the store"
    );
    let ready = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let detail = ready.text().await.unwrap();
    assert!(
        detail.contains("unreachable"),
        "says the store is down: {detail}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn flag_off_never_touches_the_store() {
    // The store is unreachable: with the flag off every request is forwarded anyway.
    let gw = start("off", Backend::Down, "").await;
    let r = delete(&gw, "/workspaces/ws-1", &agent()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(
        &gw,
        Method::PUT,
        "/workspaces/ws-1/secrets",
        Some(&agent()),
        Some("not json"),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "route rules are not evaluated when off"
    );
    assert_eq!(gw.upstream.wait_for_requests(2).await.len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn shadow_mode_forwards_and_records_would_gate() {
    let gw = start("shadow", Backend::Sqlite, "").await;
    let r = delete(&gw, "/workspaces/ws-1", &agent()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    let metrics = gw.metrics_text().await;
    assert!(
        metrics.contains(r#"approval_gateway_requests_total{route="delete_workspace",outcome="shadow_would_gate"} 1"#),
        "{metrics}"
    );
    let page = gw
        .store
        .list(&ListFilter::default(), chrono::Utc::now())
        .await
        .unwrap();
    assert!(page.items.is_empty(), "shadow creates no approvals");
    gw.stop().await;
}

#[tokio::test]
async fn a_route_may_stay_below_the_global_mode() {
    let extra = r#"
[[routes]]
action = "restart"
method = "POST"
path = "/workspaces/{id}/restart"
scope = "{path.id}"
mode = "shadow"
"#;
    let gw = start("enforce", Backend::Sqlite, extra).await;
    let r = send(
        &gw,
        Method::POST,
        "/workspaces/ws-1/restart",
        Some(&agent()),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = delete(&gw, "/workspaces/ws-1", &agent()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    gw.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_on_a_gated_route_are_400() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let r = gw
        .client
        .delete(gw.url("/workspaces/ws-1"))
        .header("authorization", format!("Bearer {}", human("alice")))
        .header("authorization", format!("Bearer {}", agent()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    gw.stop().await;
}

// ---- races: single use and dedup under concurrency -----------------------------------------

async fn race_retries_after_one_approval(backend: Backend) {
    let gw = start("enforce", backend, "").await;
    let agent = agent();
    let id = pending_id(delete(&gw, "/workspaces/ws-race", &agent).await).await;
    approve(&gw, &id, "alice").await;
    let urls = vec![gw.url("/workspaces/ws-race"); 50];
    let (ok, pending, statuses) = concurrent_deletes(&gw.client, urls, &agent).await;
    assert_eq!((ok, pending), (1, 49), "{statuses:?}");
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

async fn race_first_calls_create_one_row(backend: Backend) {
    let gw = start("enforce", backend, "").await;
    let agent = agent();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, agent) = (
                gw.client.clone(),
                gw.url("/workspaces/ws-first"),
                agent.clone(),
            );
            tokio::spawn(async move {
                let r = client.delete(url).bearer_auth(agent).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                r.json::<Value>().await.unwrap()["approval_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let filter = ListFilter {
        scope: Some("ws-first".into()),
        ..ListFilter::default()
    };
    let page = gw.store.list(&filter, chrono::Utc::now()).await.unwrap();
    assert_eq!(page.items.len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_race_fifty_retries_consume_one_approval_once() {
    race_retries_after_one_approval(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_race_fifty_retries_consume_one_approval_once() {
    if let Some(b) = postgres().await {
        race_retries_after_one_approval(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_race_fifty_first_calls_create_one_pending_row() {
    race_first_calls_create_one_row(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_race_fifty_first_calls_create_one_pending_row() {
    if let Some(b) = postgres().await {
        race_first_calls_create_one_row(b).await;
    }
}

#[tokio::test]
async fn metrics_exposition_carries_the_contract_names_and_outcomes() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    let id = pending_id(delete(&gw, "/workspaces/ws-m", &agent).await).await;
    approve(&gw, &id, "alice").await;
    assert_eq!(
        delete(&gw, "/workspaces/ws-m", &agent).await.status(),
        StatusCode::OK
    );
    let _ = send(&gw, Method::GET, "/other", None, None).await;
    let _ = send(
        &gw,
        Method::POST,
        "/workspaces/w/approvals/a/decide",
        Some(&agent),
        Some("{}"),
    )
    .await;
    let _ = delete(&gw, "/workspaces/ws-m", "a.b.c").await;
    let _ = send(
        &gw,
        Method::PUT,
        "/workspaces/w/secrets",
        Some(&agent),
        Some("{}"),
    )
    .await;
    // One left pending: the gauge is counted when /metrics is read.
    pending_id(delete(&gw, "/workspaces/ws-p", &agent).await).await;
    let text = gw.metrics_text().await;
    for needle in [
        r#"approval_gateway_requests_total{route="delete_workspace",outcome="pending"} 2"#,
        r#"approval_gateway_requests_total{route="delete_workspace",outcome="forwarded"} 1"#,
        r#"approval_gateway_requests_total{route="none",outcome="passthrough"} 1"#,
        r#"approval_gateway_requests_total{route="none",outcome="guard_denied"} 1"#,
        r#"approval_gateway_requests_total{route="delete_workspace",outcome="unauthorized"} 1"#,
        r#"approval_gateway_requests_total{route="secret_write",outcome="bad_request"} 1"#,
        r#"approval_gateway_approvals_total{action="delete_workspace",event="requested"} 2"#,
        r#"approval_gateway_approvals_pending{action="delete_workspace"} 1"#,
        r#"approval_gateway_approvals_total{action="delete_workspace",event="consumed"} 1"#,
        "approval_gateway_gate_mode 2",
        "approval_gateway_upstream_request_duration_seconds_count",
        "approval_gateway_store_errors_total 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // CI checks this sample with `promtool check metrics`.
    let sample = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-sample.txt");
    std::fs::write(sample, &text).unwrap();
    gw.stop().await;
}

/// A TCP relay to Postgres that refuses (accepts and drops) until `up` is set.
async fn flaky_postgres_relay() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = std::sync::Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            if !flag.load(Ordering::SeqCst) {
                continue; // dropped: the store is "down"
            }
            tokio::spawn(async move {
                if let Ok(mut pg) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut pg).await;
                }
            });
        }
    });
    (addr, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_start_passes_through_then_gates_once_it_comes_back() {
    let Some(url) = db::postgres_url().await else {
        return;
    };
    let (relay, up) = flaky_postgres_relay().await;
    let via_relay = url.replace("127.0.0.1:5432", &relay.to_string());
    assert_ne!(via_relay, url, "test database URL points at 127.0.0.1:5432");
    let gw = start("enforce", Backend::Unready(via_relay), "").await;
    assert!(!gw.store.is_ready());
    let r = send(&gw, Method::GET, "/workspaces/ws-1", Some(&agent()), None).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "pass-through serves while the store is down"
    );
    assert_eq!(
        delete(&gw, "/workspaces/ws-1", &agent()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let ready = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    up.store(true, std::sync::atomic::Ordering::SeqCst);
    gw.wait_ready().await;
    assert_eq!(
        delete(&gw, "/workspaces/ws-1", &agent()).await.status(),
        StatusCode::ACCEPTED
    );
    let ready = gw.client.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    gw.stop().await;
}
