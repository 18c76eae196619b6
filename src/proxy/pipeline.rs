//! One data-plane request, top to bottom, in the order of SPEC §3:
//! limits → path → route → credential → key → IP → environment → endpoint → resource →
//! scope → rate limit → forward. Each step either passes or returns a [`Refusal`];
//! [`handle`] turns the outcome into a response, adds `X-Request-Id`, counts it and
//! logs it.
//!
//! A refused request never reaches the upstream: the body is not read (so `100
//! Continue` is sent only once forwarding starts) and nothing is sent.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;

use crate::auth::credential;
use crate::key::{KeyHash, KeyRecord};
use crate::limits;
use crate::metrics::{NO_ROUTE, method_label};
use crate::policy::{self, Access, Route, ip, path};
use crate::proxy::forward::{self, Forwarding};
use crate::proxy::{Body, DataPlane, respond};
use crate::refusal::Refusal;
use crate::usage;

/// What the listener knows about the connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// TCP peer, or the PROXY-protocol source.
    pub peer: SocketAddr,
}

/// Longest `X-Request-Id` kept from a client.
const MAX_REQUEST_ID: usize = 128;
/// `Retry-After` for 503 `auth_unavailable`.
const AUTH_RETRY: Duration = Duration::from_secs(1);

/// What the request turned out to be, for metrics and the access log.
#[derive(Default)]
struct Trace {
    route: Option<Arc<Route>>,
    key: Option<Arc<KeyRecord>>,
    client: Option<IpAddr>,
    upstream_time: Option<Duration>,
    /// [limits] The rate-limit decision, for the `RateLimit-*` headers.
    quota: Option<limits::Quota>,
    /// [limits] The route's resource for this request, for usage.
    resource: Option<String>,
}

/// Serves one request; never fails (every failure is a response).
pub async fn handle(
    dp: Arc<DataPlane>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let request_id = request_id(req.headers());
    let mut trace = Trace::default();
    let (mut resp, outcome) = match run(&dp, conn, req, &request_id, &mut trace).await {
        Ok(r) => (r, "allowed"),
        Err(refusal) => (respond::refusal(&refusal), refusal.code()),
    };
    resp.headers_mut()
        .insert("x-request-id", request_id.clone());
    // [limits] `RateLimit-*` on responses to requests whose key authenticated.
    let (key, route) = (trace.key.as_deref(), trace.route.as_deref());
    limits::annotate(&dp.rate_limits, &mut resp, key, route, trace.quota).await;
    // [limits] Usage and last_used_at of the key the request named.
    if let (Some(key), Some(route)) = (key, route) {
        let refusal = (outcome != "allowed").then_some(outcome);
        dp.usage.record(
            &key.id,
            &usage::Outcome {
                route: &route.name,
                resource: trace.resource.as_deref(),
                status: resp.status(),
                refusal,
            },
        );
    }

    let route = trace.route.as_ref().map_or(NO_ROUTE, |r| r.name.as_str());
    let status = resp.status();
    dp.metrics
        .requests
        .with_label_values(&[route, method_label(&method), status.as_str(), outcome])
        .inc();
    let elapsed = started.elapsed();
    dp.metrics
        .request_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "keygate::access",
        request_id = request_id.to_str().unwrap_or(""),
        org = trace.key.as_ref().map(|k| k.org.as_str()),
        key_id = trace.key.as_ref().map(|k| k.id.as_str()),
        route,
        method = method.as_str(),
        status = status.as_u16(),
        code = outcome,
        client = %trace.client.unwrap_or(conn.peer.ip()),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream_ms = trace.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
    );
    Ok(resp)
}

/// The client's `X-Request-Id` if it is one value of safe characters, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut all = headers.get_all("x-request-id").iter();
    if let (Some(v), None) = (all.next(), all.next()) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= MAX_REQUEST_ID
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        {
            return v.clone();
        }
    }
    let id = ulid::Ulid::new().to_string();
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("unknown"))
}

