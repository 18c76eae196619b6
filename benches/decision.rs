//! The in-process cost of deciding one data-plane request for a key that is already in
//! the positive cache: the pipeline's own `decide` and `admit`, as `proxy::pipeline::run`
//! calls them after `Trace::start`, with no socket, no HTTP parsing and no upstream
//! (`run`'s size and Host checks and the header rewrite are left out).
//!
//! Groups:
//! - `decision`: the whole decision, in the pipeline's order (trace → path
//!   rules → route → client address → credential → token shape and checksum → SHA-256
//!   → failed-auth limiter → cache → key status → IP, environment, endpoint, resource,
//!   scope → rate limit). `plain` is the request `benches/load.sh` sends (GET, read
//!   key, no restrictions, no rate limit, direct peer); `restricted` is a key with every
//!   restriction and a per-minute and per-day limit (in-process limiter), behind a
//!   trusted load balancer that sends `X-Forwarded-For`.
//! - `part`: each step alone, so that a regression can be pinned on one of them.
//! - `baseline`: work with no keygate code in it, measured in the same run, so that
//!   results are reported as ratios that survive a change of machine.
//! - `accounting`: what `pipeline::handle` records after the response (metrics, usage
//!   counters); not part of the decision, but paid on every request.
//!
//! Target (docs/benchmarks.md): `decision/*` under 1 µs.
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! on a small machine shared with other work, wall time counts every moment the
//! scheduler gave the core to someone else, which made repeated runs differ by 2×.
//! CPU time leaves that out (cache and memory contention still show). Set
//! `BENCH_WALL_CLOCK=1` to measure wall time instead.
//!
//! Run: `cargo bench --bench decision -- --quick` (or `--warm-up-time 1
//! --measurement-time 3`).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput};
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderValue, Method};
use jiff::Timestamp;

use keygate::auth::{AuthFailureLimiter, KeyResolver, credential};
use keygate::config::CacheConfig;
use keygate::key::{
    AuditEvent, Environment, KeyFormat, KeyHash, KeyPolicy, KeyRecord, KeyView, Org, Principal,
    RateLimit, Shared,
};
use keygate::limits::{Arrival, LocalLimiter, OrgCache, RateLimits, SystemClock};
use keygate::metrics::Metrics;
use keygate::policy::{self, Access, RouteTable, ScopeSet, ip, path};
use keygate::proxy::DataPlane;
use keygate::proxy::forward::Upstream;
use keygate::proxy::pipeline::{self, Mode, Question, Trace};
use keygate::refusal::Refusal;
use keygate::store::{CreateOutcome, KeyStore, LocalBus, Page, StoreError};
use keygate::usage::{self, UsageRecorder};

/// A store that knows the bench's keys (one per case) and their org, and refuses
/// everything else. After the warm-up lookup the resolver never calls it again: a warm
/// cache is what this bench measures. (The org cache rereads the org every half
/// second, as in production.)
struct BenchStore {
    records: Vec<KeyRecord>,
    /// Key lookups that reached the store: checked after the run, so that a bench that
    /// silently missed the cache cannot pass for a cached decision.
    lookups: Arc<AtomicUsize>,
}

const ORG: &str = "bench";

fn not_here<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable(
        "the bench store holds one key".into(),
    ))
}

