//! The PROXY protocol header (v1 or v2) at the start of a connection, read by the
//! acceptor before TLS (bounded by `header_read_timeout` there).
//!
//! Nothing here reads HTTP; a connection whose header is missing or malformed is
//! closed without a response, before a request exists.

use std::io;
use std::net::SocketAddr;

use ppp::PartialResult;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

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
