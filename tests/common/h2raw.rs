//! A raw HTTP/2 client: writes frames exactly as given (floods, resets, half header
//! blocks, PINGs), over TLS with ALPN `h2` or plain h2c with prior knowledge, and
//! reads frames back. HPACK is the smallest useful part: requests are encoded as
//! literals without Huffman; of a response only `:status` is decoded.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::raw::{Io, RawEnd, insecure_client_config};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// GOAWAY / RST_STREAM error codes.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const CANCEL: u32 = 0x8;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `:status` of a HEADERS frame from the server, if it is the block's first field.
    pub fn status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        decode_status(&self.payload)
    }
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK header block of literal fields (never indexed, no Huffman).
pub fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x10);
        hpack_string(&mut out, name.as_bytes());
        hpack_string(&mut out, value.as_bytes());
    }
    out
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u8, mut n: usize) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128 + 128) as u8);
        n /= 128;
    }
    out.push(n as u8);
}

/// The request pseudo-headers and `extra` fields as one header block.
pub fn request_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    hpack(&fields)
}

/// `:status` as the first field of a server header block: an indexed static entry, or
/// a literal with the static name `:status` and a plain or Huffman-coded value.
fn decode_status(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    // Literal with a static name index 8..=14 (all `:status`), 4- or 6-bit prefix.
    let index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&index) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let len = (len_byte & 0x7f) as usize;
    let raw = block.get(2..2 + len)?;
    let text = if len_byte & 0x80 != 0 {
        huffman_digits(raw)?
    } else {
        String::from_utf8(raw.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Decodes a Huffman-coded string of digits (all a status needs): `0`-`2` are 5-bit
/// codes 0-2, `3`-`9` 6-bit codes 0x19-0x1f; the rest is padding of 1 bits.
fn huffman_digits(raw: &[u8]) -> Option<String> {
    let bits: Vec<u8> = raw
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    let take = |at: usize, n: usize| -> Option<u8> {
        let s = bits.get(at..at + n)?;
        Some(s.iter().fold(0, |acc, b| acc << 1 | b))
    };
    while at < bits.len() {
        if bits[at..].iter().all(|&b| b == 1) && bits.len() - at < 8 {
            break;
        }
        let five = take(at, 5)?;
        if five <= 2 {
            out.push((b'0' + five) as char);
            at += 5;
            continue;
        }
        let six = take(at, 6)?;
        if (0x19..=0x1f).contains(&six) {
            out.push((b'3' + (six - 0x19)) as char);
            at += 6;
            continue;
        }
        return None;
    }
    Some(out)
}

pub struct H2Conn {
    io: Pin<Box<dyn Io>>,
    buf: Vec<u8>,
}

impl H2Conn {
    /// TLS offering only `h2`; the server must pick it.
    pub async fn tls(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect to keygate");
        s.set_nodelay(true).ok();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(insecure_client_config(vec![
            b"h2".to_vec(),
        ])));
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, s))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake with keygate");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        H2Conn {
            io: Box::pin(tls),
            buf: Vec::new(),
        }
    }

    /// Plain TCP, h2 with prior knowledge.
    pub async fn plain(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect to keygate");
        s.set_nodelay(true).ok();
        H2Conn {
            io: Box::pin(s),
            buf: Vec::new(),
        }
    }

    /// The client preface and an empty SETTINGS frame.
    pub async fn handshake(&mut self) -> bool {
        let mut out = PREFACE.to_vec();
        out.extend_from_slice(&frame(SETTINGS, 0, 0, &[]));
        self.send(&out).await
    }

    /// Reads until the server's SETTINGS arrives and acknowledges it, so that nothing
    /// needs an answer later.
    pub async fn settle(&mut self) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let f = self.read_frame(end).await.expect("the server's SETTINGS");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                assert!(self.send(&frame(SETTINGS, ACK, 0, &[])).await);
                return;
            }
        }
    }

    /// Writes bytes; false when the peer has gone.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Writes bytes, giving up after `timeout`: `Ok(true)` all written, `Ok(false)` the
    /// peer closed, `Err(())` the write did not finish in time (the peer stopped
    /// reading).
    pub async fn send_within(&mut self, bytes: &[u8], timeout: Duration) -> Result<bool, ()> {
        match tokio::time::timeout(timeout, self.send(bytes)).await {
            Ok(done) => Ok(done),
            Err(_) => Err(()),
        }
    }

    /// The next frame, within `deadline`.
    pub async fn read_frame(&mut self, deadline: Instant) -> Result<Frame, RawEnd> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Ok(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Err(RawEnd::TimedOut),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(RawEnd::Closed),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until the connection closes or `timeout` passes. With `ping_every`,
    /// acknowledges the server's SETTINGS, answers its PINGs and sends a PING of its
    /// own that often, so bytes keep moving both ways; without, only reads. Returns
    /// the frames seen, and whether the connection closed.
    pub async fn ping_until_closed(
        &mut self,
        timeout: Duration,
        ping_every: Option<Duration>,
    ) -> (Vec<Frame>, bool) {
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut next_ping = Instant::now();
        let mut n: u64 = 0;
        while Instant::now() < end {
            if let Some(ping_every) = ping_every
                && Instant::now() >= next_ping
            {
                n += 1;
                if !self.send(&frame(PING, 0, 0, &n.to_be_bytes())).await {
                    return (seen, true);
                }
                next_ping = Instant::now() + ping_every;
            }
            let wake = if ping_every.is_some() {
                next_ping.min(end)
            } else {
                end
            };
            match self.read_frame(wake).await {
                Ok(f) => {
                    let answer = match (f.kind, f.flags & ACK) {
                        _ if ping_every.is_none() => None,
                        (SETTINGS, 0) => Some(frame(SETTINGS, ACK, 0, &[])),
                        (PING, 0) => Some(frame(PING, ACK, 0, &f.payload)),
                        _ => None,
                    };
                    seen.push(f);
                    if let Some(a) = answer
                        && !self.send(&a).await
                    {
                        return (seen, true);
                    }
                }
                Err(RawEnd::Closed) => return (seen, true),
                Err(RawEnd::TimedOut) => {}
            }
        }
        (seen, false)
    }

    /// Reads frames (answering SETTINGS) until the response on `stream` ends: returns
    /// its status, or the RST_STREAM / GOAWAY frame that ended it.
    pub async fn response(&mut self, stream: u32, timeout: Duration) -> Result<u16, Frame> {
        let end = Instant::now() + timeout;
        let mut status = None;
        loop {
            let f = match self.read_frame(end).await {
                Ok(f) => f,
                Err(e) => panic!("no response on stream {stream}: {e:?} (status {status:?})"),
            };
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                let _ = self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                continue;
            }
            if f.kind == GOAWAY || (f.kind == RST_STREAM && f.stream == stream) {
                return Err(f);
            }
            if f.stream != stream {
                continue;
            }
            if f.kind == HEADERS && status.is_none() {
                status = f.status();
            }
            if (f.kind == HEADERS || f.kind == DATA) && f.flags & END_STREAM != 0 {
                return Ok(status.unwrap_or_else(|| panic!("no :status decoded in {f:?}")));
            }
        }
    }
}
