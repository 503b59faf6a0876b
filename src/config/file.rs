//! The raw mirror of the TOML file: every table and key the README's Configuration reference lists, each read with its
//! type checked, every unknown key reported.
//!
//! Input: the parsed `toml::Table`. Output: [`RawConfig`] (all values optional, typed) plus the
//! problems found so far in an [`Errors`] collector. serde's `deny_unknown_fields` stops at the first
//! problem, so keys are checked by hand per table: a run reports every unknown key and every
//! mistyped value together, each at its `table.key` path (`routes[2].path`).

use toml::{Table, Value};

use super::ConfigError;

/// Collects every problem, in file order.
#[derive(Debug, Default)]
pub(super) struct Errors(pub(crate) Vec<ConfigError>);

impl Errors {
    pub(crate) fn push(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            at: at.into(),
            message: message.into(),
        });
    }
}

/// One table of the file with its path, read key by key.
pub(super) struct Section<'a> {
    pub(crate) at: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    pub(crate) fn new(at: impl Into<String>, table: &'a Table) -> Self {
        Self {
            at: at.into(),
            table,
        }
    }

    /// Path of `key` inside this table (`routes[2].path`, or `listen` itself at top level).
    pub(super) fn key_at(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// Report every key not in `allowed`.
    pub(super) fn deny_unknown(&self, allowed: &[&str], errs: &mut Errors) {
        for key in self.table.keys() {
            if !allowed.contains(&key.as_str()) {
                errs.push(
                    self.key_at(key),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.table.keys()
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    fn typed<T>(
        &self,
        key: &str,
        want: &str,
        errs: &mut Errors,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let v = self.table.get(key)?;
        let got = f(v);
        if got.is_none() {
            errs.push(
                self.key_at(key),
                format!("expected {want}, found {}", v.type_str()),
            );
        }
        got
    }

    pub(crate) fn string(&self, key: &str, errs: &mut Errors) -> Option<String> {
        self.typed(key, "a string", errs, |v| v.as_str().map(str::to_owned))
    }

    pub(crate) fn boolean(&self, key: &str, errs: &mut Errors) -> Option<bool> {
        self.typed(key, "a boolean", errs, Value::as_bool)
    }

    pub(crate) fn integer(&self, key: &str, errs: &mut Errors) -> Option<i64> {
        self.typed(key, "an integer", errs, Value::as_integer)
    }

    pub(crate) fn strings(&self, key: &str, errs: &mut Errors) -> Option<Vec<String>> {
        let arr = self.typed(key, "an array of strings", errs, Value::as_array)?;
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            match v.as_str() {
                Some(s) => out.push(s.to_owned()),
                None => errs.push(
                    format!("{}[{i}]", self.key_at(key)),
                    format!("expected a string, found {}", v.type_str()),
                ),
            }
        }
        Some(out)
    }

    pub(crate) fn table(&self, key: &str, errs: &mut Errors) -> Option<Section<'a>> {
        let at = self.key_at(key);
        self.typed(key, "a table", errs, Value::as_table)
            .map(|t| Section::new(at, t))
    }

    /// `[[key]]` entries, each as its own section `key[i]`.
    pub(crate) fn tables(&self, key: &str, errs: &mut Errors) -> Vec<Section<'a>> {
        let Some(arr) = self.typed(key, "an array of tables", errs, Value::as_array) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            let at = format!("{}[{i}]", self.key_at(key));
            match v.as_table() {
                Some(t) => out.push(Section::new(at, t)),
                None => errs.push(at, format!("expected a table, found {}", v.type_str())),
            }
        }
        out
    }

    /// The string values of an inline table such as `context = { k = "v" }`, in file order.
    pub(super) fn string_map(&self, key: &str, errs: &mut Errors) -> Option<Vec<(String, String)>> {
        let t = self.table(key, errs)?;
        let mut out = Vec::new();
        for (k, v) in t.table {
            match v.as_str() {
                Some(s) => out.push((k.clone(), s.to_owned())),
                None => errs.push(
                    t.key_at(k),
                    format!("expected a string, found {}", v.type_str()),
                ),
            }
        }
        Some(out)
    }
}

