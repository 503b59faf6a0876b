//! Two gateway replicas (two `App`s, each with its own fake upstream) on one fresh Postgres
//! database: a decision made through one wakes a request waiting on the other (LISTEN/NOTIFY),
//! and one approval is consumed exactly once however retries are spread over the replicas.

use approval_gateway::store::{Status, VoteKind};
use reqwest::StatusCode;

use crate::support::db;
use crate::support::gateway::{agent, concurrent_deletes, start, Backend, Gateway};
use crate::wait::{send, the_pending, vote};

/// Replicas A and B sharing one fresh database; `None` (after SKIPPED) without Postgres.
async fn two_replicas() -> Option<(Gateway, Gateway)> {
    let url = db::postgres_url().await?;
    let a = start("enforce", Backend::Postgres(url.clone()), "").await;
    let b = start("enforce", Backend::Postgres(url), "").await;
    Some((a, b))
}

#[tokio::test]
async fn postgres_replicas_approval_on_a_wakes_the_request_waiting_on_b() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let held = send(
        &b,
        reqwest::Method::DELETE,
        "/workspaces/ws-1",
        Some("wait=30"),
        None,
    );
    b.wait_waiting(1).await;
    let id = the_pending(&a).await;
    let out = vote(&a, id, VoteKind::Approve).await;
    assert!(
        matches!(out, approval_gateway::store::DecideOutcome::Recorded(ref x) if x.status == Status::Approved),
        "{out:?}"
    );
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["approval-id"], id.to_string().as_str());
    assert_eq!(resp.headers()["preference-applied"], "wait=30");
    assert_eq!(b.upstream.wait_for_requests(1).await.len(), 1);
    assert_eq!(a.upstream.wait_for_requests(0).await.len(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn postgres_replicas_fifty_retries_over_both_consume_one_approval_once() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let first = send(&a, reqwest::Method::DELETE, "/workspaces/ws-r", None, None)
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let id = the_pending(&b).await;
    let _ = vote(&b, id, VoteKind::Approve).await;
    let agent = agent();
    // Spread over both replicas: even requests to A, odd to B.
    let urls = (0..50)
        .map(|i| if i % 2 == 0 { &a } else { &b }.url("/workspaces/ws-r"))
        .collect();
    let (ok, pending, statuses) = concurrent_deletes(&a.client, urls, &agent).await;
    assert_eq!((ok, pending), (1, 49), "{statuses:?}");
    let forwarded =
        a.upstream.wait_for_requests(0).await.len() + b.upstream.wait_for_requests(0).await.len();
    assert_eq!(forwarded, 1);
    a.stop().await;
    b.stop().await;
}
