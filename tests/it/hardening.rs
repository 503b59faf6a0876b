//! The gateway's own boundaries end to end: which headers only it may set, what reaches the
//! upstream (asserted on what the recording upstream received), and how the admin API refuses.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::gateway::{agent, start, Backend};

/// A 4xx/5xx answer is a problem body of `type` `kind`.
async fn assert_problem(resp: reqwest::Response, status: StatusCode, kind: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], kind, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
}

#[tokio::test]
async fn a_client_sent_approval_id_never_reaches_the_upstream() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    // Without a body (the hand-written client) and with one (hyper's), both pass-through.
    let resp = gw
        .client
        .get(gw.url("/workspaces/ws-1"))
        .header("approval-id", "00000000-0000-0000-0000-000000000001")
        .header("x-kept", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = gw
        .client
        .post(gw.url("/workspaces/ws-1/files"))
        .header("Approval-Id", "00000000-0000-0000-0000-000000000002")
        .header("x-kept", "1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = gw.upstream.wait_for_requests(2).await;
    for r in &seen {
        assert!(!r.headers.contains_key("approval-id"), "{r:?}");
        assert_eq!(r.headers["x-kept"], "1");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_admin_body_is_a_413_problem() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let resp = gw
        .client
        .post(gw.admin_url("/v1/approvals"))
        .bearer_auth(agent())
        .header("content-type", "application/json")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_problem(
        resp,
        StatusCode::PAYLOAD_TOO_LARGE,
        "urn:approval-gateway:body-too-large",
    )
    .await;
    gw.stop().await;
}
