//! What an approval binds with `bind = "request"` (the default): the request the upstream will
//! act on, as one JSON object added to the context under `KEY`, so it is both hashed into
//! `request_hash` and shown to the human who decides.
//!
//! ```json
//! {"method":"DELETE","path":"/workspaces/w1","query":{"confirm":["true"]},
//!  "content_type":null,"body":null,"body_digest":null}
//! ```
//!
//! Each part is read the way the upstream (Go `net/http`, gin, `encoding/json`) reads it, or the
//! request is refused (400) where that reading is not unique:
//! - `path`: the decoded path the proxy already checked is plain (`route::path::plain`).
//! - `query`: every parameter, all values in order, decoded like Go's `url.ParseQuery`. Go
//!   silently drops a pair with a `;` or a malformed escape, and keeps invalid UTF-8 bytes that
//!   this JSON could only show lossily: all three are [`GateError::QueryAmbiguous`].
//! - `body`: no bytes → `null`. A JSON body → its canonical form (keys sorted, no white space,
//!   numbers as Go's `float64` prints them), so key order and white space do not matter. A key
//!   that occurs twice in one object, exactly or under Go's case folding, is
//!   [`GateError::BodyKeyAmbiguous`]: Go binds whichever comes last. A canonical form over
//!   [`SHOWN_BYTES`] is bound by `body_digest` `{"sha256","size"}` of that form instead of shown
//!   whole (`body` is then null), and so is any other body, by its raw bytes. The digest has
//!   its own key, so no JSON body can look like one.
//! - `content_type`: the media type without parameters, lower-cased (gin's `ShouldBind` picks
//!   its parser by it), or null.
//!
//! Numbers are bound by their `float64` (`100`, `1e2` and `100.0` bind alike, as Go decodes
//! them alike), so a number whose value a `float64` cannot hold exactly — an integer beyond
//! 2^53, a decimal written with more digits than its nearest `float64` needs — is
//! [`GateError::NumberInexact`]: the upstream may keep it exactly (Postgres `jsonb` does),
//! while the approval would show and bind a neighbour.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use super::body::{fold_key, Body, Node};
use super::canonical::canonical_json;
use super::{GateError, RequestView};

/// The context key the bound request is stored under. A route with `bind = "request"` may not
/// name a context key of its own this way (config validation).
pub(crate) const KEY: &str = "request";
/// Largest canonical JSON body shown whole in the approval; larger ones are bound by digest.
pub const SHOWN_BYTES: usize = 4096;

/// The bound request of `req`, whose buffered body is `body`.
pub(crate) fn request(req: &RequestView<'_>, body: &Body<'_>) -> Result<Value, GateError> {
    let mut out = Map::new();
    out.insert("method".into(), Value::String(req.method.as_str().into()));
    out.insert("path".into(), Value::String(req.path.into()));
    out.insert("query".into(), query(req.uri.query().unwrap_or(""))?);
    out.insert("content_type".into(), content_type(req.headers));
    let (shown, digest) = match body_binding(body.raw().unwrap_or_default())? {
        BodyBinding::Shown(v) => (v, Value::Null),
        BodyBinding::Digest(d) => (Value::Null, d),
    };
    out.insert("body".into(), shown);
    out.insert("body_digest".into(), digest);
    Ok(Value::Object(out))
}

/// How a body is bound: shown whole (canonical JSON, or null for none), or by digest.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BodyBinding {
    Shown(Value),
    Digest(Value),
}

