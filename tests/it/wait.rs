//! `Prefer: wait=N` on gated requests: approved → forwarded in the same request, denied → 403,
//! withdrawn → 409, timeout → 202, client hang-up → the approval stays pending and nothing is
//! lost. Waits are observed through `approval_gateway_requests_waiting`, never by sleeping.

use std::time::Duration;

use approval_gateway::store::{
    ApprovalId, DecideOutcome, ListFilter, Status, Ttls, Via, Vote, VoteKind, WithdrawOutcome,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::support::db;
use crate::support::gateway::{agent, start, start_on_this_runtime, Backend, Gateway};

const TTLS: Ttls = Ttls {
    pending: Duration::from_secs(3600),
    approved: Duration::from_secs(3600),
};

/// Send a gated request with `Prefer` (if any) in the background.
pub fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    prefer: Option<&str>,
    body: Option<&str>,
) -> JoinHandle<reqwest::Response> {
    let mut req = gw.client.request(method, gw.url(path)).bearer_auth(agent());
    if let Some(p) = prefer {
        req = req.header("prefer", p);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    tokio::spawn(async move { req.send().await.expect("gateway answers") })
}

/// The one pending approval in `gw`'s store.
pub async fn the_pending(gw: &Gateway) -> ApprovalId {
    let filter = ListFilter {
        status: Some(Status::Pending),
        limit: 10,
        ..ListFilter::default()
    };
    let page = gw.store.list(&filter, chrono::Utc::now()).await.unwrap();
    assert_eq!(page.items.len(), 1, "{:?}", page.items);
    page.items[0].id
}

pub async fn vote(gw: &Gateway, id: ApprovalId, kind: VoteKind) -> DecideOutcome {
    let vote = Vote {
        approver: "alice".into(),
        kind,
        comment: Some("checked".into()),
        via: Via::Cli,
    };
    gw.store
        .decide(id, &vote, TTLS, chrono::Utc::now())
        .await
        .unwrap()
}

async fn approved_requests_are_forwarded_in_the_same_request(backend: Backend) {
    let gw = start("enforce", backend, "").await;
    // A route that does not buffer: the body is still unread while the request waits.
    let held = send(
        &gw,
        reqwest::Method::DELETE,
        "/workspaces/ws-1",
        Some("wait=30"),
        Some("kept body"),
    );
    gw.wait_waiting(1).await;
    let id = the_pending(&gw).await;
    assert!(
        matches!(vote(&gw, id, VoteKind::Approve).await, DecideOutcome::Recorded(a) if a.status == Status::Approved)
    );
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["approval-id"], id.to_string().as_str());
    assert_eq!(resp.headers()["preference-applied"], "wait=30");
    let seen = gw.upstream.wait_for_requests(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), b"kept body");
    assert_eq!(seen[0].headers["approval-id"], id.to_string().as_str());
    gw.wait_waiting(0).await;

    // A route that buffers its body (a template reads it) forwards the buffered bytes.
    let body = r#"{"key":"API_KEY","value":"v"}"#;
    let held = send(
        &gw,
        reqwest::Method::POST,
        "/workspaces/ws-2/secrets",
        Some("wait=30"),
        Some(body),
    );
    gw.wait_waiting(1).await;
    let id = the_pending(&gw).await;
    let _ = vote(&gw, id, VoteKind::Approve).await;
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = gw.upstream.wait_for_requests(2).await;
    assert_eq!(seen[1].body.as_ref(), body.as_bytes());
    gw.stop().await;
}

#[tokio::test]
async fn sqlite_wait_approved_forwards_in_the_same_request() {
    approved_requests_are_forwarded_in_the_same_request(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_wait_approved_forwards_in_the_same_request() {
    if let Some(url) = db::postgres_url().await {
        approved_requests_are_forwarded_in_the_same_request(Backend::Postgres(url)).await;
    }
}

#[tokio::test]
async fn wait_denied_is_403_naming_the_approval_and_withdrawn_is_409() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let held = send(
        &gw,
        reqwest::Method::DELETE,
        "/workspaces/ws-1",
        Some("wait=30"),
        None,
    );
    gw.wait_waiting(1).await;
    let id = the_pending(&gw).await;
    let _ = vote(&gw, id, VoteKind::Deny).await;
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(resp.headers()["preference-applied"], "wait=30");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "urn:approval-gateway:approval-denied");
    assert!(body["detail"].as_str().unwrap().contains(&id.to_string()));

    let held = send(
        &gw,
        reqwest::Method::DELETE,
        "/workspaces/ws-3",
        Some("wait=30"),
        None,
    );
    gw.wait_waiting(1).await;
    let id = the_pending(&gw).await;
    let out = gw
        .store
        .withdraw(id, "agent-1", Via::Api, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(out, WithdrawOutcome::Withdrawn(_)));
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "urn:approval-gateway:approval-not-pending");
    assert!(body["detail"].as_str().unwrap().contains("withdrawn"));
    assert_eq!(gw.upstream.connections(), 0, "nothing was forwarded");
    gw.stop().await;
}

