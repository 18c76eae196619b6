//! The data plane: accept → PROXY header → TLS → HTTP (1.1 or h2) → pipeline →
//! forward → respond.
//!
//! - `acceptor`: the one accept loop of every port (data, admin, metrics): connection
//!   cap, PROXY header, TLS handshake, hyper's settings, first-request and idle
//!   deadlines per connection.
//! - `access_log`: the one JSON line per request, formatted without `tracing`'s
//!   generic formatter.
//! - `listener`: the PROXY protocol header.
//! - `framing`: the HTTP/1.1 framing guard below hyper (`Content-Length` with
//!   `Transfer-Encoding`).
//! - `pipeline`: one request's checks, in SPEC §3 order, top to bottom.
//! - `forward`: the upstream call and the header rewrite; `client`: keygate's own
//!   HTTP/1.1 client for a request without a body to a plain-HTTP upstream; `pool`:
//!   hyper's client connections for the rest, kept per worker like `client`'s;
//!   `deadline`: the upstream timeout, swept per thread instead of a timer per request.
//! - `respond`: the one refusal → response mapping.
//! - `workers`: one single-threaded runtime per core for the data port's and the authz
//!   listener's connections.
//!
//! This module never imports `admin` or a store backend: it reads keys through
//! [`KeyResolver`](crate::auth::KeyResolver) only.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use ipnet::IpNet;

use crate::auth::{AuthFailureLimiter, KeyResolver};
use crate::config::{IdentityHeaders, Limits};
use crate::key::KeyFormat;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::policy::{RouteTable, ScopeSet};
use crate::usage::UsageRecorder;

pub mod acceptor;
pub mod access_log;
pub mod client;
pub mod deadline;
pub mod forward;
pub mod framing;
pub mod listener;
pub mod pipeline;
pub mod pool;
pub mod respond;
pub mod workers;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body: a refusal's JSON or the upstream's stream.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Everything a data-plane request needs, built once by `app` and shared.
pub struct DataPlane {
    pub routes: RouteTable,
    pub scopes: ScopeSet,
    pub key_format: KeyFormat,
    pub resolver: Arc<KeyResolver>,
    pub failures: Arc<AuthFailureLimiter>,
    /// By upstream name; every route's upstream is here (config validation).
    pub upstreams: HashMap<String, forward::Upstream, crate::FastHash>,
    pub identity: IdentityHeaders,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    /// [limits] Rate limits and quotas: this config's global limits, the shared counters.
    pub rate_limits: RateLimits,
    /// [limits] Per-key usage counters and last_used_at, flushed in batches.
    pub usage: Arc<UsageRecorder>,
    pub metrics: Arc<Metrics>,
    /// Whether the listener terminates TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
}
