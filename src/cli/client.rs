//! The HTTP client of the admin API: where it is ([`AdminClient::new`]), the admin
//! token ([`AdminToken`]), one request → one [`Answer`] or one [`CliError`].
//!
//! The token is read from `KEYGATE_ADMIN_TOKEN` or a file, never from the command line
//! (it would show in `ps`). It lives in an [`AdminToken`] whose `Debug` is redacted and
//! in a header value marked sensitive; it is never put in an error, printed or logged.
//! Redirects are not followed, so the token is only ever sent to the URL given.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::error::{CliError, Refusal};
use super::output::clean;

/// Environment variable holding the admin token.
pub const TOKEN_ENV: &str = "KEYGATE_ADMIN_TOKEN";
/// Content type of a JSON Merge Patch (RFC 7396), which the admin API accepts on PATCH.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole request, answer included; admin answers are small and quick.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest token accepted from the environment or a file; admin tokens are ~50 bytes.
const MAX_TOKEN_BYTES: usize = 4096;
/// Characters of a non-JSON error body quoted in the message.
const MAX_QUOTED_BODY: usize = 200;

/// An admin token (`kga_…`). Never printed: `Debug` shows `AdminToken(…)`.
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// From `--admin-token-file` when given, else from `KEYGATE_ADMIN_TOKEN`.
    pub fn load(file: Option<&Path>) -> Result<Self, CliError> {
        if let Some(path) = file {
            let meta = std::fs::metadata(path).map_err(|e| {
                CliError::usage(format!(
                    "cannot read the admin token file {}: {e}",
                    path.display()
                ))
            })?;
            if meta.len() > MAX_TOKEN_BYTES as u64 {
                return Err(CliError::usage(format!(
                    "the admin token file {} is larger than {MAX_TOKEN_BYTES} bytes; it should \
                     hold one admin token",
                    path.display()
                )));
            }
            let raw = std::fs::read_to_string(path).map_err(|e| {
                CliError::usage(format!(
                    "cannot read the admin token file {}: {e}",
                    path.display()
                ))
            })?;
            return Self::parse(&raw, &format!("the admin token file {}", path.display()));
        }
        match std::env::var(TOKEN_ENV) {
            Ok(raw) => Self::parse(&raw, TOKEN_ENV),
            Err(std::env::VarError::NotPresent) => Err(CliError::usage(format!(
                "no admin token: set {TOKEN_ENV}, or pass --admin-token-file FILE \
                 (keygate serve writes the first owner's token to admin.bootstrap_token_file, \
                 data/admin-token by default)"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(CliError::usage(format!("{TOKEN_ENV} is not valid UTF-8")))
            }
        }
    }

    /// Surrounding whitespace (a file's final newline) is dropped; what is left must be
    /// one header-safe word. `source` names where it came from, never the value.
    pub fn parse(raw: &str, source: &str) -> Result<Self, CliError> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(CliError::usage(format!("{source} is empty")));
        }
        if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::usage(format!(
                "{source} does not hold an admin token (expected one word of visible ASCII, \
                 such as kga_…)"
            )));
        }
        Ok(AdminToken(token.to_string()))
    }

    fn header(&self) -> Result<HeaderValue, CliError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| CliError::usage("the admin token cannot be sent in a header"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The admin API's base URL: http or https, no query or fragment. A path is kept, for an
/// admin API behind a reverse proxy at `/keygate/`.
pub fn parse_base_url(s: &str) -> Result<Url, CliError> {
    let bad = |why: &str| {
        CliError::usage(format!(
            "--admin-url / KEYGATE_ADMIN_URL `{}` {why}; expected e.g. http://127.0.0.1:9090",
            clean(s)
        ))
    };
    let url = Url::parse(s).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url)
}

/// The URL as shown in messages: without any user name or password.
pub fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// A request body: JSON, or a JSON Merge Patch.
pub enum Body {
    Json(Value),
    MergePatch(Value),
}

/// A successful (2xx) answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON, or a [`CliError::BadResponse`] naming what was asked.
    pub fn json(&self, what: &str) -> Result<Value, CliError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::BadResponse(format!(
                "the admin API's answer to {what} is not JSON ({e}); is KEYGATE_ADMIN_URL \
                 the admin address of keygate?"
            ))
        })
    }
}

/// One admin API at one URL, with one token.
pub struct AdminClient {
    base: Url,
    http: reqwest::Client,
    auth: HeaderValue,
}

