//! Stage 2: route matching. Pure: no IO.
//!
//! Input: the request's method and raw path (as sent, before any decoding). Output: the most
//! specific matching entry and its path parameters. Used twice: once for guards (checked first),
//! once for gated routes. Paths are normalised before matching (see `path.rs`); a path that cannot
//! be normalised unambiguously but would match after decoding counts as matched (fail closed).
//! The request itself is always forwarded with its original bytes.
//!
//! Invariants: entries are kept sorted by specificity (most specific first, ties in insertion
//! order), so `find` returns the first entry that matches and insertion order never changes the
//! winner except between equally specific patterns. On a clean path (see
//! `path::needs_normalisation`) `find` allocates nothing unless it matches (the params).

pub mod path;
pub(crate) mod pattern;

pub use path::{canonical, normalise, Normalized};
pub(crate) use pattern::Pattern;

/// Path parameters captured by `{name}` and `{*rest}` segments, in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(std::sync::Arc<str>, String)>);

impl Params {
    /// The value captured for `name` (without braces), `None` when the pattern has no such
    /// parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Append a capture (the matcher does, in pattern order).
    pub fn push(&mut self, name: std::sync::Arc<str>, value: String) {
        self.0.push((name, value));
    }

    /// Every `(name, value)` pair, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, v.as_str()))
    }
}

/// A successful match: the entry and what its parameters captured.
#[derive(Debug)]
pub struct RouteMatch<'t, T> {
    /// The matched entry's value (a gate rule, a guard).
    pub value: &'t T,
    /// What the entry's `{name}` and `{*rest}` segments captured from the path.
    pub params: Params,
}

/// An invalid path pattern in the config (reported by config validation with table and key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub(crate) String);

/// Routes (or guards) compiled once at load, shared immutably behind an `Arc`.
#[derive(Debug)]
pub struct RouteTable<T> {
    /// Sorted by descending specificity; equal ranks keep insertion order.
    entries: Vec<Entry<T>>,
    /// Every method some entry matches, once each: [`RouteTable::has_method`] answers the
    /// common case (a `GET` when only writes are gated) before the path is looked at.
    methods: Vec<http::Method>,
}

#[derive(Debug)]
struct Entry<T> {
    methods: Vec<http::Method>,
    pattern: Pattern,
    rank: pattern::Rank,
    value: T,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            methods: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// An empty table: matches nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an entry. `pattern` uses `{name}` for one segment and `{*rest}` for the remainder
    /// (see `pattern.rs` for the grammar). Methods match exactly (`HEAD` is not `GET`).
    pub fn add(
        &mut self,
        methods: &[http::Method],
        pattern: &str,
        value: T,
    ) -> Result<(), PatternError> {
        let pattern = Pattern::parse(pattern)?;
        let rank = pattern.rank();
        for m in methods {
            if !self.methods.contains(m) {
                self.methods.push(m.clone());
            }
        }
        // After every entry at least as specific: keeps ties in insertion order.
        let at = self.entries.partition_point(|e| e.rank >= rank);
        self.entries.insert(
            at,
            Entry {
                methods: methods.to_vec(),
                pattern,
                rank,
                value,
            },
        );
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry's value, most specific first.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.value)
    }

    /// Whether any entry matches `method`. When none does, no path can match either.
    pub(crate) fn has_method(&self, method: &http::Method) -> bool {
        self.methods.contains(method)
    }

