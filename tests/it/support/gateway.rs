//! A whole gateway (`App`) on port 0 in front of a recording fake upstream, with tokens.

use std::net::SocketAddr;
use std::sync::Arc;

use approval_gateway::app::App;
use approval_gateway::config;
use approval_gateway::metrics::Metrics;
use approval_gateway::store::Store;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::upstream::FakeUpstream;

pub const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

/// The Molecule-like policy the gate tests run against. `{upstream}`/`{store}` are filled in.
pub const POLICY: &str = r#"
[[callers]]
name = "platform-agent"
when = { claim = "org_token_id", present = true }
gated = true

[[callers]]
name = "admin"
when = { claim = "role", equals = "admin" }
admin = true

[[callers]]
name = "operator"
when = { claim = "cp_session_actor", present = true }
approver = true

[[routes]]
action = "delete_workspace"
method = "DELETE"
path = "/workspaces/{id}"
scope = "{path.id}"
reason = "delete workspace {path.id}"
context = { workspace_id = "{path.id}" }

[[routes]]
action = "secret_write"
methods = ["POST", "PUT"]
path = "/workspaces/{id}/secrets"
scope = "{path.id}"
reason = "write secret {body.key}"
context = { workspace_id = "{path.id}", key = "{body.key}" }

[[guards]]
method = "POST"
path = "/workspaces/{id}/approvals/{approval_id}/decide"
"#;

pub struct Gateway {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub upstream: FakeUpstream,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Where the store lives.
pub enum Backend {
    Sqlite,
    Postgres(String),
    /// A URL nothing answers at (store down).
    Down,
    /// A store that may not be reachable yet: start without waiting for readiness.
    Unready(String),
}

/// A SQLite file URL in a fresh temp dir (kept for the process's life).
pub fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join(format!("ag-it-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("approvals.db").display())
}

pub fn store_url(backend: &Backend) -> String {
    match backend {
        Backend::Sqlite => sqlite_url(),
        Backend::Postgres(url) | Backend::Unready(url) => url.clone(),
        Backend::Down => "postgres://postgres@127.0.0.1:1/none".to_owned(),
    }
}

/// Start a gateway with `mode` as the flag value, `extra` TOML appended (e.g. `[gate]`).
pub async fn start(mode: &str, backend: Backend, extra: &str) -> Gateway {
    start_with(mode, backend, "", extra, false, &[]).await
}

/// Like [`start`], with more environment variables for the config (e.g. a token source's).
pub async fn start_with_env(
    mode: &str,
    backend: Backend,
    extra: &str,
    env: &[(&str, &str)],
) -> Gateway {
    start_with(mode, backend, "", extra, false, env).await
}

/// Like [`start`], with `listen` lines added to `[listen]` (e.g. short body timeouts).
pub async fn start_listening(mode: &str, backend: Backend, listen: &str, extra: &str) -> Gateway {
    start_with(mode, backend, listen, extra, false, &[]).await
}

/// Like [`start`], with the data plane on the test's own runtime instead of its own shard
/// threads (for tests that capture thread-local tracing output).
pub async fn start_on_this_runtime(mode: &str, backend: Backend, extra: &str) -> Gateway {
    start_with(mode, backend, "", extra, true, &[]).await
}

async fn start_with(
    mode: &str,
    backend: Backend,
    listen: &str,
    extra: &str,
    inline: bool,
    more_env: &[(&str, &str)],
) -> Gateway {
    let upstream = FakeUpstream::start().await;
    let text = format!(
        "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{listen}\n\
         [upstream]\nurl = \"{}\"\nrequest_timeout = \"5s\"\n\
         [store]\nurl = \"{}\"\n\
         [jwt]\nalgorithms = [\"HS256\"]\nhs_secret_env = \"TEST_JWT_SECRET\"\n\
         {extra}\n{POLICY}",
        upstream.url(),
        store_url(&backend),
    );
    let mode = mode.to_owned();
    let more_env: Vec<(String, String)> = more_env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env = move |k: &str| match k {
        "TEST_JWT_SECRET" => Some(SECRET.to_owned()),
        "MOLECULE_PLATFORM_APPROVAL_GATE" => Some(mode.clone()),
        _ => more_env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone()),
    };
    let config = config::parse(&text, &env).unwrap_or_else(|e| panic!("test config: {e}"));
    let mut app = App::build(config).await.expect("gateway builds");
    if inline {
        app = app.proxy_on_this_runtime();
    }
    let (proxy, admin, store) = (app.proxy_addr(), app.admin_addr(), app.store().clone());
    let metrics = Arc::clone(app.metrics());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    let gw = Gateway {
        proxy,
        admin,
        store,
        metrics,
        upstream,
        client: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
    };
    if !matches!(backend, Backend::Down | Backend::Unready(_)) {
        gw.wait_ready().await;
    }
    gw
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics answers")
            .text()
            .await
            .expect("metrics text")
    }

    /// Wait (bounded) until migrations ran.
    pub async fn wait_ready(&self) {
        let mut waited = 0;
        while !self.store.is_ready() {
            assert!(waited < 2000, "store never became ready");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
    }

    /// Wait (bounded) until exactly `n` requests are held open by `Prefer: wait`.
    pub async fn wait_waiting(&self, n: i64) {
        let mut waited = 0;
        while self.metrics.requests_waiting.get() != n {
            assert!(
                waited < 2000,
                "requests waiting stayed at {}, not {n}",
                self.metrics.requests_waiting.get()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("gateway task").expect("gateway ran");
        }
    }
}

/// Approve `id` in `store` as `approver` (the operator CLI's path, no API), asserting that the
/// approval is then `approved`.
pub async fn approve_in(store: &Store, id: &str, approver: &str) {
    use approval_gateway::store::{ApprovalId, DecideOutcome, Status, Ttls, Via, Vote, VoteKind};
    let ttls = Ttls {
        pending: std::time::Duration::from_secs(3600),
        approved: std::time::Duration::from_secs(3600),
    };
    let vote = Vote {
        approver: approver.to_owned(),
        kind: VoteKind::Approve,
        comment: None,
        via: Via::Cli,
    };
    let id = ApprovalId::parse(id).expect("an approval id");
    let out = store
        .decide(id, &vote, ttls, chrono::Utc::now())
        .await
        .expect("decide");
    assert!(
        matches!(out, DecideOutcome::Recorded(ref a) if a.status == Status::Approved),
        "{out:?}"
    );
}

/// An HS256 token with `claims` (an `exp` an hour ahead is added).
pub fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 3600);
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// The gated platform agent.
pub fn agent() -> String {
    token(json!({"sub": "agent-1", "org_token_id": "tok-1"}))
}

/// A human approver.
pub fn human(name: &str) -> String {
    token(json!({"sub": name, "cp_session_actor": format!("session:{name}")}))
}

/// Send one `DELETE` per URL at once with `bearer`; returns (200s, 202s, every status).
pub async fn concurrent_deletes(
    client: &reqwest::Client,
    urls: Vec<String>,
    bearer: &str,
) -> (usize, usize, Vec<reqwest::StatusCode>) {
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let (client, bearer) = (client.clone(), bearer.to_owned());
            tokio::spawn(async move {
                client
                    .delete(url)
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(tasks.len());
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let count = |want: reqwest::StatusCode| statuses.iter().filter(|s| **s == want).count();
    let (ok, pending) = (
        count(reqwest::StatusCode::OK),
        count(reqwest::StatusCode::ACCEPTED),
    );
    (ok, pending, statuses)
}
