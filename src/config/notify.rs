//! `[[notify]]` (README, Notifications) → [`NotifyTarget`]s.
//!
//! Keys: `kind` (`"webhook"` | `"slack"`, required), `url` or `url_env` (exactly one), `secret_env`
//! (webhook only, optional), `events` (default: every transition), `name` (optional, the
//! `target` label of the failure metric; default the entry's index). Secrets come from the
//! environment only: a `secret_env` or `url_env` naming an unset variable is an error (an
//! operator who asked for signed notifications never gets unsigned ones). Messages name
//! variables, never their values.

use super::file::{Errors, Section};
use super::validate::{nonempty_env, Env};
use crate::notify::{NotifyKind, NotifyTarget};
use crate::store::EventKind;

const KEYS: &[&str] = &["kind", "url", "url_env", "secret_env", "events", "name"];

/// The transitions a target may ask for (the SSE kinds), in lifecycle order.
pub(super) const EVENTS: [EventKind; 7] = [
    EventKind::Requested,
    EventKind::Approved,
    EventKind::Denied,
    EventKind::Bypassed,
    EventKind::Consumed,
    EventKind::Expired,
    EventKind::Withdrawn,
];

pub(crate) fn compile(root: &Section<'_>, env: Env<'_>, errs: &mut Errors) -> Vec<NotifyTarget> {
    let mut out: Vec<NotifyTarget> = Vec::new();
    for (i, s) in root.tables("notify", errs).into_iter().enumerate() {
        let before = errs.0.len();
        s.deny_unknown(KEYS, errs);
        let kind = match s.string("kind", errs).as_deref() {
            Some("webhook") => Some(NotifyKind::Webhook),
            Some("slack") => Some(NotifyKind::Slack),
            Some(other) => {
                errs.push(
                    s.key_at("kind"),
                    format!("{other:?} is not allowed; use \"webhook\" or \"slack\""),
                );
                None
            }
            None => {
                if !s.has("kind") {
                    errs.push(s.key_at("kind"), "required: \"webhook\" or \"slack\"");
                }
                None
            }
        };
        let url = url(&s, env, errs);
        let secret = match s.string("secret_env", errs) {
            None => None,
            Some(var) => {
                if kind == Some(NotifyKind::Slack) {
                    errs.push(
                        s.key_at("secret_env"),
                        "only a webhook target signs its body (Slack does not check signatures)",
                    );
                }
                match nonempty_env(env, var.trim()) {
                    Some(v) => Some(v.into_bytes()),
                    None => {
                        errs.push(
                            s.key_at("secret_env"),
                            format!("the environment variable {var} is unset or empty"),
                        );
                        None
                    }
                }
            }
        };
        let events = match s.strings("events", errs) {
            None => EVENTS.to_vec(),
            Some(names) => {
                if names.is_empty() {
                    errs.push(s.key_at("events"), "must name at least one event");
                }
                let mut kinds = Vec::new();
                for (j, n) in names.iter().enumerate() {
                    match EVENTS.iter().find(|k| k.as_str() == n.trim()) {
                        Some(k) if !kinds.contains(k) => kinds.push(*k),
                        Some(_) => {}
                        None => errs.push(
                            format!("{}[{j}]", s.key_at("events")),
                            format!(
                                "{n:?} is not an event; use some of: {}",
                                EVENTS.map(EventKind::as_str).join(", ")
                            ),
                        ),
                    }
                }
                kinds
            }
        };
        let name = s.string("name", errs).map(|n| n.trim().to_owned());
        if let Some(n) = &name {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                errs.push(
                    s.key_at("name"),
                    "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
                );
            }
        }
        let label = name.unwrap_or_else(|| i.to_string());
        if out.iter().any(|t| t.label == label) {
            errs.push(
                s.key_at("name"),
                format!("{label:?} is already the name of another [[notify]] entry"),
            );
        }
        if errs.0.len() != before {
            continue;
        }
        if let (Some(kind), Some(url)) = (kind, url) {
            out.push(NotifyTarget {
                label,
                kind,
                url,
                secret,
                events,
            });
        }
    }
    out
}

/// `url` or `url_env`: exactly one, an http(s) URL with a host.
fn url(s: &Section<'_>, env: Env<'_>, errs: &mut Errors) -> Option<http::Uri> {
    let (value, at) = match (s.string("url", errs), s.string("url_env", errs)) {
        (Some(_), Some(_)) => {
            errs.push(s.key_at("url"), "set either url or url_env, not both");
            return None;
        }
        (Some(u), None) => (u, s.key_at("url")),
        (None, Some(var)) => match nonempty_env(env, var.trim()) {
            Some(u) => (u, s.key_at("url_env")),
            None => {
                errs.push(
                    s.key_at("url_env"),
                    format!("the environment variable {var} is unset or empty"),
                );
                return None;
            }
        },
        (None, None) => {
            if !s.has("url") && !s.has("url_env") {
                errs.push(s.key_at("url"), "required (or url_env)");
            }
            return None;
        }
    };
    // Never echo a URL read from the environment: a Slack webhook URL is a secret.
    let shown = if at.ends_with("url_env") {
        "the URL".to_owned()
    } else {
        format!("{value:?}")
    };
    match value.trim().parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() =>
        {
            Some(uri)
        }
        _ => {
            errs.push(at, format!("{shown} is not an http:// or https:// URL"));
            None
        }
    }
}
