//! `decide`: the gate's whole decision for one request that hit a guard or a destructive
//! route, once its caller is classified. Pure: no IO, no clock.
//!
//! Input: the [`Call`] (the request's head, the classified caller, whether a guard matched, the
//! route's rule and parameters, and the body once read) and the `[gate]` [`Settings`]. Output:
//! the [`Outcome`] the proxy carries out (`proxy/gated/`): forward untouched, shadow, refuse,
//! read the body first, or hold for an approval of the identity in [`Gated`].
//!
//! Order: an unrecognised caller (`unknown_callers`) → a gated caller without a subject → a
//! gated caller's path with more than one reading → a guard → no route → the body, when the
//! route reads it → the effective mode (`min(global, rule ceiling)`; a rule without a ceiling
//! allows enforce) → the templates. Only a gated caller's path is decoded and only its
//! templates are rendered, so an ungated caller's odd path or body is never a 400.

use http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value};

use super::binding;
use super::body::Body;
use super::hash::request_hash_of_map;
use super::{Bind, GateError, GateRule, Gated, Mode, RequestView, UnknownCallers};
use crate::caller::{self, Caller};
use crate::route::{self, Params};

/// One request on the gated path, as the decision sees it. Borrowed from the request.
pub(crate) struct Call<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) caller: &'a Caller,
    /// A guard matched the request.
    pub(crate) guard: bool,
    /// The destructive route that matched, with its path parameters.
    pub(crate) route: Option<(&'a GateRule, &'a Params)>,
    /// The body, once read; `None` until [`Outcome::ReadBody`] asked for it.
    pub(crate) body: Option<&'a [u8]>,
}

/// The `[gate]` settings a decision reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The global mode (the env flag).
    pub(crate) mode: Mode,
    pub(crate) unknown_callers: UnknownCallers,
    /// The default quorum.
    pub(crate) approvals_required: u32,
}

/// What the proxy does with one request on the gated path.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Forward untouched: the caller is not gated (or is unknown and may pass), a gated caller
    /// hit no route (only a guard that lets it through: none does) or the route's effective
    /// mode is off.
    Forward {
        /// Shadow mode's note that enforce mode would refuse this unknown caller: why it is
        /// unknown.
        would_refuse: Option<&'static str>,
    },
    /// Shadow mode: forward untouched; enforce mode would hold it for this approval.
    Shadow(Gated),
    /// Answer with a problem; nothing is forwarded.
    Refuse(Refusal),
    /// A gated caller on a route that reads the body: read it (bounded) and decide again with
    /// [`Call::body`] set.
    ReadBody,
    /// Enforce: forward only by consuming an approval of this identity; otherwise it is pending.
    Hold(Gated),
}

