//! The access log: one JSON line per request (SPEC §4), formatted here and appended
//! to the log buffer ([`crate::logbuf`]) without going through `tracing`'s generic
//! JSON formatter, which costs several microseconds a line (field visitors, `fmt`
//! machinery, a date formatted from scratch). The line has the shape `tracing`'s JSON
//! layer gives every other log line: `timestamp`, `level`, the fields, `target`.
//!
//! When `RUST_LOG` turns `keygate::access` off, nothing is written; when logs go to a
//! terminal (no log buffer), the line goes through `tracing` as before.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

/// The target of access-log lines (for `RUST_LOG`, e.g. `keygate::access=off`).
pub const TARGET: &str = "keygate::access";

/// `,"name":"`, the start of a string field, as one constant.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":\"").as_bytes()
    };
}

/// One request's line.
pub struct Line<'a> {
    pub request_id: &'a str,
    /// `None` for the data plane's own requests.
    pub mode: Option<&'a str>,
    pub org: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub code: &'a str,
    pub client: IpAddr,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    /// When the line is written (the request's arrival plus its duration: no second
    /// clock read).
    pub at: jiff::Timestamp,
}

thread_local! {
    /// The line being formatted, and the formatted date of the current second.
    static SCRATCH: RefCell<(Vec<u8>, i64, String)> = const { RefCell::new((Vec::new(), i64::MIN, String::new())) };
}

/// Writes `line` to the log.
pub fn write(line: &Line<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let Some(mut out) = crate::logbuf::installed() else {
        tracing::info!(
            target: TARGET,
            request_id = line.request_id,
            mode = line.mode,
            org = line.org,
            key_id = line.key_id,
            route = line.route,
            method = line.method,
            status = line.status,
            code = line.code,
            client = %line.client,
            duration_ms = ms(line.duration),
            upstream_ms = line.upstream.map(ms),
        );
        return;
    };
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (buf, second, date) = &mut *s;
        buf.clear();
        format(buf, second, date, line);
        let _ = out.write(buf);
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Formats one line (with its newline) into `buf`. `second` and `date` cache the date
/// and time of the last whole second formatted.
fn format(buf: &mut Vec<u8>, second: &mut i64, date: &mut String, l: &Line<'_>) {
    let now = l.at;
    let secs = now.as_second();
    if *second != secs {
        *second = secs;
        // `2026-12-06T22:34:09`: the part before the fraction.
        let whole = jiff::Timestamp::from_second(secs).unwrap_or(now);
        *date = whole.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    }
    buf.extend_from_slice(b"{\"timestamp\":\"");
    buf.extend_from_slice(date.as_bytes());
    buf.push(b'.');
    padded(buf, u32::try_from(now.subsec_microsecond()).unwrap_or(0), 6);
    buf.extend_from_slice(b"Z\",\"level\":\"INFO\"");
    string(buf, key!("request_id"), Some(l.request_id));
    string(buf, key!("mode"), l.mode);
    string(buf, key!("org"), l.org);
    string(buf, key!("key_id"), l.key_id);
    string(buf, key!("route"), Some(l.route));
    string(buf, key!("method"), Some(l.method));
    buf.extend_from_slice(b",\"status\":");
    buf.extend_from_slice(itoa::Buffer::new().format(l.status).as_bytes());
    string(buf, key!("code"), Some(l.code));
    buf.extend_from_slice(b",\"client\":\"");
    buf.extend_from_slice(crate::policy::ip::render(l.client, &mut [0; 45]));
    buf.push(b'"');
    number(buf, b",\"duration_ms\":", Some(l.duration));
    number(buf, b",\"upstream_ms\":", l.upstream);
    buf.extend_from_slice(b",\"target\":\"");
    buf.extend_from_slice(TARGET.as_bytes());
    buf.extend_from_slice(b"\"}\n");
}

/// The bytes a JSON string escapes: `"`, `\\`, control characters and DEL.
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == 0x7f || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// `key` (from [`key!`]) then the value, JSON-escaped, and its closing quote; nothing
/// for `None`.
fn string(buf: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    let Some(v) = value else { return };
    buf.extend_from_slice(key);
    let bytes = v.as_bytes();
    // Ids, names and codes never need escaping: copy them whole.
    if !bytes.iter().any(|&b| ESCAPED[usize::from(b)]) {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    for &b in bytes {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                let _ = write!(buf, "\\u{b:04x}");
            }
            _ => buf.push(b),
        }
    }
    buf.push(b'"');
}

/// `key` (`,"name":`) then milliseconds with three decimals (microseconds); nothing
/// for `None`.
fn number(buf: &mut Vec<u8>, key: &[u8], value: Option<Duration>) {
    let Some(d) = value else {
        return;
    };
    buf.extend_from_slice(key);
    // (In u64: a u128 division is a library call.)
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    buf.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    buf.push(b'.');
    padded(buf, (micros % 1000) as u32, 3);
}

/// `n` in decimal, zero-padded to `width` digits (`n` has at most `width`).
fn padded(buf: &mut Vec<u8>, n: u32, width: usize) {
    let mut text = itoa::Buffer::new();
    let digits = text.format(n);
    buf.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    buf.extend_from_slice(digits.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_json_with_every_field() {
        let line = Line {
            request_id: "rid-1",
            mode: Some("http"),
            org: Some("acme"),
            key_id: None,
            route: "list-feeds",
            method: "GET",
            status: 401,
            code: "invalid_api_key",
            client: "2001:db8::1".parse().unwrap(),
            duration: Duration::from_micros(1234),
            upstream: None,
            at: "2026-12-06T22:34:09.596063Z".parse().unwrap(),
        };
        let (mut buf, mut second, mut date) = (Vec::new(), i64::MIN, String::new());
        format(&mut buf, &mut second, &mut date, &line);
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["timestamp"], "2026-12-06T22:34:09.596063Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(v["mode"], "http");
        assert_eq!(v["org"], "acme");
        assert!(v.get("key_id").is_none());
        assert!(v.get("upstream_ms").is_none());
        assert_eq!(v["status"], 401);
        assert_eq!(v["client"], "2001:db8::1");
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["target"], "keygate::access");
        // The cached date is reused within the second, replaced after it.
        buf.clear();
        let later = Line {
            at: "2026-12-06T22:34:10.000001Z".parse().unwrap(),
            ..line
        };
        format(&mut buf, &mut second, &mut date, &later);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["timestamp"], "2026-12-06T22:34:10.000001Z");
    }

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        for (d, text) in [
            (Duration::from_micros(12), ",\"d\":0.012"),
            (Duration::from_nanos(1_234_999), ",\"d\":1.234"),
            (Duration::from_secs(2), ",\"d\":2000.000"),
            (Duration::ZERO, ",\"d\":0.000"),
        ] {
            let mut buf = Vec::new();
            number(&mut buf, b",\"d\":", Some(d));
            assert_eq!(String::from_utf8(buf).unwrap(), text);
        }
        let mut buf = Vec::new();
        number(&mut buf, b",\"d\":", None);
        assert!(buf.is_empty());
    }

    #[test]
    fn strings_are_escaped() {
        let mut buf = Vec::new();
        string(&mut buf, key!("m"), Some("a\"b\\c\u{1}"));
        let v: serde_json::Value =
            serde_json::from_slice(&[b"{\"x\":0", buf.as_slice(), b"}"].concat()).unwrap();
        assert_eq!(v["m"], "a\"b\\c\u{1}");
    }
}
