//! Forwarding to upstreams: HTTP/1.1 connections kept per worker and origin
//! ([`pool`](crate::proxy::pool); HTTP, or HTTPS verified against the system roots plus
//! `ca_file`, with an optional client certificate), the header rewrite of SPEC §3
//! "Headers", and the mapping of upstream failures to 502/504.
//!
//! Bodies stream both ways; the request body is wrapped in a length limit so that a
//! streamed body over `max_body_bytes` aborts the upstream request. A request goes to a
//! second connection only when the first could not take it (never written).

use std::cell::RefCell;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::combinators::MapErr;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;

use crate::config::{HOP_BY_HOP_HEADERS, IdentityHeaders, UpstreamConfig, hop_by_hop_index};
use crate::key::{Environment, KeyView};
use crate::memo::Memo;
use crate::policy::ip::X_FORWARDED_FOR;
use crate::proxy::workers::{self, Workers};
use crate::proxy::{Body, BoxError};
use crate::proxy::{client, deadline, pool};
use crate::refusal::Refusal;
use crate::tls;

/// The request body as sent upstream: the client's, capped at `max_body_bytes`, with
/// its read errors marked as the client's fault.
pub type UpstreamBody = MapErr<Limited<Incoming>, fn(BoxError) -> BoxError>;
/// The upstream's response body, which gives its connection back when read.
pub type UpstreamResponseBody = pool::Returning<UpstreamBody>;

/// A read error of the client's request body (bad chunk, early close): the request
/// is the client's fault (400), not the upstream's (502).
#[derive(Debug, thiserror::Error)]
#[error("the client's request body could not be read: {0}")]
pub struct ClientBodyError(BoxError);

fn mark_client_error(e: BoxError) -> BoxError {
    if e.is::<LengthLimitError>() {
        e
    } else {
        Box::new(ClientBodyError(e))
    }
}

/// Where one environment of an upstream lives.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `scheme://authority`, what the connector dials.
    base: Uri,
    /// For an `http://` origin, where keygate's own client dials.
    address: Option<client::Address>,
    /// The `Host` the upstream gets unless `preserve_host`.
    host: HeaderValue,
    /// Which idle list of a worker: 0 live, 1 test.
    slot: usize,
}

