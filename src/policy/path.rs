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
    // One pass over the bytes for what the rules below look for anywhere in the path
    // (a `str` search for "//" alone cost more than the rest of a short path's check),
    // noting on the way whether a raw segment is a dot segment (`.`, `..`, also with
    // parameters: `..;x` is one to Tomcat and friends).
    let bytes = path.as_bytes();
    let (mut empty_segment, mut backslash, mut escaped_or_nul) = (false, false, false);
    let mut dot_segment = false;
    // The segment being read starts at `start`; its name ends at `name_end` (a `;`).
    let (mut start, mut name_end) = (1, None);
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'/' => {
                empty_segment |= i == start;
                dot_segment |= is_dots(&bytes[start..name_end.unwrap_or(i)]);
                (start, name_end) = (i + 1, None);
            }
            b';' if name_end.is_none() => name_end = Some(i),
            b'\\' => backslash = true,
            b'%' | 0 => escaped_or_nul = true,
            _ => {}
        }
    }
    dot_segment |= is_dots(&bytes[start..name_end.unwrap_or(bytes.len())]);
    if empty_segment {
        return Err(Refusal::BadRequest(
            "the path contains an empty segment (//)",
        ));
    }
    if backslash {
        return Err(Refusal::BadRequest("the path contains a backslash"));
    }
    // The common case: nothing escaped and no NUL. Each segment is then exactly what an
    // upstream sees (UTF-8, as `path` is; no `/` or `\\` in it): only dot segments are
    // left to refuse.
    if !escaped_or_nul {
        return if dot_segment {
            Err(DOT_SEGMENT)
        } else {
            Ok(())
        };
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
    check_dot_segment(decoded)
}

/// Refuses `.` and `..`, also followed by parameters: `..;x` is a dot segment to Tomcat
/// and friends, so the part before any `;` is judged.
fn check_dot_segment(segment: &[u8]) -> Result<(), Refusal> {
    let before_params = segment.split(|&b| b == b';').next().unwrap_or(&[]);
    if is_dots(before_params) {
        return Err(DOT_SEGMENT);
    }
    Ok(())
}

fn is_dots(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

const DOT_SEGMENT: Refusal = Refusal::BadRequest("the path contains a dot segment");

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
            "/a\u{0}b",
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

    #[test]
    fn needlessly_encoded_characters_fail() {
        for p in [
            "/v1/%61dmin",
            "/%41",
            "/a/%30",
            "/a/%2D",
            "/a/%5f",
            "/a/%7E",
            "/a/%2e",
        ] {
            assert!(check(p).is_err(), "{p}");
        }
        for p in [
            "/a/%20",
            "/a/%3B",
            "/a/%25",
            "/a/%40",
            "/a/%2B",
            "/a/%C3%A9",
        ] {
            assert!(check(p).is_ok(), "{p}");
        }
    }
}

/// Property: no path [`check`] accepts means another route to an upstream that decodes
/// and normalises it (percent-decoding, dot segments, repeated slashes) than the
/// route keygate matched on the raw path.
#[cfg(test)]
mod properties {
    use percent_encoding::percent_decode_str;
    use proptest::prelude::*;

    use super::check;
    use crate::config::RouteConfig;
    use crate::policy::RouteTable;

    fn table() -> RouteTable {
        let rc = |name: &str, path: &str| RouteConfig {
            name: name.into(),
            methods: vec![http::Method::GET],
            path: path.into(),
            host: None,
            upstream: "u".into(),
            scope: "read".into(),
            resource: None,
            query_key: false,
            environments: None,
            rate_limit: None,
        };
        RouteTable::new(&[
            rc("admin", "/v1/admin"),
            rc("admin-item", "/v1/admin/{id}"),
            rc("section-item", "/v1/{section}/{id}"),
            rc("a-x", "/a/x"),
            rc("a-rest", "/a/{*rest}"),
            rc("tilde", "/~u/{id}"),
        ])
        .expect("routes")
    }

    /// What a common upstream does with a path: decode, then RFC 3986 §5.2.4 dot
    /// segment removal and merging of empty segments. `None` if not UTF-8.
    fn upstream_view(raw: &str) -> Option<String> {
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        let mut out: Vec<&str> = Vec::new();
        let segments: Vec<&str> = decoded.split('/').skip(1).collect();
        let last = segments.len().saturating_sub(1);
        for (i, seg) in segments.iter().enumerate() {
            match *seg {
                "." => {}
                ".." => {
                    out.pop();
                }
                "" if i != last => {}
                s => out.push(s),
            }
        }
        Some(format!("/{}", out.join("/")))
    }

    fn route_of(t: &RouteTable, path: &str) -> Option<String> {
        t.lookup(&http::Method::GET, None, path)
            .map(|m| m.route.name.clone())
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("v1"),
            Just("admin"),
            Just("a"),
            Just("x"),
            Just("~u"),
            Just("id7"),
            Just("."),
            Just(".."),
            Just(""),
            Just("%2e"),
            Just("%2E%2e"),
            Just(".%2e"),
            Just("%61dmin"),
            Just("adm%69n"),
            Just("%78"),
            Just("%7Eu"),
            Just("%2f"),
            Just("a%2Fx"),
            Just("%5c"),
            Just("\\"),
            Just("%00"),
            Just("%20"),
            Just("%25"),
            Just("%3B"),
            Just("x;y"),
            Just("..;"),
            Just(".;p"),
            Just("%c3%a9"),
            Just("%ff"),
            Just("%e2%80%ae"),
            Just("%"),
            Just("%4"),
            Just("%zz"),
        ]
        .prop_map(str::to_string)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn accepted_paths_route_as_upstreams_read_them(
            segments in proptest::collection::vec(segment(), 1..6)
        ) {
            let t = table();
            let path = format!("/{}", segments.join("/"));
            if check(&path).is_ok() {
                let view = upstream_view(&path);
                prop_assert!(view.is_some(), "{path} accepted but not UTF-8 decoded");
                let view = view.unwrap_or_default();
                prop_assert_eq!(
                    route_of(&t, &path),
                    route_of(&t, &view),
                    "{} accepted; upstreams read it as {}", path, view
                );
            }
        }

        /// The shortcut for paths with nothing escaped decides as checking every
        /// segment, decoded, would.
        #[test]
        fn the_unescaped_shortcut_agrees_with_the_segment_check(
            path in "/[a./;%2eE0\\x00\\\\]{0,24}"
        ) {
            let each_segment = || -> Result<(), crate::refusal::Refusal> {
                if path.contains("//") || path.contains('\\') {
                    return Err(crate::refusal::Refusal::BadRequest("refused first"));
                }
                path[1..].split('/').try_for_each(super::check_segment)
            };
            prop_assert_eq!(check(&path).is_ok(), each_segment().is_ok(), "{:?}", path);
        }

        /// Any string: `check` never panics, and what it accepts starts with `/`.
        #[test]
        fn check_is_total(path in "\\PC{0,40}") {
            if check(&path).is_ok() {
                prop_assert!(path.starts_with('/'));
            }
        }
    }
}