/// Why a request is refused at the gate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// An unrecognised caller where `unknown_callers = "refuse"`, in enforce mode (401): why
    /// it is unknown.
    UnknownCaller(&'static str),
    /// A gated credential that names nobody (no `subject_claim`) would share one requester,
    /// the class name, with every other such credential, and so each other's approvals (401).
    NoSubject,
    /// The gate decides on the path it forwards: a gated caller's path must have one reading
    /// (400).
    AmbiguousPath(&'static str),
    /// A guard matched a gated caller (403).
    Guard,
    /// The route's templates cannot read this request (400).
    Unreadable(GateError),
}

/// Decide what becomes of this request.
pub(crate) fn decide(call: &Call<'_>, settings: &Settings) -> Outcome {
    let rule = call.route.map(|(rule, _)| rule);
    let mode = effective_mode(settings.mode, rule);
    let mut would_refuse = None;
    if !call.caller.recognised {
        let policy = rule
            .and_then(|r| r.unknown_callers)
            .unwrap_or(settings.unknown_callers);
        if policy == UnknownCallers::Refuse && mode != Mode::Off {
            let why = unknown_why(call.headers);
            if mode == Mode::Enforce {
                return Outcome::Refuse(Refusal::UnknownCaller(why));
            }
            would_refuse = Some(why);
        }
    }
    if !call.caller.is_gated() {
        return Outcome::Forward { would_refuse };
    }
    if call.caller.subject.is_none() {
        return Outcome::Refuse(Refusal::NoSubject);
    }
    let path = match route::path::plain(call.uri.path()) {
        Ok(path) => path,
        Err(why) => return Outcome::Refuse(Refusal::AmbiguousPath(why)),
    };
    if call.guard {
        return Outcome::Refuse(Refusal::Guard);
    }
    let Some((rule, params)) = call.route else {
        return Outcome::Forward { would_refuse };
    };
    if call.body.is_none() && rule.needs_body() {
        return Outcome::ReadBody;
    }
    if mode == Mode::Off {
        return Outcome::Forward { would_refuse };
    }
    let view = RequestView {
        method: call.method,
        path: &path,
        params,
        uri: call.uri,
        headers: call.headers,
        caller: call.caller,
        body: call.body,
    };
    match approval(rule, &view, settings.approvals_required) {
        Err(e) => Outcome::Refuse(Refusal::Unreadable(e)),
        Ok(gated) if mode == Mode::Shadow => Outcome::Shadow(gated),
        Ok(gated) => Outcome::Hold(gated),
    }
}

/// `min(global, the rule's ceiling)`; without a route, the global mode.
fn effective_mode(global: Mode, rule: Option<&GateRule>) -> Mode {
    rule.map_or(global, |r| global.min(r.mode.unwrap_or(Mode::Enforce)))
}

/// Why nobody recognised the caller, for the 401.
fn unknown_why(headers: &HeaderMap) -> &'static str {
    match caller::bearer(headers) {
        Ok(Some(_)) => "the bearer credential is not recognised",
        _ if headers.contains_key(http::header::AUTHORIZATION) => {
            "the Authorization header is not a `Bearer ` credential the gateway reads"
        }
        _ => "the request carries no credential",
    }
}

