//! The gateway's own boundaries end to end: which headers only it may set, what reaches the
//! upstream (asserted on what the recording upstream received), and how the admin API refuses.

use std::time::Duration;

use approval_gateway::store::{Approval, ApprovalId, DecideOutcome, Ttls, Via, Vote, VoteKind};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::gateway::{
    agent, human, start, start_listening, start_on_this_runtime, Backend, Gateway,
};
use crate::support::upstream::Reply;

/// A gated GET with a side effect (Molecule's token minting is one).
const MINT: &str = r#"
[[routes]]
action = "mint_token"
method = "GET"
path = "/workspaces/{id}/tokens"
scope = "{path.id}"
reason = "mint a token for {path.id}"
context = { workspace_id = "{path.id}" }
"#;

/// Ask with `req` (a 202), approve as `alice`; returns the approval id.
async fn approved(gw: &Gateway, req: reqwest::RequestBuilder) -> ApprovalId {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: Value = resp.json().await.unwrap();
    let id = ApprovalId::parse(body["approval_id"].as_str().unwrap()).unwrap();
    let vote = Vote {
        approver: "alice".into(),
        kind: VoteKind::Approve,
        comment: None,
        via: Via::Cli,
    };
    let hour = Duration::from_secs(3600);
    let ttls = Ttls {
        pending: hour,
        approved: hour,
    };
    let out = gw.store.decide(id, &vote, ttls, chrono::Utc::now());
    assert!(matches!(out.await.unwrap(), DecideOutcome::Recorded(_)));
    id
}

/// The approval once the upstream's answer (or error) is recorded on it (off the response path).
async fn with_upstream_result(gw: &Gateway, id: ApprovalId) -> Approval {
    for _ in 0..500 {
        let a = gw.store.get(id, chrono::Utc::now()).await.unwrap();
        let a = a.expect("the approval exists");
        if a.upstream_status.is_some() || a.upstream_error.is_some() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no upstream result was recorded on {id}");
}

// ---- one approval, one execution ---------------------------------------------------------------

#[tokio::test]
async fn a_consumed_get_is_sent_once_even_when_its_connection_drops() {
    // On this runtime: one upstream pool, so the warm-up's connection is the one reused.
    let gw = start_on_this_runtime("enforce", Backend::Sqlite, MINT).await;
    let agent = agent();
    // A pass-through GET leaves a kept-alive upstream connection in the pool.
    let warm = gw.client.get(gw.url("/workspaces/ws-1")).send().await;
    assert_eq!(warm.unwrap().status(), StatusCode::OK);
    let tokens = gw.url("/workspaces/ws-1/tokens");
    let id = approved(&gw, gw.client.get(&tokens).bearer_auth(&agent)).await;

    // The upstream takes the request and dies before answering: GET is "safe", but this one
    // consumed an approval, so it must not be sent again on another connection.
    gw.upstream.set_reply(Reply::Drop);
    let resp = gw
        .client
        .get(&tokens)
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["approval-id"], id.to_string().as_str());
    // The warm-up and the consumed GET, once. (A resend happens before the 502 is answered.)
    assert_eq!(gw.upstream.received(), 2);
    let seen = gw.upstream.wait_for_requests(2).await;
    assert_eq!(seen[1].path_and_query, "/workspaces/ws-1/tokens");
    assert_eq!(seen[1].headers["approval-id"], id.to_string().as_str());

    let a = with_upstream_result(&gw, id).await;
    let error = a.upstream_error.expect("an upstream error");
    assert!(error.contains("may have been executed"), "{error}");
    assert_eq!(a.upstream_status, None);
    gw.stop().await;
}

