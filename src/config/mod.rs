//! Configuration: raw TOML mirror (`file.rs`, unknown keys rejected) → validation collecting every
//! error with its table and key (`validate.rs`) → the compiled [`Config`] the stages use.
//!
//! Env overrides beat the file: `GATEWAY_LISTEN`, `GATEWAY_ADMIN_LISTEN`, `GATEWAY_UPSTREAM`,
//! `DATABASE_URL`; the gate's mode comes from `MOLECULE_PLATFORM_APPROVAL_GATE` only.
//!
//! Absent tables and keys take the defaults the README's Configuration reference lists (`[jwt]`, `[[callers]]`, `[[routes]]`,
//! `[[guards]]` and `[[token_sources]]` default to none). See `auth.rs` for how missing secrets
//! are treated (an unset HS secret is only an error when the gate's mode is not off).
//!
//! `[[token_sources]]` (opaque-token sources; README, "Opaque tokens and sessions"), tried in order:
//! `kind = "sql"` with `url_env` (or `url`) and a `query` binding `sha256(bearer)` as `$1`, whose
//! row's columns become claims; `kind = "env"` with `env` (the var holding the token, compared in
//! constant time) and `claims`. An `env` source whose var is unset is skipped with a warning.
//!
//! The hot-reloadable part (routes, guards, callers, TTLs, mode ceilings) is [`Policy`], built
//! whole and swapped whole; listeners and the store URL need a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod auth;
mod callers;
mod file;
mod molecule;
mod notify;
mod routes;
#[cfg(test)]
mod tests;
mod validate;

pub use molecule::{MirrorSettings, DEFAULT_RESYNC};
pub use validate::{load, parse};

use crate::caller::Callers;
use crate::gate::{GateRule, Mode};
use crate::route::RouteTable;
use crate::store::Ttls;

/// The default config path (env `GATEWAY_CONFIG` overrides).
pub const DEFAULT_PATH: &str = "config/gateway.toml";

/// A compiled, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    pub store: StoreSettings,
    pub policy: Arc<Policy>,
    /// `[[notify]]` targets (README, Notifications), in file order. Not hot-reloaded: a change needs a restart.
    pub notify: Vec<crate::notify::NotifyTarget>,
    /// `[molecule]` (docs/molecule.md §8): the canvas mirror, `None` when off. Read at start only.
    pub molecule: Option<MirrorSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// How long a request body may take.
    pub body_timeouts: BodyTimeouts,
}

/// `[listen] body_read_timeout` / `body_idle_timeout`, default 30 s each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeouts {
    /// The whole body of a gated request that is buffered must arrive within this (else 408).
    pub read: Duration,
    /// A body relayed as it arrives is aborted when nothing arrives for this long.
    pub idle: Duration,
}

impl Default for BodyTimeouts {
    fn default() -> Self {
        Self {
            read: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Base URL: scheme `http`, authority, and a path prefix (may be empty, never ends in `/`).
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `[listen] trusted_proxies`: front proxies whose `X-Forwarded-Proto` is kept; from any
    /// other peer it is replaced by how the gateway was reached (`http`). Kept here because
    /// the upstream client writes the forwarded fields.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
}

/// Guards: a gated caller may never call these (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRule {
    /// `"METHOD path"` as configured, for logs.
    pub name: String,
}

/// Gate settings from `[gate]` plus the mode from the env flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSettings {
    pub mode: Mode,
    pub ttls: Ttls,
    pub max_body_bytes: usize,
    pub retry_after: Duration,
    /// Base of the 202's `Location`, without a trailing `/`.
    pub public_admin_url: String,
    pub approvals_required: u32,
    /// Longest `Prefer: wait=N` honoured on a gated request (larger N is clamped; zero turns
    /// waiting off). `[gate] max_wait`, default `"60s"`.
    pub max_wait: Duration,
    /// `[gate] unknown_callers`: what happens to an unrecognised caller on a gated route.
    pub unknown_callers: crate::gate::UnknownCallers,
}

/// Everything that decides a request; rebuilt and swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    pub gate: GateSettings,
    pub routes: RouteTable<Arc<GateRule>>,
    pub guards: RouteTable<GuardRule>,
    pub callers: Callers,
}

/// One configuration problem, naming its table and key (e.g. `routes[2].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// A few lines for `check-config` and the start log: what was loaded, never a secret (the
    /// store URL is shown by scheme only, since it may carry a password).
    pub fn summary(&self) -> String {
        let p = &self.policy;
        let scheme = self.store.url.split(':').next().unwrap_or("?");
        format!(
            "gate mode {}; proxy {} admin {}; upstream {}; store {scheme}; {} route(s), {} guard(s), \
             {} caller class(es), jwt {}, {} token source(s), {} notify target(s), canvas mirror {}",
            p.gate.mode.as_str(),
            self.listen.proxy,
            self.listen.admin,
            self.upstream.url,
            p.routes.len(),
            p.guards.len(),
            p.callers.classes.len(),
            if p.callers.jwt.is_some() { "on" } else { "off" },
            p.callers.sources.len(),
            self.notify.len(),
            if self.molecule.is_some() { "on" } else { "off" },
        )
    }
}
