//! keygate's own HTTP/1.1 client for the common exchange: a request without a body
//! to a plain-HTTP upstream. The request's task writes the head and reads the
//! response on the connection itself, and the response body reads from the same
//! connection as the client's connection asks for it: no connection task, no
//! channels, no wake-ups between tasks (hyper's client costs a bare proxy ~11,000
//! instructions and 3–4 µs of CPU per request more; docs/benchmarks.md, session 11).
//!
//! Everything else (a request body, an HTTPS upstream, `CONNECT`) goes through
//! hyper's client ([`pool`](crate::proxy::pool)). What this client accepts of a
//! response is what hyper's does with its defaults: at most [`MAX_HEADERS`] header
//! lines and a [`MAX_HEAD`]-byte head, no obsolete line folding, one `Content-Length`
//! value (repeats must agree), `Transfer-Encoding` winning over `Content-Length`
//! (the connection is then not reused), informational responses skipped, and no
//! body after `HEAD`, 204 or 304. Anything malformed is an error: the request is
//! answered 502 before its response starts, or the client's connection is cut if
//! the body goes wrong midway. A connection is reused only after a response read to
//! its end, with nothing after it, from an HTTP/1.1 upstream that did not say
//! `Connection: close`; a request is never sent twice.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::hop_by_hop_index;
use crate::proxy::framing::{ends_with_chunked, parse_length};
use crate::proxy::pool::{IDLE_TIMEOUT, MAX_IDLE};

/// Most header lines a response head may have (hyper's client: 100).
pub const MAX_HEADERS: usize = 100;
/// Largest response head, and largest trailer section (hyper's client reads at most
/// ~400 KiB before a head must be complete).
pub const MAX_HEAD: usize = 400 * 1024;
/// Longest chunk-size line.
const MAX_CHUNK_LINE: usize = 4096;
/// Room made in the read buffer when it runs low.
const READ_ROOM: usize = 8 * 1024;
/// Less room than this left in the read buffer is made `READ_ROOM` before a head is
/// read.
const MIN_READ_ROOM: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upstream closed the connection before its response ended")]
    Closed,
    #[error("the upstream's response is malformed: {0}")]
    Malformed(&'static str),
}

/// Where a plain-HTTP origin is dialled.
#[derive(Debug, Clone)]
pub struct Address {
    host: String,
    port: u16,
}

impl Address {
    /// The address of `http://` origin `uri`; `None` for any other scheme.
    pub fn of(uri: &http::Uri) -> Option<Address> {
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        let host = uri.host()?;
        // An IPv6 literal is dialled without its brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(Address {
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(80),
        })
    }
}

/// One upstream connection.
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not used yet.
    buf: BytesMut,
    /// The request head being written (kept for its room).
    out: Vec<u8>,
}

impl Conn {
    /// Dials `addr` within `timeout` (the upstream's `connect_timeout`).
    pub async fn connect(addr: &Address, timeout: Duration) -> Result<Conn, Error> {
        let io = tokio::time::timeout(timeout, TcpStream::connect((addr.host.as_str(), addr.port)))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        io.set_nodelay(true)?;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_ROOM),
            out: Vec::with_capacity(1024),
        })
    }

    /// Whether an idle connection can take a request: the upstream has neither closed
    /// it nor sent anything on it. Looks at the socket only when the runtime has seen
    /// it become readable.
    fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(
                self.io.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Sends a request without a body (its target in origin form; `headers` writes
    /// its header lines, CRLF-terminated, without `Transfer-Encoding`) and reads the
    /// response head.
    pub async fn exchange(
        &mut self,
        method: &Method,
        target: &str,
        headers: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Head, Error> {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        headers(out);
        out.extend_from_slice(b"\r\n");
        self.io.write_all(out).await?;
        let no_body = method == Method::HEAD;
        loop {
            // (Nothing to parse until the upstream has answered.)
            if !self.buf.is_empty()
                && let Some((used, head)) = parse_head(&self.buf, no_body)?
            {
                self.buf.advance(used);
                match head {
                    Some(head) => return Ok(head),
                    // Informational: the final response follows.
                    None => continue,
                }
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Error::Malformed("the response head is too large"));
            }
            self.read().await?;
        }
    }

    async fn read(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_read_into(cx, MIN_READ_ROOM)).await
    }

    /// Reads a body's bytes, with `READ_ROOM` to read into.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_read_into(cx, READ_ROOM)
    }

    /// Reads into the room left in the buffer, made `READ_ROOM` first if less than
    /// `min` is left. A response head (and the small body with it) is read with a small
    /// `min`: into the room left, without a `reserve` (which reclaims the space of
    /// bytes already handed out, or allocates) before every response.
    fn poll_read_into(&mut self, cx: &mut Context<'_>, min: usize) -> Poll<Result<(), Error>> {
        if self.buf.capacity() - self.buf.len() < min {
            self.buf.reserve(READ_ROOM);
        }
        match ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        )) {
            Ok(0) => Poll::Ready(Err(Error::Closed)),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(Error::Io(e))),
        }
    }
}

