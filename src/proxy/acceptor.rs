//! The one acceptor every port uses (data, admin, metrics, and any later listener):
//! accept within the port's connection cap → PROXY header → TLS handshake → hyper
//! (HTTP/1.1 or h2), each step bounded in time, and a watchdog per connection.
//!
//! A port says what differs ([`Port`]: its name, cap, TLS, PROXY protocol) and hands
//! over a service per connection; the limits ([`ConnLimits`]) come from `limits:`.
//! What holds on every port:
//!
//! - **Connection cap**: accepting waits for a free slot; each port has its own, so a
//!   flood on one never takes another's.
//! - **First request**: its head must arrive within `header_read_timeout` after the
//!   connection is set up (HTTP/1.1 and h2 alike; an h2 client that only answers
//!   PINGs does not count).
//! - **Idle**: a connection with no request in flight is closed after `idle_timeout`,
//!   whatever control frames (PING, SETTINGS) it exchanges; one with a request in
//!   flight is closed when no byte has moved either way for `idle_timeout`.
//! - **HTTP/1.1 framing**: [`framing::FramingGuard`] refuses `Content-Length` with
//!   `Transfer-Encoding` below hyper (400, closed).
//! - **h2**: concurrent streams, header list size, and h2's own flood protections set
//!   explicitly: reset streams pending accept (rapid reset, CVE-2023-44487), locally
//!   reset streams, CONTINUATION frames per header block (bounded by the header list
//!   size), one pending PING answer and one pending SETTINGS acknowledgement at a
//!   time (reading stops until they are written).
//!
//! The watchdog counts requests with two atomic adds per request (no clock read, no
//! lock, no allocation) and checks them from a timer per connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{Limits, ProxyProtocol};
use crate::proxy::BoxError;
use crate::proxy::framing::{FramingGuard, H2_PREFACE, Verdict};
use crate::proxy::listener::read_proxy_header;
use crate::proxy::workers::Workers;

/// How long in-flight requests may finish after shutdown starts.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// After the watchdog closes a connection (h2 GOAWAY), how long the peer has to let go.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Resets of streams the server has not yet accepted, per connection, before GOAWAY
/// `ENHANCE_YOUR_CALM` (h2's answer to rapid reset; its default, stated here).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server resets because the client broke the protocol, per connection.
const H2_MAX_LOCAL_RESETS: usize = 1024;

/// What differs between ports.
pub struct Port {
    /// The `listener` label of `keygate_connections_active`.
    pub name: &'static str,
    pub max_connections: usize,
    pub tls: Option<TlsAcceptor>,
    pub proxy_protocol: ProxyProtocol,
    /// Peers that may connect (the authz listener's `allow_from`); empty: any peer.
    /// Others are closed at accept, before a byte is read.
    pub allow_from: Vec<IpNet>,
    /// Where connections are served: on the data plane's workers (each connection on
    /// one worker, round robin), or, when `None`, on the runtime that accepts.
    pub workers: Option<Arc<Workers>>,
}

/// Per-connection limits, read when a connection is accepted (so the data plane's
/// follow SIGHUP reloads).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    /// hyper's buffer for a request head (and h2's header list limit): the configured
    /// header and URI limits plus slack, so that a request slightly over them still
    /// parses and gets the pipeline's JSON 414/431.
    pub max_head_bytes: usize,
}

impl From<&Limits> for ConnLimits {
    fn from(l: &Limits) -> Self {
        ConnLimits {
            header_read_timeout: l.header_read_timeout,
            idle_timeout: l.idle_timeout,
            tls_handshake_timeout: l.tls_handshake_timeout,
            h2_max_concurrent_streams: l.h2_max_concurrent_streams,
            max_head_bytes: (l.max_header_bytes + l.max_uri_bytes + 4096).max(8192),
        }
    }
}

/// hyper's HTTP/1.1 settings for one connection.
fn http1_builder(limits: &ConnLimits) -> http1::Builder {
    let mut b = http1::Builder::new();
    // No hyper `header_read_timeout`: hyper arms it while a kept-alive connection
    // waits for its next request, which would cut keep-alive to header_read_timeout.
    // The watchdog times heads instead (the first request's, and any begun later).
    // hyper's default (30 s whenever a timer is set) must be turned off explicitly:
    // left on, it closed every kept-alive connection idle for 30 s whatever
    // `idle_timeout` said, and armed a timer (a boxed `Sleep`) for every request.
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_head_bytes)
        .max_headers(256)
        .keep_alive(true);
    b
}

