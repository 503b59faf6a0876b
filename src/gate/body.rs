//! Reading `{body.POINTER}` fields the way Go's `encoding/json` binds struct fields (gin's binder).
//!
//! Input: the buffered request body and a pre-parsed [`BodyPointer`]. Output: the field's text,
//! or the [`GateError`] that makes the request a 400.
//!
//! At each level an object key binds to a pointer segment when it equals it exactly or under Go's
//! case folding (Go 1.19 `encoding/json/fold.go`): for ASCII names, ASCII letter case plus the
//! Kelvin sign `K` for `k`/`K` and the long s `ſ` for `s`/`S`; for non-ASCII names, Unicode simple
//! folding (approximated with Rust's single-char case mappings; a non-ASCII key char never folds to
//! an ASCII one except the two above, as in Go). Go lets the last of several binding keys win, so a
//! body where the segment binds more than once (exact duplicates included) is `FieldAmbiguous`:
//! the upstream would act on a value other than the one the approval names. That is why the body
//! is parsed into [`Node`], which keeps duplicate keys, instead of `serde_json::Value`.
//!
//! Decisions: a string renders as is; a number as Go prints its `float64`; a bool as
//! `true`/`false`; JSON null or an absent key is `FieldMissing`; an object or array is
//! `FieldNotScalar` (the upstream's string field would not bind it either). A non-object on the
//! way down (`a` is a string in `a.b`) is `FieldMissing`; an array on the way down is indexed by a
//! decimal segment (`/items/0/name`). A body that is not one JSON object, including trailing data
//! after it, is `BodyNotJson` (fail closed, although Go's decoder would ignore trailing data).

use std::cell::OnceCell;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::canonical::write_float;
use super::GateError;

/// A reference into the body: `body.a.b` or `body./a/b`, split into segments at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyPointer {
    /// The reference as written in the template (`body.key`), used in error messages.
    written: String,
    segments: Vec<String>,
}

impl BodyPointer {
    /// Parse what follows `body.`: dotted (`a.b`) or a JSON pointer (`/a/b`, `~0`/`~1` escapes).
    pub fn parse(pointer: &str) -> Result<Self, String> {
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
    pub fn written(&self) -> &str {
        &self.written
    }
}

/// A JSON value that keeps every object member in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
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
    pub fn new(raw: Option<&'a [u8]>) -> Self {
        Self {
            raw,
            parsed: OnceCell::new(),
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
    pub fn render(&self, ptr: &BodyPointer, out: &mut String) -> Result<(), GateError> {
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

const KELVIN: char = '\u{212A}';
const LONG_S: char = '\u{17F}';

/// Whether the JSON object key `key` binds to the struct field name `name` (Go 1.19 rules).
pub fn key_binds(name: &str, key: &str) -> bool {
    if name == key {
        return true;
    }
    let (mut n, mut k) = (name.chars(), key.chars());
    loop {
        match (n.next(), k.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if chars_fold(a, b) => {}
            _ => return false,
        }
    }
}

fn chars_fold(a: char, b: char) -> bool {
    if a == b {
        return true;
    }
    match (a.is_ascii(), b.is_ascii()) {
        // Only letters fold in ASCII; digits and punctuation must match exactly.
        (true, true) => a.eq_ignore_ascii_case(&b),
        // The only non-ASCII runes whose fold orbit reaches ASCII (`equalFoldRight`).
        (true, false) | (false, true) => {
            let (ascii, other) = if a.is_ascii() { (a, b) } else { (b, a) };
            matches!((ascii, other), ('k' | 'K', KELVIN) | ('s' | 'S', LONG_S))
        }
        (false, false) => simple_fold(a) == simple_fold(b),
    }
}

/// A representative of `c`'s simple case-fold orbit: lower(upper(c)) when both are single chars.
fn simple_fold(c: char) -> char {
    let upper = single_char(c.to_uppercase(), c);
    single_char(upper.to_lowercase(), upper)
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
#[path = "body_tests.rs"]
mod tests;