pub struct Upstream {
    pub name: String,
    live: Origin,
    test: Option<Origin>,
    connector: pool::Connector,
    /// Per data-plane worker, the idle connections to the live and the test origin, so
    /// a request and its upstream connection stay on one thread
    /// ([`workers`](crate::proxy::workers)).
    idle: Vec<[Arc<pool::Idle<UpstreamBody>>; 2]>,
    /// The same for keygate's own client's connections.
    own_idle: Vec<[Arc<client::Idle>; 2]>,
    /// Time allowed to connect (keygate's own client; the connector has its own).
    connect_timeout: Duration,
    /// Time allowed until response headers.
    timeout: Duration,
    pub preserve_host: bool,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(cfg)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let workers = Workers::default_count().max(1);
        let idle = (0..workers)
            .map(|_| [Arc::default(), Arc::default()])
            .collect();
        let own_idle = (0..workers)
            .map(|_| [Arc::default(), Arc::default()])
            .collect();
        Ok(Upstream {
            name: cfg.name.clone(),
            live: origin(&cfg.url, 0).with_context(|| format!("upstreams.{}.url", cfg.name))?,
            test: cfg
                .test_url
                .as_ref()
                .map(|u| origin(u, 1))
                .transpose()
                .with_context(|| format!("upstreams.{}.test_url", cfg.name))?,
            connector,
            idle,
            own_idle,
            connect_timeout: cfg.connect_timeout,
            timeout: cfg.timeout,
            preserve_host: cfg.preserve_host,
        })
    }

    pub fn has_test(&self) -> bool {
        self.test.is_some()
    }

    /// The origin for keys of `env` (test keys only ever reach `test_url`).
    pub fn origin(&self, env: Environment) -> Option<&Origin> {
        match env {
            Environment::Live => Some(&self.live),
            Environment::Test => self.test.as_ref(),
        }
    }

    /// Sends the request (`parts` with the upstream's `target`, and `body`) to
    /// `origin` and waits for response headers, at most `timeout` (connecting
    /// included); the response is the client's ([`client_response`]).
    pub async fn send(
        &self,
        origin: &Origin,
        parts: &mut http::request::Parts,
        rewrite: &Rewrite,
        body: Incoming,
        target: &Uri,
        max_body: u64,
    ) -> Result<(Response<Body>, Duration), Refusal> {
        // tokio's clock, which the deadline is kept on (and tests can pause).
        let started = Instant::now();
        // The common case, a request without a body to a plain-HTTP upstream, goes
        // through keygate's own client, which writes the rewritten headers as it
        // writes the head.
        if let Some(address) = &origin.address
            && body.is_end_stream()
            && parts.method != http::Method::CONNECT
        {
            return self
                .send_own(origin, address, parts, rewrite, target, started)
                .await;
        }
        let mut parts = std::mem::replace(parts, Request::new(()).into_parts().0);
        rewrite.apply(&mut parts.headers);
        // HTTP/1.1 to an origin server: the target is origin-form (`upstream_target`);
        // the upstream's own Host unless the client's is kept (`preserve_host`).
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, origin.host.clone());
        }
        let req = upstream_request(parts, body, target.clone(), max_body);
        // Boxed: hyper's exchange is a large future, and the common case needs none.
        let (resp, took) = Box::pin(self.send_hyper(origin, req, max_body, started)).await?;
        Ok((client_response(resp), took))
    }

    /// [`send`](Self::send) for a request without a body, through keygate's own client.
    async fn send_own(
        &self,
        origin: &Origin,
        address: &client::Address,
        parts: &http::request::Parts,
        rewrite: &Rewrite,
        target: &Uri,
        started: Instant,
    ) -> Result<(Response<Body>, Duration), Refusal> {
        let worker = workers::current() % self.own_idle.len().max(1);
        let Some(idle) = self.own_idle.get(worker).map(|w| w[origin.slot].clone()) else {
            return Err(Refusal::UpstreamUnavailable);
        };
        let target = target.path_and_query().map_or("/", |pq| pq.as_str());
        let exchange = async {
            let mut conn = match idle.checkout(started.into_std()) {
                Some(conn) => conn,
                // Boxed: connecting is needed only without an idle connection.
                None => Box::pin(client::Conn::connect(address, self.connect_timeout)).await?,
            };
            let headers = |out: &mut Vec<u8>| rewrite.write(&parts.headers, &origin.host, out);
            let head = conn.exchange(&parts.method, target, headers).await?;
            Ok::<_, client::Error>((conn, head))
        };
        match deadline::until(started + self.timeout, exchange).await {
            Err(_) => Err(Refusal::UpstreamTimeout),
            Ok(Ok((conn, head))) => {
                let now = Instant::now();
                let body = client::ResponseBody::new(conn, &head, idle, now.into_std());
                let mut resp = Response::new(body.map_err(BoxError::from).boxed_unsync());
                *resp.status_mut() = head.status;
                // Without hop-by-hop headers: `parse_head` left them out.
                *resp.headers_mut() = head.headers;
                Ok((resp, now.duration_since(started)))
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.name, error = %e, "upstream request failed");
                Err(Refusal::UpstreamUnavailable)
            }
        }
    }

    /// [`send`](Self::send) through hyper's client: a request with a body, an HTTPS
    /// upstream, `CONNECT`.
    async fn send_hyper(
        &self,
        origin: &Origin,
        mut req: Request<UpstreamBody>,
        max_body: u64,
        started: Instant,
    ) -> Result<(Response<UpstreamResponseBody>, Duration), Refusal> {
        let worker = workers::current() % self.idle.len().max(1);
        let Some(idle) = self.idle.get(worker).map(|w| w[origin.slot].clone()) else {
            return Err(Refusal::UpstreamUnavailable);
        };
        let exchange = async {
            if let Some(mut sender) = idle.checkout(started.into_std()) {
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok((resp, sender)),
                    Err(mut e) => match e.take_message() {
                        // Never written: the connection was closing. A new one takes it.
                        Some(r) => req = r,
                        None => return Err(BoxError::from(e.into_error())),
                    },
                }
            }
            // Boxed: connecting (TCP, TLS) is a large future, needed only without an
            // idle connection.
            let mut sender = Box::pin(pool::connect(&self.connector, origin.base.clone())).await?;
            let resp = sender.send_request(req).await?;
            Ok((resp, sender))
        };
        match deadline::until(started + self.timeout, exchange).await {
            Err(_) => Err(Refusal::UpstreamTimeout),
            Ok(Ok((resp, sender))) => Ok((
                resp.map(|body| pool::Returning::new(body, sender, idle)),
                started.elapsed(),
            )),
            Ok(Err(e)) => {
                if caused_by::<LengthLimitError>(&*e) {
                    return Err(Refusal::BodyTooLarge(max_body));
                }
                if caused_by::<ClientBodyError>(&*e) {
                    return Err(Refusal::BadRequest(
                        "the request body is malformed or was cut short",
                    ));
                }
                tracing::warn!(upstream = %self.name, error = %e, "upstream request failed");
                Err(Refusal::UpstreamUnavailable)
            }
        }
    }
}

