//! Route matching (SPEC §3 "Routes"): raw path, case-sensitive, trailing slash
//! significant, method and host, and precedence literal over `{x}` over `{*x}`.
//! Which route matched is observed through keys restricted to one endpoint each.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn unmatched_requests_are_404_no_route() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let cases = [
        ("GET", "/nowhere"),
        ("DELETE", "/v1/feeds"),
        ("POST", "/v1/feeds"),
        ("GET", "/v1/feeds/"),
        ("GET", "/V1/feeds"),
        ("GET", "/v1/Feeds"),
        ("GET", "/v1/feeds/abc/refresh"),
    ];
    for (method, path) in cases {
        for token in [None, Some(key.secret.as_str())] {
            let r = env.gw.call(method, path, token).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
            r.assert_refusal(404, "no_route");
        }
    }
    env.assert_nothing_forwarded();
}

fn route(name: &str, methods: &[&str], path: &str) -> Value {
    json!({ "name": name, "methods": methods, "path": path, "upstream": "feeds", "scope": "read" })
}

#[tokio::test]
async fn most_specific_route_wins() {
    let names = [
        "prec-literal",
        "prec-param",
        "prec-wild",
        "q-lit-first",
        "q-param-first",
    ];
    let env = Env::start_with(|b| {
        b.route(route("prec-literal", &["GET"], "/p/literal/x"))
            .route(route("prec-param", &["GET"], "/p/{a}/x"))
            .route(route("prec-wild", &["GET"], "/p/{*rest}"))
            .route(route("q-lit-first", &["GET"], "/q/lit/{b}"))
            .route(route("q-param-first", &["GET"], "/q/{a}/lit"))
    })
    .await;
    let mut keys = Vec::new();
    for n in names {
        keys.push((
            n,
            env.key(json!({ "scopes": ["read"], "endpoints": [n] }))
                .await,
        ));
    }
    let expectations = [
        ("/p/literal/x", "prec-literal"),
        ("/p/other/x", "prec-param"),
        ("/p/literal/y", "prec-wild"),
        ("/p/other/y/z", "prec-wild"),
        ("/q/lit/lit", "q-lit-first"),
        ("/q/other/lit", "q-param-first"),
    ];
    let mut failures = Vec::new();
    for (path, winner) in expectations {
        for (name, key) in &keys {
            let r = env.gw.get(path, Some(&key.secret)).await;
            let expected = if *name == winner { 200 } else { 403 };
            if r.status != expected
                || (expected == 403 && r.error_code().as_deref() != Some("endpoint_not_allowed"))
            {
                failures.push(format!(
                    "GET {path} with a key for {name}: {} {} (winner should be {winner})",
                    r.status,
                    r.text()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn routes_match_on_method() {
    let env = Env::start_with(|b| {
        b.route(route("m-get", &["GET"], "/m"))
            .route(route("m-post", &["POST", "PUT"], "/m"))
    })
    .await;
    let get = env
        .key(json!({ "scopes": ["read"], "endpoints": ["m-get"] }))
        .await;
    let post = env
        .key(json!({ "scopes": ["read"], "endpoints": ["m-post"] }))
        .await;
    env.gw
        .call("GET", "/m", Some(&get.secret))
        .await
        .assert_status(200);
    env.gw
        .call("POST", "/m", Some(&post.secret))
        .await
        .assert_status(200);
    env.gw
        .call("PUT", "/m", Some(&post.secret))
        .await
        .assert_status(200);
    env.gw
        .call("POST", "/m", Some(&get.secret))
        .await
        .assert_refusal(403, "endpoint_not_allowed");
    env.gw
        .call("DELETE", "/m", Some(&get.secret))
        .await
        .assert_refusal(404, "no_route");
    assert_eq!(env.up.count(), 3);
    assert_eq!(
        env.up
            .requests()
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>(),
        vec!["GET", "POST", "PUT"]
    );
}

#[tokio::test]
async fn routes_may_match_on_host() {
    let env = Env::start_with(|b| {
        b.route(
            json!({ "name": "hosted", "methods": ["GET"], "path": "/hosted",
                        "host": "api.example.test", "upstream": "feeds", "scope": "read" }),
        )
    })
    .await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    // SPEC §3: compared case-insensitively and without a trailing dot.
    for host in [
        "api.example.test",
        "API.Example.Test",
        "api.example.test:8443",
        "api.example.test.",
        "API.EXAMPLE.TEST.:8443",
    ] {
        let host_line = format!("Host: {host}");
        let r = env
            .gw
            .raw(raw_request("GET", "/hosted", &[&host_line, &auth], b""))
            .await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
    }
    // Over h2 the host is `:authority`.
    let mut c = common::h2raw::H2Conn::tls(env.gw.listen).await;
    assert!(c.handshake().await);
    let authz = format!("Bearer {}", key.secret);
    let block = common::h2raw::hpack(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "Api.Example.Test."),
        (":path", "/hosted"),
        ("authorization", &authz),
    ]);
    use common::h2raw::{END_HEADERS, END_STREAM, HEADERS, frame};
    assert!(
        c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
    );
    assert_eq!(c.response(1, Duration::from_secs(10)).await.ok(), Some(200));
    env.clear();
    env.gw
        .raw(raw_request(
            "GET",
            "/hosted",
            &["Host: other.example.test", &auth],
            b"",
        ))
        .await
        .assert_refusal(404, "no_route");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn path_parameters_are_single_segments() {
    let env = Env::start().await;
    let key = env.write_key().await;
    // {feed_id} is one segment: two segments do not match refresh-feed.
    env.gw
        .call("POST", "/v1/feeds/a/b/refresh", Some(&key.secret))
        .await
        .assert_refusal(404, "no_route");
    env.assert_nothing_forwarded();
    env.gw
        .call("POST", "/v1/feeds/a.b-c_d/refresh", Some(&key.secret))
        .await
        .assert_status(200);
}
