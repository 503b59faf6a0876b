//! The admin router served on port 0 with a test policy: HS256 JWT callers (`agent` gated,
//! `operator` approver, `admin` admin, `viewer` neither), token minting, and a small SSE reader.

use std::sync::Arc;
use std::time::Duration;

use approval_gateway::api::{router, AdminState};
use approval_gateway::caller::{CallerClass, Callers, JwtSettings, JwtVerifier, When};
use approval_gateway::config::{GateSettings, Policy};
use approval_gateway::gate::Mode;
use approval_gateway::metrics::Metrics;
use approval_gateway::route::RouteTable;
use approval_gateway::store::{Approval, NewApproval, Store, Ttls};
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const SECRET: &[u8] = b"api-test-secret-0123456789abcdef";
pub const HOUR: Duration = Duration::from_secs(3600);

fn class(name: &str, when: When, gated: bool, approver: bool, admin: bool) -> Arc<CallerClass> {
    Arc::new(CallerClass {
        name: name.into(),
        when,
        gated,
        approver,
        admin,
    })
}

fn role(value: &str) -> When {
    When::Equals {
        claim: "role".into(),
        value: json!(value),
    }
}

/// The test policy; `approvals_required` is the global quorum.
pub fn policy(approvals_required: u32) -> Policy {
    let jwt = JwtVerifier::new(JwtSettings {
        algorithms: vec![Algorithm::HS256],
        hs_secret: Some(SECRET.to_vec()),
        public_key_pem: None,
        jwks_json: None,
        jwks_url: None,
        issuer: None,
        audience: None,
        leeway: Duration::from_secs(30),
    })
    .expect("jwt settings");
    Policy {
        gate: GateSettings {
            mode: Mode::Enforce,
            ttls: Ttls {
                pending: HOUR,
                approved: HOUR,
            },
            max_body_bytes: 1 << 20,
            retry_after: Duration::from_secs(5),
            public_admin_url: "http://127.0.0.1:9090".into(),
            approvals_required,
            max_wait: Duration::from_secs(60),
            unknown_callers: Default::default(),
        },
        routes: RouteTable::new(),
        guards: RouteTable::new(),
        callers: Callers {
            classes: vec![
                class(
                    "agent",
                    When::Present {
                        claim: "org_token_id".into(),
                    },
                    true,
                    false,
                    false,
                ),
                class("admin", role("admin"), false, true, true),
                class("operator", role("operator"), false, true, false),
                class("viewer", role("viewer"), false, false, false),
            ],
            jwt: Some(jwt),
            sources: vec![],
            subject_claim: "sub".into(),
        },
    }
}

pub fn mint(mut claims: Value) -> String {
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 3600);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("token")
}

pub fn operator(sub: &str) -> String {
    mint(json!({ "sub": sub, "role": "operator" }))
}

pub fn admin(sub: &str) -> String {
    mint(json!({ "sub": sub, "role": "admin" }))
}

pub fn viewer(sub: &str) -> String {
    mint(json!({ "sub": sub, "role": "viewer" }))
}

/// A gated agent token whose subject is `sub`.
pub fn agent(sub: &str) -> String {
    mint(json!({ "sub": sub, "org_token_id": "tok-1" }))
}

/// A pending approval as the gate would create it (requester and its `act` chain given).
pub fn new_approval(scope: &str, requester: &str, actors: &[&str], quorum: u32) -> NewApproval {
    let context = json!({ "workspace_id": scope });
    NewApproval {
        request_hash: approval_gateway::gate::hash::request_hash(
            scope,
            "delete_workspace",
            &context,
        ),
        scope: scope.into(),
        action: "delete_workspace".into(),
        reason: format!("delete workspace {scope}"),
        context,
        method: Some("DELETE".into()),
        path: Some(format!("/workspaces/{scope}")),
        requester: requester.into(),
        requester_actors: actors.iter().map(|s| (*s).to_owned()).collect(),
        caller: Some("agent".into()),
        approvals_required: quorum,
    }
}

/// A running admin router.
pub struct Admin {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub ttls: Ttls,
}

pub async fn serve(store: Store, policy: Policy) -> Admin {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Arc::new(Metrics::new());
    let ttls = policy.gate.ttls;
    let state = AdminState {
        store: store.clone(),
        policy: Arc::new(ArcSwap::from_pointee(policy)),
        metrics: metrics.clone(),
        pending: Arc::default(),
        reloader: None,
        mirror: None,
    };
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Admin {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        store,
        metrics,
        ttls,
    }
}

impl Admin {
    /// Send a request; returns the status and the body as JSON (`Null` when empty/not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        if status.is_client_error() || status.is_server_error() {
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            assert_eq!(ct, "application/problem+json", "{status} on {path}");
        }
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            let kind = body["type"].as_str().unwrap_or("");
            assert!(kind.starts_with("urn:approval-gateway:"), "{body}");
            assert_eq!(body["status"], status.as_u16(), "{body}");
            assert!(
                body["title"].is_string() && body["detail"].is_string(),
                "{body}"
            );
        }
        (status, body)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn decide(
        &self,
        id: impl std::fmt::Display,
        token: &str,
        decision: &str,
        comment: &str,
    ) -> (StatusCode, Value) {
        let body = json!({ "decision": decision, "comment": comment });
        self.call(
            Method::POST,
            &format!("/v1/approvals/{id}/decisions"),
            Some(token),
            Some(body),
        )
        .await
    }

    pub async fn withdraw(&self, id: impl std::fmt::Display, token: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/approvals/{id}/withdraw"),
            Some(token),
            None,
        )
        .await
    }

    /// Create a pending approval directly in the store (as the gate does).
    pub async fn pending(&self, new: &NewApproval) -> Approval {
        let (a, created) = self
            .store
            .request(new, self.ttls, chrono::Utc::now())
            .await
            .expect("request");
        assert!(created);
        a
    }

    pub async fn events(&self, token: &str, last_event_id: Option<i64>) -> Sse {
        let mut req = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        Sse::from_response(req.send().await.expect("events"))
    }
}

pub fn approval(v: &Value) -> Approval {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an Approval ({e}): {v}"))
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A minimal SSE reader: yields `(event, id, data)` frames, skipping comment-only frames.
pub struct Sse {
    body: ByteStream,
    buf: String,
}

impl Sse {
    pub fn from_response(resp: reqwest::Response) -> Sse {
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Sse {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    pub async fn next(&mut self) -> (String, i64, Approval) {
        tokio::time::timeout(Duration::from_secs(10), self.next_frame())
            .await
            .expect("an SSE event within 10s")
    }

    async fn next_frame(&mut self) -> (String, i64, Approval) {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (None, None, String::new());
                for line in frame.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = Some(value.to_owned()),
                        "id" => id = Some(value.parse::<i64>().expect("numeric id")),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if let (Some(event), Some(id)) = (event, id) {
                    let a = serde_json::from_str(&data).expect("Approval data");
                    return (event, id, a);
                }
            }
            let chunk = self.body.next().await.expect("stream open").expect("chunk");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}
