//! What a valid key may do (SPEC §2 and the 403 rows of §3): IP allow-lists (with
//! trusted proxies), environments and `test_url`, endpoints, resources, scopes, and the
//! order in which the checks apply.

mod common;

use common::*;

#[tokio::test]
async fn ip_allow_list_is_checked_against_the_peer() {
    let env = Env::start().await;
    let loopback = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["127.0.0.1/32"] }))
        .await;
    let mixed = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["::1/128", "127.0.0.0/8"] }))
        .await;
    let elsewhere = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["10.0.0.0/8"] }))
        .await;

    env.gw
        .get("/v1/feeds", Some(&loopback.secret))
        .await
        .assert_status(200);
    env.gw
        .get("/v1/feeds", Some(&mixed.secret))
        .await
        .assert_status(200);
    env.clear();
    env.gw
        .get("/v1/feeds", Some(&elsewhere.secret))
        .await
        .assert_refusal(403, "ip_not_allowed");
    // From an untrusted peer, X-Forwarded-For is not believed.
    let r = env
        .gw
        .send(
            env.gw
                .request("GET", "/v1/feeds")
                .bearer_auth(&elsewhere.secret)
                .header("x-forwarded-for", "10.1.2.3"),
        )
        .await;
    r.assert_refusal(403, "ip_not_allowed");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn ip_allow_list_uses_forwarded_for_from_a_trusted_proxy() {
    let env = Env::start_with(|b| b.trusted_proxies(&["127.0.0.1/32"])).await;
    let key = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["10.0.0.0/8"] }))
        .await;
    let call = |xff: Vec<&'static str>| {
        let mut lines = vec![bearer(&key.secret)];
        for v in xff {
            lines.push(format!("X-Forwarded-For: {v}"));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        raw_request("GET", "/v1/feeds", &refs, b"")
    };

    let allowed = [
        vec!["10.1.2.3"],
        vec!["192.0.2.7, 10.1.2.3"],
        // Lines are joined in order: the right-most address is on the last line.
        vec!["192.0.2.7", "10.1.2.3"],
        // Trusted proxies are skipped from the right.
        vec!["10.1.2.3, 127.0.0.1"],
        // An IPv4-mapped IPv6 address compares as IPv4.
        vec!["::ffff:10.1.2.3"],
    ];
    for xff in allowed {
        let r = env.gw.raw(call(xff.clone())).await;
        assert_eq!(r.status, 200, "X-Forwarded-For {xff:?}: {}", r.text());
    }
    env.clear();
    let refused = [
        vec!["192.0.2.7"],
        vec!["10.1.2.3, 192.0.2.7"],
        vec!["10.1.2.3", "192.0.2.7"],
    ];
    for xff in refused {
        let r = env.gw.raw(call(xff.clone())).await;
        assert_eq!(r.status, 403, "X-Forwarded-For {xff:?}");
        r.assert_refusal(403, "ip_not_allowed");
    }
    // Malformed addresses fail closed.
    for xff in [
        vec!["not-an-ip"],
        vec!["10.1.2.3, bogus"],
        vec!["10.1.2.300"],
    ] {
        let r = env.gw.raw(call(xff.clone())).await;
        assert!(
            r.status >= 400,
            "malformed X-Forwarded-For {xff:?} must not pass: {}",
            r.status
        );
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn test_keys_reach_the_test_url() {
    let env = Env::start().await;
    let test = env
        .key(json!({ "scopes": ["write"], "environment": "test" }))
        .await;
    assert!(test.secret.starts_with("kg_test_"), "test key token shape");
    let live = env.write_key().await;
    assert!(live.secret.starts_with("kg_live_"), "live key token shape");

    let r = env.gw.get("/sandbox/x", Some(&test.secret)).await;
    r.assert_status(200);
    assert_eq!(r.json()["upstream"], "sandbox");
    env.gw
        .call("POST", "/flows/f1/execute", Some(&test.secret))
        .await
        .assert_status(200);
    assert_eq!(env.up.count(), 0, "a test key never reaches the live url");
    assert_eq!(env.sandbox.count(), 2);
    assert_eq!(
        env.sandbox.last().header_one("x-api-key-environment"),
        "test"
    );

    let r = env.gw.get("/sandbox/x", Some(&live.secret)).await;
    r.assert_status(200);
    assert_eq!(r.json()["upstream"], "live");
    assert_eq!(env.up.last().header_one("x-api-key-environment"), "live");
    assert_eq!(
        env.sandbox.count(),
        2,
        "a live key never reaches the test url"
    );
}

#[tokio::test]
async fn environment_not_allowed_without_test_url_or_by_route() {
    let env = Env::start_with(|b| {
        b.route(
            json!({ "name": "test-only", "methods": ["GET"], "path": "/test-only",
                        "upstream": "flows", "scope": "read", "environments": ["test"] }),
        )
    })
    .await;
    let test = env
        .key(json!({ "scopes": ["read"], "environment": "test" }))
        .await;
    let live = env.read_key().await;
    // feeds has no test_url.
    env.gw
        .get("/v1/feeds", Some(&test.secret))
        .await
        .assert_refusal(403, "environment_not_allowed");
    // flow-runs is narrowed to live.
    env.gw
        .get("/flows/f1/executions", Some(&test.secret))
        .await
        .assert_refusal(403, "environment_not_allowed");
    env.gw
        .get("/test-only", Some(&live.secret))
        .await
        .assert_refusal(403, "environment_not_allowed");
    env.assert_nothing_forwarded();
    env.gw
        .get("/test-only", Some(&test.secret))
        .await
        .assert_status(200);
    assert_eq!(env.sandbox.count(), 1);
}

#[tokio::test]
async fn endpoints_restrict_a_key_to_named_routes() {
    let env = Env::start().await;
    let key = env
        .key(json!({ "scopes": ["read"], "endpoints": ["list-feeds"] }))
        .await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    env.clear();
    env.gw
        .get("/echo/x", Some(&key.secret))
        .await
        .assert_refusal(403, "endpoint_not_allowed");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn resources_restrict_a_key_exactly() {
    let env = Env::start().await;
    let one = env
        .key(json!({ "scopes": ["write"], "resources": ["feed:abc"] }))
        .await;
    let all_feeds = env
        .key(json!({ "scopes": ["write"], "resources": ["feed:*"] }))
        .await;
    let prefix = env
        .key(json!({ "scopes": ["write"], "resources": ["feed:ab"] }))
        .await;

    env.gw
        .call("POST", "/v1/feeds/abc/refresh", Some(&one.secret))
        .await
        .assert_status(200);
    env.gw
        .call("POST", "/v1/feeds/xyz/refresh", Some(&all_feeds.secret))
        .await
        .assert_status(200);
    env.clear();

    let denied = [
        ("POST", "/v1/feeds/xyz/refresh", &one),
        ("POST", "/v1/feeds/abcd/refresh", &one),
        // Compared exactly, not as a prefix.
        ("POST", "/v1/feeds/abc/refresh", &prefix),
        ("POST", "/flows/f1/execute", &all_feeds),
        // Routes without a resource are closed to a key with resources.
        ("GET", "/v1/feeds", &one),
        ("GET", "/v1/feeds", &all_feeds),
    ];
    for (method, path, key) in denied {
        let r = env.gw.call(method, path, Some(&key.secret)).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        r.assert_refusal(403, "resource_not_allowed");
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn scopes_follow_implications_and_name_the_missing_scope() {
    let env = Env::start().await;
    let read = env.read_key().await;
    let write = env.write_key().await;

    let r = env
        .gw
        .call("POST", "/v1/feeds/abc/refresh", Some(&read.secret))
        .await;
    r.assert_refusal(403, "insufficient_scope");
    let www = r
        .header("www-authenticate")
        .expect("WWW-Authenticate on insufficient_scope");
    assert!(
        www.starts_with("Bearer ")
            && www.contains(r#"error="insufficient_scope""#)
            && www.contains(r#"scope="write""#),
        "{www:?}"
    );
    env.assert_nothing_forwarded();

    // write includes read.
    env.gw
        .get("/v1/feeds", Some(&write.secret))
        .await
        .assert_status(200);
    let scopes = env.up.last().header_one("x-api-key-scopes");
    assert!(scopes.contains("write"), "X-Api-Key-Scopes {scopes:?}");
    env.gw
        .call("POST", "/v1/feeds/abc/refresh", Some(&write.secret))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn checks_apply_in_the_specified_order() {
    let env = Env::start().await;
    // route before credential: an unknown path is 404 even without a key.
    env.gw
        .get("/nowhere", None)
        .await
        .assert_refusal(404, "no_route");
    // IP before environment.
    let k = env
        .key(json!({ "scopes": ["read"], "environment": "test", "ip_allow": ["10.0.0.0/8"] }))
        .await;
    env.gw
        .get("/v1/feeds", Some(&k.secret))
        .await
        .assert_refusal(403, "ip_not_allowed");
    // environment before endpoint.
    let k = env
        .key(json!({ "scopes": ["read"], "environment": "test", "endpoints": ["echo"] }))
        .await;
    env.gw
        .get("/v1/feeds", Some(&k.secret))
        .await
        .assert_refusal(403, "environment_not_allowed");
    // endpoint before resource and scope.
    let k = env
        .key(json!({ "scopes": ["read"], "endpoints": ["list-feeds"], "resources": ["flow:*"] }))
        .await;
    env.gw
        .call("POST", "/v1/feeds/abc/refresh", Some(&k.secret))
        .await
        .assert_refusal(403, "endpoint_not_allowed");
    // resource before scope.
    let k = env
        .key(json!({ "scopes": ["read"], "resources": ["flow:*"] }))
        .await;
    env.gw
        .call("POST", "/v1/feeds/abc/refresh", Some(&k.secret))
        .await
        .assert_refusal(403, "resource_not_allowed");
    env.assert_nothing_forwarded();
}
