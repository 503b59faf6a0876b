//! The workspace-server stand-in (`tests/standin/`, Go on gin): a real gin server with the real
//! route table and auth tiers of the Molecule workspace-server, whose handlers record what they
//! received. [`Standin::start`] builds it once per test process (`tests/standin/build.sh`, needs
//! `go` and the Debian gin / lib/pq packages), runs it on port 0 against a Postgres database and
//! reads back its records. The `insert_*` helpers write the rows its auth middleware reads; the
//! stand-in creates the tables when it starts, so start it first.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Env variables the stand-in reads; cleared before each start so the test's `env` is all it sees.
const STANDIN_ENV: &[&str] = &[
    "DATABASE_URL",
    "ADMIN_TOKEN",
    "MOLECULE_ENV",
    "CANVAS_PROXY_URL",
    "CP_UPSTREAM_URL",
    "MOLECULE_ORG_SLUG",
    "MOLECULE_ORG_ID",
    "CORS_ORIGINS",
    "STANDIN_SESSION_CACHE",
    "STANDIN_NO_DOCKER",
];

/// One gin route param, in order.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: String,
}

/// One request as the stand-in saw it (`GET /__standin/requests`).
#[derive(Debug, Clone, Deserialize)]
pub struct StandinRequest {
    pub seq: usize,
    pub method: String,
    /// `c.Request.RequestURI`: the request target exactly as received.
    pub request_uri: String,
    /// `c.Request.URL.Path` (decoded).
    pub path: String,
    /// `c.Request.URL.RawPath` (empty unless the encoding differs from the default).
    pub raw_path: String,
    pub host: String,
    /// `c.FullPath()`: the route pattern gin dispatched to; "" when unrouted.
    pub full_path: String,
    #[serde(default)]
    pub params: Vec<Param>,
    /// `c.Request.URL.Query()`.
    #[serde(default)]
    pub query: BTreeMap<String, Vec<String>>,
    /// The status the stand-in answered.
    pub status: u16,
    /// The route's handler ran (routing and auth passed).
    pub handled: bool,
    /// The credential class auth accepted: admin-token, org-token, workspace-token, session,
    /// same-origin, canvas-origin, dev, fail-open, tier3; `None` on open routes and rejects.
    pub credential: Option<String>,
    /// The gin context keys auth set: org_token_id, org_token_prefix, org_id.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// `Approval-Id`, `X-Forwarded-Proto`, `X-Forwarded-For` (only when present).
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Every request header (Go canonical names).
    #[serde(default)]
    pub all_headers: BTreeMap<String, Vec<String>>,
    pub body_b64: String,
}

impl StandinRequest {
    pub fn body(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_b64)
            .expect("body_b64 is base64")
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// The first value of a header (canonical name, e.g. `Approval-Id`), from `all_headers`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all_headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// One registered route (`GET /__standin/routes`).
#[derive(Debug, Clone, Deserialize)]
pub struct StandinRoute {
    pub method: String,
    /// gin syntax: `/workspaces/:id/files/*path`.
    pub path: String,
    /// `O` open, `A` AdminAuth, `W` WorkspaceAuth, `C` CanvasOrBearer.
    pub auth: String,
    pub destructive: bool,
    /// Why it is destructive: `★`, `◆`, `★◆` (reference §3) or a `§8:` / `§9:` note.
    pub marks: String,
}

/// A running stand-in; killed on drop.
pub struct Standin {
    addr: SocketAddr,
    db_url: String,
    client: reqwest::Client,
    stderr: Arc<Mutex<String>>,
    _child: Child,
}

/// Builds the stand-in once per test process and returns the binary's path.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("tests/standin/build.sh");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        let out = std::process::Command::new("sh")
            .arg(&script)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap_or_else(|e| panic!("stand-in: cannot run {}: {e}", script.display()));
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() == Some(127) || stderr.contains("go not found") {
                panic!(
                    "stand-in: `go` is missing. Install it with \
                     `apt-get install -y golang-go golang-github-gin-gonic-gin-dev \
                     golang-github-lib-pq-dev`.\n{stderr}"
                );
            }
            panic!(
                "stand-in: {} failed ({}):\n{stderr}",
                script.display(),
                out.status
            );
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let path = PathBuf::from(path.lines().last().unwrap_or_default());
        assert!(
            path.is_file(),
            "stand-in: build.sh printed {path:?}, not a file"
        );
        path
    })
}