impl AdminClient {
    pub fn new(base: Url, token: &AdminToken) -> Result<Self, CliError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        // A proxy from the environment is for leaving the machine; the admin token for a
        // loopback admin port has no business going through one.
        if is_loopback(&base) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Io(format!("cannot set up the HTTP client: {e}")))?;
        Ok(AdminClient {
            base,
            http,
            auth: token.header()?,
        })
    }

    /// The base URL, for messages.
    pub fn shown_base(&self) -> String {
        shown(&self.base)
    }

    /// Base URL + path segments, each percent-encoded (an org or key id cannot change
    /// the path), + query pairs.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends one request; 2xx → [`Answer`], an error status → [`CliError::Refused`] with
    /// the server's `error` object, no answer → [`CliError::Unreachable`].
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
        extra: HeaderMap,
    ) -> Result<Answer, CliError> {
        let mut headers = extra;
        headers.insert(AUTHORIZATION, self.auth.clone());
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("keygate-cli/", env!("CARGO_PKG_VERSION"))),
        );
        let mut request = self.http.request(method, url.clone()).headers(headers);
        if let Some(body) = body {
            let (content_type, value) = match body {
                Body::Json(v) => ("application/json", v),
                Body::MergePatch(v) => (MERGE_PATCH, v),
            };
            let bytes = serde_json::to_vec(&value)
                .map_err(|e| CliError::Io(format!("cannot encode the request: {e}")))?;
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
                .body(bytes);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(clean);
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if status.is_success() {
            return Ok(Answer { status, body });
        }
        if status.is_redirection() {
            return Err(CliError::BadResponse(format!(
                "the admin API at {} answered HTTP {} with a redirect{}; set KEYGATE_ADMIN_URL \
                 to the final address (redirects are not followed, so the admin token goes \
                 only where you said)",
                self.shown_base(),
                status.as_u16(),
                location.map(|l| format!(" to {l}")).unwrap_or_default()
            )));
        }
        Err(CliError::Refused(Box::new(refusal(status, &body))))
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        let mut detail = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "could not connect".to_string()
        } else {
            "no usable answer".to_string()
        };
        // The root causes say why (connection refused, DNS, TLS); reqwest's own message
        // repeats the URL, which is already in the message.
        let mut source = std::error::Error::source(e);
        let mut depth = 0;
        while let Some(s) = source
            && depth < 8
        {
            let _ = std::fmt::Write::write_fmt(&mut detail, format_args!(": {s}"));
            source = s.source();
            depth += 1;
        }
        CliError::Unreachable {
            url: self.shown_base(),
            detail: clean(&detail),
        }
    }
}

/// The server's `{"error":{…}}`, or the status and a quote of whatever came instead.
pub fn refusal(status: StatusCode, body: &[u8]) -> Refusal {
    let hint = match status.as_u16() {
        401 => Some(format!(
            "check the admin token ({TOKEN_ENV} or --admin-token-file)"
        )),
        _ => None,
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(error) if error.is_object() => {
            let s = |f: &str| error.get(f).and_then(Value::as_str).map(str::to_string);
            Refusal {
                status: status.as_u16(),
                code: s("code"),
                message: s("message").unwrap_or_else(|| "(no message)".into()),
                field: s("field"),
                key_id: s("key_id"),
                hint,
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let quoted: String = text.chars().take(MAX_QUOTED_BODY).collect();
            let message = if quoted.is_empty() {
                format!(
                    "{} (no error body)",
                    status.canonical_reason().unwrap_or("error")
                )
            } else {
                format!(
                    "{} (not a keygate error body: {quoted}{})",
                    status.canonical_reason().unwrap_or("error"),
                    if text.chars().count() > MAX_QUOTED_BODY {
                        "…"
                    } else {
                        ""
                    }
                )
            };
            Refusal {
                status: status.as_u16(),
                code: None,
                message,
                field: None,
                key_id: None,
                hint,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> AdminClient {
        let token = AdminToken::parse("kga_test", "test").unwrap();
        AdminClient::new(parse_base_url(base).unwrap(), &token).unwrap()
    }

    #[test]
    fn tokens_are_trimmed_checked_and_never_shown() {
        let t = AdminToken::parse("  kga_abc\n", "x").unwrap();
        assert_eq!(t.0, "kga_abc");
        assert_eq!(format!("{t:?}"), "AdminToken(…)");
        assert!(t.header().unwrap().is_sensitive());
        for bad in ["", " \n", "kga abc", "kga_\u{e9}"] {
            let e = AdminToken::parse(bad, "KEYGATE_ADMIN_TOKEN").unwrap_err();
            let text = e.to_string();
            assert!(text.contains("KEYGATE_ADMIN_TOKEN"), "{text}");
            if !bad.trim().is_empty() {
                assert!(!text.contains(bad.trim()), "{text}");
            }
        }
    }

    #[test]
    fn base_urls() {
        for good in [
            "http://127.0.0.1:9090",
            "http://127.0.0.1:9090/",
            "https://admin.example/keygate/",
        ] {
            assert!(parse_base_url(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1:9090",
            "ftp://x",
            "http://x/?a=1",
            "http://x/#f",
            "nonsense",
        ] {
            assert!(
                matches!(parse_base_url(bad), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
        let u = parse_base_url("http://user:pw@127.0.0.1:9090/").unwrap();
        assert_eq!(shown(&u), "http://127.0.0.1:9090/");
    }

    #[test]
    fn ids_cannot_change_the_path() {
        let c = client("http://127.0.0.1:9090");
        let u = c.url(&["v1", "orgs", "acme", "keys", "../../principals"], &[]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9090/v1/orgs/acme/keys/..%2F..%2Fprincipals"
        );
        let c = client("https://h/keygate/");
        let u = c.url(
            &["v1", "orgs", "a b", "keys"],
            &[("status", "active".into()), ("cursor", "k&x=1".into())],
        );
        assert_eq!(
            u.as_str(),
            "https://h/keygate/v1/orgs/a%20b/keys?status=active&cursor=k%26x%3D1"
        );
    }

    #[test]
    fn refusals_carry_the_servers_error() {
        let r = refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":{"code":"invalid_field","message":"is required","field":"name"}}"#,
        );
        assert_eq!(r.status, 422);
        assert_eq!(r.code.as_deref(), Some("invalid_field"));
        assert_eq!(r.field.as_deref(), Some("name"));
        let r = refusal(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"code":"invalid_admin_token","message":"unknown admin token"}}"#,
        );
        assert!(r.hint.unwrap().contains(TOKEN_ENV));
        let r = refusal(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(r.code, None);
        assert!(r.message.contains("<html>bad gateway</html>"));
        let r = refusal(StatusCode::NOT_FOUND, b"");
        assert!(r.message.contains("no error body"));
    }
}
