//! The load: gated callers (and their retries), pass-through callers, approvers, and the record
//! of every request the clients sent and what they saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::gateway::{human, token};

/// The header every client request carries, unique per request, to find it at the upstream.
pub const SOAK_ID: &str = "x-soak-id";
pub const WORKSPACES: [&str; 4] = ["ws-0", "ws-1", "ws-2", "ws-3"];
pub const APPROVERS: [&str; 2] = ["alice", "bob"];

/// A small, seedable PRNG (xorshift64*): `SOAK_SEED` replays a run's choices (not its timing).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// Who sent a request, as far as the invariants care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A gated caller on a gated route: must never reach the upstream without an approval.
    Gated,
    /// Anything else: passes through untouched.
    Pass,
}

#[derive(Debug, Clone)]
pub enum Seen {
    Response {
        status: u16,
        approval_id: Option<String>,
        /// The whole body arrived (false: the response was cut short).
        body_ok: bool,
    },
    /// No response head: the request may or may not have reached the gateway.
    Transport(String),
}

/// One request as a client sent it, and what it saw.
#[derive(Debug, Clone)]
pub struct Sent {
    pub soak_id: String,
    pub kind: Kind,
    /// The JWT subject, or `anonymous`.
    pub subject: String,
    pub method: String,
    pub path_and_query: String,
    pub body: Option<String>,
    pub forged_approval_id: bool,
    pub seen: Seen,
    /// The replica's proxy address it went to.
    pub replica: SocketAddr,
    /// When it was sent and answered, in seconds since the run started.
    pub sent_at: f64,
    pub done_at: f64,
}

impl Sent {
    pub fn status(&self) -> Option<u16> {
        match self.seen {
            Seen::Response { status, .. } => Some(status),
            Seen::Transport(_) => None,
        }
    }
}

/// State shared by every task of one soak run.
pub struct Shared {
    /// Live replicas (proxy, admin); `None` while one is restarting.
    pub replicas: RwLock<Vec<Option<(SocketAddr, SocketAddr)>>>,
    pub stop: AtomicBool,
    pub started: Instant,
    pub deadline: Instant,
    pub max_requests: u64,
    pub requests: AtomicU64,
    next_id: AtomicU64,
    pub log: Mutex<Vec<Sent>>,
    /// Approval ids the clients were told about (for forged `Approval-Id` headers).
    pub known_ids: Mutex<Vec<String>>,
    pub decisions: Mutex<DecisionCounts>,
    /// Replicas stopped during the run: (proxy, stop began, stop done), seconds since start.
    pub stops: Mutex<Vec<(SocketAddr, f64, f64)>>,
}

#[derive(Debug, Default, Clone)]
pub struct DecisionCounts {
    pub approved: u64,
    pub denied: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub list_calls: u64,
}

