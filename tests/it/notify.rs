//! Notifications (README, Notifications): a receiver on port 0 sees signed webhook deliveries for a gated
//! request's whole life, a retry after a 500, a Slack body's shape; a dead target neither slows
//! the gated request nor goes uncounted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::gateway::{agent, human, start_with_env, Backend, Gateway};

const HOOK_SECRET: &str = "hook-secret-for-tests";

/// One delivery as received, with the status the receiver answered.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

/// A webhook receiver: answers the scripted statuses in order, then 200.
struct Receiver {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.to_vec()));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, script) = (tx.clone(), Arc::clone(&script));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (tx, script) = (tx.clone(), Arc::clone(&script));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let answered = {
                                let mut s = script.lock().unwrap();
                                if s.is_empty() {
                                    200
                                } else {
                                    s.remove(0)
                                }
                            };
                            let _ = tx.send(Received {
                                headers: parts.headers,
                                body,
                                answered,
                            });
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(answered)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, rx }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next delivery (bounded wait).
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .expect("a delivery within 30 s")
            .expect("receiver running")
    }
}

fn json_of(r: &Received) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

async fn gated_delete(gw: &Gateway, ws: &str) -> (StatusCode, Value) {
    let resp = gw
        .client
        .delete(gw.url(&format!("/workspaces/{ws}")))
        .bearer_auth(agent())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn webhook_is_signed_retried_and_follows_a_gated_request() {
    webhook_follows_a_gated_request(Backend::Sqlite).await;
}

/// The same on Postgres, where the live feed is `LISTEN/NOTIFY`.
#[tokio::test]
async fn webhook_follows_a_gated_request_postgres() {
    let Some(url) = crate::support::db::postgres_url().await else {
        return;
    };
    webhook_follows_a_gated_request(Backend::Postgres(url)).await;
}

async fn webhook_follows_a_gated_request(backend: Backend) {
    let mut hook = Receiver::start(&[500]).await;
    let extra = format!(
        "[[notify]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\n",
        hook.url()
    );
    let gw = start_with_env("enforce", backend, &extra, &[("HOOK_SECRET", HOOK_SECRET)]).await;

    let (status, body) = gated_delete(&gw, "ws-n1").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["approval_id"].as_str().unwrap().to_owned();

    // The first try is answered 500, the same delivery comes again.
    let first = hook.next().await;
    assert_eq!(first.answered, 500);
    let again = hook.next().await;
    assert_eq!(again.answered, 200);
    assert_eq!(again.body, first.body, "a retry sends the same body");
    assert_eq!(
        again.headers["x-approval-gateway-delivery"],
        first.headers["x-approval-gateway-delivery"]
    );

    let (status, _) = decide(&gw, &id, &human("alice")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gated_delete(&gw, "ws-n1").await;
    assert_eq!(status, StatusCode::OK, "the approved retry is forwarded");

    let mut seen = vec![again];
    while seen.len() < 3 {
        seen.push(hook.next().await);
    }
    let mut events = Vec::new();
    for r in &seen {
        assert_eq!(r.headers["content-type"], "application/json");
        let want = approval_gateway::notify::signature(HOOK_SECRET.as_bytes(), &r.body);
        assert_eq!(
            r.headers["x-approval-gateway-signature"].to_str().unwrap(),
            want
        );
        assert!(want.starts_with("sha256=") && want.len() == 7 + 64);
        let v = json_of(r);
        assert_eq!(v["approval"]["id"], id.as_str());
        assert_eq!(v["approval"]["action"], "delete_workspace");
        assert_eq!(v["approval"]["scope"], "ws-n1");
        events.push(v["event"].as_str().unwrap().to_owned());
    }
    events.sort();
    assert_eq!(
        events,
        [
            "approval.approved",
            "approval.consumed",
            "approval.requested"
        ]
    );
    gw.stop().await;
}

async fn decide(gw: &Gateway, id: &str, token: &str) -> (StatusCode, Value) {
    let resp = gw
        .client
        .post(gw.admin_url(&format!("/v1/approvals/{id}/decisions")))
        .bearer_auth(token)
        .json(&json!({"decision": "approve", "comment": "ok"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn slack_target_gets_a_text_naming_the_request() {
    let mut hook = Receiver::start(&[]).await;
    let extra = format!(
        "[[notify]]\nkind = \"slack\"\nurl = \"{}\"\nevents = [\"requested\"]\n",
        hook.url()
    );
    let gw = start_with_env("enforce", Backend::Sqlite, &extra, &[]).await;
    let (status, body) = gated_delete(&gw, "ws-slack").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["approval_id"].as_str().unwrap();

    let r = hook.next().await;
    assert!(r.headers.get("x-approval-gateway-signature").is_none());
    let v = json_of(&r);
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["text"], "{v}");
    let text = v["text"].as_str().unwrap();
    for needle in [
        "Approval requested",
        "delete_workspace",
        "ws-slack",
        "agent-1",
        " ago",
        &format!("http://127.0.0.1:9090/#/approvals/{id}"),
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_dead_target_neither_slows_the_request_nor_goes_uncounted() {
    // Refused: nothing listens on this port.
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    // A black hole: accepts, never answers.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            conns.push(s);
        }
    });
    let extra = format!(
        "[[notify]]\nname = \"refused\"\nkind = \"webhook\"\nurl = \"http://{refused}/hook\"\n\
         [[notify]]\nname = \"hole\"\nkind = \"slack\"\nurl = \"http://{hole_addr}/hook\"\n"
    );
    let gw = start_with_env("enforce", Backend::Sqlite, &extra, &[]).await;
    for i in 0..5 {
        let started = Instant::now();
        let (status, _) = gated_delete(&gw, &format!("ws-dead-{i}")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the 202 took {:?}",
            started.elapsed()
        );
    }
    // Counted: every failed try of the refused target.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = gw.metrics_text().await;
        let count = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("approval_gateway_notify_failures_total{target=\"refused\"} ")
            })
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
        if count >= 5 {
            assert!(text.contains("approval_gateway_notify_failures_total{target=\"hole\"}"));
            break;
        }
        assert!(Instant::now() < deadline, "failures never counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
    held.abort();
}
