//! Path rules (SPEC §3 "Paths"): keygate authorizes exactly the path it forwards, so any
//! path whose meaning could differ between keygate and a common upstream server is
//! refused with 400 instead of being normalised.

use percent_encoding::percent_decode;

use crate::refusal::Refusal;

/// Checks a raw request path (without the query).
pub fn check(path: &str) -> Result<(), Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::BadRequest(
            "the request target must be an absolute path",
        ));
    }
    if path.contains("//") {
        return Err(Refusal::BadRequest(
            "the path contains an empty segment (//)",
        ));
    }
    if path.contains('\\') {
        return Err(Refusal::BadRequest("the path contains a backslash"));
    }
    for segment in path[1..].split('/') {
        check_segment(segment)?;
    }
    Ok(())
}

fn check_segment(raw: &str) -> Result<(), Refusal> {
    let bytes = raw.as_bytes();
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'%' {
            continue;
        }
        // Every % must start a valid escape: `%zz` means different things to different servers.
        let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return Err(MALFORMED_ESCAPE);
        };
        let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) else {
            return Err(MALFORMED_ESCAPE);
        };
        // A server that decodes `%61dmin` routes it as `admin`; keygate matches it raw.
        if is_unreserved(hi << 4 | lo) {
            return Err(Refusal::BadRequest(
                "the path percent-encodes a character that never needs it (a letter, digit, \
                 -, ., _ or ~)",
            ));
        }
        escaped = true;
    }
    if !escaped {
        // Nothing to decode (the common case): no allocation.
        return check_decoded(bytes);
    }
    let decoded: Vec<u8> = percent_decode(bytes).collect();
    check_decoded(&decoded)
}

const MALFORMED_ESCAPE: Refusal =
    Refusal::BadRequest("the path contains a malformed percent escape");

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 §2.3: characters that never need percent-encoding.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The rules on one segment as an upstream would see it, percent-decoded.
fn check_decoded(decoded: &[u8]) -> Result<(), Refusal> {
    if decoded.contains(&b'/') || decoded.contains(&b'\\') {
        return Err(Refusal::BadRequest("the path contains an encoded / or \\"));
    }
    if decoded.contains(&0) {
        return Err(Refusal::BadRequest("the path contains a NUL byte"));
    }
    if std::str::from_utf8(decoded).is_err() {
        return Err(Refusal::BadRequest(
            "the path is not valid UTF-8 after decoding",
        ));
    }
    // `..;x` is a dot segment to Tomcat and friends: judge the part before any `;`.
    let before_params = decoded.split(|&b| b == b';').next().unwrap_or(&[]);
    if before_params == b"." || before_params == b".." {
        return Err(Refusal::BadRequest("the path contains a dot segment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn plain_paths_pass() {
        for p in [
            "/",
            "/v1/feeds",
            "/v1/feeds/",
            "/flows/abc-123/execute",
            "/a/%20b/c%C3%A9",
            "/a/.hidden",
            "/a/..b",
            "/a/b;c=d",
            "/a/...",
        ] {
            assert!(check(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn ambiguous_paths_fail() {
        for p in [
            "//x",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/..",
            "/a/.",
            "/a/%2e%2e/b",
            "/a/%2E/b",
            "/a/.%2e/b",
            "/a/%2fb",
            "/a/%2Fb",
            "/a/%5cb",
            "/a\\b",
            "/a/..;/b",
            "/a/.;x/b",
            "/a/%2e%2e;x/b",
            "/a/%00",
            "/a/%ff",
            "/a/%c3",
            "/a/%zz",
            "/a/%2",
            "/a/b%",
            "*",
            "a/b",
        ] {
            assert!(check(p).is_err(), "{p}");
        }
    }
}
