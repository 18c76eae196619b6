//! Wiring only: builds the store, resolver, policy tables, upstream clients, metrics
//! and listeners from a validated [`Config`], runs both ports, and handles signals.
//! No request logic lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminContext};
use crate::auth::{AuthFailureLimiter, KeyResolver};
use crate::config::{Config, ConfigError, ProxyProtocol, StoreBackend};
use crate::key::KeyFormat;
use crate::limits::{
    Limiter, LocalLimiter, OrgCache, QuotaFile, RateLimits, RedisLimiter, SystemClock,
};
use crate::metrics::Metrics;
use crate::policy::{RouteTable, ScopeSet};
use crate::proxy::acceptor::{self, ConnLimits, Port};
use crate::proxy::forward::Upstream;
use crate::proxy::pipeline::ConnInfo;
use crate::proxy::{self, DataPlane};
use crate::store::instrumented::Instrumented;
use crate::store::{EmbeddedStore, InvalidationBus, KeyStore, LocalBus, RedisStore};
use crate::tls;
use crate::usage::UsageRecorder;

/// rustls must have exactly one process-wide provider; keygate uses aws-lc-rs.
pub fn install_crypto_provider() {
    // Err only means it was installed already (tests call this repeatedly).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// What `keygate check-config` verifies beyond parsing: everything `serve` builds before
/// binding a port or opening the store (route table, key format, TLS files, upstream
/// TLS settings).
pub fn check(config: &Config) -> anyhow::Result<()> {
    install_crypto_provider();
    build_routes(config)?;
    KeyFormat::new(&config.keys.prefix)
        .map_err(|e| config.error_at("keys.prefix", e.to_string()))?;
    tls::server_config(&config.listen.tls)
        .map_err(|e| config.error_at("listen.tls", format!("{e:#}")))?;
    if let Some(t) = &config.admin.tls {
        tls::server_config(t).map_err(|e| config.error_at("admin.tls", format!("{e:#}")))?;
    }
    build_upstreams(config)?;
    Ok(())
}

fn build_routes(config: &Config) -> Result<RouteTable, ConfigError> {
    RouteTable::new(&config.routes)
        .map_err(|c| config.error_at(&format!("routes[{}].path", c.index), c.message))
}

fn build_upstreams(
    config: &Config,
) -> Result<HashMap<String, Upstream, crate::FastHash>, ConfigError> {
    config
        .upstreams
        .iter()
        .map(|(name, u)| {
            Upstream::new(u)
                .map(|up| (name.clone(), up))
                .map_err(|e| config.error_at(&format!("upstreams.{name}"), format!("{e:#}")))
        })
        .collect()
}

/// The store, the invalidation bus and the rate limiter that go with it, and (embedded
/// store) where the limiter's quota counters are kept across restarts.
type StoreParts = (
    Arc<dyn KeyStore>,
    Arc<dyn InvalidationBus>,
    Arc<dyn Limiter>,
    Option<Arc<QuotaFile>>,
);

fn open_store(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<StoreParts> {
    let (inner, bus, limiter, quotas): StoreParts = match &config.store.backend {
        StoreBackend::Embedded { path } => {
            let store = Arc::new(
                EmbeddedStore::open(path)
                    .with_context(|| format!("opening the embedded store {}", path.display()))?,
            );
            let limiter = Arc::new(LocalLimiter::with_saved_quotas());
            let counters = Arc::new(Instrumented::new(
                store.clone(),
                metrics.clone(),
                config.store.timeout,
            ));
            let quotas = Arc::new(QuotaFile::new(limiter.clone(), counters));
            (store, Arc::new(LocalBus), limiter, Some(quotas))
        }
        StoreBackend::Redis { url } => {
            // Connection and response timeouts of the Redis sockets: above store.timeout
            // (which bounds each caller) so that a slow answer still clears the pipe.
            let io_timeout = (config.store.timeout * 4).max(Duration::from_secs(1));
            let redis = Arc::new(
                RedisStore::open(url, &config.store.namespace, io_timeout)
                    .map_err(|e| config.error_at("store.url", e.to_string()))?,
            );
            tracing::info!(redis = %redis.describe(), namespace = %config.store.namespace, "using the Redis store");
            redis.spawn_settings_check();
            let bus: Arc<dyn InvalidationBus> = Arc::new(redis.bus());
            // Limits hold across replicas through Redis (SPEC §3), bounded and measured
            // like every store call.
            let windows = Arc::new(Instrumented::new(
                redis.clone(),
                metrics.clone(),
                config.store.timeout,
            ));
            let limiter = Arc::new(RedisLimiter::new(windows, config.store.timeout));
            limiter.start();
            let limiter: Arc<dyn Limiter> = limiter;
            (redis, bus, limiter, None)
        }
    };
    // Off unless a test's environment asks for late-landing writes.
    let inner = crate::store::fault::from_env(inner);
    Ok((
        Arc::new(Instrumented::new(
            inner,
            metrics.clone(),
            config.store.timeout,
        )),
        bus,
        limiter,
        quotas,
    ))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} address {addr}"))
}

/// What survives a config reload: the store, the cache, the failure counters, metrics.
struct Shared {
    resolver: Arc<KeyResolver>,
    failures: Arc<AuthFailureLimiter>,
    metrics: Arc<Metrics>,
    /// Rate-limit counters and cached orgs: a reload must not reset a window.
    limiter: Arc<dyn Limiter>,
    orgs: Arc<OrgCache>,
    usage: Arc<UsageRecorder>,
}

/// The data plane for `config`: route table, upstream clients, policy tables.
fn build_data_plane(config: &Config, shared: &Shared, tls: bool) -> anyhow::Result<DataPlane> {
    Ok(DataPlane {
        routes: build_routes(config)?,
        scopes: ScopeSet::new(&config.scopes),
        key_format: KeyFormat::new(&config.keys.prefix)
            .map_err(|e| config.error_at("keys.prefix", e.to_string()))?,
        resolver: shared.resolver.clone(),
        failures: shared.failures.clone(),
        upstreams: build_upstreams(config)?,
        identity: config.identity_headers.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        limits: config.limits.clone(),
        rate_limits: RateLimits::new(
            shared.limiter.clone(),
            config.rate_limit.clone(),
            shared.orgs.clone(),
            shared.metrics.clone(),
        ),
        usage: shared.usage.clone(),
        metrics: shared.metrics.clone(),
        tls,
    })
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    install_crypto_provider();
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let data_tls = tls::server_config(&config.listen.tls).context("listen.tls")?;
    let admin_tls = match &config.admin.tls {
        Some(t) => tls::server_config(t).context("admin.tls")?,
        None => None,
    };

    let (store, bus, limiter, quotas) = open_store(&config, &metrics)?;
    // Day and month quotas used before a restart still count (embedded store).
    if let Some(q) = &quotas {
        let restored = q
            .restore(jiff::Timestamp::now())
            .await
            .context("reading the saved quota counters")?;
        tracing::info!(counters = restored, "quota counters restored");
    }
    let quota_task = quotas.clone().map(|q| tokio::spawn(q.run()));
    let resolver = Arc::new(KeyResolver::new(
        store.clone(),
        bus,
        &config.cache,
        config.store.timeout,
        metrics.clone(),
    ));
    tokio::spawn(resolver.clone().listen());
    let shared = Shared {
        resolver: resolver.clone(),
        failures: Arc::new(AuthFailureLimiter::new(config.limits.auth_failures_per_ip)),
        metrics: metrics.clone(),
        limiter,
        orgs: Arc::new(OrgCache::new(store.clone(), config.cache.stale_if_error)),
        usage: Arc::new(UsageRecorder::new(store.clone(), Arc::new(SystemClock))),
    };
    let usage_task = tokio::spawn(shared.usage.clone().run());
    let dp = build_data_plane(&config, &shared, data_tls.is_some())?;
    let key_format = dp.key_format.clone();
    let current = Arc::new(ArcSwap::from_pointee(dp));

    // The data port's and the authz listener's connections run on one single-threaded
    // runtime per core.
    let workers = proxy::workers::Workers::start(proxy::workers::Workers::default_count())
        .context("starting the data plane's worker threads")?;
    tracing::info!(workers = workers.len(), "data plane workers started");
    let data_listener = bind(config.listen.address, "listen").await?;
    let admin_listener = bind(config.admin.address, "admin").await?;
    let metrics_listener = match &config.metrics {
        Some(m) => Some(bind(m.address, "metrics").await?),
        None => None,
    };

    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let scheme = if data_tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "data plane listening on {scheme}://{}",
        data_listener.local_addr()?
    );
    let mut certs: Vec<(&'static str, Arc<tls::ReloadableCert>)> = Vec::new();
    certs.extend(data_tls.as_ref().map(|(_, c)| ("data", c.clone())));
    certs.extend(admin_tls.as_ref().map(|(_, c)| ("admin", c.clone())));
    publish_cert_expiry(&certs, &metrics);
    let data_gauge = metrics.connections_active.with_label_values(&["data"]);
    let conn_limits = current.clone();
    let dp_for_requests = current.clone();
    tasks.spawn(acceptor::serve(
        data_listener,
        Port {
            name: "data",
            // Fixed at start (a restart-only field); per-connection limits follow
            // SIGHUP reloads.
            max_connections: config.limits.max_connections,
            tls: data_tls.map(|(cfg, _)| TlsAcceptor::from(cfg)),
            proxy_protocol: config.listen.proxy_protocol,
            allow_from: Vec::new(),
            workers: Some(workers.clone()),
        },
        data_gauge,
        move || ConnLimits::from(&conn_limits.load().limits),
        move |peer| {
            let current = dp_for_requests.clone();
            let info = ConnInfo { peer };
            // The data plane is loaded per request, so a reload reaches kept-alive
            // connections too. The request's future is boxed: hyper keeps a slot the
            // size of the service's future per connection, idle or not.
            service_fn(move |req| Box::pin(proxy::pipeline::handle(current.load_full(), info, req)))
        },
        stop_rx.clone(),
    ));

    // SPEC §9: the authz listener (forward-auth and ext_authz) and the verify API,
    // deciding on the same data plane.
    let authz = crate::authz::Authz::new(current.clone());
    if let Some(a) = &config.authz {
        let listener = bind(a.address, "authz").await?;
        let authz_tls = match &a.tls {
            Some(t) => tls::server_config(t).context("authz.tls")?,
            None => None,
        };
        let scheme = if authz_tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "authz listening on {scheme}://{} (forward-auth at /v1/authz, Envoy ext_authz over gRPC)",
            listener.local_addr()?
        );
        if let Some((_, cert)) = &authz_tls {
            certs.push(("authz", cert.clone()));
            publish_cert_expiry(&certs, &metrics);
        }
        let limits = current.clone();
        let authz = authz.clone();
        tasks.spawn(acceptor::serve(
            listener,
            Port {
                name: "authz",
                max_connections: config.limits.max_connections,
                tls: authz_tls.map(|(cfg, _)| TlsAcceptor::from(cfg)),
                proxy_protocol: ProxyProtocol::Off,
                allow_from: a.allow_from.clone(),
                workers: Some(workers.clone()),
            },
            metrics.connections_active.with_label_values(&["authz"]),
            move || ConnLimits::from(&limits.load().limits),
            move |peer| authz.clone().service(peer),
            stop_rx.clone(),
        ));
    }

    let ctx = Arc::new(AdminContext {
        verifier: Arc::new(authz),
        store: store.clone(),
        resolver,
        metrics: metrics.clone(),
        key_format,
        config: config.clone(),
        ready: ready.clone(),
    });
    let admin_scheme = if admin_tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "admin API listening on {admin_scheme}://{}",
        admin_listener.local_addr()?
    );
    // The admin and metrics ports: the data plane's header-read and idle timeouts (as
    // reloaded), their own connection cap each (SPEC §3).
    let admin_limits = {
        let current = current.clone();
        move || ConnLimits::from(&current.load().limits)
    };
    tasks.spawn(serve_router(
        admin_listener,
        Port {
            name: "admin",
            max_connections: config.admin.max_connections,
            tls: admin_tls.map(|(cfg, _)| TlsAcceptor::from(cfg)),
            proxy_protocol: ProxyProtocol::Off,
            allow_from: Vec::new(),
            workers: None,
        },
        admin_limits.clone(),
        admin::router(ctx),
        metrics.connections_active.with_label_values(&["admin"]),
        stop_rx.clone(),
    ));
    if let Some(l) = metrics_listener {
        tracing::info!("metrics listening on http://{}/metrics", l.local_addr()?);
        tasks.spawn(serve_router(
            l,
            Port {
                name: "metrics",
                max_connections: config.admin.max_connections,
                tls: None,
                proxy_protocol: ProxyProtocol::Off,
                allow_from: Vec::new(),
                workers: None,
            },
            admin_limits,
            admin::metrics_router(metrics.clone()),
            metrics.connections_active.with_label_values(&["metrics"]),
            stop_rx.clone(),
        ));
    }

    // Ready once the store has answered once and a first principal exists.
    let mut stop_wait = stop_rx.clone();
    let startup = async {
        let mut delay = Duration::from_millis(100);
        loop {
            match store.ping().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "key store not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        admin::bootstrap(store.as_ref(), &config.admin.bootstrap_token_file).await
    };
    tokio::select! {
        r = startup => { r.context("creating the first admin principal")?; }
        _ = stop_wait.changed() => {}
    }
    ready.store(true, Ordering::Release);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "keygate ready");

    let reload = Reload {
        config: config.clone(),
        shared,
        current,
        certs,
    };
    wait_for_signals(&reload).await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    let deadline = acceptor::DRAIN_DEADLINE + Duration::from_secs(1);
    let _ = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    // Usage of the requests just drained (after any flush under way).
    let usage = reload.shared.usage.clone();
    if tokio::time::timeout(USAGE_FLUSH_DEADLINE, usage.flush())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: the last usage counts could not be written in time");
    }
    usage_task.abort();
    if let Some(q) = &quotas {
        if let Some(t) = quota_task {
            t.abort();
        }
        if let Err(e) = q.save(jiff::Timestamp::now()).await {
            tracing::warn!(error = %e, "shutdown: the quota counters could not be saved");
        }
    }
    Ok(())
}

