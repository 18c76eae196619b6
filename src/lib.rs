//! keygate: an API-key authentication gateway.
//!
//! # Layout
//!
//! A data-plane request flows
//! `proxy::acceptor` (accept within the port's cap, PROXY protocol, `tls`, hyper for
//! HTTP/1.1 and h2, per-connection deadlines) → `proxy::pipeline` (route → credential → key → ip → environment → endpoint →
//! resource → scope → forward) → `proxy::forward` (pooled upstream client) →
//! `proxy::respond` (the one refusal → response mapping) → `metrics`.
//!
//! - [`key`]: domain types (token format and checksum, `KeyHash`, `KeyRecord`, orgs,
//!   principals). Imports nothing of keygate.
//! - [`refusal`]: the one error enum of the data plane, with status and code.
//! - [`config`]: YAML → validated `Config`; errors name file, line and field.
//! - [`store`]: the `KeyStore` trait and its backends (embedded redb file; Redis with a
//!   pub/sub invalidation bus), and usage storage.
//! - [`auth`]: credential extraction, the `KeyResolver` (moka cache in front of the
//!   store, negative entries, single-flight lookups), the failed-auth limiter.
//! - [`policy`]: route table, path rules, scopes, resources, IP rules, the authorize
//!   decision. No IO.
//! - [`proxy`]: the acceptor of every port, the framing guard, pipeline, forwarding,
//!   responses.
//! - [`authz`]: keygate as the key check of another proxy (forward-auth at
//!   `/v1/authz`, Envoy `ext_authz` over gRPC) and the verify API; every mode runs
//!   `proxy::pipeline::decide`.
//! - [`admin`]: the admin API, bootstrap, `/metrics`, `/healthz`, `/readyz`.
//! - [`limits`]: rate limits and quotas: window resolution, the limiter, `RateLimit-*`.
//! - [`tls`]: rustls server configs, certificates, reload.
//! - [`usage`]: per-key usage counters and `last_used_at`, written in batches.
//! - [`metrics`]: the Prometheus registry.
//! - [`memo`]: the bounded per-thread map kept in front of the shared caches.
//! - [`header_text`]: header values made per request without an allocation each.
//! - [`app`]: wiring only: builds everything from a `Config` and runs it.
//! - [`cli`]: `keygate keys …`, a client of the admin API over HTTP (imports no other
//!   keygate module).
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod authz;
pub mod cli;
pub mod config;
pub mod header_text;
pub mod key;
pub mod limits;
pub mod logbuf;
pub mod memo;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod refusal;
pub mod store;
pub mod tls;
pub mod usage;

/// The hasher of the in-process maps read on every request (the key, org and
/// failure caches, usage counters): foldhash with a per-process random seed, several
/// times cheaper than std's SipHash for the 32-byte key hashes and short ids hashed
/// here, and still seeded so that chosen keys cannot aim at one bucket.
pub type FastHash = foldhash::quality::RandomState;