/// Whether `T` is anywhere in the error's source chain.
fn caused_by<T: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn origin(uri: &Uri, slot: usize) -> anyhow::Result<Origin> {
    let scheme = uri.scheme().cloned().ok_or_else(|| anyhow!("no scheme"))?;
    let authority = uri.authority().cloned().ok_or_else(|| anyhow!("no host"))?;
    let base = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .context("the upstream URL")?;
    let host = HeaderValue::from_str(authority.as_str()).context("the upstream host")?;
    Ok(Origin {
        address: client::Address::of(&base),
        base,
        host,
        slot,
    })
}

fn client_tls(cfg: &UpstreamConfig) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = &cfg.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading ca_file {}", ca.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing ca_file {}", ca.display()))?;
        if certs.is_empty() {
            return Err(anyhow!("ca_file {}: no certificate found", ca.display()));
        }
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("ca_file {}: unusable certificate", ca.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    // ALPN is left to the connector builder (it sets http/1.1 from enable_http1).
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading client_cert {}", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing client_cert {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading client_key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// [`HOP_BY_HOP_HEADERS`] as `HeaderName`s (the standard ones are
/// `header::CONNECTION` and so on, compared as such).
static HOP_BY_HOP: [HeaderName; 9] = {
    const fn name(i: usize) -> HeaderName {
        HeaderName::from_static(HOP_BY_HOP_HEADERS[i])
    }
    [
        name(0),
        name(1),
        name(2),
        name(3),
        name(4),
        name(5),
        name(6),
        name(7),
        name(8),
    ]
};

/// A bit for each length of a [`HOP_BY_HOP`] name.
const HOP_LENGTHS: u64 = lengths_of(&HOP_BY_HOP_HEADERS);

/// Method-override headers: removed so that the scope checked is the scope used.
const METHOD_OVERRIDE_NAMES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
static METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static(METHOD_OVERRIDE_NAMES[0]),
    HeaderName::from_static(METHOD_OVERRIDE_NAMES[1]),
    HeaderName::from_static(METHOD_OVERRIDE_NAMES[2]),
];

// Names keygate sets on every forwarded request, parsed once.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The index in [`HOP_BY_HOP`] of a parsed (lowercase) header name: one bit test
/// excludes most names, and `HeaderName` equality is an enum compare for the standard
/// ones.
fn standard_hop(name: &HeaderName) -> Option<usize> {
    if HOP_LENGTHS & length_bit(name.as_str().len()) == 0 {
        return None;
    }
    HOP_BY_HOP.iter().position(|hop| hop == name)
}

/// Drops hop-by-hop headers, `Upgrade`, and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    HopByHop::of(headers).remove_from(headers);
}

/// The hop-by-hop headers of a message: the standard ones present and the others its
/// `Connection` names.
#[derive(Default)]
struct HopByHop {
    /// A bit per [`HOP_BY_HOP`] name present.
    present: u32,
    /// Other headers `Connection` names (allocated for only when one is present).
    named: Vec<HeaderName>,
}

impl HopByHop {
    fn of(headers: &HeaderMap) -> HopByHop {
        // One pass over the names marks which hop-by-hop headers are present; most
        // requests have none, most responses only `Connection`.
        let mut present = 0u32;
        for i in headers.keys().filter_map(standard_hop) {
            present |= 1 << i;
        }
        let mut named: Vec<HeaderName> = Vec::new();
        if present == 0 {
            return HopByHop { present, named };
        }
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        {
            // Hop-by-hop names are covered by `present`, named or not.
            let token = token.trim_ascii();
            if hop_by_hop_index(token).is_none()
                && let Ok(n) = HeaderName::from_bytes(token)
                && headers.contains_key(&n)
            {
                named.push(n);
            }
        }
        HopByHop { present, named }
    }

    /// Whether header `name` is one of them.
    fn covers(&self, name: &HeaderName) -> bool {
        if self.present == 0 {
            return false;
        }
        standard_hop(name).is_some() || self.named.contains(name)
    }

    fn remove_from(&self, headers: &mut HeaderMap) {
        for n in &self.named {
            headers.remove(n);
        }
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            if self.present & (1 << i) != 0 {
                headers.remove(n);
            }
        }
    }
}

/// Headers that say who the client is or how it connected: believed only from a
/// trusted proxy, removed (in any spelling) from everyone else.
const CLIENT_ADDRESS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "true-client-ip",
];

/// A bit for a name's length in a mask of lengths; names of 63 bytes or more share
/// the last bit.
const fn length_bit(len: usize) -> u64 {
    1 << if len < 63 { len } else { 63 }
}

/// The bits of a list of names' lengths.
const fn lengths_of(names: &[&str]) -> u64 {
    let mut bits = 0;
    let mut i = 0;
    while i < names.len() {
        bits |= length_bit(names[i].len());
        i += 1;
    }
    bits
}

const CLIENT_ADDRESS_LENGTHS: u64 = lengths_of(&CLIENT_ADDRESS);
const METHOD_OVERRIDE_LENGTHS: u64 = lengths_of(&METHOD_OVERRIDE_NAMES);

