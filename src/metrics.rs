//! The Prometheus registry and typed handles for every family of SPEC §6.
//!
//! Label values come from route names, upstream names and fixed sets, never from raw
//! paths, hosts or keys, so the number of series stays bounded.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Route label for requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// Latency buckets from 100 µs to 30 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    /// `route, method, status, outcome` (`allowed` or the error code).
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    /// `result`: hit | miss | negative | stale.
    pub auth_cache: IntCounterVec,
    /// `op, result` (`ok` | `error`).
    pub store_operations: IntCounterVec,
    pub store_latency: HistogramVec,
    pub store_up: IntGauge,
    /// `route, kind` (`second`…`month`).
    pub rate_limited: IntCounterVec,
    /// `listener`: `data` | `admin` | `metrics`.
    pub connections_active: IntGaugeVec,
    pub invalidations: IntCounter,
    pub build_info: IntGaugeVec,
    /// `listener`: Unix time at which the served TLS certificate expires.
    pub tls_certificate_expiry: IntGaugeVec,
    /// `mode` (`http` | `grpc` | `verify`), `outcome` (`allowed` or the error code).
    pub authz_requests: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("keygate_requests_total", "Data-plane requests by outcome."),
            &["route", "method", "status", "outcome"],
        )
        .expect("static metric definition");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_request_duration_seconds",
                "Time from request head to response head, per route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )
        .expect("static metric definition");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_upstream_duration_seconds",
                "Time the upstream took to send response headers.",
            )
            .buckets(BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("static metric definition");
        let auth_cache = IntCounterVec::new(
            Opts::new("keygate_auth_cache_total", "Key lookups by cache result."),
            &["result"],
        )
        .expect("static metric definition");
        let store_operations = IntCounterVec::new(
            Opts::new("keygate_store_operations_total", "Key store operations."),
            &["op", "result"],
        )
        .expect("static metric definition");
        let store_latency = HistogramVec::new(
            HistogramOpts::new(
                "keygate_store_latency_seconds",
                "Key store operation latency.",
            )
            .buckets(BUCKETS.to_vec()),
            &["op"],
        )
        .expect("static metric definition");
        let store_up = IntGauge::new(
            "keygate_store_up",
            "1 when the last key store operation succeeded.",
        )
        .expect("static metric definition");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "keygate_rate_limited_total",
                "Requests refused by rate limits.",
            ),
            &["route", "kind"],
        )
        .expect("static metric definition");
        let connections_active = IntGaugeVec::new(
            Opts::new("keygate_connections_active", "Open client connections."),
            &["listener"],
        )
        .expect("static metric definition");
        let invalidations = IntCounter::new(
            "keygate_invalidations_total",
            "Cache entries invalidated after admin changes.",
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new("keygate_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("static metric definition");

        let tls_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "keygate_tls_certificate_expiry_seconds",
                "Unix time at which the served TLS certificate expires.",
            ),
            &["listener"],
        )
        .expect("static metric definition");

        let authz_requests = IntCounterVec::new(
            Opts::new(
                "keygate_authz_requests_total",
                "Decisions asked for by another proxy (forward-auth, ext_authz) or the verify API.",
            ),
            &["mode", "outcome"],
        )
        .expect("static metric definition");

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(auth_cache.clone()),
            Box::new(store_operations.clone()),
            Box::new(store_latency.clone()),
            Box::new(store_up.clone()),
            Box::new(rate_limited.clone()),
            Box::new(connections_active.clone()),
            Box::new(invalidations.clone()),
            Box::new(build_info.clone()),
            Box::new(tls_certificate_expiry.clone()),
            Box::new(authz_requests.clone()),
            Box::new(crate::logbuf::DROPPED.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for r in ["hit", "miss", "negative", "stale"] {
            auth_cache.with_label_values(&[r]);
        }
        for l in ["data", "admin"] {
            connections_active.with_label_values(&[l]);
        }

        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            auth_cache,
            store_operations,
            store_latency,
            store_up,
            rate_limited,
            connections_active,
            invalidations,
            build_info,
            tls_certificate_expiry,
            authz_requests,
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `method` label: a standard method, or `OTHER`.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}
