//! Raw YAML types → the validated [`Config`]: defaults of SPEC §8 filled in, every
//! value checked, every problem named by its field path (`routes[2].upstream`).
//!
//! Validation does not stop at the first problem: it records each one with its field
//! and goes on with a harmless stand-in value, so `check-config` can list them all.
//! The only IO here is checking that files the config names (TLS certificates and
//! keys, upstream CA and client certificates) exist and can be read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Uri};
use ipnet::IpNet;

use super::locate::Locator;
use super::raw::{self, Dur, RawConfig, RawTls};
use super::routes;
use super::{
    AdminConfig, AuthzConfig, CacheConfig, Config, IdentityHeaders, KeysConfig, Limits,
    ListenConfig, MetricsConfig, ProxyProtocol, StoreBackend, StoreConfig, TlsMode, UpstreamConfig,
};
use crate::key::{KeyFormat, RateLimit};

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
}

// Defaults of SPEC §8.
const LISTEN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443);
const ADMIN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
const BOOTSTRAP_TOKEN_FILE: &str = "data/admin-token";
/// SPEC §3: the admin and metrics ports' own connection cap.
const ADMIN_MAX_CONNECTIONS: usize = 256;
const STORE_PATH: &str = "data/keygate.db";
const STORE_TIMEOUT: Duration = Duration::from_millis(250);
const STORE_NAMESPACE: &str = "keygate";
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_NEGATIVE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX_ENTRIES: u64 = 1_000_000;
const CACHE_MAX_STALENESS: Duration = Duration::from_secs(60);
const CACHE_STALE_IF_ERROR: Duration = Duration::from_secs(5 * 60);
const KEY_PREFIX: &str = "kg";
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Header names keygate sets, reads or strips itself (besides the hop-by-hop ones,
/// [`super::HOP_BY_HOP_HEADERS`]): an identity header with one of these names would
/// let a client's value through or break framing.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "content-type",
    "expect",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

pub(super) fn validate(
    raw: RawConfig,
    source: PathBuf,
    locator: Arc<Locator>,
) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    let listen = listen(raw.listen, &mut p);
    let admin = admin(raw.admin, &mut p);
    let metrics = raw.metrics.map(|m| MetricsConfig {
        address: socket_addr("metrics.address", &m.address, &mut p),
    });
    let authz = raw.authz.map(|a| authz(a, &mut p));
    check_ports(&listen, &admin, metrics.as_ref(), authz.as_ref(), &mut p);
    let store = store(raw.store, &mut p);
    let cache = cache(raw.cache, &mut p);
    let prefix = raw.keys.prefix.unwrap_or_else(|| KEY_PREFIX.to_string());
    if let Err(e) = KeyFormat::new(&prefix) {
        p.add("keys.prefix", e.to_string());
    }
    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            parse_ip_net(s)
                .map_err(|e| p.add(format!("trusted_proxies[{i}]"), e))
                .ok()
        })
        .collect();
    let identity_headers = identity_headers(raw.identity_headers, &mut p);
    let scopes = scopes(raw.scopes, &mut p);
    let rate_limit = raw.rate_limit.unwrap_or_default();
    check_rate_limit("rate_limit", &rate_limit, &mut p);
    let limits = limits(raw.limits, &mut p);
    let upstreams: BTreeMap<String, UpstreamConfig> = raw
        .upstreams
        .into_iter()
        .map(|(name, u)| {
            let u = upstream(&name, u, &mut p);
            (name, u)
        })
        .collect();
    let routes = routes::routes(raw.routes, &upstreams, &scopes, &mut p);

    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Config {
        source,
        listen,
        admin,
        metrics,
        authz,
        store,
        cache,
        keys: KeysConfig { prefix },
        trusted_proxies,
        identity_headers,
        scopes,
        rate_limit,
        limits,
        upstreams,
        routes,
        locator,
    })
}

