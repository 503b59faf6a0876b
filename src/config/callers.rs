//! `[[callers]]` (caller classes and their `when` rules) → [`Callers`], together with `[jwt]` and
//! `[[token_sources]]` (compiled in `auth.rs`).
//!
//! `when` forms, exactly one per table: `{claim, present = true}`, `{claim, equals = V}`,
//! `{claim, one_of = [..]}`, `{all = [..]}`, `{any = [..]}`. Class names are unique; `admin`
//! implies `approver`; a class both `gated` and `approver`/`admin` is an error (a gated caller can
//! never decide).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value as Json;
use toml::Value;

use super::auth;
use super::file::{Errors, Section};
use super::validate::Env;
use crate::caller::{CallerClass, Callers, When};
use crate::gate::Mode;

pub(crate) fn compile(root: &Section<'_>, env: Env<'_>, mode: Mode, errs: &mut Errors) -> Callers {
    let classes = classes(root, errs);
    let (jwt, subject_claim) = auth::jwt(root, env, mode, errs);
    let sources = auth::token_sources(root, env, mode, &subject_claim, errs);
    Callers {
        classes,
        jwt,
        sources,
        subject_claim,
    }
}

/// With the gate on (shadow or enforce) and routes configured, some credential must be able to
/// become a gated caller, or every gated route silently passes: a gate with no gated class, or
/// one whose gated classes no configured source can produce (their claims come from nowhere),
/// is a configuration error. A gated class that cannot be produced while another can is only
/// a warning (e.g. `ADMIN_TOKEN` gated but unset in this environment).
///
/// What a source can produce: the JWT rules and an `http` source, any claims; an `env` source,
/// exactly its static claims, and only for the class that wins on them (the first whose `when`
/// holds); a `sql` source, the claims its query names (a claim name that is not an identifier
/// of the query — unquoted ones as Postgres folds them to lower case — cannot be a column).
pub(super) fn check_gated_reachable(callers: &Callers, errs: &mut Errors) {
    let gated: Vec<(usize, &CallerClass)> = callers
        .classes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.gated)
        .map(|(i, c)| (i, &**c))
        .collect();
    if gated.is_empty() {
        errs.push(
            "callers",
            "no caller class is `gated = true`: with the gate on, no request would ever need \
             an approval (set MOLECULE_PLATFORM_APPROVAL_GATE off, or mark the agents' class gated)",
        );
        return;
    }
    let produced = |class: &CallerClass| {
        callers.jwt.is_some()
            || callers
                .sources
                .iter()
                .any(|s| produces(s, class, &callers.classes))
    };
    let unreachable: Vec<(usize, &CallerClass)> = gated
        .iter()
        .copied()
        .filter(|(_, c)| !produced(c))
        .collect();
    let problem = |class: &CallerClass| {
        format!(
            "no configured credential source can produce the claims of gated class {:?}: \
             configure [jwt] or a [[token_sources]] entry that yields them",
            &*class.name
        )
    };
    if unreachable.len() < gated.len() {
        for (i, class) in unreachable {
            tracing::warn!(at = %format!("callers[{i}].when"), "{}", problem(class));
        }
        return;
    }
    for (i, class) in unreachable {
        errs.push(format!("callers[{i}].when"), problem(class));
    }
    errs.push(
        "routes",
        "no gated caller class can be reached by any credential, so every route would pass ungated",
    );
}

/// Whether `source` can yield claims that classify as `class` (see [`check_gated_reachable`]).
fn produces(
    source: &crate::caller::TokenSource,
    class: &CallerClass,
    classes: &[Arc<CallerClass>],
) -> bool {
    use crate::caller::TokenSourceKind as K;
    match &source.kind {
        K::Env { claims, .. } => classes
            .iter()
            .find(|c| c.when.holds(claims))
            .is_some_and(|c| c.name == class.name),
        K::Http(_) => true,
        K::Sql { query, .. } => names_only(&class.when, &identifiers(query)),
    }
}

/// The identifiers of a SQL text: quoted ones as written, unquoted ones lower-cased (Postgres
/// folds them), so a claim can only be a column the query could name.
fn identifiers(query: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            let quoted: String = chars.by_ref().take_while(|&c| c != '"').collect();
            out.insert(quoted);
        } else if c == '\'' {
            // A string literal is no identifier.
            for c in chars.by_ref() {
                if c == '\'' {
                    break;
                }
            }
        } else if c.is_alphanumeric() || c == '_' {
            let mut ident = c.to_lowercase().collect::<String>();
            while let Some(&n) = chars.peek() {
                if !(n.is_alphanumeric() || n == '_') {
                    break;
                }
                ident.extend(n.to_lowercase());
                chars.next();
            }
            out.insert(ident);
        }
    }
    out
}

/// Whether every claim `when` needs could be a column of the query (`identifiers`).
fn names_only(when: &When, idents: &HashSet<String>) -> bool {
    match when {
        When::Present { claim } | When::Equals { claim, .. } | When::OneOf { claim, .. } => {
            idents.contains(claim)
        }
        When::All(rules) => rules.iter().all(|r| names_only(r, idents)),
        When::Any(rules) => rules.iter().any(|r| names_only(r, idents)),
    }
}