/// Whether header `name` is `target` as upstreams may read it: the same ignoring case
/// and treating `_` as `-` (CGI, PHP and others map both to one variable).
fn same_header(name: &[u8], target: &[u8]) -> bool {
    target.len() == name.len()
        && target.iter().zip(name).all(|(t, n)| {
            let n = if *n == b'_' { b'-' } else { *n };
            t.eq_ignore_ascii_case(&n)
        })
}

/// Whether a client header name spoofs an identity header.
fn spoofs(name: &HeaderName, identity: &IdentityHeaders) -> bool {
    let n = name.as_str().as_bytes();
    [
        &identity.org,
        &identity.key_id,
        &identity.scopes,
        &identity.environment,
    ]
    .iter()
    .any(|id| same_header(n, id.as_str().as_bytes()))
}

/// Whether a client header name is a client-address header in some spelling.
fn names_client_address(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    CLIENT_ADDRESS.iter().any(|a| same_header(n, a.as_bytes()))
}

/// Everything the header rewrite needs to know about this request.
pub struct Forwarding<'a> {
    pub key: &'a Arc<KeyView>,
    pub identity: &'a IdentityHeaders,
    pub peer: std::net::IpAddr,
    pub peer_trusted: bool,
    /// The client's Host (or h2 `:authority`).
    pub client_host: Option<&'a HeaderValue>,
    pub tls: bool,
    pub request_id: &'a HeaderValue,
    pub preserve_host: bool,
}

/// Most headers keygate sets on a forwarded request: `X-Forwarded-For`, `-Proto`,
/// `-Host`, `Host`, `X-Request-Id` and the four identity headers.
const MAX_SET: usize = 9;

/// The header rewrite of SPEC §3 "Headers" for one request, decided once and
/// carried out either on the request's `HeaderMap` (hyper's client) or while writing
/// the upstream request head (keygate's own client, [`Rewrite::write`]): which of
/// the client's headers go, and what keygate sets in their place.
pub struct Rewrite {
    /// Spoofed identity headers, client-address headers from an untrusted peer, and
    /// method overrides, in the spellings sent (usually none: no allocation).
    removed: Vec<HeaderName>,
    hop_by_hop: HopByHop,
    /// `X-Forwarded-For`: the peer, after a trusted peer's list.
    forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto`, unless a trusted peer's is kept.
    proto: Option<HeaderValue>,
    /// `X-Forwarded-Host`, unless a trusted peer's is kept.
    forwarded_host: Option<HeaderValue>,
    /// `Host`: the client's, with `preserve_host`; else the upstream's.
    host: Option<HeaderValue>,
    request_id: HeaderValue,
    identity: Arc<Identity>,
}

/// Plans the rewrite of client headers `h` into upstream headers, in order: spoofed
/// identity headers out (and, from an untrusted peer, every client-address header:
/// `Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `True-Client-IP`), hop-by-hop and
/// `Authorization` out, then keygate's own in; `Host` is the client's with
/// `preserve_host`, else the upstream's (set by the sender).
pub fn plan(h: &HeaderMap, f: &Forwarding<'_>) -> Result<Rewrite, Refusal> {
    // A name of none of their lengths is none of them: one bit test for most names.
    let mut lengths = METHOD_OVERRIDE_LENGTHS;
    if !f.peer_trusted {
        lengths |= CLIENT_ADDRESS_LENGTHS;
    }
    for id in [
        &f.identity.org,
        &f.identity.key_id,
        &f.identity.scopes,
        &f.identity.environment,
    ] {
        lengths |= length_bit(id.as_str().len());
    }
    // One pass over the names: spoofed identity and client-address headers, and
    // method overrides, are collected (empty in the common case: no allocation).
    let removed: Vec<HeaderName> = h
        .keys()
        .filter(|n| {
            lengths & length_bit(n.as_str().len()) != 0
                && (spoofs(n, f.identity)
                    || (!f.peer_trusted && names_client_address(n))
                    || METHOD_OVERRIDES.contains(n))
        })
        .cloned()
        .collect();
    let hop_by_hop = HopByHop::of(h);

    let peer = peer_value(f.peer);
    let forwarded_for = if f.peer_trusted {
        let mut joined = Vec::new();
        for v in h.get_all(&X_FORWARDED_FOR) {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        if joined.is_empty() {
            peer
        } else {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&joined)
                .map_err(|_| Refusal::BadRequest("malformed X-Forwarded-For header"))?
        }
    } else {
        // The client-address headers went with the spoofed ones above.
        peer
    };
    // From an untrusted peer the client-address headers go.
    let proto = (!f.peer_trusted || !h.contains_key(&X_FORWARDED_PROTO))
        .then(|| HeaderValue::from_static(if f.tls { "https" } else { "http" }));
    let forwarded_host = if !f.peer_trusted || !h.contains_key(&X_FORWARDED_HOST) {
        f.client_host.cloned()
    } else {
        None
    };
    Ok(Rewrite {
        removed,
        hop_by_hop,
        forwarded_for,
        proto,
        forwarded_host,
        host: f.client_host.filter(|_| f.preserve_host).cloned(),
        request_id: f.request_id.clone(),
        identity: identity(f.identity, f.key)?,
    })
}

