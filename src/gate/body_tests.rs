//! Table tests for Go-compatible body field binding.

use super::*;

fn render(body: &str, pointer: &str) -> Result<String, GateError> {
    let ptr = BodyPointer::parse(pointer).unwrap();
    let body = Body::new(Some(body.as_bytes()));
    let mut out = String::new();
    body.render(&ptr, &mut out).map(|()| out)
}

fn ok(s: &str) -> Result<String, GateError> {
    Ok(s.to_owned())
}

#[test]
fn binds_fields_like_go_encoding_json() {
    let f = |field: &str| field.to_owned();
    let cases: &[(&str, &str, Result<String, GateError>)] = &[
        (r#"{"key":"K1","value":"v"}"#, "key", ok("K1")),
        (r#"{"KEY":"K1"}"#, "key", ok("K1")),
        (r#"{"Key":"K1"}"#, "KEY", ok("K1")),
        ("{\"\u{212A}ey\":\"K1\"}", "key", ok("K1")),
        ("{\"\u{212A}EY\":\"K1\"}", "Key", ok("K1")),
        ("{\"\u{17F}ecret\":\"x\"}", "secret", ok("x")),
        (
            "{\"\u{212A}ey\":\"K1\"}",
            "sey",
            Err(GateError::FieldMissing {
                field: f("body.sey"),
            }),
        ),
        // Go 1.21+ foldName: dotless i folds to `I`; dotted capital I folds to `i`, never `I`.
        ("{\"\u{131}d\":\"x\"}", "id", ok("x")),
        (
            "{\"\u{130}d\":\"x\"}",
            "id",
            Err(GateError::FieldMissing {
                field: f("body.id"),
            }),
        ),
        (
            "{\"key\":\"a\",\"\u{212A}EY\":\"b\"}",
            "KEY",
            Err(GateError::FieldAmbiguous {
                field: f("body.KEY"),
            }),
        ),
        (r#"{"key_1":"x"}"#, "KEY_1", ok("x")),
        (
            r#"{"key-1":"x"}"#,
            "key_1",
            Err(GateError::FieldMissing {
                field: f("body.key_1"),
            }),
        ),
        (
            r#"{"key":"a","key":"b"}"#,
            "key",
            Err(GateError::FieldAmbiguous {
                field: f("body.key"),
            }),
        ),
        (
            r#"{"key":"a","KEY":"b"}"#,
            "key",
            Err(GateError::FieldAmbiguous {
                field: f("body.key"),
            }),
        ),
        (
            "{\"key\":\"a\",\"\u{212A}ey\":\"b\"}",
            "key",
            Err(GateError::FieldAmbiguous {
                field: f("body.key"),
            }),
        ),
        (
            r#"{"key":"a","keys":"b","value":{"key":"c"}}"#,
            "key",
            ok("a"),
        ),
        (r#"{"a":{"b":"deep"}}"#, "a.b", ok("deep")),
        (r#"{"A":{"B":"deep"}}"#, "/a/b", ok("deep")),
        (r#"{"a/b":{"c~d":"esc"}}"#, "/a~1b/c~0d", ok("esc")),
        (
            r#"{"a":{"b":1},"A":{"b":2}}"#,
            "a.b",
            Err(GateError::FieldAmbiguous {
                field: f("body.a.b"),
            }),
        ),
        (
            r#"{"a":{"b":"x","B":"y"}}"#,
            "/a/b",
            Err(GateError::FieldAmbiguous {
                field: f("body./a/b"),
            }),
        ),
        (
            r#"{"a":"flat"}"#,
            "a.b",
            Err(GateError::FieldMissing {
                field: f("body.a.b"),
            }),
        ),
        (
            r#"{"items":[{"name":"n0"},{"name":"n1"}]}"#,
            "items.1.name",
            ok("n1"),
        ),
        (
            r#"{"items":[{"name":"n0"}]}"#,
            "items.01.name",
            Err(GateError::FieldMissing {
                field: f("body.items.01.name"),
            }),
        ),
        (
            r#"{"value":"v"}"#,
            "key",
            Err(GateError::FieldMissing {
                field: f("body.key"),
            }),
        ),
        (
            r#"{"key":null}"#,
            "key",
            Err(GateError::FieldMissing {
                field: f("body.key"),
            }),
        ),
        (r#"{"key":""}"#, "key", ok("")),
        (r#"{"key":42}"#, "key", ok("42")),
        (r#"{"key":1.50}"#, "key", ok("1.5")),
        (r#"{"key":1e21}"#, "key", ok("1e+21")),
        (r#"{"key":true}"#, "key", ok("true")),
        (r#"{"key":false}"#, "key", ok("false")),
        (
            r#"{"key":{"a":1}}"#,
            "key",
            Err(GateError::FieldNotScalar {
                field: f("body.key"),
            }),
        ),
        (
            r#"{"key":[1]}"#,
            "key",
            Err(GateError::FieldNotScalar {
                field: f("body.key"),
            }),
        ),
        (
            r#"[{"key":"a"}]"#,
            "key",
            Err(GateError::BodyNotJson {
                field: f("body.key"),
            }),
        ),
        (
            r#""key""#,
            "key",
            Err(GateError::BodyNotJson {
                field: f("body.key"),
            }),
        ),
        (
            "key=a",
            "key",
            Err(GateError::BodyNotJson {
                field: f("body.key"),
            }),
        ),
        (
            "",
            "key",
            Err(GateError::BodyNotJson {
                field: f("body.key"),
            }),
        ),
        (
            r#"{"key":"a"} {"key":"b"}"#,
            "key",
            Err(GateError::BodyNotJson {
                field: f("body.key"),
            }),
        ),
        ("{\"key\":\"caf\u{e9} \\u003c\"}", "key", ok("caf\u{e9} <")),
        (r#"{"K\u0065y":"escaped key"}"#, "key", ok("escaped key")),
    ];
    for (body, pointer, want) in cases {
        assert_eq!(
            &render(body, pointer),
            want,
            "body {body} pointer {pointer}"
        );
    }
}

#[test]
fn missing_buffer_is_not_json() {
    let ptr = BodyPointer::parse("key").unwrap();
    let err = Body::new(None)
        .render(&ptr, &mut String::new())
        .unwrap_err();
    assert_eq!(
        err,
        GateError::BodyNotJson {
            field: "body.key".into()
        }
    );
}

#[test]
fn body_is_parsed_once_for_many_fields() {
    let body = Body::new(Some(br#"{"a":"1","b":"2"}"#));
    let mut out = String::new();
    for p in ["a", "b", "/a"] {
        body.render(&BodyPointer::parse(p).unwrap(), &mut out)
            .unwrap();
    }
    assert_eq!(out, "121");
    assert!(body.parsed.get().is_some());
}

#[test]
fn pointer_parse_rejects_empty_segments() {
    for bad in ["", ".", "a.", ".a", "a..b", "/", "/a/", "//a"] {
        assert!(
            BodyPointer::parse(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
    assert_eq!(BodyPointer::parse("/a/b").unwrap().written(), "body./a/b");
}

#[test]
fn non_ascii_names_fold_by_unicode_simple_folding() {
    assert!(!key_binds("größe", "GRÖSSE"));
    assert!(key_binds("größe", "GRÖßE"));
    assert!(key_binds("σ", "Σ"));
    assert!(key_binds("ǆ", "ǅ"));
    assert!(key_binds("ı", "i"));
    assert!(key_binds("θ", "\u{3f4}"));
    assert!(key_binds("\u{3d1}", "Θ"));
    assert!(key_binds("Å", "\u{212b}"));
    assert!(key_binds("ß", "ẞ"));
    assert!(!key_binds("İ", "i"));
    assert!(!key_binds("é", "e"));
}
