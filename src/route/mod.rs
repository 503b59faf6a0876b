//! Stage 2: route matching. Pure: no IO.
//!
//! Input: the request's method and raw path (as sent, before any decoding). Output: the most
//! specific matching entry and its path parameters. Used twice: once for guards (checked first),
//! once for gated routes. Paths are normalised before matching (see `path.rs`); a path that cannot
//! be normalised unambiguously but would match after decoding counts as matched (fail closed).
//! The request itself is always forwarded with its original bytes.

// Implementation lives in path.rs / pattern.rs (to be written).

/// Path parameters captured by `{name}` and `{*rest}` segments, in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(std::sync::Arc<str>, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| &**k == name).map(|(_, v)| v.as_str())
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
    entries: Vec<(Vec<http::Method>, String, T)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an entry. `pattern` uses `{name}` for one segment and `{*rest}` for the remainder.
    pub fn add(&mut self, methods: &[http::Method], pattern: &str, value: T) -> Result<(), PatternError> {
        // SKELETON: replaced by the real compiler in pattern.rs.
        self.entries.push((methods.to_vec(), pattern.to_owned(), value));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most specific entry matching `method` and `raw_path` (the request-target's path, as sent).
    pub fn find(&self, method: &http::Method, raw_path: &str) -> Option<RouteMatch<'_, T>> {
        // SKELETON: exact literal match only; replaced by the real matcher.
        self.entries
            .iter()
            .find(|(m, p, _)| m.contains(method) && p == raw_path)
            .map(|(_, _, value)| RouteMatch { value, params: Params::default() })
    }
}