impl Rewrite {
    /// What keygate sets besides the identity headers, in order (`Host` only when the
    /// client's is kept), for `apply` and `write`.
    fn own(&self) -> [Option<(&'static HeaderName, &HeaderValue)>; 5] {
        // Borrowed from statics: no name is made and dropped per request.
        static NAMES: [HeaderName; 5] = [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            header::HOST,
            X_REQUEST_ID,
        ];
        let [xff, proto, xfh, host, rid] = &NAMES;
        [
            Some((xff, &self.forwarded_for)),
            self.proto.as_ref().map(|v| (proto, v)),
            self.forwarded_host.as_ref().map(|v| (xfh, v)),
            self.host.as_ref().map(|v| (host, v)),
            Some((rid, &self.request_id)),
        ]
    }

    /// Whether the client's header `name` goes (`Host` always: the client's is kept
    /// only through `own`). Asked per client header, so the names of `own` are
    /// compared directly rather than by building its list each time (the property
    /// test `the_rewrite_applied_and_written_agree` holds the two together).
    fn drops(&self, name: &HeaderName) -> bool {
        name == header::AUTHORIZATION
            || name == header::HOST
            || self.removed.contains(name)
            || self.hop_by_hop.covers(name)
            || name == X_FORWARDED_FOR
            || name == X_REQUEST_ID
            || (self.proto.is_some() && name == X_FORWARDED_PROTO)
            || (self.forwarded_host.is_some() && name == X_FORWARDED_HOST)
            || self.identity.names.contains(name)
    }

    /// Carries the rewrite out on the request's headers.
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.removed {
            h.remove(n);
        }
        self.hop_by_hop.remove_from(h);
        h.remove(header::AUTHORIZATION);
        // The client fills in the upstream's own host from the URI, unless `set`
        // keeps the client's.
        h.remove(header::HOST);
        // Room for what is added below, made once.
        h.reserve(MAX_SET);
        for (name, value) in self.own().into_iter().flatten() {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in self.identity.headers() {
            h.insert(name.clone(), value.clone());
        }
    }

    /// Writes the upstream request's header lines: the client's headers that stay,
    /// in their order, then keygate's; `host` unless the client's is kept.
    pub fn write(&self, client: &HeaderMap, host: &HeaderValue, out: &mut Vec<u8>) {
        // A request without a body is framed by having none.
        for (name, value) in client {
            if name != header::TRANSFER_ENCODING && !self.drops(name) {
                line(out, name, value.as_bytes());
            }
        }
        if self.host.is_none() {
            line(out, &header::HOST, host.as_bytes());
        }
        for (name, value) in self.own().into_iter().flatten() {
            line(out, name, value.as_bytes());
        }
        // The identity headers, written once per key view.
        out.extend_from_slice(&self.identity.lines);
    }
}

/// Appends one header line.
fn line(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Records whose identity headers a thread keeps at most; emptied when full.
const IDENTITY_MEMO_MAX: usize = 4096;

/// A key view's identity headers (SPEC §3): org, key id, scopes, environment, under
/// the names the config gives them, as values and as the header lines written.
pub struct Identity {
    /// Held so that no other view takes its address while this is kept.
    key: Arc<KeyView>,
    names: [HeaderName; 4],
    values: [HeaderValue; 4],
    lines: Box<[u8]>,
}

impl Identity {
    /// The identity headers as names and values.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.names.iter().zip(&self.values)
    }
}

thread_local! {
    /// The identity headers of the key views this thread sent recently, by view
    /// address: made once per cached view, not once per request. Each entry holds its
    /// view, so no address is reused while it is a key here; a changed key is a new
    /// view (the resolver never changes one in place). An entry made under other
    /// header names (a reloaded config) is made again.
    static IDENTITIES: RefCell<Memo<usize, Arc<Identity>>> =
        RefCell::new(Memo::new(IDENTITY_MEMO_MAX));
}

/// The identity headers of SPEC §3 for `key`, under the names `names`.
pub fn identity(names: &IdentityHeaders, k: &Arc<KeyView>) -> Result<Arc<Identity>, Refusal> {
    let names = [&names.org, &names.key_id, &names.scopes, &names.environment];
    IDENTITIES.with(|memo| {
        let address = Arc::as_ptr(k) as usize;
        if let Some(id) = memo.borrow().get(&address)
            && id.names.iter().eq(names)
        {
            debug_assert!(Arc::ptr_eq(&id.key, k));
            return Ok(id.clone());
        }
        let value = |s: &str| {
            HeaderValue::from_str(s).map_err(|_| Refusal::BadRequest("identity not representable"))
        };
        let values = [
            value(&k.org)?,
            value(&k.id)?,
            value(&k.scopes.join(","))?,
            HeaderValue::from_static(k.environment.as_str()),
        ];
        let mut lines = Vec::new();
        for (name, value) in names.into_iter().zip(&values) {
            line(&mut lines, name, value.as_bytes());
        }
        let id = Arc::new(Identity {
            key: k.clone(),
            names: names.map(HeaderName::clone),
            values,
            lines: lines.into(),
        });
        memo.borrow_mut().insert(address, id.clone());
        Ok(id)
    })
}

/// The peer's address as a header value; a thread keeps its last one, since a
/// connection's requests (and a load balancer's connections) share their peer.
fn peer_value(peer: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((ip, v)) if *ip == peer => v.clone(),
            _ => {
                let v = HeaderValue::from(PeerIp(peer));
                *last = Some((peer, v.clone()));
                v
            }
        }
    })
}

