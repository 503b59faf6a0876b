//! `config/molecule.toml` in front of the workspace-server stand-in (a real gin server with the
//! real auth tiers, `tests/standin/`), on real Postgres tables of the server's column types.
//! Every assertion on forwarding is made on what the stand-in received.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use approval_gateway::app::App;
use approval_gateway::config;
use approval_gateway::store::{ApprovalId, Store};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::support::standin::{
    insert_org_token, insert_org_token_with_id, insert_workspace, insert_workspace_token, Standin,
};
use crate::support::{db, gateway, raw};

pub(crate) const ADMIN: &str = "molecule-admin-token-for-tests";
pub(crate) const JWT_SECRET: &str = "molecule-test-jwt-secret-0123456789";

/// A fake control plane: `GET /cp/auth/tenant-member` answers for the `Cookie` it gets:
/// `session=alice` → a member; `session=broken` → 500; anything else → 401.
pub(crate) struct ControlPlane {
    addr: SocketAddr,
    pub(crate) asked: Arc<AtomicUsize>,
}

impl ControlPlane {
    pub(crate) async fn start() -> Self {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&asked);
        let app = axum::Router::new().route(
            "/cp/auth/tenant-member",
            axum::routing::get(move |headers: HeaderMap| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let cookie = headers
                        .get("cookie")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    match cookie {
                        "session=alice" => (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({"member": true, "user_id": "user-alice"})),
                        ),
                        "session=broken" => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            axum::Json(json!({})),
                        ),
                        _ => (
                            axum::http::StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"member": false})),
                        ),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, asked }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The gateway running `config/molecule.toml`, with the env a deployment would give it.
