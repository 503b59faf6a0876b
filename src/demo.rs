//! `approval-gateway demo`: the product working on a fresh machine with nothing else running.
//!
//! A built-in echo upstream (used nowhere else) behind the gateway with the gate on, a throwaway
//! SQLite store and a random JWT secret; prints a gated token, an approver token and the curl
//! lines for 202 → approve → forwarded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config;

const SECRET_ENV: &str = "GATEWAY_JWT_SECRET";

pub(crate) async fn run() -> anyhow::Result<ExitCode> {
    let upstream = start_echo_upstream().await?;
    let dir = std::env::temp_dir().join(format!("approval-gateway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let (proxy, admin) = (port_or_any(8080), port_or_any(9090));
    let db = dir.join("approvals.db").display().to_string();
    let toml = demo_config(upstream, proxy, admin, &db);
    let env = |key: &str| match key {
        SECRET_ENV => Some(secret.clone()),
        "MOLECULE_PLATFORM_APPROVAL_GATE" => Some("enforce".to_owned()),
        _ => None,
    };
    let config = config::parse(&toml, &env).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let app = App::build(config).await?;
    let agent = mint(
        &secret,
        json!({"sub": "platform-agent", "org_token_id": "demo-org-token"}),
    )?;
    let human = mint(
        &secret,
        json!({"sub": "alice", "cp_session_actor": "session:alice"}),
    )?;
    // The operator CLI works on the demo's store through a config file naming it.
    let cli_config = dir.join("demo-store.toml");
    std::fs::write(&cli_config, format!("[store]\nurl = \"sqlite://{db}\"\n"))
        .with_context(|| format!("writing {}", cli_config.display()))?;
    print_walkthrough(
        app.proxy_addr(),
        app.admin_addr(),
        &agent,
        &human,
        &cli_config,
    );
    let ran = app.run(crate::commands::shutdown_signal()).await;
    // A throwaway store: gone with the demo, on Ctrl-C too.
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the demo's directory");
    }
    ran?;
    Ok(ExitCode::SUCCESS)
}

/// `preferred` on 127.0.0.1 when it is free, else any free port (so the 202's `Location`
/// names the admin port really in use).
fn port_or_any(preferred: u16) -> u16 {
    let free = |p: u16| {
        std::net::TcpListener::bind(("127.0.0.1", p))
            .ok()?
            .local_addr()
            .ok()
    };
    free(preferred)
        .or_else(|| free(0))
        .map_or(preferred, |a| a.port())
}

fn demo_config(upstream: SocketAddr, proxy: u16, admin: u16, db: &str) -> String {
    format!(
        r#"
[listen]
proxy = "127.0.0.1:{proxy}"
admin = "127.0.0.1:{admin}"
[upstream]
url = "http://{upstream}"
[store]
url = "sqlite://{db}"
[gate]
public_admin_url = "http://127.0.0.1:{admin}"
[jwt]
algorithms = ["HS256"]
hs_secret_env = "{SECRET_ENV}"
[[callers]]
name = "platform-agent"
when = {{ claim = "org_token_id", present = true }}
gated = true
[[callers]]
name = "operator"
when = {{ claim = "cp_session_actor", present = true }}
approver = true
[[routes]]
action = "delete_workspace"
method = "DELETE"
path = "/workspaces/{{id}}"
scope = "{{path.id}}"
reason = "delete workspace {{path.id}}"
context = {{ workspace_id = "{{path.id}}" }}
[[routes]]
action = "secret_write"
methods = ["POST", "PUT"]
path = "/workspaces/{{id}}/secrets"
scope = "{{path.id}}"
reason = "write secret {{body.key}}"
context = {{ workspace_id = "{{path.id}}", key = "{{body.key}}" }}
[[guards]]
method = "POST"
path = "/workspaces/{{id}}/approvals/{{approval_id}}/decide"
"#
    )
}

fn mint(secret: &str, mut claims: serde_json::Value) -> anyhow::Result<String> {
    let exp = chrono::Utc::now().timestamp() + 24 * 3600;
    claims["exp"] = json!(exp);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

fn print_walkthrough(
    proxy: SocketAddr,
    admin: SocketAddr,
    agent: &str,
    human: &str,
    cli_config: &std::path::Path,
) {
    let cli_config = cli_config.display();
    println!(
        r#"
approval-gateway demo — gate ON, echo upstream, throwaway SQLite store. Ctrl-C to stop.

  proxy  http://{proxy}      admin / inbox  http://{admin}/

  AGENT={agent}
  HUMAN={human}

1. The agent asks to delete a workspace — the gateway answers 202 and does not call upstream:
     curl -i -X DELETE http://{proxy}/workspaces/ws-1 -H "Authorization: Bearer $AGENT"
2. A human approves it (API, or the inbox at http://{admin}/ with the HUMAN token):
     curl -s http://{admin}/v1/approvals?status=pending -H "Authorization: Bearer $HUMAN"
     curl -i -X POST http://{admin}/v1/approvals/<approval_id>/decisions \
          -H "Authorization: Bearer $HUMAN" -H 'Content-Type: application/json' \
          -d '{{"decision":"approve","comment":"ok"}}'
3. The agent retries — forwarded once, with an Approval-Id header:
     curl -i -X DELETE http://{proxy}/workspaces/ws-1 -H "Authorization: Bearer $AGENT"
4. Retry again — a new 202: each approval authorises exactly one call.
   Anything else passes straight through:
     curl -i http://{proxy}/workspaces/ws-1
5. The operator CLI on this demo's store (removed when the demo stops):
     approval-gateway approvals list --config {cli_config}
     approval-gateway approvals approve <approval_id> --as alice --config {cli_config}
"#
    );
}

/// The demo's upstream: echoes the request it got as JSON. Never used outside `demo`.
async fn start_echo_upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(echo);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let approval = parts
        .headers
        .get("approval-id")
        .and_then(|v| v.to_str().ok());
    let echoed = json!({
        "echo": true,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()),
        "approval_id": approval,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(echoed.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