    /// The most specific entry matching `method` and `raw_path` (the request-target's path, as sent).
    ///
    /// An ambiguous path is tried under each of its readings, most plausible first (fail closed).
    pub fn find(&self, method: &http::Method, raw_path: &str) -> Option<RouteMatch<'_, T>> {
        if !self.has_method(method) {
            return None;
        }
        self.find_normalized(method, &normalise(raw_path))
    }

    /// [`RouteTable::find`] on a path already prepared with [`normalise`], so that the guard and
    /// route tables can share one decoding of an ambiguous path.
    pub fn find_normalized(
        &self,
        method: &http::Method,
        path: &Normalized<'_>,
    ) -> Option<RouteMatch<'_, T>> {
        match path {
            Normalized::Clean(p) => self.find_in(method, || path::clean_segments(p)),
            Normalized::Readings(readings) => readings
                .iter()
                .find_map(|segs| self.find_in(method, || segs.iter().map(String::as_str))),
        }
    }

    /// The first (most specific) entry matching the segments produced by `segments`.
    fn find_in<'a, I>(
        &self,
        method: &http::Method,
        segments: impl Fn() -> I,
    ) -> Option<RouteMatch<'_, T>>
    where
        I: Iterator<Item = &'a str>,
    {
        let entry = self
            .entries
            .iter()
            .find(|e| e.methods.contains(method) && e.pattern.is_match(segments()))?;
        Some(RouteMatch {
            value: &entry.value,
            params: entry.pattern.captures(segments()),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Table tests for `RouteTable::find`: normalisation attacks, methods, specificity.

    use http::Method;

    use super::*;

    /// The Molecule-like table used by most cases; values are the pattern strings.
    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new();
        let routes: &[(&[Method], &'static str)] = &[
            (&[Method::DELETE], "/workspaces/{id}"),
            (&[Method::POST, Method::PUT], "/workspaces/{id}/secrets"),
            (&[Method::DELETE], "/workspaces/{id}/secrets/{key}"),
            (
                &[Method::POST],
                "/workspaces/{id}/approvals/{approval_id}/decide",
            ),
            (&[Method::DELETE], "/files/{*path}"),
            (&[Method::GET], "/admin/export"),
        ];
        for (methods, pattern) in routes {
            t.add(methods, pattern, *pattern).expect("valid pattern");
        }
        t
    }

    /// (method, raw path, expected pattern or None, expected params)
    type Case = (
        Method,
        &'static str,
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn find_matches_normalised_and_attack_paths() {
        const WS: Option<&str> = Some("/workspaces/{id}");
        const SECRETS: Option<&str> = Some("/workspaces/{id}/secrets");
        const DECIDE: Option<&str> = Some("/workspaces/{id}/approvals/{approval_id}/decide");
        let d = Method::DELETE;
        let p = Method::POST;
        let cases: Vec<Case> = vec![
            (d.clone(), "/workspaces/x", WS, &[("id", "x")]),
            (d.clone(), "//workspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/workspaces//x", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/./x", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/%78", WS, &[("id", "x")]),
            (d.clone(), "/./workspaces//x", WS, &[("id", "x")]),
            (d.clone(), "/a/../workspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/x/", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/x//", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/x/.", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/x/y/..", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/a%20b", WS, &[("id", "a b")]),
            (d.clone(), "/%77orkspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/%2e/x", WS, &[("id", "x")]),
            (d.clone(), "/workspaces/%2E/x", WS, &[("id", "x")]),
            (d.clone(), "/a/%2e%2e/workspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/a/%2E%2e/workspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/a/.%2e/workspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/../../workspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/a%2f..%2fworkspaces/x", WS, &[("id", "x")]),
            (d.clone(), "%2fworkspaces/x", WS, &[("id", "x")]),
            (d.clone(), "/workspaces%2Fx", WS, &[("id", "x")]),
            // `%2F` inside an id: the upstream splits it, so the secrets route is the one hit.
            (
                p.clone(),
                "/workspaces/x%2Fsecrets",
                SECRETS,
                &[("id", "x")],
            ),
            (
                p.clone(),
                "/workspaces/x%2fsecrets/",
                SECRETS,
                &[("id", "x")],
            ),
            // ...and with no route for the split reading, the unsplit reading is still gated.
            (d.clone(), "/workspaces/a%2Fb", WS, &[("id", "a/b")]),
            // Backslashes: literal for the upstream, a separator for some servers.
            (p.clone(), "/workspaces/x\\secrets", SECRETS, &[("id", "x")]),
            (
                p.clone(),
                "/workspaces/x%5Csecrets",
                SECRETS,
                &[("id", "x")],
            ),
            (d.clone(), "/workspaces/x%5cy", WS, &[("id", "x\\y")]),
            (d.clone(), "/workspaces\\x", WS, &[("id", "x")]),
            // NUL: decoded into the id; a C-string consumer would stop at it.
            (d.clone(), "/workspaces/x%00", WS, &[("id", "x\0")]),
            (
                p.clone(),
                "/workspaces/x/secrets%00.txt",
                SECRETS,
                &[("id", "x")],
            ),
            // Invalid UTF-8 and malformed escapes still land in the parameter.
            (d.clone(), "/workspaces/%ff", WS, &[("id", "\u{fffd}")]),
            (d.clone(), "/workspaces/%zz", WS, &[("id", "%zz")]),
            (d.clone(), "/workspaces/x%2", WS, &[("id", "x%2")]),
            // Double encoding is decoded once, like the upstream.
            (d.clone(), "/workspaces/%252e", WS, &[("id", "%2e")]),
            // Dot segments kept literally (gin does not clean): still gated, never let through.
            (d.clone(), "/workspaces/..", WS, &[("id", "..")]),
            (
                p.clone(),
                "/workspaces/%2e%2e/secrets",
                SECRETS,
                &[("id", "..")],
            ),
            // RFC 3986 reading of `//..`: `/workspaces/x//../secrets` is `/workspaces/x/secrets`.
            (
                p.clone(),
                "/workspaces/x//../secrets",
                SECRETS,
                &[("id", "x")],
            ),
            // The guard against self-approval cannot be dodged by encoding.
            (
                p.clone(),
                "/workspaces/x/approvals/y%2Fdecide",
                DECIDE,
                &[("id", "x"), ("approval_id", "y")],
            ),
            (
                p.clone(),
                "/workspaces/x/approvals/y/decide/",
                DECIDE,
                &[("id", "x"), ("approval_id", "y")],
            ),
            (
                p.clone(),
                "/workspaces/x/approvals/y/./decide",
                DECIDE,
                &[("id", "x"), ("approval_id", "y")],
            ),
            (
                p.clone(),
                "/workspaces/x/approvals/y/%64ecide",
                DECIDE,
                &[("id", "x"), ("approval_id", "y")],
            ),
            (
                p.clone(),
                "/workspaces/x/approvals/y\\decide",
                DECIDE,
                &[("id", "x"), ("approval_id", "y")],
            ),
            // Case-sensitive, like gin.
            (d.clone(), "/Workspaces/x", None, &[]),
            (d.clone(), "/workspaces", None, &[]),
            (d.clone(), "/workspaces/", None, &[]),
            (d.clone(), "/workspaces/x/y", None, &[]),
            (d.clone(), "/", None, &[]),
            (d.clone(), "", None, &[]),
            (d.clone(), "/workspaces/x/..", None, &[]),
            (d.clone(), "/x/../workspaces", None, &[]),
            // `{*rest}` captures the remainder, possibly empty.
            (
                d.clone(),
                "/files/a/b/c",
                Some("/files/{*path}"),
                &[("path", "a/b/c")],
            ),
            (
                d.clone(),
                "/files//a/./b/",
                Some("/files/{*path}"),
                &[("path", "a/b")],
            ),
            (d.clone(), "/files", Some("/files/{*path}"), &[("path", "")]),
            (
                d.clone(),
                "/files/",
                Some("/files/{*path}"),
                &[("path", "")],
            ),
            (
                d.clone(),
                "/files/a%2Fb",
                Some("/files/{*path}"),
                &[("path", "a/b")],
            ),
        ];
        let t = table();
        for (method, raw, want, params) in cases {
            let got = t.find(&method, raw);
            let shared = normalise(raw);
            assert_eq!(
                t.find_normalized(&method, &shared).map(|m| *m.value),
                want,
                "{method} {raw:?}"
            );
            assert_eq!(got.as_ref().map(|m| *m.value), want, "{method} {raw:?}");
            if let Some(m) = got {
                let got_params: Vec<(&str, &str)> = m.params.iter().collect();
                assert_eq!(got_params, params.to_vec(), "{method} {raw:?}");
            }
        }
    }

    #[test]
    fn method_match_is_exact() {
        let t = table();
        assert!(t.find(&Method::DELETE, "/workspaces/x").is_some());
        assert!(t.find(&Method::GET, "/workspaces/x").is_none());
        assert!(t.find(&Method::PUT, "/workspaces/x/secrets").is_some());
        assert!(t.find(&Method::GET, "/admin/export").is_some());
        assert!(
            t.find(&Method::HEAD, "/admin/export").is_none(),
            "HEAD is not GET"
        );
        let lower = Method::from_bytes(b"delete").expect("extension method");
        assert!(
            t.find(&lower, "/workspaces/x").is_none(),
            "methods are case-sensitive"
        );
    }

    #[test]
    fn most_specific_wins_whatever_the_insertion_order() {
        let patterns = [
            "/w/{id}",
            "/w/special",
            "/w/{id}/{*rest}",
            "/w/{*rest}",
            "/w/{id}/x",
            "/w/special/x",
            "/{a}/{b}/x",
            "/w/{id}/{sub}",
        ];
        let cases = [
            ("/w/special", "/w/special"),
            ("/w/other", "/w/{id}"),
            ("/w", "/w/{*rest}"),
            ("/w/other/x", "/w/{id}/x"),
            ("/w/special/x", "/w/special/x"),
            ("/w/other/y", "/w/{id}/{sub}"),
            ("/w/other/y/z", "/w/{id}/{*rest}"),
            ("/v/other/x", "/{a}/{b}/x"),
        ];
        // Every rotation and its reverse: the winner never depends on the order of `add`.
        for shift in 0..patterns.len() {
            let mut order = patterns.to_vec();
            order.rotate_left(shift);
            for order in [order.clone(), order.into_iter().rev().collect()] {
                let mut t = RouteTable::new();
                for p in &order {
                    t.add(&[Method::DELETE], p, *p).expect("valid pattern");
                }
                for (raw, want) in cases {
                    let got = t.find(&Method::DELETE, raw).map(|m| *m.value);
                    assert_eq!(got, Some(want), "{raw} with order {order:?}");
                }
            }
        }
    }

    #[test]
    fn equally_specific_patterns_keep_insertion_order() {
        let mut t = RouteTable::new();
        t.add(&[Method::DELETE], "/w/{a}", "first").expect("valid");
        t.add(&[Method::DELETE], "/w/{b}", "second").expect("valid");
        t.add(&[Method::POST], "/w/{c}", "post").expect("valid");
        assert_eq!(
            t.find(&Method::DELETE, "/w/x").map(|m| *m.value),
            Some("first")
        );
        assert_eq!(
            t.find(&Method::POST, "/w/x").map(|m| *m.value),
            Some("post")
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn primary_reading_wins_over_alternatives() {
        // `/w/a%2Fb`: the upstream sees `/w/a/b`; only when that matches nothing is `/w/{id}` tried.
        let mut t = RouteTable::new();
        t.add(&[Method::DELETE], "/w/{id}", "one").expect("valid");
        t.add(&[Method::DELETE], "/w/{id}/{sub}", "two")
            .expect("valid");
        let m = t.find(&Method::DELETE, "/w/a%2Fb").expect("matched");
        assert_eq!(
            (*m.value, m.params.get("id"), m.params.get("sub")),
            ("two", Some("a"), Some("b"))
        );
    }

    #[test]
    fn add_rejects_bad_patterns_and_keeps_the_table_unchanged() {
        let mut t: RouteTable<()> = RouteTable::new();
        assert!(t.add(&[Method::GET], "workspaces/{id}", ()).is_err());
        assert!(t.add(&[Method::GET], "/w/{id", ()).is_err());
        assert!(t.is_empty());
    }

    #[test]
    fn empty_table_finds_nothing() {
        let t: RouteTable<()> = RouteTable::new();
        assert!(t.find(&Method::DELETE, "/workspaces/x").is_none());
        assert!(t.find(&Method::DELETE, "/workspaces/%2e").is_none());
    }

    /// The method pre-check: a method no entry names rules the request out before its path is read,
    /// and a pattern that fails to parse adds no method.
    #[test]
    fn has_method_knows_every_method_an_entry_names() {
        let t = table();
        for m in [Method::DELETE, Method::POST, Method::PUT, Method::GET] {
            assert!(t.has_method(&m), "{m}");
        }
        for m in [Method::HEAD, Method::PATCH, Method::OPTIONS] {
            assert!(!t.has_method(&m), "{m}");
            assert!(t.find(&m, "/workspaces/x").is_none());
        }
        let mut t = RouteTable::new();
        assert!(t.add(&[Method::PATCH], "/x/{", "bad").is_err());
        assert!(!t.has_method(&Method::PATCH));
        assert!(RouteTable::<()>::new().find(&Method::GET, "/").is_none());
    }
}
