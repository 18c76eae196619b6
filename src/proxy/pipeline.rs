//! One data-plane request, top to bottom, in the order of SPEC §3:
//! limits → path → route → credential → key → IP → environment → endpoint → resource →
//! scope → rate limit → forward. Each step either passes or returns a [`Refusal`];
//! [`handle`] turns the outcome into a response and [`finish`] adds `X-Request-Id`,
//! counts it and logs it.
//!
//! The decision is one function for every mode (SPEC §9): the data plane, forward-auth
//! over HTTP, Envoy's `ext_authz` and the verify API each describe the request as a
//! [`Question`], call [`decide`] (path → … → scope), do their own last checks, call
//! [`admit`] (the rate limit) and [`finish`]; they differ only in how the request is
//! described and how the answer is written.
//!
//! A refused request never reaches the upstream: the body is not read (so `100
//! Continue` is sent only once forwarding starts) and nothing is sent.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;

use crate::auth::credential;
use crate::key::{KeyHash, KeyView};
use crate::limits;
use crate::metrics::{NO_ROUTE, Served, method_label};
use crate::policy::{self, Access, Route, ip, path};
use crate::proxy::forward::{self, Forwarding};
use crate::proxy::{Body, DataPlane, access_log, respond};
use crate::refusal::Refusal;
use crate::usage;

/// What the listener knows about the connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// TCP peer, or the PROXY-protocol source.
    pub peer: SocketAddr,
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Longest `X-Request-Id` kept from a client.
const MAX_REQUEST_ID: usize = 128;
/// `Retry-After` for 503 `auth_unavailable`.
const AUTH_RETRY: Duration = Duration::from_secs(1);

/// How a request reached the decision: through the data plane, or asked for by
/// another proxy or a service (SPEC §9). Every mode runs [`decide`]; they differ only
/// in how the request is described and how the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// keygate forwards the request itself.
    Proxy,
    /// `/v1/authz` on the authz listener (nginx `auth_request`, Traefik, Caddy).
    Http,
    /// Envoy `ext_authz` `Check` on the authz listener.
    Grpc,
    /// `POST /v1/verify` on the admin port.
    Verify,
}

impl Mode {
    /// The `mode` label of `keygate_authz_requests_total` and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Proxy => "proxy",
            Mode::Http => "http",
            Mode::Grpc => "grpc",
            Mode::Verify => "verify",
        }
    }
}

/// The request to decide on, as keygate received it or as the asking proxy describes
/// it. Borrowed: the data plane describes a request without copying it.
pub struct Question<'a> {
    pub method: &'a Method,
    /// The client's host (`Host`, h2 `:authority`, `X-Forwarded-Host`).
    pub host: Option<&'a str>,
    /// The raw path as the client sent it.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The client's headers: the credential is read from them.
    pub headers: &'a HeaderMap,
    /// The client's address, for IP allow-lists; `None` when unknown (a key with an
    /// allow-list is then refused).
    pub client: Option<IpAddr>,
    /// The address charged with failed authentications; `None`: no budget applies.
    pub failure_ip: Option<IpAddr>,
    /// The orgs whose keys may be decided on (a verifier's orgs); `None`: any. A key
    /// of another org is answered as unknown.
    pub orgs: Option<&'a [String]>,
}

/// What the request turned out to be, for usage, metrics and the access log.
pub struct Trace {
    mode: Mode,
    /// When the request arrived: the clock read once, for the duration, the key's
    /// freshness and expiry, the org memo and the rate-limit windows.
    arrived: limits::Arrival,
    method: Method,
    pub request_id: HeaderValue,
    /// Whether the request counts: consumes rate limits and records usage (`false`
    /// only for `POST /v1/verify` with `"count": false`).
    count: bool,
    pub route: Option<Arc<Route>>,
    pub key: Option<Arc<KeyView>>,
    client: Option<IpAddr>,
    upstream_time: Option<Duration>,
    /// [limits] The rate-limit decision, for the `RateLimit-*` headers.
    pub quota: Option<limits::Quota>,
    /// [limits] The route's resource for this request, for usage.
    resource: Option<String>,
}

impl Trace {
    /// Starts the trace of one request; `request_id` is the client's, if it sent a
    /// usable one.
    pub fn start(mode: Mode, method: &Method, headers: &HeaderMap) -> Trace {
        let arrived = limits::Arrival::now();
        Trace {
            mode,
            arrived,
            method: method.clone(),
            request_id: request_id(headers, arrived.time),
            count: true,
            route: None,
            key: None,
            client: None,
            upstream_time: None,
            quota: None,
            resource: None,
        }
    }

