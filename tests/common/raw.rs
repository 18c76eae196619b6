//! A raw HTTP/1.1 client: writes bytes exactly as given, over plain TCP or TLS (without
//! certificate checks), and parses the responses. reqwest normalises paths such as
//! `//` and `/a/../b` and refuses malformed headers, so everything about exact bytes on
//! the wire goes through here.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::reply::Reply;

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How a read on a raw connection ended without a full response.
#[derive(Debug, PartialEq, Eq)]
pub enum RawEnd {
    /// The peer closed (FIN) or reset the connection.
    Closed,
    /// Nothing (complete) arrived in time.
    TimedOut,
}

pub struct RawConn {
    io: Pin<Box<dyn Io>>,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    pub async fn plain(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect to keygate");
        s.set_nodelay(true).ok();
        Self::from_io(Box::pin(s))
    }

    /// TLS without certificate checks, offering only `http/1.1` by ALPN.
    pub async fn tls(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect to keygate");
        s.set_nodelay(true).ok();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(insecure_client_config(vec![
            b"http/1.1".to_vec(),
        ])));
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, s))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake with keygate");
        Self::from_io(Box::pin(tls))
    }

    fn from_io(io: Pin<Box<dyn Io>>) -> Self {
        RawConn {
            io,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes bytes; returns false when the peer has already gone.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Reads more bytes into the buffer; false on EOF, error or timeout.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> Result<(), RawEnd> {
        if self.eof {
            return Err(RawEnd::Closed);
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
            Err(_) => Err(RawEnd::TimedOut),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                Err(RawEnd::Closed)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// Waits until the peer closes the connection (EOF or reset), discarding data.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<(), RawEnd> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.fill(deadline).await {
                Ok(()) => self.buf.clear(),
                Err(RawEnd::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one response (an interim 1xx counts as one). Bounded by `timeout`; on a
    /// timeout nothing is consumed, so the read can be retried.
    pub async fn read_response(&mut self, timeout: Duration) -> Result<Reply, RawEnd> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((reply, used)) = parse_response(&self.buf, self.eof) {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if self.eof {
                return Err(RawEnd::Closed);
            }
            match self.fill(deadline).await {
                Ok(()) | Err(RawEnd::Closed) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Parses one complete response from the start of `buf`; `None` while incomplete.
/// A body without length or chunking is complete only at `eof`.
fn parse_response(buf: &[u8], eof: bool) -> Option<(Reply, usize)> {
    let head_end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line from keygate: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut reply = Reply {
        status,
        version: match version.as_str() {
            "HTTP/1.0" => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        },
        headers,
        body: Vec::new(),
    };
    let body_start = head_end + 4;
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((reply, body_start));
    }
    let chunked = reply
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let (body, used) = parse_chunked(&buf[body_start..])?;
        reply.body = body;
        return Some((reply, body_start + used));
    }
    if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().expect("content-length from keygate");
        if buf.len() < body_start + len {
            return None;
        }
        reply.body = buf[body_start..body_start + len].to_vec();
        return Some((reply, body_start + len));
    }
    if !eof {
        return None;
    }
    reply.body = buf[body_start..].to_vec();
    Some((reply, buf.len()))
}

/// Decodes a complete chunked body (with trailers); `None` while incomplete.
fn parse_chunked(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let size_line = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size from keygate: {size_line:?}"));
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = at + find(&buf[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A rustls client config that accepts any server certificate (keygate's self-signed
/// development certificate), with the given ALPN protocols.
pub fn insecure_client_config(alpn: Vec<Vec<u8>>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    config
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
