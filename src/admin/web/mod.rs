//! The admin page (SPEC §5): a static single page at `/`, with its ES modules, style
//! sheet and icon under `/web/`, all embedded in the binary (no CDN, no build step).
//! `app.js` is the entry module; it names the module of each page (keys, key detail,
//! people, audit, org settings) and the shared ones (API client, DOM helpers, ...).
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

use axum::extract::Path;

const INDEX_HTML: &str = include_str!("index.html");

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/web/`: name, body, content type.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", include_str!("app.js"), JS),
    ("api.js", include_str!("api.js"), JS),
    ("dom.js", include_str!("dom.js"), JS),
    ("format.js", include_str!("format.js"), JS),
    ("state.js", include_str!("state.js"), JS),
    ("keys.js", include_str!("keys.js"), JS),
    ("key-detail.js", include_str!("key-detail.js"), JS),
    ("limits.js", include_str!("limits.js"), JS),
    ("usage-chart.js", include_str!("usage-chart.js"), JS),
    ("people.js", include_str!("people.js"), JS),
    ("audit.js", include_str!("audit.js"), JS),
    ("org-settings.js", include_str!("org-settings.js"), JS),
    (
        "app.css",
        include_str!("app.css"),
        "text/css; charset=utf-8",
    ),
    ("icon.svg", include_str!("icon.svg"), "image/svg+xml"),
];

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
        .route("/web/{file}", get(asset))
}

async fn index() -> Response {
    page_asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, body, content_type)) => page_asset(body, content_type),
        None => {
            let mut response = page_asset("no such file\n", "text/plain; charset=utf-8");
            *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
            response
        }
    }
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
        let mut pages = vec![("/".to_string(), "text/html; charset=utf-8")];
        pages.extend(ASSETS.iter().map(|(n, _, t)| (format!("/web/{n}"), *t)));
        for (path, ty) in pages {
            let r = reqwest::get(format!("{base}{path}")).await.unwrap();
            let path = path.as_str();
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
        let r = reqwest::get(format!("{base}/web/nope.js")).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    /// Every module the page imports is served, and every served module is imported.
    #[test]
    fn the_modules_import_only_served_files() {
        let mut imported = std::collections::BTreeSet::from(["app.js".to_string()]);
        for (name, body, _) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .split("from './")
                    .nth(1)
                    .and_then(|r| r.split('\'').next())
                    .unwrap_or_else(|| panic!("{name}: `{line}` imports from outside /web/"));
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == target),
                    "{name} imports {target}, which is not served"
                );
                imported.insert(target.to_string());
            }
        }
        for (name, _, _) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            assert!(
                imported.contains(*name),
                "{name} is served but never imported"
            );
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
        assert!(html.contains(r#"<script type="module" src="/web/app.js"></script>"#));
        assert!(html.contains(r#"href="/web/app.css""#));
    }

    /// Data reaches the DOM through textContent only; the token only through api.js.
    #[test]
    fn the_scripts_never_write_markup() {
        for (name, body, _) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for forbidden in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "localStorage",
                ".style",
            ] {
                assert!(!body.contains(forbidden), "{name} uses {forbidden}");
            }
            if *name != "api.js" && *name != "app.js" {
                assert!(!body.contains("sessionStorage"), "{name} reads the token");
            }
        }
    }
}