struct Molecule {
    proxy: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Molecule {
    async fn start(upstream: &str, molecule_db: &str, cp: &str) -> Self {
        let store = gateway::sqlite_url();
        let member = format!("{cp}/cp/auth/tenant-member?slug=acme");
        let env: Vec<(&str, String)> = vec![
            ("MOLECULE_PLATFORM_APPROVAL_GATE", "enforce".into()),
            ("GATEWAY_LISTEN", "127.0.0.1:0".into()),
            ("GATEWAY_ADMIN_LISTEN", "127.0.0.1:0".into()),
            ("GATEWAY_UPSTREAM", upstream.into()),
            ("GATEWAY_DATABASE_URL", store),
            ("MOLECULE_DATABASE_URL", molecule_db.into()),
            ("MOLECULE_CP_TENANT_MEMBER_URL", member),
            ("ADMIN_TOKEN", ADMIN.into()),
            ("GATEWAY_JWT_SECRET", JWT_SECRET.into()),
            // The server's own database URL in a shared env file must not become the store.
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/not-the-store".into(),
            ),
        ];
        let lookup = move |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let config = config::load(std::path::Path::new("config/molecule.toml"), &lookup)
            .unwrap_or_else(|e| panic!("molecule.toml: {e}"));
        let app = App::build(config).await.expect("gateway builds");
        let (proxy, store) = (app.proxy_addr(), app.store().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        let mut waited = 0;
        while !store.is_ready() {
            assert!(waited < 2000, "store never became ready");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
        Self {
            proxy,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn approve(&self, id: &str) {
        gateway::approve_in(&self.store, id, "user-alice").await;
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

struct Setup {
    standin: Standin,
    cp: ControlPlane,
    gw: Molecule,
    pool: sqlx::PgPool,
}

async fn setup() -> Option<Setup> {
    let url = db::postgres_url().await?;
    let cp = ControlPlane::start().await;
    let standin = Standin::start(
        &url,
        &[
            ("ADMIN_TOKEN", ADMIN),
            ("CP_UPSTREAM_URL", &cp.url()),
            ("MOLECULE_ORG_SLUG", "acme"),
            ("CANVAS_PROXY_URL", "http://canvas.internal:3000"),
            ("STANDIN_SESSION_CACHE", "off"),
        ],
    )
    .await;
    let pool = standin.pool().await;
    let gw = Molecule::start(&standin.url(), &url, &cp.url()).await;
    Some(Setup {
        standin,
        cp,
        gw,
        pool,
    })
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Authorization: Bearer {token}").into_bytes()
}

fn approval_id(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("202 body: {body}"));
    v["approval_id"].as_str().unwrap().to_owned()
}

/// Every credential the server accepts, on a gated route (`DELETE /workspaces/{id}`): the org
/// token is held for approval; the workspace's token, `ADMIN_TOKEN` and a valid canvas session
/// reach the server; a padded org token is still the org token; unknown, missing, a forged
/// same-origin request and a session the control plane refuses are 401 and never reach it.
#[tokio::test]
async fn every_credential_on_a_gated_route_postgres() {
    let Some(s) = setup().await else { return };
    let w = insert_workspace(&s.pool, "target", None).await;
    let org = insert_org_token(&s.pool, Some(w), false).await;
    let ws_token = insert_workspace_token(&s.pool, w).await;
    let path = format!("/workspaces/{w}");
    let send = |headers: Vec<Vec<u8>>| {
        let (proxy, path) = (s.gw.proxy, path.clone());
        async move {
            let refs: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
            raw::send(proxy, "DELETE", path.as_bytes(), &refs, b"").await
        }
    };

    let held = send(vec![bearer(&org)]).await;
    assert_eq!(held.status, 202, "{}", held.body);
    let padded = send(vec![
        format!("Authorization: Bearer {org}\u{a0}").into_bytes()
    ])
    .await;
    assert_eq!(
        padded.status, 202,
        "U+00A0-padded org token: {}",
        padded.body
    );
    assert!(
        s.standin.requests().await.is_empty(),
        "nothing reached the server"
    );

    for (name, headers, want) in [
        ("no credential", vec![], 401),
        (
            "unknown bearer",
            vec![bearer("not-a-token-anyone-knows")],
            401,
        ),
        (
            "forged same-origin",
            vec![b"Origin: http://gateway.test".to_vec()],
            401,
        ),
        (
            "refused session",
            vec![b"Cookie: session=mallory".to_vec()],
            401,
        ),
        (
            "lowercase scheme",
            vec![format!("authorization: bearer {org}").into_bytes()],
            401,
        ),
    ] {
        let r = send(headers).await;
        assert_eq!(r.status, want, "{name}: {}", r.body);
        assert!(r.body.contains("unknown-caller"), "{name}: {}", r.body);
    }
    assert!(
        s.standin.requests().await.is_empty(),
        "nothing reached the server"
    );

    // The workspace's own token is known and not gated: forwarded. DELETE /workspaces/{id} is
    // AdminAuth, where the server itself refuses it (ADMIN_TOKEN is set); on a WorkspaceAuth
    // route of its workspace it passes.
    let r = send(vec![bearer(&ws_token)]).await;
    assert_eq!(r.status, 401, "the server's own answer: {}", r.body);
    let agent = format!("/workspaces/{w}/agent");
    let r = raw::send(
        s.gw.proxy,
        "DELETE",
        agent.as_bytes(),
        &[&bearer(&ws_token)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = s.standin.requests().await;
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].credential, None,
        "refused by the server's AdminAuth"
    );
    assert_eq!(seen[1].full_path, "/workspaces/:id/agent");
    assert_eq!(seen[1].credential.as_deref(), Some("workspace-token"));
    s.standin.reset().await;

    // ADMIN_TOKEN and a canvas session reach the server (each deletes the workspace there).
    for (name, headers, credential) in [
        ("admin token", vec![bearer(ADMIN)], "admin-token"),
        (
            "canvas session",
            vec![b"Cookie: session=alice".to_vec()],
            "session",
        ),
    ] {
        let r = send(headers).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let seen = s.standin.requests().await;
        let last = seen.last().expect("forwarded");
        assert_eq!(last.full_path, "/workspaces/:id", "{name}");
        assert_eq!(last.credential.as_deref(), Some(credential), "{name}");
        assert_eq!(last.header("X-Forwarded-Proto"), Some("http"), "{name}");
    }
    assert_eq!(s.standin.requests().await.len(), 2);
    assert!(s.cp.asked.load(Ordering::SeqCst) >= 1);
    s.gw.stop().await;
}

/// An approval binds the request as the server will act on it: the cascade-and-purge delete
/// and another secret value each need their own approval; the approved request runs once.
#[tokio::test]
async fn an_approval_executes_exactly_the_approved_request_postgres() {
    let Some(s) = setup().await else { return };
    let w = insert_workspace(&s.pool, "target", None).await;
    let org = insert_org_token(&s.pool, Some(w), false).await;
    let auth = bearer(&org);
    let path = format!("/workspaces/{w}");
    let r = raw::send(s.gw.proxy, "DELETE", path.as_bytes(), &[&auth], b"").await;
    let plain = approval_id(&r.body);
    s.gw.approve(&plain).await;
    let purge = format!("{path}?confirm=true&purge=true");
    let r = raw::send(s.gw.proxy, "DELETE", purge.as_bytes(), &[&auth], b"").await;
    assert_eq!(r.status, 202, "the purge is another request: {}", r.body);
    assert_ne!(approval_id(&r.body), plain);
    assert!(s.standin.requests().await.is_empty());
    let r = raw::send(s.gw.proxy, "DELETE", path.as_bytes(), &[&auth], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw::send(s.gw.proxy, "DELETE", path.as_bytes(), &[&auth], b"").await;
    assert_eq!(r.status, 202, "one approval, one execution");
    let seen = s.standin.requests().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_uri, path);
    assert!(seen[0].query.is_empty());
    assert_eq!(seen[0].header("Approval-Id"), Some(plain.as_str()));

    // secret_write binds the exact body by digest: another value is another approval.
    s.standin.reset().await;
    let secrets = format!("/workspaces/{w}/secrets");
    let put = |body: &'static str| {
        let (proxy, secrets, auth) = (s.gw.proxy, secrets.clone(), auth.clone());
        async move {
            raw::send(
                proxy,
                "PUT",
                secrets.as_bytes(),
                &[&auth, b"Content-Type: application/json"],
                body.as_bytes(),
            )
            .await
        }
    };
    let r = put(r#"{"key":"OPENAI_API_KEY","value":"sk-1"}"#).await;
    let first = approval_id(&r.body);
    let approval =
        s.gw.store
            .get(ApprovalId::parse(&first).unwrap(), chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
    assert!(
        !approval.context.to_string().contains("sk-1"),
        "the secret is not stored in the approval: {}",
        approval.context
    );
    s.gw.approve(&first).await;
    let r = put(r#"{"key":"OPENAI_API_KEY","value":"sk-2"}"#).await;
    assert_eq!(r.status, 202, "another value: {}", r.body);
    let r = put(r#"{"key":"OPENAI_API_KEY","value":"sk-1"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = s.standin.requests().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body(),
        br#"{"key":"OPENAI_API_KEY","value":"sk-1"}"#
    );
    s.gw.stop().await;
}

/// The org token cannot decide the server's approvals itself; a revoked org token is no longer
/// recognised (401); a token whose org_id is NULL mints under a visible, non-empty scope.
#[tokio::test]
async fn decide_guard_revocation_and_unanchored_tokens_postgres() {
    let Some(s) = setup().await else { return };
    let w = insert_workspace(&s.pool, "target", None).await;
    let (org, org_id) = insert_org_token_with_id(&s.pool, Some(w), false).await;
    // The workspace's own token by another route: chat attachments read /configs as root.
    let download = format!("/workspaces/{w}/chat/download?path=/configs/.auth_token");
    let r = raw::send(
        s.gw.proxy,
        "GET",
        download.as_bytes(),
        &[&bearer(&org)],
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let decide = format!("/workspaces/{w}/approvals/{}/decide", uuid::Uuid::new_v4());
    let r = raw::send(
        s.gw.proxy,
        "POST",
        decide.as_bytes(),
        &[&bearer(&org), b"Content-Type: application/json"],
        br#"{"decision":"approved"}"#,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);

    sqlx::query("UPDATE org_api_tokens SET revoked_at = now() WHERE id = $1")
        .bind(org_id)
        .execute(&s.pool)
        .await
        .unwrap();
    let path = format!("/workspaces/{w}");
    let r = raw::send(s.gw.proxy, "DELETE", path.as_bytes(), &[&bearer(&org)], b"").await;
    assert_eq!(r.status, 401, "revoked: {}", r.body);

    let unanchored = insert_org_token(&s.pool, None, false).await;
    let r = raw::send(
        s.gw.proxy,
        "POST",
        b"/org/tokens",
        &[&bearer(&unanchored), b"Content-Type: application/json"],
        br#"{"name":"ci"}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["scope"], "org:unanchored", "never the empty string");
    assert!(s.standin.requests().await.is_empty());
    s.gw.stop().await;
}

/// A source that fails fails closed on gated routes only: the control plane answering 500 is
/// 503 on a gated route and irrelevant elsewhere; the Molecule database down is 503 there too.
#[tokio::test]
async fn a_failing_source_is_503_on_gated_routes_only_postgres() {
    let Some(s) = setup().await else { return };
    let w = insert_workspace(&s.pool, "target", None).await;
    let path = format!("/workspaces/{w}");
    let cookie: &[u8] = b"Cookie: session=broken";
    let r = raw::send(s.gw.proxy, "DELETE", path.as_bytes(), &[cookie], b"").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let r = raw::send(s.gw.proxy, "GET", path.as_bytes(), &[cookie], b"").await;
    assert_eq!(r.status, 200, "an open route is not classified: {}", r.body);
    s.gw.stop().await;

    let down = Molecule::start(
        &s.standin.url(),
        "postgres://postgres@127.0.0.1:1/molecule",
        &s.cp.url(),
    )
    .await;
    let r = raw::send(
        down.proxy,
        "DELETE",
        path.as_bytes(),
        &[&bearer("some-token")],
        b"",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let r = raw::send(
        down.proxy,
        "GET",
        path.as_bytes(),
        &[&bearer("some-token")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    down.stop().await;
}

/// Every route the server registers that the reference marks destructive or escalating has a
/// rule (a gate or a guard) in `config/molecule.toml`.
#[tokio::test]
async fn every_destructive_route_of_the_server_has_a_rule_postgres() {
    let Some(url) = db::postgres_url().await else {
        return;
    };
    let standin = Standin::start(&url, &[("ADMIN_TOKEN", ADMIN)]).await;
    let env = |k: &str| match k {
        "MOLECULE_PLATFORM_APPROVAL_GATE" => Some("enforce".to_owned()),
        "MOLECULE_DATABASE_URL" => Some(url.clone()),
        "MOLECULE_CP_TENANT_MEMBER_URL" => Some("http://127.0.0.1:9/cp".to_owned()),
        "GATEWAY_JWT_SECRET" => Some(JWT_SECRET.to_owned()),
        _ => None,
    };
    let config = config::load(std::path::Path::new("config/molecule.toml"), &env).unwrap();
    let policy = &config.policy;
    let routes = standin.routes().await;
    assert!(routes.iter().filter(|r| r.destructive).count() >= 40);
    let mut missing = Vec::new();
    for r in routes.iter().filter(|r| r.destructive) {
        // A concrete path gin would dispatch to this pattern.
        let concrete: Vec<String> = r
            .path
            .split('/')
            .map(|seg| match seg.chars().next() {
                Some(':') => "3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f".to_owned(),
                Some('*') => "some/file".to_owned(),
                _ => seg.to_owned(),
            })
            .collect();
        let path = concrete.join("/");
        let method = http::Method::from_bytes(r.method.as_bytes()).unwrap();
        let ruled = policy.routes.find(&method, &path).is_some()
            || policy.guards.find(&method, &path).is_some();
        if !ruled {
            missing.push(format!("{} {}", r.method, r.path));
        }
    }
    assert!(
        missing.is_empty(),
        "destructive routes without a rule: {missing:#?}"
    );
}

/// The session source's caches: a member stays recognised for `cache_ttl` after the control
/// plane revokes the session, and is refused once it expires; a refusal is cached for
/// `negative_cache_ttl`; a failure is never cached (503 each time, until the endpoint heals).
#[tokio::test]
async fn session_answers_are_cached_within_their_ttls() {
    use approval_gateway::caller::session::{HttpSource, HttpSourceSettings};
    use approval_gateway::caller::{CallerError, When};
    use std::sync::Mutex;

    let state = Arc::new(Mutex::new(200u16));
    let asked = Arc::new(AtomicUsize::new(0));
    let (st, n) = (Arc::clone(&state), Arc::clone(&asked));
    let app = axum::Router::new().route(
        "/member",
        axum::routing::get(move || {
            let (st, n) = (Arc::clone(&st), Arc::clone(&n));
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                let code = *st.lock().unwrap();
                let status = axum::http::StatusCode::from_u16(code).unwrap();
                (status, axum::Json(json!({"member": true, "user_id": "u1"})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let ttl = std::time::Duration::from_millis(300);
    let source = HttpSource::new(HttpSourceSettings {
        url: format!("http://{addr}/member").parse().unwrap(),
        forward_headers: vec![http::header::COOKIE],
        timeout: std::time::Duration::from_secs(2),
        cache_ttl: ttl,
        negative_cache_ttl: ttl,
        when: Some(When::Equals {
            claim: "member".into(),
            value: json!(true),
        }),
        subject_field: Some("user_id".into()),
        subject_claim: "sub".into(),
        claims: serde_json::Map::new(),
    })
    .unwrap();
    let name: Arc<str> = Arc::from("cp-session");
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::COOKIE, "session=s1".parse().unwrap());
    let lookup = || source.lookup(&name, &headers);
    let until = |deadline: std::time::Instant| async move {
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };

    let claims = lookup().await.unwrap().expect("a member");
    assert_eq!(claims["sub"], "u1");
    let cached_at = std::time::Instant::now();
    *state.lock().unwrap() = 401; // the session is revoked at the control plane
    assert!(lookup().await.unwrap().is_some(), "still cached");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    until(cached_at + ttl + std::time::Duration::from_millis(50)).await;
    assert!(
        lookup().await.unwrap().is_none(),
        "refused once the cache expired"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert!(lookup().await.unwrap().is_none(), "the refusal is cached");
    assert_eq!(asked.load(Ordering::SeqCst), 2);

    let mut other = http::HeaderMap::new();
    other.insert(http::header::COOKIE, "session=s2".parse().unwrap());
    *state.lock().unwrap() = 500;
    for _ in 0..2 {
        assert_eq!(
            source.lookup(&name, &other).await.err(),
            Some(CallerError::SourceUnavailable(Arc::clone(&name)))
        );
    }
    assert_eq!(asked.load(Ordering::SeqCst), 4, "failures are not cached");
    assert!(
        source
            .lookup(&name, &http::HeaderMap::new())
            .await
            .unwrap()
            .is_none(),
        "no forwarded header: not asked"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 4);
}
