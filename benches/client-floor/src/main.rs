//! How cheap can the upstream half of a hyper-served proxy be? The same bare proxy as
//! `../shared/bench/hyper-floor` (MODE=inline: one upstream connection per client
//! connection, one current_thread runtime, one header added), except that the upstream
//! request is written and its response read by a minimal HTTP/1.1 client of its own
//! (the request head formatted straight from the client's `HeaderMap`, the response
//! head parsed by httparse, a `Content-Length` body read into one `Bytes`) instead of
//! hyper's client connection, its task and its channels. A benchmark baseline only:
//! GET without a body, `Content-Length` responses, no error handling, no limits, never
//! for real traffic. LISTEN=127.0.0.1:PORT UPSTREAM=127.0.0.1:PORT
use std::convert::Infallible;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

struct Upstream {
    io: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
    addr: String,
    /// The last response said `Connection: close`: a new connection for the next.
    closing: bool,
}

impl Upstream {
    async fn exchange(&mut self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(req.method().as_str().as_bytes());
        out.push(b' ');
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in req.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-org-id: org_1\r\n\r\n");
        if self.closing {
            self.io = TcpStream::connect(&self.addr).await.unwrap();
            self.io.set_nodelay(true).unwrap();
            self.buf.clear();
            self.closing = false;
        }
        self.io.write_all(out).await.unwrap();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = resp.parse(&self.buf).unwrap() {
                let mut map = HeaderMap::with_capacity(resp.headers.len());
                let mut length = 0usize;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value).unwrap().trim().parse().unwrap();
                    }
                    if h.name.eq_ignore_ascii_case("connection") {
                        self.closing |= h.value.eq_ignore_ascii_case(b"close");
                        continue;
                    }
                    map.append(
                        HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                        HeaderValue::from_bytes(h.value).unwrap(),
                    );
                }
                let status = StatusCode::from_u16(resp.code.unwrap()).unwrap();
                while self.buf.len() < head_len + length {
                    assert!(self.io.read_buf(&mut self.buf).await.unwrap() > 0, "upstream closed");
                }
                self.buf.advance(head_len);
                let body = self.buf.split_to(length).freeze();
                let mut r = Response::new(Full::new(body));
                *r.status_mut() = status;
                *r.headers_mut() = map;
                return r;
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8192);
            }
            assert!(self.io.read_buf(&mut self.buf).await.unwrap() > 0, "upstream closed");
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listen = std::env::var("LISTEN").unwrap();
        let up = std::env::var("UPSTREAM").unwrap();
        let l = TcpListener::bind(&listen).await.unwrap();
        loop {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let up = up.clone();
            tokio::task::spawn_local(async move {
                let io = TcpStream::connect(&up).await.unwrap();
                io.set_nodelay(true).unwrap();
                let upstream = Rc::new(Mutex::new(Upstream {
                    io,
                    buf: BytesMut::with_capacity(8192),
                    out: Vec::with_capacity(1024),
                    addr: up,
                    closing: false,
                }));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let upstream = upstream.clone();
                    async move {
                        let resp = upstream.lock().await.exchange(&req).await;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}
