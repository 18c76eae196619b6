//! The HTTP/1.1 framing guard: refuses a request head that carries both
//! `Content-Length` and `Transfer-Encoding` (SPEC §3 "Paths": 400, connection closed).
//!
//! hyper lets `Transfer-Encoding` win and drops `Content-Length` before the request
//! exists (RFC 9112 §6.3 allows it), so the pipeline can never see the conflict. This
//! guard therefore sits *below* hyper, on the bytes it reads: it follows the message
//! framing of the connection (head, then a fixed-length or chunked body, then the next
//! head) and, when a head has both framings, turns the head's last byte into a NUL so
//! that hyper's parser refuses it with its bare 400 and closes the connection.
//!
//! It never changes any other byte, and stops looking (passes everything through) on
//! an h2 connection, an upgrade, or anything it cannot follow: hyper then refuses or
//! serves exactly as without the guard. Per request it costs a look at the name of
//! each header line (hyper parses the head itself), where the line was read: only a
//! line split between two reads is copied, into a buffer kept per connection; body
//! bytes are only counted.

/// The client preface of an h2 connection with prior knowledge (h2c or ALPN h2).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head in `buf`.
    Head,
    /// Skipping this many bytes of a `Content-Length` body.
    Body(u64),
    /// Collecting a chunk-size line in `buf`.
    ChunkSize,
    /// Skipping this many bytes of chunk data (the data and its CRLF).
    ChunkData(u64),
    /// Collecting trailer lines in `buf` until an empty one.
    Trailers,
    /// Not looking any more (h2, upgrade, or a head hyper will refuse itself).
    Pass,
    /// A conflicting head was refused; hyper answers 400 and closes.
    Refused,
}

/// What [`FramingGuard::scan`] did to the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A head with both `Content-Length` and `Transfer-Encoding` ended in these bytes;
    /// its last byte was changed so that hyper refuses it.
    Refused,
}

/// One connection's framing state (see the module doc).
#[derive(Debug)]
pub struct FramingGuard {
    state: State,
    /// A line (of a head, a chunk size or trailers) whose end has not arrived yet;
    /// kept across requests. A line read whole is looked at where it was read.
    buf: Vec<u8>,
    /// The bytes of the head's lines so far (the line in `buf` not counted).
    head_len: usize,
    /// Past this, a head (or a chunk-size or trailer line) is hyper's to refuse
    /// (431): stop looking.
    max_head: usize,
    /// Whether the connection's first head has ended (h2 preface check).
    started: bool,
    /// What the head's lines so far say about its framing.
    head: HeadLines,
}

/// The framing headers of the head being collected, noted line by line (the last of
/// each name, as sent, counts), and whether it upgrades.
#[derive(Debug, Default, Clone, Copy)]
struct HeadLines {
    /// The `Content-Length` value, if it is one ([`parse_length`]).
    length: Option<Option<u64>>,
    /// Whether `chunked` is the last coding of `Transfer-Encoding`.
    transfer_encoding: Option<bool>,
    upgrade: bool,
}

/// The first line of the h2 client preface.
const H2_PREFACE_LINE: &[u8] = H2_PREFACE.split_at(16).0;

impl FramingGuard {
    pub fn new(max_head: usize) -> Self {
        FramingGuard {
            state: State::Head,
            buf: Vec::new(),
            head_len: 0,
            max_head,
            started: false,
            head: HeadLines::default(),
        }
    }

    /// Whether part of a request head has arrived but not its end (HTTP/1.1, before
    /// the guard stops looking). The watchdog times this against
    /// `header_read_timeout`: a kept-alive connection that is merely idle has none.
    pub fn head_pending(&self) -> bool {
        self.state == State::Head && (self.head_len > 0 || !self.buf.is_empty())
    }