/// hyper's h2 settings for one connection.
fn http2_builder(limits: &ConnLimits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Http {
    H1,
    H2,
}

/// The version TLS negotiated (ALPN). Without ALPN, HTTP/1.1: h2 over TLS is only
/// ever negotiated (RFC 9113 §3.3).
fn negotiated(alpn: Option<&[u8]>) -> Http {
    match alpn {
        Some(b"h2") => Http::H2,
        _ => Http::H1,
    }
}

/// A cleartext connection's version from its first bytes: h2 with prior knowledge
/// starts with the connection preface (RFC 9113 §3.4). `None`: not decided yet (the
/// bytes are a proper beginning of the preface).
fn sniffed(first: &[u8]) -> Option<Http> {
    if !H2_PREFACE.starts_with(first) {
        Some(Http::H1)
    } else if first.len() == H2_PREFACE.len() {
        Some(Http::H2)
    } else {
        None
    }
}

/// How often a cleartext connection that sent part of the h2 preface is looked at again.
const SNIFF_RETRY: Duration = Duration::from_millis(5);

/// A cleartext connection's version, from its first bytes looked at in the socket and
/// left there: hyper then reads the request whole from the socket. (hyper-util's
/// `auto` builder reads them first and hands them back separately, which made hyper
/// see a partial head and double its read buffer for every connection.)
async fn sniff(tcp: &TcpStream) -> io::Result<Http> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = tcp.peek(&mut first).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed by the client",
            ));
        }
        if let Some(http) = sniffed(&first[..n]) {
            return Ok(http);
        }
        // Rare (an h2 preface split across packets): `peek` answers at once while
        // the bytes wait, so look again shortly. The caller bounds the whole wait.
        tokio::time::sleep(SNIFF_RETRY).await;
    }
}

/// A served connection as [`Connection::drive`] needs it: hyper's HTTP/1.1 or h2
/// connection future, which can be told to finish gracefully.
trait Served: Future<Output = hyper::Result<()>> {
    fn shut_down(self: Pin<&mut Self>);
}

impl<I, S, B> Served for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: HttpBody + 'static,
    B::Error: Into<BoxError>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Served for Pin<Box<http2::Connection<I, S, TokioExecutor>>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.get_mut().as_mut().graceful_shutdown();
    }
}

/// Accepts and serves connections on one port until `shutdown` turns true, then
/// drains them (at most [`DRAIN_DEADLINE`]). `limits` is asked once per connection;
/// `service` makes the connection's service from the client address (the PROXY
/// header's source when configured).
pub async fn serve<L, M, S, B>(
    listener: TcpListener,
    port: Port,
    gauge: IntGauge,
    limits: L,
    service: M,
    mut shutdown: watch::Receiver<bool>,
) where
    L: Fn() -> ConnLimits,
    M: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let service = Arc::new(service);
    let slots = Arc::new(Semaphore::new(port.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = port.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if !port.allow_from.is_empty()
            && !crate::policy::ip::is_trusted(
                crate::policy::ip::canonical(peer.ip()),
                &port.allow_from,
            )
        {
            tracing::warn!(listener = port.name, %peer, "connection refused: the peer is not in allow_from");
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            limits: limits(),
            tls: port.tls.clone(),
            proxy_protocol: port.proxy_protocol,
            stop: shutdown.clone(),
            name: port.name,
        };
        let gauge = gauge.clone();
        let service = service.clone();
        match &port.workers {
            None => {
                tokio::spawn(async move {
                    let _permit = permit;
                    gauge.inc();
                    conn.run(tcp, peer, &*service).await;
                    gauge.dec();
                });
            }
            Some(workers) => {
                // The socket moves to the worker's own reactor.
                let std = match tcp.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(listener = port.name, error = %e, "cannot hand the connection to a worker");
                        continue;
                    }
                };
                workers.pick().spawn(async move {
                    let _permit = permit;
                    let tcp = match TcpStream::from_std(std) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(error = %e, "a worker could not take a connection");
                            return;
                        }
                    };
                    gauge.inc();
                    conn.run(tcp, peer, &*service).await;
                    gauge.dec();
                });
            }
        }
    }
    drop(listener);
    // Every connection task holds a slot: all slots back means all connections closed.
    let all = u32::try_from(port.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_DEADLINE + CLOSE_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = port.name,
            "some connections were still open at the drain deadline"
        );
    }
}

/// One accepted connection, before and while it is served.
struct Connection {
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    proxy_protocol: ProxyProtocol,
    /// Turns true at shutdown: finish the requests in flight, then close.
    stop: watch::Receiver<bool>,
    name: &'static str,
}

