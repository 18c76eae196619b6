//! Wiring only: builds the store, resolver, policy tables, upstream clients, metrics
//! and listeners from a validated [`Config`], runs both ports, and handles signals.
//! No request logic lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminContext};
use crate::auth::{AuthFailureLimiter, KeyResolver};
use crate::config::{Config, ConfigError, StoreBackend};
use crate::key::KeyFormat;
use crate::metrics::Metrics;
use crate::policy::{RouteTable, ScopeSet};
use crate::proxy::forward::Upstream;
use crate::proxy::{self, DataPlane, tls};
use crate::store::instrumented::Instrumented;
use crate::store::{EmbeddedStore, InvalidationBus, KeyStore, LocalBus, RedisStore};

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

fn build_upstreams(config: &Config) -> Result<HashMap<String, Upstream>, ConfigError> {
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

/// The store, and the invalidation bus that goes with it.
type StoreParts = (Arc<dyn KeyStore>, Arc<dyn InvalidationBus>);

fn open_store(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<StoreParts> {
    let (inner, bus): StoreParts = match &config.store.backend {
        StoreBackend::Embedded { path } => (
            Arc::new(
                EmbeddedStore::open(path)
                    .with_context(|| format!("opening the embedded store {}", path.display()))?,
            ),
            Arc::new(LocalBus),
        ),
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
            (redis, bus)
        }
    };
    Ok((
        Arc::new(Instrumented::new(
            inner,
            metrics.clone(),
            config.store.timeout,
        )),
        bus,
    ))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} address {addr}"))
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    install_crypto_provider();
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let routes = build_routes(&config)?;
    let upstreams = build_upstreams(&config)?;
    let key_format = KeyFormat::new(&config.keys.prefix)?;
    let data_tls = tls::server_config(&config.listen.tls).context("listen.tls")?;
    if config.admin.tls.is_some() {
        bail!("admin.tls is not available in this build yet; keep the admin port on loopback");
    }

    let (store, bus) = open_store(&config, &metrics)?;
    let resolver = Arc::new(KeyResolver::new(
        store.clone(),
        bus,
        &config.cache,
        config.store.timeout,
        metrics.clone(),
    ));
    tokio::spawn(resolver.clone().listen());
    let dp = Arc::new(DataPlane {
        routes,
        scopes: ScopeSet::new(&config.scopes),
        key_format: key_format.clone(),
        resolver: resolver.clone(),
        failures: AuthFailureLimiter::new(config.limits.auth_failures_per_ip),
        upstreams,
        identity: config.identity_headers.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        limits: config.limits.clone(),
        metrics: metrics.clone(),
        tls: data_tls.is_some(),
    });

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
    let cert = data_tls.as_ref().map(|(_, c)| c.clone());
    let acceptor = data_tls.map(|(cfg, _)| TlsAcceptor::from(cfg));
    tasks.spawn(proxy::server::serve(
        data_listener,
        dp,
        acceptor,
        config.listen.proxy_protocol,
        stop_rx.clone(),
    ));

    let ctx = Arc::new(AdminContext {
        store: store.clone(),
        resolver,
        metrics: metrics.clone(),
        key_format,
        config: config.clone(),
        ready: ready.clone(),
    });
    tracing::info!(
        "admin API listening on http://{}",
        admin_listener.local_addr()?
    );
    tasks.spawn(serve_axum(
        admin_listener,
        admin::router(ctx),
        stop_rx.clone(),
    ));
    if let Some(l) = metrics_listener {
        tracing::info!("metrics listening on http://{}/metrics", l.local_addr()?);
        tasks.spawn(serve_axum(
            l,
            admin::metrics_router(metrics.clone()),
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

    wait_for_signals(cert).await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    let deadline = proxy::server::DRAIN_DEADLINE + Duration::from_secs(1);
    let _ = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn serve_axum(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) {
    let r = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// Returns on SIGTERM or SIGINT; reloads the certificate on SIGHUP.
async fn wait_for_signals(cert: Option<Arc<tls::ReloadableCert>>) {
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
            _ = hup.recv() => {
                if let Some(c) = &cert {
                    match c.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                        Err(e) => tracing::error!(error = format!("{e:#}"), "SIGHUP: keeping the old certificate"),
                    }
                }
            }
        }
    }
}
