//! Paths (SPEC §3 "Paths"): keygate authorizes exactly the path it forwards, so any
//! path an upstream could read differently is refused with 400, and every other path
//! is forwarded byte for byte. Sent raw: reqwest would normalise many of these.

mod common;

use common::*;

/// Paths whose meaning could differ between keygate and a common upstream server.
const AMBIGUOUS: &[&str] = &[
    "/echo//x",
    "//echo/x",
    "/echo/x//",
    "/echo/./x",
    "/echo/x/.",
    "/echo/a/../x",
    "/echo/..",
    "/echo/%2e%2e/x",
    "/echo/%2E%2E/x",
    "/echo/.%2e/x",
    "/echo/%2e./x",
    "/echo/%2e/x",
    "/echo/a%2fb",
    "/echo/a%2Fb",
    "/echo/a%5cb",
    "/echo/a%5Cb",
    "/echo/..;/x",
    "/echo/.;/x",
    "/echo/..;jsessionid=1/x",
    "/echo/a%00b",
    "/echo/%ff",
    "/echo/%c0%ae%c0%ae/x",
    // Percent-encoded characters that never need it (SPEC §3).
    "/echo/%61dmin",
    "/echo/%41",
    "/echo/%30",
    "/echo/a%2Db",
    "/echo/a%5fb",
    "/echo/a%7Eb",
    "/echo/a%2eb",
];

/// Paths that are not ambiguous and must reach the upstream exactly as sent.
const VERBATIM: &[&str] = &[
    "/echo/a%20b",
    "/echo/caf%C3%A9",
    "/echo/v1.2/a..b/.hidden",
    "/echo/x/",
    "/echo/x?q=a%2Fb&r=..%2F&s=%2e%2e",
    "/echo/x?",
    // Reserved and other characters may be encoded.
    "/echo/a%3Bb%3Dc%40d%25e%2Bf",
];

#[tokio::test]
async fn ambiguous_paths_are_400_bad_request() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let mut failures = Vec::new();
    for path in AMBIGUOUS {
        let r = env.gw.raw(raw_request("GET", path, &[&auth], b"")).await;
        if r.status != 400 || r.error_code().as_deref() != Some("bad_request") {
            failures.push(format!("{path} -> {} {}", r.status, r.text()));
        } else {
            r.assert_refusal(400, "bad_request");
        }
    }
    let forwarded: Vec<String> = env.up.requests().into_iter().map(|r| r.target).collect();
    assert!(
        failures.is_empty() && forwarded.is_empty(),
        "ambiguous paths not refused with 400 bad_request:\n{}\nforwarded: {forwarded:?}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn ambiguous_path_is_400_even_without_a_key() {
    let env = Env::start().await;
    env.gw
        .raw(raw_request("GET", "/echo/../v1/feeds", &[], b""))
        .await
        .assert_refusal(400, "bad_request");
    env.gw
        .raw(raw_request("GET", "/v1/feeds/%2e%2e/feeds", &[], b""))
        .await
        .assert_refusal(400, "bad_request");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn other_paths_are_forwarded_verbatim() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let mut failures = Vec::new();
    for target in VERBATIM {
        env.clear();
        let r = env.gw.raw(raw_request("GET", target, &[&auth], b"")).await;
        if r.status != 200 {
            failures.push(format!("{target} -> {} {}", r.status, r.text()));
            continue;
        }
        let seen = env.up.last();
        // An empty query may be dropped; everything else is byte for byte.
        let expected = target.strip_suffix('?').unwrap_or(target);
        if seen.target != *target && seen.target != expected {
            failures.push(format!("{target} forwarded as {}", seen.target));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_fragment_is_never_forwarded() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let r = env
        .gw
        .raw(raw_request(
            "GET",
            "/echo/x#frag",
            &[&bearer(&key.secret)],
            b"",
        ))
        .await;
    assert!(
        r.status == 200 || r.status == 400,
        "a fragment is stripped or refused: {} {}",
        r.status,
        r.text()
    );
    for seen in env.up.requests() {
        assert!(
            !seen.target.contains('#') && !seen.target.contains("frag"),
            "fragment forwarded: {}",
            seen.target
        );
    }
}

/// The case: with a literal route and an overlapping `{param}` route of a
/// lower scope, `/v1/%61dmin/x` would take the `{param}` route while upstreams decode it
/// to the literal one. It is refused before routing.
#[tokio::test]
async fn encoded_letters_cannot_pick_another_route() {
    let env = Env::start_with(|b| {
        b.route(
            json!({ "name": "admin-x", "methods": ["GET"], "path": "/v1/admin/{id}",
                        "upstream": "feeds", "scope": "write" }),
        )
        .route(
            json!({ "name": "any-x", "methods": ["GET"], "path": "/v1/{section}/{id}",
                           "upstream": "feeds", "scope": "read" }),
        )
    })
    .await;
    let read = env.read_key().await;
    let auth = bearer(&read.secret);
    for target in ["/v1/%61dmin/x", "/v1/%61%64%6d%69%6e/x", "/v1/adm%69n/x"] {
        env.gw
            .raw(raw_request("GET", target, &[&auth], b""))
            .await
            .assert_refusal(400, "bad_request");
    }
    env.gw
        .raw(raw_request("GET", "/v1/admin/x", &[&auth], b""))
        .await
        .assert_refusal(403, "insufficient_scope");
    env.assert_nothing_forwarded();
    env.gw
        .raw(raw_request("GET", "/v1/other/x", &[&auth], b""))
        .await
        .assert_status(200);
}
