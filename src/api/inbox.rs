//! The approver web inbox on the admin listener: `GET /` (HTML), `/inbox.js`, `/inbox.css` and
//! `/favicon.svg`.
//!
//! Input: a browser. Output: four static assets compiled into the binary (`include_str!`), so
//! the inbox works offline and needs no external host. The page talks only to this listener's
//! approvals API (`/v1/approvals…`) and event stream (`/v1/events`, read with `fetch()` so the
//! approver's token travels in the `Authorization` header, never in a URL). Where a cookie-session
//! token source is configured, the page first tries the API with the browser's own same-origin
//! cookies and no token ("signed in by your session"; `auth::check_session_request` guards its
//! state changes against cross-site forgery); otherwise it asks for a pasted token.
//!
//! Invariants: the assets need no authentication (they hold no data; every data call carries the
//! approver's bearer token or the site's session cookie); a pasted token is never sent with
//! cookies (`credentials: "omit"`) and cookies never leave this origin; every response carries a strict Content-Security-Policy that allows
//! only this origin's script, style and API (no inline script or style, no frames, no form
//! posts), `nosniff` and `no-store`. The script renders data with `textContent` only.

use axum::http::header::{self, HeaderName};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("inbox.html");
const SCRIPT: &str = include_str!("inbox.js");
const STYLE: &str = include_str!("inbox.css");
const ICON: &str = include_str!("favicon.svg");

/// Same-origin script, style and API calls only; nothing inline, nothing framed, no form posts.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The inbox routes, to merge into the admin router (`.merge(inbox::routes())`). Stateless, so
/// generic over the router's state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/inbox.js", get(script))
        .route("/inbox.css", get(style))
        .route("/favicon.svg", get(icon))
}

/// `GET /`: the inbox page.
pub(crate) async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /inbox.js`: the page's only script.
pub(super) async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /inbox.css`: the page's only stylesheet.
pub(crate) async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /favicon.svg`: without it the browser asks for `/favicon.ico` and logs a 404.
pub(super) async fn icon() -> impl IntoResponse {
    asset("image/svg+xml", ICON)
}

type Headers = [(HeaderName, &'static str); 6];

fn asset(content_type: &'static str, body: &'static str) -> (Headers, &'static str) {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::Response;

    fn headers_of(resp: Response) -> Vec<(String, String)> {
        resp.headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn every_asset_has_its_type_and_the_security_headers() {
        let cases = [
            (page().await.into_response(), "text/html; charset=utf-8"),
            (
                script().await.into_response(),
                "text/javascript; charset=utf-8",
            ),
            (style().await.into_response(), "text/css; charset=utf-8"),
            (icon().await.into_response(), "image/svg+xml"),
        ];
        for (resp, content_type) in cases {
            assert_eq!(resp.status(), 200);
            let h = headers_of(resp);
            let get = |name: &str| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            assert_eq!(get("content-type"), Some(content_type));
            assert_eq!(get("x-content-type-options"), Some("nosniff"));
            assert_eq!(get("cache-control"), Some("no-store"));
            let csp = get("content-security-policy").unwrap();
            assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
            assert!(!csp.contains("unsafe"), "no unsafe-inline/eval: {csp}");
        }
    }

    #[test]
    fn assets_need_nothing_from_another_host() {
        for (name, text) in [("html", PAGE), ("js", SCRIPT), ("css", STYLE)] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} mentions {needle}");
            }
        }
        // The icon's only URL is the SVG namespace name (an identifier, never fetched).
        let icon = ICON.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!icon.contains("http") && !icon.contains("href"), "{icon}");
    }

    #[test]
    fn page_has_nothing_inline_that_the_policy_would_block() {
        // One <script>, and it has a src; no <style> element, no style= or on*= attributes.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert!(PAGE.contains(r#"<script src="/inbox.js" defer></script>"#));
        assert!(PAGE.contains(r#"<link rel="stylesheet" href="/inbox.css">"#));
        for needle in ["<style", " style=", " onclick=", " onsubmit=", " onload="] {
            assert!(!PAGE.contains(needle), "page has {needle}");
        }
    }

    #[test]
    fn script_never_renders_data_as_markup() {
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(needle), "script uses {needle}");
        }
        // The token stays in this tab: sessionStorage only, and never in a URL.
        assert!(!SCRIPT.contains("localStorage"));
        assert!(!SCRIPT.contains("access_token"));
        // Cookies go to this origin only, and never alongside a pasted token.
        assert!(!SCRIPT.contains(r#""include""#));
        assert!(SCRIPT.contains(r#"state.token ? "omit" : "same-origin""#));
    }
}