fn listen(raw: raw::RawListen, p: &mut Problems) -> ListenConfig {
    let address = raw
        .address
        .map_or(LISTEN_ADDRESS, |a| socket_addr("listen.address", &a, p));
    let tls = match raw.tls {
        Some(t) => tls("listen.tls", t, p),
        None => {
            p.add(
                "listen.tls",
                format!("is required; choose {}", raw::TLS_CHOICES),
            );
            TlsMode::None
        }
    };
    let proxy_protocol = match raw.proxy_protocol.as_deref() {
        None | Some("off") => ProxyProtocol::Off,
        Some("v1") => ProxyProtocol::V1,
        Some("v2") => ProxyProtocol::V2,
        Some(other) => {
            p.add(
                "listen.proxy_protocol",
                format!("expected off, v1 or v2, got {other:?}"),
            );
            ProxyProtocol::Off
        }
    };
    ListenConfig {
        address,
        tls,
        proxy_protocol,
    }
}

fn tls(field: &str, raw: RawTls, p: &mut Problems) -> TlsMode {
    match raw {
        RawTls::Files { cert, key } => {
            readable_file(&format!("{field}.cert"), &cert, p);
            readable_file(&format!("{field}.key"), &key, p);
            TlsMode::Files { cert, key }
        }
        RawTls::SelfSigned => TlsMode::SelfSigned,
        RawTls::None => TlsMode::None,
    }
}

/// SPEC §9. `allow_from` defaults to loopback; an empty list would refuse every peer,
/// which is a mistake worth naming.
fn authz(raw: raw::RawAuthz, p: &mut Problems) -> AuthzConfig {
    let address = socket_addr("authz.address", &raw.address, p);
    let tls = raw.tls.map(|t| tls("authz.tls", t, p));
    let allow_from = match raw.allow_from {
        None => ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|s| parse_ip_net(s).ok())
            .collect(),
        Some(list) if list.is_empty() => {
            p.add(
                "authz.allow_from",
                "is empty, so every peer would be refused; list the addresses of the proxies that ask (e.g. [127.0.0.0/8, \"::1/128\"])",
            );
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                parse_ip_net(s)
                    .map_err(|e| p.add(format!("authz.allow_from[{i}]"), e))
                    .ok()
            })
            .collect(),
    };
    AuthzConfig {
        address,
        allow_from,
        tls,
    }
}

fn admin(raw: raw::RawAdmin, p: &mut Problems) -> AdminConfig {
    let address = raw
        .address
        .map_or(ADMIN_ADDRESS, |a| socket_addr("admin.address", &a, p));
    let tls = raw.tls.map(|t| tls("admin.tls", t, p));
    let insecure = raw.insecure.unwrap_or(false);
    let bootstrap_token_file = raw
        .bootstrap_token_file
        .unwrap_or_else(|| PathBuf::from(BOOTSTRAP_TOKEN_FILE));
    if bootstrap_token_file.as_os_str().is_empty() {
        p.add("admin.bootstrap_token_file", "is empty");
    }
    let encrypted = matches!(tls, Some(TlsMode::Files { .. } | TlsMode::SelfSigned));
    if !address.ip().is_loopback() && !encrypted && !insecure {
        let (field, why) = if tls == Some(TlsMode::None) {
            ("admin.tls", "admin.tls: none serves it in plain HTTP")
        } else {
            ("admin.address", "admin.tls is not set")
        };
        p.add(
            field,
            format!(
                "the admin API would listen on {address}, which is not a loopback address, \
                 and {why}; set admin.tls to {{ cert, key }} or self_signed, or, to accept \
                 plain HTTP on purpose, admin.insecure: true"
            ),
        );
    }
    let max_connections = match raw.max_connections {
        None => ADMIN_MAX_CONNECTIONS,
        Some(n) if (1..=1 << 20).contains(&n) => {
            usize::try_from(n).unwrap_or(ADMIN_MAX_CONNECTIONS)
        }
        Some(n) => {
            p.add(
                "admin.max_connections",
                format!("is {n}; it must be between 1 and {}", 1 << 20),
            );
            ADMIN_MAX_CONNECTIONS
        }
    };
    AdminConfig {
        address,
        bootstrap_token_file,
        tls,
        insecure,
        max_connections,
    }
}