async fn run(
    dp: &DataPlane,
    conn: ConnInfo,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Response<Body>, Refusal> {
    let (mut parts, body) = req.into_parts();
    check_limits(dp, &parts)?;
    let raw_path = parts.uri.path();
    path::check(raw_path)?;
    let client_host = client_host(&parts)?;

    // Route, and the resource named by its path parameters.
    let (route, resource) = {
        let m = dp
            .routes
            .lookup(&parts.method, client_host.as_deref(), raw_path)
            .ok_or(Refusal::NoRoute)?;
        let resource = match &m.route.resource {
            Some(t) => Some(t.render(|n| m.params.get(n)).ok_or(Refusal::BadRequest(
                "a path parameter is not valid UTF-8 after decoding",
            ))?),
            None => None,
        };
        (m.route.clone(), resource)
    };
    trace.route = Some(route.clone());
    trace.resource.clone_from(&resource);

    let peer_ip = ip::canonical(conn.peer.ip());
    let peer_trusted = ip::is_trusted(peer_ip, &dp.trusted_proxies);
    let client = ip::client_addr(peer_ip, &parts.headers, &dp.trusted_proxies);
    trace.client = client;
    let limiter_ip = client.unwrap_or(peer_ip);

    // Credential → key. The token lives only in this block.
    let (key, forwarded_query) = {
        let cred = credential::extract(&parts.headers, parts.uri.query(), route.query_key)?;
        let key = authenticate(dp, &cred.token, limiter_ip, trace).await?;
        // `extract` refuses any api_key parameter unless it is the credential itself.
        let query = match parts.uri.query() {
            Some(q) if cred.source == credential::Source::Query => {
                credential::strip_query_credential(q)
            }
            other => other.map(str::to_string),
        };
        (key, query)
    };
    let upstream = dp
        .upstreams
        .get(&route.upstream)
        .ok_or(Refusal::UpstreamUnavailable)?;
    policy::authorize(
        &key,
        &Access {
            route: &route,
            resource: resource.as_deref(),
            client,
            upstream_has_test: upstream.has_test(),
        },
        &dp.scopes,
    )?;
    let origin = upstream
        .origin(key.environment)
        .ok_or(Refusal::EnvironmentNotAllowed(
            "test keys may not call this route: its upstream has no test_url",
        ))?;

    // Forward.
    let uri = forward::upstream_uri(origin, parts.uri.path(), forwarded_query.as_deref())?;
    forward::rewrite_request_headers(
        &mut parts.headers,
        &Forwarding {
            key: &key,
            identity: &dp.identity,
            peer: peer_ip,
            peer_trusted,
            client_host: client_host.as_deref(),
            tls: dp.tls,
            request_id,
            preserve_host: upstream.preserve_host,
        },
    )?;
    // [limits] Last, after every check that can refuse: refused requests consume nothing.
    dp.rate_limits
        .acquire(&key, &route, &mut trace.quota)
        .await?;
    let req = forward::upstream_request(parts, body, uri, dp.limits.max_body_bytes);
    let (resp, took) = upstream.send(req, dp.limits.max_body_bytes).await?;
    trace.upstream_time = Some(took);
    dp.metrics
        .upstream_duration
        .with_label_values(&[upstream.name.as_str()])
        .observe(took.as_secs_f64());
    Ok(forward::client_response(resp))
}

/// Size limits that hold before anything else is looked at.
fn check_limits(dp: &DataPlane, parts: &http::request::Parts) -> Result<(), Refusal> {
    let l = &dp.limits;
    let uri_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > l.max_uri_bytes {
        return Err(Refusal::UriTooLong(l.max_uri_bytes));
    }
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > l.max_header_bytes {
        return Err(Refusal::HeadersTooLarge(l.max_header_bytes));
    }
    let mut lengths = parts.headers.get_all(CONTENT_LENGTH).iter();
    if let Some(v) = lengths.next() {
        let n: u64 = v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Refusal::BadRequest("malformed Content-Length header"))?;
        if lengths.any(|other| other != v) {
            return Err(Refusal::BadRequest("conflicting Content-Length headers"));
        }
        if n > l.max_body_bytes {
            return Err(Refusal::BodyTooLarge(l.max_body_bytes));
        }
    }
    Ok(())
}

/// The client's host: h2 `:authority` or the one `Host` header.
fn client_host(parts: &http::request::Parts) -> Result<Option<String>, Refusal> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("several Host headers"));
    }
    let header = match header {
        Some(h) => Some(
            h.to_str()
                .map_err(|_| Refusal::BadRequest("malformed Host header"))?,
        ),
        None => None,
    };
    match (parts.uri.authority(), header) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => Err(Refusal::BadRequest(
            "the Host header does not match the request target",
        )),
        (Some(a), _) => Ok(Some(a.as_str().to_string())),
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
        (None, None) if parts.version == http::Version::HTTP_11 => Err(Refusal::BadRequest(
            "an HTTP/1.1 request needs a Host header",
        )),
        (None, h) => Ok(h.map(str::to_string)),
    }
}

/// Token → a key that may authenticate. Counts failures per client address. Records
/// the key in `trace` as soon as it is found, so refusals of a known key (revoked,
/// expired…) are attributed to it in logs and usage.
async fn authenticate(
    dp: &DataPlane,
    token: &str,
    client: IpAddr,
    trace: &mut Trace,
) -> Result<Arc<KeyRecord>, Refusal> {
    let fail = |r: Refusal| {
        if r.is_auth_failure() {
            dp.failures.record_failure(client);
        }
        r
    };
    let env = dp
        .key_format
        .check(token)
        .map_err(|_| fail(Refusal::InvalidApiKey("the API key is malformed")))?;
    let hash = KeyHash::of(token);
    let key = if let Some(retry_after) = dp.failures.blocked(client) {
        dp.resolver
            .cached(&hash)
            .await
            .ok_or(Refusal::TooManyAuthFailures { retry_after })?
    } else {
        match dp.resolver.resolve(&hash).await {
            Ok(Some(k)) => k,
            Ok(None) => return Err(fail(Refusal::InvalidApiKey("the API key is not valid"))),
            Err(_) => {
                return Err(Refusal::AuthUnavailable {
                    retry_after: AUTH_RETRY,
                });
            }
        }
    };
    if key.environment != env {
        return Err(fail(Refusal::InvalidApiKey("the API key is not valid")));
    }
    if key.deleted_at.is_none() {
        trace.key = Some(key.clone());
    }
    policy::check_key(&key, &hash, jiff::Timestamp::now()).map_err(fail)?;
    Ok(key)
}