    /// Follows `bytes`, the next bytes read from the client, in place.
    pub fn scan(&mut self, bytes: &mut [u8]) -> Verdict {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Pass | State::Refused => return Verdict::Pass,
                State::Body(n) => {
                    let take = n.min((bytes.len() - at) as u64);
                    at += take as usize;
                    self.state = match n - take {
                        0 => State::Head,
                        rest => State::Body(rest),
                    };
                }
                State::ChunkData(n) => {
                    let take = n.min((bytes.len() - at) as u64);
                    at += take as usize;
                    self.state = match n - take {
                        0 => State::ChunkSize,
                        rest => State::ChunkData(rest),
                    };
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    let rest = &bytes[at..];
                    let Some(i) = memchr::memchr(b'\n', rest) else {
                        // The line goes on in the next read: keep what came of it.
                        self.buf.extend_from_slice(rest);
                        at = bytes.len();
                        if self.head_len + self.buf.len() > self.max_head {
                            self.state = State::Pass;
                        }
                        continue;
                    };
                    let end = at + i + 1;
                    let verdict = if self.buf.is_empty() {
                        self.line(&bytes[at..end])
                    } else {
                        self.buf.extend_from_slice(&bytes[at..end]);
                        let line = std::mem::take(&mut self.buf);
                        let verdict = self.line(&line);
                        self.buf = line;
                        self.buf.clear();
                        verdict
                    };
                    at = end;
                    if verdict == Verdict::Refused {
                        // The head's last byte is the LF just read, in this slice.
                        bytes[at - 1] = 0;
                        return Verdict::Refused;
                    }
                }
            }
        }
        Verdict::Pass
    }

    /// A whole line (its LF included) of a head, a chunk size or trailers.
    fn line(&mut self, line: &[u8]) -> Verdict {
        let size = self.head_len + line.len();
        if size > self.max_head {
            self.state = State::Pass;
            return Verdict::Pass;
        }
        let empty = line == b"\r\n" || line == b"\n";
        match self.state {
            // An empty line before any request line ends an empty head, which frames
            // nothing: it is skipped (RFC 9112 §2.2, as httparse does).
            State::Head if empty => self.head_done(),
            State::Head => {
                let first = self.head_len == 0;
                self.head_len = size;
                if first && !self.started && line == H2_PREFACE_LINE {
                    // h2 with prior knowledge: not HTTP/1.1 framing.
                    self.state = State::Pass;
                } else {
                    self.head_line(line, first);
                }
                Verdict::Pass
            }
            State::ChunkSize => {
                self.state = match httparse::parse_chunk_size(line) {
                    Ok(httparse::Status::Complete((_, 0))) => State::Trailers,
                    // The data, then its CRLF.
                    Ok(httparse::Status::Complete((_, n))) => State::ChunkData(n + 2),
                    // hyper refuses the same line.
                    _ => State::Pass,
                };
                Verdict::Pass
            }
            State::Trailers => {
                if empty {
                    self.state = State::Head;
                }
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }

    /// Notes one line of a head: the request line (`CONNECT`), or a header that
    /// frames the message. Any other line, malformed ones included, is passed over: a
    /// head hyper's parser refuses is refused and its connection closed whatever the
    /// guard decides about it.
    fn head_line(&mut self, line: &[u8], first: bool) {
        if first {
            self.head.upgrade = line.starts_with(b"CONNECT ");
            return;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            self.head.length = Some(parse_length(value));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encoding = Some(ends_with_chunked(value));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.head.upgrade = true;
        }
    }

    /// The head's empty line arrived: how its body is framed decides what follows.
    fn head_done(&mut self) -> Verdict {
        self.started = true;
        self.head_len = 0;
        let head = std::mem::take(&mut self.head);
        self.state = match (head.length, head.transfer_encoding) {
            (Some(_), Some(_)) => State::Refused,
            _ if head.upgrade => State::Pass,
            (None, Some(true)) => State::ChunkSize,
            // Not chunked last: hyper refuses it.
            (None, Some(false)) => State::Pass,
            (Some(length), None) => match length {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Pass,
            },
            (None, None) => State::Head,
        };
        if self.state == State::Refused {
            Verdict::Refused
        } else {
            Verdict::Pass
        }
    }
}

/// Whether `chunked` is the last transfer coding (as hyper decides).
pub(crate) fn ends_with_chunked(v: &[u8]) -> bool {
    let last = v.rsplit(|&b| b == b',').next().unwrap_or(v);
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A `Content-Length` value: digits only, around optional whitespace.
pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the bytes as hyper would see
    /// them and whether a head was refused.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut g = FramingGuard::new(64 * 1024);
        let mut out = input.to_vec();
        let mut refused = false;
        for chunk in out.chunks_mut(step.max(1)) {
            refused |= g.scan(chunk) == Verdict::Refused;
        }
        (out, refused)
    }

    #[test]
    fn conflicting_framing_is_refused_in_any_split() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            b"POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 0\n\n",
            // Empty lines before the request line are skipped, not taken for its end.
            b"\r\n\r\nPOST / HTTP/1.1\r\nCONTENT-LENGTH:5\r\nTransfer-Encoding: chunked\r\n\r\n",
            // The second request of a kept-alive connection, after a fixed body.
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            // After a chunked body with an extension and trailers.
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ];
        for input in cases {
            for step in [1, 2, 7, 4096] {
                let (out, refused) = run(input, step);
                assert!(refused, "{:?} step {step}", String::from_utf8_lossy(input));
                assert_eq!(out.last(), Some(&0), "{:?}", String::from_utf8_lossy(input));
                assert_eq!(&out[..out.len() - 1], &input[..input.len() - 1]);
            }
        }
    }

    #[test]
    fn everything_else_passes_untouched() {
        let smuggled = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let n = smuggled.len();
        let cases = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
            // A body that looks like a conflicting head is body, not a head.
            format!(
                "POST / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{smuggled}GET / HTTP/1.1\r\n\r\n"
            ),
            format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{smuggled}\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"
            ),
            format!("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{smuggled}"),
            format!("GET / HTTP/1.1\r\nUpgrade: x\r\n\r\n{smuggled}"),
            format!("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n{smuggled}"),
            // A header whose value names the framing headers frames nothing.
            format!("GET / HTTP/1.1\r\nX-Note: Content-Length: 5\r\nX-Te: Transfer-Encoding: chunked\r\n\r\n{smuggled}")
                .replace(smuggled, "GET / HTTP/1.1\r\n\r\n"),
        ];
        for input in &cases {
            for step in [1, 3, 4096] {
                let (out, refused) = run(input.as_bytes(), step);
                assert!(!refused, "{input:?} step {step}");
                assert_eq!(out, input.as_bytes());
            }
        }
    }
}