struct PeerIp(std::net::IpAddr);

impl From<PeerIp> for HeaderValue {
    fn from(p: PeerIp) -> HeaderValue {
        let mut buf = [0u8; 45];
        let text = crate::policy::ip::render(p.0, &mut buf);
        // An IP address always renders as a valid header value.
        HeaderValue::from_bytes(text).unwrap_or(HeaderValue::from_static("unknown"))
    }
}

/// The upstream request target (origin-form): the client's raw path and query, as
/// sent; `stripped_query` replaces the query when the credential was removed from it.
pub fn upstream_target(client: &Uri, stripped_query: Option<Option<&str>>) -> Result<Uri, Refusal> {
    let bad = || Refusal::BadRequest("the request target cannot be forwarded");
    let Some(query) = stripped_query else {
        // The common case: the client's bytes, shared, not copied.
        let pq = client.path_and_query().cloned().ok_or_else(bad)?;
        return Uri::from_parts({
            let mut p = http::uri::Parts::default();
            p.path_and_query = Some(pq);
            p
        })
        .map_err(|_| bad());
    };
    let path = client.path();
    let mut pq = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    pq.parse().map_err(|_| bad())
}

/// Builds the upstream request from the client's parts and body.
pub fn upstream_request(
    mut parts: http::request::Parts,
    body: Incoming,
    uri: Uri,
    max_body: u64,
) -> Request<UpstreamBody> {
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let mark: fn(BoxError) -> BoxError = mark_client_error;
    Request::from_parts(parts, Limited::new(body, max_body as usize).map_err(mark))
}

/// The client's response: upstream status and headers less hop-by-hop ones, streamed body.
pub fn client_response(resp: Response<UpstreamResponseBody>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The protocol version is per connection: the client's is keygate's to speak, not
    // the upstream's. An HTTP/1.0 upstream must not turn the client's HTTP/1.1
    // keep-alive connection into HTTP/1.0 (hyper answers an HTTP/1.0 client in HTTP/1.0
    // anyway, and ignores the version on HTTP/2).
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> IdentityHeaders {
        IdentityHeaders {
            org: HeaderName::from_static("x-org-id"),
            key_id: HeaderName::from_static("x-api-key-id"),
            scopes: HeaderName::from_static("x-api-key-scopes"),
            environment: HeaderName::from_static("x-api-key-environment"),
        }
    }

    #[test]
    fn spoofing_variants() {
        let id = identity();
        for n in ["x-org-id", "x_org_id", "x-org_id", "x-api-key-scopes"] {
            assert!(
                spoofs(&HeaderName::from_bytes(n.as_bytes()).unwrap(), &id),
                "{n}"
            );
        }
        for n in ["x-org", "x-org-idx", "org-id"] {
            assert!(
                !spoofs(&HeaderName::from_bytes(n.as_bytes()).unwrap(), &id),
                "{n}"
            );
        }
    }

    #[test]
    fn connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn hop_by_hop_names_in_any_case_and_spelling() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(n.as_str().as_bytes()), Some(i));
            assert_eq!(
                hop_by_hop_index(n.as_str().to_uppercase().as_bytes()),
                Some(i)
            );
        }
        assert_eq!(hop_by_hop_index(b"Upgrade"), Some(8));
        for n in ["x-kept", "connections", "t", "tea", "keep_alive", ""] {
            assert_eq!(hop_by_hop_index(n.as_bytes()), None, "{n}");
        }
        // A response with only `Connection: Keep-Alive, Upgrade` and its named headers.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" X-Named , te"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-named", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}

