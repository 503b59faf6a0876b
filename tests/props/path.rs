//! Target 1: path normalisation (`route::path`) and route matching (`RouteTable::find`).
//!
//! Twin: the `percent-encoding` crate decodes the same bytes; `plain` must accept exactly the
//! paths whose decoding is unambiguous (the rules in `plain`'s doc, restated here from the
//! decoded segments), and then return that decoding. And a plain path must match the route
//! table exactly as its decoded segments do.

use std::borrow::Cow;

use approval_gateway::route::path::{canonical, normalise, plain};
use approval_gateway::route::{Normalized, RouteTable};
use http::Method;
use percent_encoding::percent_decode_str;
use proptest::prelude::*;

/// Path pieces biased towards what path parsers get wrong.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "/", "/", "/", ".", "..", "%", "%2F", "%2f", "%2e", "%2E", "%5C", "%5c", "\\", "a",
            "b", "x", "id", "%41", "%61", "%00", "\0", "%C3%A9", "\u{e9}", "%FF", "%C0", "%C3",
            "%zz", "%4", "%%", "2F", "2e", "5C", "%25", "%252F", "+", "?", "%20", " ",
        ])
        .prop_map(str::to_owned),
        2 => "[0-9a-fA-F]".prop_map(|s| s),
        // Any byte as an escape (bytes >= 0x80 cannot be raw in a `&str` path).
        1 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
        1 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(piece(), 0..14),
    )
        .prop_map(|(slash, pieces)| {
            let mut p = if slash { "/".to_owned() } else { String::new() };
            p.extend(pieces);
            p
        })
}

/// `plain` restated over the twin's decoding: `Ok(decoded)` exactly when every segment is
/// non-empty, its escapes well-formed, its decoding free of `/`, `\`, NUL and not a dot
/// segment, and the whole decoding UTF-8.
fn spec_plain(raw: &str) -> Result<String, ()> {
    let body = raw.strip_prefix('/').ok_or(())?;
    if body.is_empty() {
        return Ok("/".to_owned());
    }
    let mut decoded = Vec::new();
    for seg in body.split('/') {
        if seg.is_empty() || !escapes_well_formed(seg) {
            return Err(());
        }
        let bytes: Vec<u8> = percent_decode_str(seg).collect();
        if bytes.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) || bytes == b"." || bytes == b".." {
            return Err(());
        }
        decoded.push(b'/');
        decoded.extend(bytes);
    }
    String::from_utf8(decoded).map_err(|_| ())
}

/// Every `%` starts `%XX` with two hex digits.
fn escapes_well_formed(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().all(|(i, c)| {
        *c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn table() -> RouteTable<&'static str> {
    let mut t = RouteTable::new();
    let m = [Method::DELETE];
    for p in [
        "/",
        "/a",
        "/a/{id}",
        "/a/{id}/b",
        "/a/b",
        "/a/b/{*rest}",
        "/x/{*rest}",
        "/{p}/{q}",
        "/\u{e9}/{id}",
        "/a.b/{id}",
        "/+/ /{id}",
    ] {
        t.add(&m, p, p).unwrap();
    }
    t
}

fn check(raw: &str, table: &RouteTable<&'static str>) -> Result<(), TestCaseError> {
    // Never panics, whatever the path.
    let _ = normalise(raw);
    let _ = canonical(raw);
    let got = plain(raw);
    let want = spec_plain(raw);
    prop_assert_eq!(
        got.as_deref().ok(),
        want.as_deref().ok(),
        "plain({:?}) = {:?}",
        raw,
        got
    );
    let Ok(p) = got else { return Ok(()) };
    // The twin's decoding of the whole path is what `plain` returns.
    let twin = percent_decode_str(raw).decode_utf8();
    prop_assert_eq!(
        twin.as_deref().ok(),
        Some(&*p),
        "twin decoding of {:?}",
        raw
    );
    if !raw.contains('%') {
        prop_assert!(matches!(p, Cow::Borrowed(_)), "no escape, no copy");
    }
    let segs: Vec<String> = if p == "/" {
        Vec::new()
    } else {
        p[1..].split('/').map(str::to_owned).collect()
    };
    for s in &segs {
        prop_assert!(
            !s.is_empty() && s != "." && s != "..",
            "{:?} in {:?}",
            s,
            raw
        );
        prop_assert!(!s.contains(['\\', '\0']), "{:?} in {:?}", s, raw);
    }
    // A plain path matches as its decoded segments do: same entry, same parameters.
    let m = Method::DELETE;
    let via_raw = table.find(&m, raw).map(|r| (*r.value, r.params));
    let direct = table
        .find_normalized(&m, &Normalized::Readings(vec![segs]))
        .map(|r| (*r.value, r.params));
    prop_assert_eq!(via_raw, direct, "find({:?})", raw);
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases(2000))]

    #[test]
    fn path_plain_agrees_with_percent_encoding_and_matches_like_its_segments(raw in raw_path()) {
        check(&raw, &table())?;
    }

    /// Arbitrary strings too (any Unicode, no bias).
    #[test]
    fn path_arbitrary_strings(raw in "\\PC{0,40}") {
        check(&raw, &table())?;
    }
}

/// Hand-written cases the generator is expected to reach; kept so they run every time.
#[test]
fn path_regressions() {
    let t = table();
    for raw in [
        "/",
        "",
        "/a//b",
        "/a/%2e",
        "/a/%2F",
        "/a/%5c",
        "/%C3%A9/x",
        "/%FF",
        "/a%2",
        "/%252F",
        "/+/%20/1",
        "/a.b/%41",
    ] {
        check(raw, &t).unwrap();
    }
}