fn classes(root: &Section<'_>, errs: &mut Errors) -> Vec<Arc<CallerClass>> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for s in root.tables("callers", errs) {
        s.deny_unknown(&["name", "when", "gated", "approver", "admin"], errs);
        let name = s.string("name", errs).map(|n| n.trim().to_owned());
        match &name {
            None if !s.has("name") => errs.push(s.key_at("name"), "is required"),
            Some(n) if n.is_empty() => errs.push(s.key_at("name"), "must not be empty"),
            Some(n) if !names.insert(n.clone()) => errs.push(
                s.key_at("name"),
                format!("{n:?} is used by another caller class"),
            ),
            _ => {}
        }
        let when = match s.value("when") {
            Some(v) => when(v, &s.key_at("when"), errs),
            None => {
                errs.push(
                    s.key_at("when"),
                    "is required, e.g. { claim = \"org_token_id\", present = true }",
                );
                None
            }
        };
        let gated = s.boolean("gated", errs).unwrap_or(false);
        let admin = s.boolean("admin", errs).unwrap_or(false);
        let approver = s.boolean("approver", errs).unwrap_or(false) || admin;
        if gated && approver {
            let key = if admin { "admin" } else { "approver" };
            errs.push(
                s.key_at(key),
                "a gated caller class can never decide approvals; drop `gated` or this key",
            );
        }
        if let (Some(name), Some(when)) = (name.filter(|n| !n.is_empty()), when) {
            out.push(Arc::new(CallerClass {
                name: name.into(),
                when,
                gated,
                approver,
                admin,
            }));
        }
    }
    out
}

const WHEN_FORMS: &[&str] = &["present", "equals", "one_of", "all", "any"];

/// Parse one `when` table; problems are reported at `at` (`callers[0].when.all[1].claim`).
pub(crate) fn when(v: &Value, at: &str, errs: &mut Errors) -> Option<When> {
    let Some(t) = v.as_table() else {
        errs.push(
            at,
            "expected a table like { claim = \"C\", present = true }",
        );
        return None;
    };
    let s = Section::new(at, t);
    s.deny_unknown(
        &["claim", "present", "equals", "one_of", "all", "any"],
        errs,
    );
    let forms: Vec<&str> = WHEN_FORMS.iter().copied().filter(|k| s.has(k)).collect();
    let [form] = forms.as_slice() else {
        errs.push(
            at,
            format!(
                "needs exactly one of {}, found {}",
                WHEN_FORMS.join(", "),
                forms.len()
            ),
        );
        return None;
    };
    match *form {
        "all" | "any" => {
            if s.has("claim") {
                errs.push(s.key_at("claim"), format!("not allowed with `{form}`"));
            }
            let list = combined(&s, form, errs)?;
            Some(if *form == "all" {
                When::All(list)
            } else {
                When::Any(list)
            })
        }
        _ => claim_rule(&s, form, errs),
    }
}

fn combined(s: &Section<'_>, form: &str, errs: &mut Errors) -> Option<Vec<When>> {
    let at = s.key_at(form);
    let Some(items) = s.value(form).and_then(Value::as_array) else {
        errs.push(&at, "expected an array of `when` tables");
        return None;
    };
    if items.is_empty() {
        errs.push(&at, "must not be empty");
        return None;
    }
    let n = items.len();
    let list: Vec<When> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| when(v, &format!("{at}[{i}]"), errs))
        .collect();
    (list.len() == n).then_some(list)
}

fn claim_rule(s: &Section<'_>, form: &str, errs: &mut Errors) -> Option<When> {
    let claim = s.string("claim", errs).map(|c| c.trim().to_owned());
    match &claim {
        None if !s.has("claim") => {
            errs.push(s.key_at("claim"), format!("is required with `{form}`"))
        }
        Some(c) if c.is_empty() => errs.push(s.key_at("claim"), "must not be empty"),
        _ => {}
    }
    let at = s.key_at(form);
    let value = s.value(form)?;
    let rule = match form {
        "present" => match value.as_bool() {
            Some(true) => Some(When::Present {
                claim: String::new(),
            }),
            _ => {
                errs.push(at, "only `present = true` is supported");
                None
            }
        },
        "equals" => scalar(value, &at, errs).map(|value| When::Equals {
            claim: String::new(),
            value,
        }),
        _ => one_of(value, &at, errs).map(|values| When::OneOf {
            claim: String::new(),
            values,
        }),
    };
    let claim = claim.filter(|c| !c.is_empty())?;
    Some(match rule? {
        When::Present { .. } => When::Present { claim },
        When::Equals { value, .. } => When::Equals { claim, value },
        When::OneOf { values, .. } => When::OneOf { claim, values },
        other => other,
    })
}

fn one_of(value: &Value, at: &str, errs: &mut Errors) -> Option<Vec<Json>> {
    let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
        errs.push(
            at,
            "expected a non-empty array of strings, numbers or booleans",
        );
        return None;
    };
    let n = items.len();
    let values: Vec<Json> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| scalar(v, &format!("{at}[{i}]"), errs))
        .collect();
    (values.len() == n).then_some(values)
}

/// A string, number or boolean, as the JSON value claims are compared with.
fn scalar(v: &Value, at: &str, errs: &mut Errors) -> Option<Json> {
    let json = match v {
        Value::String(s) => Some(Json::String(s.clone())),
        Value::Integer(i) => Some(Json::from(*i)),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(Json::Number),
        Value::Boolean(b) => Some(Json::Bool(*b)),
        _ => None,
    };
    if json.is_none() {
        errs.push(
            at,
            format!(
                "expected a string, number or boolean, found {}",
                v.type_str()
            ),
        );
    }
    json
}