impl Connection {
    async fn run<M, S, B>(self, mut tcp: TcpStream, peer: SocketAddr, service: &M)
    where
        M: Fn(SocketAddr) -> S,
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let limits = &self.limits;
        // The PROXY header is part of the first request's head time.
        let proxy_header = read_proxy_header(&mut tcp, self.proxy_protocol, peer);
        let Some(client) = self
            .bounded(
                peer,
                "PROXY header",
                limits.header_read_timeout,
                proxy_header,
            )
            .await
        else {
            return;
        };
        let svc = service(client);
        match &self.tls {
            // The handshake and the TLS stream are boxed: they are large, and a task is
            // as large as the largest state of its future, so cleartext connections
            // would pay for them too (and a stream moved by value takes its room in
            // each future it passes through).
            Some(acceptor) => {
                let handshake = Box::pin(async { acceptor.accept(tcp).await.map(Box::new) });
                let Some(stream) = self
                    .bounded(
                        peer,
                        "TLS handshake",
                        limits.tls_handshake_timeout,
                        handshake,
                    )
                    .await
                else {
                    return;
                };
                let http = negotiated(stream.get_ref().1.alpn_protocol());
                self.serve_http(stream, svc, http, Duration::ZERO).await
            }
            None => {
                // The wait for the first bytes is part of the first request's head
                // time: the watchdog is told how long it took.
                let began = tokio::time::Instant::now();
                let mut stop = self.stop.clone();
                let first =
                    self.bounded(peer, "first bytes", limits.header_read_timeout, sniff(&tcp));
                let http = tokio::select! {
                    http = first => match http {
                        Some(http) => http,
                        None => return,
                    },
                    _ = stop.changed() => return,
                };
                self.serve_http(tcp, svc, http, began.elapsed()).await
            }
        }
    }

    /// One step before hyper takes over, bounded by `limit`: its value, or `None` when
    /// it failed or timed out (logged: why the connection closed).
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        peer: SocketAddr,
        step: &'static str,
        limit: Duration,
        work: impl Future<Output = Result<T, E>>,
    ) -> Option<T> {
        match tokio::time::timeout(limit, work).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::debug!(listener = self.name, %peer, step, error = %e, "connection closed before its first request");
                None
            }
            Err(_) => {
                tracing::debug!(listener = self.name, %peer, step, "connection closed before its first request: timed out");
                None
            }
        }
    }

    /// hyper on the stream, speaking `http`, with the watchdog beside it. `spent`: how
    /// much of the first request's head time has passed already.
    async fn serve_http<T, S, B>(self, stream: T, svc: S, http: Http, spent: Duration)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Watched {
            inner: stream,
            guard: FramingGuard::new(self.limits.max_head_bytes),
            activity: activity.clone(),
        });
        let svc = Tracked {
            inner: svc,
            activity: activity.clone(),
        };
        // Each version's connection in its own branch, h2's boxed: an HTTP/1.1
        // connection's task holds only what HTTP/1.1 needs.
        match http {
            Http::H1 => {
                let conn = pin!(http1_builder(&self.limits).serve_connection(io, svc));
                self.drive(conn, &activity, spent).await
            }
            Http::H2 => {
                let conn = pin!(Box::pin(
                    http2_builder(&self.limits).serve_connection(io, svc)
                ));
                self.drive(conn, &activity, spent).await
            }
        }
    }

    /// Serves `conn` until it ends, shutdown starts, or the watchdog closes it. (`conn`
    /// comes pinned: an argument moved into a pinned local would take its room twice
    /// in the connection's task.)
    async fn drive<C: Served>(
        mut self,
        mut conn: Pin<&mut C>,
        activity: &Activity,
        spent: Duration,
    ) {
        let mut watchdog = Watchdog::new(&self.limits, spent);
        let mut tick = tokio::time::interval(watchdog.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let grace = loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.stop.changed() => break DRAIN_DEADLINE,
                _ = tick.tick() => {
                    if let Some(why) = watchdog.check(activity) {
                        tracing::debug!(listener = self.name, why, "closing connection");
                        break CLOSE_GRACE;
                    }
                }
            }
        };
        // h2: GOAWAY, then close once the streams in flight are done; HTTP/1.1: close
        // after the response in flight.
        conn.as_mut().shut_down();
        let _ = tokio::time::timeout(grace, conn.as_mut()).await;
    }
}

/// What the watchdog sees of a connection, updated by the request path and the
/// stream without locks.
#[derive(Debug, Default)]
struct Activity {
    /// High 32 bits: requests started or finished (an event count); low 32 bits:
    /// requests in flight. One atomic add per start and per finish.
    requests: AtomicU64,
    /// Bumped by every read or write that moved bytes.
    io: AtomicU32,
    /// An HTTP/1.1 request head has begun to arrive and is not complete.
    head_pending: AtomicBool,
}