/// A final response's head.
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    framing: Framing,
    /// The connection may take another request once the body is read.
    keep_alive: bool,
}

/// How the response body is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Nothing more.
    Done,
    /// This many bytes.
    Length(u64),
    /// Chunked: the next chunk-size line.
    ChunkSize,
    /// Chunked: this many bytes of a chunk's data.
    ChunkData(u64),
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: the trailer section after the last chunk.
    Trailers,
    /// Until the upstream closes the connection.
    Close,
}

/// Room for the headers keygate adds to a response (`X-Request-Id`, `RateLimit-*`).
const ADDED_HEADERS: usize = 4;

/// Parses a response head at the start of `buf`: `None` if incomplete; else the bytes
/// it took and the head, `None` for an informational response (skipped).
fn parse_head(buf: &[u8], no_body: bool) -> Result<Option<(usize, Option<Head>)>, Error> {
    // Left uninitialised: httparse writes the lines it finds.
    let mut lines = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let used = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut r, buf, &mut lines)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Malformed("too many header lines"));
        }
        Err(_) => return Err(Error::Malformed("not an HTTP/1.x response head")),
    };
    let code = r.code.ok_or(Error::Malformed("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("bad status code"))?;
    if status.is_informational() {
        // keygate never asks for an upgrade (`Upgrade` is hop-by-hop).
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Malformed(
                "101 Switching Protocols without an upgrade",
            ));
        }
        return Ok(Some((used, None)));
    }
    let mut keep_alive = r.version == Some(1);
    let mut length = None::<u64>;
    let mut encoded = None::<bool>;
    let mut headers = HeaderMap::with_capacity(r.headers.len() + ADDED_HEADERS);
    // Other headers `Connection` names: hop-by-hop too (allocated for only when one is).
    let mut named = Vec::new();
    for line in r.headers.iter() {
        let raw = line.name.as_bytes();
        // Hop-by-hop headers never reach the map: what framing needs is read here.
        if hop_by_hop_index(raw).is_some() {
            if raw.eq_ignore_ascii_case(b"transfer-encoding") {
                // Chunked if it is the last coding of the last value.
                encoded = Some(ends_with_chunked(line.value));
            } else if raw.eq_ignore_ascii_case(b"connection") {
                for token in line.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if !token.is_empty()
                        && hop_by_hop_index(token).is_none()
                        && let Ok(n) = HeaderName::from_bytes(token)
                    {
                        named.push(n);
                    }
                }
            }
            continue;
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| Error::Malformed("bad header name"))?;
        let value = HeaderValue::from_bytes(line.value)
            .map_err(|_| Error::Malformed("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = parse_length(line.value).ok_or(Error::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed("conflicting Content-Length values"));
            }
            length = Some(n);
        }
        headers.append(name, value);
    }
    for n in named {
        headers.remove(n);
    }
    let no_body = no_body || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = match (encoded, length) {
        _ if no_body => Framing::Done,
        (Some(chunked), _) => {
            if length.is_some() {
                // Transfer-Encoding wins; the length is not the body's.
                headers.remove(header::CONTENT_LENGTH);
                keep_alive = false;
            }
            if chunked {
                Framing::ChunkSize
            } else {
                keep_alive = false;
                Framing::Close
            }
        }
        (None, Some(n)) => Framing::Length(n),
        (None, None) => {
            keep_alive = false;
            Framing::Close
        }
    };
    Ok(Some((
        used,
        Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }),
    )))
}

/// One worker's idle connections to one origin.
#[derive(Default)]
pub struct Idle {
    conns: Mutex<Vec<(Conn, Instant)>>,
}