#[async_trait]
impl KeyStore for BenchStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .records
            .iter()
            .find(|r| r.hashes().any(|h| h == *hash))
            .cloned())
    }
    async fn key_by_id(&self, _: &str) -> Result<Option<KeyRecord>, StoreError> {
        not_here()
    }
    async fn list_keys(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<Page<KeyRecord>, StoreError> {
        not_here()
    }
    async fn create_key(
        &self,
        _: &KeyRecord,
        _: Option<&str>,
    ) -> Result<CreateOutcome, StoreError> {
        not_here()
    }
    async fn update_key(&self, _: &KeyRecord, _: u64) -> Result<(), StoreError> {
        not_here()
    }
    async fn keys_created_by(&self, _: &str) -> Result<Vec<KeyRecord>, StoreError> {
        not_here()
    }
    async fn create_org(&self, _: &Org) -> Result<(), StoreError> {
        not_here()
    }
    async fn update_org(&self, _: &Org, _: u64) -> Result<(), StoreError> {
        not_here()
    }
    async fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        Ok((id == ORG).then(|| Org {
            id: ORG.into(),
            name: "Bench".into(),
            key_policy: KeyPolicy::Org,
            max_key_lifetime_days: None,
            rate_limit: None,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            version: 1,
        }))
    }
    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        not_here()
    }
    async fn create_first_principal(&self, _: &Principal) -> Result<bool, StoreError> {
        not_here()
    }
    async fn create_principal(&self, _: &Principal) -> Result<(), StoreError> {
        not_here()
    }
    async fn update_principal(&self, _: &Principal, _: u64) -> Result<(), StoreError> {
        not_here()
    }
    async fn get_principal(&self, _: &str) -> Result<Option<Principal>, StoreError> {
        not_here()
    }
    async fn principal_by_token(&self, _: &KeyHash) -> Result<Option<Principal>, StoreError> {
        not_here()
    }
    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        not_here()
    }
    async fn append_audit(&self, _: &AuditEvent) -> Result<(), StoreError> {
        not_here()
    }
    async fn list_audit(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        not_here()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The data plane the decision runs on, and the store's lookup count.
struct Gate {
    dp: DataPlane,
    store_lookups: Arc<AtomicUsize>,
}

/// The data plane's settings: ten routes in the spirit of the SPEC §8 example
/// (literals, params and a catch-all), a trusted load balancer's network, defaults for
/// the rest. Parsed and validated by keygate's own config code.
const CONFIG: &str = r#"
listen: { address: "127.0.0.1:0", tls: none }
admin: { address: "127.0.0.1:0" }
store: { backend: embedded, path: unused.db }
keys: { prefix: mtf }
trusted_proxies: [10.0.0.0/8]
upstreams:
  feeds: { url: "http://127.0.0.1:9" }
  flows: { url: "http://127.0.0.1:9" }
  reports: { url: "http://127.0.0.1:9" }
routes:
  - { name: list-feeds,    methods: [GET],    path: /v1/feeds,                     upstream: feeds,   scope: read }
  - { name: get-feed,      methods: [GET],    path: "/v1/feeds/{feed_id}",         upstream: feeds,   scope: read,  resource: "feed:{feed_id}" }
  - { name: refresh-feed,  methods: [POST],   path: "/v1/feeds/{feed_id}/refresh", upstream: feeds,   scope: write, resource: "feed:{feed_id}" }
  - { name: delete-feed,   methods: [DELETE], path: "/v1/feeds/{feed_id}",         upstream: feeds,   scope: write, resource: "feed:{feed_id}" }
  - { name: list-flows,    methods: [GET],    path: /flows,                        upstream: flows,   scope: read }
  - { name: execute-flow,  methods: [POST],   path: "/flows/{flow_id}/execute",    upstream: flows,   scope: write, resource: "flow:{flow_id}", query_key: true }
  - { name: flow-runs,     methods: [GET],    path: "/flows/{flow_id}/executions", upstream: flows,   scope: read,  resource: "flow:{flow_id}", environments: [live] }
  - { name: create-report, methods: [POST],   path: /v1/reports,                   upstream: reports, scope: write }
  - { name: get-report,    methods: [GET],    path: "/v1/reports/{*rest}",         upstream: reports, scope: read }
  - { name: status,        methods: [GET],    path: /v1/status,                    upstream: reports, scope: read }
"#;

/// One request as the pipeline sees it after hyper has parsed it.
struct Req {
    method: Method,
    host: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
    peer: IpAddr,
}

/// A key and a request for it.
struct Case {
    req: Req,
    token: String,
    hash: KeyHash,
    record: KeyRecord,
    /// The record as the resolver keeps it when `hash` is presented.
    view: KeyView,
}

impl Case {
    fn new(req: Req, token: String, hash: KeyHash, record: KeyRecord) -> Case {
        let view = record.clone().into_view(&hash, &Shared::default());
        Case {
            req,
            token,
            hash,
            record,
            view,
        }
    }
}

fn record(token_hash: KeyHash) -> KeyRecord {
    let now = Timestamp::now();
    KeyRecord {
        id: "key_01jbench".into(),
        org: ORG.into(),
        name: "load".into(),
        description: None,
        environment: Environment::Live,
        prefix: "mtf_live_abcd".into(),
        scopes: vec!["read".into()],
        resources: None,
        endpoints: None,
        ip_allow: None,
        rate_limit: None,
        created_at: now,
        created_by: "prn_1".into(),
        updated_at: now,
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        deleted_at: None,
        creator_suspended: false,
        version: 1,
        secret_hash: token_hash,
        previous_secret: None,
    }
}

fn headers(token: &str, host: &str, xff: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HOST, HeaderValue::from_str(host).expect("host"));
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("token"),
    );
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("application/json"));
    if let Some(x) = xff {
        h.insert("x-forwarded-for", HeaderValue::from_str(x).expect("xff"));
    }
    h
}

