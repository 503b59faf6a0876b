//! Who may call what: credentials, approver-only operations, self-approval, withdraw, and
//! `POST /v1/approvals` by a gated caller.

use approval_gateway::store::{Status, Store};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::admin::{self, agent, approval, mint, new_approval, operator, serve, viewer};

pub(super) async fn credentials_are_required_and_only_approvers_decide(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 1)).await;
    let path = format!("/v1/approvals/{}", a.id);

    let (s, body) = api.call(Method::GET, "/v1/approvals", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"], 401);
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "eve", "role": "admin", "exp": chrono::Utc::now().timestamp() + 60 }),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .expect("token");
    assert_eq!(api.get(&path, &forged).await.0, StatusCode::UNAUTHORIZED);
    let twice = api
        .http
        .get(format!("{}{path}", api.base))
        .header("authorization", format!("Bearer {}", operator("olga")))
        .header("authorization", format!("Bearer {}", operator("olga")))
        .send()
        .await
        .expect("request");
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        api.decide(a.id, &forged, "approve", "").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Verified but not an approver: 403 everywhere an approver is needed.
    assert_eq!(
        api.get("/v1/approvals", &viewer("vic")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get(&path, &viewer("vic")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.decide(a.id, &viewer("vic"), "approve", "").await.0,
        StatusCode::FORBIDDEN
    );
    // A gated caller never decides, even on someone else's request and whatever its claims.
    let gated_admin = mint(json!({ "sub": "zed", "org_token_id": "t", "role": "admin" }));
    assert_eq!(
        api.decide(a.id, &gated_admin, "approve", "").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.decide(a.id, &gated_admin, "bypass", "why").await.0,
        StatusCode::FORBIDDEN
    );
    // ...and reads only its own approvals.
    assert_eq!(api.get(&path, &agent("zed")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.get(&path, &agent("bob")).await.0, StatusCode::OK);

    let (s, got) = api.get(&path, &operator("olga")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(approval(&got).id, a.id);
    assert_eq!(
        api.get("/v1/approvals/not-a-uuid", &operator("olga"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let missing = format!("/v1/approvals/{}", uuid::Uuid::now_v7());
    assert_eq!(
        api.get(&missing, &operator("olga")).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = api
        .call(
            Method::POST,
            &format!("{path}/decisions"),
            Some(&operator("olga")),
            Some(json!({ "decision": "maybe" })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

pub(super) async fn self_approval_is_forbidden_by_subject_and_by_act_chain(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    // bob asked, through agent-7 acting for him.
    let a = api
        .pending(&new_approval("ws-1", "bob", &["agent-7"], 1))
        .await;
    for (who, token) in [
        ("the requester itself", operator("bob")),
        (
            "the agent that acted for the requester",
            operator("agent-7"),
        ),
        (
            "the requester acting through another's token",
            mint(json!({ "sub": "carol", "role": "operator", "act": { "sub": "bob" } })),
        ),
        (
            "the same agent acting for someone else",
            mint(json!({ "sub": "dave", "role": "operator", "act": { "sub": "agent-7" } })),
        ),
        ("an admin who is the requester", admin::admin("bob")),
    ] {
        let (s, body) = api.decide(a.id, &token, "approve", "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}: {body}");
    }
    assert_eq!(
        api.decide(a.id, &admin::admin("bob"), "bypass", "urgent")
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // A request made through the API by an agent acting for bob carries the chain too.
    let body =
        json!({ "action": "rotate_keys", "scope": "ws-2", "reason": "rotate", "context": {} });
    let token = mint(json!({ "sub": "bob", "org_token_id": "t", "act": { "sub": "agent-9" } }));
    let (s, made) = api
        .call(Method::POST, "/v1/approvals", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let made = approval(&made);
    assert_eq!(
        (made.requester.as_str(), made.requester_actors.clone()),
        ("bob", vec!["agent-9".to_owned()])
    );
    assert_eq!(
        api.decide(made.id, &operator("agent-9"), "approve", "")
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let (s, body) = api
        .decide(a.id, &operator("alice"), "approve", "fine")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(approval(&body).status, Status::Approved);
}

pub(super) async fn only_the_requester_withdraws(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let a = api.pending(&new_approval("ws-1", "bob", &[], 1)).await;
    assert_eq!(
        api.withdraw(a.id, &agent("mallory")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.withdraw(a.id, &operator("bob")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.withdraw(a.id, &admin::admin("root")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(
            Method::POST,
            &format!("/v1/approvals/{}/withdraw", a.id),
            None,
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, body) = api.withdraw(a.id, &agent("bob")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(approval(&body).status, Status::Withdrawn);
    assert_eq!(
        api.withdraw(a.id, &agent("bob")).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api.withdraw(uuid::Uuid::now_v7(), &agent("bob")).await.0,
        StatusCode::NOT_FOUND
    );
}

pub(super) async fn requesting_approval_creates_then_deduplicates(store: Store) {
    let api = serve(store, admin::policy(1)).await;
    let body = json!({ "action": "drop_db", "scope": "ws-9", "reason": "cleanup", "context": { "db": "x" } });
    let (s, first) = api
        .call(
            Method::POST,
            "/v1/approvals",
            Some(&agent("bob")),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let first = approval(&first);
    assert_eq!(
        (
            first.status,
            first.requester.as_str(),
            first.caller.as_deref()
        ),
        (Status::Pending, "bob", Some("agent"))
    );
    assert_eq!(
        first.request_hash,
        approval_gateway::gate::hash::request_hash("ws-9", "drop_db", &json!({ "db": "x" }))
    );
    assert_eq!(first.context, json!({ "db": "x" }));

    let (s, again) = api
        .call(
            Method::POST,
            "/v1/approvals",
            Some(&agent("bob")),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(approval(&again).id, first.id);

    let other = json!({ "action": "drop_db", "scope": "ws-9", "reason": "cleanup" });
    let (s, no_context) = api
        .call(
            Method::POST,
            "/v1/approvals",
            Some(&agent("bob")),
            Some(other),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(approval(&no_context).context, json!({}));

    for token in [operator("alice"), admin::admin("root"), viewer("vic")] {
        assert_eq!(
            api.call(
                Method::POST,
                "/v1/approvals",
                Some(&token),
                Some(body.clone())
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
    }
    for bad in [
        json!({ "action": "x" }),
        json!({ "action": "x", "scope": "s", "reason": "r", "context": [1] }),
        json!({ "action": "", "scope": "s", "reason": "r" }),
    ] {
        assert_eq!(
            api.call(
                Method::POST,
                "/v1/approvals",
                Some(&agent("bob")),
                Some(bad)
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );
    }
}
