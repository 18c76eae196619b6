//! The Prometheus registry and typed handles for every family of SPEC §6.
//!
//! Label values come from route names, upstream names and fixed sets, never from raw
//! paths, hosts or keys, so the number of series stays bounded.

use std::cell::RefCell;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use thread_local::ThreadLocal;

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
    /// Each thread's handles of the request series it counted recently, so a request
    /// is counted without a label lookup ([`Metrics::served`]).
    hot: ThreadLocal<RefCell<Vec<HotRoute>>>,
}

/// One request as [`Metrics::served`] counts it.
pub struct Served<'a> {
    pub route: &'a str,
    pub method: &'static str,
    pub status: http::StatusCode,
    pub outcome: &'static str,
    pub duration: Duration,
    /// The upstream's name and how long it took to answer, if it was called.
    pub upstream: Option<(&'a str, Duration)>,
}

/// A thread's handles of one route's request series.
struct HotRoute {
    route: Box<str>,
    duration: Histogram,
    upstream: Option<(Box<str>, Histogram)>,
    /// `requests_total` by method, status and outcome.
    requests: Vec<(&'static str, http::StatusCode, &'static str, IntCounter)>,
}

/// Routes, and series per route, whose handles a thread keeps at most; past them
/// the label lookup is made each time.
const HOT_ROUTES: usize = 64;
const HOT_SERIES: usize = 16;

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
            hot: ThreadLocal::new(),
        }
    }

    /// Counts a served request in `keygate_requests_total`, its duration in
    /// `keygate_request_duration_seconds` and its upstream's in
    /// `keygate_upstream_duration_seconds`, through the thread's kept handles.
    pub fn served(&self, r: &Served<'_>) {
        let mut hot = self.hot.get_or(Default::default).borrow_mut();
        let i = match hot.iter().position(|h| *h.route == *r.route) {
            Some(i) => i,
            None if hot.len() < HOT_ROUTES => {
                hot.push(HotRoute {
                    route: r.route.into(),
                    duration: self.request_duration.with_label_values(&[r.route]),
                    upstream: None,
                    requests: Vec::new(),
                });
                hot.len() - 1
            }
            None => {
                drop(hot);
                return self.served_uncached(r);
            }
        };
        let h = &mut hot[i];
        let series = (r.method, r.status, r.outcome);
        match h
            .requests
            .iter()
            .find(|(m, s, o, _)| (*m, *s, *o) == series)
        {
            Some((.., c)) => c.inc(),
            None => {
                let c = self.requests.with_label_values(&[
                    r.route,
                    r.method,
                    r.status.as_str(),
                    r.outcome,
                ]);
                c.inc();
                if h.requests.len() < HOT_SERIES {
                    h.requests.push((r.method, r.status, r.outcome, c));
                }
            }
        }
        h.duration.observe(r.duration.as_secs_f64());
        if let Some((name, took)) = r.upstream {
            match &h.upstream {
                Some((n, u)) if **n == *name => u.observe(took.as_secs_f64()),
                _ => {
                    let u = self.upstream_duration.with_label_values(&[name]);
                    u.observe(took.as_secs_f64());
                    h.upstream = Some((name.into(), u));
                }
            }
        }
    }

    fn served_uncached(&self, r: &Served<'_>) {
        self.requests
            .with_label_values(&[r.route, r.method, r.status.as_str(), r.outcome])
            .inc();
        self.request_duration
            .with_label_values(&[r.route])
            .observe(r.duration.as_secs_f64());
        if let Some((name, took)) = r.upstream {
            self.upstream_duration
                .with_label_values(&[name])
                .observe(took.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_counts_every_series_whether_its_handles_are_kept_or_not() {
        let m = Metrics::new();
        let routes: Vec<String> = (0..HOT_ROUTES + 3).map(|i| format!("r{i}")).collect();
        let statuses =
            (0..HOT_SERIES as u16 + 3).map(|i| http::StatusCode::from_u16(200 + i).unwrap());
        let statuses: Vec<_> = statuses.collect();
        // Twice over every route and series: past the kept handles too.
        for _ in 0..2 {
            for route in &routes {
                for status in &statuses {
                    m.served(&Served {
                        route,
                        method: "GET",
                        status: *status,
                        outcome: "allowed",
                        duration: Duration::from_millis(1),
                        upstream: Some(("up", Duration::from_millis(1))),
                    });
                }
            }
        }
        for route in &routes {
            for status in &statuses {
                let c = m
                    .requests
                    .with_label_values(&[route, "GET", status.as_str(), "allowed"]);
                assert_eq!(c.get(), 2, "{route} {status}");
            }
            let d = m.request_duration.with_label_values(&[route]);
            assert_eq!(d.get_sample_count(), 2 * statuses.len() as u64, "{route}");
        }
        let total = 2 * (routes.len() * statuses.len()) as u64;
        assert_eq!(
            m.upstream_duration
                .with_label_values(&["up"])
                .get_sample_count(),
            total
        );
    }
}
