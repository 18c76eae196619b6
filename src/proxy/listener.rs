//! Accepting client connections: the connection cap, the PROXY protocol header, the TLS
//! handshake (each bounded in time), and an idle timeout on the stream.
//!
//! Nothing here reads HTTP; a connection that fails any step is closed without a
//! response, before a request exists.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ppp::PartialResult;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::ProxyProtocol;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header the spec allows.
const V1_MAX: usize = 107;

/// Reads the PROXY protocol header, if configured, and returns the client address it
/// names (the TCP peer for `LOCAL`/`UNKNOWN` headers). A missing or malformed header is
/// an error: with `proxy_protocol` on, every connection must come through the proxy.
pub async fn read_proxy_header(
    tcp: &mut TcpStream,
    version: ProxyProtocol,
    peer: SocketAddr,
) -> io::Result<SocketAddr> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    match version {
        ProxyProtocol::Off => Ok(peer),
        ProxyProtocol::V2 => {
            let mut head = [0u8; 16];
            tcp.read_exact(&mut head).await?;
            if &head[..12] != V2_SIGNATURE {
                return Err(bad("expected a PROXY protocol v2 header"));
            }
            let len = u16::from_be_bytes([head[14], head[15]]) as usize;
            let mut buf = Vec::with_capacity(16 + len);
            buf.extend_from_slice(&head);
            buf.resize(16 + len, 0);
            tcp.read_exact(&mut buf[16..]).await?;
            let h = ppp::v2::Header::try_from(&buf[..])
                .map_err(|_| bad("malformed PROXY protocol v2 header"))?;
            if h.command == ppp::v2::Command::Local {
                return Ok(peer);
            }
            Ok(match h.addresses {
                ppp::v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
                ppp::v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
                _ => peer,
            })
        }
        ProxyProtocol::V1 => {
            let mut buf = Vec::with_capacity(V1_MAX);
            // Byte by byte so that nothing after the header is consumed; v1 headers are
            // short and this happens once per connection.
            loop {
                let b = tcp.read_u8().await?;
                buf.push(b);
                if buf.ends_with(b"\r\n") {
                    break;
                }
                if buf.len() >= V1_MAX || !b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
                    return Err(bad("expected a PROXY protocol v1 header"));
                }
            }
            let r = ppp::v1::Header::try_from(&buf[..]);
            if r.is_incomplete() {
                return Err(bad("truncated PROXY protocol v1 header"));
            }
            let h = r.map_err(|_| bad("malformed PROXY protocol v1 header"))?;
            Ok(match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
                ppp::v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
                ppp::v1::Addresses::Unknown => peer,
            })
        }
    }
}

/// A stream that fails reads once neither direction has moved for `timeout`: closes
/// idle keep-alive connections (HTTP/1.1 and h2 alike).
pub struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn touch(&mut self) {
        self.sleep.as_mut().reset(Instant::now() + self.timeout);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
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
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

use std::future::Future;
