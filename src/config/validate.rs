//! Validation and compilation: raw file values (`file.rs`) + env overrides → [`Config`].
//!
//! Every problem is collected (never stop at the first) with its `table.key` path; any problem
//! means no `Config`. Absent tables and keys take the defaults the README's Configuration reference lists. Env overrides
//! (`GATEWAY_LISTEN`, `GATEWAY_ADMIN_LISTEN`, `GATEWAY_UPSTREAM`, `DATABASE_URL`) beat the file; an
//! empty override counts as unset, an invalid one is an error at `env.NAME`.
//!
//! `[upstream] url` is `http://host[:port][/prefix]` (port 80 when omitted; no user info, query or
//! fragment; `https` is refused until the data plane speaks TLS upstream). URLs are stored without
//! a trailing `/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use toml::Table;

use super::file::{self, Errors, RawGate, RawListen, RawUpstream, Section};
use super::{callers, molecule, notify, routes};
use super::{
    BodyTimeouts, Config, ConfigError, ConfigErrors, GateSettings, Listen, Policy, StoreSettings,
    Upstream,
};
use crate::gate::{Mode, UnknownCallers};
use crate::store::Ttls;

/// The injected environment (tests pass a map; `main` passes `std::env::var`).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Read and compile the file at `path`. A missing or unreadable file is one error.
pub fn load(path: &std::path::Path, env: Env<'_>) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, env),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            at: path.display().to_string(),
            message: format!("cannot read the configuration file: {e}"),
        }])),
    }
}

/// Parse, validate and compile a configuration text.
pub fn parse(text: &str, env: Env<'_>) -> Result<Config, ConfigErrors> {
    let table: Table = text
        .parse()
        .map_err(|e| ConfigErrors(vec![syntax_error(text, &e)]))?;
    let mut errs = Errors::default();
    let root = Section::new("", &table);
    let raw = file::read(&root, &mut errs);
    let flag = nonempty_env(env, Mode::ENV);
    let mode = match Mode::from_flag(flag.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            errs.push(format!("env.{}", Mode::ENV), e.to_string());
            // Compile the rest strictly so that every other problem is still reported.
            Mode::Enforce
        }
    };
    let listen = listen(&raw.listen, env, &mut errs);
    let mut upstream = upstream(&raw.upstream, env, &mut errs);
    upstream.trusted_proxies = trusted_proxies(&raw.listen, &mut errs);
    let store = store(raw.store_url, env, &mut errs);
    let gate = gate(&raw.gate, env, mode, &mut errs);
    let routes = routes::compile_routes(&root, &mut errs);
    let guards = routes::compile_guards(&root, &mut errs);
    let callers = callers::compile(&root, env, mode, &mut errs);
    let notify = notify::compile(&root, env, &mut errs);
    let molecule = molecule::compile(&root, env, &upstream.url, &mut errs);
    // A property of the whole file: judged once every table compiled cleanly (a class or a
    // source that failed to compile would make it report a consequence, not the cause).
    if errs.0.is_empty() && mode != Mode::Off && !routes.is_empty() {
        callers::check_gated_reachable(&callers, &mut errs);
    }
    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    let policy = Arc::new(Policy {
        gate,
        routes,
        guards,
        callers,
    });
    Ok(Config {
        listen,
        upstream,
        store,
        policy,
        notify,
        molecule,
    })
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let start = e.span().map_or(0, |s| s.start).min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError {
        at: format!("line {line}, column {column}"),
        message: format!("TOML syntax: {}", e.message().trim()),
    }
}

