//! Target 3: what an approval binds (`gate::binding`) and Go-compatible canonical JSON
//! (`gate::canonical`), whose output is hashed into `request_hash`.
//!
//! Properties: canonical JSON is a fixed point (parse → canonical → parse → canonical gives the
//! same text); a body's bound value does not depend on key order, white space or how strings
//! and numbers are spelled; a key that folds to another one in the same object (`KEY`/`key`,
//! the Kelvin sign/`k`, the long s/`s`, an exact duplicate) is `BodyKeyAmbiguous`. Twin:
//! `binding::query` decodes exactly as `form_urlencoded` (the `url` crate's) does on every
//! query it accepts, and it accepts exactly the unambiguous ones (no `;`, no malformed
//! escape, UTF-8 once decoded).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use approval_gateway::gate::binding::{body_value, query};
use approval_gateway::gate::{canonical_json, GateError};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Number, Value};

/// Keys biased towards Go's case folding.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "key", "KEY", "Key", "k", "K", "\u{212a}", "s", "S", "\u{17f}", "id", "\u{e9}",
            "\u{c9}", "<a>", "a\"b", "", " ", "\u{2028}", "\u{1f600}", "\u{3c3}", "\u{3c2}",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,6}",
    ]
}

/// Finite floats whose canonical text serde_json reads back as themselves (not all: see
/// `canonical_json_regression_any_float`).
fn roundtrips(f: f64) -> bool {
    let text = Number::from_f64(f).map(|n| canonical_json(&Value::Number(n)));
    text.and_then(|t| serde_json::from_str::<f64>(&t).ok()) == Some(f)
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        (-1e6f64..1e6).prop_filter_map("finite", Number::from_f64),
        prop::sample::select(vec![0.0, -0.0, 1e-7, 1e21, 5e-324, 1.7976931348623157e308])
            .prop_filter_map("finite", Number::from_f64),
    ]
    .prop_filter("serde_json reads it back", |n| {
        n.as_f64().is_some_and(roundtrips)
    })
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        "\\PC{0,8}".prop_map(Value::String),
        Just(Value::String("<&>\u{2028}\"\\\n\u{1}".into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object: what a body usually is.
fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), json()), 0..6).prop_map(|m| m.into_iter().collect())
}

/// Choices for one serialisation: member order, white space, spellings. Each decision draws
/// the next number (cycling).
#[derive(Debug, Clone)]
struct Style(Vec<u32>, usize);

impl Style {
    fn next(&mut self) -> u32 {
        let n = self
            .0
            .get(self.1 % self.0.len().max(1))
            .copied()
            .unwrap_or(0);
        self.1 += 1;
        n
    }
    fn ws(&mut self, out: &mut String) {
        out.push_str(["", "", "", " ", "\n", "\t ", "\r\n  "][self.next() as usize % 7]);
    }
}

fn style() -> impl Strategy<Value = Style> {
    prop::collection::vec(any::<u32>(), 1..64).prop_map(|v| Style(v, 0))
}

/// A JSON string, spelled plainly or with `\u` escapes.
fn write_str(out: &mut String, s: &str, st: &mut Style) {
    if st.next() % 3 == 0 {
        out.push('"');
        for u in s.encode_utf16() {
            let _ = write!(out, "\\u{u:04x}");
        }
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap());
    }
}

/// `v` serialised with shuffled members, white space and alternative spellings; `extra` adds
/// members to the outermost object.
fn write(out: &mut String, v: &Value, st: &mut Style, extra: &[(String, Value, Index)]) {
    st.ws(out);
    match v {
        Value::Number(n) => match (n.as_i64(), st.next() % 3) {
            // Same float64, other spelling.
            (Some(i), 1) if i.unsigned_abs() < 1 << 53 => {
                let _ = write!(out, "{i}.0");
            }
            (Some(i), 2) if i.unsigned_abs() < 1 << 53 => {
                let _ = write!(out, "{i}e0");
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(out, s, st),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, item, st, &[]);
            }
            st.ws(out);
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // Shuffle by the style's numbers.
            for i in (1..members.len()).rev() {
                members.swap(i, st.next() as usize % (i + 1));
            }
            for (k, v, at) in extra {
                members.insert(at.index(members.len() + 1), (k, v));
            }
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                st.ws(out);
                write_str(out, k, st);
                st.ws(out);
                out.push(':');
                write(out, v, st, &[]);
            }
            st.ws(out);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
    st.ws(out);
}