#[tokio::test]
async fn a_consumed_request_with_a_body_is_sent_once_and_its_unknown_fate_recorded() {
    let gw = start_on_this_runtime("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    let secrets = gw.url("/workspaces/ws-1/secrets");
    let ask = || {
        gw.client
            .post(&secrets)
            .bearer_auth(&agent)
            .header("content-type", "application/json")
            .body(r#"{"key":"K","value":"v"}"#)
    };
    let id = approved(&gw, ask()).await;
    gw.upstream.set_reply(Reply::Drop);
    let resp = ask().send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(gw.upstream.received(), 1);
    let error = with_upstream_result(&gw, id).await.upstream_error;
    let error = error.expect("an upstream error");
    assert!(error.contains("may have been executed"), "{error}");
    gw.stop().await;
}

// ---- headers and bodies ------------------------------------------------------------------------

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

// ---- approvals an agent asks for ---------------------------------------------------------------

#[tokio::test]
async fn an_agent_cannot_ask_through_the_api_for_a_proxied_action_and_its_own_text_is_marked() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let ask = |action: &str| {
        let body = serde_json::json!({
            "action": action, "scope": "ws-1", "reason": "trust me",
            "context": { "workspace_id": "ws-1" }
        });
        gw.client
            .post(gw.admin_url("/v1/approvals"))
            .bearer_auth(agent())
            .json(&body)
            .send()
    };
    // `delete_workspace` is a route's action: only the gate may ask for it, from the request.
    let refused = ask("delete_workspace").await.unwrap();
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "urn:approval-gateway:action-is-proxied",
    )
    .await;

    let created = ask("drop_database").await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["origin"], "agent", "{created}");

    let pending = gw
        .client
        .delete(gw.url("/workspaces/ws-1"))
        .bearer_auth(agent())
        .send()
        .await
        .unwrap();
    assert_eq!(pending.status(), StatusCode::ACCEPTED);
    let pending: Value = pending.json().await.unwrap();
    let id = pending["approval_id"].as_str().unwrap();
    let shown = gw
        .client
        .get(gw.admin_url(&format!("/v1/approvals/{id}")))
        .bearer_auth(human("carol"))
        .send()
        .await
        .unwrap();
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(shown["origin"], "proxy", "{shown}");
    assert_eq!(gw.upstream.received(), 0);
    gw.stop().await;
}

// ---- one gateway per address -------------------------------------------------------------------

/// Build (not run) a gateway whose proxy listens on `addr`; the error text when it cannot.
async fn build_on(addr: std::net::SocketAddr) -> Result<(), String> {
    let text = format!(
        "[listen]\nproxy = \"{addr}\"\nadmin = \"127.0.0.1:0\"\n[store]\nurl = \"{}\"\n",
        crate::support::gateway::sqlite_url()
    );
    let config = approval_gateway::config::parse(&text, &|_| None).unwrap();
    approval_gateway::app::App::build(config)
        .await
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn a_gateway_does_not_start_on_an_address_already_in_use() {
    // A second gateway: SO_REUSEPORT alone would let it share the port with the first.
    let gw = start("off", Backend::Sqlite, "").await;
    let error = build_on(gw.proxy).await.expect_err("the address is taken");
    assert!(error.contains(&gw.proxy.to_string()), "{error}");
    assert!(error.contains("already in use"), "{error}");
    // Any other program listening there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let error = build_on(addr).await.expect_err("the address is taken");
    assert!(error.contains(&addr.to_string()), "{error}");
    // A free address still works, port 0 included.
    build_on("127.0.0.1:0".parse().unwrap()).await.unwrap();
    gw.stop().await;
}

// ---- slow request bodies -----------------------------------------------------------------------

/// Send `head` and the first bytes of its body on a raw connection, then nothing more. Returns
/// the gateway's answer head (waited for up to 10 s, so a missing timeout fails, not hangs).
async fn stalled_upload(gw: &Gateway, head: &str, first: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    let read = async move {
        let (mut got, mut chunk) = (Vec::new(), [0u8; 1024]);
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed without an answer");
            got.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s")
}

#[tokio::test]
async fn a_gated_body_that_trickles_is_a_408_and_never_forwarded() {
    let listen = "body_read_timeout = \"300ms\"";
    let gw = start_listening("enforce", Backend::Sqlite, listen, "").await;
    let head = format!(
        "POST /workspaces/ws-1/secrets HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n",
        agent()
    );
    let answer = stalled_upload(&gw, &head, b"{").await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert_eq!(gw.upstream.received(), 0);
    assert_eq!(gw.upstream.connections(), 0);
    let metrics = gw.metrics_text().await;
    let line = r#"approval_gateway_requests_total{route="secret_write",outcome="bad_request"} 1"#;
    assert!(metrics.contains(line), "{metrics}");
    gw.stop().await;
}

#[tokio::test]
async fn a_relayed_body_that_stalls_aborts_the_upstream_request() {
    let listen = "body_idle_timeout = \"300ms\"";
    let gw = start_listening("enforce", Backend::Sqlite, listen, "").await;
    let head = "POST /uploads HTTP/1.1\r\nHost: gw\r\nContent-Length: 40\r\n\r\n";
    let answer = stalled_upload(&gw, head, b"x").await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    // The upstream got the head and the first byte, then the request was cut off.
    let seen = gw.upstream.wait_for_requests(1).await;
    assert_eq!(seen[0].path_and_query, "/uploads");
    assert!(seen[0].body_aborted, "{:?}", seen[0]);
    gw.stop().await;
}
