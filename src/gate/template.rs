//! Templates for `scope`, `reason` and context values: literal text with `{path.NAME}`,
//! `{query.NAME}`, `{header.NAME}`, `{claim.NAME}`, `{body.POINTER}` and `{caller}` references.
//!
//! Parsed once at config load into [`Part`]s, so rendering a request does no parsing and allocates
//! only its output (and a decoded query value). A literal brace is written doubled: `{{` renders
//! `{` and `}}` renders `}`; a lone `}` or an unclosed `{` is a parse error.
//!
//! What each reference renders to:
//! - `{path.NAME}`: the route parameter as captured (decoded) by the matcher; empty if absent.
//! - `{query.NAME}`: the first value of NAME in the query string, form-decoded (`+` is a space,
//!   `%XX` a byte; invalid UTF-8 replaced) like Go's `url.ParseQuery`, which also drops pairs with
//!   a malformed escape or a `;`; empty if absent.
//! - `{header.NAME}`: the first value (name case-insensitive); empty if absent. A value that is
//!   not valid UTF-8 is [`GateError::HeaderNotUtf8`] (400): rendering it lossily or as empty would
//!   let different requests share one approval.
//! - `{claim.NAME}`: a string claim as is; numbers, bools, objects, arrays as canonical JSON;
//!   absent or null is empty.
//! - `{caller}`: the caller class name, or empty.
//! - `{body.POINTER}`: see [`super::body`].
//! - `{body_sha256}`: lowercase hex SHA-256 of the raw body (of no bytes when there is none).
//!
//! Optional references: `{SOURCE.NAME?DEFAULT}` renders `DEFAULT` (possibly empty) when the
//! value is absent — a missing or null body field (an empty body has no fields), a query
//! parameter or header not sent, a claim absent or null. Without `?`, a body field is
//! required (400 when missing) and the other sources render empty when absent.

use http::HeaderName;

use super::body::{Body, BodyPointer};
use super::canonical::canonical_json;
use super::{GateError, RequestView};
use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// One piece of a template, resolved at load.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Path(String),
    Query(String),
    Header(HeaderName),
    Claim(String),
    Body(BodyPointer),
    BodySha256,
    Caller,
    /// `{SOURCE.NAME?DEFAULT}`: the inner reference, or `default` when its value is absent.
    Defaulted(Box<Part>, String),
}

/// Why a template does not parse; the message quotes the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub(crate) String);

impl Template {
    /// Parse a template from the config: literal text with `{SOURCE.NAME}` references (`{{` and
    /// `}}` for literal braces). Every reference is resolved here, so rendering cannot meet an
    /// unknown one.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(err(
                    source,
                    "has a lone `}` (write `}}` for a literal brace)",
                ));
            }
            let end = tail.find('}').ok_or_else(|| {
                err(
                    source,
                    "has an unclosed `{` (write `{{` for a literal brace)",
                )
            })?;
            let reference = &tail[1..end];
            if reference.contains('{') {
                return Err(err(source, "has a `{` inside a reference"));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(parse_reference(reference).map_err(|why| err(source, &why))?);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    pub(crate) fn needs_body(&self) -> bool {
        self.parts.iter().any(Part::needs_body)
    }

    /// The template as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Names of the `{path.NAME}` references, for checking them against the route pattern.
    pub(crate) fn path_params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Path(name) => Some(name.as_str()),
            Part::Defaulted(inner, _) => match &**inner {
                Part::Path(name) => Some(name.as_str()),
                _ => None,
            },
            _ => None,
        })
    }

    /// Render against one request. `body` is shared by all templates of the request.
    pub fn render(&self, req: &RequestView<'_>, body: &Body<'_>) -> Result<String, GateError> {
        let mut out = String::new();
        for part in &self.parts {
            part.render(req, body, &mut out)?;
        }
        Ok(out)
    }
}

impl Part {
    fn needs_body(&self) -> bool {
        match self {
            Part::Body(_) | Part::BodySha256 => true,
            Part::Defaulted(inner, _) => inner.needs_body(),
            _ => false,
        }
    }

