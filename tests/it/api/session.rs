//! The admin API signed in by a browser session (issue 16): a `kind = "http"` token source that
//! forwards the `Cookie` to a fake control plane, no bearer. Approver sessions list, watch and
//! decide; a refused cookie is 401; a gated session never decides; a state-changing session
//! request must come from the admin listener's own origin (CSRF) and send JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use approval_gateway::caller::session::{HttpSource, HttpSourceSettings};
use approval_gateway::caller::{CallerClass, TokenSource, TokenSourceKind, When};
use approval_gateway::config::Policy;
use approval_gateway::store::{Status, Store};
use axum::http::{header, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{self, approval, new_approval, operator, serve, Admin, Sse};

/// The fake control plane's session check: `session=alice` / `session=bob` are members (human
/// approvers), `session=agent` a member whose answer carries an org token (a gated caller);
/// anything else is 401.
async fn control_plane() -> SocketAddr {
    let app = axum::Router::new().route(
        "/cp/auth/tenant-member",
        axum::routing::get(|headers: HeaderMap| async move {
            let cookie = headers
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let member = |user: &str| json!({ "member": true, "user_id": user });
            match cookie {
                "session=alice" => (StatusCode::OK, axum::Json(member("user-alice"))),
                "session=bob" => (StatusCode::OK, axum::Json(member("user-bob"))),
                "session=agent" => (
                    StatusCode::OK,
                    axum::Json(
                        json!({ "member": true, "user_id": "agent-9", "org_token_id": "t9" }),
                    ),
                ),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({ "member": false })),
                ),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The API test policy plus the cookie-session source and a `member` approver class (after the
/// gated `agent` class, so a session answer with an org token is gated).
fn session_policy(cp: SocketAddr) -> Policy {
    let mut policy = admin::policy(1);
    let source = HttpSource::new(HttpSourceSettings {
        url: format!("http://{cp}/cp/auth/tenant-member?slug=acme")
            .parse()
            .expect("url"),
        forward_headers: vec![header::COOKIE],
        timeout: Duration::from_secs(2),
        cache_ttl: Duration::from_secs(30),
        negative_cache_ttl: Duration::from_secs(5),
        when: Some(When::Equals {
            claim: "member".into(),
            value: json!(true),
        }),
        subject_field: Some("user_id".into()),
        subject_claim: "sub".into(),
        claims: serde_json::Map::new(),
    })
    .expect("http source");
    policy.callers.sources.push(TokenSource {
        name: "cp-session".into(),
        kind: TokenSourceKind::Http(Box::new(source)),
    });
    policy.callers.classes.insert(
        1,
        Arc::new(CallerClass {
            name: "member".into(),
            when: When::Present {
                claim: "member".into(),
            },
            gated: false,
            approver: true,
            admin: false,
        }),
    );
    policy
}

/// A request with a cookie and no bearer; `origin` and `body` (JSON, or raw text/plain) optional.
async fn with_cookie(
    api: &Admin,
    method: Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Body>,
) -> (StatusCode, Value) {
    let mut req = api
        .http
        .request(method, format!("{}{path}", api.base))
        .header(header::COOKIE, cookie);
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    req = match body {
        Some(Body::Json(v)) => req.json(&v),
        Some(Body::Text(t)) => req.header(header::CONTENT_TYPE, "text/plain").body(t),
        None => req,
    };
    let resp = req.send().await.expect("request");
    let status = resp.status();
    if status.is_client_error() {
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(ct, "application/problem+json", "{status} on {path}");
    }
    let body = serde_json::from_slice(&resp.bytes().await.expect("body")).unwrap_or(Value::Null);
    (status, body)
}

enum Body {
    Json(Value),
    Text(&'static str),
}

fn vote(decision: &str) -> Option<Body> {
    Some(Body::Json(
        json!({ "decision": decision, "comment": "by session" }),
    ))
}

pub(super) async fn an_approver_session_lists_watches_and_decides(store: Store) {
    let api = serve(store, session_policy(control_plane().await)).await;
    let a = api.pending(&new_approval("ws-s1", "bob", &[], 1)).await;
    let decisions = format!("/v1/approvals/{}/decisions", a.id);
    let own = api.base.clone();

    let (s, page) = with_cookie(
        &api,
        Method::GET,
        "/v1/approvals?status=pending",
        "session=alice",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["id"], a.id.to_string());
    let events = api
        .http
        .get(format!("{}/v1/events", api.base))
        .header(header::COOKIE, "session=alice")
        .send()
        .await
        .expect("events");
    let mut events = Sse::from_response(events);

    // Cross-site: no Origin, a foreign one, `null`, another port of the same host → 403.
    let other_port = own
        .rsplit_once(':')
        .map(|(h, _)| format!("{h}:1"))
        .expect("port");
    for origin in [
        None,
        Some("https://evil.example"),
        Some("null"),
        Some(other_port.as_str()),
    ] {
        let (s, body) = with_cookie(
            &api,
            Method::POST,
            &decisions,
            "session=alice",
            origin,
            vote("approve"),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{origin:?}: {body}");
    }
    // An Authorization the classification does not read as a bearer exempts nothing.
    let resp = api
        .http
        .post(format!("{}{decisions}", api.base))
        .header(header::COOKIE, "session=alice")
        .header(header::AUTHORIZATION, "bearer not-read")
        .header(header::ORIGIN, "https://evil.example")
        .json(&json!({ "decision": "approve" }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Same origin but not JSON (what an HTML form could send) → 415.
    let (s, _) = with_cookie(
        &api,
        Method::POST,
        &decisions,
        "session=alice",
        Some(&own),
        Some(Body::Text(r#"{"decision":"approve"}"#)),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let still = api
        .get(&format!("/v1/approvals/{}", a.id), &operator("olga"))
        .await;
    assert_eq!(
        approval(&still.1).status,
        Status::Pending,
        "nothing decided yet"
    );

    // From the request's own origin → recorded as the session's subject.
    let (s, body) = with_cookie(
        &api,
        Method::POST,
        &decisions,
        "session=alice",
        Some(&own),
        vote("approve"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let decided = approval(&body);
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(decided.decisions[0].approver, "user-alice");
    let (event, _, seen) = events.next().await;
    assert_eq!((event.as_str(), seen.id), ("approval.approved", a.id));

    // The configured public admin URL is the inbox's origin too (behind a proxy, say).
    let b = api.pending(&new_approval("ws-s2", "carol", &[], 1)).await;
    let (s, body) = with_cookie(
        &api,
        Method::POST,
        &format!("/v1/approvals/{}/decisions", b.id),
        "session=bob",
        Some("http://127.0.0.1:9090"),
        vote("deny"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(approval(&body).status, Status::Denied);
}

pub(super) async fn refused_or_gated_sessions_do_not_decide(store: Store) {
    let api = serve(store, session_policy(control_plane().await)).await;
    let a = api.pending(&new_approval("ws-s3", "bob", &[], 1)).await;
    let decisions = format!("/v1/approvals/{}/decisions", a.id);
    let own = api.base.clone();

    // A cookie the control plane refuses proves nobody; neither cookie nor bearer: 401 as before.
    for cookie in ["session=mallory", "other=1"] {
        let (s, _) = with_cookie(&api, Method::GET, "/v1/approvals", cookie, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{cookie}");
        let (s, _) = with_cookie(
            &api,
            Method::POST,
            &decisions,
            cookie,
            Some(&own),
            vote("approve"),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{cookie}");
    }
    let (s, _) = api.call(Method::GET, "/v1/approvals", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A gated caller's session never acts as an approver: it lists only its own approvals (none
    // here), may not watch the event stream, and may not decide.
    let (s, page) = with_cookie(
        &api,
        Method::GET,
        "/v1/approvals",
        "session=agent",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["items"], json!([]));
    let (s, _) = with_cookie(&api, Method::GET, "/v1/events", "session=agent", None, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = with_cookie(
        &api,
        Method::POST,
        &decisions,
        "session=agent",
        Some(&own),
        vote("approve"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("gated"),
        "{body}"
    );

    // A bearer is unaffected by the origin check, with or without a cookie alongside.
    let resp = api
        .http
        .post(format!("{}{decisions}", api.base))
        .bearer_auth(operator("olga"))
        .json(&json!({ "decision": "approve" }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
}
