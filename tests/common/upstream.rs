//! A real HTTP/1.1 upstream (hyper 1) that records every request exactly as keygate
//! forwarded it, so tests can assert what reached the upstream — and, for refusals,
//! that nothing did.
//!
//! It runs on a runtime of its own thread, so it outlives any one test's runtime and is
//! not stalled by a test that blocks (waiting on a child process, sleeping).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};

/// One request as the upstream received it.
#[derive(Clone)]
pub struct Recorded {
    pub method: String,
    /// The request-target exactly as received: path and query.
    pub target: String,
    pub version: http::Version,
    /// Every header line, names lowercased (hyper's form), duplicates kept, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// False while the body is still arriving, or when it ended in an error (aborted).
    pub body_complete: bool,
    /// Set when reading the body failed: the request was aborted mid-body.
    pub body_error: Option<String>,
    /// TLS upstreams: the SNI the client sent.
    pub sni: Option<String>,
    /// TLS upstreams: the client certificate (DER) the client presented.
    pub client_cert: Option<Vec<u8>>,
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        let shown = &self.body[..self.body.len().min(200)];
        f.debug_struct("Recorded")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("version", &self.version)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("body_start", &String::from_utf8_lossy(shown))
            .field("body_complete", &self.body_complete)
            .field("body_error", &self.body_error)
            .field("sni", &self.sni)
            .field("client_cert", &self.client_cert.as_ref().map(Vec::len))
            .finish()
    }
}

impl Recorded {
    /// All values of a header (name compared case-insensitively).
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The value of a header that must appear exactly once.
    pub fn header_one(&self, name: &str) -> String {
        let all = self.header_all(name);
        assert_eq!(
            all.len(),
            1,
            "upstream should see exactly one {name} header, saw {all:?}; all headers: {:?}",
            self.header_names()
        );
        all.into_iter().next().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    pub fn has_header(&self, name: &str) -> bool {
        !self.header_all(name).is_empty()
    }

    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// What the upstream does with the next requests. Changed at any time with `set_mode`.
#[derive(Clone)]
pub enum Mode {
    /// 200 with a small JSON body naming the upstream.
    Ok,
    /// This status with the small JSON body.
    Status(u16),
    /// Wait this long before sending response headers.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Close,
    /// Read the request, then reset the connection (RST).
    Reset,
    /// 200 with a body of this many bytes (`a`..`z` repeating), streamed in 64 KiB chunks.
    LargeBody(usize),
    /// 200; sends `first`, then waits for `gate` before sending `rest` and ending.
    Gated {
        first: Bytes,
        rest: Bytes,
        gate: Arc<Notify>,
    },
    /// 200; streams the request body back as it arrives.
    Echo,
}

struct State {
    name: String,
    mode: Mutex<Mode>,
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    /// Woken whenever a request is recorded or its body grows.
    changed: Notify,
}

pub struct RecordingUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Body = BoxBody<Bytes, Infallible>;

impl RecordingUpstream {
    /// Starts an upstream on 127.0.0.1:0; `name` appears in its default response body.
    pub fn start(name: &str) -> Self {
        Self::start_inner(name, None)
    }

    /// Starts an HTTPS upstream (HTTP/1.1 over TLS with this server config).
    pub fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(name, Some(tls))
    }

    fn start_inner(name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let state = Arc::new(State {
            name: name.to_string(),
            mode: Mutex::new(Mode::Ok),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream on 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("upstream addr");
        let (tx, rx) = oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("upstream runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, st, tls) => {}
                        _ = rx => {}
                    }
                });
                // Connections still open are dropped with the runtime.
                rt.shutdown_background();
            })
            .expect("spawn upstream thread");
        RecordingUpstream {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://localhost:<port>`, so that the client sends SNI.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The last recorded request; panics when there is none.
    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream should have received a request")
    }

