//! Go `encoding/json`-compatible canonical JSON, the input of `request_hash`.
//!
//! Input: a JSON value. Output: exactly the bytes Go 1.19's `json.Marshal` produces for the same
//! value decoded into `interface{}` (objects become `map[string]interface{}`, numbers `float64`).
//! Invariant: hashes built on this match the workspace-server's in-server gate byte for byte
//! (checked against `tests/fixtures/request-hash-vectors.json`).
//!
//! Go's rules reproduced here: object keys sorted bytewise; no whitespace; `<`, `>`, `&`,
//! U+2028 and U+2029 escaped as `\u003c`-style; `"` and `\` escaped; `\n`, `\r`, `\t` short
//! escapes; other control bytes as `\u00xx` (Go 1.19 has no `\b`/`\f`); DEL and non-ASCII raw.
//! Numbers go through `float64`: integers beyond 2^53 lose precision exactly as Go's do.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// The canonical (Go `json.Marshal`) encoding of `v`.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, v);
    out
}

/// The canonical encoding of an object, for callers that hold a `Map` rather than a `Value`.
pub(crate) fn canonical_object(map: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(64);
    write_object(&mut out, map);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    // `Map` may keep insertion order (serde_json's `preserve_order`); Go always sorts bytewise.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

/// A JSON number as Go prints the `float64` it decodes to.
fn write_number(out: &mut String, n: &Number) {
    // `as_f64` rounds u64/i64 to nearest, as Go's `ParseFloat` does for the same decimal text.
    write_float(out, n.as_f64().unwrap_or(0.0));
}

/// Go's `floatEncoder`: `'f'` format for 0 and 1e-6 <= |f| < 1e21, otherwise `'e'` with a
/// cleaned-up exponent (`1e-07` -> `1e-7`, `1e+21` kept). Both languages print the shortest
/// digits that round-trip, so only the layout needs translating.
pub(crate) fn write_float(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        // Rust's `Display` for f64 never uses an exponent and prints `1` for 1.0, like Go's 'f', -1.
        let _ = write!(out, "{f}");
        return;
    }
    let sci = format!("{f:e}");
    match sci.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => {
            // Go writes at least two exponent digits with a sign; here |exp| >= 21 always.
            let _ = write!(out, "{mantissa}e+{exp}");
        }
        // Negative exponents: Go's "e-07" cleaned to "e-7" equals Rust's "e-7"; "e-10" agrees.
        _ => out.push_str(&sci),
    }
}

/// A JSON string with Go's `encodeState.string` escaping (HTML-safe).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '<' => Some("\\u003c"),
            '>' => Some("\\u003e"),
            '&' => Some("\\u0026"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            c if (c as u32) < 0x20 => Some(""),
            _ => None,
        };
        let Some(esc) = escape else { continue };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u00{:02x}", c as u32);
        } else {
            out.push_str(esc);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(text: &str) -> String {
        canonical_json(&serde_json::from_str::<Value>(text).unwrap())
    }

    #[test]
    fn numbers_format_like_go_float64() {
        let cases = [
            ("0", "0"),
            ("-0", "-0"),
            ("0.0", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("1.0", "1"),
            ("1.5", "1.5"),
            ("100", "100"),
            ("3.14159", "3.14159"),
            ("0.1", "0.1"),
            ("1e-6", "0.000001"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("1.5e-7", "1.5e-7"),
            ("1e-10", "1e-10"),
            ("1.23e-100", "1.23e-100"),
            ("5e-324", "5e-324"),
            ("1e20", "100000000000000000000"),
            ("123456789012345678", "123456789012345680"),
            ("1e21", "1e+21"),
            ("1.5e21", "1.5e+21"),
            ("-1.5e21", "-1.5e+21"),
            ("1e100", "1e+100"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("9007199254740993", "9007199254740992"),
            ("18446744073709551615", "18446744073709552000"),
            ("-9223372036854775808", "-9223372036854776000"),
            ("99999999999999999999999", "1e+23"),
            ("12345678901234567890123", "1.2345678901234568e+22"),
            ("0.30000000000000004", "0.30000000000000004"),
        ];
        for (input, want) in cases {
            assert_eq!(num(input), want, "number {input}");
        }
    }

    #[test]
    fn strings_escape_like_go() {
        let cases = [
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\u{8}\u{c}\u{1}\u{1f}", r#""\u0008\u000c\u0001\u001f""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("<>&", r#""\u003c\u003e\u0026""#),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("\u{7f}é😀/", "\"\u{7f}é😀/\""),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_json(&json!(input)), want, "string {input:?}");
        }
    }

    #[test]
    fn nested_values_sort_keys_bytewise_and_recurse() {
        let v = json!({"b": [1, true, null, {"z": 1, "Z": "<"}], "a": {}, "é": [], "B": 2.5});
        assert_eq!(
            canonical_json(&v),
            r#"{"B":2.5,"a":{},"b":[1,true,null,{"Z":"\u003c","z":1}],"é":[]}"#
        );
    }
}