    /// A request that consumes no limit and records no use (`"count": false`).
    pub fn without_counting(mut self) -> Trace {
        self.count = false;
        self
    }
}

/// A request that passed every check of SPEC §3 up to the rate limit.
pub struct Decided<'d> {
    pub route: Arc<Route>,
    pub key: Arc<KeyView>,
    pub upstream: &'d forward::Upstream,
    /// The upstream's origin for the key's environment.
    pub origin: &'d forward::Origin,
    /// Where the credential was: a query credential is removed before forwarding.
    pub credential: credential::Source,
}

/// Serves one data-plane request; never fails (every failure is a response).
///
/// Not an `async fn`: the request's parts, body and trace are captured once by the
/// future returned, where an `async fn` would keep its arguments and its locals made
/// from them side by side (the caller boxes this future, and every byte of it is
/// copied into the box).
pub fn handle(
    dp: Arc<DataPlane>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> {
    let mut trace = Trace::start(Mode::Proxy, req.method(), req.headers());
    let (mut parts, body) = req.into_parts();
    async move {
        let (resp, outcome) = match run(&dp, conn, &mut parts, body, &mut trace).await {
            Ok(r) => (r, "allowed"),
            Err(refusal) => (respond::refusal(&refusal), refusal.code()),
        };
        Ok(finish(&dp, trace, resp, outcome, conn.peer.ip()).await.0)
    }
}

/// The end of every request, whatever its mode: `X-Request-Id`, `RateLimit-*`, usage,
/// metrics and one access-log line. `peer` is the connection's address (logged when
/// the client's is unknown). Also returns the rate-limit standing the headers show.
pub async fn finish<B>(
    dp: &DataPlane,
    trace: Trace,
    mut resp: Response<B>,
    outcome: &'static str,
    peer: IpAddr,
) -> (Response<B>, Option<limits::Quota>) {
    resp.headers_mut()
        .insert(X_REQUEST_ID, trace.request_id.clone());
    // [limits] `RateLimit-*` on responses to requests whose key authenticated.
    let (key, route) = (trace.key.as_deref(), trace.route.as_deref());
    let quota = limits::annotate(
        &dp.rate_limits,
        &mut resp,
        key,
        route,
        trace.quota,
        &trace.arrived,
    )
    .await;
    // [limits] Usage and last_used_at of the key the request named.
    if let (Some(key), Some(route), true) = (key, route, trace.count) {
        let refusal = (outcome != "allowed").then_some(outcome);
        dp.usage.record(
            &key.id,
            &usage::Outcome {
                route: &route.name,
                resource: trace.resource.as_deref(),
                status: resp.status(),
                refusal,
            },
            trace.arrived.time,
        );
    }

    let route = trace.route.as_ref().map_or(NO_ROUTE, |r| r.name.as_str());
    let status = resp.status();
    let elapsed = trace.arrived.instant.elapsed();
    dp.metrics.served(&Served {
        route,
        method: method_label(&trace.method),
        status,
        outcome,
        duration: elapsed,
        // (A route's upstream is named by the route.)
        upstream: trace
            .route
            .as_ref()
            .zip(trace.upstream_time)
            .map(|(r, took)| (r.upstream.as_str(), took)),
    });
    if trace.mode != Mode::Proxy {
        dp.metrics
            .authz_requests
            .with_label_values(&[trace.mode.as_str(), outcome])
            .inc();
    }
    access_log::write(&access_log::Line {
        request_id: trace.request_id.to_str().unwrap_or(""),
        mode: (trace.mode != Mode::Proxy).then_some(trace.mode.as_str()),
        org: trace.key.as_ref().map(|k| &*k.org),
        key_id: trace.key.as_ref().map(|k| &*k.id),
        route,
        method: trace.method.as_str(),
        status: status.as_u16(),
        code: outcome,
        client: trace.client.unwrap_or(peer),
        duration: elapsed,
        upstream: trace.upstream_time,
        at: trace
            .arrived
            .time
            .checked_add(elapsed)
            .unwrap_or(trace.arrived.time),
    });
    (resp, quota)
}

/// The client's `X-Request-Id` if it is one value of safe characters, else a new one.
pub fn request_id(headers: &HeaderMap, at: jiff::Timestamp) -> HeaderValue {
    let mut all = headers.get_all(&X_REQUEST_ID).iter();
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
    // A ULID from the clock and a fast per-thread generator: a request id needs to be
    // unique and sortable, not unguessable (`Ulid::new` draws from a CSPRNG).
    let ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
    let mut buf = [0; ulid::ULID_LEN];
    let id = ulid::Ulid::from_parts(ms, fastrand::u128(..)).array_to_str(&mut buf);
    crate::header_text::value(id.as_bytes()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Proxy mode: the request's own limits and host, [`decide`], the header rewrite, the
/// rate limit, then forwarding.
async fn run(
    dp: &DataPlane,
    conn: ConnInfo,
    parts: &mut http::request::Parts,
    body: Incoming,
    trace: &mut Trace,
) -> Result<Response<Body>, Refusal> {
    check_limits(dp, parts, &[])?;
    let client_host = client_host(parts)?;
    // Checked to be UTF-8 by `client_host`.
    let host = client_host.as_ref().and_then(|h| h.to_str().ok());
    let peer_ip = ip::canonical(conn.peer.ip());
    let peer_trusted = ip::is_trusted(peer_ip, &dp.trusted_proxies);
    let client = ip::client_addr(peer_ip, &parts.headers, &dp.trusted_proxies);
    let decided = decide(
        dp,
        &Question {
            method: &parts.method,
            host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            client,
            failure_ip: Some(client.unwrap_or(peer_ip)),
            orgs: None,
        },
        trace,
    )
    .await?;

    // Forward. `extract` refused any api_key parameter unless it is the credential.
    let stripped = match parts.uri.query() {
        Some(q) if decided.credential == credential::Source::Query => {
            Some(credential::strip_query_credential(q))
        }
        _ => None,
    };
    let uri = forward::upstream_target(&parts.uri, stripped.as_ref().map(|q| q.as_deref()))?;
    let rewrite = forward::plan(
        &parts.headers,
        &Forwarding {
            key: &decided.key,
            identity: &dp.identity,
            peer: peer_ip,
            peer_trusted,
            client_host: client_host.as_ref(),
            tls: dp.tls,
            request_id: &trace.request_id,
            preserve_host: decided.upstream.preserve_host,
        },
    )?;
    // [limits] Last, after every check that can refuse: refused requests consume nothing.
    admit(dp, &decided, trace).await?;
    let upstream = decided.upstream;
    let (resp, took) = upstream
        .send(
            decided.origin,
            parts,
            &rewrite,
            body,
            &uri,
            dp.limits.max_body_bytes,
        )
        .await?;
    trace.upstream_time = Some(took);
    Ok(resp)
}

/// The decision of every mode, in SPEC §3 order: path rules → route → credential →
/// key → IP → environment → endpoint → resource → scope. The rate limit comes after
/// the mode's own last checks, in [`admit`].
pub async fn decide<'d>(
    dp: &'d DataPlane,
    q: &Question<'_>,
    trace: &mut Trace,
) -> Result<Decided<'d>, Refusal> {
    // Proxy mode checked its request line in `check_limits`; a described request's
    // target is checked here, for every mode alike.
    let target_len = q.path.len() + q.query.map_or(0, |s| s.len() + 1);
    if target_len > dp.limits.max_uri_bytes {
        return Err(Refusal::UriTooLong(dp.limits.max_uri_bytes));
    }
    path::check(q.path)?;
    trace.client = q.client;

    // Route, and the resource named by its path parameters.
    let (route, resource) = {
        let m = dp
            .routes
            .lookup(q.method, q.host, q.path)
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

    // Credential → key. The token lives only in this block.
    let (key, source) = {
        let cred = credential::extract(q.headers, q.query, route.query_key)?;
        let key = authenticate(dp, &cred.token, q.failure_ip, q.orgs, trace).await?;
        (key, cred.source)
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
            client: q.client,
            upstream_has_test: upstream.has_test(),
        },
        &dp.scopes,
    )?;
    let origin = upstream
        .origin(key.environment)
        .ok_or(Refusal::EnvironmentNotAllowed(
            "test keys may not call this route: its upstream has no test_url",
        ))?;
    Ok(Decided {
        route,
        key,
        upstream,
        origin,
        credential: source,
    })
}

/// [limits] The rate limit, last: counts the request in every window of its key and
/// route, or refuses it (429) and counts nothing. A request that does not count
/// (`"count": false`) only looks.
pub async fn admit(dp: &DataPlane, d: &Decided<'_>, trace: &mut Trace) -> Result<(), Refusal> {
    if trace.count {
        dp.rate_limits
            .acquire(&d.key, Some(&d.route), &trace.arrived, &mut trace.quota)
            .await
    } else {
        trace.quota = dp
            .rate_limits
            .peek(&d.key, Some(&d.route), &trace.arrived)
            .await;
        Ok(())
    }
}

/// The verify API's second form (SPEC §9): the key holds every scope of `needed` (and
/// the client, when given, passes its IP allow-list). The key's own, org and global
/// limits apply (route limits do not: there is no route).
pub async fn decide_scopes(
    dp: &DataPlane,
    token: &str,
    needed: &[String],
    client: Option<IpAddr>,
    orgs: Option<&[String]>,
    trace: &mut Trace,
) -> Result<Arc<KeyView>, Refusal> {
    trace.client = client;
    trace.route = Some(VERIFY_ROUTE.clone());
    let key = authenticate(dp, token, client, orgs, trace).await?;
    policy::authorize_scopes(&key, client, needed, &dp.scopes)?;
    if trace.count {
        dp.rate_limits
            .acquire(&key, None, &trace.arrived, &mut trace.quota)
            .await?;
    } else {
        trace.quota = dp.rate_limits.peek(&key, None, &trace.arrived).await;
    }
    Ok(key)
}

/// The pseudo-route of the verify API's scope form: its name labels metrics and usage.
static VERIFY_ROUTE: std::sync::LazyLock<Arc<Route>> = std::sync::LazyLock::new(|| {
    Arc::new(Route {
        name: "verify".into(),
        upstream: String::new(),
        scope: String::new(),
        resource: None,
        query_key: false,
        environments: None,
        rate_limit: None,
    })
});

/// Size limits that hold before anything else is looked at. Headers named in
/// `not_counted` (forward-auth's description of the original request, whose URI is
/// checked against `max_uri_bytes` itself) do not count against `max_header_bytes`.
pub fn check_limits(
    dp: &DataPlane,
    parts: &http::request::Parts,
    not_counted: &[&str],
) -> Result<(), Refusal> {
    let l = &dp.limits;
    let uri_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > l.max_uri_bytes {
        return Err(Refusal::UriTooLong(l.max_uri_bytes));
    }
    let header_bytes: usize = parts
        .headers
        .iter()
        .filter(|(n, _)| !not_counted.contains(&n.as_str()))
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

/// The client's host: h2 `:authority` or the one `Host` header (shared, not copied).
/// Its value is valid UTF-8.
pub fn client_host(parts: &http::request::Parts) -> Result<Option<HeaderValue>, Refusal> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("several Host headers"));
    }
    let text = match header {
        Some(h) => Some(
            h.to_str()
                .map_err(|_| Refusal::BadRequest("malformed Host header"))?,
        ),
        None => None,
    };
    match (parts.uri.authority(), text) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => Err(Refusal::BadRequest(
            "the Host header does not match the request target",
        )),
        (Some(a), _) => HeaderValue::from_str(a.as_str())
            .map(Some)
            .map_err(|_| Refusal::BadRequest("malformed request target authority")),
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
        (None, None) if parts.version == http::Version::HTTP_11 => Err(Refusal::BadRequest(
            "an HTTP/1.1 request needs a Host header",
        )),
        (None, _) => Ok(header.cloned()),
    }
}