impl Idle {
    /// A usable connection at `now`, newest first; expired and closed ones are dropped.
    pub fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns
            .first()
            .is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
        {
            conns.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
        }
        while let Some((mut conn, _)) = conns.pop() {
            if conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn`, idle since `since`.
    fn give_back(&self, conn: Conn, since: Instant) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() < MAX_IDLE {
            conns.push((conn, since));
        }
    }
}

/// A response body read from the upstream connection as it is asked for; the
/// connection goes back to its idle list once the body has been read to its end.
pub struct ResponseBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    idle: Arc<Idle>,
    /// When the head arrived, while the body has not had to wait for the upstream:
    /// a body that ends before it waits ends then, and the clock is not read again.
    head_at: Option<Instant>,
}

impl ResponseBody {
    /// The body after `head`, which arrived at `head_at`.
    pub fn new(conn: Conn, head: &Head, idle: Arc<Idle>, head_at: Instant) -> Self {
        let mut body = ResponseBody {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
            idle,
            head_at: Some(head_at),
        };
        if matches!(body.framing, Framing::Done | Framing::Length(0)) {
            body.end();
        }
        body
    }

    /// The body ended: the connection goes back if it can take another request.
    fn end(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            let since = self.head_at.unwrap_or_else(Instant::now);
            self.idle.give_back(conn, since);
        }
    }
}

impl ResponseBody {
    /// The body cannot go on: the connection goes with it (its state is unknown).
    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let polled = this.poll_body(cx);
        if polled.is_pending() {
            // It waited: it will end later than its head arrived.
            this.head_at = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl ResponseBody {
    /// [`HttpBody::poll_frame`], but for noting whether the body waited.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let framing = self.framing;
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match framing {
                Framing::Done => {
                    self.end();
                    return Poll::Ready(None);
                }
                Framing::Length(n) | Framing::ChunkData(n) => {
                    if conn.buf.is_empty() {
                        if let Err(e) = ready!(conn.poll_read(cx)) {
                            return self.fail(e);
                        }
                        continue;
                    }
                    let take = n.min(conn.buf.len() as u64);
                    let data = conn.buf.split_to(take as usize).freeze();
                    let rest = n - take;
                    self.framing = match framing {
                        Framing::Length(_) if rest == 0 => Framing::Done,
                        Framing::Length(_) => Framing::Length(rest),
                        _ if rest == 0 => Framing::ChunkEnd,
                        _ => Framing::ChunkData(rest),
                    };
                    if self.framing == Framing::Done {
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_read(cx)) {
                        Ok(()) => continue,
                        // The end of the body is the end of the connection.
                        Err(Error::Closed) => {
                            self.conn = None;
                            self.framing = Framing::Done;
                            return Poll::Ready(None);
                        }
                        Err(e) => return self.fail(e),
                    }
                }
                Framing::ChunkSize => match httparse::parse_chunk_size(&conn.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        conn.buf.advance(used);
                        self.framing = match size {
                            0 => Framing::Trailers,
                            n => Framing::ChunkData(n),
                        };
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() <= MAX_CHUNK_LINE => {
                        if let Err(e) = ready!(conn.poll_read(cx)) {
                            return self.fail(e);
                        }
                    }
                    _ => {
                        return self.fail(Error::Malformed("bad chunk size"));
                    }
                },
                Framing::ChunkEnd => {
                    if conn.buf.len() < 2 {
                        if let Err(e) = ready!(conn.poll_read(cx)) {
                            return self.fail(e);
                        }
                        continue;
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return self.fail(Error::Malformed("no CRLF after a chunk"));
                    }
                    conn.buf.advance(2);
                    self.framing = Framing::ChunkSize;
                }
                Framing::Trailers => {
                    // Trailers are not passed on: the section is read and dropped.
                    let end = if conn.buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        memchr::memmem::find(&conn.buf, b"\r\n\r\n").map(|i| i + 4)
                    };
                    match end {
                        Some(n) => {
                            conn.buf.advance(n);
                            self.end();
                            return Poll::Ready(None);
                        }
                        None if conn.buf.len() > MAX_HEAD => {
                            return self.fail(Error::Malformed("the trailer section is too large"));
                        }
                        None => {
                            if let Err(e) = ready!(conn.poll_read(cx)) {
                                return self.fail(e);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], no_body: bool) -> (usize, Option<Head>) {
        parse_head(bytes, no_body).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_the_response_head() {
        let cases: &[(&[u8], bool, Framing, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                Framing::ChunkSize,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::ChunkSize,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::Close,
                false,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", false, Framing::Close, false),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, Close\r\n\r\n",
                false,
                Framing::Length(5),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Framing::Done,
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Done,
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Done,
                true,
            ),
        ];
        for (bytes, no_body, framing, keep_alive) in cases {
            let (used, h) = head(bytes, *no_body);
            let h = h.unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(h.framing, *framing, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(
                h.keep_alive,
                *keep_alive,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        // A chunked body's length is not passed on.
        let (_, h) = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert!(!h.unwrap().headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_stay_out() {
        let (_, h) = head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal, Upgrade\r\n\
              Keep-Alive: timeout=5\r\nX-Internal: secret\r\nUPGRADE: x\r\n\
              Proxy-Authenticate: Basic\r\nTrailer: T\r\nX-Kept: 1\r\n\
              Content-Length: 2\r\n\r\n",
            false,
        );
        let h = h.unwrap();
        let mut names: Vec<_> = h.headers.keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "x-kept"]);
        assert!(h.keep_alive);
    }

    #[test]
    fn informational_heads_are_skipped_and_partial_ones_wait() {
        assert!(
            head(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false)
                .1
                .is_none()
        );
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Len", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn malformed_heads_are_errors() {
        let bad: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 999999 Odd\r\n\r\n",
        ];
        for bytes in bad {
            assert!(
                parse_head(bytes, false).is_err(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse_head(many.as_bytes(), false).is_err());
    }
}