    fn render(
        &self,
        req: &RequestView<'_>,
        body: &Body<'_>,
        out: &mut String,
    ) -> Result<(), GateError> {
        match self {
            Part::Literal(text) => out.push_str(text),
            Part::Path(name) => out.push_str(req.params.get(name).unwrap_or("")),
            Part::Query(name) => {
                render_query(req.uri.query().unwrap_or(""), name, out);
            }
            Part::Header(name) => render_header(req, name, out)?,
            Part::Claim(name) => render_claim(req.caller.claims.get(name), out),
            Part::Body(ptr) => body.render(ptr, out)?,
            Part::BodySha256 => out.push_str(&body.sha256_hex()),
            Part::Caller => out.push_str(req.caller.class_name().unwrap_or("")),
            Part::Defaulted(inner, default) => {
                if !inner.present(req, body)? {
                    out.push_str(default);
                    return Ok(());
                }
                inner.render(req, body, out)?;
            }
        }
        Ok(())
    }

    /// Whether the referenced value exists (for `?DEFAULT`).
    fn present(&self, req: &RequestView<'_>, body: &Body<'_>) -> Result<bool, GateError> {
        Ok(match self {
            Part::Query(name) => {
                let mut probe = String::new();
                render_query(req.uri.query().unwrap_or(""), name, &mut probe)
            }
            Part::Header(name) => req.headers.contains_key(name),
            Part::Claim(name) => !matches!(req.caller.claims.get(name), None | Some(Value::Null)),
            Part::Body(ptr) => body.has(ptr)?,
            _ => true,
        })
    }
}

fn err(source: &str, why: &str) -> TemplateError {
    TemplateError(format!("template {source:?} {why}"))
}

const SOURCES: &str =
    "path, query, header, claim, body (e.g. `{path.id}`), `{body_sha256}` or `{caller}`";

fn parse_reference(reference: &str) -> Result<Part, String> {
    if reference == "caller" {
        return Ok(Part::Caller);
    }
    if reference == "body_sha256" {
        return Ok(Part::BodySha256);
    }
    if let Some((inner, default)) = reference.split_once('?') {
        let inner = parse_reference(inner)?;
        if matches!(inner, Part::Caller | Part::BodySha256 | Part::Defaulted(..)) {
            return Err(format!(
                "has a default on `{{{reference}}}`, which is never absent"
            ));
        }
        return Ok(Part::Defaulted(Box::new(inner), default.to_owned()));
    }
    let Some((source, name)) = reference.split_once('.') else {
        return Err(format!(
            "has an unknown reference `{{{reference}}}`; use {SOURCES}"
        ));
    };
    if name.is_empty() {
        return Err(format!("has a reference `{{{reference}}}` without a name"));
    }
    match source {
        "path" => Ok(Part::Path(name.to_owned())),
        "query" => Ok(Part::Query(name.to_owned())),
        "claim" => Ok(Part::Claim(name.to_owned())),
        "header" => HeaderName::from_bytes(name.as_bytes())
            .map(Part::Header)
            .map_err(|_| format!("has an invalid header name in `{{{reference}}}`")),
        "body" => BodyPointer::parse(name).map(Part::Body),
        _ => Err(format!(
            "has an unknown reference source `{source}` in `{{{reference}}}`; use {SOURCES}"
        )),
    }
}

fn render_header(
    req: &RequestView<'_>,
    name: &HeaderName,
    out: &mut String,
) -> Result<(), GateError> {
    let Some(value) = req.headers.get(name) else {
        return Ok(());
    };
    let text = std::str::from_utf8(value.as_bytes()).map_err(|_| GateError::HeaderNotUtf8 {
        header: name.as_str().to_owned(),
    })?;
    out.push_str(text);
    Ok(())
}

fn render_claim(claim: Option<&Value>, out: &mut String) {
    match claim {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push_str(s),
        Some(other) => out.push_str(&canonical_json(other)),
    }
}

