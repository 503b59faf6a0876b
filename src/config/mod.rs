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
mod validate;

pub use molecule::MirrorSettings;
pub use validate::{load, parse};

use crate::caller::Callers;
use crate::gate::{GateRule, Mode};
use crate::route::RouteTable;
use crate::store::Ttls;

/// The default config path (env `GATEWAY_CONFIG` overrides).
pub(crate) const DEFAULT_PATH: &str = "config/gateway.toml";

/// A compiled, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) listen: Listen,
    pub(crate) upstream: Upstream,
    pub(crate) store: StoreSettings,
    /// The hot-reloadable part: what decides each request.
    pub policy: Arc<Policy>,
    /// `[[notify]]` targets (README, Notifications), in file order. Not hot-reloaded: a change needs a restart.
    pub(crate) notify: Vec<crate::notify::NotifyTarget>,
    /// `[molecule]` (docs/molecule.md §8): the canvas mirror, `None` when off. Read at start only.
    pub molecule: Option<MirrorSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listen {
    pub(crate) proxy: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// How long a request body may take.
    pub(crate) body_timeouts: BodyTimeouts,
}

/// `[listen] body_read_timeout` / `body_idle_timeout`, default 30 s each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeouts {
    /// The whole body of a gated request that is buffered must arrive within this (else 408).
    pub(crate) read: Duration,
    /// A body relayed as it arrives is aborted when nothing arrives for this long.
    pub(crate) idle: Duration,
}

impl Default for BodyTimeouts {
    fn default() -> Self {
        Self {
            read: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

/// `[upstream]`: where requests are forwarded, and the client's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Base URL: scheme `http`, authority, and a path prefix (may be empty, never ends in `/`).
    pub url: http::Uri,
    /// Bound on opening a connection (default 2 s; past it, 502).
    pub connect_timeout: Duration,
    /// Bound on waiting for the response head (default 60 s; past it, 504).
    pub request_timeout: Duration,
    /// `[listen] trusted_proxies`: front proxies whose `X-Forwarded-Proto` is kept; from any
    /// other peer it is replaced by how the gateway was reached (`http`). Kept here because
    /// the upstream client writes the forwarded fields.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreSettings {
    /// `sqlite://…` or `postgres://…`.
    pub(crate) url: String,
}

/// Guards: a gated caller may never call these (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRule {
    /// `"METHOD path"` as configured, for logs.
    pub(crate) name: String,
}

/// Gate settings from `[gate]` plus the mode from the env flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSettings {
    /// Off, shadow or enforce, from `MOLECULE_PLATFORM_APPROVAL_GATE` only.
    pub mode: Mode,
    /// `[gate] pending_ttl` and `approval_ttl`: how long an approval may stay pending, then
    /// approved and unconsumed.
    pub ttls: Ttls,
    /// Most body bytes buffered for a gated request (default 1 MiB; larger is 413).
    pub max_body_bytes: usize,
    /// `Retry-After` on the 202 (default 5 s).
    pub retry_after: Duration,
    /// Base of the 202's `Location`, without a trailing `/`.
    pub public_admin_url: String,
    /// Default quorum: distinct approvers needed (default 1; a route may override it).
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
    /// `[gate]` plus the mode.
    pub gate: GateSettings,
    /// `[[routes]]`: the destructive operations that need an approval from a gated caller.
    pub routes: RouteTable<Arc<GateRule>>,
    /// `[[guards]]`: what a gated caller may never call.
    pub guards: RouteTable<GuardRule>,
    /// `[[callers]]`, `[jwt]` and `[[token_sources]]`: who is calling.
    pub callers: Callers,
}

