//! Table tests for template parsing and rendering.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Uri};
use serde_json::json;

use super::*;
use crate::caller::{Caller, CallerClass, When};
use crate::route::Params;

struct Req {
    params: Params,
    uri: Uri,
    headers: HeaderMap,
    caller: Caller,
    body: Vec<u8>,
}

fn req() -> Req {
    let mut params = Params::default();
    params.push(Arc::from("id"), "ws-1".to_owned());
    params.push(Arc::from("key"), "a b/c".to_owned());
    let mut headers = HeaderMap::new();
    headers.append("x-confirm-name", HeaderValue::from_static("Org Concierge"));
    headers.append("x-confirm-name", HeaderValue::from_static("second"));
    headers.append(
        "x-utf8",
        HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
    );
    headers.append("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    let class = CallerClass {
        name: Arc::from("platform-agent"),
        when: When::Present {
            claim: "org_token_id".into(),
        },
        gated: true,
        approver: false,
        admin: false,
    };
    let claims =
        json!({"sub": "agent-7", "org": 42, "admin": false, "nil": null, "roles": ["a", "<b>"]});
    let caller = Caller {
        class: Some(Arc::new(class)),
        subject: Some("agent-7".into()),
        claims: claims.as_object().unwrap().clone(),
        actors: vec![],
        recognised: true,
    };
    Req {
        params,
        uri: Uri::from_static(
            "/workspaces/ws-1?name=a+b%2Fc&name=second&bad=%zz&x=1;y=2&e=&flag&%6Bey=%E2%9C%93&lat=%E9",
        ),
        headers,
        caller,
        body: br#"{"key":"OPENAI_API_KEY","n":3}"#.to_vec(),
    }
}

fn render(template: &str, r: &Req) -> Result<String, GateError> {
    let view = RequestView {
        method: &http::Method::POST,
        path: "/workspaces/ws-1",
        params: &r.params,
        uri: &r.uri,
        headers: &r.headers,
        caller: &r.caller,
        body: Some(&r.body),
    };
    Template::parse(template)
        .unwrap()
        .render(&view, &Body::new(view.body))
}

#[test]
fn renders_each_source() {
    let r = req();
    let cases: &[(&str, &str)] = &[
        ("plain text", "plain text"),
        ("", ""),
        ("{path.id}", "ws-1"),
        ("delete workspace {path.id}", "delete workspace ws-1"),
        ("{path.key}|{path.nope}", "a b/c|"),
        ("{query.name}", "a b/c"),
        ("{query.key}", "\u{2713}"),
        (
            "[{query.bad}][{query.x}][{query.e}][{query.flag}][{query.absent}]",
            "[][][][][]",
        ),
        ("{query.lat}", "\u{fffd}"),
        ("{header.X-Confirm-Name}", "Org Concierge"),
        ("{header.x-utf8}", "caf\u{e9}"),
        ("{header.x-absent}", ""),
        (
            "{claim.sub}/{claim.org}/{claim.admin}/{claim.nil}/{claim.absent}",
            "agent-7/42/false//",
        ),
        ("{claim.roles}", r#"["a","\u003cb\u003e"]"#),
        ("{caller}", "platform-agent"),
        (
            "write secret {body.key} ({body./n})",
            "write secret OPENAI_API_KEY (3)",
        ),
        ("{{literal}} {{{path.id}}} }}", "{literal} {ws-1} }"),
    ];
    for (template, want) in cases {
        assert_eq!(
            render(template, &r).as_deref(),
            Ok(*want),
            "template {template:?}"
        );
    }
}

#[test]
fn render_errors_are_typed() {
    let r = req();
    assert_eq!(
        render("{header.x-latin1}", &r),
        Err(GateError::HeaderNotUtf8 {
            header: "x-latin1".into()
        })
    );
    assert_eq!(
        render("{body.value}", &r),
        Err(GateError::FieldMissing {
            field: "body.value".into()
        })
    );
}

#[test]
fn anonymous_caller_renders_empty() {
    let mut r = req();
    r.caller = Caller::anonymous();
    assert_eq!(render("[{caller}][{claim.sub}]", &r).as_deref(), Ok("[][]"));
}

#[test]
fn parse_errors_name_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("{path}", "unknown reference `{path}`"),
        ("{nope.x}", "unknown reference source `nope`"),
        ("{Path.id}", "unknown reference source `Path`"),
        ("{path.}", "without a name"),
        ("{}", "unknown reference `{}`"),
        ("{caller.name}", "unknown reference source `caller`"),
        ("a {path.id", "unclosed `{`"),
        ("a } b", "lone `}`"),
        ("{path.{id}}", "`{` inside a reference"),
        ("{header.bad name}", "invalid header name"),
        ("{body.}", "without a name"),
        ("{body.a..b}", "empty field name"),
    ];
    for (template, want) in cases {
        let err = Template::parse(template).unwrap_err().to_string();
        assert!(
            err.contains(want),
            "template {template:?}: error {err:?} lacks {want:?}"
        );
        assert!(
            err.contains(&format!("{template:?}")),
            "error {err:?} names the template"
        );
    }
}

#[test]
fn reports_path_params_and_body_need() {
    let t = Template::parse("{path.id}-{query.q}-{path.key}").unwrap();
    assert_eq!(t.path_params().collect::<Vec<_>>(), ["id", "key"]);
    assert!(!t.needs_body());
    assert!(Template::parse("x {body./a/b}").unwrap().needs_body());
    assert!(!Template::parse("{{body.a}}").unwrap().needs_body());
    assert_eq!(Template::parse("{{x}}").unwrap().source(), "{{x}}");
}

#[test]
fn optional_references_render_their_default_when_absent() {
    let r = req();
    let cases = [
        ("{body.reset?false}", "false"),
        ("{body.n?0}", "3"),
        ("{query.confirm?no}", "no"),
        ("{query.flag?no}", ""),
        ("{query.e?x}", ""),
        ("{claim.nil?none}", "none"),
        ("{claim.sub?none}", "agent-7"),
        ("{header.x-absent?-}", "-"),
    ];
    for (template, want) in cases {
        assert_eq!(render(template, &r).unwrap(), want, "{template}");
    }
    let mut empty = req();
    empty.body.clear();
    assert_eq!(render("{body.reset?false}", &empty).unwrap(), "false");
    assert!(matches!(
        render("{body.reset}", &empty),
        Err(GateError::BodyNotJson { .. })
    ));
    assert!(Template::parse("{caller?x}").is_err());
}

#[test]
fn body_sha256_is_the_raw_body_digest() {
    let r = req();
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&r.body));
    assert_eq!(render("{body_sha256}", &r).unwrap(), want);
    assert!(Template::parse("{body_sha256}").unwrap().needs_body());
}
