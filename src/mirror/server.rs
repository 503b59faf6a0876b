//! The workspace-server's approvals API, as the mirror calls it (reference §4.2): create
//! (`POST /workspaces/{ws}/approvals` → 201 `{approval_id}`), decide (`POST
//! /workspaces/{ws}/approvals/{id}/decide` → 200, or 404 when not pending), and the pending list
//! (`GET /approvals/pending`, ≤ 50 rows, auto-denies rows older than 10 minutes first).
//! Every call carries `Authorization: Bearer <token_env's value>` and is bounded by
//! [`CALL_TIMEOUT`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

use crate::config::MirrorSettings;
use crate::store::Approval;

/// One call's bound, connection included.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The server answers at most this many rows on `GET /approvals/pending`.
pub(super) const PENDING_LIST_MAX: usize = 50;
/// Largest answer read from the server.
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(super) enum ServerError {
    #[error("{0}")]
    Transport(String),
    #[error("timed out after {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("answered {0}: {1}")]
    Status(u16, String),
    #[error("unexpected answer: {0}")]
    Answer(String),
}

pub(super) struct Server {
    base: String,
    auth: http::HeaderValue,
    client: crate::notify::HttpsClient,
}

impl Server {
    pub(crate) fn new(s: &MirrorSettings) -> anyhow::Result<Self> {
        let mut auth = http::HeaderValue::try_from(format!("Bearer {}", s.token))
            .map_err(|_| anyhow::anyhow!("{} does not fit in a header", s.token_env))?;
        auth.set_sensitive(true);
        Ok(Self {
            base: s.server_url.clone(),
            auth,
            client: crate::notify::client()?,
        })
    }

    /// Create a row on workspace `ws`; its id.
    pub(crate) async fn create(&self, ws: &str, body: &Value) -> Result<String, ServerError> {
        let (status, answer) = self
            .call(
                http::Method::POST,
                &format!("/workspaces/{ws}/approvals"),
                Some(body),
            )
            .await?;
        if status != 201 && status != 200 {
            return Err(ServerError::Status(status, snippet(&answer)));
        }
        let v: Value =
            serde_json::from_slice(&answer).map_err(|_| ServerError::Answer(snippet(&answer)))?;
        v.get("approval_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ServerError::Answer(snippet(&answer)))
    }

    /// Decide row `id` of workspace `ws`. `Ok(false)` when the server has no pending row by
    /// that id (already decided, auto-denied, or deleted).
    pub(crate) async fn decide(
        &self,
        ws: &str,
        id: &str,
        decision: &str,
        decided_by: &str,
    ) -> Result<bool, ServerError> {
        let body = json!({"decision": decision, "decided_by": decided_by});
        let (status, answer) = self
            .call(
                http::Method::POST,
                &format!("/workspaces/{ws}/approvals/{id}/decide"),
                Some(&body),
            )
            .await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(ServerError::Status(s, snippet(&answer))),
        }
    }

    /// The ids of the server's pending rows (after its auto-deny of old ones).
    pub(crate) async fn pending(&self) -> Result<Vec<String>, ServerError> {
        let (status, answer) = self
            .call(http::Method::GET, "/approvals/pending", None)
            .await?;
        if status != 200 {
            return Err(ServerError::Status(status, snippet(&answer)));
        }
        let rows: Vec<Value> =
            serde_json::from_slice(&answer).map_err(|_| ServerError::Answer(snippet(&answer)))?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), ServerError> {
        let uri = format!("{}{path}", self.base);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::AUTHORIZATION, self.auth.clone())
            .header(http::header::USER_AGENT, "approval-gateway-mirror");
        let bytes = match body {
            Some(b) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ServerError::Transport(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ServerError::Transport(transport(&e)))?;
            let status = resp.status().as_u16();
            let answer = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ServerError::Transport(e.to_string()))?
                .to_bytes();
            Ok((status, answer))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| ServerError::Timeout)?
    }
}

/// The error with its sources (hyper's top-level message alone says only "client error").
fn transport(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `text` without control characters, at most `max` characters (`…` when cut).
fn clip(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().filter(|c| !c.is_control()).count() > max {
        out.push('…');
    }
    out
}

fn snippet(answer: &[u8]) -> String {
    String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned()
}

/// The create body: the action, a reason naming the action, target, requester and the inbox
/// link, and the approval's context under the gateway's facts.
pub(super) fn create_body(a: &Approval, public_admin_url: &str) -> Value {
    let link = crate::notify::link(public_admin_url, a);
    // The canvas shows only this text (the server's lists return no context): it names what
    // the approval binds — the request line with its query, and the body as bound — so a human
    // deciding in the canvas sees what will run, not only the route's label. Control characters
    // (an agent may put newlines in body fields the reason quotes) are dropped.
    let request = match (&a.method, &a.path) {
        (Some(m), Some(p)) => format!(" Request: {m} {p}."),
        _ => String::new(),
    };
    let body = a
        .context
        .get(crate::gate::binding::KEY)
        .and_then(|r| {
            r.get("body")
                .filter(|b| !b.is_null())
                .or(r.get("body_digest"))
        })
        .filter(|b| !b.is_null())
        .map(|b| format!(" Body: {}.", clip(&crate::gate::canonical_json(b), 600)))
        .unwrap_or_default();
    let reason = format!(
        "Approval gateway: {} on {} requested by {}. {}{request}{body} — decide here or in the \
         gateway inbox: {link}",
        a.action,
        a.scope,
        a.requester,
        clip(&a.reason, 300)
    );
    json!({
        "action": a.action,
        "reason": reason,
        "context": {
            "approval_gateway": {
                "approval_id": a.id,
                "scope": a.scope,
                "requester": a.requester,
                "method": a.method,
                "path": a.path,
                "inbox": link,
                "expires_at": a.expires_at,
            },
            "details": a.context,
        },
    })
}