/// Append the first form-decoded value of `name` in `query` (Go `url.ParseQuery` semantics);
/// whether `name` was there.
fn render_query(query: &str, name: &str, out: &mut String) -> bool {
    for pair in query.split('&') {
        // Go rejects (drops) pairs holding a `;` or a malformed escape.
        if pair.is_empty() || pair.contains(';') || !escapes_valid(pair.as_bytes()) {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if FormDecode(key.as_bytes()).eq(name.bytes()) {
            let bytes: Vec<u8> = FormDecode(value.as_bytes()).collect();
            out.push_str(&String::from_utf8_lossy(&bytes));
            return true;
        }
    }
    false
}

fn escapes_valid(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Bytes of an `application/x-www-form-urlencoded` component, decoded; escapes checked beforehand.
struct FormDecode<'a>(&'a [u8]);

impl Iterator for FormDecode<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        match first {
            b'+' => Some(b' '),
            b'%' if rest.len() >= 2 => {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                let byte = hex(rest[0]) << 4 | hex(rest[1]);
                self.0 = &rest[2..];
                Some(byte)
            }
            other => Some(other),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // Table tests for template parsing and rendering.

    use std::sync::Arc;

    use http::{HeaderMap, HeaderValue, Uri};
    use serde_json::json;

    use super::*;
    use crate::caller::{Caller, CallerClass, When};
    use crate::route::Params;

    struct Req {
        params: Params,
        uri: Uri,
        headers: HeaderMap,
        caller: Caller,
        body: Vec<u8>,
    }

    fn req() -> Req {
        let mut params = Params::default();
        params.push(Arc::from("id"), "ws-1".to_owned());
        params.push(Arc::from("key"), "a b/c".to_owned());
        let mut headers = HeaderMap::new();
        headers.append("x-confirm-name", HeaderValue::from_static("Org Concierge"));
        headers.append("x-confirm-name", HeaderValue::from_static("second"));
        headers.append(
            "x-utf8",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        );
        headers.append("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let class = CallerClass {
            name: Arc::from("platform-agent"),
            when: When::Present {
                claim: "org_token_id".into(),
            },
            gated: true,
            approver: false,
            admin: false,
        };
        let claims = json!({"sub": "agent-7", "org": 42, "admin": false, "nil": null, "roles": ["a", "<b>"]});
        let caller = Caller {
            class: Some(Arc::new(class)),
            subject: Some("agent-7".into()),
            claims: claims.as_object().unwrap().clone(),
            actors: vec![],
            recognised: true,
        };
        Req {
        params,
        uri: Uri::from_static(
            "/workspaces/ws-1?name=a+b%2Fc&name=second&bad=%zz&x=1;y=2&e=&flag&%6Bey=%E2%9C%93&lat=%E9",
        ),
        headers,
        caller,
        body: br#"{"key":"OPENAI_API_KEY","n":3}"#.to_vec(),
    }
    }

    fn render(template: &str, r: &Req) -> Result<String, GateError> {
        let view = RequestView {
            method: &http::Method::POST,
            path: "/workspaces/ws-1",
            params: &r.params,
            uri: &r.uri,
            headers: &r.headers,
            caller: &r.caller,
            body: Some(&r.body),
        };
        Template::parse(template)
            .unwrap()
            .render(&view, &Body::new(view.body))
    }

    #[test]
    fn renders_each_source() {
        let r = req();
        let cases: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("", ""),
            ("{path.id}", "ws-1"),
            ("delete workspace {path.id}", "delete workspace ws-1"),
            ("{path.key}|{path.nope}", "a b/c|"),
            ("{query.name}", "a b/c"),
            ("{query.key}", "\u{2713}"),
            (
                "[{query.bad}][{query.x}][{query.e}][{query.flag}][{query.absent}]",
                "[][][][][]",
            ),
            ("{query.lat}", "\u{fffd}"),
            ("{header.X-Confirm-Name}", "Org Concierge"),
            ("{header.x-utf8}", "caf\u{e9}"),
            ("{header.x-absent}", ""),
            (
                "{claim.sub}/{claim.org}/{claim.admin}/{claim.nil}/{claim.absent}",
                "agent-7/42/false//",
            ),
            ("{claim.roles}", r#"["a","\u003cb\u003e"]"#),
            ("{caller}", "platform-agent"),
            (
                "write secret {body.key} ({body./n})",
                "write secret OPENAI_API_KEY (3)",
            ),
            ("{{literal}} {{{path.id}}} }}", "{literal} {ws-1} }"),
        ];
        for (template, want) in cases {
            assert_eq!(
                render(template, &r).as_deref(),
                Ok(*want),
                "template {template:?}"
            );
        }
    }

    #[test]
    fn render_errors_are_typed() {
        let r = req();
        assert_eq!(
            render("{header.x-latin1}", &r),
            Err(GateError::HeaderNotUtf8 {
                header: "x-latin1".into()
            })
        );
        assert_eq!(
            render("{body.value}", &r),
            Err(GateError::FieldMissing {
                field: "body.value".into()
            })
        );
    }

    #[test]
    fn anonymous_caller_renders_empty() {
        let mut r = req();
        r.caller = Caller::anonymous();
        assert_eq!(render("[{caller}][{claim.sub}]", &r).as_deref(), Ok("[][]"));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("{path}", "unknown reference `{path}`"),
            ("{nope.x}", "unknown reference source `nope`"),
            ("{Path.id}", "unknown reference source `Path`"),
            ("{path.}", "without a name"),
            ("{}", "unknown reference `{}`"),
            ("{caller.name}", "unknown reference source `caller`"),
            ("a {path.id", "unclosed `{`"),
            ("a } b", "lone `}`"),
            ("{path.{id}}", "`{` inside a reference"),
            ("{header.bad name}", "invalid header name"),
            ("{body.}", "without a name"),
            ("{body.a..b}", "empty field name"),
        ];
        for (template, want) in cases {
            let err = Template::parse(template).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "template {template:?}: error {err:?} lacks {want:?}"
            );
            assert!(
                err.contains(&format!("{template:?}")),
                "error {err:?} names the template"
            );
        }
    }

    #[test]
    fn reports_path_params_and_body_need() {
        let t = Template::parse("{path.id}-{query.q}-{path.key}").unwrap();
        assert_eq!(t.path_params().collect::<Vec<_>>(), ["id", "key"]);
        assert!(!t.needs_body());
        assert!(Template::parse("x {body./a/b}").unwrap().needs_body());
        assert!(!Template::parse("{{body.a}}").unwrap().needs_body());
        assert_eq!(Template::parse("{{x}}").unwrap().source(), "{{x}}");
    }

    #[test]
    fn optional_references_render_their_default_when_absent() {
        let r = req();
        let cases = [
            ("{body.reset?false}", "false"),
            ("{body.n?0}", "3"),
            ("{query.confirm?no}", "no"),
            ("{query.flag?no}", ""),
            ("{query.e?x}", ""),
            ("{claim.nil?none}", "none"),
            ("{claim.sub?none}", "agent-7"),
            ("{header.x-absent?-}", "-"),
        ];
        for (template, want) in cases {
            assert_eq!(render(template, &r).unwrap(), want, "{template}");
        }
        let mut empty = req();
        empty.body.clear();
        assert_eq!(render("{body.reset?false}", &empty).unwrap(), "false");
        assert!(matches!(
            render("{body.reset}", &empty),
            Err(GateError::BodyNotJson { .. })
        ));
        assert!(Template::parse("{caller?x}").is_err());
    }

    #[test]
    fn body_sha256_is_the_raw_body_digest() {
        let r = req();
        let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&r.body));
        assert_eq!(render("{body_sha256}", &r).unwrap(), want);
        assert!(Template::parse("{body_sha256}").unwrap().needs_body());
    }
}
