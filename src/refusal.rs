//! Every way keygate refuses a data-plane request, with its status and error code
//! (SPEC §3). One enum, one mapping: `policy`, `auth` and `proxy` return a
//! [`Refusal`], and `proxy::respond` turns it into the JSON response.
//!
//! A refusal's message is fixed text or built from config names (route, scope); it never
//! carries a token, a token hash, a raw path or a header value from the client.

use std::time::Duration;

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no API key was given: send Authorization: Bearer <key>")]
    MissingApiKey,
    #[error("{0}")]
    InvalidApiKey(&'static str),
    #[error("the API key has expired")]
    ExpiredApiKey,
    #[error("the API key has been revoked")]
    RevokedApiKey,
    #[error("the API key is suspended")]
    SuspendedApiKey,
    #[error("the client address is not in the key's IP allow-list")]
    IpNotAllowed,
    #[error("{0}")]
    EnvironmentNotAllowed(&'static str),
    #[error("the API key may not call the route {0:?}")]
    EndpointNotAllowed(String),
    #[error("the API key may not access the resource of this route")]
    ResourceNotAllowed,
    #[error("the route needs the scope {0:?}")]
    InsufficientScope(String),
    #[error("no route matches this method and path")]
    NoRoute,
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("the request URI is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("rate limit exceeded ({window})")]
    RateLimited {
        window: &'static str,
        retry_after: Duration,
    },
    #[error("quota exceeded ({window})")]
    QuotaExceeded {
        window: &'static str,
        retry_after: Duration,
    },
    #[error("too many failed authentications from this address")]
    TooManyAuthFailures { retry_after: Duration },
    #[error("the upstream refused or reset the connection")]
    UpstreamUnavailable,
    #[error("the key store is unavailable; retry shortly")]
    AuthUnavailable { retry_after: Duration },
    #[error("the upstream did not respond in time")]
    UpstreamTimeout,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        use Refusal::*;
        match self {
            BadRequest(_) => StatusCode::BAD_REQUEST,
            MissingApiKey | InvalidApiKey(_) | ExpiredApiKey | RevokedApiKey | SuspendedApiKey => {
                StatusCode::UNAUTHORIZED
            }
            IpNotAllowed
            | EnvironmentNotAllowed(_)
            | EndpointNotAllowed(_)
            | ResourceNotAllowed
            | InsufficientScope(_) => StatusCode::FORBIDDEN,
            NoRoute => StatusCode::NOT_FOUND,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UriTooLong(_) => StatusCode::URI_TOO_LONG,
            HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RateLimited { .. } | QuotaExceeded { .. } | TooManyAuthFailures { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            AuthUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `error.code` of the JSON body and the `outcome` metric label.
    pub fn code(&self) -> &'static str {
        use Refusal::*;
        match self {
            BadRequest(_) => "bad_request",
            MissingApiKey => "missing_api_key",
            InvalidApiKey(_) => "invalid_api_key",
            ExpiredApiKey => "expired_api_key",
            RevokedApiKey => "revoked_api_key",
            SuspendedApiKey => "suspended_api_key",
            IpNotAllowed => "ip_not_allowed",
            EnvironmentNotAllowed(_) => "environment_not_allowed",
            EndpointNotAllowed(_) => "endpoint_not_allowed",
            ResourceNotAllowed => "resource_not_allowed",
            InsufficientScope(_) => "insufficient_scope",
            NoRoute => "no_route",
            BodyTooLarge(_) => "body_too_large",
            UriTooLong(_) => "uri_too_long",
            HeadersTooLarge(_) => "headers_too_large",
            RateLimited { .. } => "rate_limited",
            QuotaExceeded { .. } => "quota_exceeded",
            TooManyAuthFailures { .. } => "too_many_auth_failures",
            UpstreamUnavailable => "upstream_unavailable",
            AuthUnavailable { .. } => "auth_unavailable",
            UpstreamTimeout => "upstream_timeout",
        }
    }

    /// Seconds for `Retry-After`, where the refusal has one.
    pub fn retry_after(&self) -> Option<Duration> {
        use Refusal::*;
        match self {
            RateLimited { retry_after, .. }
            | QuotaExceeded { retry_after, .. }
            | TooManyAuthFailures { retry_after }
            | AuthUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether a token was presented: decides `error="invalid_token"` on a 401.
    pub fn token_was_given(&self) -> bool {
        use Refusal::*;
        matches!(
            self,
            InvalidApiKey(_) | ExpiredApiKey | RevokedApiKey | SuspendedApiKey
        )
    }

    /// Whether this refusal counts as a failed authentication for the per-address limit.
    pub fn is_auth_failure(&self) -> bool {
        use Refusal::*;
        matches!(
            self,
            InvalidApiKey(_) | ExpiredApiKey | RevokedApiKey | SuspendedApiKey
        )
    }
}