const EVENT: u64 = 1 << 32;

impl Activity {
    fn started(&self) {
        self.requests.fetch_add(EVENT + 1, Ordering::Relaxed);
    }

    fn finished(&self) {
        // One more event, one fewer in flight.
        self.requests.fetch_add(EVENT - 1, Ordering::Relaxed);
    }

    fn moved(&self) {
        // Only this connection's task writes it: a plain increment is enough.
        let n = self.io.load(Ordering::Relaxed);
        self.io.store(n.wrapping_add(1), Ordering::Relaxed);
    }
}

/// The per-connection timer's view: how long the connection has gone without a
/// request event (or, with a request in flight, without a byte moving).
struct Watchdog {
    period: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    last_requests: u64,
    last_io: u32,
    /// Time since the last request event (or the start).
    quiet: Duration,
    /// Time since bytes last moved.
    still: Duration,
    /// How long a started request head has been incomplete.
    head_for: Duration,
}

impl Watchdog {
    /// `spent`: time the connection already waited for its first request.
    fn new(limits: &ConnLimits, spent: Duration) -> Self {
        // A close comes at most a quarter of the timeout late.
        let shortest = limits.header_read_timeout.min(limits.idle_timeout);
        Watchdog {
            period: (shortest / 4).max(Duration::from_millis(10)),
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            last_requests: 0,
            last_io: 0,
            quiet: spent,
            still: Duration::ZERO,
            head_for: Duration::ZERO,
        }
    }

    /// One tick: `Some(reason)` when the connection must close.
    fn check(&mut self, activity: &Activity) -> Option<&'static str> {
        let requests = activity.requests.load(Ordering::Relaxed);
        let io = activity.io.load(Ordering::Relaxed);
        let head = activity.head_pending.load(Ordering::Relaxed);
        self.observe(requests, io, head)
    }

    /// `head_pending`: part of an HTTP/1.1 request head is in and its end is not.
    fn observe(&mut self, requests: u64, io: u32, head_pending: bool) -> Option<&'static str> {
        if head_pending {
            self.head_for += self.period;
        } else {
            self.head_for = Duration::ZERO;
        }
        if requests == self.last_requests {
            self.quiet += self.period;
        } else {
            self.last_requests = requests;
            self.quiet = Duration::ZERO;
        }
        if io == self.last_io {
            self.still += self.period;
        } else {
            self.last_io = io;
            self.still = Duration::ZERO;
        }
        let in_flight = requests & (EVENT - 1);
        if in_flight > 0 {
            return (self.still >= self.idle_timeout)
                .then_some("no bytes moved while a request was in flight");
        }
        if requests == 0 {
            return (self.quiet >= self.header_read_timeout)
                .then_some("no request within header_read_timeout");
        }
        // A kept-alive connection: idle until `idle_timeout`, but a head once begun
        // must be complete within `header_read_timeout` (slow headers).
        if self.head_for >= self.header_read_timeout {
            return Some("a request head not complete within header_read_timeout");
        }
        (self.quiet >= self.idle_timeout).then_some("idle")
    }
}

