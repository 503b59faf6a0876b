//! The gateway's reading of a path against gin's, on the same bytes: generated variants of
//! every route the workspace-server stand-in registers (a real gin engine) are sent to it
//! directly, and what gin dispatched (`c.FullPath()`, `c.Params`) is compared with what the
//! gateway decides under `config/molecule.toml` for the same request target.
//!
//! The rule under test: for a gated caller the gateway either refuses the path
//! (`route::path::plain` fails: 400) or its route and parameters are gin's. A plain path that
//! gin dispatches to a route the config covers, while the gateway matches no rule or another
//! one, is a bypass. The opposite (the gateway gates a path gin then does not route: 404 or a
//! trailing-slash redirect) is safe and allowed.

use std::collections::HashMap;

use approval_gateway::config;
use approval_gateway::route;

use crate::support::standin::Standin;
use crate::support::{db, raw};

const UUID: &str = "3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f";

/// A route pattern's shape, comparable across syntaxes: `/workspaces/:/files/*`.
fn shape(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with(':') || (seg.starts_with('{') && !seg.starts_with("{*")) {
                ":"
            } else if seg.starts_with('*') || seg.starts_with("{*") {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `(method, shape)` → what the config does there: `route:<action>` or `guard`.
fn config_rules() -> HashMap<(String, String), String> {
    let text = std::fs::read_to_string("config/molecule.toml").unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut out = HashMap::new();
    for (table, tag) in [("routes", "route"), ("guards", "guard")] {
        for t in doc[table].as_array().unwrap() {
            let path = t["path"].as_str().unwrap();
            let methods: Vec<String> = match (t.get("method"), t.get("methods")) {
                (Some(m), _) => vec![m.as_str().unwrap().to_owned()],
                (_, Some(ms)) => ms
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_owned())
                    .collect(),
                _ => unreachable!(),
            };
            let what = match t.get("action") {
                Some(a) => format!("{tag}:{}", a.as_str().unwrap()),
                None => tag.to_owned(),
            };
            for m in methods {
                out.entry((m, shape(path))).or_insert_with(|| what.clone());
            }
        }
    }
    out
}

/// Variants of a concrete path, each a way readings can differ.
fn variants(concrete: &str) -> Vec<String> {
    let segs: Vec<&str> = concrete.trim_start_matches('/').split('/').collect();
    let mut out = vec![concrete.to_owned(), format!("{concrete}/")];
    let join = |v: &[String]| format!("/{}", v.join("/"));
    for i in 0..segs.len() {
        let mut v: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
        let original = v[i].clone();
        let mut with = |replacement: String| {
            v[i] = replacement;
            let s = join(&v);
            v[i] = original.clone();
            s
        };
        out.push(with(format!("{original}/")));
        out.push(with(format!("./{original}")));
        out.push(with(format!("x/../{original}")));
        out.push(with(format!("%2e/{original}")));
        out.push(with(format!("{original}%2Fy")));
        out.push(with(format!("{original}%00")));
        out.push(with(format!("{original}\\y")));
        out.push(with(format!("{original};x=1")));
        out.push(with(format!("{original}%C3%A9")));
        out.push(with(format!("{original}%FF")));
        out.push(with(original.to_uppercase()));
        out.push(with(String::new())); // gin matches `:param` against an empty segment
        if let Some(c) = original.chars().next().filter(char::is_ascii_alphanumeric) {
            out.push(with(format!("%{:02X}{}", c as u32, &original[1..])));
        }
    }
    out.push(concrete.replacen('/', "//", 1));
    out.push(format!("{concrete}/.."));
    out.push(format!("{concrete}/x/.."));
    out
}

#[tokio::test]
async fn the_gateway_decides_on_gins_reading_or_refuses_postgres() {
    let Some(url) = db::postgres_url().await else {
        return;
    };
    let standin = Standin::start(&url, &[("ADMIN_TOKEN", "differential-admin")]).await;
    let env = |k: &str| match k {
        "MOLECULE_PLATFORM_APPROVAL_GATE" => Some("enforce".to_owned()),
        "MOLECULE_DATABASE_URL" => Some(url.clone()),
        "MOLECULE_CP_TENANT_MEMBER_URL" => Some("http://127.0.0.1:9/cp".to_owned()),
        "GATEWAY_JWT_SECRET" => Some("s".to_owned()),
        _ => None,
    };
    let config = config::load(std::path::Path::new("config/molecule.toml"), &env).unwrap();
    let policy = &config.policy;
    let rules = config_rules();

    let (mut compared, mut refused, mut bypasses) = (0, 0, Vec::new());
    for r in standin.routes().await {
        let concrete: String = r
            .path
            .split('/')
            .map(|seg| match seg.chars().next() {
                Some(':') => UUID.to_owned(),
                Some('*') => "dir/file.txt".to_owned(),
                _ => seg.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = http::Method::from_bytes(r.method.as_bytes()).unwrap();
        for target in variants(&concrete) {
            standin.reset().await;
            raw::send(standin.addr(), &r.method, target.as_bytes(), &[], b"").await;
            let seen = standin.requests().await;
            let Some(gin) = seen.last() else {
                continue; // rejected before routing (e.g. Go refused the request line)
            };
            let Ok(_decoded) = route::path::plain(&target) else {
                refused += 1;
                continue; // a gated caller's request is refused: 400 ambiguous-path
            };
            compared += 1;
            let gw_rule = policy
                .routes
                .find(&method, &target)
                .map(|m| (format!("route:{}", m.value.action), m.params));
            let gw_guard = policy.guards.find(&method, &target).is_some();
            let gin_rule = (!gin.full_path.is_empty())
                .then(|| rules.get(&(r.method.clone(), shape(&gin.full_path))))
                .flatten();
            match (gin_rule, &gw_rule) {
                // gin dispatched to a covered route: the gateway must agree on rule and params.
                (Some(want), Some((got, params))) if want.starts_with("route:") => {
                    let gin_values: Vec<String> = gin
                        .params
                        .iter()
                        .map(|p| p.value.trim_start_matches('/').to_owned())
                        .collect();
                    let gw_values: Vec<String> = params.iter().map(|(_, v)| v.to_owned()).collect();
                    if want != got || gin_values != gw_values {
                        bypasses.push(format!(
                            "{} {target}: gin {} {gin_values:?} ({want}), gateway {got} {gw_values:?}",
                            r.method, gin.full_path
                        ));
                    }
                }
                (Some(want), None) if want.starts_with("route:") => bypasses.push(format!(
                    "{} {target}: gin dispatched to {} ({want}), the gateway matched no route",
                    r.method, gin.full_path
                )),
                (Some(want), _) if want == "guard" && !gw_guard => bypasses.push(format!(
                    "{} {target}: gin dispatched to guarded {}, the gateway's guard missed it",
                    r.method, gin.full_path
                )),
                _ => {}
            }
        }
    }
    eprintln!(
        "differential: {compared} plain targets compared with gin, {refused} refused as ambiguous"
    );
    assert!(compared > 300, "too few comparisons: {compared}");
    assert!(refused > 300, "too few ambiguous variants: {refused}");
    assert!(
        bypasses.is_empty(),
        "gateway and gin disagree:\n{}",
        bypasses.join("\n")
    );
}