/// Two listeners on one port fail at bind time with a vaguer message; say it here.
fn check_ports(
    listen: &ListenConfig,
    admin: &AdminConfig,
    metrics: Option<&MetricsConfig>,
    authz: Option<&AuthzConfig>,
    p: &mut Problems,
) {
    let mut seen: Vec<(&str, SocketAddr)> = vec![("listen.address", listen.address)];
    let mut others = vec![("admin.address", admin.address)];
    if let Some(m) = metrics {
        others.push(("metrics.address", m.address));
    }
    if let Some(a) = authz {
        others.push(("authz.address", a.address));
    }
    for (field, addr) in others {
        let clash = seen.iter().find(|(_, a)| {
            a.port() == addr.port() && addr.port() != 0 && overlaps(a.ip(), addr.ip())
        });
        if let Some((other, a)) = clash {
            p.add(
                field,
                format!(
                    "{addr} uses the same port as {other} ({a}); give each listener its own port"
                ),
            );
        }
        seen.push((field, addr));
    }
}

/// Whether binding both addresses on one port would collide. `0.0.0.0` covers every
/// IPv4 address; `[::]` covers every address of both families (Linux dual stack).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let covers =
        |wide: IpAddr, other: IpAddr| wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4());
    a == b || covers(a, b) || covers(b, a)
}

fn store(raw: raw::RawStore, p: &mut Problems) -> StoreConfig {
    let timeout = positive("store.timeout", raw.timeout, STORE_TIMEOUT, p);
    let backend = match raw.backend.as_deref().unwrap_or("embedded") {
        "embedded" => {
            if raw.url.is_some() {
                p.add(
                    "store.url",
                    "is for backend: redis; the embedded store uses store.path",
                );
            }
            if raw.namespace.is_some() {
                p.add(
                    "store.namespace",
                    "is for backend: redis; the embedded store has a file of its own",
                );
            }
            let path = raw.path.unwrap_or_else(|| PathBuf::from(STORE_PATH));
            if path.as_os_str().is_empty() {
                p.add("store.path", "is empty");
            }
            StoreBackend::Embedded { path }
        }
        "redis" => {
            if raw.path.is_some() {
                p.add(
                    "store.path",
                    "is for backend: embedded; the redis store uses store.url",
                );
            }
            match raw.url {
                Some(url) => {
                    if let Err(e) = check_redis_url(&url) {
                        p.add("store.url", e);
                    }
                    StoreBackend::Redis { url }
                }
                None => {
                    p.add(
                        "store.url",
                        "is required for backend: redis (redis://HOST:PORT/DB, or rediss:// for TLS)",
                    );
                    StoreBackend::Redis { url: String::new() }
                }
            }
        }
        other => {
            p.add(
                "store.backend",
                format!("expected embedded or redis, got {other:?}"),
            );
            StoreBackend::Embedded {
                path: PathBuf::from(STORE_PATH),
            }
        }
    };
    let namespace = raw.namespace.unwrap_or_else(|| STORE_NAMESPACE.to_string());
    if let Err(e) = check_namespace(&namespace) {
        p.add("store.namespace", e);
    }
    StoreConfig {
        backend,
        timeout,
        namespace,
    }
}

/// Redis key names are binary-safe, but a namespace is also typed into `redis-cli`
/// and ACL key patterns (`~keygate:*`), where glob characters and spaces would bite.
fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() || ns.len() > 64 {
        return Err(format!(
            "must be 1 to 64 characters, got {} characters",
            ns.len()
        ));
    }
    match ns
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        Some(c) => Err(format!(
            "may hold letters, digits, '_', '-', '.' and ':' only, got {c:?}"
        )),
        None => Ok(()),
    }
}

