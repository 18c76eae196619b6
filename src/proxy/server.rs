//! The data-plane accept loop and hyper's connection settings.
//!
//! Limits applied here, before a request exists: `max_connections` (accepting waits for
//! a free slot), the PROXY header and TLS handshake deadlines, `header_read_timeout`
//! (HTTP/1.1, including the wait for the next request on a kept-alive connection),
//! `idle_timeout`, hyper's header buffer, and h2 concurrent streams. The byte limits of
//! SPEC §3 are then checked on the parsed request by the pipeline, so that they get the
//! JSON error; hyper's own buffers sit above them and answer with a bare status only
//! for requests far over the limits.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{Limits, ProxyProtocol};
use crate::proxy::DataPlane;
use crate::proxy::listener::{IdleTimeout, read_proxy_header};
use crate::proxy::pipeline::{self, ConnInfo};

/// How long in-flight requests may finish after shutdown starts.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// hyper's HTTP settings for the data plane.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // Room for the request line and headers up to our limits, plus slack so that a
    // request slightly over them still parses and gets the JSON 414/431.
    let head = (limits.max_header_bytes + limits.max_uri_bytes + 4096).max(8192);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(head)
        .max_headers(256)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts and serves connections until `shutdown` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    current: Arc<ArcSwap<DataPlane>>,
    tls: Option<TlsAcceptor>,
    proxy_protocol: ProxyProtocol,
    mut shutdown: watch::Receiver<bool>,
) {
    let first = current.load_full();
    // The connection cap and metrics are fixed at start; per-connection limits and
    // everything per request follow SIGHUP reloads.
    let slots = Arc::new(Semaphore::new(first.limits.max_connections));
    let gauge = first
        .metrics
        .connections_active
        .with_label_values(&["data"]);
    drop(first);
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (mut tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let current = current.clone();
        let limits = current.load().limits.clone();
        let builder = http_builder(&limits);
        let tls = tls.clone();
        let gauge = gauge.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            gauge.inc();
            let peer = match tokio::time::timeout(
                limits.header_read_timeout,
                read_proxy_header(&mut tcp, proxy_protocol, peer),
            )
            .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "PROXY header refused");
                    gauge.dec();
                    return;
                }
                Err(_) => {
                    gauge.dec();
                    return;
                }
            };
            let info = ConnInfo { peer };
            // The data plane is loaded per request, so a reload reaches kept-alive
            // connections too.
            let svc = service_fn(move |req| pipeline::handle(current.load_full(), info, req));
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
                            let conn = builder.serve_connection(io, svc);
                            let _ = watcher.watch(conn).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    let io = TokioIo::new(IdleTimeout::new(tcp, limits.idle_timeout));
                    let conn = builder.serve_connection(io, svc);
                    let _ = watcher.watch(conn).await;
                }
            }
            gauge.dec();
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some data-plane connections were still open at the drain deadline");
    }
}
