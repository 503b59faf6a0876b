//! Route pattern compilation and matching. Pure: no IO.
//!
//! Input: a config pattern such as `/workspaces/{id}/files/{*rest}`. Output: a [`Pattern`], split
//! once at load into segments so matching only compares borrowed segment strings.
//!
//! Grammar: the pattern starts with `/`; segments are separated by single `/`; each segment is a
//! literal, `{name}` (exactly one path segment) or `{*name}` (the remaining segments, joined with
//! `/`; it may be empty, so `/files/{*rest}` also matches `/files` — fail closed — and must be the
//! last segment). Names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`), unique within a pattern.
//! Literals are compared case-sensitively with the *decoded* request segment, so they may not
//! contain `%`, `\`, `?`, `#`, braces, or be `.`/`..`; empty segments (`//`, trailing `/`) are
//! rejected. The root pattern `/` matches only the root path.
//!
//! Specificity (README, "What the gate does, precisely"): more literal segments wins; otherwise, at the first differing segment, a
//! literal beats a parameter, a parameter beats the end of the pattern, which beats `{*rest}`.
//! [`Pattern::rank`] encodes this as a totally ordered key (greater = more specific).

use std::sync::Arc;

use super::{Params, PatternError};

/// One compiled pattern segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Arc<str>),
    Rest(Arc<str>),
}

/// Specificity key: literal count, then per-segment kinds (greater = more specific).
pub(super) type Rank = (usize, Vec<u8>);

const KIND_LITERAL: u8 = 3;
const KIND_PARAM: u8 = 2;
const KIND_END: u8 = 1;
const KIND_REST: u8 = 0;

/// A compiled route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    source: Box<str>,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Compile `pattern`, rejecting anything ambiguous with a message naming the problem.
    pub(crate) fn parse(pattern: &str) -> Result<Self, PatternError> {
        let err = |msg: String| {
            Err(PatternError(format!(
                "invalid path pattern {pattern:?}: {msg}"
            )))
        };
        let Some(body) = pattern.strip_prefix('/') else {
            return err("must start with '/'".into());
        };
        let mut segments = Vec::new();
        if !body.is_empty() {
            for (i, raw) in body.split('/').enumerate() {
                match parse_segment(raw) {
                    Ok(seg) => segments.push(seg),
                    Err(msg) => return err(format!("segment {} {raw:?}: {msg}", i + 1)),
                }
            }
        }
        if let Some(msg) = check_names(&segments) {
            return err(msg);
        }
        Ok(Pattern {
            source: pattern.into(),
            segments,
        })
    }

    /// The pattern as written in the config.
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// The names of the parameters this pattern captures, in pattern order.
    pub(crate) fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Literal(_) => None,
            Segment::Param(name) | Segment::Rest(name) => Some(&**name),
        })
    }

    /// The specificity key of this pattern; see the module doc.
    pub(super) fn rank(&self) -> Rank {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let mut kinds: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => KIND_LITERAL,
                Segment::Param(_) => KIND_PARAM,
                Segment::Rest(_) => KIND_REST,
            })
            .collect();
        if !matches!(self.segments.last(), Some(Segment::Rest(_))) {
            kinds.push(KIND_END);
        }
        (literals, kinds)
    }

    /// Whether the (already normalised) path segments match. Allocates nothing.
    pub(super) fn is_match<'a>(&self, mut path: impl Iterator<Item = &'a str>) -> bool {
        for seg in &self.segments {
            match (seg, path.next()) {
                (Segment::Rest(_), _) => return true,
                (Segment::Literal(lit), Some(got)) if **lit == *got => {}
                (Segment::Param(_), Some(_)) => {}
                _ => return false,
            }
        }
        path.next().is_none()
    }

    /// The parameters captured from a path that [`Pattern::is_match`]ed.
    pub(crate) fn captures<'a>(&self, mut path: impl Iterator<Item = &'a str>) -> Params {
        let mut params = Params::default();
        for seg in &self.segments {
            match seg {
                Segment::Literal(_) => {
                    path.next();
                }
                Segment::Param(name) => {
                    params.push(name.clone(), path.next().unwrap_or("").to_owned())
                }
                Segment::Rest(name) => {
                    let rest: Vec<&str> = path.by_ref().collect();
                    params.push(name.clone(), rest.join("/"));
                }
            }
        }
        params
    }
}