/// Every query parameter, as Go's `url.ParseQuery` reads it, or why it cannot be read one way.
pub fn query(raw: &str) -> Result<Value, GateError> {
    let mut params: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pair in raw.split('&') {
        if pair.is_empty() {
            continue;
        }
        if pair.contains(';') {
            return Err(GateError::QueryAmbiguous {
                why: "a `;` in a parameter (Go drops the pair)",
            });
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params
            .entry(form_decode(key)?)
            .or_default()
            .push(Value::String(form_decode(value)?));
    }
    Ok(Value::Object(
        params
            .into_iter()
            .map(|(k, v)| (k, Value::Array(v)))
            .collect(),
    ))
}

/// One `application/x-www-form-urlencoded` component (`+` is a space), strictly.
fn form_decode(s: &str) -> Result<String, GateError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(GateError::QueryAmbiguous {
                        why: "a malformed `%` escape (Go drops the pair)",
                    });
                };
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| GateError::QueryAmbiguous {
        why: "a parameter that is not UTF-8 once decoded",
    })
}

fn content_type(headers: &http::HeaderMap) -> Value {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(Value::Null, |v| {
            let media = v.split(';').next().unwrap_or("").trim();
            Value::String(media.to_ascii_lowercase())
        })
}

/// The body's bound form, shown or digest alike (see `body_binding`).
pub fn body_value(raw: &[u8]) -> Result<Value, GateError> {
    Ok(match body_binding(raw)? {
        BodyBinding::Shown(v) | BodyBinding::Digest(v) => v,
    })
}

/// The body's bound form (see the module doc).
pub(crate) fn body_binding(raw: &[u8]) -> Result<BodyBinding, GateError> {
    if raw.is_empty() {
        return Ok(BodyBinding::Shown(Value::Null));
    }
    let Ok(node) = serde_json::from_slice::<Node>(raw) else {
        return Ok(BodyBinding::Digest(digest(raw)));
    };
    exact_numbers(raw)?;
    let value = to_value(node)?;
    let text = canonical_json(&value);
    Ok(if text.len() <= SHOWN_BYTES {
        BodyBinding::Shown(value)
    } else {
        BodyBinding::Digest(digest(text.as_bytes()))
    })
}