/// One configuration problem, naming its table and key (e.g. `routes[2].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) at: String,
    pub(crate) message: String,
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
    pub(crate) fn summary(&self) -> String {
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

#[cfg(test)]
mod tests {
    //! Table tests for config parsing, validation and compilation.

    mod shipped {
        //! The shipped config files load: `config/gateway.toml` on a fresh machine (gate off, no env) and
        //! with the gate on; `config/molecule.toml` with and without a Tokio runtime and with the gate off.

        use super::env_of;
        use crate::caller::TokenSourceKind;
        use crate::config::{load, DEFAULT_PATH};
        use crate::gate::Mode;

        #[test]
        fn shipped_default_config_starts_on_a_fresh_machine() {
            let c = load(std::path::Path::new(DEFAULT_PATH), &env_of(&[]))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.policy.gate.mode, Mode::Off);
            assert!(
                c.policy.callers.jwt.is_none(),
                "no secret and gate off: no HS verifier"
            );
            assert!(c.policy.routes.len() >= 10);
            assert_eq!(c.policy.guards.len(), 1);
            assert_eq!(c.policy.callers.classes.len(), 3);
        }

        #[test]
        fn shipped_default_config_loads_with_the_gate_on() {
            let env = [
                ("MOLECULE_PLATFORM_APPROVAL_GATE", "1"),
                ("GATEWAY_JWT_SECRET", "s3cret"),
            ];
            let c = load(std::path::Path::new("config/gateway.toml"), &env_of(&env))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.policy.gate.mode, Mode::Enforce);
            let jwt = c.policy.callers.jwt.as_ref().expect("verifier");
            assert_eq!(jwt.settings().hs_secret.as_deref(), Some(&b"s3cret"[..]));
        }

        const MOLECULE_ENV: &[(&str, &str)] = &[
            ("MOLECULE_PLATFORM_APPROVAL_GATE", "enforce"),
            ("GATEWAY_JWT_SECRET", "s3cret"),
            (
                "MOLECULE_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/molecule",
            ),
            ("ADMIN_TOKEN", "admin-secret"),
            (
                "MOLECULE_CP_TENANT_MEMBER_URL",
                "http://127.0.0.1:9/cp/auth/tenant-member?slug=acme",
            ),
        ];

        #[test]
        fn shipped_molecule_config_loads_outside_a_runtime() {
            let c = load(
                std::path::Path::new("config/molecule.toml"),
                &env_of(MOLECULE_ENV),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(c.store.url.starts_with("postgres://"));
            assert!(c.policy.routes.len() >= 40);
            // Every credential Molecule accepts has a source: org tokens, workspace tokens,
            // ADMIN_TOKEN and the canvas's cookie session.
            let kinds: Vec<&str> = c
                .policy
                .callers
                .sources
                .iter()
                .map(|s| match s.kind {
                    TokenSourceKind::Sql { .. } => "sql",
                    TokenSourceKind::Env { .. } => "env",
                    TokenSourceKind::Http(_) => "http",
                })
                .collect();
            assert_eq!(kinds, ["sql", "sql", "env", "http"]);
        }

        #[tokio::test]
        async fn shipped_molecule_config_loads_inside_a_runtime_without_connecting() {
            let c = load(
                std::path::Path::new("config/molecule.toml"),
                &env_of(MOLECULE_ENV),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let TokenSourceKind::Env { token, claims } = &c.policy.callers.sources[2].kind else {
                panic!("env source")
            };
            assert_eq!(token, b"admin-secret");
            assert_eq!(
                claims.get("admin_token"),
                Some(&serde_json::Value::Bool(true))
            );
        }

        #[test]
        fn shipped_molecule_config_loads_with_the_gate_off_and_no_env() {
            let c = load(std::path::Path::new("config/molecule.toml"), &env_of(&[]))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                c.policy.callers.sources.is_empty(),
                "unset vars skip both sources when off"
            );
        }
    }

    use std::collections::HashMap;
    use std::time::Duration;

    use super::molecule::DEFAULT_RESYNC;
    use super::*;
    use crate::caller::When;
    use crate::gate::Mode;

    pub(super) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn ok(text: &str, env: &[(&str, &str)]) -> Config {
        match parse(text, &env_of(env)) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn errors(text: &str, env: &[(&str, &str)]) -> Vec<ConfigError> {
        match parse(text, &env_of(env)) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.0,
        }
    }

    const ROUTE: &str =
    "[[routes]]\naction = \"a\"\nmethod = \"DELETE\"\npath = \"/w/{id}\"\nscope = \"{path.id}\"\n";

    #[test]
    fn absent_tables_take_the_spec_defaults() {
        let c = ok("", &[]);
        assert_eq!(c.listen.proxy.to_string(), "127.0.0.1:8080");
        assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9090");
        assert_eq!(
            c.listen.body_timeouts,
            crate::config::BodyTimeouts::default()
        );
        assert_eq!(c.listen.body_timeouts.read, Duration::from_secs(30));
        assert_eq!(c.listen.body_timeouts.idle, Duration::from_secs(30));
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:8081/");
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.upstream.request_timeout, Duration::from_secs(60));
        assert_eq!(c.store.url, "sqlite://data/approvals.db");
        let g = &c.policy.gate;
        assert_eq!(g.mode, Mode::Off);
        assert_eq!(g.ttls.pending, Duration::from_secs(24 * 3600));
        assert_eq!(g.ttls.approved, Duration::from_secs(3600));
        assert_eq!(g.max_body_bytes, 1_048_576);
        assert_eq!(g.retry_after, Duration::from_secs(5));
        assert_eq!(g.public_admin_url, "http://127.0.0.1:9090");
        assert_eq!(g.approvals_required, 1);
        assert_eq!(g.max_wait, Duration::from_secs(60));
        assert!(c.policy.callers.jwt.is_none());
        assert_eq!(c.policy.callers.subject_claim, "sub");
        assert!(c.policy.routes.is_empty() && c.policy.guards.is_empty());
        assert!(c.summary().contains("gate mode off"));
    }

    #[test]
    fn missing_file_is_one_error() {
        let e = load(
            std::path::Path::new("config/does-not-exist.toml"),
            &env_of(&[]),
        )
        .expect_err("missing file")
        .0;
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("cannot read"));
    }

    #[test]
    fn syntax_error_is_one_error_with_line_and_column() {
        let e = errors("[listen]\nproxy = \"127.0.0.1:1\"\nadmin = \n", &[]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].at.starts_with("line 3, column"), "{}", e[0].at);
    }

    /// One bad snippet → (where, what the message mentions). Each must be the only error.
    #[test]
    fn every_validation_error_kind_names_its_table_and_key() {
        let route = |extra: &str| {
            format!(
            "[[routes]]\naction = \"a\"\npath = \"/w/{{id}}\"\nscope = \"{{path.id}}\"\n{extra}"
        )
        };
        let cases: Vec<(String, &str, &str)> = vec![
        ("[listen]\nproxy = \"nope\"".into(), "listen.proxy", "socket address"),
        ("[listen]\nadmin = 9090".into(), "listen.admin", "expected a string"),
        ("[listen]\nbody_read_timeout = \"0s\"".into(), "listen.body_read_timeout", "greater than zero"),
        ("[listen]\nbody_idle_timeout = \"idle\"".into(), "listen.body_idle_timeout", "duration"),
        ("[upstream]\nurl = \"https://u:1\"".into(), "upstream.url", "https"),
        ("[upstream]\nurl = \"ftp://u:1\"".into(), "upstream.url", "http://"),
        ("[upstream]\nurl = \"http://u:1/p?x=1\"".into(), "upstream.url", "query"),
        ("[upstream]\nurl = \"http://u:1/p#f\"".into(), "upstream.url", "fragment"),
        ("[upstream]\nconnect_timeout = \"soon\"".into(), "upstream.connect_timeout", "duration"),
        ("[upstream]\nrequest_timeout = \"0s\"".into(), "upstream.request_timeout", "greater than zero"),
        ("[store]\nurl = \"mysql://x\"".into(), "store.url", "sqlite:"),
        ("[gate]\npending_ttl = \"0s\"".into(), "gate.pending_ttl", "greater than zero"),
        ("[gate]\napproval_ttl = \"1 fortnight\"".into(), "gate.approval_ttl", "duration"),
        ("[gate]\nretry_after = \"0ms\"".into(), "gate.retry_after", "greater than zero"),
        ("[gate]\nmax_body_bytes = 0".into(), "gate.max_body_bytes", "positive"),
        ("[gate]\nmax_wait = \"soon\"".into(), "gate.max_wait", "not a duration"),
        ("[gate]\npublic_admin_url = \"ftp://x\"".into(), "gate.public_admin_url", "http"),
        ("[gate]\napprovals_required = 0".into(), "gate.approvals_required", "at least 1"),
        ("listen = 3".into(), "listen", "expected a table"),
        ("[jwt]\nalgorithms = [\"HS256\", \"none\"]".into(), "jwt.algorithms[1]", "not supported"),
        ("[jwt]\nalgorithms = []".into(), "jwt.algorithms", "at least one"),
        ("[jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"/nonexistent.pem\"".into(), "jwt.public_key_file", "cannot read"),
        ("[jwt]\nalgorithms = [\"RS256\"]\njwks_url = \"file:///x\"".into(), "jwt.jwks_url", "http"),
        ("[jwt]\nleeway = \"a bit\"".into(), "jwt.leeway", "duration"),
        (route("methods = [\"POST\", \"get\"]"), "routes[0].methods[1]", "upper-case"),
        (route("methods = [\"POST\", \"POST\"]"), "routes[0].methods[1]", "twice"),
        (route("methods = []"), "routes[0].methods", "at least one"),
        (route(""), "routes[0].method", "required"),
        (route("method = \"GET\"\nmethods = [\"PUT\"]"), "routes[0].methods", "not both"),
        (route("method = \"GET\"\nmode = \"loud\""), "routes[0].mode", "shadow"),
        (route("method = \"GET\"\napprovals_required = 0"), "routes[0].approvals_required", "at least 1"),
        (route("method = \"GET\"\nreason = \"{path.nope}\""), "routes[0].reason", "path.nope"),
        (route("method = \"GET\"\ncontext = { k = \"{path.x}\" }"), "routes[0].context.k", "path.x"),
        (route("method = \"GET\"\ncontext = { k = 1 }"), "routes[0].context.k", "expected a string"),
        ("[[routes]]\naction = \"\"\nmethod = \"GET\"\npath = \"/x\"\nscope = \"s\"".into(), "routes[0].action", "empty"),
        ("[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nscope = \"s\"".into(), "routes[0].action", "required"),
        ("[[routes]]\naction = \"a\"\nmethod = \"GET\"\npath = \"/x\"".into(), "routes[0].scope", "required"),
        ("[[routes]]\naction = \"a\"\nmethod = \"GET\"\npath = \"x\"\nscope = \"s\"".into(), "routes[0].path", "start with"),
        ("[[guards]]\nmethod = \"POST\"".into(), "guards[0].path", "required"),
        ("[[guards]]\npath = \"/x\"".into(), "guards[0].method", "required"),
        ("[[callers]]\nname = \"a\"\nwhen = { claim = \"c\", present = true }\ngated = true\napprover = true".into(), "callers[0].approver", "never decide"),
        ("[[callers]]\nname = \"a\"\nwhen = { claim = \"c\", present = true }\ngated = true\nadmin = true".into(), "callers[0].admin", "never decide"),
        ("[[callers]]\nname = \"a\"".into(), "callers[0].when", "required"),
        ("[[callers]]\nwhen = { claim = \"c\", present = true }".into(), "callers[0].name", "required"),
        ("[[callers]]\nname = \"a\"\nwhen = { claim = \"c\" }".into(), "callers[0].when", "exactly one"),
        ("[[callers]]\nname = \"a\"\nwhen = { claim = \"c\", present = true, equals = 1 }".into(), "callers[0].when", "exactly one"),
        ("[[callers]]\nname = \"a\"\nwhen = { claim = \"c\", present = false }".into(), "callers[0].when.present", "present = true"),
        ("[[callers]]\nname = \"a\"\nwhen = { present = true }".into(), "callers[0].when.claim", "required"),
        ("[[callers]]\nname = \"a\"\nwhen = { claim = \"c\", one_of = [] }".into(), "callers[0].when.one_of", "non-empty"),
        ("[[callers]]\nname = \"a\"\nwhen = { claim = \"c\", equals = [1] }".into(), "callers[0].when.equals", "string, number or boolean"),
        ("[[callers]]\nname = \"a\"\nwhen = { all = [] }".into(), "callers[0].when.all", "empty"),
        ("[[callers]]\nname = \"a\"\nwhen = { any = [{ claim = \"c\" }] }".into(), "callers[0].when.any[0]", "exactly one"),
        ("[[callers]]\nname = \"a\"\nwhen = { all = [{ claim = \"c\", present = true }], claim = \"x\" }".into(), "callers[0].when.claim", "not allowed"),
        ("[[callers]]\nname = \"a\"\nwhen = \"c\"".into(), "callers[0].when", "expected a table"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"ldap\"".into(), "token_sources[0].kind", "\"sql\", \"env\" or \"http\""),
        ("[[token_sources]]\nname = \"t\"\nkind = \"env\"".into(), "token_sources[0].env", "required"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"env\"\nenv = \"T\"\nquery = \"q\"".into(), "token_sources[0].query", "only allowed"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"postgres://h/db\"".into(), "token_sources[0].query", "required"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"postgres://h/db\"\nquery = \"SELECT 1\"".into(), "token_sources[0].query", "$1"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"mysql://h/db\"\nquery = \"$1\"".into(), "token_sources[0].url", "postgres:"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nquery = \"$1\"".into(), "token_sources[0].url", "required"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"postgres://h/db\"\nurl_env = \"U\"\nquery = \"$1\"".into(), "token_sources[0].url_env", "not both"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"http\"\nurl = \"http://cp/check\"".into(), "token_sources[0].forward_headers", "required"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"http\"\nurl = \"ftp://cp\"\nforward_headers = [\"Cookie\"]".into(), "token_sources[0].url", "http://"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"http\"\nurl = \"http://cp\"\nforward_headers = [\"Cookie\"]\ncache_ttl = \"0s\"".into(), "token_sources[0].cache_ttl", "greater than zero"),
        ("[[token_sources]]\nname = \"t\"\nkind = \"env\"\nenv = \"T\"\nforward_headers = [\"Cookie\"]".into(), "token_sources[0].forward_headers", "only allowed"),
        (route("method = \"GET\"\nbind = \"everything\""), "routes[0].bind", "context"),
        (route("method = \"GET\"\ncontext = { request = \"x\" }"), "routes[0].context.request", "reserved"),
        (route("method = \"GET\"\nunknown_callers = \"maybe\""), "routes[0].unknown_callers", "refuse"),
        ("[gate]\nunknown_callers = \"allow\"".into(), "gate.unknown_callers", "pass"),
        ("[listen]\ntrusted_proxies = [\"10.0.0.0/33\"]".into(), "listen.trusted_proxies[0]", "CIDR"),
    ];
        for (text, at, needle) in cases {
            let e = errors(&text, &[]);
            assert_eq!(e.len(), 1, "one error expected for:\n{text}\ngot {e:?}");
            assert_eq!(e[0].at, at, "for:\n{text}");
            assert!(
                e[0].message.contains(needle),
                "{:?} lacks {needle:?} for:\n{text}",
                e[0].message
            );
        }
    }

    /// With the gate on, a configuration under which no request could ever need an approval is
    /// an error (it used to pass every gated request ungated).
    #[test]
    fn a_gate_no_caller_can_reach_is_an_error() {
        let route = "[[routes]]\naction = \"a\"\nmethod = \"DELETE\"\npath = \"/w/{id}\"\nscope = \"{path.id}\"\n";
        let gated = "[[callers]]\nname = \"agent\"\nwhen = { claim = \"org_token_id\", present = true }\ngated = true\n";
        let on = [("MOLECULE_PLATFORM_APPROVAL_GATE", "enforce"), ("T", "tok")];
        let problems = |text: &str, env: &[(&str, &str)]| -> Vec<String> {
            match parse(text, &env_of(env)) {
                Ok(_) => Vec::new(),
                Err(e) => e.0.into_iter().map(|e| e.at).collect(),
            }
        };
        let cases: Vec<(String, Vec<&str>)> = vec![
        (route.to_owned(), vec!["callers"]),
        (format!("{route}{gated}"), vec!["callers[0].when", "routes"]),
        (
            format!("{route}{gated}[[token_sources]]\nname = \"t\"\nkind = \"env\"\nenv = \"T\"\nclaims = {{ other = 1 }}\n"),
            vec!["callers[0].when", "routes"],
        ),
        (
            format!("{route}{gated}[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"postgres://h/db\"\nquery = \"SELECT id AS other FROM t WHERE h = $1\"\n"),
            vec!["callers[0].when", "routes"],
        ),
        // A substring of a column is no column; a quoted upper-case alias is not the claim.
        (
            format!("{route}[[callers]]\nname = \"agent\"\nwhen = {{ claim = \"org_token\", present = true }}\ngated = true\n[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"postgres://h/db\"\nquery = \"SELECT id AS org_token_id FROM t WHERE h = $1\"\n"),
            vec!["callers[0].when", "routes"],
        ),
        // An env source whose claims a class listed first wins: the gated class never gets them.
        (
            format!("{route}[[callers]]\nname = \"humans\"\nwhen = {{ claim = \"sub\", present = true }}\napprover = true\n{gated}[[token_sources]]\nname = \"t\"\nkind = \"env\"\nenv = \"T\"\nclaims = {{ sub = \"a\", org_token_id = \"x\" }}\n"),
            vec!["callers[1].when", "routes"],
        ),
    ];
        for (text, want) in cases {
            assert_eq!(problems(&text, &on), want, "for:\n{text}");
            assert!(problems(&text, &[]).is_empty(), "gate off: fine\n{text}");
        }
        for ok in [
        format!("{route}{gated}[[token_sources]]\nname = \"t\"\nkind = \"env\"\nenv = \"T\"\nclaims = {{ org_token_id = \"x\" }}\n"),
        format!("{route}{gated}[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"postgres://h/db\"\nquery = \"SELECT id AS org_token_id FROM t WHERE h = $1\"\n"),
        format!("{route}{gated}[[token_sources]]\nname = \"t\"\nkind = \"http\"\nurl = \"http://cp/x?slug=a\"\nforward_headers = [\"Cookie\"]\n"),
        // One gated class reachable, another not (say ADMIN_TOKEN unset here): a warning only.
        format!("{route}{gated}[[callers]]\nname = \"admin-token\"\nwhen = {{ claim = \"admin_token\", equals = true }}\ngated = true\n[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl = \"postgres://h/db\"\nquery = \"SELECT id::text AS org_token_id FROM t WHERE h = $1\"\n"),
    ] {
        assert_eq!(problems(&ok, &on), Vec::<String>::new(), "for:\n{ok}");
    }
    }

    #[test]
    fn every_problem_is_reported_in_one_run() {
        let text = "bogus = 1\n[listen]\nproxy = \"x\"\nport = 1\n[gate]\npending_ttl = \"0s\"\n\
        [[routes]]\naction = \"a\"\nmethod = \"get\"\npath = \"/w/{id}\"\nscope = \"{path.id}\"\ncolour = \"red\"\n\
        [[callers]]\nname = \"c\"\nwhen = { claim = \"x\", present = true, typo = 1 }\n\
        [[callers]]\nname = \"c\"\nwhen = { claim = \"y\", present = true }\n";
        let ats: Vec<String> = errors(text, &[("MOLECULE_PLATFORM_APPROVAL_GATE", "maybe")])
            .into_iter()
            .map(|e| e.at)
            .collect();
        for want in [
            "bogus",
            "listen.proxy",
            "listen.port",
            "gate.pending_ttl",
            "routes[0].method",
            "routes[0].colour",
            "callers[0].when.typo",
            "callers[1].name",
            "env.MOLECULE_PLATFORM_APPROVAL_GATE",
        ] {
            assert!(ats.iter().any(|a| a == want), "missing {want} in {ats:?}");
        }
        assert_eq!(ats.len(), 9, "{ats:?}");
    }

    #[test]
    fn unknown_keys_in_each_table_are_errors() {
        for (text, at) in [
            ("[upstream]\nurll = \"x\"", "upstream.urll"),
            ("[store]\npath = \"x\"", "store.path"),
            ("[jwt]\nsecret = \"x\"", "jwt.secret"),
            (
                "[[guards]]\nmethod = \"POST\"\npath = \"/x\"\naction = \"a\"",
                "guards[0].action",
            ),
            (
                "[[token_sources]]\nname = \"t\"\nkind = \"env\"\nenv = \"T\"\ntoken = \"x\"",
                "token_sources[0].token",
            ),
            (
                "[[callers]]\nname = \"a\"\nwhen = { claim = \"c\", present = true }\nrole = \"x\"",
                "callers[0].role",
            ),
        ] {
            let e = errors(text, &[]);
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].at, at);
            assert!(e[0].message.starts_with("unknown key"));
        }
    }

    #[test]
    fn env_overrides_beat_the_file() {
        let text = "[listen]\nproxy = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n[upstream]\nurl = \"http://a:1\"\n[store]\nurl = \"sqlite://x.db\"";
        let env = [
            ("GATEWAY_LISTEN", "0.0.0.0:8000"),
            ("GATEWAY_ADMIN_LISTEN", "127.0.0.1:9000"),
            ("GATEWAY_UPSTREAM", "http://up:81/base/"),
            ("DATABASE_URL", "postgres://db/x"),
        ];
        let c = ok(text, &env);
        assert_eq!(c.listen.proxy.to_string(), "0.0.0.0:8000");
        assert_eq!(c.listen.admin.to_string(), "127.0.0.1:9000");
        assert_eq!(c.upstream.url.to_string(), "http://up:81/base");
        assert_eq!(c.store.url, "postgres://db/x");
        let c = ok(text, &[("GATEWAY_LISTEN", "")]);
        assert_eq!(
            c.listen.proxy.to_string(),
            "127.0.0.1:1",
            "empty override counts as unset"
        );
    }

    #[test]
    fn invalid_env_overrides_name_the_variable() {
        let env = [
            ("GATEWAY_LISTEN", "x"),
            ("GATEWAY_ADMIN_LISTEN", "y"),
            ("GATEWAY_UPSTREAM", "https://up"),
            ("DATABASE_URL", "redis://:pw@x"),
        ];
        let e = errors("", &env);
        let ats: Vec<&str> = e.iter().map(|e| e.at.as_str()).collect();
        assert_eq!(
            ats,
            [
                "env.GATEWAY_LISTEN",
                "env.GATEWAY_ADMIN_LISTEN",
                "env.GATEWAY_UPSTREAM",
                "env.DATABASE_URL"
            ]
        );
        assert!(!e[3].message.contains("pw"), "never echo a store URL");
    }

    #[test]
    fn gate_flag_sets_the_mode_and_rejects_unknown_values() {
        assert_eq!(
            ok("", &[("MOLECULE_PLATFORM_APPROVAL_GATE", "shadow")])
                .policy
                .gate
                .mode,
            Mode::Shadow
        );
        assert_eq!(
            ok("", &[("MOLECULE_PLATFORM_APPROVAL_GATE", "TRUE")])
                .policy
                .gate
                .mode,
            Mode::Enforce
        );
        let e = errors("", &[("MOLECULE_PLATFORM_APPROVAL_GATE", "2")]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].at, "env.MOLECULE_PLATFORM_APPROVAL_GATE");
        assert!(e[0].message.contains("shadow") && e[0].message.contains("enforce"));
    }

    #[test]
    fn missing_hs_secret_is_an_error_only_when_the_gate_is_on() {
        let text = "[jwt]\nhs_secret_env = \"MY_SECRET\"";
        let e = errors(text, &[("MOLECULE_PLATFORM_APPROVAL_GATE", "shadow")]);
        assert_eq!((e.len(), e[0].at.as_str()), (1, "jwt.hs_secret_env"));
        assert!(e[0].message.contains("MY_SECRET"));
        assert!(ok(text, &[]).policy.callers.jwt.is_none());
        let c = ok(
        "[jwt]\nalgorithms = [\"HS256\", \"RS256\"]\npublic_key_file = \"tests/fixtures/keys/rsa_public.pem\"",
        &[],
    );
        let jwt = c.policy.callers.jwt.as_ref().expect("RS256 stays");
        assert_eq!(jwt.settings().algorithms, [jsonwebtoken::Algorithm::RS256]);
    }

    #[test]
    fn sql_source_without_its_url_var_is_an_error_when_on_and_skipped_when_off() {
        let text =
            "[[token_sources]]\nname = \"t\"\nkind = \"sql\"\nurl_env = \"DB\"\nquery = \"$1\"";
        let e = errors(text, &[("MOLECULE_PLATFORM_APPROVAL_GATE", "on")]);
        assert_eq!(e[0].at, "token_sources[0].url_env");
        assert!(ok(text, &[]).policy.callers.sources.is_empty());
        let e = errors(
            &format!("{text}\n[[token_sources]]\nname = \"t\"\nkind = \"env\"\nenv = \"X\""),
            &[("DB", "postgres://h/d")],
        );
        assert_eq!(e[0].at, "token_sources[1].name");
    }

    #[test]
    fn callers_compile_with_their_when_rules() {
        let text = r#"
        [[callers]]
        name = "a"
        when = { all = [ { claim = "x", equals = 3 }, { any = [ { claim = "r", one_of = ["p", true] } ] } ] }
        admin = true
        [[callers]]
        name = "g"
        when = { claim = "t", present = true }
        gated = true
    "#;
        let c = ok(text, &[]);
        let a = &c.policy.callers.classes[0];
        assert!(a.admin && a.approver && !a.gated, "admin implies approver");
        let want = When::All(vec![
            When::Equals {
                claim: "x".into(),
                value: 3.into(),
            },
            When::Any(vec![When::OneOf {
                claim: "r".into(),
                values: vec!["p".into(), true.into()],
            }]),
        ]);
        assert_eq!(a.when, want);
        assert!(c.policy.callers.classes[1].gated);
    }

    #[test]
    fn routes_and_guards_compile() {
        let text = format!(
        "{ROUTE}reason = \"r {{path.id}}\"\ncontext = {{ w = \"{{path.id}}\", k = \"{{body.key}}\" }}\nmode = \"shadow\"\napprovals_required = 2\n\
         [[routes]]\naction = \"f\"\nmethod = \"PUT\"\npath = \"/f/{{*rest}}\"\nscope = \"{{path.rest}}\"\n\
         [[guards]]\nmethods = [\"POST\", \"PUT\"]\npath = \"/d\"\n"
    );
        let c = ok(&text, &[]);
        assert_eq!(c.policy.routes.len(), 2);
        let m = c
            .policy
            .guards
            .find(&http::Method::PUT, "/d")
            .expect("guard");
        assert_eq!(m.value.name, "POST,PUT /d");
        let pattern = crate::route::Pattern::parse("/w/{id}/f/{*rest}").unwrap();
        assert_eq!(pattern.param_names().collect::<Vec<_>>(), ["id", "rest"]);
    }

    #[test]
    fn upstream_and_admin_urls_are_normalised() {
        let c = ok(
        "[upstream]\nurl = \"http://h:1/p/\"\n[gate]\npublic_admin_url = \"https://gw.example/\"",
        &[],
    );
        assert_eq!(c.upstream.url.to_string(), "http://h:1/p");
        assert_eq!(c.policy.gate.public_admin_url, "https://gw.example");
    }

    #[test]
    fn secrets_never_appear_in_errors_or_the_summary() {
        let text = "[jwt]\nalgorithms = [\"HS256\", \"XX1\"]\n[[token_sources]]\nname = \"a\"\nkind = \"env\"\nenv = \"TOK\"";
        let env = [
            ("GATEWAY_JWT_SECRET", "hs-very-secret"),
            ("TOK", "tok-very-secret"),
            ("DATABASE_URL", "postgres://u:pw-secret@h/db"),
        ];
        let report = parse(text, &env_of(&env))
            .expect_err("bad algorithm")
            .to_string();
        assert!(!report.contains("very-secret"), "{report}");
        let c = ok("", &env);
        assert!(!c.summary().contains("pw-secret"), "{}", c.summary());
    }

    #[test]
    fn jwks_url_alone_is_enough_for_asymmetric_algorithms() {
        let text = "[jwt]\nalgorithms = [\"RS256\", \"ES256\"]\njwks_url = \"https://idp.example/.well-known/jwks.json\"";
        let c = ok(text, &[("MOLECULE_PLATFORM_APPROVAL_GATE", "shadow")]);
        let jwt = c.policy.callers.jwt.as_ref().expect("verifier");
        assert_eq!(
            jwt.settings().jwks_url.as_deref(),
            Some("https://idp.example/.well-known/jwks.json")
        );
    }

    #[test]
    fn notify_targets_compile_with_defaults_and_secrets_from_env() {
        let c = ok(
        "[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:7000/hook\"\nsecret_env = \"S\"\n\
         [[notify]]\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\nevents = [\"requested\", \"denied\"]\nname = \"ops\"\n",
        &[("S", "k3y"), ("SLACK_URL", "https://hooks.slack.com/services/T/B/x")],
    );
        assert_eq!(c.notify.len(), 2);
        let (w, s) = (&c.notify[0], &c.notify[1]);
        assert_eq!(w.label, "0");
        assert_eq!(w.kind, crate::notify::NotifyKind::Webhook);
        assert_eq!(w.secret.as_deref(), Some(&b"k3y"[..]));
        assert_eq!(w.events.len(), 7, "default: every transition");
        assert_eq!(s.label, "ops");
        assert_eq!(s.kind, crate::notify::NotifyKind::Slack);
        assert_eq!(
            s.events,
            vec![
                crate::store::EventKind::Requested,
                crate::store::EventKind::Denied
            ]
        );
        let shown = format!("{:?} {}", c.notify, c.summary());
        assert!(
            !shown.contains("k3y") && !shown.contains("/services/"),
            "{shown}"
        );
    }

    #[test]
    fn notify_problems_name_table_and_key() {
        let errs = errors(
        "[[notify]]\nkind = \"email\"\nurl = \"ftp://x\"\nevents = [\"requested\", \"voted\"]\ncolour = 1\n\
         [[notify]]\nkind = \"slack\"\nsecret_env = \"S\"\n\
         [[notify]]\nkind = \"webhook\"\nurl = \"http://a\"\nurl_env = \"U\"\n\
         [[notify]]\nurl_env = \"UNSET\"\nsecret_env = \"UNSET_TOO\"\n",
        &[("S", "x")],
    );
        let at: Vec<&str> = errs.iter().map(|e| e.at.as_str()).collect();
        for want in [
            "notify[0].colour",
            "notify[0].kind",
            "notify[0].url",
            "notify[0].events[1]",
            "notify[1].url",
            "notify[1].secret_env",
            "notify[2].url",
            "notify[3].kind",
            "notify[3].url_env",
            "notify[3].secret_env",
        ] {
            assert!(at.contains(&want), "missing {want} in {errs:?}");
        }
    }

    #[test]
    fn molecule_mirror_compiles_with_defaults() {
        let c = ok("", &[]);
        assert!(c.molecule.is_none(), "off by default");
        let c = ok(
            "[molecule]\nmirror_approvals = false\ntoken_env = \"UNSET\"\n",
            &[],
        );
        assert!(c.molecule.is_none(), "off: nothing required");
        let c = ok(
            "[upstream]\nurl = \"http://10.0.0.1:8080/\"\n[molecule]\nmirror_approvals = true\n\
         token_env = \"MOLECULE_ADMIN_TOKEN\"\n\
         anchor_workspace = \"3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f\"\n",
            &[("MOLECULE_ADMIN_TOKEN", "s3cret-token")],
        );
        let m = c.molecule.as_ref().expect("on");
        assert_eq!(
            m.server_url, "http://10.0.0.1:8080",
            "defaults to upstream.url"
        );
        assert_eq!(m.token, "s3cret-token");
        assert_eq!(m.resync, DEFAULT_RESYNC);
        assert!(
            m.worker,
            "this replica runs the worker unless told otherwise"
        );
        assert_eq!(
            m.anchor_workspace.to_string(),
            "3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f"
        );
        let shown = format!("{c:?} {}", c.summary());
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("canvas mirror on"), "{shown}");
        let c = ok(
            "[molecule]\nmirror_approvals = true\nserver_url = \"https://ws.example/\"\n\
         token_env = \"T\"\nanchor_workspace = \"3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f\"\n",
            &[("T", "x")],
        );
        assert_eq!(c.molecule.expect("on").server_url, "https://ws.example");
        let c = ok(
            "[molecule]\nmirror_approvals = true\nworker = false\ntoken_env = \"T\"\n\
         anchor_workspace = \"3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f\"\n",
            &[("T", "x")],
        );
        assert!(
            !c.molecule.expect("on").worker,
            "a replica that only intercepts decides"
        );
    }

    #[test]
    fn molecule_problems_name_table_and_key() {
        let errs = errors("[molecule]\nmirror_approvals = true\ncolour = 1\n", &[]);
        let at: Vec<&str> = errs.iter().map(|e| e.at.as_str()).collect();
        for want in [
            "molecule.colour",
            "molecule.token_env",
            "molecule.anchor_workspace",
        ] {
            assert!(at.contains(&want), "missing {want} in {errs:?}");
        }
        let errs = errors(
            "[molecule]\nmirror_approvals = \"yes\"\nserver_url = \"ftp://x\"\n\
         token_env = \"UNSET\"\nanchor_workspace = \"not-a-uuid\"\n",
            &[],
        );
        let at: Vec<&str> = errs.iter().map(|e| e.at.as_str()).collect();
        for want in [
            "molecule.mirror_approvals",
            "molecule.server_url",
            "molecule.anchor_workspace",
        ] {
            assert!(at.contains(&want), "missing {want} in {errs:?}");
        }
        let errs = errors(
            "[molecule]\nmirror_approvals = true\ntoken_env = \"UNSET\"\n\
         anchor_workspace = \"3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f\"\n",
            &[],
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].at, "molecule.token_env");
        assert!(errs[0].message.contains("UNSET"), "{errs:?}");
        let errs = errors("molecule = 1\n", &[]);
        assert_eq!(errs[0].at, "molecule");
    }
}
