//! Reading `{body.POINTER}` fields the way Go's `encoding/json` binds struct fields (gin's binder).
//!
//! Input: the buffered request body and a pre-parsed `BodyPointer`. Output: the field's text,
//! or the [`GateError`] that makes the request a 400.
//!
//! At each level an object key binds to a pointer segment when it equals it exactly or folds to
//! the same name under Go's `foldName` (Go 1.21+ `encoding/json/fold.go`; the upstream runs Go
//! 1.25): ASCII letter case, plus Unicode simple folding for other runes, so the Kelvin sign `K`
//! binds `k`, the long s `ſ` binds `s` and the dotless `ı` binds `i`. Go lets the last of several
//! binding keys win, so a body where the segment binds more than once (exact duplicates included)
//! is `FieldAmbiguous`: the upstream would act on a value other than the one the approval names.
//! That is why the body is parsed into `Node`, which keeps duplicate keys, instead of
//! `serde_json::Value`.
//!
//! Decisions: a string renders as is; a number as Go prints its `float64`; a bool as
//! `true`/`false`; JSON null or an absent key is `FieldMissing`; an object or array is
//! `FieldNotScalar` (the upstream's string field would not bind it either). A non-object on the
//! way down (`a` is a string in `a.b`) is `FieldMissing`; an array on the way down is indexed by a
//! decimal segment (`/items/0/name`). A body that is not one JSON object, including trailing data
//! after it, is `BodyNotJson` (fail closed, although Go's decoder ignores trailing data and
//! replaces lone UTF-16 surrogate escapes, both of which serde_json rejects).

use std::cell::OnceCell;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::canonical::write_float;
use super::GateError;

/// A reference into the body: `body.a.b` or `body./a/b`, split into segments at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyPointer {
    /// The reference as written in the template (`body.key`), used in error messages.
    written: String,
    segments: Vec<String>,
}

impl BodyPointer {
    /// Parse what follows `body.`: dotted (`a.b`) or a JSON pointer (`/a/b`, `~0`/`~1` escapes).
    pub(crate) fn parse(pointer: &str) -> Result<Self, String> {
        let segments: Vec<String> = match pointer.strip_prefix('/') {
            Some(rest) => rest
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
            None => pointer.split('.').map(str::to_owned).collect(),
        };
        if pointer.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!("has an empty field name in `{{body.{pointer}}}`"));
        }
        Ok(Self {
            written: format!("body.{pointer}"),
            segments,
        })
    }

    /// The reference as written, e.g. `body.key`.
    #[cfg(test)]
    pub(crate) fn written(&self) -> &str {
        &self.written
    }
}

/// A JSON value that keeps every object member in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// Go decodes every JSON number into a `float64`.
    Number(f64),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// The request body of one request, parsed at most once however many templates read it.
pub struct Body<'a> {
    raw: Option<&'a [u8]>,
    /// `Some(None)`: parsed, but not one JSON object.
    parsed: OnceCell<Option<Node>>,
}

impl<'a> Body<'a> {
    /// The body as buffered (`None` when it was not read); nothing is parsed until a template reads
    /// a field.
    pub fn new(raw: Option<&'a [u8]>) -> Self {
        Self {
            raw,
            parsed: OnceCell::new(),
        }
    }