    /// Requests whose target or any header value contains `marker`.
    pub fn with_marker(&self, marker: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.target.contains(marker)
                    || r.headers
                        .iter()
                        .any(|(_, v)| String::from_utf8_lossy(v).contains(marker))
            })
            .collect()
    }

    /// Waits (bounded) until `pred` holds for the recorded requests.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Recorded]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            if pred(&self.requests()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out after {timeout:?} waiting for the upstream: {what}; recorded: {:?}",
                    self.requests()
                );
            }
        }
    }

    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the connection told about the client, recorded with each request.
#[derive(Clone, Default)]
struct ConnMeta {
    sni: Option<String>,
    client_cert: Option<Vec<u8>>,
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let mode = state.mode.lock().unwrap().clone();
        if matches!(mode, Mode::Reset) {
            // Dropping a socket with zero linger sends RST instead of FIN.
            let _ = stream.set_zero_linger();
        }
        let st = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve(TokioIo::new(stream), st, ConnMeta::default()).await,
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    let meta = ConnMeta {
                        sni: conn.server_name().map(str::to_string),
                        client_cert: conn
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec()),
                    };
                    serve(TokioIo::new(tls), st, meta).await
                }
            }
        });
    }
}

async fn serve<I>(io: I, state: Arc<State>, meta: ConnMeta)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(req, state.clone(), meta.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

/// The error a service returns to make hyper drop the connection without an answer.
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream hangs up on purpose")
    }
}

impl std::error::Error for Hangup {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    meta: ConnMeta,
) -> Result<Response<Body>, Hangup> {
    let (parts, mut body) = req.into_parts();
    let recorded = Recorded {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.to_string()),
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: Vec::new(),
        body_complete: false,
        body_error: None,
        sni: meta.sni,
        client_cert: meta.client_cert,
    };
    let index = {
        let mut all = state.requests.lock().unwrap();
        all.push(recorded);
        all.len() - 1
    };
    state.changed.notify_waiters();
    let mode = state.mode.lock().unwrap().clone();

    if let Mode::Echo = mode {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let st = state.clone();
        tokio::spawn(async move {
            let ok = read_body(&mut body, &st, index, Some(tx)).await;
            let _ = ok;
        });
        let stream = stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        return Ok(response(StatusCode::OK, StreamBody::new(stream).boxed()));
    }

    read_body(&mut body, &state, index, None).await;

    let small = || {
        Full::new(Bytes::from(format!(
            "{{\"ok\":true,\"upstream\":\"{}\"}}",
            state.name
        )))
        .boxed()
    };
    match mode {
        Mode::Ok | Mode::Echo => Ok(response(StatusCode::OK, small())),
        Mode::Status(s) => Ok(response(
            StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
            small(),
        )),
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(response(StatusCode::OK, small()))
        }
        Mode::Close | Mode::Reset => Err(Hangup),
        Mode::LargeBody(n) => {
            const CHUNK: usize = 64 * 1024;
            let pattern: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let chunks: Vec<Bytes> = pattern.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
            let s = stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, Infallible>(Frame::data(c))),
            );
            Ok(response(StatusCode::OK, StreamBody::new(s).boxed()))
        }
        Mode::Gated { first, rest, gate } => {
            let (tx, rx) = mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let _ = tx.send(first).await;
                gate.notified().await;
                let _ = tx.send(rest).await;
            });
            let s = stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            Ok(response(StatusCode::OK, StreamBody::new(s).boxed()))
        }
    }
}

/// Reads the request body frame by frame into the record (and to `echo`, if any).
async fn read_body(
    body: &mut Incoming,
    state: &State,
    index: usize,
    echo: Option<mpsc::Sender<Bytes>>,
) -> bool {
    loop {
        match body.frame().await {
            None => {
                state.requests.lock().unwrap()[index].body_complete = true;
                state.changed.notify_waiters();
                return true;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    state.requests.lock().unwrap()[index]
                        .body
                        .extend_from_slice(&data);
                    state.changed.notify_waiters();
                    if let Some(tx) = &echo {
                        let _ = tx.send(data).await;
                    }
                }
            }
            Some(Err(e)) => {
                state.requests.lock().unwrap()[index].body_error = Some(e.to_string());
                state.changed.notify_waiters();
                return false;
            }
        }
    }
}

fn response(status: StatusCode, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A loopback port with nothing listening (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