/// An env var's value, `None` when unset or empty.
pub(super) fn nonempty_env(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// The value to use and where it came from: an env override beats the file.
fn pick(env: Env<'_>, var: &str, file: Option<String>, file_at: &str) -> (Option<String>, String) {
    match nonempty_env(env, var) {
        Some(v) => (Some(v), format!("env.{var}")),
        None => (file, file_at.to_owned()),
    }
}

fn addr(value: Option<String>, at: &str, default: &str, errs: &mut Errors) -> SocketAddr {
    let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
    let s = value.unwrap_or_else(|| default.to_owned());
    s.trim().parse().unwrap_or_else(|e| {
        errs.push(
            at,
            format!("{s:?} is not a socket address like \"127.0.0.1:8080\": {e}"),
        );
        fallback
    })
}

fn listen(raw: &RawListen, env: Env<'_>, errs: &mut Errors) -> Listen {
    let (proxy, proxy_at) = pick(env, "GATEWAY_LISTEN", raw.proxy.clone(), "listen.proxy");
    let (admin, admin_at) = pick(
        env,
        "GATEWAY_ADMIN_LISTEN",
        raw.admin.clone(),
        "listen.admin",
    );
    let timeout = |value: &Option<String>, key: &str, errs: &mut Errors| {
        duration(
            value.as_deref(),
            &format!("listen.{key}"),
            "30s",
            true,
            errs,
        )
    };
    Listen {
        proxy: addr(proxy, &proxy_at, "127.0.0.1:8080", errs),
        admin: addr(admin, &admin_at, "127.0.0.1:9090", errs),
        body_timeouts: BodyTimeouts {
            read: timeout(&raw.body_read_timeout, "body_read_timeout", errs),
            idle: timeout(&raw.body_idle_timeout, "body_idle_timeout", errs),
        },
    }
}

/// `[listen] trusted_proxies`: CIDRs (`10.0.0.0/8`) or single addresses.
fn trusted_proxies(raw: &RawListen, errs: &mut Errors) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, s) in raw.trusted_proxies.iter().flatten().enumerate() {
        let s = s.trim();
        let net = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(net) => out.push(net),
            Err(_) => errs.push(
                format!("listen.trusted_proxies[{i}]"),
                format!("{s:?} is not an IP address or CIDR like \"10.0.0.0/8\""),
            ),
        }
    }
    out
}

/// A duration string (`"500ms"`, `"30s"`, `"10m"`, `"24h"`); `nonzero` rejects `"0s"`.
pub(crate) fn duration(
    value: Option<&str>,
    at: &str,
    default: &str,
    nonzero: bool,
    errs: &mut Errors,
) -> Duration {
    let s = value.unwrap_or(default);
    match humantime::parse_duration(s.trim()) {
        Ok(d) if nonzero && d.is_zero() => {
            errs.push(at, "must be greater than zero");
            Duration::from_secs(1)
        }
        Ok(d) => d,
        Err(e) => {
            errs.push(
                at,
                format!("{s:?} is not a duration like \"500ms\", \"30s\", \"10m\", \"24h\": {e}"),
            );
            Duration::from_secs(1)
        }
    }
}

fn upstream(raw: &RawUpstream, env: Env<'_>, errs: &mut Errors) -> Upstream {
    let (url, url_at) = pick(env, "GATEWAY_UPSTREAM", raw.url.clone(), "upstream.url");
    let url = url.unwrap_or_else(|| "http://127.0.0.1:8081".to_owned());
    let url = upstream_url(url.trim()).unwrap_or_else(|msg| {
        errs.push(url_at, msg);
        http::Uri::from_static("http://127.0.0.1:8081")
    });
    Upstream {
        url,
        trusted_proxies: Vec::new(),
        connect_timeout: duration(
            raw.connect_timeout.as_deref(),
            "upstream.connect_timeout",
            "2s",
            true,
            errs,
        ),
        request_timeout: duration(
            raw.request_timeout.as_deref(),
            "upstream.request_timeout",
            "60s",
            true,
            errs,
        ),
    }
}

/// `http://host[:port][/prefix]`, normalised without a trailing `/`.
pub(super) fn upstream_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not an http:// URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https upstreams are not supported by this data plane yet; use an http:// URL \
                 (put a TLS-originating sidecar next to the gateway if the upstream needs TLS)"
                    .to_owned(),
            )
        }
        _ => {
            return Err(format!(
                "{s:?} must be an http:// URL like \"http://127.0.0.1:8081\""
            ))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("must not contain user info (user@host)".to_owned());
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(
            "must not have a query or fragment: the request's own path and query are appended"
                .to_owned(),
        );
    }
    let prefix = uri.path().trim_end_matches('/');
    format!("http://{authority}{prefix}")
        .parse()
        .map_err(|e| format!("{s:?} is not a URL: {e}"))
}

