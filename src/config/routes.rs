//! `[[routes]]` and `[[guards]]` → the two route tables.
//!
//! A route: `action`, exactly one of `method` / `methods` (upper case), a `path` pattern that
//! compiles, `scope` / `reason` / `context` templates that parse and only name `{path.X}`
//! parameters the pattern captures, optional `mode` ceiling and `approvals_required`. A guard:
//! `method(s)` + `path`. Each problem is reported at `routes[i].key` / `guards[i].key`.

use std::sync::Arc;

use http::Method;

use super::file::{Errors, Section};
use super::validate::{quorum, unknown_callers};
use super::GuardRule;
use crate::gate::{binding, Bind, GateRule, Mode, Template};
use crate::route::{Pattern, RouteTable};

const ROUTE_KEYS: &[&str] = &[
    "action",
    "method",
    "methods",
    "path",
    "scope",
    "reason",
    "context",
    "mode",
    "approvals_required",
    "bind",
    "unknown_callers",
];

pub(super) fn compile_routes(root: &Section<'_>, errs: &mut Errors) -> RouteTable<Arc<GateRule>> {
    let mut table = RouteTable::new();
    for s in root.tables("routes", errs) {
        s.deny_unknown(ROUTE_KEYS, errs);
        let methods = methods(&s, errs);
        let path = path(&s, errs);
        // An invalid pattern is reported by `table.add` below; its params are then unchecked.
        let pattern = path.as_deref().and_then(|p| Pattern::parse(p).ok());
        let params: Vec<String> = pattern
            .iter()
            .flat_map(|p| p.param_names().map(str::to_owned))
            .collect();
        let rule = rule(&s, &params, pattern.is_some(), errs);
        if let (Some(methods), Some(path), Some(rule)) = (methods, path, rule) {
            if let Err(e) = table.add(&methods, &path, Arc::new(rule)) {
                errs.push(s.key_at("path"), e.to_string());
            }
        }
    }
    table
}

pub(super) fn compile_guards(root: &Section<'_>, errs: &mut Errors) -> RouteTable<GuardRule> {
    let mut table = RouteTable::new();
    for s in root.tables("guards", errs) {
        s.deny_unknown(&["method", "methods", "path"], errs);
        let (Some(methods), Some(path)) = (methods(&s, errs), path(&s, errs)) else {
            continue;
        };
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        let name = format!("{} {path}", names.join(","));
        if let Err(e) = table.add(&methods, &path, GuardRule { name }) {
            errs.push(s.key_at("path"), e.to_string());
        }
    }
    table
}

fn rule(
    s: &Section<'_>,
    params: &[String],
    check_params: bool,
    errs: &mut Errors,
) -> Option<GateRule> {
    let action = s.string("action", errs).map(|a| a.trim().to_owned());
    match &action {
        None if !s.has("action") => errs.push(s.key_at("action"), "is required"),
        Some(a) if a.is_empty() => errs.push(s.key_at("action"), "must not be empty"),
        _ => {}
    }
    let scope = match s.string("scope", errs) {
        Some(src) => template(&src, &s.key_at("scope"), params, check_params, errs),
        None => {
            if !s.has("scope") {
                errs.push(
                    s.key_at("scope"),
                    "is required (the approval's scope, e.g. \"{path.id}\")",
                );
            }
            None
        }
    };
    // Without a reason the approval still needs a human-readable description: the action name.
    let reason_src = s.string("reason", errs).or_else(|| action.clone());
    let reason =
        reason_src.and_then(|src| template(&src, &s.key_at("reason"), params, check_params, errs));
    let mut context = Vec::new();
    for (k, src) in s.string_map("context", errs).unwrap_or_default() {
        let at = format!("{}.{k}", s.key_at("context"));
        if let Some(t) = template(&src, &at, params, check_params, errs) {
            context.push((k, t));
        }
    }
    let mode = s
        .string("mode", errs)
        .and_then(|m| route_mode(&m, &s.key_at("mode"), errs));
    let approvals_required = quorum(
        s.integer("approvals_required", errs),
        &s.key_at("approvals_required"),
        errs,
    );
    let bind = match s.string("bind", errs).as_deref() {
        None | Some("request") => Bind::Request,
        Some("context") => Bind::Context,
        Some(other) => {
            errs.push(
                s.key_at("bind"),
                format!("{other:?} is not allowed; use \"request\" or \"context\""),
            );
            Bind::Request
        }
    };
    if bind == Bind::Request && context.iter().any(|(k, _)| k == binding::KEY) {
        errs.push(
            format!("{}.{}", s.key_at("context"), binding::KEY),
            "is reserved for the bound request when bind = \"request\"",
        );
    }
    let unknown_callers = s
        .string("unknown_callers", errs)
        .and_then(|v| unknown_callers(&v, &s.key_at("unknown_callers"), errs));
    let action = action.filter(|a| !a.is_empty())?;
    Some(GateRule {
        action: action.into(),
        scope: scope?,
        reason: reason?,
        context,
        mode,
        approvals_required,
        bind,
        unknown_callers,
    })
}