fn serialise(v: &Value, st: &mut Style, extra: &[(String, Value, Index)]) -> String {
    let mut out = String::new();
    write(&mut out, v, st, extra);
    out
}

/// The outcome with the key of an ambiguity left out (which duplicate is reported first
/// depends on member order).
fn kind(r: &Result<Value, GateError>) -> Result<&Value, &'static str> {
    match r {
        Ok(v) => Ok(v),
        Err(GateError::BodyKeyAmbiguous { .. }) => Err("BodyKeyAmbiguous"),
        Err(_) => Err("other"),
    }
}

/// Another spelling of `key` that Go's case folding binds to the same field, if any.
fn fold_twin(key: &str, pick: Index) -> Option<String> {
    let chars: Vec<char> = key.chars().collect();
    let spots: Vec<usize> = (0..chars.len())
        .filter(|&i| chars[i].is_ascii_alphabetic() || matches!(chars[i], '\u{212a}' | '\u{17f}'))
        .collect();
    if spots.is_empty() {
        return None;
    }
    let i = spots[pick.index(spots.len())];
    let mut twin = chars.clone();
    twin[i] = match chars[i] {
        'k' | 'K' if pick.index(2) == 0 => '\u{212a}',
        's' | 'S' if pick.index(2) == 0 => '\u{17f}',
        '\u{212a}' => 'k',
        '\u{17f}' => 'S',
        c if c.is_ascii_lowercase() => c.to_ascii_uppercase(),
        c => c.to_ascii_lowercase(),
    };
    Some(twin.into_iter().collect())
}

/// Query strings biased towards what form decoders disagree on.
fn raw_query() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => prop::sample::select(vec![
            "a", "b", "key", "=", "=", "&", "&", "+", "%20", "%2B", "%3D", "%26", "%41", "%e2%9c%93",
            "%C3%A9", "\u{e9}", "%FF", "%C0", "%", "%4", "%zz", ";", "%3B", "~", ".", "%00",
        ])
        .prop_map(str::to_owned),
        1 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
        1 => "\\PC{0,3}",
    ];
    prop::collection::vec(piece, 0..14).prop_map(|v| v.concat())
}

