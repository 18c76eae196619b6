//! Configuration: YAML (SPEC §8) read into raw serde types, then validated into the
//! types below, which the rest of keygate uses. A config that loads is complete and
//! consistent: every route names a known upstream and scope, durations are ordered
//! (`ttl ≤ max_staleness ≤ stale_if_error`), and so on.
//!
//! Errors name the file, the line and the field (`config/keygate.yaml:14: routes[2].upstream: …`).
//! This module does no IO beyond reading the file and checking that the files it names
//! (certificates, keys, CA bundles) are readable, and never starts anything.
//!
//! Relative paths in the file are relative to the working directory of the process,
//! not to the config file, like the defaults `data/keygate.db` and `data/admin-token`.
//!
//! Layout: `raw` (serde types as written) → `validate` (defaults, checks; route rules
//! in `routes`) → the types below; `locate` maps a field path to its line; `load` reads the file and owns
//! [`ConfigError`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;

use crate::key::{Environment, RateLimit};

mod load;
mod locate;
mod raw;
mod routes;
mod schema;
mod validate;

pub use load::{ConfigError, load, parse};
pub use locate::Locator;
pub use validate::parse_ip_net;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File it was read from, for reload and messages.
    pub source: PathBuf,
    pub listen: ListenConfig,
    pub admin: AdminConfig,
    pub metrics: Option<MetricsConfig>,
    pub authz: Option<AuthzConfig>,
    pub store: StoreConfig,
    pub cache: CacheConfig,
    pub keys: KeysConfig,
    pub trusted_proxies: Vec<IpNet>,
    pub identity_headers: IdentityHeaders,
    /// Scope name → scopes it directly implies (`write: [read]`).
    pub scopes: BTreeMap<String, Vec<String>>,
    /// Global default limits (each window may be unset).
    pub rate_limit: RateLimit,
    pub limits: Limits,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// Field path → line in `source`, so that problems found after loading (route
    /// conflicts, certificate contents) can be reported like any other: see
    /// [`Config::error_at`].
    pub locator: Arc<Locator>,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub address: SocketAddr,
    pub tls: TlsMode,
    pub proxy_protocol: ProxyProtocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// PEM certificate chain and private key, reloaded on SIGHUP.
    Files { cert: PathBuf, key: PathBuf },
    /// A development certificate made at start (rcgen) for localhost.
    SelfSigned,
    /// Plain HTTP; must be asked for explicitly.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub bootstrap_token_file: PathBuf,
    /// Required for a non-loopback address unless `insecure`.
    pub tls: Option<TlsMode>,
    pub insecure: bool,
    /// Open connections on the admin port, and separately on `metrics.address`: their
    /// own cap, so a flood there never takes the data plane's slots (and vice versa).
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub address: SocketAddr,
}

/// SPEC §9: the listener nginx, Envoy or Traefik asks for decisions.
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    pub address: SocketAddr,
    /// Peers that may ask; every other peer is refused at accept. Default: loopback.
    pub allow_from: Vec<IpNet>,
    pub tls: Option<TlsMode>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// No request waits on the store longer than this.
    pub timeout: Duration,
    /// Redis only: every Redis key and the invalidation channel start with
    /// `<namespace>:`, so that several deployments (or other applications) can share
    /// one Redis database. Default `keygate`.
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    Embedded {
        path: PathBuf,
    },
    /// `redis://`, `rediss://` (TLS), or `redis+sentinel://` / `rediss+sentinel://`
    /// (Sentinel nodes, then the master's name).
    Redis {
        url: String,
    },
}

/// Headers that belong to one connection (RFC 9110 §7.6.1), and `Upgrade`: keygate
/// never forwards them (`proxy::forward`), so none may be an identity header.
/// The index in [`HOP_BY_HOP_HEADERS`] of the header named `name` (raw bytes, e.g. a
/// `Connection` token or a name as read off the wire), in any case.
pub fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
    HOP_BY_HOP_HEADERS.iter().position(|hop| {
        // Lengths first: most names are excluded without comparing a byte.
        hop.len() == name.len() && hop.as_bytes().eq_ignore_ascii_case(name)
    })
}

pub const HOP_BY_HOP_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: u64,
    pub max_staleness: Duration,
    pub stale_if_error: Duration,
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// Validated with `KeyFormat::new`.
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub org: HeaderName,
    pub key_id: HeaderName,
    pub scopes: HeaderName,
    pub environment: HeaderName,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    /// Failed authentications per client address per minute; 0 = off.
    pub auth_failures_per_ip: u32,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: Uri,
    pub test_url: Option<Uri>,
    pub connect_timeout: Duration,
    /// Time to response headers.
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub preserve_host: bool,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub methods: Vec<Method>,
    /// Raw path pattern with `{name}` and `{*name}`.
    pub path: String,
    /// Lowercased host (without port) the route is limited to.
    pub host: Option<String>,
    pub upstream: String,
    pub scope: String,
    /// Resource template, e.g. `flow:{flow_id}`; every `{param}` is a path parameter.
    pub resource: Option<String>,
    pub query_key: bool,
    /// `None` = both environments.
    pub environments: Option<Vec<Environment>>,
    pub rate_limit: Option<RateLimit>,
}