/// The URL may hold a password, so messages describe it and never repeat it.
/// The store parses the URL fully when it connects; this catches the mistakes that can
/// be named from the text alone.
fn check_redis_url(url: &str) -> Result<(), String> {
    let (sentinel, rest) = if let Some(r) = url
        .strip_prefix("redis+sentinel://")
        .or_else(|| url.strip_prefix("rediss+sentinel://"))
    {
        (true, r)
    } else if let Some(r) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    {
        (false, r)
    } else {
        return Err("must start with redis:// (or rediss:// for TLS, or \
             redis+sentinel:// for Redis Sentinel)"
            .into());
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let hosts = authority.rsplit('@').next().unwrap_or_default();
    if hosts.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    if sentinel {
        if hosts.split(',').any(|h| h.is_empty() || h.starts_with(':')) {
            return Err("names an empty Sentinel address (expected \
                 redis+sentinel://HOST:PORT,HOST:PORT/MASTER_NAME/DB)"
                .into());
        }
        let master = path.strip_prefix('/').unwrap_or_default();
        let master = master.split(['/', '?']).next().unwrap_or_default();
        if master.is_empty() {
            return Err("has no master name (expected \
                 redis+sentinel://HOST:PORT,HOST:PORT/MASTER_NAME/DB)"
                .into());
        }
    } else if hosts.is_empty() || hosts.starts_with(':') {
        return Err("has no host (expected redis://HOST:PORT/DB)".into());
    }
    Ok(())
}

fn cache(raw: raw::RawCache, p: &mut Problems) -> CacheConfig {
    let ttl = positive("cache.ttl", raw.ttl, CACHE_TTL, p);
    let negative_ttl = positive(
        "cache.negative_ttl",
        raw.negative_ttl,
        CACHE_NEGATIVE_TTL,
        p,
    );
    let max_staleness = positive(
        "cache.max_staleness",
        raw.max_staleness,
        CACHE_MAX_STALENESS,
        p,
    );
    let stale_if_error = positive(
        "cache.stale_if_error",
        raw.stale_if_error,
        CACHE_STALE_IF_ERROR,
        p,
    );
    let max_entries = raw.max_entries.unwrap_or(CACHE_MAX_ENTRIES);
    if max_entries == 0 {
        p.add("cache.max_entries", "must be greater than 0");
    }
    // Blame the value the user wrote: a written ttl over the default max_staleness
    // is the ttl's fault, a written max_staleness under the default ttl is its own.
    let order = "the cache needs ttl ≤ max_staleness ≤ stale_if_error";
    if ttl > max_staleness {
        let field = if raw.ttl.is_some() {
            "cache.ttl"
        } else {
            "cache.max_staleness"
        };
        p.add(
            field,
            format!(
                "ttl {} is longer than max_staleness {}; {order}",
                fmt_dur(ttl),
                fmt_dur(max_staleness)
            ),
        );
    }
    if max_staleness > stale_if_error {
        let field = if raw.stale_if_error.is_some() || raw.max_staleness.is_none() {
            "cache.stale_if_error"
        } else {
            "cache.max_staleness"
        };
        p.add(
            field,
            format!(
                "max_staleness {} is longer than stale_if_error {}; {order}",
                fmt_dur(max_staleness),
                fmt_dur(stale_if_error)
            ),
        );
    }
    CacheConfig {
        ttl,
        negative_ttl,
        max_entries,
        max_staleness,
        stale_if_error,
    }
}

fn identity_headers(raw: raw::RawIdentityHeaders, p: &mut Problems) -> IdentityHeaders {
    // (name folded for comparison, field, written in the file)
    let mut seen: Vec<(String, &str, bool)> = Vec::new();
    let mut one = |name: &'static str, value: Option<String>, default: &'static str| {
        let field = format!("identity_headers.{name}");
        let Some(value) = value else {
            seen.push((default.to_string(), name, false));
            return HeaderName::from_static(default);
        };
        let Ok(header) = HeaderName::from_bytes(value.as_bytes()) else {
            p.add(&field, format!("{value:?} is not a valid header name"));
            return HeaderName::from_static(default);
        };
        // The pipeline strips client headers ignoring case and `_` vs `-`; two
        // names equal under that rule would be one header.
        let folded = header.as_str().replace('_', "-");
        if RESERVED_HEADERS.contains(&folded.as_str())
            || super::HOP_BY_HOP_HEADERS.contains(&folded.as_str())
        {
            p.add(
                &field,
                format!(
                    "{value:?} is a header that keygate or HTTP itself manages; choose another name"
                ),
            );
        }
        seen.push((folded, name, true));
        header
    };
    let headers = IdentityHeaders {
        org: one("org", raw.org, "x-org-id"),
        key_id: one("key_id", raw.key_id, "x-api-key-id"),
        scopes: one("scopes", raw.scopes, "x-api-key-scopes"),
        environment: one("environment", raw.environment, "x-api-key-environment"),
    };
    for (i, (folded, name, written)) in seen.iter().enumerate() {
        for (other_folded, other, other_written) in &seen[..i] {
            if folded != other_folded {
                continue;
            }
            // Blame the name the user wrote, not a default it collides with.
            let (field, other) = if *written {
                (name, other)
            } else if *other_written {
                (other, name)
            } else {
                continue;
            };
            p.add(
                format!("identity_headers.{field}"),
                format!("{folded:?} is also identity_headers.{other}; each identity header needs its own name"),
            );
        }
    }
    headers
}

fn scopes(
    raw: Option<BTreeMap<String, Vec<String>>>,
    p: &mut Problems,
) -> BTreeMap<String, Vec<String>> {
    let scopes = raw.unwrap_or_else(|| {
        BTreeMap::from([
            ("read".to_string(), vec![]),
            ("write".to_string(), vec!["read".to_string()]),
        ])
    });
    if scopes.is_empty() {
        p.add("scopes", "defines no scope; every route needs one");
    }
    for (name, implies) in &scopes {
        if let Err(e) = check_name(name, ":") {
            p.add(format!("scopes.{name}"), format!("scope name {e}"));
        }
        for (i, implied) in implies.iter().enumerate() {
            if !scopes.contains_key(implied) {
                p.add(
                    format!("scopes.{name}[{i}]"),
                    format!(
                        "unknown scope {implied:?}; {}",
                        known("scopes", scopes.keys())
                    ),
                );
            }
        }
    }
    scopes
}

pub(super) fn check_rate_limit(field: &str, rl: &RateLimit, p: &mut Problems) {
    let windows = [
        ("per_second", rl.per_second),
        ("per_minute", rl.per_minute),
        ("per_hour", rl.per_hour),
        ("per_day", rl.per_day),
        ("per_month", rl.per_month),
    ];
    for (window, value) in windows {
        if value == Some(0) {
            p.add(
                format!("{field}.{window}"),
                "must be greater than 0; leave the window out for no limit",
            );
        }
    }
}

fn limits(raw: raw::RawLimits, p: &mut Problems) -> Limits {
    let mut in_range = |name: &str, value: Option<u64>, default: u64, min: u64, max: u64| {
        let v = value.unwrap_or(default);
        let bound = if v < min {
            format!("at least {min}")
        } else if v > max {
            format!("at most {max}")
        } else {
            return v;
        };
        p.add(
            format!("limits.{name}"),
            format!("is {v}; it must be {bound}"),
        );
        default
    };
    let max_header_bytes = in_range(
        "max_header_bytes",
        raw.max_header_bytes,
        16384,
        1024,
        1 << 24,
    );
    let max_uri_bytes = in_range("max_uri_bytes", raw.max_uri_bytes, 8192, 256, 1 << 24);
    let max_body_bytes = in_range("max_body_bytes", raw.max_body_bytes, 10 << 20, 1, u64::MAX);
    let max_connections = in_range("max_connections", raw.max_connections, 10_000, 1, 1 << 24);
    let h2_max_concurrent_streams = in_range(
        "h2_max_concurrent_streams",
        raw.h2_max_concurrent_streams,
        100,
        1,
        u64::from(u32::MAX),
    );
    let auth_failures_per_ip = in_range(
        "auth_failures_per_ip",
        raw.auth_failures_per_ip,
        600,
        0,
        u64::from(u32::MAX),
    );
    let ten = Duration::from_secs(10);
    Limits {
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(16384),
        max_uri_bytes: usize::try_from(max_uri_bytes).unwrap_or(8192),
        header_read_timeout: positive(
            "limits.header_read_timeout",
            raw.header_read_timeout,
            ten,
            p,
        ),
        idle_timeout: positive(
            "limits.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(60),
            p,
        ),
        tls_handshake_timeout: positive(
            "limits.tls_handshake_timeout",
            raw.tls_handshake_timeout,
            ten,
            p,
        ),
        max_body_bytes,
        max_connections: usize::try_from(max_connections).unwrap_or(10_000),
        h2_max_concurrent_streams: u32::try_from(h2_max_concurrent_streams).unwrap_or(100),
        auth_failures_per_ip: u32::try_from(auth_failures_per_ip).unwrap_or(600),
    }
}

fn upstream(name: &str, raw: raw::RawUpstream, p: &mut Problems) -> UpstreamConfig {
    let field = format!("upstreams.{name}");
    if let Err(e) = check_name(name, "") {
        p.add(&field, format!("upstream name {e}"));
    }
    let url = upstream_url(&raw.url)
        .map_err(|e| p.add(format!("{field}.url"), e))
        .unwrap_or_else(|()| Uri::from_static("http://invalid"));
    let test_url = raw.test_url.and_then(|t| {
        upstream_url(&t)
            .map_err(|e| p.add(format!("{field}.test_url"), e))
            .ok()
    });
    for (f, file) in [
        ("ca_file", &raw.ca_file),
        ("client_cert", &raw.client_cert),
        ("client_key", &raw.client_key),
    ] {
        if let Some(path) = file {
            readable_file(&format!("{field}.{f}"), path, p);
        }
    }
    match (&raw.client_cert, &raw.client_key) {
        (Some(_), None) => p.add(
            format!("{field}.client_cert"),
            "needs client_key too: a client certificate is useless without its key",
        ),
        (None, Some(_)) => p.add(
            format!("{field}.client_key"),
            "needs client_cert too: a client key is useless without its certificate",
        ),
        _ => {}
    }
    UpstreamConfig {
        name: name.to_string(),
        url,
        test_url,
        connect_timeout: positive(
            &format!("{field}.connect_timeout"),
            raw.connect_timeout,
            UPSTREAM_CONNECT_TIMEOUT,
            p,
        ),
        timeout: positive(
            &format!("{field}.timeout"),
            raw.timeout,
            UPSTREAM_TIMEOUT,
            p,
        ),
        ca_file: raw.ca_file,
        client_cert: raw.client_cert,
        client_key: raw.client_key,
        preserve_host: raw.preserve_host.unwrap_or(false),
    }
}

/// An upstream is an origin: keygate forwards the request's own path and query, so a
/// path, query or credentials here would be silently dropped or leaked.
fn upstream_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a URL ({e}); expected e.g. http://10.0.0.5:8080"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{s:?} must start with http:// or https://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(
            "must not contain user info (user:password@); keygate sends no credentials upstream"
                .into(),
        );
    }
    if authority.host().is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(format!(
            "{s:?} has a path ({}); an upstream URL is scheme, host and port only, because keygate forwards the request's own path",
            uri.path()
        ));
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(uri)
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address, which counts as /32
/// or /128. Public so the admin API can read `ip_allow` entries the same way.
pub fn parse_ip_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if t.contains('/') {
        t.parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)"))
    } else {
        t.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"))
    }
}