/// Whether `binding::query` must accept `raw`: no `;`, every `%` starts a valid escape, and
/// every key and value is UTF-8 once decoded (read by the `percent-encoding` crate).
fn query_unambiguous(raw: &str) -> bool {
    let b = raw.as_bytes();
    let escapes_ok = b.iter().enumerate().all(|(i, c)| {
        *c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    !raw.contains(';')
        && escapes_ok
        && raw.split(['&', '=']).all(|part| {
            let plus = part.replace('+', " ");
            percent_encoding::percent_decode_str(&plus)
                .decode_utf8()
                .is_ok()
        })
}

proptest! {
    #![proptest_config(crate::cases(500))]

    #[test]
    fn canonical_json_is_a_fixed_point(v in json()) {
        let once = canonical_json(&v);
        let reparsed: Value = serde_json::from_str(&once).unwrap();
        let twice = canonical_json(&reparsed);
        prop_assert_eq!(&once, &twice);
        // And the bound form of a canonical body is the body itself, canonically.
        if let Ok(bound) = body_value(once.as_bytes()) {
            if once.len() <= approval_gateway::gate::binding::SHOWN_BYTES {
                prop_assert_eq!(canonical_json(&bound), once);
            }
        }
    }

    #[test]
    fn body_binding_ignores_order_white_space_and_spelling(
        m in object(),
        mut a in style(),
        mut b in style(),
    ) {
        let v = Value::Object(m);
        let (x, y) = (serialise(&v, &mut a, &[]), serialise(&v, &mut b, &[]));
        let (bx, by) = (body_value(x.as_bytes()), body_value(y.as_bytes()));
        prop_assert_eq!(kind(&bx), kind(&by), "{} vs {}", x, y);
    }

    #[test]
    fn body_keys_that_fold_together_are_ambiguous(
        m in object().prop_filter("non-empty", |m| !m.is_empty()),
        mut st in style(),
        which in any::<Index>(),
        at in any::<Index>(),
        exact in prop::bool::weighted(0.2),
    ) {
        let v = Value::Object(m);
        let x = serialise(&v, &mut st.clone(), &[]);
        // Only bodies that bind on their own are of interest here.
        prop_assume!(body_value(x.as_bytes()).is_ok());
        let Value::Object(m) = &v else { unreachable!() };
        let key = m.keys().nth(which.index(m.len())).unwrap().clone();
        let twin = if exact { Some(key.clone()) } else { fold_twin(&key, which) };
        let Some(twin) = twin else { return Ok(()) };
        let y = serialise(&v, &mut st, &[(twin.clone(), Value::Null, at)]);
        let got = body_value(y.as_bytes());
        prop_assert!(
            matches!(got, Err(GateError::BodyKeyAmbiguous { .. })),
            "{:?} beside {:?} in {}: {:?}", twin, key, y, got
        );
    }

    #[test]
    fn query_agrees_with_form_urlencoded(raw in raw_query()) {
        let got = query(&raw);
        if !query_unambiguous(&raw) {
            prop_assert!(
                matches!(got, Err(GateError::QueryAmbiguous { .. })),
                "{:?} accepted: {:?}", raw, got
            );
            return Ok(());
        }
        let mut want: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            want.entry(k.into_owned()).or_default().push(Value::String(v.into_owned()));
        }
        let want = Value::Object(want.into_iter().map(|(k, v)| (k, Value::Array(v))).collect());
        prop_assert_eq!(got.ok(), Some(want), "{:?}", raw);
    }
}

/// Found by `canonical_json_is_a_fixed_point`: serde_json without its `float_roundtrip`
/// feature read some decimal numbers 1 ULP off the nearest float, where Go's `ParseFloat` (the
/// upstream, and the workspace-server's in-server gate) rounds correctly: a body holding
/// `4.8871543968607293e-141` was bound, shown and hashed as `4.88715439686073e-141`. Fixed by
/// enabling `float_roundtrip`.
#[test]
fn canonical_json_regression_any_float() {
    let text = "4.8871543968607293e-141";
    // Rust's own parser rounds correctly, like Go's; the text is already the shortest form.
    let exact: f64 = text.parse().unwrap();
    assert_eq!(format!("{exact:e}"), text);
    let bound = body_value(format!("[{text}]").as_bytes()).unwrap();
    assert_eq!(canonical_json(&bound), format!("[{text}]"));
}

/// `canonical_json_is_a_fixed_point` on every finite float, including those serde_json used
/// to read back 1 ULP off (the bug above).
#[test]
fn canonical_json_fixed_point_on_any_float() {
    proptest!(crate::cases(2000), |(f in any::<f64>().prop_filter_map("finite", Number::from_f64))| {
        let once = canonical_json(&Value::Array(vec![Value::Number(f)]));
        let twice = canonical_json(&serde_json::from_str(&once).unwrap());
        prop_assert_eq!(once, twice);
    });
}

#[test]
fn binding_regressions() {
    for (body, ambiguous) in [
        (&br#"{"k":1,"K":2}"#[..], true),
        ("{\"k\":1,\"\u{212a}\":2}".as_bytes(), true),
        ("{\"s\":1,\"\u{17f}\":2}".as_bytes(), true),
        (br#"{"k":1,"k":1}"#, true),
        (br#"{"a":{"b":1,"B":1}}"#, true),
        (br#"{"k":1,"k2":2}"#, false),
    ] {
        assert_eq!(
            matches!(body_value(body), Err(GateError::BodyKeyAmbiguous { .. })),
            ambiguous,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        body_value(br#"{"a":1.0,"b":[1e0]}"#).unwrap(),
        body_value(br#" { "b" : [ 1 ] , "\u0061" : 1 } "#).unwrap()
    );
    for raw in ["a=1&a=2&b", "%41=%e2%9c%93", "a+b=c+d", "=", "&&"] {
        assert!(query_unambiguous(raw), "{raw}");
        assert!(query(raw).is_ok(), "{raw}");
    }
}
