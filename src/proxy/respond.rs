//! The one place a [`Refusal`] becomes an HTTP response: JSON body
//! `{"error":{"code","message"}}`, `WWW-Authenticate` on every 401 and on
//! `insufficient_scope`, `Retry-After` where the refusal has one. `X-Request-Id` is
//! added by the pipeline to every response, refused or not.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::proxy::Body;
use crate::refusal::Refusal;

/// The response for a refusal.
pub fn refusal(r: &Refusal) -> Response<Body> {
    refusal_bytes(r).map(full)
}

/// A refusal's JSON body: `{"error":{"code","message"}}`.
pub fn refusal_body(r: &Refusal) -> String {
    serde_json::json!({
        "error": { "code": r.code(), "message": r.to_string() }
    })
    .to_string()
}

/// The response for a refusal, its body whole (the authz modes copy it elsewhere).
pub fn refusal_bytes(r: &Refusal) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(refusal_body(r)));
    *resp.status_mut() = r.status();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if r.status() == StatusCode::UNAUTHORIZED {
        let v = if r.token_was_given() {
            HeaderValue::from_static(r#"Bearer realm="keygate", error="invalid_token""#)
        } else {
            HeaderValue::from_static(r#"Bearer realm="keygate""#)
        };
        h.insert(WWW_AUTHENTICATE, v);
    }
    if let Refusal::InsufficientScope(scope) = r {
        // Scope names are validated config tokens, so this cannot fail; fall back to
        // the bare challenge rather than panicking if it ever did.
        let v = HeaderValue::from_str(&format!(
            r#"Bearer realm="keygate", error="insufficient_scope", scope="{scope}""#
        ))
        .unwrap_or(HeaderValue::from_static(
            r#"Bearer realm="keygate", error="insufficient_scope""#,
        ));
        h.insert(WWW_AUTHENTICATE, v);
    }
    if let Some(after) = r.retry_after() {
        h.insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
    }
    resp
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every refusal's status, code and challenge, as a table.
    #[test]
    fn mapping_table() {
        let d = Duration::from_secs(7);
        let rows: Vec<(Refusal, u16, &str, Option<&str>)> = vec![
            (Refusal::BadRequest("x"), 400, "bad_request", None),
            (
                Refusal::MissingApiKey,
                401,
                "missing_api_key",
                Some(r#"Bearer realm="keygate""#),
            ),
            (
                Refusal::InvalidApiKey("x"),
                401,
                "invalid_api_key",
                Some(r#"Bearer realm="keygate", error="invalid_token""#),
            ),
            (
                Refusal::ExpiredApiKey,
                401,
                "expired_api_key",
                Some(r#"Bearer realm="keygate", error="invalid_token""#),
            ),
            (
                Refusal::RevokedApiKey,
                401,
                "revoked_api_key",
                Some(r#"Bearer realm="keygate", error="invalid_token""#),
            ),
            (
                Refusal::SuspendedApiKey,
                401,
                "suspended_api_key",
                Some(r#"Bearer realm="keygate", error="invalid_token""#),
            ),
            (Refusal::IpNotAllowed, 403, "ip_not_allowed", None),
            (
                Refusal::EnvironmentNotAllowed("x"),
                403,
                "environment_not_allowed",
                None,
            ),
            (
                Refusal::EndpointNotAllowed("r".into()),
                403,
                "endpoint_not_allowed",
                None,
            ),
            (
                Refusal::ResourceNotAllowed,
                403,
                "resource_not_allowed",
                None,
            ),
            (
                Refusal::InsufficientScope("write".into()),
                403,
                "insufficient_scope",
                Some(r#"Bearer realm="keygate", error="insufficient_scope", scope="write""#),
            ),
            (Refusal::NoRoute, 404, "no_route", None),
            (Refusal::BodyTooLarge(1), 413, "body_too_large", None),
            (Refusal::UriTooLong(1), 414, "uri_too_long", None),
            (Refusal::HeadersTooLarge(1), 431, "headers_too_large", None),
            (
                Refusal::RateLimited {
                    window: "minute",
                    retry_after: d,
                },
                429,
                "rate_limited",
                None,
            ),
            (
                Refusal::QuotaExceeded {
                    window: "day",
                    retry_after: d,
                },
                429,
                "quota_exceeded",
                None,
            ),
            (
                Refusal::TooManyAuthFailures { retry_after: d },
                429,
                "too_many_auth_failures",
                None,
            ),
            (
                Refusal::UpstreamUnavailable,
                502,
                "upstream_unavailable",
                None,
            ),
            (
                Refusal::AuthUnavailable { retry_after: d },
                503,
                "auth_unavailable",
                None,
            ),
            (Refusal::UpstreamTimeout, 504, "upstream_timeout", None),
        ];
        for (r, status, code, challenge) in rows {
            let resp = refusal(&r);
            assert_eq!(resp.status().as_u16(), status, "{code}");
            assert_eq!(r.code(), code);
            assert_eq!(
                resp.headers()
                    .get(WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap()),
                challenge,
                "{code}"
            );
            assert_eq!(
                resp.headers().get(RETRY_AFTER).is_some(),
                status == 429 || status == 503,
                "{code}"
            );
        }
    }
}
