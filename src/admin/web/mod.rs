//! The "API keys" page (SPEC §5): a static single page at `/`, with its script, style
//! sheet and icon under `/web/`, all embedded in the binary (no CDN, no build step).
//!
//! The page is a client of the admin JSON API on the same origin: it holds no
//! server-side state and this module never sees a token. The admin token lives in the
//! browser's `sessionStorage` and travels only in the `Authorization` header of the
//! page's own `fetch` calls, never in a URL.
//!
//! Every response carries a strict Content-Security-Policy (scripts, styles and
//! connections from this origin only; no inline script or style, no framing, no form
//! posts elsewhere), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and
//! `Referrer-Policy: no-referrer`. The script renders data with `textContent` only, so a
//! key name can never become markup.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");
const ICON_SVG: &str = include_str!("icon.svg");

/// `'self'` for what the page loads and calls; `'none'` for everything else. No
/// `'unsafe-inline'`: an injected `<script>` or `style=` attribute would not run.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; \
     object-src 'none'; media-src 'none'; frame-src 'none'; worker-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes, to be merged into the admin router (any state).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/web/app.js", get(app_js))
        .route("/web/app.css", get(app_css))
        .route("/web/icon.svg", get(icon_svg))
}

async fn index() -> Response {
    page_asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    page_asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    page_asset(APP_CSS, "text/css; charset=utf-8")
}

async fn icon_svg() -> Response {
    page_asset(ICON_SVG, "image/svg+xml")
}

/// One embedded file with the page's security headers. `no-cache` (revalidate each
/// time) keeps a browser from mixing the assets of two keygate versions after an upgrade.
fn page_asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 7] = [
        (CONTENT_TYPE, content_type),
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-cache"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// The page's router served on a free loopback port, like the admin API tests.
    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router::<()>()).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn every_asset_is_served_with_the_security_headers() {
        let base = serve().await;
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/web/app.js", "text/javascript; charset=utf-8"),
            ("/web/app.css", "text/css; charset=utf-8"),
            ("/web/icon.svg", "image/svg+xml"),
        ] {
            let r = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert_eq!(h[CONTENT_TYPE], ty, "{path}");
            assert_eq!(h[CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY_VALUE);
            assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[REFERRER_POLICY], "no-referrer");
            let body = r.bytes().await.unwrap();
            assert!(!body.is_empty(), "{path}");
        }
    }

    #[test]
    fn the_policy_allows_nothing_inline_and_no_framing() {
        let csp = CONTENT_SECURITY_POLICY_VALUE;
        assert!(csp.starts_with("default-src 'self';"));
        assert!(!csp.contains("unsafe"), "no unsafe-inline or unsafe-eval");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("script-src 'self';"));
    }

    /// The page's markup carries no inline script, style or event handler, so the CSP
    /// above cannot break it, and it loads only its own assets.
    #[test]
    fn the_html_has_nothing_inline_and_loads_only_its_own_assets() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(!html.contains("<script>"), "inline script");
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "external URL"
        );
        assert!(html.contains(r#"<script src="/web/app.js" defer></script>"#));
        assert!(html.contains(r#"href="/web/app.css""#));
    }

    /// Data reaches the DOM through textContent only.
    #[test]
    fn the_script_never_writes_markup() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(
            !APP_JS.contains("localStorage"),
            "token must stay in sessionStorage"
        );
    }
}