/// Serves an axum router (admin API or metrics) on the shared acceptor, until `stop`.
async fn serve_router(
    listener: TcpListener,
    port: Port,
    limits: impl Fn() -> ConnLimits,
    router: axum::Router,
    gauge: prometheus::IntGauge,
    stop: watch::Receiver<bool>,
) {
    acceptor::serve(
        listener,
        port,
        gauge,
        limits,
        move |_peer| TowerToHyperService::new(router.clone()),
        stop,
    )
    .await;
}

/// How long shutdown waits for the last usage flush.
const USAGE_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// What SIGHUP needs: the running config, the parts that survive, the swappable data
/// plane and the certificates to re-read.
struct Reload {
    config: Arc<Config>,
    shared: Shared,
    current: Arc<ArcSwap<DataPlane>>,
    certs: Vec<(&'static str, Arc<tls::ReloadableCert>)>,
}

/// Sets `keygate_tls_certificate_expiry_seconds` for each TLS listener.
fn publish_cert_expiry(certs: &[(&'static str, Arc<tls::ReloadableCert>)], metrics: &Metrics) {
    for (listener, cert) in certs {
        if let Some(t) = cert.expires_at() {
            metrics
                .tls_certificate_expiry
                .with_label_values(&[listener])
                .set(t);
        }
    }
}

impl Reload {
    /// Re-reads the config file and certificates. An invalid config, or one that
    /// changes what only a restart can change, keeps everything as it was.
    fn run(&self) {
        for (listener, c) in &self.certs {
            match c.reload() {
                Ok(true) => tracing::info!(listener, "SIGHUP: TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: keeping the old certificate"
                ),
            }
        }
        publish_cert_expiry(&self.certs, &self.shared.metrics);
        let new = match crate::config::load(&self.config.source) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: config invalid; keeping the running config");
                return;
            }
        };
        if let Some(field) = restart_only_change(&self.config, &new) {
            tracing::error!(
                field,
                "SIGHUP: this field changed and needs a restart; keeping the running config"
            );
            return;
        }
        let tls = self.current.load().tls;
        match build_data_plane(&new, &self.shared, tls) {
            Ok(dp) => {
                self.current.store(Arc::new(dp));
                tracing::info!(routes = new.routes.len(), "SIGHUP: config reloaded");
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: config invalid; keeping the running config"
            ),
        }
    }
}

/// The first field whose change a reload cannot apply, if any.
fn restart_only_change(old: &Config, new: &Config) -> Option<&'static str> {
    if old.listen.address != new.listen.address {
        return Some("listen.address");
    }
    if old.listen.tls != new.listen.tls {
        return Some("listen.tls");
    }
    if old.listen.proxy_protocol != new.listen.proxy_protocol {
        return Some("listen.proxy_protocol");
    }
    if old.admin.address != new.admin.address
        || old.admin.tls != new.admin.tls
        || old.admin.max_connections != new.admin.max_connections
    {
        return Some("admin");
    }
    if old.metrics.as_ref().map(|m| m.address) != new.metrics.as_ref().map(|m| m.address) {
        return Some("metrics.address");
    }
    let authz = |c: &Config| {
        c.authz
            .as_ref()
            .map(|a| (a.address, a.tls.clone(), a.allow_from.clone()))
    };
    if authz(old) != authz(new) {
        return Some("authz");
    }
    if old.store.backend != new.store.backend || old.store.timeout != new.store.timeout {
        return Some("store");
    }
    let (a, b) = (&old.cache, &new.cache);
    if (
        a.ttl,
        a.negative_ttl,
        a.max_entries,
        a.max_staleness,
        a.stale_if_error,
    ) != (
        b.ttl,
        b.negative_ttl,
        b.max_entries,
        b.max_staleness,
        b.stale_if_error,
    ) {
        return Some("cache");
    }
    if old.limits.auth_failures_per_ip != new.limits.auth_failures_per_ip
        || old.limits.max_connections != new.limits.max_connections
    {
        return Some("limits.auth_failures_per_ip or limits.max_connections");
    }
    None
}

/// Returns on SIGTERM or SIGINT; reloads on SIGHUP.
async fn wait_for_signals(reload: &Reload) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload.run(),
        }
    }
}