impl Shared {
    pub fn new(
        replicas: Vec<(SocketAddr, SocketAddr)>,
        run: Duration,
        max_requests: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            replicas: RwLock::new(replicas.into_iter().map(Some).collect()),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            deadline: Instant::now() + run,
            max_requests,
            requests: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            known_ids: Mutex::new(Vec::new()),
            decisions: Mutex::new(DecisionCounts::default()),
            stops: Mutex::new(Vec::new()),
        })
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire) || Instant::now() >= self.deadline
    }

    /// A live replica at random; waits while none is (a single replica restarting).
    async fn replica(&self, rng: &mut Rng) -> Option<(SocketAddr, SocketAddr)> {
        loop {
            let live: Vec<_> = self
                .replicas
                .read()
                .unwrap()
                .iter()
                .flatten()
                .copied()
                .collect();
            if !live.is_empty() {
                return Some(*rng.pick(&live));
            }
            if self.stopped() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Counts one request against `max_requests`; false once the budget is spent.
    fn budget(&self) -> bool {
        let n = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.max_requests {
            self.stop.store(true, Ordering::Release);
        }
        n <= self.max_requests
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// What to send.
pub struct Req<'a> {
    pub kind: Kind,
    pub subject: &'a str,
    pub bearer: Option<&'a str>,
    pub method: reqwest::Method,
    pub path_and_query: String,
    pub body: Option<String>,
    pub prefer_wait: Option<u64>,
    pub forged_approval_id: Option<String>,
}

/// Send `req` to `to` (or a random live replica) and log it; the status seen (None: transport
/// error or no request sent at all).
pub async fn send(
    sh: &Shared,
    client: &reqwest::Client,
    rng: &mut Rng,
    req: Req<'_>,
    to: Option<SocketAddr>,
) -> Option<Sent> {
    let addr = match to {
        Some(a) => a,
        None => sh.replica(rng).await?.0,
    };
    if to.is_none() && !sh.budget() {
        return None;
    }
    let soak_id = format!("s{}", sh.next_id.fetch_add(1, Ordering::Relaxed));
    let sent_at = sh.started.elapsed().as_secs_f64();
    let mut r = client
        .request(
            req.method.clone(),
            format!("http://{addr}{}", req.path_and_query),
        )
        .header(SOAK_ID, &soak_id);
    if let Some(b) = req.bearer {
        r = r.bearer_auth(b);
    }
    if let Some(body) = &req.body {
        r = r
            .header("content-type", "application/json")
            .body(body.clone());
    }
    if let Some(w) = req.prefer_wait {
        r = r.header("prefer", format!("wait={w}"));
    }
    if let Some(id) = &req.forged_approval_id {
        r = r.header("approval-id", id);
    }
    let seen = match r.send().await {
        Err(e) => Seen::Transport(format!("{e:?}")),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let approval_id = resp
                .headers()
                .get("approval-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp.bytes().await;
            if status == 202 {
                if let Some(id) = body
                    .as_ref()
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .and_then(|v| v["approval_id"].as_str().map(str::to_owned))
                {
                    let mut known = sh.known_ids.lock().unwrap();
                    if known.len() < 1000 {
                        known.push(id);
                    }
                }
            }
            Seen::Response {
                status,
                approval_id,
                body_ok: body.is_ok(),
            }
        }
    };
    let sent = Sent {
        soak_id,
        kind: req.kind,
        subject: req.subject.to_owned(),
        method: req.method.to_string(),
        path_and_query: req.path_and_query,
        body: req.body,
        forged_approval_id: req.forged_approval_id.is_some(),
        seen,
        replica: addr,
        sent_at,
        done_at: sh.started.elapsed().as_secs_f64(),
    };
    sh.log.lock().unwrap().push(sent.clone());
    Some(sent)
}

pub fn agent_token(subject: &str) -> String {
    token(json!({"sub": subject, "org_token_id": format!("tok-{subject}")}))
}

/// One of the gated operations, as (method, path and query, body). Secret bodies are written in
/// one of two key orders: both bind alike, so a retry in the other order finds its approval.
pub fn gated_op(rng: &mut Rng) -> (reqwest::Method, String, Option<(String, String)>) {
    let ws = rng.pick(&WORKSPACES);
    match rng.below(3) {
        0 => (reqwest::Method::DELETE, format!("/workspaces/{ws}"), None),
        1 => (
            reqwest::Method::DELETE,
            format!("/workspaces/{ws}?purge=true"),
            None,
        ),
        _ => {
            let key = rng.pick(&["API_KEY", "DB_PASSWORD"]);
            let value = rng.pick(&["v1", "v2"]);
            (
                reqwest::Method::PUT,
                format!("/workspaces/{ws}/secrets"),
                Some(((*key).to_owned(), (*value).to_owned())),
            )
        }
    }
}

fn secret_body(rng: &mut Rng, key: &str, value: &str) -> String {
    if rng.chance(50) {
        format!(r#"{{"key":"{key}","value":"{value}"}}"#)
    } else {
        format!(r#"{{ "value": "{value}", "key": "{key}" }}"#)
    }
}

/// A gated caller: picks an operation, sends it, and retries it (sometimes holding with
/// `Prefer: wait`) until it is forwarded, refused, or a few attempts have passed.
pub async fn gated_caller(sh: Arc<Shared>, subject: String, mut rng: Rng) {
    let client = client();
    let bearer = agent_token(&subject);
    while !sh.stopped() {
        let (method, pq, secret) = gated_op(&mut rng);
        for _attempt in 0..12 {
            if sh.stopped() {
                return;
            }
            let body = secret.as_ref().map(|(k, v)| secret_body(&mut rng, k, v));
            let req = Req {
                kind: Kind::Gated,
                subject: &subject,
                bearer: Some(&bearer),
                method: method.clone(),
                path_and_query: pq.clone(),
                body,
                prefer_wait: rng.chance(10).then(|| 1 + rng.below(2)),
                forged_approval_id: None,
            };
            let Some(sent) = send(&sh, &client, &mut rng, req, None).await else {
                return;
            };
            match sent.status() {
                Some(202) => tokio::time::sleep(rng.millis(10, 60)).await,
                // Forwarded (whatever the upstream said), denied while waiting, or withdrawn.
                Some(s) if s < 300 || s == 403 || s == 409 || s == 500 => break,
                // 502/504 after consuming (the approval is spent) or a store 503: a new try.
                _ => tokio::time::sleep(rng.millis(20, 80)).await,
            }
        }
    }
}

/// Callers that are never gated: the agent reading, anonymous reads, approvers writing (an
/// approver class is not gated), sometimes with a forged `Approval-Id` the gateway must strip.
pub async fn pass_caller(sh: Arc<Shared>, mut rng: Rng) {
    let client = client();
    let agent = agent_token("reader-agent");
    let approver = human("carol");
    while !sh.stopped() {
        let ws = *rng.pick(&WORKSPACES);
        let forged = if rng.chance(10) {
            let known = sh.known_ids.lock().unwrap();
            (!known.is_empty()).then(|| rng.pick(&known).clone())
        } else {
            None
        };
        let (subject, bearer, method, pq, body) = match rng.below(5) {
            0 | 1 => (
                "reader-agent",
                Some(agent.as_str()),
                reqwest::Method::GET,
                format!("/workspaces/{ws}"),
                None,
            ),
            2 => (
                "anonymous",
                None,
                reqwest::Method::GET,
                format!("/workspaces?page={}", rng.below(10)),
                None,
            ),
            3 => (
                "carol",
                Some(approver.as_str()),
                reqwest::Method::DELETE,
                format!("/workspaces/{ws}"),
                None,
            ),
            _ => (
                "carol",
                Some(approver.as_str()),
                reqwest::Method::PUT,
                format!("/workspaces/{ws}/secrets"),
                Some(secret_body(&mut rng, "API_KEY", "v9")),
            ),
        };
        let req = Req {
            kind: Kind::Pass,
            subject,
            bearer,
            method,
            path_and_query: pq,
            body,
            prefer_wait: None,
            forged_approval_id: forged,
        };
        if send(&sh, &client, &mut rng, req, None).await.is_none() {
            return;
        }
    }
}

/// An approver on the admin HTTP API of a random replica: lists pending approvals and approves
/// (about 3 in 4) or denies some of them.
pub async fn approver(sh: Arc<Shared>, name: &'static str, mut rng: Rng) {
    let client = client();
    let bearer = human(name);
    while !sh.stopped() {
        let Some((_, admin)) = sh.replica(&mut rng).await else {
            return;
        };
        let list = client
            .get(format!(
                "http://{admin}/v1/approvals?status=pending&limit=100"
            ))
            .bearer_auth(&bearer)
            .send()
            .await;
        sh.decisions.lock().unwrap().list_calls += 1;
        let items = match list {
            Ok(r) if r.status() == 200 => r.json::<Value>().await.unwrap_or(Value::Null)["items"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            _ => {
                sh.decisions.lock().unwrap().errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        for item in items {
            if sh.stopped() {
                return;
            }
            if !rng.chance(70) {
                continue;
            }
            let Some(id) = item["id"].as_str() else {
                continue;
            };
            let decision = if rng.chance(75) { "approve" } else { "deny" };
            let r = client
                .post(format!("http://{admin}/v1/approvals/{id}/decisions"))
                .bearer_auth(&bearer)
                .json(&json!({"decision": decision, "comment": "soak"}))
                .send()
                .await;
            let mut d = sh.decisions.lock().unwrap();
            match r.map(|r| r.status().as_u16()) {
                Ok(200) if decision == "approve" => d.approved += 1,
                Ok(200) => d.denied += 1,
                Ok(409) => d.conflicts += 1,
                _ => d.errors += 1,
            }
        }
        tokio::time::sleep(rng.millis(20, 80)).await;
    }
}