/// Refuses a body holding a number literal that does not survive a `float64` round trip.
/// `raw` is valid JSON (serde_json parsed it).
fn exact_numbers(raw: &[u8]) -> Result<(), GateError> {
    let (mut i, mut in_string) = (0, false);
    while i < raw.len() {
        let b = raw[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < raw.len()
                    && matches!(raw[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let literal = std::str::from_utf8(&raw[start..i]).unwrap_or_default();
                let parsed: f64 = literal.parse().unwrap_or(f64::NAN);
                if !parsed.is_finite() || decimal(literal) != decimal(&format!("{parsed:e}")) {
                    return Err(GateError::NumberInexact {
                        literal: literal.chars().take(40).collect(),
                    });
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A decimal literal's exact value as (negative, significant digits, exponent), trailing and
/// leading zeros removed, so `1.50e2`, `150` and `1.5e2` compare equal; zero is `(false, "", 0)`.
fn decimal(literal: &str) -> (bool, String, i64) {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, literal),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = format!("{int}{frac}").trim_start_matches('0').to_owned();
    let mut exp = exp - i64::try_from(frac.len()).unwrap_or(0);
    while digits.ends_with('0') {
        digits.pop();
        exp += 1;
    }
    if digits.is_empty() {
        return (false, digits, 0);
    }
    (negative, digits, exp)
}

fn digest(bytes: &[u8]) -> Value {
    let mut m = Map::new();
    m.insert(
        "sha256".into(),
        Value::String(hex::encode(Sha256::digest(bytes))),
    );
    m.insert("size".into(), Value::from(bytes.len()));
    Value::Object(m)
}

/// A parsed body as a `Value`, refusing keys Go could bind more than once.
fn to_value(node: Node) -> Result<Value, GateError> {
    Ok(match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Number(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Node::String(s) => Value::String(s),
        Node::Array(items) => {
            Value::Array(items.into_iter().map(to_value).collect::<Result<_, _>>()?)
        }
        Node::Object(members) => {
            let mut seen = HashSet::with_capacity(members.len());
            let mut map = Map::new();
            for (k, v) in members {
                if !seen.insert(fold_key(&k)) {
                    return Err(GateError::BodyKeyAmbiguous { key: k });
                }
                map.insert(k, to_value(v)?);
            }
            Value::Object(map)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_is_read_like_go_parse_query() {
        let q = query("b=2&a=1&a=x+y&c&d=%41&&").unwrap();
        assert_eq!(q, json!({"a":["1","x y"],"b":["2"],"c":[""],"d":["A"]}));
        assert_eq!(query("").unwrap(), json!({}));
    }

    #[test]
    fn query_pairs_go_would_drop_are_refused() {
        for raw in ["a=1;b=2", "a=%zz", "a=%4", "a=%FF"] {
            assert!(
                matches!(query(raw), Err(GateError::QueryAmbiguous { .. })),
                "{raw}"
            );
        }
    }

    #[test]
    fn json_bodies_bind_canonically() {
        let a = body_value(br#"{"b":1, "a":{"y":true,"x":null}}"#).unwrap();
        let b = body_value(br#"{"a":{"x":null,"y":true},"b":1.0}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        let c = body_value(br#"{"a":{"x":null,"y":true},"b":2}"#).unwrap();
        assert_ne!(canonical_json(&a), canonical_json(&c));
        assert_eq!(body_value(b"").unwrap(), Value::Null);
    }

    #[test]
    fn keys_go_could_bind_twice_are_refused() {
        for raw in [
            &br#"{"key":"a","key":"b"}"#[..],
            br#"{"key":"a","KEY":"b"}"#,
            br#"{"x":[{"s":1,"\u017f":2}]}"#,
            "{\"k\":1,\"\u{212a}\":2}".as_bytes(),
        ] {
            assert!(
                matches!(body_value(raw), Err(GateError::BodyKeyAmbiguous { .. })),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn numbers_a_float64_cannot_hold_are_refused() {
        for ok in [
            "1",
            "1.0",
            "1e2",
            "100.0",
            "0.1",
            "-0.5",
            "0",
            "-0",
            "9007199254740992",
            "1.5e-7",
            "[1,2.50]",
        ] {
            assert!(body_value(ok.as_bytes()).is_ok(), "{ok}");
        }
        for inexact in [
            "9007199254740993",
            "0.1000000000000000055511",
            "{\"n\":12345678901234567890}",
        ] {
            assert!(
                matches!(
                    body_value(inexact.as_bytes()),
                    Err(GateError::NumberInexact { .. })
                ),
                "{inexact}"
            );
        }
        // Out of float64's range serde_json refuses it: bound by the raw bytes' digest.
        assert!(body_value(b"[1, 1e400]").unwrap().get("sha256").is_some());
        // Digits inside strings are not numbers.
        assert!(body_value(br#"{"id":"9007199254740993","s":"a\"1e999"}"#).is_ok());
    }

    #[test]
    fn a_json_body_never_looks_like_a_digest() {
        let digested = body_binding(b"not json").unwrap();
        let BodyBinding::Digest(d) = &digested else {
            panic!("{digested:?}")
        };
        let lookalike = serde_json::to_vec(d).unwrap();
        let bound = body_binding(&lookalike).unwrap();
        assert!(matches!(&bound, BodyBinding::Shown(v) if canonical_json(v) == canonical_json(d)));
    }

    #[test]
    fn other_and_large_bodies_bind_by_digest() {
        let v = body_value(b"not json").unwrap();
        assert_eq!(v["size"], 8);
        assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
        let big = format!("{{\"k\":\"{}\"}}", "x".repeat(SHOWN_BYTES));
        let v = body_value(big.as_bytes()).unwrap();
        assert!(v.get("sha256").is_some());
        let big2 = format!("{{\"k\":\"{}y\"}}", "x".repeat(SHOWN_BYTES));
        assert_ne!(v, body_value(big2.as_bytes()).unwrap());
    }
}
