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
//! [`path::needs_normalisation`]) `find` allocates nothing unless it matches (the params).

pub mod path;
pub mod pattern;

pub use path::{canonical, needs_normalisation, normalise, Normalized};
pub use pattern::Pattern;

/// Path parameters captured by `{name}` and `{*rest}` segments, in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(std::sync::Arc<str>, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn push(&mut self, name: std::sync::Arc<str>, value: String) {
        self.0.push((name, value));
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, v.as_str()))
    }
}

/// A successful match: the entry and what its parameters captured.
#[derive(Debug)]
pub struct RouteMatch<'t, T> {
    pub value: &'t T,
    pub params: Params,
}

/// An invalid path pattern in the config (reported by config validation with table and key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

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
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an entry. `pattern` uses `{name}` for one segment and `{*rest}` for the remainder
    /// (see [`pattern`] for the grammar). Methods match exactly (`HEAD` is not `GET`).
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry's value, most specific first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.value)
    }

    /// Whether any entry matches `method`. When none does, no path can match either.
    pub fn has_method(&self, method: &http::Method) -> bool {
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
mod tests;