    /// Lowercase hex SHA-256 of the raw body (no body: of no bytes).
    pub(crate) fn sha256_hex(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.raw.unwrap_or_default()))
    }

    /// The raw bytes, when buffered.
    pub(crate) fn raw(&self) -> Option<&'a [u8]> {
        self.raw
    }

    /// Whether `ptr` names a present, non-null field. A body of no bytes (or only white space)
    /// has no fields; any other body that is not a JSON object is `BodyNotJson`.
    pub(crate) fn has(&self, ptr: &BodyPointer) -> Result<bool, GateError> {
        if self
            .raw
            .unwrap_or_default()
            .iter()
            .all(u8::is_ascii_whitespace)
        {
            return Ok(false);
        }
        let root = self.root().ok_or_else(|| GateError::BodyNotJson {
            field: ptr.written.clone(),
        })?;
        match lookup(root, ptr) {
            Ok(Node::Null) | Err(GateError::FieldMissing { .. }) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn root(&self) -> Option<&Node> {
        self.parsed
            .get_or_init(|| {
                let node = serde_json::from_slice::<Node>(self.raw?).ok()?;
                matches!(node, Node::Object(_)).then_some(node)
            })
            .as_ref()
    }

    /// Append the text of the field `ptr` names to `out`.
    pub(crate) fn render(&self, ptr: &BodyPointer, out: &mut String) -> Result<(), GateError> {
        let field = || ptr.written.clone();
        let root = self
            .root()
            .ok_or_else(|| GateError::BodyNotJson { field: field() })?;
        match lookup(root, ptr)? {
            Node::Null => return Err(GateError::FieldMissing { field: field() }),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Number(f) => write_float(out, *f),
            Node::String(s) => out.push_str(s),
            Node::Array(_) | Node::Object(_) => {
                return Err(GateError::FieldNotScalar { field: field() })
            }
        }
        Ok(())
    }
}

/// Walk `ptr` from `root`, binding keys the way Go's decoder binds struct fields.
fn lookup<'n>(root: &'n Node, ptr: &BodyPointer) -> Result<&'n Node, GateError> {
    let missing = || GateError::FieldMissing {
        field: ptr.written.clone(),
    };
    let mut cur = root;
    for seg in &ptr.segments {
        cur = match cur {
            Node::Object(members) => {
                let mut bound = members
                    .iter()
                    .filter(|(k, _)| key_binds(seg, k))
                    .map(|(_, v)| v);
                let first = bound.next().ok_or_else(missing)?;
                if bound.next().is_some() {
                    return Err(GateError::FieldAmbiguous {
                        field: ptr.written.clone(),
                    });
                }
                first
            }
            Node::Array(items) => array_index(seg)
                .and_then(|i| items.get(i))
                .ok_or_else(missing)?,
            _ => return Err(missing()),
        };
    }
    Ok(cur)
}

fn array_index(seg: &str) -> Option<usize> {
    let canonical = seg == "0" || !seg.starts_with('0');
    canonical.then(|| seg.parse().ok()).flatten()
}

/// Whether the JSON object key `key` binds to the struct field name `name`: Go 1.21+
/// `encoding/json` (the upstream runs Go 1.25) compares `foldName(key)` with `foldName(name)`.
pub(crate) fn key_binds(name: &str, key: &str) -> bool {
    name == key || name.chars().map(fold_rune).eq(key.chars().map(fold_rune))
}

/// `key` under Go's folding: two keys bind the same struct field exactly when these are equal.
pub(crate) fn fold_key(key: &str) -> String {
    key.chars().map(fold_rune).collect()
}

/// Go's `appendFoldedName` per rune: ASCII is upper-cased; any other rune becomes the smallest
/// rune of its simple-fold orbit (`foldRune`). The orbit is approximated from Rust's single-char
/// case mappings (a mapping that expands, like `ß` -> `SS`, is not simple and is skipped), which
/// agrees with Go's tables for the cases that matter: the Kelvin sign folds to `K`, the long s
/// `ſ` to `S`, the dotless `ı` to `I`, `ς` and `σ` to `Σ`.
fn fold_rune(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let lower = single_char(c.to_lowercase(), c);
    let upper = single_char(c.to_uppercase(), c);
    let orbit = [
        lower,
        upper,
        single_char(upper.to_lowercase(), upper),
        single_char(lower.to_uppercase(), lower),
    ];
    orbit.into_iter().fold(c, char::min)
}

/// The mapping's only char, or `fallback` when it expands (`ß` -> `SS`): simple folding keeps it.
fn single_char(mut mapped: impl Iterator<Item = char>, fallback: char) -> char {
    match (mapped.next(), mapped.next()) {
        (Some(x), None) => x,
        _ => fallback,
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Number(n as f64))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Number(n as f64))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
        Ok(Node::Number(n))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node, E> {
        Ok(Node::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Node, E> {
        Ok(Node::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Node>()? {
            members.push(member);
        }
        Ok(Node::Object(members))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // Table tests for Go-compatible body field binding.

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
}
