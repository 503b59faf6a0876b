//! Tests for `Callers::classify`: header handling, opaque sources, class order, subject and
//! `act` chain. The `Sql` source is tested against the real Postgres in its own database.

use std::sync::Arc;

use http::{header::AUTHORIZATION, HeaderMap, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use super::jwt::tests::{hs_token, hs_verifier};
use super::*;

const NOW: u64 = 1_700_000_000;

fn class(name: &str, when: When, gated: bool) -> Arc<CallerClass> {
    Arc::new(CallerClass {
        name: name.into(),
        when,
        gated,
        approver: !gated,
        admin: false,
    })
}

fn present(c: &str) -> When {
    When::Present { claim: c.into() }
}

fn callers(sources: Vec<TokenSource>) -> Callers {
    Callers {
        classes: vec![
            class("agent", present("org_token_id"), true),
            class("operator", present("cp_session_actor"), false),
            class("anyone", When::All(vec![]), false),
        ],
        jwt: Some(hs_verifier()),
        sources,
        subject_claim: "sub".into(),
    }
}

fn env_source(token: &str, claims: Value) -> TokenSource {
    let claims = claims.as_object().cloned().unwrap_or_default();
    TokenSource {
        name: "env".into(),
        kind: TokenSourceKind::Env {
            token: token.as_bytes().to_vec(),
            claims,
        },
    }
}

fn headers(auth: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for a in auth {
        h.append(AUTHORIZATION, HeaderValue::from_str(a).expect("header"));
    }
    h
}

/// The class name a header set classifies to, or the error.
type Expected = Result<Option<&'static str>, CallerError>;

async fn classify(c: &Callers, auth: &[&str]) -> Result<Caller, CallerError> {
    c.classify(&headers(auth), NOW).await
}

#[tokio::test]
async fn authorization_header_table() {
    let c = callers(vec![]);
    let jwt = format!(
        "Bearer {}",
        hs_token(&json!({"sub": "x", "org_token_id": "t1"}))
    );
    let lower = jwt.replacen("Bearer", "bearer", 1);
    let cases: Vec<(&str, Vec<&str>, Expected)> = vec![
        ("no header", vec![], Ok(None)),
        (
            "duplicate",
            vec!["Bearer a", "Bearer b"],
            Err(CallerError::DuplicateAuthorization),
        ),
        ("basic scheme", vec!["Basic dXNlcjpwYXNz"], Ok(None)),
        ("empty bearer", vec!["Bearer "], Ok(None)),
        ("bare scheme", vec!["Bearer"], Ok(None)),
        ("opaque not recognised", vec!["Bearer org_abc123"], Ok(None)),
        ("jwt", vec![jwt.as_str()], Ok(Some("agent"))),
        // The upstream requires the exact prefix `Bearer `: it sees no bearer here either.
        ("lowercase scheme", vec![lower.as_str()], Ok(None)),
        (
            "bad jwt",
            vec!["Bearer aa.bb.cc"],
            Err(CallerError::Rejected("malformed header")),
        ),
    ];
    for (name, auth, want) in cases {
        let got = classify(&c, &auth).await;
        let got = got.map(|caller| caller.class_name().map(str::to_owned));
        assert_eq!(got, want.map(|w| w.map(str::to_owned)), "{name}");
    }
}

#[tokio::test]
async fn jwt_shaped_bearer_without_jwt_config_is_not_gated() {
    let c = Callers {
        jwt: None,
        ..callers(vec![])
    };
    let caller = classify(&c, &["Bearer aa.bb.cc"]).await.expect("ok");
    assert!(caller.class.is_none() && !caller.is_gated());
}

#[tokio::test]
async fn env_source_match_and_mismatch() {
    let c = callers(vec![env_source(
        "s3cret-admin",
        json!({"org_token_id": "admin", "sub": "ops"}),
    )]);
    let hit = classify(&c, &["Bearer s3cret-admin"]).await.expect("ok");
    assert_eq!(hit.class_name(), Some("agent"));
    assert_eq!(hit.subject.as_deref(), Some("ops"));
    let miss = classify(&c, &["Bearer s3cret-admiN"]).await.expect("ok");
    assert!(miss.class.is_none());
}

/// Go's `strings.TrimSpace` removes Unicode white space around the token, so the upstream
/// authenticates `Bearer <token><U+00A0>` as `<token>`: the gateway must classify it so too.
#[tokio::test]
async fn bearer_is_trimmed_of_unicode_space_like_go() {
    let c = callers(vec![env_source(
        "s3cret-admin",
        json!({"org_token_id": "admin"}),
    )]);
    for pad in [
        "\u{a0}", "\u{85}", "\u{2000}", "\u{200a}", "\u{3000}", "\u{2028}", "\u{205f}", "\u{1680}",
        "\u{202f}", "\t", " ",
    ] {
        let value = format!("Bearer {pad}s3cret-admin{pad}");
        let mut h = HeaderMap::new();
        h.append(
            AUTHORIZATION,
            HeaderValue::from_bytes(value.as_bytes()).expect("header"),
        );
        let hit = c.classify(&h, NOW).await.expect("ok");
        assert_eq!(hit.class_name(), Some("agent"), "pad {pad:?}");
        assert!(hit.recognised);
    }
    // U+200B (zero width space) is not white space for Go either: not the token.
    let mut h = HeaderMap::new();
    let value = "Bearer s3cret-admin\u{200b}";
    h.append(
        AUTHORIZATION,
        HeaderValue::from_bytes(value.as_bytes()).expect("header"),
    );
    let miss = c.classify(&h, NOW).await.expect("ok");
    assert!(miss.class.is_none() && !miss.recognised);
}

#[tokio::test]
async fn undecodable_authorization_is_an_error() {
    let c = callers(vec![]);
    let mut h = HeaderMap::new();
    h.append(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer tok\xff\xfe").expect("header"),
    );
    assert_eq!(
        c.classify(&h, NOW).await.err(),
        Some(CallerError::Undecodable)
    );
}

#[test]
fn env_token_is_not_in_debug_output() {
    let c = callers(vec![env_source("s3cret-admin", json!({}))]);
    assert!(!format!("{c:?}").contains("s3cret"));
    assert!(!format!("{c:?}").contains("115, 51"), "no byte dump either");
}

#[tokio::test]
async fn first_matching_class_wins() {
    let c = callers(vec![]);
    let both = hs_token(&json!({"org_token_id": "t", "cp_session_actor": "p"}));
    let caller = classify(&c, &[&format!("Bearer {both}")])
        .await
        .expect("ok");
    assert_eq!(caller.class_name(), Some("agent"));
    let op = hs_token(&json!({"cp_session_actor": "p"}));
    let caller = classify(&c, &[&format!("Bearer {op}")]).await.expect("ok");
    assert_eq!(caller.class_name(), Some("operator"));
    assert!(caller.is_approver());
    let plain = hs_token(&json!({}));
    let caller = classify(&c, &[&format!("Bearer {plain}")])
        .await
        .expect("ok");
    assert_eq!(caller.class_name(), Some("anyone"), "empty All holds");
}

#[tokio::test]
async fn subject_act_chain_and_requester_fallback() {
    let c = callers(vec![]);
    let token = hs_token(&json!({
        "sub": 42, "org_token_id": "t", "act": {"sub": "agent", "act": {"sub": "person"}}
    }));
    let caller = classify(&c, &[&format!("Bearer {token}")])
        .await
        .expect("ok");
    assert_eq!(caller.subject.as_deref(), Some("42"));
    assert_eq!(caller.actors, vec!["agent".to_owned(), "person".to_owned()]);
    assert_eq!(caller.requester(), "42");
    let no_sub = hs_token(&json!({"org_token_id": "t"}));
    let caller = classify(&c, &[&format!("Bearer {no_sub}")])
        .await
        .expect("ok");
    assert_eq!(caller.requester(), "agent");
    assert_eq!(Caller::anonymous().requester(), "anonymous");
}

#[test]
fn hs_only_settings_reject_rs_listed_without_key() {
    let s = super::jwt::tests::settings(vec![Algorithm::RS256]);
    assert!(JwtVerifier::new(s).is_err());
}

#[path = "tests_pg.rs"]
mod pg;