#[tokio::test]
async fn wait_times_out_into_the_normal_202_clamped_to_max_wait() {
    let gw = start("enforce", Backend::Sqlite, "[gate]\nmax_wait = \"1s\"").await;
    let started = std::time::Instant::now();
    let resp = send(
        &gw,
        reqwest::Method::DELETE,
        "/workspaces/ws-1",
        Some("respond-async, wait=600"),
        None,
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["preference-applied"], "wait=1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "pending_approval");
    gw.wait_waiting(0).await;

    // Malformed: ignored, answered at once without Preference-Applied.
    let resp = send(
        &gw,
        reqwest::Method::DELETE,
        "/workspaces/ws-1",
        Some("wait=soon"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers().get("preference-applied").is_none());
    gw.stop().await;
}

async fn disconnect_while_waiting(body: Option<&str>) {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let held = send(
        &gw,
        reqwest::Method::DELETE,
        "/workspaces/ws-1",
        Some("wait=30"),
        body,
    );
    gw.wait_waiting(1).await;
    let id = the_pending(&gw).await;
    // Hang up mid-wait: the gateway drops the handler (the gauge falls back to zero).
    held.abort();
    gw.wait_waiting(0).await;
    let a = gw.store.get(id, chrono::Utc::now()).await.unwrap().unwrap();
    assert_eq!(a.status, Status::Pending);
    let _ = vote(&gw, id, VoteKind::Approve).await;
    let retry = send(&gw, reqwest::Method::DELETE, "/workspaces/ws-1", None, body)
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["approval-id"], id.to_string().as_str());
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    // A second retry asks again: the approval was used once.
    let again = send(&gw, reqwest::Method::DELETE, "/workspaces/ws-1", None, None)
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn wait_client_disconnect_leaves_the_approval_pending_and_loses_nothing() {
    disconnect_while_waiting(None).await;
}

#[tokio::test]
async fn wait_client_disconnect_with_an_unread_body_loses_nothing() {
    disconnect_while_waiting(Some("unread body")).await;
}

/// Captures formatted log output in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The `access` target: one line per request with method, action, outcome, status, upstream
/// latency and the approval id — never the token. (A current-thread test runtime runs the
/// gateway on this thread, so a thread-local subscriber sees its lines.)
#[tokio::test]
async fn access_log_one_line_per_request_without_credentials() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("off,access=info"))
        .with_writer(out.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let gw = start_on_this_runtime("enforce", Backend::Sqlite, "").await;
    let token = agent();
    let plain = gw.client.get(gw.url("/health?x=1")).bearer_auth(&token);
    assert_eq!(plain.send().await.unwrap().status(), StatusCode::OK);
    let held = send(
        &gw,
        reqwest::Method::DELETE,
        "/workspaces/ws-1",
        Some("wait=30"),
        None,
    );
    gw.wait_waiting(1).await;
    let id = the_pending(&gw).await;
    let _ = vote(&gw, id, VoteKind::Approve).await;
    assert_eq!(held.await.unwrap().status(), StatusCode::OK);
    let pending = send(&gw, reqwest::Method::DELETE, "/workspaces/ws-9", None, None);
    assert_eq!(pending.await.unwrap().status(), StatusCode::ACCEPTED);
    gw.stop().await;

    let raw = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(!raw.contains(&token) && !raw.to_ascii_lowercase().contains("bearer"));
    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{raw}");
    let f = |i: usize| lines[i]["fields"].clone();
    assert_eq!(lines[0]["target"], "access");
    assert_eq!(f(0)["method"], "GET");
    assert_eq!(f(0)["path"], "/health");
    assert_eq!(f(0)["action"], "none");
    assert_eq!(f(0)["outcome"], "passthrough");
    assert_eq!(f(0)["status"], 200);
    assert!(f(0)["upstream_ms"].as_f64().is_some());
    assert_eq!(f(1)["method"], "DELETE");
    assert_eq!(f(1)["action"], "delete_workspace");
    assert_eq!(f(1)["outcome"], "forwarded");
    assert_eq!(f(1)["approval_id"], id.to_string().as_str());
    assert!(f(1)["upstream_ms"].as_f64().is_some());
    assert_eq!(f(2)["outcome"], "pending");
    assert_eq!(f(2)["status"], 202);
    assert!(f(2)["approval_id"].is_string());
    assert!(f(2).get("upstream_ms").is_none());
}