/// Parse one segment of a pattern.
fn parse_segment(raw: &str) -> Result<Segment, String> {
    if raw.is_empty() {
        return Err("empty segment ('//' or trailing '/')".into());
    }
    if raw == "." || raw == ".." {
        return Err("dot segments never match a normalised path".into());
    }
    let Some(inner) = raw.strip_prefix('{') else {
        if let Some(c) = raw
            .chars()
            .find(|c| matches!(c, '{' | '}' | '%' | '\\' | '?' | '#'))
        {
            return Err(match c {
                '{' | '}' => "braces mixed with text; a parameter must be the whole segment".into(),
                _ => format!("{c:?} is not allowed in a literal (literals match the decoded path)"),
            });
        }
        return Ok(Segment::Literal(raw.into()));
    };
    let Some(inner) = inner.strip_suffix('}') else {
        return Err(if raw.contains('}') {
            "braces mixed with text; a parameter must be the whole segment".into()
        } else {
            "unclosed '{'".into()
        });
    };
    if inner.contains(['{', '}']) {
        return Err("braces mixed with text; a parameter must be the whole segment".into());
    }
    let (rest, name) = match inner.strip_prefix('*') {
        Some(name) => (true, name),
        None => (false, inner),
    };
    if name.is_empty() {
        return Err("empty parameter name".into());
    }
    if !is_identifier(name) {
        return Err(format!(
            "parameter name {name:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    Ok(if rest {
        Segment::Rest(name.into())
    } else {
        Segment::Param(name.into())
    })
}

/// Reject a `{*rest}` that is not last and duplicate parameter names.
fn check_names(segments: &[Segment]) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let name = match seg {
            Segment::Literal(_) => continue,
            Segment::Rest(name) if i + 1 != segments.len() => {
                return Some(format!("{{*{name}}} must be the last segment"))
            }
            Segment::Param(name) | Segment::Rest(name) => &**name,
        };
        if seen.contains(&name) {
            return Some(format!("duplicate parameter name {name:?}"));
        }
        seen.push(name);
    }
    None
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_patterns_are_rejected_with_a_clear_message() {
        let cases = [
            ("workspaces/{id}", "must start with '/'"),
            ("", "must start with '/'"),
            ("/w/{}", "empty parameter name"),
            ("/w/{*}", "empty parameter name"),
            ("/w/{id", "unclosed '{'"),
            ("/w/{id}x", "braces mixed with text"),
            ("/w/x{id}", "braces mixed with text"),
            ("/w/id}", "braces mixed with text"),
            ("/w/{a}{b}", "braces mixed with text"),
            ("/w/{*rest}/x", "must be the last segment"),
            ("/w/{id}/{id}", "duplicate parameter name \"id\""),
            ("/w/{id}/{*id}", "duplicate parameter name \"id\""),
            ("/w/{1id}", "not an identifier"),
            ("/w/{a-b}", "not an identifier"),
            ("/w//x", "empty segment"),
            ("/w/", "empty segment"),
            ("/w/./x", "dot segments"),
            ("/w/../x", "dot segments"),
            ("/w/a%2Fb", "'%' is not allowed"),
            ("/w/a\\b", "'\\\\' is not allowed"),
            ("/w?x=1", "'?' is not allowed"),
        ];
        for (pattern, want) in cases {
            let err = Pattern::parse(pattern).expect_err(pattern).0;
            assert!(err.contains(want), "{pattern:?}: {err}");
            assert!(err.contains(&format!("{pattern:?}")), "{pattern:?}: {err}");
        }
    }

    #[test]
    fn good_patterns_compile() {
        for p in [
            "/",
            "/w",
            "/w/{id}",
            "/w/{_id2}/x/{*rest}",
            "/{*all}",
            "/w/caf\u{e9}",
            "/w/a.b",
        ] {
            assert_eq!(Pattern::parse(p).expect(p).as_str(), p);
        }
        let names: Vec<String> = Pattern::parse("/w/{id}/x/{*rest}")
            .expect("valid")
            .param_names()
            .map(str::to_owned)
            .collect();
        assert_eq!(names, ["id", "rest"]);
    }

    #[test]
    fn matching_and_captures() {
        type Captures = Option<&'static [(&'static str, &'static str)]>;
        let cases: [(&str, &[&str], Captures); 9] = [
            ("/", &[], Some(&[])),
            ("/", &["a"], None),
            ("/w/{id}", &["w", "x"], Some(&[("id", "x")])),
            ("/w/{id}", &["w"], None),
            ("/w/{id}", &["w", "x", "y"], None),
            ("/w/{id}", &["W", "x"], None),
            ("/w/{*rest}", &["w"], Some(&[("rest", "")])),
            ("/w/{*rest}", &["w", "a", "b"], Some(&[("rest", "a/b")])),
            (
                "/{a}/x/{b}",
                &["1", "x", "2"],
                Some(&[("a", "1"), ("b", "2")]),
            ),
        ];
        for (pattern, path, want) in cases {
            let p = Pattern::parse(pattern).expect(pattern);
            let matched = p.is_match(path.iter().copied());
            assert_eq!(matched, want.is_some(), "{pattern} {path:?}");
            if let Some(want) = want {
                let params = p.captures(path.iter().copied());
                assert_eq!(
                    params.iter().collect::<Vec<_>>(),
                    want.to_vec(),
                    "{pattern} {path:?}"
                );
            }
        }
    }

    #[test]
    fn rank_orders_by_specificity() {
        let rank = |p: &str| Pattern::parse(p).expect(p).rank();
        assert!(rank("/w/x") > rank("/w/{id}"));
        assert!(rank("/w/{id}") > rank("/w/{*rest}"));
        assert!(rank("/w") > rank("/w/{*rest}"));
        assert!(rank("/w/x/{id}") > rank("/w/{id}/x"));
        assert!(rank("/{a}/b/c") > rank("/a/{b}/{c}"));
    }
}
