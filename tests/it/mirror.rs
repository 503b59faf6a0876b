//! The Molecule canvas mirror (docs/molecule.md §8) end to end: `config/molecule.toml` plus an enabled
//! `[molecule]` table, in front of the workspace-server stand-in (real approvals handlers on
//! real Postgres tables). Assertions are made on the stand-in's `approval_requests` rows and on
//! what it received.

use std::net::SocketAddr;
use std::time::Duration;

use approval_gateway::app::App;
use approval_gateway::config;
use approval_gateway::store::{ApprovalId, MirrorRow, Status, Store, Ttls, Via, Vote, VoteKind};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::molecule::{ControlPlane, ADMIN, JWT_SECRET};
use crate::support::standin::{
    insert_org_token, insert_workspace, insert_workspace_token, Standin,
};
use crate::support::{db, gateway, raw};

const INBOX: &str = "http://inbox.test:9090";

/// The gateway running `config/molecule.toml` with the mirror on, its resync pass every 300 ms.
struct Gw {
    proxy: SocketAddr,
    admin: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gw {
    async fn start(upstream: &str, molecule_db: &str, cp: &str, server: &str, anchor: Uuid) -> Gw {
        let store = gateway::sqlite_url();
        Self::start_on(&store, upstream, molecule_db, cp, server, anchor).await
    }

    /// [`Gw::start`] on a given store (a restart).
    async fn start_on(
        store_url: &str,
        upstream: &str,
        molecule_db: &str,
        cp: &str,
        server: &str,
        anchor: Uuid,
    ) -> Gw {
        let member = format!("{cp}/cp/auth/tenant-member?slug=acme");
        let env: Vec<(&str, String)> = vec![
            ("MOLECULE_PLATFORM_APPROVAL_GATE", "enforce".into()),
            ("GATEWAY_LISTEN", "127.0.0.1:0".into()),
            ("GATEWAY_ADMIN_LISTEN", "127.0.0.1:0".into()),
            ("GATEWAY_UPSTREAM", upstream.into()),
            ("GATEWAY_DATABASE_URL", store_url.to_owned()),
            ("GATEWAY_PUBLIC_ADMIN_URL", INBOX.into()),
            ("MOLECULE_DATABASE_URL", molecule_db.into()),
            ("MOLECULE_CP_TENANT_MEMBER_URL", member),
            ("ADMIN_TOKEN", ADMIN.into()),
            ("GATEWAY_JWT_SECRET", JWT_SECRET.into()),
        ];
        let lookup = move |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let mut text = std::fs::read_to_string("config/molecule.toml").unwrap();
        text.push_str(&format!(
            "\n[molecule]\nmirror_approvals = true\nserver_url = \"{server}\"\n\
             token_env = \"ADMIN_TOKEN\"\nanchor_workspace = \"{anchor}\"\n"
        ));
        let mut config =
            config::parse(&text, &lookup).unwrap_or_else(|e| panic!("mirror config: {e}"));
        config.molecule.as_mut().expect("mirror on").resync = Duration::from_millis(300);
        let app = App::build(config).await.expect("gateway builds");
        let (proxy, admin, store) = (app.proxy_addr(), app.admin_addr(), app.store().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        until("the store is ready", || {
            let store = store.clone();
            async move { store.is_ready().then_some(()) }
        })
        .await;
        Gw {
            proxy,
            admin,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn mirror(&self, id: ApprovalId) -> Option<MirrorRow> {
        self.store.mirror_get(id).await.unwrap()
    }

    async fn status(&self, id: ApprovalId) -> Status {
        let a = self.store.get(id, chrono::Utc::now()).await;
        a.unwrap().expect("approval").status
    }

    async fn vote(&self, id: ApprovalId, approver: &str, kind: VoteKind) {
        let ttls = Ttls {
            pending: Duration::from_secs(3600),
            approved: Duration::from_secs(3600),
        };
        let vote = Vote {
            approver: approver.into(),
            kind,
            comment: None,
            via: Via::Cli,
        };
        let _ = self
            .store
            .decide(id, &vote, ttls, chrono::Utc::now())
            .await
            .unwrap();
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// Poll `f` every 50 ms until it gives `Some`, for at most 15 s.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A row of the stand-in's `approval_requests`.
#[derive(Debug, Clone)]
struct ServerRow {
    workspace_id: String,
    action: String,
    reason: String,
    status: String,
    decided_by: Option<String>,
}

async fn server_row(pool: &sqlx::PgPool, id: &str) -> Option<ServerRow> {
    let row: Option<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT workspace_id::text, action, coalesce(reason, ''), status, decided_by \
         FROM approval_requests WHERE id::text = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap();
    row.map(
        |(workspace_id, action, reason, status, decided_by)| ServerRow {
            workspace_id,
            action,
            reason,
            status,
            decided_by,
        },
    )
}

/// The ids `GET /approvals/pending` lists (the canvas banner's poll, auto-deny included).
async fn server_pending(server: &str) -> Vec<String> {
    let r = reqwest::Client::new()
        .get(format!("{server}/approvals/pending"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows: Vec<Value> = r.json().await.unwrap();
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn standin_env(cp: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ADMIN_TOKEN", ADMIN.to_owned()),
        ("CP_UPSTREAM_URL", cp.to_owned()),
        ("MOLECULE_ORG_SLUG", "acme".to_owned()),
        ("CANVAS_PROXY_URL", "http://canvas.internal:3000".to_owned()),
        ("STANDIN_SESSION_CACHE", "off".to_owned()),
    ]
}

/// What most tests here start from: a fake control plane, the stand-in on a fresh database, an
/// anchor workspace, a target workspace and an org token bound to it.
struct World {
    url: String,
    cp: ControlPlane,
    standin: Standin,
    pool: sqlx::PgPool,
    anchor: Uuid,
    w: Uuid,
    org: String,
}

async fn world() -> Option<World> {
    let url = db::postgres_url().await?;
    let cp = ControlPlane::start().await;
    let standin = start_standin(&url, &cp.url(), "127.0.0.1:0").await;
    let pool = standin.pool().await;
    let anchor = insert_workspace(&pool, "anchor", None).await;
    let w = insert_workspace(&pool, "target", None).await;
    let org = insert_org_token(&pool, Some(w), false).await;
    Some(World {
        url,
        cp,
        standin,
        pool,
        anchor,
        w,
        org,
    })
}

async fn start_standin(url: &str, cp: &str, listen: &str) -> Standin {
    let env = standin_env(cp);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Standin::start_at(url, &refs, listen).await
}

fn approval_id(body: &str) -> ApprovalId {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("202 body: {body}"));
    ApprovalId::parse(v["approval_id"].as_str().unwrap()).unwrap()
}

/// An agent's held delete shows in the server's pending list (on the workspace it targets, its
/// reason naming action, target, requester and inbox link); a row the server auto-denies after
/// 10 minutes is not a denial (the gateway approval stays pending) and is re-created; the
/// gateway's decision is written back to the live row, and the retry is forwarded once.
#[tokio::test]
async fn pending_approvals_are_mirrored_recreated_and_written_back_postgres() {
    let Some(World {
        url,
        cp,
        standin,
        pool,
        anchor,
        w,
        org,
    }) = world().await
    else {
        return;
    };
    let gw = Gw::start(&standin.url(), &url, &cp.url(), &standin.url(), anchor).await;

    // The canvas shows only the reason: it names the request as bound, query included.
    let path = format!("/workspaces/{w}?confirm=true&purge=true");
    let auth = raw::bearer(&org);
    let r = raw::send(gw.proxy, "DELETE", path.as_bytes(), &[&auth], b"").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = approval_id(&r.body);
    let first = until("the server row", || async { gw.mirror(id).await }).await;
    assert_eq!(first.workspace_id, w.to_string(), "the scope's workspace");
    assert!(server_pending(&standin.url())
        .await
        .contains(&first.server_id));
    let row = server_row(&pool, &first.server_id).await.unwrap();
    assert_eq!(row.action, "delete_workspace");
    assert_eq!(row.workspace_id, w.to_string());
    for part in [
        "delete_workspace",
        &w.to_string(),
        &format!("{INBOX}/#/approvals/{id}"),
        &format!("Request: DELETE /workspaces/{w}?confirm=true&purge=true."),
    ] {
        assert!(row.reason.contains(part), "{part} in {:?}", row.reason);
    }

    // The server auto-denies rows older than 10 minutes when its pending list is read.
    sqlx::query(
        "UPDATE approval_requests SET created_at = now() - interval '11 minutes' WHERE id::text = $1",
    )
    .bind(&first.server_id)
    .execute(&pool)
    .await
    .unwrap();
    assert!(!server_pending(&standin.url())
        .await
        .contains(&first.server_id));
    let old = server_row(&pool, &first.server_id).await.unwrap();
    assert_eq!(
        (old.status.as_str(), old.decided_by.as_deref()),
        ("denied", Some("auto-expired"))
    );
    let second = until("a re-created server row", || async {
        gw.mirror(id)
            .await
            .filter(|m| m.server_id != first.server_id)
    })
    .await;
    assert_eq!(
        gw.status(id).await,
        Status::Pending,
        "auto-expired is no denial"
    );
    assert!(server_pending(&standin.url())
        .await
        .contains(&second.server_id));

    // Approved in the gateway (here: straight in its store) → written back to the live row.
    gw.vote(id, "user-alice", VoteKind::Approve).await;
    let row = until("the write-back", || async {
        server_row(&pool, &second.server_id)
            .await
            .filter(|r| r.status != "pending")
    })
    .await;
    assert_eq!(row.status, "approved");
    assert!(
        row.decided_by
            .as_deref()
            .unwrap_or("")
            .contains("user-alice"),
        "{row:?}"
    );
    let m = until("written_back recorded", || async {
        gw.mirror(id).await.filter(|m| m.written_back.is_some())
    })
    .await;
    assert_eq!(m.written_back.as_deref(), Some("approved"));

    standin.reset().await;
    let r = raw::send(gw.proxy, "DELETE", path.as_bytes(), &[&auth], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen: Vec<_> = standin
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(seen.len(), 1, "forwarded once");
    assert_eq!(seen[0].header("Approval-Id"), Some(id.to_string().as_str()));

    // A denial and an expiry-like end are written back as denials naming why.
    let r = raw::send(
        gw.proxy,
        "DELETE",
        format!("{path}?confirm=true").as_bytes(),
        &[&auth],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let denied = approval_id(&r.body);
    let m = until("the second server row", || async {
        gw.mirror(denied).await
    })
    .await;
    gw.vote(denied, "user-bob", VoteKind::Deny).await;
    let row = until("the denial written back", || async {
        server_row(&pool, &m.server_id)
            .await
            .filter(|r| r.status != "pending")
    })
    .await;
    assert_eq!(row.status, "denied");
    assert!(row.decided_by.unwrap_or_default().contains("user-bob"));
    gw.stop().await;
}

/// The server down: the agent still gets its 202 at once, failures are counted and `/readyz`
/// (still 200) says so; when the server comes up the mirror creates the missing row.
#[tokio::test]
async fn the_mirror_catches_up_when_the_server_returns_postgres() {
    let Some(url) = db::postgres_url().await else {
        return;
    };
    let cp = ControlPlane::start().await;
    // The gateway's upstream (and the tables its token sources read) is up; the server the
    // mirror calls comes up later on a reserved port.
    let upstream = start_standin(&url, &cp.url(), "127.0.0.1:0").await;
    let pool = upstream.pool().await;
    let anchor = insert_workspace(&pool, "anchor", None).await;
    let w = insert_workspace(&pool, "target", None).await;
    let org = insert_org_token(&pool, Some(w), false).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let later = format!("127.0.0.1:{port}");
    let gw = Gw::start(
        &upstream.url(),
        &url,
        &cp.url(),
        &format!("http://{later}"),
        anchor,
    )
    .await;

    let started = std::time::Instant::now();
    let r = raw::send(
        gw.proxy,
        "DELETE",
        format!("/workspaces/{w}").as_bytes(),
        &[&raw::bearer(&org)],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(2), "never blocked");
    let id = approval_id(&r.body);
    let ready = until("/readyz to report the failing mirror", || async {
        let (status, body) = gw.admin_get("/readyz").await;
        assert_eq!(status, 200, "the mirror never fails readiness: {body}");
        body.contains("canvas mirror: failing").then_some(body)
    })
    .await;
    assert!(ready.starts_with("ready\n"), "{ready}");
    let (_, metrics) = gw.admin_get("/metrics").await;
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("approval_gateway_mirror_failures_total "))
        .expect("the failure counter")
        .parse()
        .unwrap();
    assert!(failures >= 1.0, "{failures}");
    assert!(gw.mirror(id).await.is_none());

    let server = start_standin(&url, &cp.url(), &later).await;
    let m = until("the caught-up server row", || async { gw.mirror(id).await }).await;
    assert!(server_pending(&server.url()).await.contains(&m.server_id));
    until("/readyz to stop reporting", || async {
        let (_, body) = gw.admin_get("/readyz").await;
        (!body.contains("canvas mirror")).then_some(())
    })
    .await;
    gw.stop().await;
}

/// The canvas's decide route on a mirrored row, through the gateway: only a verified human
/// decides (a canvas session here), as a vote in the gateway answered in the server's shape;
/// the agent itself, a workspace token, ADMIN_TOKEN's class, a refused session and a forged
/// same-origin request get 403 and nothing reaches the server. The decision is then written
/// back to the row and the agent's retry is forwarded once.
#[tokio::test]
async fn only_verified_humans_decide_mirrored_rows_through_the_gateway_postgres() {
    let Some(World {
        url,
        cp,
        standin,
        pool,
        anchor,
        w,
        org,
    }) = world().await
    else {
        return;
    };
    let ws_token = insert_workspace_token(&pool, w).await;
    let gw = Gw::start(&standin.url(), &url, &cp.url(), &standin.url(), anchor).await;

    let path = format!("/workspaces/{w}");
    let agent = raw::bearer(&org);
    let r = raw::send(gw.proxy, "DELETE", path.as_bytes(), &[&agent], b"").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = approval_id(&r.body);
    let m = until("the server row", || async { gw.mirror(id).await }).await;
    let decide = format!("/workspaces/{w}/approvals/{}/decide", m.server_id);
    let body: &[u8] = br#"{"decision":"approved","decided_by":"human"}"#;
    let json: &[u8] = b"Content-Type: application/json";
    let send = |headers: Vec<Vec<u8>>| {
        let (proxy, decide) = (gw.proxy, decide.clone());
        async move {
            let mut refs: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
            refs.push(json);
            raw::send(proxy, "POST", decide.as_bytes(), &refs, body).await
        }
    };
    standin.reset().await;
    for (name, headers) in [
        ("the requesting agent", vec![agent.clone()]),
        ("a workspace token", vec![raw::bearer(&ws_token)]),
        (
            "ADMIN_TOKEN (not an approver class)",
            vec![raw::bearer(ADMIN)],
        ),
        (
            "forged same-origin",
            vec![
                format!("Origin: http://{}", gw.proxy).into_bytes(),
                format!("Referer: http://{}/", gw.proxy).into_bytes(),
            ],
        ),
        (
            "a refused session",
            vec![b"Cookie: session=mallory".to_vec()],
        ),
    ] {
        let r = send(headers).await;
        assert_eq!(r.status, 403, "{name}: {}", r.body);
        assert!(
            r.body.contains("held by the approval gateway"),
            "{name}: {}",
            r.body
        );
    }
    assert_eq!(gw.status(id).await, Status::Pending);
    let forwarded = |reqs: Vec<crate::support::standin::StandinRequest>| {
        reqs.into_iter()
            .filter(|r| r.path.ends_with("/decide"))
            .collect::<Vec<_>>()
    };
    assert!(
        forwarded(standin.requests().await).is_empty(),
        "no decide reached the server"
    );
    assert_eq!(
        server_row(&pool, &m.server_id).await.unwrap().status,
        "pending"
    );

    // The human's session cookie from another site, or with no origin at all: a cross-site
    // page must not vote with it.
    for origin in [Some(&b"Origin: https://evil.example"[..]), None] {
        let mut headers = vec![b"Cookie: session=alice".to_vec()];
        headers.extend(origin.map(<[u8]>::to_vec));
        let r = send(headers).await;
        assert_eq!(r.status, 403, "{origin:?}: {}", r.body);
    }
    assert_eq!(gw.status(id).await, Status::Pending);
    // The mirrored id in another spelling is still the mirrored row (Postgres reads any).
    let upper = decide.replace(&m.server_id, &m.server_id.to_uppercase());
    let ws_auth = raw::bearer(&ws_token);
    let r = raw::send(gw.proxy, "POST", upper.as_bytes(), &[&ws_auth, json], body).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("held by the approval gateway"),
        "{}",
        r.body
    );
    // A path only some readings make a decide is refused for anyone.
    let dotted = decide.replace("/decide", "/./decide");
    let r = raw::send(
        gw.proxy,
        "POST",
        dotted.as_bytes(),
        &[&raw::bearer(&ws_token), json],
        body,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(forwarded(standin.requests().await).is_empty());

    // A human with a canvas session, from the site's own origin: a vote in the gateway,
    // answered as the server would.
    let r = send(vec![
        b"Cookie: session=alice".to_vec(),
        b"Origin: http://gateway.test".to_vec(),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "approved", "approval_id": m.server_id})
    );
    let a = gw.store.get(id, chrono::Utc::now()).await.unwrap().unwrap();
    assert_eq!(a.status, Status::Approved);
    assert_eq!(a.decisions.len(), 1);
    assert_eq!(a.decisions[0].approver, "user-alice");
    let row = until("the write-back", || async {
        server_row(&pool, &m.server_id)
            .await
            .filter(|r| r.status != "pending")
    })
    .await;
    assert_eq!(row.status, "approved");
    assert!(row.decided_by.unwrap_or_default().contains("user-alice"));
    let decides = forwarded(standin.requests().await);
    assert_eq!(
        decides.len(),
        1,
        "only the mirror's write-back: {decides:?}"
    );
    assert_eq!(
        decides[0].header("User-Agent"),
        Some("approval-gateway-mirror")
    );
    let again = send(vec![
        b"Cookie: session=alice".to_vec(),
        b"Origin: http://gateway.test".to_vec(),
    ])
    .await;
    assert_eq!(again.status, 409, "no longer pending: {}", again.body);

    standin.reset().await;
    let r = raw::send(gw.proxy, "DELETE", path.as_bytes(), &[&agent], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw::send(gw.proxy, "DELETE", path.as_bytes(), &[&agent], b"").await;
    assert_eq!(r.status, 202, "one approval, one execution: {}", r.body);
    let deletes: Vec<_> = standin
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].header("Approval-Id"),
        Some(id.to_string().as_str())
    );

    // A deny from the canvas; and a row the gateway did not make is forwarded as before.
    let w2 = insert_workspace(&pool, "second", None).await;
    let org2 = insert_org_token(&pool, Some(w2), false).await;
    let r = raw::send(
        gw.proxy,
        "DELETE",
        format!("/workspaces/{w2}").as_bytes(),
        &[&raw::bearer(&org2)],
        b"",
    )
    .await;
    let id2 = approval_id(&r.body);
    let m2 = until("the second server row", || async { gw.mirror(id2).await }).await;
    let r = raw::send(
        gw.proxy,
        "POST",
        format!("/workspaces/{w2}/approvals/{}/decide", m2.server_id).as_bytes(),
        &[
            b"Cookie: session=alice",
            b"Origin: http://gateway.test",
            json,
        ],
        br#"{"decision":"denied"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#""status":"denied""#), "{}", r.body);
    assert_eq!(gw.status(id2).await, Status::Denied);
    standin.reset().await;
    let other = format!("/workspaces/{w2}/approvals/{}/decide", Uuid::new_v4());
    let r = raw::send(
        gw.proxy,
        "POST",
        other.as_bytes(),
        &[
            b"Cookie: session=alice",
            b"Origin: http://gateway.test",
            json,
        ],
        br#"{"decision":"approved"}"#,
    )
    .await;
    assert_ne!(r.status, 200, "{}", r.body);
    let seen = forwarded(standin.requests().await);
    assert!(
        seen.iter().any(|r| r.request_uri == other),
        "a row the gateway did not make is the server's: {seen:?}"
    );
    gw.stop().await;
}

/// An approval whose scope is not a workspace id (an unanchored org token minting a token:
/// scope `org:unanchored`), or names no workspace the server has, gets its row on the anchor
/// workspace; a withdrawn approval's row is
/// denied with `decided_by` saying why, and an expired one's likewise.
#[tokio::test]
async fn org_wide_rows_sit_on_the_anchor_and_ends_are_written_back_postgres() {
    let Some(url) = db::postgres_url().await else {
        return;
    };
    let cp = ControlPlane::start().await;
    let standin = start_standin(&url, &cp.url(), "127.0.0.1:0").await;
    let pool = standin.pool().await;
    let anchor = insert_workspace(&pool, "anchor", None).await;
    let unanchored = insert_org_token(&pool, None, false).await;
    let gw = Gw::start(&standin.url(), &url, &cp.url(), &standin.url(), anchor).await;

    let mint = |name: &'static str| {
        let (proxy, auth) = (gw.proxy, raw::bearer(&unanchored));
        async move {
            let body = format!(r#"{{"name":"{name}"}}"#);
            raw::send(
                proxy,
                "POST",
                b"/org/tokens",
                &[&auth, b"Content-Type: application/json"],
                body.as_bytes(),
            )
            .await
        }
    };
    let r = mint("ci").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = approval_id(&r.body);
    let m = until("the server row", || async { gw.mirror(id).await }).await;
    assert_eq!(m.workspace_id, anchor.to_string(), "org-wide: the anchor");
    let row = server_row(&pool, &m.server_id).await.unwrap();
    assert_eq!(row.workspace_id, anchor.to_string());
    assert!(row.reason.contains("org:unanchored"), "{:?}", row.reason);

    // A scope that looks like a workspace id the server does not know: its insert fails (500)
    // and the anchor carries the row.
    let ghost = Uuid::new_v4();
    let r = raw::send(
        gw.proxy,
        "DELETE",
        format!("/workspaces/{ghost}").as_bytes(),
        &[&raw::bearer(&unanchored)],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ghost_id = approval_id(&r.body);
    let g = until("the ghost's row", || async { gw.mirror(ghost_id).await }).await;
    assert_eq!(g.workspace_id, anchor.to_string());
    let row = server_row(&pool, &g.server_id).await.unwrap();
    assert!(row.reason.contains(&ghost.to_string()), "{:?}", row.reason);

    let a = gw.store.get(id, chrono::Utc::now()).await.unwrap().unwrap();
    let out = gw
        .store
        .withdraw(id, &a.requester, Via::Api, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        out,
        approval_gateway::store::WithdrawOutcome::Withdrawn(_)
    ));
    let row = until("the withdrawal written back", || async {
        server_row(&pool, &m.server_id)
            .await
            .filter(|r| r.status != "pending")
    })
    .await;
    assert_eq!(row.status, "denied");
    assert_eq!(
        row.decided_by.as_deref(),
        Some("approval-gateway: withdrawn by the requester")
    );

    // Expiry: the sweeper's transition (forced here with a clock past every TTL).
    let r = mint("ops").await;
    let id = approval_id(&r.body);
    let m = until("the second row", || async { gw.mirror(id).await }).await;
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    let expired = gw.store.expire_due(later).await.unwrap();
    assert!(expired.iter().any(|a| a.id == id));
    let row = until("the expiry written back", || async {
        server_row(&pool, &m.server_id)
            .await
            .filter(|r| r.status != "pending")
    })
    .await;
    assert_eq!(
        (row.status.as_str(), row.decided_by.as_deref()),
        ("denied", Some("approval-gateway: expired"))
    );
    gw.stop().await;
}

/// An outcome reached while no mirror could write it (here: decided while the gateway was
/// stopped) is written back by the next process's resync pass.
#[tokio::test]
async fn outcomes_owed_before_a_restart_are_written_back_postgres() {
    let Some(World {
        url,
        cp,
        standin,
        pool,
        anchor,
        w,
        org,
    }) = world().await
    else {
        return;
    };
    let store_url = gateway::sqlite_url();
    let args = (standin.url(), url.clone(), cp.url());
    let start = || Gw::start_on(&store_url, &args.0, &args.1, &args.2, &args.0, anchor);
    let gw = start().await;
    let r = raw::send(
        gw.proxy,
        "DELETE",
        format!("/workspaces/{w}").as_bytes(),
        &[&raw::bearer(&org)],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = approval_id(&r.body);
    let m = until("the server row", || async { gw.mirror(id).await }).await;
    let store = gw.store.clone();
    gw.stop().await;
    let stopped = Gw {
        proxy: "127.0.0.1:9".parse().unwrap(),
        admin: "127.0.0.1:9".parse().unwrap(),
        store,
        stop: None,
        task: None,
    };
    stopped.vote(id, "user-alice", VoteKind::Approve).await;
    assert_eq!(
        server_row(&pool, &m.server_id).await.unwrap().status,
        "pending"
    );

    let gw = start().await;
    let row = until("the owed write-back", || async {
        server_row(&pool, &m.server_id)
            .await
            .filter(|r| r.status != "pending")
    })
    .await;
    assert_eq!(row.status, "approved");
    // The mapping records the write-back just after the server call: wait for it.
    let written = until("the write-back recorded", || async {
        gw.mirror(id).await.and_then(|m| m.written_back)
    })
    .await;
    assert_eq!(written, "approved");
    gw.stop().await;
}