fn socket_addr(field: &str, s: &str, p: &mut Problems) -> SocketAddr {
    s.parse().unwrap_or_else(|_| {
        let hint = if s.starts_with("localhost:") {
            " (use 127.0.0.1 rather than localhost)"
        } else {
            ""
        };
        p.add(
            field,
            format!("expected IP:PORT such as 127.0.0.1:8443 or [::]:8443, got {s:?}{hint}"),
        );
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
    })
}

fn positive(field: &str, value: Option<Dur>, default: Duration, p: &mut Problems) -> Duration {
    match value {
        None => default,
        Some(Dur(d)) if d.is_zero() => {
            p.add(field, "must be longer than 0");
            default
        }
        Some(Dur(d)) => d,
    }
}

/// Names that appear in metrics labels, key `endpoints` and field paths.
pub(super) fn check_name(name: &str, also: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c) || also.contains(c);
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 100 {
        return Err(format!("{name:?} is longer than 100 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} must start with a letter or digit and contain only letters, digits, _, - and .{}",
            if also.is_empty() {
                String::new()
            } else {
                format!(" and {also}")
            }
        ));
    }
    Ok(())
}

fn readable_file(field: &str, path: &Path, p: &mut Problems) {
    if path.as_os_str().is_empty() {
        p.add(field, "is empty");
        return;
    }
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) => p.add(field, format!("cannot read {shown}: {}", io_reason(&e))),
        Ok(m) if m.is_dir() => p.add(field, format!("{shown} is a directory, not a file")),
        Ok(_) => {
            if let Err(e) = std::fs::File::open(path) {
                p.add(field, format!("cannot read {shown}: {}", io_reason(&e)));
            }
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

pub(super) fn known<'a>(what: &str, names: impl Iterator<Item = &'a String>) -> String {
    let mut out = String::new();
    for (i, n) in names.enumerate() {
        let _ = write!(out, "{}{n}", if i == 0 { "" } else { ", " });
    }
    if out.is_empty() {
        format!("no {what} are defined")
    } else {
        format!("known: {out}")
    }
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_store(store: &str) -> Result<crate::config::Config, String> {
        let yaml = format!("listen: {{ tls: none }}\nstore: {store}\n");
        crate::config::parse("keygate.yaml", &yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn redis_namespace_defaults_and_is_checked() {
        let c = parse_store("{ backend: redis, url: \"redis://127.0.0.1:6379/0\" }").unwrap();
        assert_eq!(c.store.namespace, "keygate");
        let c = parse_store(
            "{ backend: redis, url: \"redis://127.0.0.1:6379/0\", namespace: \"prod.eu-1\" }",
        )
        .unwrap();
        assert_eq!(c.store.namespace, "prod.eu-1");
        for bad in ["\"\"", "\"a b\"", "\"keys*\"", "\"{tag}\""] {
            let e = parse_store(&format!(
                "{{ backend: redis, url: \"redis://h:1/0\", namespace: {bad} }}"
            ))
            .unwrap_err();
            assert!(e.contains("store.namespace"), "{bad}: {e}");
        }
        let e = parse_store("{ backend: embedded, namespace: x }").unwrap_err();
        assert!(
            e.contains("store.namespace") && e.contains("backend: redis"),
            "{e}"
        );
    }

    #[test]
    fn sentinel_urls_are_accepted_and_checked() {
        for ok in [
            "redis+sentinel://s1:26379,s2:26379/mymaster/0",
            "rediss+sentinel://:pw@s1/mymaster",
        ] {
            let c = parse_store(&format!("{{ backend: redis, url: \"{ok}\" }}")).unwrap();
            assert_eq!(c.store.backend, StoreBackend::Redis { url: ok.into() });
        }
        for (bad, why) in [
            ("redis+sentinel://s1:26379", "no master name"),
            ("redis+sentinel://s1,,s2/m", "empty Sentinel address"),
            ("http://s1/m", "must start with redis://"),
        ] {
            let e = parse_store(&format!("{{ backend: redis, url: \"{bad}\" }}")).unwrap_err();
            assert!(e.contains("store.url") && e.contains(why), "{bad}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }
}