impl Standin {
    /// Starts the stand-in on `127.0.0.1:0` with `DATABASE_URL=db_url` and `env` (e.g.
    /// `("ADMIN_TOKEN", "...")`); the variables it reads are otherwise unset.
    pub async fn start(db_url: &str, env: &[(&str, &str)]) -> Standin {
        Self::start_at(db_url, env, "127.0.0.1:0").await
    }

    /// [`start`](Self::start) on a given address (`-listen`), e.g. a port a test reserved for
    /// a server that comes up late.
    pub async fn start_at(db_url: &str, env: &[(&str, &str)], listen: &str) -> Standin {
        let bin = tokio::task::spawn_blocking(binary).await.unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-listen").arg(listen);
        for k in STANDIN_ENV {
            cmd.env_remove(k);
        }
        cmd.env("DATABASE_URL", db_url)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn stand-in");

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    return Some(addr.trim().to_owned());
                }
            }
            None
        })
        .await;
        let addr = match listening {
            Ok(Some(a)) => a.parse().expect("LISTENING address"),
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "stand-in did not print LISTENING; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        Standin {
            addr,
            db_url: db_url.to_owned(),
            client: reqwest::Client::new(),
            stderr,
            _child: child,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn db_url(&self) -> &str {
        &self.db_url
    }

    /// What the stand-in has written on stderr so far (its logs).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A small pool on the stand-in's database, for the `insert_*` helpers and for checks.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.db_url)
            .await
            .expect("connect to the stand-in's database")
    }

    /// Every request recorded since the start or the last [`reset`](Self::reset), in order.
    pub async fn requests(&self) -> Vec<StandinRequest> {
        self.client
            .get(format!("{}/__standin/requests", self.url()))
            .send()
            .await
            .expect("GET /__standin/requests")
            .json()
            .await
            .expect("requests JSON")
    }

    pub async fn reset(&self) {
        let status = self
            .client
            .post(format!("{}/__standin/reset", self.url()))
            .send()
            .await
            .expect("POST /__standin/reset")
            .status();
        assert!(status.is_success(), "reset: {status}");
    }

    /// The registered route table (gin's `engine.Routes()`), with auth tier and destructive flag.
    pub async fn routes(&self) -> Vec<StandinRoute> {
        self.client
            .get(format!("{}/__standin/routes", self.url()))
            .send()
            .await
            .expect("GET /__standin/routes")
            .json()
            .await
            .expect("routes JSON")
    }
}

/// A fresh 43-char base64url token (32 random bytes), like the server's.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The raw 32-byte sha256 the token tables store.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Inserts a workspace (`status` online) and returns its id.
pub async fn insert_workspace(pool: &PgPool, name: &str, parent: Option<Uuid>) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO workspaces (id, name, status, parent_id) VALUES ($1, $2, 'online', $3)",
    )
    .bind(id)
    .bind(name)
    .bind(parent)
    .execute(pool)
    .await
    .expect("insert workspace");
    id
}

/// Inserts an org API token (optionally anchored to `org_id`, optionally already revoked) and
/// returns its plaintext.
pub async fn insert_org_token(pool: &PgPool, org_id: Option<Uuid>, revoked: bool) -> String {
    insert_org_token_with_id(pool, org_id, revoked).await.0
}

/// [`insert_org_token`], also returning the row id.
pub async fn insert_org_token_with_id(
    pool: &PgPool,
    org_id: Option<Uuid>,
    revoked: bool,
) -> (String, Uuid) {
    let token = new_token();
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO org_api_tokens (token_hash, prefix, name, created_by, org_id, revoked_at) \
         VALUES ($1, $2, 'test', 'test', $3, CASE WHEN $4 THEN now() END) RETURNING id",
    )
    .bind(token_hash(&token))
    .bind(&token[..8])
    .bind(org_id)
    .bind(revoked)
    .fetch_one(pool)
    .await
    .expect("insert org token");
    (token, id)
}

/// Inserts a live workspace token for `workspace_id` and returns its plaintext.
pub async fn insert_workspace_token(pool: &PgPool, workspace_id: Uuid) -> String {
    let token = new_token();
    sqlx::query(
        "INSERT INTO workspace_auth_tokens (workspace_id, token_hash, prefix) VALUES ($1, $2, $3)",
    )
    .bind(workspace_id)
    .bind(token_hash(&token))
    .bind(&token[..8])
    .execute(pool)
    .await
    .expect("insert workspace token");
    token
}