fn route_mode(m: &str, at: &str, errs: &mut Errors) -> Option<Mode> {
    match m {
        "off" => Some(Mode::Off),
        "shadow" => Some(Mode::Shadow),
        "enforce" => Some(Mode::Enforce),
        _ => {
            errs.push(
                at,
                format!("{m:?} is not a mode; use \"off\", \"shadow\" or \"enforce\""),
            );
            None
        }
    }
}

fn template(
    src: &str,
    at: &str,
    params: &[String],
    check_params: bool,
    errs: &mut Errors,
) -> Option<Template> {
    let t = match Template::parse(src) {
        Ok(t) => t,
        Err(e) => {
            errs.push(at, e.to_string());
            return None;
        }
    };
    let mut ok = true;
    if check_params {
        for name in t.path_params() {
            if !params.iter().any(|p| p == name) {
                errs.push(
                    at,
                    format!("{{path.{name}}} is not a parameter of the route's path"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(t)
}

fn path(s: &Section<'_>, errs: &mut Errors) -> Option<String> {
    let p = s.string("path", errs);
    match &p {
        None if !s.has("path") => errs.push(s.key_at("path"), "is required"),
        Some(p) if !p.starts_with('/') => {
            errs.push(s.key_at("path"), format!("{p:?} must start with `/`"))
        }
        _ => return p,
    }
    None
}

/// Exactly one of `method` / `methods`, each an upper-case HTTP method token.
pub(crate) fn methods(s: &Section<'_>, errs: &mut Errors) -> Option<Vec<Method>> {
    let (names, at) = match (s.has("method"), s.has("methods")) {
        (true, true) => {
            errs.push(
                s.key_at("methods"),
                "give either `method` or `methods`, not both",
            );
            return None;
        }
        (false, false) => {
            errs.push(
                s.key_at("method"),
                "is required (`method = \"DELETE\"` or `methods = [\"POST\", \"PUT\"]`)",
            );
            return None;
        }
        (true, false) => (vec![s.string("method", errs)?], s.key_at("method")),
        (false, true) => (s.strings("methods", errs)?, s.key_at("methods")),
    };
    if names.is_empty() {
        errs.push(&at, "must list at least one method");
        return None;
    }
    let mut out: Vec<Method> = Vec::with_capacity(names.len());
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        let item_at = if s.has("methods") {
            format!("{at}[{i}]")
        } else {
            at.clone()
        };
        match method(name) {
            Ok(m) if out.contains(&m) => {
                errs.push(item_at, format!("{name} is listed twice"));
                ok = false;
            }
            Ok(m) => out.push(m),
            Err(msg) => {
                errs.push(item_at, msg);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn method(name: &str) -> Result<Method, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{name:?} is not an upper-case HTTP method like \"DELETE\""
        ));
    }
    Method::from_bytes(name.as_bytes()).map_err(|e| format!("{name:?} is not an HTTP method: {e}"))
}