/// Property: after the rewrite, no identity header and (from an untrusted peer) no
/// client-address header the client sent survives, whatever its case or `_`/`-`
/// spelling; the upstream sees exactly one of each identity header, with keygate's
/// values.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::key::{KeyHash, KeyRecord, Shared};

    const SENSITIVE: [&str; 10] = [
        "x-org-id",
        "x-api-key-id",
        "x-api-key-scopes",
        "x-api-key-environment",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "true-client-ip",
    ];

    fn identity() -> IdentityHeaders {
        IdentityHeaders {
            org: HeaderName::from_static("x-org-id"),
            key_id: HeaderName::from_static("x-api-key-id"),
            scopes: HeaderName::from_static("x-api-key-scopes"),
            environment: HeaderName::from_static("x-api-key-environment"),
        }
    }

    fn key() -> KeyView {
        record().into_view(&KeyHash([7; 32]), &Shared::default())
    }

    fn record() -> KeyRecord {
        KeyRecord::sample(KeyHash([7; 32]))
    }

    /// A sensitive name in some spelling: each character's case flipped or `-` made
    /// `_` at random (HeaderMap lowercases; the spelling that survives is `_`).
    fn spelling() -> impl Strategy<Value = (usize, String)> {
        (0..SENSITIVE.len(), any::<u64>()).prop_map(|(i, bits)| {
            let name: String = SENSITIVE[i]
                .chars()
                .enumerate()
                .map(|(j, c)| match (c, bits >> (j % 64) & 1) {
                    ('-', 1) => '_',
                    (c, 1) => c.to_ascii_uppercase(),
                    (c, _) => c,
                })
                .collect();
            (i, name)
        })
    }

    /// A client's headers: sensitive names in some spelling, then others.
    fn headers_of(sent: &[((usize, String), String)], others: &[(String, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let all = sent
            .iter()
            .map(|((_, n), v)| (n, v))
            .chain(others.iter().map(|(n, v)| (n, v)));
        for (name, value) in all {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn normalized(name: &str) -> String {
        name.to_ascii_lowercase().replace('_', "-")
    }

    proptest! {
        #[test]
        fn no_client_identity_header_survives(
            sent in proptest::collection::vec((spelling(), "[a-z0-9., =;]{0,20}"), 0..12),
            others in proptest::collection::vec(("x-[a-z_-]{1,12}", "[a-z0-9]{0,8}"), 0..4),
            trusted in any::<bool>(),
        ) {
            let mut h = headers_of(&sent, &others);
            let id = identity();
            let k = Arc::new(key());
            let rid = HeaderValue::from_static("req-1");
            let f = Forwarding {
                key: &k,
                identity: &id,
                peer: "10.0.0.1".parse().unwrap(),
                peer_trusted: trusted,
                client_host: Some(&HeaderValue::from_static("api.example.com")),
                tls: true,
                request_id: &rid,
                preserve_host: false,
            };
            // A trusted proxy's malformed X-Forwarded-For is a 400, not a leak.
            let Ok(rewrite) = plan(&h, &f) else {
                return Ok(());
            };
            rewrite.apply(&mut h);
            for (i, expected) in [(0, "acme"), (1, "key_1"), (2, "read"), (3, "live")] {
                let name = SENSITIVE[i];
                let values: Vec<_> = h.get_all(name).iter().collect();
                prop_assert_eq!(values, vec![expected], "{}", name);
            }
            for name in h.keys() {
                let n = normalized(name.as_str());
                let Some(i) = SENSITIVE.iter().position(|s| *s == n) else { continue };
                // Identity headers: only keygate's, checked above, in the plain spelling.
                prop_assert!(i >= 4 || name.as_str() == SENSITIVE[i], "{}", name);
                if i >= 4 && !trusted {
                    // From an untrusted peer only keygate's own X-Forwarded-* remain.
                    prop_assert!(name.as_str() == SENSITIVE[i], "{} survived", name);
                    let v = h.get(name).map(|v| v.to_str().unwrap_or("").to_string());
                    let ours = match n.as_str() {
                        "x-forwarded-for" => "10.0.0.1",
                        "x-forwarded-host" => "api.example.com",
                        "x-forwarded-proto" => "https",
                        other => {
                            prop_assert!(false, "{} survived", other);
                            ""
                        }
                    };
                    prop_assert_eq!(h.get_all(name).iter().count(), 1);
                    prop_assert_eq!(v.as_deref(), Some(ours));
                }
            }
        }
    }

    proptest! {
        /// The rewrite carried out on the map (hyper's client) and written into the
        /// head (keygate's own client) gives the upstream the same headers.
        #[test]
        fn the_rewrite_applied_and_written_agree(
            sent in proptest::collection::vec((spelling(), "[a-z0-9., =;]{0,20}"), 0..12),
            others in proptest::collection::vec(
                (prop_oneof![
                    Just("connection".to_string()),
                    Just("keep-alive".to_string()),
                    Just("host".to_string()),
                    Just("authorization".to_string()),
                    Just("te".to_string()),
                    Just("x-http-method-override".to_string()),
                    "x-[a-z_-]{1,12}",
                ], "[a-z0-9,-]{0,8}"),
                0..6,
            ),
            trusted in any::<bool>(),
            preserve_host in any::<bool>(),
            tls in any::<bool>(),
        ) {
            let h = headers_of(&sent, &others);
            let id = identity();
            let k = Arc::new(key());
            let rid = HeaderValue::from_static("req-1");
            let client_host = HeaderValue::from_static("api.example.com");
            let f = Forwarding {
                key: &k,
                identity: &id,
                peer: "10.0.0.1".parse().unwrap(),
                peer_trusted: trusted,
                client_host: Some(&client_host),
                tls,
                request_id: &rid,
                preserve_host,
            };
            let Ok(rewrite) = plan(&h, &f) else {
                return Ok(());
            };
            let upstream_host = HeaderValue::from_static("feeds.internal:8080");
            let mut written = Vec::new();
            rewrite.write(&h, &upstream_host, &mut written);
            let mut applied = h.clone();
            plan(&h, &f).unwrap().apply(&mut applied);
            if !applied.contains_key(header::HOST) {
                applied.insert(header::HOST, upstream_host.clone());
            }
            let mut from_map: Vec<(String, String)> = applied
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let text = String::from_utf8(written).unwrap();
            let mut from_head: Vec<(String, String)> = text
                .split_terminator("\r\n")
                .map(|line| {
                    let (n, v) = line.split_once(": ").unwrap();
                    (n.to_string(), v.to_string())
                })
                .collect();
            from_map.sort();
            from_head.sort();
            prop_assert_eq!(from_map, from_head);
        }
    }

    /// The peer's value is the peer's, whichever peer came before on the thread.
    #[test]
    fn peer_values_follow_the_peer() {
        for ip in [
            "10.0.0.1",
            "10.0.0.1",
            "::1",
            "10.0.0.2",
            "2001:db8::7",
            "10.0.0.1",
        ] {
            let v = peer_value(ip.parse().unwrap());
            assert_eq!(v.to_str().unwrap(), ip);
        }
    }

    /// Method-override headers go in any case, whatever the peer.
    #[test]
    fn method_overrides_go() {
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            for n in METHOD_OVERRIDE_NAMES {
                h.insert(
                    HeaderName::from_bytes(n.to_ascii_uppercase().as_bytes()).unwrap(),
                    HeaderValue::from_static("DELETE"),
                );
            }
            let (id, k) = (identity(), Arc::new(key()));
            let rid = HeaderValue::from_static("req-1");
            let f = Forwarding {
                key: &k,
                identity: &id,
                peer: "10.0.0.1".parse().unwrap(),
                peer_trusted: trusted,
                client_host: None,
                tls: false,
                request_id: &rid,
                preserve_host: false,
            };
            plan(&h, &f).unwrap().apply(&mut h);
            for n in METHOD_OVERRIDE_NAMES {
                assert!(!h.contains_key(n), "{n} survived (trusted: {trusted})");
            }
        }
    }

    /// Identity values are made once per view: a changed key (a new view, as the
    /// resolver makes one) gets its own, even while the old view's are kept.
    #[test]
    fn identity_values_follow_the_view() {
        let id = identity();
        let old = Arc::new(key());
        let value = |k: &Arc<KeyView>, i: usize| {
            super::identity(&id, k).unwrap().values[i]
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(value(&old, 2), "read");
        assert_eq!(value(&old, 2), "read", "from the memo");
        let mut changed = record();
        changed.scopes = vec!["read".into(), "write".into()];
        changed.org = "other".into();
        let changed = Arc::new(changed.into_view(&KeyHash([7; 32]), &Shared::default()));
        assert_eq!(value(&changed, 2), "read,write");
        assert_eq!(value(&changed, 0), "other");
        assert_eq!(value(&old, 0), "acme");
        // The same view under a reloaded config's names: the lines follow the names.
        let renamed = IdentityHeaders {
            org: HeaderName::from_static("x-tenant"),
            ..identity()
        };
        let written = |names: &IdentityHeaders| {
            String::from_utf8(super::identity(names, &old).unwrap().lines.to_vec()).unwrap()
        };
        assert!(written(&id).starts_with("x-org-id: acme\r\n"));
        assert!(written(&renamed).starts_with("x-tenant: acme\r\n"));
        assert!(written(&id).starts_with("x-org-id: acme\r\n"));
        // A view the memo no longer holds (dropped, its address free) is not mistaken
        // for another at that address: entries hold their views.
        drop(changed);
        let again = Arc::new(key());
        assert_eq!(value(&again, 0), "acme");
    }
}
