//! `[molecule]` (docs/molecule.md §8) → [`MirrorSettings`] (the canvas mirror), or `None` when the mirror
//! is off.
//!
//! Keys: `mirror_approvals` (default false), `server_url` (default `[upstream] url`; http or
//! https, no query), `token_env` (the env var holding the credential the mirror sends to the
//! server's API; required when mirroring, an unset or empty var is an error), `anchor_workspace`
//! (a UUID; required when mirroring: the workspace whose row carries an approval whose scope is
//! not a workspace id). With `mirror_approvals = false` the other keys are still type-checked but
//! nothing is required. `worker` (default true): whether this replica runs the mirror worker;
//! with several replicas set it false on all but one — every replica with the mirror on still
//! answers the canvas's decide calls on mirrored rows as votes. Messages name the variable,
//! never its value.

use std::time::Duration;

use super::file::{Errors, Section};
use super::validate::{http_base_url, nonempty_env, Env};

const KEYS: &[&str] = &[
    "mirror_approvals",
    "server_url",
    "token_env",
    "anchor_workspace",
    "worker",
];

/// How often the mirror re-checks the server's rows and catches up (tests shorten it).
pub(super) const DEFAULT_RESYNC: Duration = Duration::from_secs(10);

/// The canvas mirror's settings (present only when `mirror_approvals = true`).
#[derive(Clone)]
pub struct MirrorSettings {
    /// The server's base URL, without a trailing `/`.
    pub(crate) server_url: String,
    /// The variable `token` came from (for logs).
    pub(crate) token_env: String,
    /// The credential sent as `Authorization: Bearer …` to the server. Never logged.
    pub(crate) token: String,
    /// The workspace that carries rows of approvals whose scope is not a workspace id.
    pub(crate) anchor_workspace: uuid::Uuid,
    /// Period of the resync pass (re-create lost or auto-denied rows, catch up).
    pub resync: Duration,
    /// This replica runs the mirror worker (`worker`, default true); the decide interception
    /// runs whenever the mirror is on.
    pub(crate) worker: bool,
}

impl std::fmt::Debug for MirrorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorSettings")
            .field("server_url", &self.server_url)
            .field("token_env", &self.token_env)
            .field("anchor_workspace", &self.anchor_workspace)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

pub(crate) fn compile(
    root: &Section<'_>,
    env: Env<'_>,
    upstream_url: &http::Uri,
    errs: &mut Errors,
) -> Option<MirrorSettings> {
    let s = root.table("molecule", errs)?;
    s.deny_unknown(KEYS, errs);
    let enabled = s.boolean("mirror_approvals", errs).unwrap_or(false);
    let worker = s.boolean("worker", errs).unwrap_or(true);
    let server_url = s.string("server_url", errs);
    let token_env = s.string("token_env", errs);
    let anchor = s.string("anchor_workspace", errs);

    let server_url = match server_url {
        None => Some(upstream_url.to_string().trim_end_matches('/').to_owned()),
        Some(u) => match http_base_url(u.trim()) {
            Ok(u) => Some(u),
            Err(msg) => {
                errs.push(s.key_at("server_url"), msg);
                None
            }
        },
    };
    let anchor = match anchor {
        None => {
            if enabled && !s.has("anchor_workspace") {
                errs.push(
                    s.key_at("anchor_workspace"),
                    "required when mirror_approvals = true: the workspace id (a UUID) whose \
                     approvals carry org-wide actions",
                );
            }
            None
        }
        Some(a) => match uuid::Uuid::parse_str(a.trim()) {
            Ok(id) => Some(id),
            Err(_) => {
                errs.push(
                    s.key_at("anchor_workspace"),
                    format!("{a:?} is not a workspace id (a UUID)"),
                );
                None
            }
        },
    };
    let token = match token_env.as_deref().map(str::trim) {
        None => {
            if enabled && !s.has("token_env") {
                errs.push(
                    s.key_at("token_env"),
                    "required when mirror_approvals = true: the env var holding the credential \
                     for the server's approvals API",
                );
            }
            None
        }
        Some("") => {
            errs.push(s.key_at("token_env"), "must name an environment variable");
            None
        }
        Some(var) => match nonempty_env(env, var) {
            Some(v) => Some((var.to_owned(), v.trim().to_owned())),
            None if enabled => {
                errs.push(
                    s.key_at("token_env"),
                    format!("the environment variable {var} is unset or empty"),
                );
                None
            }
            None => None,
        },
    };
    if !enabled {
        return None;
    }
    let (server_url, anchor_workspace, (token_env, token)) = (server_url?, anchor?, token?);
    Some(MirrorSettings {
        server_url,
        token_env,
        token,
        anchor_workspace,
        resync: DEFAULT_RESYNC,
        worker,
    })
}