/// The identity and description of the approval this request needs: the rule's templates
/// rendered on it, and the request it binds.
fn approval(
    rule: &GateRule,
    req: &RequestView<'_>,
    default_quorum: u32,
) -> Result<Gated, GateError> {
    let body = Body::new(req.body);
    let scope = rule.scope.render(req, &body)?;
    let reason = rule.reason.render(req, &body)?;
    let mut context = Map::new();
    for (key, template) in &rule.context {
        context.insert(key.clone(), Value::String(template.render(req, &body)?));
    }
    if rule.bind == Bind::Request {
        context.insert(binding::KEY.to_owned(), binding::request(req, &body)?);
    }
    let request_hash = request_hash_of_map(&scope, &rule.action, &context);
    Ok(Gated {
        action: rule.action.clone(),
        scope,
        reason,
        context,
        request_hash,
        approvals_required: rule.approvals_required.unwrap_or(default_quorum),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // Table tests for the gate decision.

    use std::sync::Arc;

    use http::{HeaderValue, Uri};
    use serde_json::json;

    use super::*;
    use crate::caller::{CallerClass, When};
    use crate::gate::{request_hash, Template};

    const WS: &str = "3f1c2b9e-8d7a-4c1e-9b2f-0a1b2c3d4e5f";
    const BODY: &[u8] = br#"{"KEY":"OPENAI_API_KEY","value":"sk-secret"}"#;

    /// A recognised caller of a gated or an ungated class, with a subject.
    fn caller(gated: bool) -> Caller {
        let class = CallerClass {
            name: Arc::from(if gated { "platform-agent" } else { "operator" }),
            when: When::Present { claim: "x".into() },
            gated,
            approver: !gated,
            admin: false,
        };
        Caller {
            class: Some(Arc::new(class)),
            subject: Some("agent-1".into()),
            recognised: true,
            ..Caller::default()
        }
    }

    fn secret_rule(mode: Option<Mode>, approvals_required: Option<u32>) -> GateRule {
        let t = |s: &str| Template::parse(s).unwrap();
        GateRule {
            action: Arc::from("secret_write"),
            scope: t("{path.id}"),
            reason: t("write secret {body.key}"),
            context: vec![
                ("workspace_id".into(), t("{path.id}")),
                ("key".into(), t("{body.key}")),
            ],
            mode,
            approvals_required,
            bind: Bind::Context,
            unknown_callers: None,
        }
    }

    fn settings(mode: Mode) -> Settings {
        Settings {
            mode,
            unknown_callers: UnknownCallers::Refuse,
            approvals_required: 1,
        }
    }

    /// One request to `uri`, with `headers`, through `decide`.
    struct Req {
        uri: Uri,
        headers: HeaderMap,
        params: Params,
        guard: bool,
    }

    impl Req {
        fn new() -> Self {
            let mut params = Params::default();
            params.push(Arc::from("id"), WS.into());
            Req {
                uri: Uri::try_from(format!("/workspaces/{WS}/secrets")).unwrap(),
                headers: HeaderMap::new(),
                params,
                guard: false,
            }
        }

        fn decide(
            &self,
            rule: Option<&GateRule>,
            caller: &Caller,
            body: Option<&[u8]>,
            settings: &Settings,
        ) -> Outcome {
            let call = Call {
                method: &http::Method::POST,
                uri: &self.uri,
                headers: &self.headers,
                caller,
                guard: self.guard,
                route: rule.map(|r| (r, &self.params)),
                body,
            };
            decide(&call, settings)
        }
    }

    fn run(rule: &GateRule, caller: &Caller, body: &[u8], global: Mode) -> Outcome {
        Req::new().decide(Some(rule), caller, Some(body), &settings(global))
    }

    fn expected(quorum: u32) -> Gated {
        let context = json!({"workspace_id": WS, "key": "OPENAI_API_KEY"});
        Gated {
            action: Arc::from("secret_write"),
            scope: WS.into(),
            reason: "write secret OPENAI_API_KEY".into(),
            request_hash: request_hash(WS, "secret_write", &context),
            context: context.as_object().unwrap().clone(),
            approvals_required: quorum,
        }
    }

    const FORWARD: Outcome = Outcome::Forward { would_refuse: None };

    /// (caller gated, global mode, route ceiling, route quorum, expected outcome)
    type Case = (bool, Mode, Option<Mode>, Option<u32>, Outcome);

    #[test]
    fn mode_caller_and_ceiling_table() {
        use Mode::*;
        let cases: &[Case] = &[
            (true, Enforce, None, None, Outcome::Hold(expected(1))),
            (true, Shadow, None, None, Outcome::Shadow(expected(1))),
            (true, Off, None, None, FORWARD),
            (
                true,
                Enforce,
                Some(Shadow),
                None,
                Outcome::Shadow(expected(1)),
            ),
            (
                true,
                Shadow,
                Some(Enforce),
                None,
                Outcome::Shadow(expected(1)),
            ),
            (true, Enforce, Some(Off), None, FORWARD),
            (true, Enforce, None, Some(2), Outcome::Hold(expected(2))),
            (
                true,
                Shadow,
                Some(Shadow),
                Some(3),
                Outcome::Shadow(expected(3)),
            ),
            (false, Enforce, None, None, FORWARD),
            (false, Shadow, None, None, FORWARD),
        ];
        for (gated, global, ceiling, quorum, want) in cases {
            let rule = secret_rule(*ceiling, *quorum);
            let got = run(&rule, &caller(*gated), BODY, *global);
            assert_eq!(
                &got, want,
                "gated={gated} global={global:?} ceiling={ceiling:?}"
            );
        }
    }

    #[test]
    fn hash_matches_the_go_vector_for_secret_write() {
        let rule = secret_rule(None, None);
        let Outcome::Hold(g) = run(&rule, &caller(true), BODY, Mode::Enforce) else {
            panic!("expected hold");
        };
        // From tests/fixtures/request-hash-vectors.json (computed by the upstream's Go code).
        assert_eq!(
            g.request_hash,
            "a5ad6612b9da2de86587b069f77778a9d6535445183d5f425f0f2c26116d6d32"
        );
    }

    #[test]
    fn body_problems_are_refusals_only_for_gated_callers() {
        let rule = secret_rule(None, None);
        let field = || "body.key".to_owned();
        let cases: &[(&[u8], GateError)] = &[
            (b"not json", GateError::BodyNotJson { field: field() }),
            (
                br#"{"value":"v"}"#,
                GateError::FieldMissing { field: field() },
            ),
            (
                br#"{"key":"a","Key":"b"}"#,
                GateError::FieldAmbiguous { field: field() },
            ),
            (
                br#"{"key":{"a":1}}"#,
                GateError::FieldNotScalar { field: field() },
            ),
        ];
        for (body, want) in cases {
            let refused = Outcome::Refuse(Refusal::Unreadable(want.clone()));
            assert_eq!(run(&rule, &caller(true), body, Mode::Enforce), refused);
            assert_eq!(run(&rule, &caller(true), body, Mode::Shadow), refused);
            assert_eq!(run(&rule, &caller(false), body, Mode::Enforce), FORWARD);
            assert_eq!(run(&rule, &caller(true), body, Mode::Off), FORWARD);
        }
    }

    /// The body is asked for only from a gated caller on a route that reads it, and only after
    /// every refusal that does not need it.
    #[test]
    fn the_body_is_read_only_when_a_gated_callers_route_reads_it() {
        let rule = secret_rule(None, None);
        let req = Req::new();
        let s = settings(Mode::Enforce);
        assert_eq!(
            req.decide(Some(&rule), &caller(true), None, &s),
            Outcome::ReadBody
        );
        assert_eq!(req.decide(Some(&rule), &caller(false), None, &s), FORWARD);
        let mut no_subject = caller(true);
        no_subject.subject = None;
        assert_eq!(
            req.decide(Some(&rule), &no_subject, None, &s),
            Outcome::Refuse(Refusal::NoSubject)
        );
        // A ceiling of off still reads the body first (as before this decision was whole).
        let off = secret_rule(Some(Mode::Off), None);
        assert_eq!(
            req.decide(Some(&off), &caller(true), None, &s),
            Outcome::ReadBody
        );
        let mut bodiless = secret_rule(None, None);
        bodiless.reason = Template::parse("write a secret").unwrap();
        bodiless.context.truncate(1);
        assert!(matches!(
            req.decide(Some(&bodiless), &caller(true), None, &s),
            Outcome::Hold(_)
        ));
    }

    #[test]
    fn guards_paths_and_subjects() {
        let rule = secret_rule(None, None);
        let s = settings(Mode::Enforce);
        let mut guarded = Req::new();
        guarded.guard = true;
        let gated = caller(true);
        let refuse = |r| Outcome::Refuse(r);
        assert_eq!(
            guarded.decide(None, &gated, None, &s),
            refuse(Refusal::Guard)
        );
        assert_eq!(
            guarded.decide(Some(&rule), &gated, Some(BODY), &s),
            refuse(Refusal::Guard)
        );
        // A guard refuses gated callers only, in shadow mode too.
        assert_eq!(guarded.decide(None, &caller(false), None, &s), FORWARD);
        assert_eq!(
            guarded.decide(None, &gated, None, &settings(Mode::Shadow)),
            refuse(Refusal::Guard)
        );
        let mut ambiguous = Req::new();
        ambiguous.uri = Uri::from_static("/workspaces/w1/../w2/secrets");
        assert!(matches!(
            ambiguous.decide(Some(&rule), &gated, Some(BODY), &s),
            Outcome::Refuse(Refusal::AmbiguousPath(_))
        ));
        assert_eq!(
            ambiguous.decide(Some(&rule), &caller(false), None, &s),
            FORWARD,
            "an ungated caller's path is not decoded"
        );
        let mut no_subject = gated.clone();
        no_subject.subject = None;
        assert_eq!(
            guarded.decide(None, &no_subject, None, &s),
            refuse(Refusal::NoSubject)
        );
    }

    /// (Authorization, global mode, `[gate]` policy, route policy, route matched?, expected)
    type UnknownCase = (
        Option<&'static str>,
        Mode,
        UnknownCallers,
        Option<UnknownCallers>,
        bool,
        Outcome,
    );

    /// Unrecognised callers: refused (401) in enforce mode, noted and forwarded in shadow mode,
    /// forwarded where the route or `[gate]` lets them pass or the mode is off.
    #[test]
    fn unknown_callers_table() {
        use Mode::*;
        let why_none = "the request carries no credential";
        let why_bearer = "the bearer credential is not recognised";
        let why_scheme = "the Authorization header is not a `Bearer ` credential the gateway reads";
        let cases: &[UnknownCase] = &[
            (
                None,
                Enforce,
                UnknownCallers::Refuse,
                None,
                true,
                Outcome::Refuse(Refusal::UnknownCaller(why_none)),
            ),
            (
                Some("Bearer nope"),
                Enforce,
                UnknownCallers::Refuse,
                None,
                true,
                Outcome::Refuse(Refusal::UnknownCaller(why_bearer)),
            ),
            (
                Some("Basic x"),
                Enforce,
                UnknownCallers::Refuse,
                None,
                false,
                Outcome::Refuse(Refusal::UnknownCaller(why_scheme)),
            ),
            (
                None,
                Shadow,
                UnknownCallers::Refuse,
                None,
                true,
                Outcome::Forward {
                    would_refuse: Some(why_none),
                },
            ),
            (None, Enforce, UnknownCallers::Pass, None, true, FORWARD),
            (
                None,
                Enforce,
                UnknownCallers::Refuse,
                Some(UnknownCallers::Pass),
                true,
                FORWARD,
            ),
            (
                None,
                Enforce,
                UnknownCallers::Pass,
                Some(UnknownCallers::Refuse),
                true,
                Outcome::Refuse(Refusal::UnknownCaller(why_none)),
            ),
            (None, Off, UnknownCallers::Refuse, None, true, FORWARD),
        ];
        for (auth, mode, gate_policy, route_policy, route, want) in cases {
            let mut req = Req::new();
            if let Some(a) = auth {
                req.headers
                    .insert(http::header::AUTHORIZATION, HeaderValue::from_static(a));
            }
            let mut rule = secret_rule(None, None);
            rule.unknown_callers = *route_policy;
            let s = Settings {
                unknown_callers: *gate_policy,
                ..settings(*mode)
            };
            let got = req.decide(route.then_some(&rule), &Caller::anonymous(), None, &s);
            assert_eq!(
                &got, want,
                "{auth:?} {mode:?} {gate_policy:?} {route_policy:?}"
            );
        }
        // A route ceiling of off lets them pass.
        let off = secret_rule(Some(Mode::Off), None);
        let got = Req::new().decide(Some(&off), &Caller::anonymous(), None, &settings(Enforce));
        assert_eq!(got, FORWARD);
    }

    /// With `bind = "request"` the identity covers the body too: another value is another
    /// approval, key order and white space are not.
    #[test]
    fn request_binding_covers_the_body_canonically() {
        let mut rule = secret_rule(None, None);
        rule.bind = Bind::Request;
        let hash = |body: &[u8]| match run(&rule, &caller(true), body, Mode::Enforce) {
            Outcome::Hold(g) => (g.request_hash, g.context),
            other => panic!("{other:?}"),
        };
        let (a, context) = hash(br#"{"key":"K","value":"v1"}"#);
        let (b, _) = hash(br#"{ "value" : "v1", "key":"K" }"#);
        let (c, _) = hash(br#"{"key":"K","value":"v2"}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bound = &context["request"];
        assert_eq!(bound["method"], "POST");
        assert_eq!(bound["body"], json!({"key":"K","value":"v1"}));
        assert_ne!(
            a,
            expected(1).request_hash,
            "request binding differs from the Go context hash"
        );
        assert!(matches!(
            run(
                &rule,
                &caller(true),
                br#"{"key":"K","Key":"L","value":"v"}"#,
                Mode::Enforce
            ),
            Outcome::Refuse(Refusal::Unreadable(
                GateError::BodyKeyAmbiguous { .. } | GateError::FieldAmbiguous { .. }
            ))
        ));
    }
}
