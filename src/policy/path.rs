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
    // Every % must start a valid escape: `%zz` means different things to different servers.
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%'
            && !(i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit())
        {
            return Err(Refusal::BadRequest(
                "the path contains a malformed percent escape",
            ));
        }
    }
    let decoded: Vec<u8> = percent_decode(bytes).collect();
    if decoded.contains(&b'/') || decoded.contains(&b'\\') {
        return Err(Refusal::BadRequest("the path contains an encoded / or \\"));
    }
    if decoded.contains(&0) {
        return Err(Refusal::BadRequest("the path contains a NUL byte"));
    }
    if std::str::from_utf8(&decoded).is_err() {
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
