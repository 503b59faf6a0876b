//! Target 4: templates (`gate::template`): parsing any string and rendering any parsed
//! template against any request never panics; text without braces is itself; a parsed
//! template keeps its source.

use std::sync::Arc;

use approval_gateway::caller::{Caller, CallerClass, When};
use approval_gateway::gate::body::Body;
use approval_gateway::gate::{RequestView, Template};
use approval_gateway::route::Params;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use proptest::prelude::*;
use serde_json::{json, Value};

fn source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => prop::sample::select(vec![
            "{", "}", "{{", "}}", "path.", "query.", "header.", "claim.", "body.", "body./",
            "caller", "body_sha256", "?", "id", "x", "a", "~0", "~1", ".", "/", "0", "01",
            "x-a", "X-A", "sub", "{path.id}", "{body.a.b}", "{body./a/0}", "{query.q?none}",
            "{claim.roles}", "{header.x-a}", "{caller}", "{body_sha256}", " ", "\u{e9}",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,4}",
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 0..12).prop_map(|v| v.concat()),
        1 => "\\PC{0,40}",
    ]
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec![
            &br#"{"a":{"b":1},"A":2}"#[..],
            br#"{"a":[{"x":"y"}],"id":"w1","n":1.5,"t":true,"z":null}"#,
            br#"{"a":{"b":"c"}}"#,
            br#"[1,2]"#,
            b"not json",
            b"",
            b"  ",
            br#"{"a":1} trailing"#,
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..16),
    ])
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "q=1",
            "q=%zz",
            "q",
            "x=1;y=2",
            "q=%FF",
            "%71=a+b",
            "=",
            "id=%E2%9C%93",
            "",
        ]),
        0..4,
    )
    .prop_map(|v| v.join("&"))
}

fn claims() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["sub", "roles", "org", "nil", "x"]),
            prop::sample::select(vec![
                json!("agent"),
                json!(42),
                json!(1e300),
                json!(null),
                json!(["a", "<b>"]),
                json!({"k": [true]}),
            ]),
        ),
        0..5,
    )
    .prop_map(|v| v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

proptest! {
    #![proptest_config(crate::cases(1000))]

    #[test]
    fn template_parse_and_render_never_panic(
        src in source(),
        body in body(),
        query in query(),
        claims in claims(),
        header in prop::collection::vec(any::<u8>(), 0..8),
        param in "\\PC{0,6}",
    ) {
        let Ok(t) = Template::parse(&src) else { return Ok(()) };
        prop_assert_eq!(t.source(), src.as_str());
        let mut params = Params::default();
        params.push(Arc::from("id"), param);
        let uri: Uri = format!("/w/1?{query}").parse().unwrap_or_else(|_| Uri::from_static("/"));
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&header) {
            headers.append(HeaderName::from_static("x-a"), v);
        }
        let class = CallerClass {
            name: Arc::from("agent"),
            when: When::All(vec![]),
            gated: true,
            approver: false,
            admin: false,
        };
        let caller = Caller {
            class: Some(Arc::new(class)),
            subject: Some("agent".into()),
            claims,
            actors: vec![],
            recognised: true,
        };
        let req = RequestView {
            method: &Method::DELETE,
            path: "/w/1",
            params: &params,
            uri: &uri,
            headers: &headers,
            caller: &caller,
            body: body.as_deref(),
        };
        let rendered = t.render(&req, &Body::new(body.as_deref()));
        if !src.contains(['{', '}']) {
            // Nothing to resolve: the text renders as itself, whatever the request.
            prop_assert_eq!(rendered.ok(), Some(src.clone()));
        }
    }
}

#[test]
fn template_regressions() {
    for src in [
        "{",
        "}",
        "{{",
        "{body.}",
        "{body./}",
        "{?}",
        "{path.id?}",
        "{header.\u{e9}}",
    ] {
        let _ = Template::parse(src);
    }
    assert_eq!(Template::parse("{{}}").unwrap().source(), "{{}}");
}