/// `[listen]`.
#[derive(Debug, Default)]
pub(super) struct RawListen {
    pub(crate) proxy: Option<String>,
    pub(crate) admin: Option<String>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) body_read_timeout: Option<String>,
    pub(crate) body_idle_timeout: Option<String>,
}

/// `[upstream]`.
#[derive(Debug, Default)]
pub(super) struct RawUpstream {
    pub(crate) url: Option<String>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) request_timeout: Option<String>,
}

/// `[gate]`.
#[derive(Debug, Default)]
pub(super) struct RawGate {
    pub(crate) pending_ttl: Option<String>,
    pub(crate) approval_ttl: Option<String>,
    pub(crate) max_body_bytes: Option<i64>,
    pub(crate) retry_after: Option<String>,
    pub(crate) public_admin_url: Option<String>,
    pub(crate) approvals_required: Option<i64>,
    pub(crate) max_wait: Option<String>,
    pub(crate) unknown_callers: Option<String>,
}

/// The top-level tables that are plain key/value sections.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(crate) listen: RawListen,
    pub(crate) upstream: RawUpstream,
    pub(crate) store_url: Option<String>,
    pub(crate) gate: RawGate,
}

/// Top-level keys the file may hold.
pub(super) const TOP_LEVEL: &[&str] = &[
    "listen",
    "upstream",
    "store",
    "gate",
    "jwt",
    "callers",
    "routes",
    "guards",
    "token_sources",
    "notify",
    "molecule",
];

/// Read the key/value tables (`[listen]`, `[upstream]`, `[store]`, `[gate]`); the arrays and
/// `[jwt]` are read by their own compilers from `root`.
pub(crate) fn read(root: &Section<'_>, errs: &mut Errors) -> RawConfig {
    root.deny_unknown(TOP_LEVEL, errs);
    let mut raw = RawConfig::default();
    if let Some(s) = root.table("listen", errs) {
        s.deny_unknown(
            &[
                "proxy",
                "admin",
                "trusted_proxies",
                "body_read_timeout",
                "body_idle_timeout",
            ],
            errs,
        );
        raw.listen = RawListen {
            proxy: s.string("proxy", errs),
            admin: s.string("admin", errs),
            trusted_proxies: s.strings("trusted_proxies", errs),
            body_read_timeout: s.string("body_read_timeout", errs),
            body_idle_timeout: s.string("body_idle_timeout", errs),
        };
    }
    if let Some(s) = root.table("upstream", errs) {
        s.deny_unknown(&["url", "connect_timeout", "request_timeout"], errs);
        raw.upstream = RawUpstream {
            url: s.string("url", errs),
            connect_timeout: s.string("connect_timeout", errs),
            request_timeout: s.string("request_timeout", errs),
        };
    }
    if let Some(s) = root.table("store", errs) {
        s.deny_unknown(&["url"], errs);
        raw.store_url = s.string("url", errs);
    }
    if let Some(s) = root.table("gate", errs) {
        s.deny_unknown(
            &[
                "pending_ttl",
                "approval_ttl",
                "max_body_bytes",
                "retry_after",
                "public_admin_url",
                "approvals_required",
                "max_wait",
                "unknown_callers",
            ],
            errs,
        );
        raw.gate = RawGate {
            pending_ttl: s.string("pending_ttl", errs),
            approval_ttl: s.string("approval_ttl", errs),
            max_body_bytes: s.integer("max_body_bytes", errs),
            retry_after: s.string("retry_after", errs),
            public_admin_url: s.string("public_admin_url", errs),
            approvals_required: s.integer("approvals_required", errs),
            max_wait: s.string("max_wait", errs),
            unknown_callers: s.string("unknown_callers", errs),
        };
    }
    raw
}