/// Property: whatever the head (framing headers in any case and order, repeated,
/// mixed with others, `CONNECT`, any split into reads), the guard refuses exactly the
/// heads httparse parses with both `Content-Length` and `Transfer-Encoding`, and
/// changes no byte but a refused head's last one. httparse is what hyper parses with,
/// so it is the oracle; heads it rejects are hyper's to refuse and not judged here.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn header() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("content-length"),
            Just("transfer-encoding"),
            Just("upgrade"),
            Just("host"),
            Just("x-note"),
            Just("content-lengthx"),
        ];
        let value = prop_oneof![
            Just("0"),
            Just("5"),
            Just("chunked"),
            Just("gzip, chunked"),
            Just("content-length: 5"),
            Just(""),
        ];
        (name, any::<u16>(), value, any::<bool>()).prop_map(|(n, case, v, space)| {
            let n: String = n
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if case & (1 << (i % 16)) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            format!("{n}:{}{v}", if space { " " } else { "" })
        })
    }

    fn oracle(head: &[u8]) -> Option<bool> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            _ => return None,
        }
        let has = |name: &str| {
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name))
        };
        Some(has("content-length") && has("transfer-encoding"))
    }

    /// A request head: a request line, up to `max_headers` of [`header`], lines ended
    /// by CRLF or by LF alone.
    fn head(max_headers: usize) -> impl Strategy<Value = String> {
        (
            prop_oneof![Just("GET"), Just("POST"), Just("CONNECT")],
            proptest::collection::vec(header(), 0..max_headers),
            any::<bool>(),
        )
            .prop_map(|(method, headers, lf_only)| {
                let eol = if lf_only { "\n" } else { "\r\n" };
                let mut head = format!("{method} / HTTP/1.1{eol}");
                for h in &headers {
                    head.push_str(h);
                    head.push_str(eol);
                }
                head.push_str(eol);
                head
            })
    }

    /// What follows `head` on the connection before the next head, if the guard (and
    /// hyper) go on reading heads after it: a fixed-length body of smuggling-shaped
    /// bytes, or a chunked one with a trailer.
    fn body(head: &str) -> Option<String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head.as_bytes()).ok()?;
        let values = |name: &str| {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .collect::<Vec<_>>()
        };
        let (lengths, codings) = (values("content-length"), values("transfer-encoding"));
        if req.method == Some("CONNECT") || !values("upgrade").is_empty() {
            return None;
        }
        let smuggled = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        match (lengths.last(), codings.last()) {
            (None, None) => Some(String::new()),
            (Some(n), None) => {
                let n = parse_length(n)?;
                Some(smuggled.chars().cycle().take(n as usize).collect())
            }
            (None, Some(te)) if ends_with_chunked(te) => Some(format!(
                "{:x}\r\n{smuggled}\r\n0\r\nX-Trailer: 1\r\n\r\n",
                smuggled.len()
            )),
            _ => None,
        }
    }

    proptest! {
        /// Requests kept alive one after another (heads with their bodies, any split):
        /// the guard refuses the first conflicting head, at its last byte, and no
        /// other; bytes inside bodies are never taken for heads.
        #[test]
        fn refuses_the_first_conflicting_head_of_a_connection(
            requests in proptest::collection::vec(head(6), 1..4),
            step in 1usize..60,
        ) {
            let mut input = String::new();
            let mut refused_at = None;
            for head in &requests {
                let Some(conflict) = oracle(head.as_bytes()) else {
                    return Ok(());
                };
                input.push_str(head);
                if conflict {
                    refused_at = Some(input.len() - 1);
                    break;
                }
                let Some(body) = body(head) else {
                    break;
                };
                input.push_str(&body);
            }
            let mut g = FramingGuard::new(64 * 1024);
            let mut out = input.clone().into_bytes();
            let mut refused = false;
            for chunk in out.chunks_mut(step) {
                refused |= g.scan(chunk) == Verdict::Refused;
            }
            prop_assert_eq!(refused, refused_at.is_some(), "{:?}", input);
            for (i, (a, b)) in out.iter().zip(input.as_bytes()).enumerate() {
                if Some(i) == refused_at {
                    prop_assert_eq!(*a, 0);
                } else {
                    prop_assert_eq!(a, b, "byte {} of {:?}", i, input);
                }
            }
        }

        #[test]
        fn refuses_exactly_the_conflicting_heads(
            head in head(8),
            step in 1usize..40,
        ) {
            let Some(conflict) = oracle(head.as_bytes()) else {
                return Ok(());
            };
            let mut g = FramingGuard::new(64 * 1024);
            let mut out = head.clone().into_bytes();
            let mut refused = false;
            for chunk in out.chunks_mut(step) {
                refused |= g.scan(chunk) == Verdict::Refused;
            }
            prop_assert_eq!(refused, conflict, "{:?}", head);
            let n = head.len();
            prop_assert_eq!(&out[..n - 1], &head.as_bytes()[..n - 1]);
            prop_assert_eq!(out[n - 1] == 0, conflict);
        }
    }
}
