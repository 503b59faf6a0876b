//! Smoke tests of the workspace-server stand-in itself (no gateway): its auth tiers read
//! credentials as the real server does, and it records what gin dispatched.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::db;
use crate::support::standin::{
    insert_org_token_with_id, insert_workspace, insert_workspace_token, Standin,
};

const ADMIN: &str = "standin-admin-token";

/// Sends `GET target` byte for byte (no URL normalisation) with `auth` as the Authorization
/// header value; returns the status.
async fn raw_get(standin: &Standin, target: &str, auth: &[u8]) -> u16 {
    let mut s = TcpStream::connect(standin.addr()).await.unwrap();
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: ",
        standin.addr()
    )
    .into_bytes();
    req.extend_from_slice(auth);
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let head = String::from_utf8_lossy(&resp);
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

#[tokio::test]
async fn standin_reads_credentials_and_routes_as_gin_does() {
    let Some(url) = db::postgres_url().await else {
        return;
    };
    let standin = Standin::start(&url, &[("ADMIN_TOKEN", ADMIN)]).await;
    let pool = standin.pool().await;
    let w1 = insert_workspace(&pool, "one", None).await;
    let w2 = insert_workspace(&pool, "two", None).await;
    let w1_token = insert_workspace_token(&pool, w1).await;
    let (org, org_row) = insert_org_token_with_id(&pool, Some(w1), false).await;

    // An org token passes AdminAuth and sets the three context keys.
    assert_eq!(raw_get(&standin, "/workspaces", &bearer(&org)).await, 200);
    let recs = standin.requests().await;
    let last = recs.last().unwrap();
    assert_eq!(last.full_path, "/workspaces");
    assert!(last.handled);
    assert_eq!(last.credential.as_deref(), Some("org-token"));
    assert_eq!(last.context["org_token_id"], org_row.to_string());
    assert_eq!(last.context["org_token_prefix"], org[..8]);
    assert_eq!(last.context["org_id"], w1.to_string());

    // strings.TrimSpace strips a trailing U+00A0 (UTF-8 C2 A0).
    let mut nbsp = bearer(&org);
    nbsp.extend_from_slice("\u{00A0}".as_bytes());
    assert_eq!(raw_get(&standin, "/workspaces", &nbsp).await, 200);
    let recs = standin.requests().await;
    assert_eq!(
        recs.last().unwrap().credential.as_deref(),
        Some("org-token")
    );

    // The prefix is case-sensitive.
    let lower = format!("bearer {org}").into_bytes();
    assert_eq!(raw_get(&standin, "/workspaces", &lower).await, 401);
    assert!(!standin.requests().await.last().unwrap().handled);

    // A workspace token is bound to its own :id.
    let state = |w: uuid::Uuid| format!("/workspaces/{w}/state");
    assert_eq!(raw_get(&standin, &state(w2), &bearer(&w1_token)).await, 401);
    assert_eq!(raw_get(&standin, &state(w1), &bearer(&w1_token)).await, 200);
    let recs = standin.requests().await;
    assert_eq!(
        recs.last().unwrap().credential.as_deref(),
        Some("workspace-token")
    );
    // ...and is no admin credential while ADMIN_TOKEN is set.
    assert_eq!(
        raw_get(&standin, "/workspaces", &bearer(&w1_token)).await,
        401
    );
    assert_eq!(raw_get(&standin, "/workspaces", &bearer(ADMIN)).await, 200);

    // The route dump.
    let routes = standin.routes().await;
    assert!(routes.len() > 100, "{} routes", routes.len());
    let delete = routes
        .iter()
        .find(|r| r.method == "DELETE" && r.path == "/workspaces/:id")
        .expect("DELETE /workspaces/:id registered");
    assert!(delete.destructive);
    assert_eq!(delete.auth, "A");

    // gin does not clean dot segments: this is the files route of W2.
    standin.reset().await;
    let target = format!("/workspaces/{w2}/files/x/../../../{w1}");
    assert_eq!(raw_get(&standin, &target, &bearer(&org)).await, 200);
    let recs = standin.requests().await;
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.request_uri, target);
    assert_eq!(rec.full_path, "/workspaces/:id/files/*path");
    assert_eq!(rec.param("id"), Some(w2.to_string().as_str()));
    assert_eq!(
        rec.param("path"),
        Some(format!("/x/../../../{w1}").as_str())
    );
    assert_eq!(rec.status, 200);
}