/// The request `benches/load.sh` sends: GET /v1/feeds, a read key, no restrictions.
fn plain_case(format: &KeyFormat) -> Case {
    let secret = format.generate(Environment::Live);
    let record = record(secret.hash);
    Case::new(
        Req {
            method: Method::GET,
            host: "127.0.0.1:8080",
            path: "/v1/feeds",
            query: None,
            headers: headers(&secret.token, "127.0.0.1:8080", None),
            peer: "127.0.0.1".parse().expect("ip"),
        },
        secret.token,
        secret.hash,
        record,
    )
}

/// A write key limited by IP, endpoint and resource, reached through a trusted load
/// balancer: every branch of `authorize` and of `client_addr` does work.
fn restricted_case(format: &KeyFormat) -> Case {
    let secret = format.generate(Environment::Live);
    let mut record = record(secret.hash);
    record.scopes = vec!["write".into()];
    record.resources = Some(vec!["flow:abc123".into(), "feed:*".into()]);
    record.endpoints = Some(vec!["get-feed".into(), "refresh-feed".into()]);
    // Never reached: every request is counted in both windows and admitted.
    record.rate_limit = Some(RateLimit {
        per_minute: Some(u64::MAX / 2),
        per_day: Some(u64::MAX / 2),
        ..RateLimit::default()
    });
    record.ip_allow = Some(vec![
        "192.0.2.0/24".parse().expect("net"),
        "203.0.113.0/24".parse().expect("net"),
    ]);
    Case::new(
        Req {
            method: Method::POST,
            host: "api.example.com",
            path: "/v1/feeds/feed-42/refresh",
            query: Some("dry_run=1"),
            headers: headers(
                &secret.token,
                "api.example.com",
                Some("203.0.113.7, 10.0.0.2"),
            ),
            peer: "10.0.0.1".parse().expect("ip"),
        },
        secret.token,
        secret.hash,
        record,
    )
}

fn gate(rt: &tokio::runtime::Runtime, cases: &[&Case]) -> Gate {
    let config = keygate::config::parse("decision-bench.yaml", CONFIG).expect("bench config");
    let metrics = Arc::new(Metrics::new());
    let store_lookups = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(BenchStore {
        records: cases.iter().map(|c| c.record.clone()).collect(),
        lookups: store_lookups.clone(),
    });
    // TTLs far longer than a bench run: the cache stays fresh, so no iteration pays
    // for a background recheck (in production that is one recheck per key per `ttl`).
    let cache = CacheConfig {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
        max_entries: 1_000_000,
        max_staleness: Duration::from_secs(3600),
        stale_if_error: Duration::from_secs(7200),
    };
    let resolver = Arc::new(KeyResolver::new(
        store.clone(),
        Arc::new(LocalBus),
        &cache,
        Duration::from_millis(250),
        metrics.clone(),
    ));
    rt.block_on(async {
        // The local bus says "connected" once and closes: until then the resolver
        // trusts no cached entry, as after a lost invalidation channel.
        resolver.clone().listen().await;
        for c in cases {
            let found = resolver
                .resolve(&c.hash)
                .await
                .expect("bench store answers");
            assert!(found.is_some(), "warm-up lookup found the key");
        }
    });
    // Built as `app` builds it, from the parsed config.
    let _guard = rt.enter();
    let dp = DataPlane {
        routes: RouteTable::new(&config.routes).expect("bench routes are valid"),
        scopes: ScopeSet::new(&config.scopes),
        key_format: KeyFormat::new(&config.keys.prefix).expect("prefix"),
        resolver,
        failures: Arc::new(AuthFailureLimiter::new(config.limits.auth_failures_per_ip)),
        upstreams: config
            .upstreams
            .iter()
            .map(|(name, u)| (name.clone(), Upstream::new(u).expect("upstream")))
            .collect(),
        identity: config.identity_headers.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        limits: config.limits.clone(),
        rate_limits: RateLimits::new(
            Arc::new(LocalLimiter::new()),
            config.rate_limit.clone(),
            Arc::new(OrgCache::new(store.clone(), cache.stale_if_error)),
            metrics.clone(),
        ),
        usage: Arc::new(UsageRecorder::new(store, Arc::new(SystemClock))),
        metrics,
        tls: false,
    };
    Gate { dp, store_lookups }
}

