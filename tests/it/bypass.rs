//! The hostile corpus: each test is a way around the gate that a review found or tried, and
//! each asserts on what the recording upstream received, not only on the gateway's answer.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::gateway::{agent, approve_in, start, start_with_env, token, Backend, Gateway};
use crate::support::raw;

async fn approve_via_store(gw: &Gateway, id: &str) {
    approve_in(&gw.store, id, "alice").await;
}

async fn pending(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: Value = resp.json().await.unwrap();
    body["approval_id"].as_str().unwrap().to_owned()
}

async fn del(gw: &Gateway, path: &str, bearer: &str) -> reqwest::Response {
    gw.client
        .delete(gw.url(path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

/// An approval for `DELETE /workspaces/W` never executes `?confirm=true&purge=true` (cascade
/// and hard purge on the workspace-server): the query is part of what was approved.
#[tokio::test]
async fn an_approval_for_one_query_never_executes_another() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    let plain = pending(del(&gw, "/workspaces/w1", &agent).await).await;
    approve_via_store(&gw, &plain).await;
    let purge = pending(del(&gw, "/workspaces/w1?confirm=true&purge=true", &agent).await).await;
    assert_ne!(purge, plain, "its own approval");
    let shown: Value = gw
        .store
        .get(
            approval_gateway::store::ApprovalId::parse(&purge).unwrap(),
            chrono::Utc::now(),
        )
        .await
        .unwrap()
        .map(|a| a.context)
        .unwrap();
    assert_eq!(
        shown["request"]["query"],
        json!({"confirm": ["true"], "purge": ["true"]}),
        "the human sees the query"
    );
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    let r = del(&gw, "/workspaces/w1", &agent).await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen = gw.upstream.wait_for_requests(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/workspaces/w1");
    gw.stop().await;
}

/// Another agent sending the identical request gets its own approval; only the requester
/// consumes the approved one.
#[tokio::test]
async fn an_approval_is_consumed_only_by_its_requester() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let one = agent();
    let two = token(json!({"sub": "agent-2", "org_token_id": "tok-2"}));
    let id = pending(del(&gw, "/workspaces/w1", &one).await).await;
    approve_via_store(&gw, &id).await;
    let other = pending(del(&gw, "/workspaces/w1", &two).await).await;
    assert_ne!(other, id, "agent-2 does not consume agent-1's approval");
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    let r = del(&gw, "/workspaces/w1", &one).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["approval-id"].to_str().unwrap(), id);
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

/// gin routes `DELETE /workspaces/W2/files/x/../../../W1` to the file route of W2; a gateway
/// that cleaned it would decide on `DELETE /workspaces/W1` (or, with a `mode = "off"` route,
/// on nothing at all). A gated caller's ambiguous path is refused, never decided on one reading.
#[tokio::test]
async fn dot_segments_never_reach_another_route() {
    let extra = r#"
[[routes]]
action = "cache_clear"
method = "DELETE"
path = "/workspaces/{id}/cache"
scope = "{path.id}"
mode = "off"

[[routes]]
action = "file_delete"
method = "DELETE"
path = "/workspaces/{id}/files/{*path}"
scope = "{path.id}"

[[routes]]
action = "plugin_allowlist_write"
method = "PUT"
path = "/orgs/{id}/plugins/allowlist"
scope = "{path.id}"
"#;
    let gw = start("enforce", Backend::Sqlite, extra).await;
    let auth = raw::bearer(&agent());
    for target in [
        "/workspaces/w2/files/x/../../../w1",
        "/workspaces/w2/files/x/../../../w1/cache",
        "/workspaces/w2/files/x/%2e%2e/%2E%2E/../w1/cache",
        "/workspaces/w2/files/x/..%2F..%2F..%2Fw1",
    ] {
        let r = raw::send(gw.proxy, "DELETE", target.as_bytes(), &[&auth], b"").await;
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        assert!(r.body.contains("ambiguous-path"), "{target}");
    }
    // gin matches `{id}` against the empty segment of `/orgs//plugins/allowlist` and runs the
    // handler; a reading that dropped it matched no rule and let it pass.
    let r = raw::send(
        gw.proxy,
        "PUT",
        b"/orgs//plugins/allowlist",
        &[&auth],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}

/// `X%FF` and `X%FE` must not share an approval (lossy decoding made them both `X\u{FFFD}`).
#[tokio::test]
async fn invalid_utf8_in_a_gated_path_is_refused() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let auth = raw::bearer(&agent());
    for target in [
        "/workspaces/X%FF",
        "/workspaces/X%FE",
        "/workspaces/%C0",
        "/workspaces/%EF%BF%BD%C0",
    ] {
        let r = raw::send(gw.proxy, "DELETE", target.as_bytes(), &[&auth], b"").await;
        assert_eq!(r.status, 400, "{target}");
    }
    // Valid UTF-8, escaped: decoded exactly, one approval each.
    let r = raw::send(gw.proxy, "DELETE", b"/workspaces/%EF%BF%BD", &[&auth], b"").await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}

/// The workspace-server trims the bearer with Go's `strings.TrimSpace`, so
/// `Bearer <org token><U+00A0>` authenticates as the org token: it must be gated.
#[tokio::test]
async fn a_bearer_padded_with_unicode_space_is_still_the_credential() {
    let extra = r#"
[[token_sources]]
name = "org-token"
kind = "env"
env = "TEST_ORG_TOKEN"
claims = { org_token_id = "t9", sub = "org-token:t9" }
"#;
    let gw = start_with_env(
        "enforce",
        Backend::Sqlite,
        extra,
        &[("TEST_ORG_TOKEN", "org-secret-43-chars")],
    )
    .await;
    for pad in ["\u{a0}", "\u{3000}", "\u{2009}", "\u{85}"] {
        let header = format!("Authorization: Bearer {pad}org-secret-43-chars{pad}");
        let r = raw::send(
            gw.proxy,
            "DELETE",
            b"/workspaces/w1",
            &[header.as_bytes()],
            b"",
        )
        .await;
        assert_eq!(r.status, 202, "pad {pad:?}: {}", r.body);
    }
    // Not UTF-8: the gateway cannot read it as Go would, so it refuses.
    let r = raw::send(
        gw.proxy,
        "DELETE",
        b"/workspaces/w1",
        &[b"Authorization: Bearer org-secret-43-chars\xff"],
        b"",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    // Off the gated routes such a header is the upstream's business.
    let r = raw::send(
        gw.proxy,
        "GET",
        b"/workspaces/w1",
        &[b"Authorization: Bearer org-secret-43-chars\xff"],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

/// Two `Authorization` fields: Go reads the first, others might read the last. Refused.
#[tokio::test]
async fn two_authorization_headers_are_refused_on_gated_routes() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let a = raw::bearer(&agent());
    let r = raw::send(
        gw.proxy,
        "DELETE",
        b"/workspaces/w1",
        &[b"Authorization: Bearer nobody", &a],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}

/// A JSON body whose key appears twice in some letter case binds differently depending on
/// member order in Go: never one approval for both orders.
#[tokio::test]
async fn bodies_go_could_read_two_ways_are_refused() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    for body in [
        r#"{"key":"A","KEY":"B","value":"v"}"#,
        r#"{"key":"A","value":"v","value":"w"}"#,
        "{\"key\":\"A\",\"value\":\"v\",\"\u{212a}ey\":\"B\"}",
    ] {
        let r = gw
            .client
            .put(gw.url("/workspaces/w1/secrets"))
            .bearer_auth(agent())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}

/// Request-target and method forms: the absolute form is gated like the origin form and
/// reaches the upstream in origin form; a lower-case method is another method (gin routes
/// `delete` nowhere), so it passes as the unknown method it is; `HEAD` is not `DELETE`.
#[tokio::test]
async fn request_target_and_method_forms() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let auth = raw::bearer(&agent());
    let r = raw::send(
        gw.proxy,
        "DELETE",
        b"http://elsewhere.example/workspaces/w1",
        &[&auth],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "absolute form: {}", r.body);
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    let r = raw::send(gw.proxy, "delete", b"/workspaces/w1", &[&auth], b"").await;
    assert_eq!(r.status, 200, "not the DELETE method: {}", r.body);
    let seen = gw.upstream.wait_for_requests(1).await;
    assert_eq!(
        seen[0].method.as_str(),
        "delete",
        "the upstream sees the same method"
    );
    gw.stop().await;
}

/// Pipelined gated requests are each decided on their own: after one approval, two identical
/// pipelined requests execute once.
#[tokio::test]
async fn pipelined_requests_consume_one_approval_once() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    let one = format!(
        "DELETE /workspaces/w1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {agent}\r\n\r\n"
    );
    let two = format!(
        "{one}{}",
        one.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    );
    let text = raw::exchange(gw.proxy, two.as_bytes(), std::time::Duration::from_secs(10)).await;
    assert_eq!(raw::statuses(&text), [202, 202], "{text}");
    let id = text
        .split("\"approval_id\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    approve_via_store(&gw, &id).await;
    let text = raw::exchange(gw.proxy, two.as_bytes(), std::time::Duration::from_secs(10)).await;
    assert_eq!(raw::statuses(&text), [200, 202], "{text}");
    assert_eq!(gw.upstream.wait_for_requests(1).await.len(), 1);
    gw.stop().await;
}

/// Smuggling shapes never reach the upstream as a second request, and a gated request hidden
/// in a pass-through body stays a body.
#[tokio::test]
async fn smuggling_shapes_are_refused() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let agent = agent();
    for head in [
        "POST /h HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /h HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody",
        "POST /h HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST /h HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST /h HTTP/1.1\r\nHost: gw\r\nContent-Length: +4\r\n\r\nbody",
    ] {
        let smuggled = format!(
            "{head}DELETE /workspaces/w1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {agent}\r\n\r\n"
        );
        let text =
            raw::exchange(gw.proxy, smuggled.as_bytes(), std::time::Duration::from_secs(5)).await;
        // Refused, or read one way (hyper: chunked wins over Content-Length and the connection
        // closes after the answer), and then the DELETE behind it is either never read or
        // gated like any other request.
        let statuses = raw::statuses(&text);
        assert!(
            statuses.iter().skip(1).all(|s| *s == 202),
            "{head:?}: {text}"
        );
    }
    // Whatever the gateway made of those, no DELETE reached the upstream, and nothing it
    // forwarded carries two framings the upstream could read otherwise.
    let seen = gw.upstream.wait_for_requests(0).await;
    assert!(
        seen.iter().all(|r| r.method != reqwest::Method::DELETE),
        "{seen:?}"
    );
    for r in &seen {
        let cl = r.headers.get_all("content-length").iter().count();
        let te = r.headers.contains_key("transfer-encoding");
        assert!(cl <= 1 && !(cl == 1 && te), "{:?}", r.headers);
    }
    // A request inside a body is a body.
    let inner = format!(
        "DELETE /workspaces/w1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {agent}\r\n\r\n"
    );
    let outer = format!(
        "POST /h HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    let text = raw::exchange(
        gw.proxy,
        outer.as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw::statuses(&text), [200], "{text}");
    let seen = gw.upstream.wait_for_requests(1).await;
    assert!(seen.iter().all(|r| r.method == reqwest::Method::POST));
    assert_eq!(&seen.last().unwrap().body[..], inner.as_bytes());
    gw.stop().await;
}

/// Upgrades on a gated route: `h2c` and WebSocket do not skip the gate (the gateway speaks
/// HTTP/1.1 only; an HTTP/2 preface is not a request).
#[tokio::test]
async fn upgrades_do_not_skip_the_gate() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let auth = raw::bearer(&agent());
    for extra in [&b"Upgrade: h2c"[..], b"Upgrade: websocket"] {
        let r = raw::send(
            gw.proxy,
            "DELETE",
            b"/workspaces/w1",
            &[
                &auth,
                b"Connection: Upgrade",
                extra,
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                b"Sec-WebSocket-Version: 13",
                b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
            ],
            b"",
        )
        .await;
        assert_eq!(
            r.status,
            202,
            "{:?}: {}",
            String::from_utf8_lossy(extra),
            r.body
        );
    }
    let text = raw::exchange(
        gw.proxy,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(!text.contains(" 200 "), "{text}");
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}

/// A large head is decided like any other; a giant one is refused before anything is decided
/// or forwarded.
#[tokio::test]
async fn giant_heads_are_refused() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let auth = raw::bearer(&agent());
    let large = format!("X-Filler: {}", "a".repeat(100 * 1024));
    let r = raw::send(
        gw.proxy,
        "DELETE",
        b"/workspaces/w1",
        &[&auth, large.as_bytes()],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "a large head is still gated");
    let giant = format!("X-Filler: {}", "a".repeat(1024 * 1024));
    let r = raw::send(
        gw.proxy,
        "DELETE",
        b"/workspaces/w1",
        &[&auth, giant.as_bytes()],
        b"",
    )
    .await;
    assert!(
        r.status == 431 || r.status == 400 || r.status == 0,
        "{}",
        r.status
    );
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}

/// A gated credential that names nobody would share its requester (the class name) with every
/// other such credential, and so their approvals: it is refused.
#[tokio::test]
async fn a_gated_credential_without_a_subject_is_refused() {
    let gw = start("enforce", Backend::Sqlite, "").await;
    let nameless = token(json!({"org_token_id": "tok-x"}));
    let r = del(&gw, "/workspaces/w1", &nameless).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let listed = gw
        .client
        .get(format!("http://{}/v1/approvals", gw.admin))
        .bearer_auth(&nameless)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        StatusCode::UNAUTHORIZED,
        "the API refuses it too"
    );
    assert!(gw.upstream.wait_for_requests(0).await.is_empty());
    gw.stop().await;
}