/// The client stream as hyper sees it: counts moved bytes for the watchdog and runs
/// the HTTP/1.1 framing guard on what is read.
struct Watched<T> {
    inner: T,
    guard: FramingGuard,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() > before
        {
            this.activity.moved();
            if this.guard.scan(&mut buf.filled_mut()[before..]) == Verdict::Refused {
                tracing::debug!("request with both Content-Length and Transfer-Encoding refused");
            }
            this.activity
                .head_pending
                .store(this.guard.head_pending(), Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A port's service, counting each request as in flight from its head until its
/// response body is done (or dropped).
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

/// Holds a request "in flight" while alive.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.started();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished();
    }
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        TrackedFuture {
            in_flight: Some(InFlight::new(&self.activity)),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                let in_flight = this.in_flight.take();
                Poll::Ready(r.map(|resp| {
                    resp.map(|body| TrackedBody {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until hyper drops it.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: HttpBody> HttpBody for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header: u64, idle: u64) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(header),
            idle_timeout: Duration::from_secs(idle),
            tls_handshake_timeout: Duration::from_secs(1),
            h2_max_concurrent_streams: 10,
            max_head_bytes: 8192,
        }
    }

    /// One tick's observation: `(requests, io)` or `(requests, io, head_pending)`.
    trait Feed {
        fn parts(self) -> (u64, u32, bool);
    }
    impl Feed for (u64, u32) {
        fn parts(self) -> (u64, u32, bool) {
            (self.0, self.1, false)
        }
    }
    impl Feed for (u64, u32, bool) {
        fn parts(self) -> (u64, u32, bool) {
            self
        }
    }

    /// Ticks until the watchdog closes, feeding `(requests, io)` per tick; returns the
    /// tick count.
    fn ticks_until_close<F: Feed>(w: &mut Watchdog, mut feed: impl FnMut(u32) -> F) -> u32 {
        for t in 1..=1000 {
            let (r, io, head) = feed(t).parts();
            if w.observe(r, io, head).is_some() {
                return t;
            }
        }
        panic!("never closed");
    }

    #[test]
    fn watchdog_timeouts() {
        // header_read_timeout 4 s (period 1 s): no request, bytes moving (PINGs) → 4 ticks.
        let mut w = Watchdog::new(&limits(4, 8), Duration::ZERO);
        assert_eq!(ticks_until_close(&mut w, |t| (0, t)), 4);
        // Time spent before hyper took over (a cleartext connection's first bytes)
        // counts against the first request.
        let mut w = Watchdog::new(&limits(4, 8), Duration::from_secs(3));
        assert_eq!(ticks_until_close(&mut w, |t| (0, t)), 1);
        // A request done at tick 1, then only PINGs: idle 8 s after it.
        let mut w = Watchdog::new(&limits(4, 8), Duration::ZERO);
        let done = 2 * EVENT;
        assert_eq!(
            ticks_until_close(&mut w, |t| (if t == 1 { EVENT + 1 } else { done }, t)),
            10
        );
        // A request in flight with bytes moving is never closed; stalled, after idle.
        let mut w = Watchdog::new(&limits(4, 8), Duration::ZERO);
        for t in 0..100 {
            assert_eq!(w.observe(EVENT + 1, t, false), None);
        }
        assert_eq!(ticks_until_close(&mut w, |_| (EVENT + 1, 99)), 8);
        // Kept alive after a request: idle for idle_timeout, not header_read_timeout.
        let mut w = Watchdog::new(&limits(4, 8), Duration::ZERO);
        w.observe(EVENT + 1, 1, false);
        // (The request finishes at the first tick: idle from there.)
        assert_eq!(ticks_until_close(&mut w, |_| (done, 2)), 9);
        // ... but a next head begun and left incomplete (slow headers, bytes still
        // trickling in) closes after header_read_timeout.
        let mut w = Watchdog::new(&limits(4, 8), Duration::ZERO);
        w.observe(EVENT + 1, 1, false);
        assert_eq!(ticks_until_close(&mut w, |t| (done, t + 2, true)), 4);
        // A head that completes in time resets the count.
        let mut w = Watchdog::new(&limits(4, 8), Duration::ZERO);
        w.observe(EVENT + 1, 1, false);
        for t in 0..3 {
            assert_eq!(w.observe(done, t, true), None);
        }
        assert_eq!(w.observe(3 * EVENT + 1, 4, false), None);
        assert_eq!(w.observe(3 * EVENT + 1, 5, true), None);
    }

    #[test]
    fn the_version_comes_from_alpn_or_the_first_bytes() {
        // TLS: h2 only when negotiated.
        assert_eq!(negotiated(Some(b"h2")), Http::H2);
        assert_eq!(negotiated(Some(b"http/1.1")), Http::H1);
        assert_eq!(negotiated(None), Http::H1);
        // Cleartext: the whole preface is h2; any byte off it is HTTP/1.1 at once
        // (`POST` parts from `PRI` at its second byte); a proper beginning waits.
        let cases: &[(&[u8], Option<Http>)] = &[
            (H2_PREFACE, Some(Http::H2)),
            (b"GET / HTTP/1.1\r\n", Some(Http::H1)),
            (b"PO", Some(Http::H1)),
            (b"PRI * HTTP/1.1\r\n", Some(Http::H1)),
            (b"\r\n", Some(Http::H1)),
            (b"P", None),
            (b"PRI * HTTP/2.0\r\n", None),
            (&H2_PREFACE[..H2_PREFACE.len() - 1], None),
        ];
        for (first, want) in cases {
            assert_eq!(
                sniffed(first),
                *want,
                "{:?}",
                String::from_utf8_lossy(first)
            );
        }
    }

    #[test]
    fn activity_counts_in_flight_and_events() {
        let a = Activity::default();
        a.started();
        a.started();
        a.finished();
        let r = a.requests.load(Ordering::Relaxed);
        assert_eq!(r & (EVENT - 1), 1);
        assert_eq!(r >> 32, 3);
    }
}