fn store(file_url: Option<String>, env: Env<'_>, errs: &mut Errors) -> StoreSettings {
    // GATEWAY_DATABASE_URL first: an env file shared with the upstream may hold the
    // upstream's own DATABASE_URL.
    let (url, at) = match pick(env, "GATEWAY_DATABASE_URL", None, "") {
        (Some(url), at) => (Some(url), at),
        (None, _) => pick(env, "DATABASE_URL", file_url, "store.url"),
    };
    let url = url
        .unwrap_or_else(|| "sqlite://data/approvals.db".to_owned())
        .trim()
        .to_owned();
    let ok = ["sqlite:", "postgres:", "postgresql:"]
        .iter()
        .any(|p| url.starts_with(p));
    if !ok {
        // Never echo the URL: it may carry a password.
        errs.push(at, "must start with sqlite:, postgres: or postgresql:");
    }
    StoreSettings { url }
}

/// An http(s) base URL with a host and no user info, returned without a trailing `/`.
pub(super) fn http_base_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not an http(s) URL: {e}"))?;
    let Some(authority) = uri.authority() else {
        return Err(format!("{s:?} must be an http:// or https:// URL"));
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{s:?} must be an http:// or https:// URL"));
    }
    if authority.as_str().contains('@') {
        return Err("must not contain user info (user@host)".to_owned());
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn gate(raw: &RawGate, env: Env<'_>, mode: Mode, errs: &mut Errors) -> GateSettings {
    let ttls = Ttls {
        pending: duration(
            raw.pending_ttl.as_deref(),
            "gate.pending_ttl",
            "24h",
            true,
            errs,
        ),
        approved: duration(
            raw.approval_ttl.as_deref(),
            "gate.approval_ttl",
            "1h",
            true,
            errs,
        ),
    };
    let max_body_bytes = match raw.max_body_bytes {
        None => 1_048_576,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                errs.push(
                    "gate.max_body_bytes",
                    format!("must be a positive number of bytes, found {n}"),
                );
                1
            }),
    };
    let (url, url_at) = pick(
        env,
        "GATEWAY_PUBLIC_ADMIN_URL",
        raw.public_admin_url.clone(),
        "gate.public_admin_url",
    );
    let url = url.unwrap_or_else(|| "http://127.0.0.1:9090".to_owned());
    let public_admin_url = http_base_url(url.trim()).unwrap_or_else(|msg| {
        errs.push(url_at, msg);
        String::new()
    });
    let unknown_callers = raw
        .unknown_callers
        .as_deref()
        .map_or(UnknownCallers::Refuse, |v| {
            unknown_callers(v, "gate.unknown_callers", errs).unwrap_or_default()
        });
    GateSettings {
        mode,
        ttls,
        max_body_bytes,
        retry_after: duration(
            raw.retry_after.as_deref(),
            "gate.retry_after",
            "5s",
            true,
            errs,
        ),
        public_admin_url,
        approvals_required: quorum(raw.approvals_required, "gate.approvals_required", errs)
            .unwrap_or(1),
        // "0s" is allowed: it turns `Prefer: wait` off.
        max_wait: duration(raw.max_wait.as_deref(), "gate.max_wait", "60s", false, errs),
        unknown_callers,
    }
}

/// An `unknown_callers` value: `"refuse"` or `"pass"`.
pub(crate) fn unknown_callers(v: &str, at: &str, errs: &mut Errors) -> Option<UnknownCallers> {
    match v {
        "refuse" => Some(UnknownCallers::Refuse),
        "pass" => Some(UnknownCallers::Pass),
        _ => {
            errs.push(
                at,
                format!("{v:?} is not allowed; use \"refuse\" or \"pass\""),
            );
            None
        }
    }
}

/// An `approvals_required` value: at least 1.
pub(crate) fn quorum(value: Option<i64>, at: &str, errs: &mut Errors) -> Option<u32> {
    let n = value?;
    match u32::try_from(n) {
        Ok(q) if q >= 1 => Some(q),
        _ => {
            errs.push(at, format!("must be at least 1, found {n}"));
            None
        }
    }
}