/// The decision as the data plane takes it for a proxied request: the trace (the clock
/// read once, the request id), the client address as `pipeline::run` derives it, then
/// `pipeline::decide` (path → … → scope) and `pipeline::admit` (the rate limit).
async fn decide(g: &Gate, r: &Req) -> Result<Arc<KeyView>, Refusal> {
    let dp = &g.dp;
    let mut trace = Trace::start(Mode::Proxy, &r.method, &r.headers);
    let peer = ip::canonical(r.peer);
    let client = ip::client_addr(peer, &r.headers, &dp.trusted_proxies);
    let decided = pipeline::decide(
        dp,
        &Question {
            method: &r.method,
            host: Some(r.host),
            path: r.path,
            query: r.query,
            headers: &r.headers,
            client,
            failure_ip: Some(client.unwrap_or(peer)),
            orgs: None,
        },
        &mut trace,
    )
    .await?;
    pipeline::admit(dp, &decided, &mut trace).await?;
    Ok(decided.key)
}

fn benches<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let format = KeyFormat::new("mtf").expect("prefix");
    let plain = plain_case(&format);
    let restricted = restricted_case(&format);
    let g = gate(&rt, &[&plain, &restricted]);
    let warm_lookups = g.store_lookups.load(Ordering::Relaxed);

    // Every case must be allowed, or the bench would time a refusal.
    rt.block_on(async {
        for (name, case) in [("plain", &plain), ("restricted", &restricted)] {
            if let Err(e) = decide(&g, &case.req).await {
                panic!("the {name} case is refused: {}", e.code());
            }
        }
    });

    let mut group = c.benchmark_group("decision");
    for (name, case) in [("plain", &plain), ("restricted", &restricted)] {
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(decide(&g, black_box(&case.req)).await) })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("part");
    let token = plain.token.as_str();
    for (name, case) in [("plain", &plain), ("restricted", &restricted)] {
        group.bench_function(format!("path_check/{name}"), |b| {
            b.iter(|| path::check(black_box(case.req.path)))
        });
    }
    for (name, case) in [("plain", &plain), ("restricted", &restricted)] {
        group.bench_function(format!("route_lookup/{name}"), |b| {
            b.iter(|| {
                g.dp.routes
                    .lookup(
                        black_box(&case.req.method),
                        Some(case.req.host),
                        black_box(case.req.path),
                    )
                    .map(|m| m.route.name.len())
            })
        });
    }
    group.bench_function("route_lookup_and_resource/restricted", |b| {
        let r = &restricted.req;
        b.iter(|| {
            let m =
                g.dp.routes
                    .lookup(&r.method, Some(r.host), black_box(r.path))?;
            m.route.resource.as_ref()?.render(|n| m.params.get(n))
        })
    });
    for (name, case) in [("direct", &plain), ("via_trusted_proxy", &restricted)] {
        group.bench_function(format!("client_addr/{name}"), |b| {
            b.iter(|| {
                ip::client_addr(
                    black_box(case.req.peer),
                    &case.req.headers,
                    &g.dp.trusted_proxies,
                )
            })
        });
    }
    group.bench_function("credential_extract", |b| {
        b.iter(|| {
            credential::extract(black_box(&plain.req.headers), None, false).map(|c| c.token.len())
        })
    });
    group.bench_function("key_format_check", |b| {
        b.iter(|| g.dp.key_format.check(black_box(token)))
    });
    group.bench_function("sha256", |b| b.iter(|| KeyHash::of(black_box(token))));
    group.bench_function("failures_blocked", |b| {
        b.iter(|| g.dp.failures.blocked(black_box(plain.req.peer)))
    });
    group.bench_function("resolve_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { g.dp.resolver.resolve(black_box(&plain.hash)).await })
    });
    group.bench_function("timestamp_now", |b| b.iter(Timestamp::now));
    group.bench_function("arrival_now", |b| b.iter(Arrival::now));
    group.bench_function("request_id", |b| {
        b.iter(|| pipeline::request_id(black_box(&plain.req.headers), Timestamp::MIN))
    });
    // The clock read once and the request id (a ULID), as every request starts.
    group.bench_function("trace_start", |b| {
        b.iter(|| {
            Trace::start(
                Mode::Proxy,
                &plain.req.method,
                black_box(&plain.req.headers),
            )
        })
    });
    group.bench_function("check_key", |b| {
        b.iter(|| policy::check_key(black_box(&plain.view), Timestamp::now()))
    });
    for (name, case) in [("plain", &plain), ("restricted", &restricted)] {
        let m =
            g.dp.routes
                .lookup(&case.req.method, Some(case.req.host), case.req.path)
                .expect("route");
        let resource = m
            .route
            .resource
            .as_ref()
            .and_then(|t| t.render(|n| m.params.get(n)));
        let client = ip::client_addr(case.req.peer, &case.req.headers, &g.dp.trusted_proxies);
        let access = Access {
            route: m.route,
            resource: resource.as_deref(),
            client,
            upstream_has_test: false,
        };
        group.bench_function(format!("authorize/{name}"), |b| {
            b.iter(|| policy::authorize(black_box(&case.view), black_box(&access), &g.dp.scopes))
        });
    }
    for (name, case) in [("unlimited", &plain), ("minute_and_day", &restricted)] {
        let route =
            g.dp.routes
                .lookup(&case.req.method, Some(case.req.host), case.req.path)
                .expect("route")
                .route
                .clone();
        group.bench_function(format!("rate_limit/{name}"), |b| {
            b.to_async(&rt).iter(|| async {
                let mut quota = None;
                g.dp.rate_limits
                    .acquire(
                        black_box(&case.view),
                        Some(&route),
                        &Arrival::now(),
                        &mut quota,
                    )
                    .await
                    .map(|()| quota)
            })
        });
    }
    group.finish();

    // Work with no keygate code in it: the yardsticks for the ratios.
    let mut group = c.benchmark_group("baseline");
    let mut map: HashMap<KeyHash, Arc<KeyView>> = HashMap::new();
    map.insert(plain.hash, Arc::new(plain.view.clone()));
    group.bench_function("hashmap_get", |b| {
        b.iter(|| map.get(black_box(&plain.hash)).cloned())
    });
    group.bench_function("sha256_raw", |b| {
        use sha2::{Digest, Sha256};
        b.iter(|| Sha256::digest(black_box(token.as_bytes())))
    });
    group.finish();

    let after = g.store_lookups.load(Ordering::Relaxed);
    assert_eq!(
        after,
        warm_lookups,
        "the decision benches reached the store {} times: the cache was not warm",
        after - warm_lookups
    );

    let mut group = c.benchmark_group("accounting");
    group.bench_function("request_metrics", |b| {
        b.iter(|| {
            g.dp.metrics
                .requests
                .with_label_values(&["list-feeds", "GET", "200", "allowed"])
                .inc();
            g.dp.metrics
                .request_duration
                .with_label_values(&["list-feeds"])
                .observe(black_box(0.000_3));
        })
    });
    group.bench_function("usage_record", |b| {
        let outcome = usage::Outcome {
            route: "list-feeds",
            resource: None,
            status: http::StatusCode::OK,
            refusal: None,
        };
        let now = jiff::Timestamp::now();
        b.iter(|| {
            g.dp.usage
                .record(black_box(&plain.record.id), &outcome, now)
        })
    });
    group.finish();
}

/// CPU time of the calling thread: time spent on a core by this thread only.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    // Both fields are non-negative for a CPU-time clock.
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu_now().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

/// Formats nanoseconds like criterion's own wall-time formatter.
struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else if typical < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per, unit) = match *throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (n as f64, "B/s"),
            Throughput::Bits(n) => (n as f64, "bit/s"),
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => {
                (n as f64, "elem/s")
            }
        };
        for v in values {
            *v = per * 1e9 / *v;
        }
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Short defaults: the machine is small and shared; criterion flags override them.
fn configured<M: Measurement>(c: Criterion<M>) -> Criterion<M> {
    c.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

fn main() {
    if std::env::var_os("BENCH_WALL_CLOCK").is_some() {
        let mut c = configured(Criterion::default());
        benches(&mut c);
        c.final_summary();
    } else {
        let mut c = configured(Criterion::default().with_measurement(ThreadCpuTime));
        benches(&mut c);
        c.final_summary();
    }
}
