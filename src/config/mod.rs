//! Configuration: raw TOML mirror (`file.rs`, unknown keys rejected) → validation collecting every
//! error with its table and key (`validate.rs`) → the compiled [`Config`] the stages use.
//!
//! Env overrides beat the file: `GATEWAY_LISTEN`, `GATEWAY_ADMIN_LISTEN`, `GATEWAY_UPSTREAM`,
//! `DATABASE_URL`; the gate's mode comes from `MOLECULE_PLATFORM_APPROVAL_GATE` only.
//!
//! The hot-reloadable part (routes, guards, callers, TTLs, mode ceilings) is [`Policy`], built
//! whole and swapped whole; listeners and the store URL need a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Base URL: scheme `http`, authority, and a path prefix (may be empty, never ends in `/`).
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
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