/// Token → a key that may authenticate. Counts failures per client address. Records
/// the key in `trace` as soon as it is found, so refusals of a known key (revoked,
/// expired…) are attributed to it in logs and usage.
async fn authenticate(
    dp: &DataPlane,
    token: &str,
    client: Option<IpAddr>,
    orgs: Option<&[String]>,
    trace: &mut Trace,
) -> Result<Arc<KeyView>, Refusal> {
    let fail = |r: Refusal| {
        if let Some(client) = client
            && r.is_auth_failure()
        {
            dp.failures.record_failure(client);
        }
        r
    };
    let env = dp
        .key_format
        .check(token)
        .map_err(|_| fail(Refusal::InvalidApiKey("the API key is malformed")))?;
    let hash = KeyHash::of(token);
    let key = if let Some(retry_after) = client.and_then(|c| dp.failures.blocked(c)) {
        dp.resolver
            .cached(&hash)
            .await
            .ok_or(Refusal::TooManyAuthFailures { retry_after })?
    } else {
        match dp.resolver.resolve_at(&hash, trace.arrived.instant).await {
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
    // A key outside the asker's orgs (a verifier's) is answered as unknown: neither its
    // state nor its existence shows, and nothing is counted against it.
    if orgs.is_some_and(|orgs| !orgs.iter().any(|o| **o == *key.org)) {
        return Err(Refusal::InvalidApiKey("the API key is not valid"));
    }
    if !key.deleted() {
        trace.key = Some(key.clone());
    }
    policy::check_key(&key, trace.arrived.time).map_err(fail)?;
    Ok(key)
}
