//! Header handling on the way to the upstream (SPEC §3 "Headers" and "Forwarding"):
//! identity headers, spoofing, hop-by-hop, X-Forwarded-*, Host, X-Request-Id and
//! method overrides.

mod common;

use common::*;

const IDENTITY: [&str; 4] = [
    "x-org-id",
    "x-api-key-id",
    "x-api-key-scopes",
    "x-api-key-environment",
];

/// A header name as keygate compares identity headers: lowercase, `_` as `-`.
fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[tokio::test]
async fn upstream_gets_exactly_one_of_each_identity_header() {
    let env = Env::start().await;
    let key = env.read_key().await;
    env.gw
        .get("/echo/x", Some(&key.secret))
        .await
        .assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.header_one("x-org-id"), ORG);
    assert_eq!(seen.header_one("x-api-key-id"), key.id);
    assert!(seen.header_one("x-api-key-scopes").contains("read"));
    assert_eq!(seen.header_one("x-api-key-environment"), "live");
    assert!(!seen.has_header("authorization"));
}

#[tokio::test]
async fn spoofed_identity_headers_are_removed() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[
            &bearer(&key.secret),
            "X-Org-Id: evil",
            "x-org-id: evil2",
            "X_Org_Id: evil3",
            "x_org-id: evil4",
            "X-API-KEY-ID: key_evil",
            "x_api_key_scopes: admin",
            "X-Api-Key-Environment: live-evil",
            "X_API_KEY_ENVIRONMENT: evil",
            "X-Other: kept",
        ],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.header_one("x-org-id"), ORG);
    assert_eq!(seen.header_one("x-api-key-id"), key.id);
    assert_eq!(seen.header_one("x-api-key-scopes"), "read");
    assert_eq!(seen.header_one("x-api-key-environment"), "live");
    for (name, value) in &seen.headers {
        if IDENTITY.contains(&normalized(name).as_str()) {
            assert!(
                IDENTITY.contains(&name.as_str()),
                "a spoofed variant {name}: {:?} reached the upstream",
                String::from_utf8_lossy(value)
            );
        }
    }
    assert_eq!(seen.header_one("x-other"), "kept");
}

#[tokio::test]
async fn identity_header_names_are_configurable() {
    let env = Env::start_with(|b| {
        b.with(|c| {
            c["identity_headers"] = json!({
                "org": "X-Tenant",
                "key_id": "X-Client-Key",
                "scopes": "X-Client-Scopes",
                "environment": "X-Client-Env"
            })
        })
    })
    .await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[&bearer(&key.secret), "X-Tenant: evil", "x_tenant: evil2"],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.header_one("x-tenant"), ORG);
    assert_eq!(seen.header_one("x-client-key"), key.id);
    assert_eq!(seen.header_one("x-client-scopes"), "read");
    assert_eq!(seen.header_one("x-client-env"), "live");
    assert!(!seen.has_header("x_tenant"));
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_are_dropped() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[
            &bearer(&key.secret),
            "Connection: keep-alive, X-Secret-Hop",
            "X-Secret-Hop: 1",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-Checksum",
            "X-Keep: yes",
        ],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    let seen = env.up.last();
    for name in [
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
    ] {
        assert!(
            !seen.has_header(name),
            "{name} reached the upstream: {:?}",
            seen.header_names()
        );
    }
    for v in seen.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-secret-hop"),
            "the client's Connection header was forwarded: {v:?}"
        );
    }
    assert_eq!(seen.header_one("x-keep"), "yes");
}

fn xff_addresses(r: &Recorded) -> Vec<String> {
    r.header_all("x-forwarded-for")
        .iter()
        .flat_map(|l| l.split(','))
        .map(|s| s.trim().to_string())
        .collect()
}

#[tokio::test]
async fn forwarded_for_is_replaced_for_an_untrusted_peer() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[
            &bearer(&key.secret),
            "X-Forwarded-For: 1.2.3.4",
            "X-Forwarded-For: 5.6.7.8",
        ],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
}

#[tokio::test]
async fn forwarded_for_is_appended_for_a_trusted_proxy() {
    let env = Env::start_with(|b| b.trusted_proxies(&["127.0.0.1/32"])).await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[
            &bearer(&key.secret),
            "X-Forwarded-For: 1.2.3.4",
            "X-Forwarded-For: 5.6.7.8",
        ],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    assert_eq!(
        xff_addresses(&env.up.last()),
        vec!["1.2.3.4", "5.6.7.8", "127.0.0.1"]
    );
    let req = raw_request("GET", "/echo/x", &[&bearer(&key.secret)], b"");
    env.gw.raw(req).await.assert_status(200);
    assert_eq!(xff_addresses(&env.up.last()), vec!["127.0.0.1"]);
}

#[tokio::test]
async fn forwarded_host_and_proto_come_from_keygate_for_an_untrusted_peer() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[
            "Host: api.example.test",
            &bearer(&key.secret),
            "X-Forwarded-Host: evil.test",
            "X-Forwarded-Proto: http",
        ],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.header_one("x-forwarded-host"), "api.example.test");
    assert_eq!(seen.header_one("x-forwarded-proto"), "https");
    // The upstream gets its own host as Host.
    assert_eq!(seen.header_one("host"), env.up.addr.to_string());
}

#[tokio::test]
async fn forwarded_host_and_proto_are_kept_from_a_trusted_proxy() {
    let env = Env::start_with(|b| b.trusted_proxies(&["127.0.0.1/32"])).await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[
            "Host: internal-lb.test",
            &bearer(&key.secret),
            "X-Forwarded-Host: api.example.test",
            "X-Forwarded-Proto: http",
        ],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.header_one("x-forwarded-host"), "api.example.test");
    assert_eq!(seen.header_one("x-forwarded-proto"), "http");
}

#[tokio::test]
async fn preserve_host_forwards_the_client_host() {
    let up = RecordingUpstream::start("kept");
    let url = up.url();
    let env = Env::start_with(|b| {
        b.upstream(
            "kept",
            json!({ "url": url, "preserve_host": true, "timeout": "5s" }),
        )
        .route(json!({ "name": "kept", "methods": ["GET"], "path": "/kept",
                       "upstream": "kept", "scope": "read" }))
    })
    .await;
    let key = env.read_key().await;
    let req = raw_request(
        "GET",
        "/kept",
        &["Host: api.example.test", &bearer(&key.secret)],
        b"",
    );
    env.gw.raw(req).await.assert_status(200);
    assert_eq!(up.last().header_one("host"), "api.example.test");
}

#[tokio::test]
async fn valid_request_id_is_kept_and_returned() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let rid = "req-123_ABC.def";
    let r = env
        .gw
        .send(
            env.gw
                .request("GET", "/echo/x")
                .bearer_auth(&key.secret)
                .header("x-request-id", rid),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header_all("x-request-id"), vec![rid]);
    assert_eq!(env.up.last().header_one("x-request-id"), rid);

    // Refusals return it too.
    let r = env
        .gw
        .send(env.gw.request("GET", "/echo/x").header("x-request-id", rid))
        .await;
    r.assert_refusal(401, "missing_api_key");
    assert_eq!(r.header("x-request-id").as_deref(), Some(rid));
}

#[tokio::test]
async fn missing_or_invalid_request_id_is_generated() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let bad_ids: [&[u8]; 3] = [b"", b"has spaces in it", "caf\u{e9}-id".as_bytes()];
    for bad in bad_ids {
        let mut lines = vec![bearer(&key.secret)];
        if !bad.is_empty() {
            lines.push(format!("X-Request-Id: {}", String::from_utf8_lossy(bad)));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let r = env.gw.raw(raw_request("GET", "/echo/x", &refs, b"")).await;
        r.assert_status(200);
        let returned = r.header_all("x-request-id");
        assert_eq!(
            returned.len(),
            1,
            "one X-Request-Id returned: {:?}",
            r.headers
        );
        let returned = &returned[0];
        assert!(!returned.is_empty());
        assert_ne!(returned.as_bytes(), bad, "an invalid X-Request-Id was kept");
        assert_eq!(&env.up.last().header_one("x-request-id"), returned);
    }
    // Generated ids differ between requests.
    let a = env.gw.get("/echo/x", Some(&key.secret)).await;
    let b = env.gw.get("/echo/x", Some(&key.secret)).await;
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}

#[tokio::test]
async fn method_override_headers_are_removed_and_scope_follows_the_real_method() {
    let env = Env::start().await;
    let read = env.read_key().await;
    let overrides = [
        "X-HTTP-Method-Override: DELETE",
        "X-HTTP-Method: PUT",
        "X-Method-Override: PATCH",
    ];
    let mut lines = vec![bearer(&read.secret)];
    lines.extend(overrides.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    env.gw
        .raw(raw_request("GET", "/echo/x", &refs, b""))
        .await
        .assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.method, "GET");
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(!seen.has_header(name), "{name} reached the upstream");
    }
    env.clear();

    // A read key cannot POST to a write route by claiming GET.
    let r = env
        .gw
        .send(
            env.gw
                .request("POST", "/v1/feeds/abc/refresh")
                .bearer_auth(&read.secret)
                .header("x-http-method-override", "GET"),
        )
        .await;
    r.assert_refusal(403, "insufficient_scope");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn upstream_response_headers_and_body_reach_the_client() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let r = env.gw.get("/echo/x", Some(&key.secret)).await;
    r.assert_status(200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.json()["upstream"], "live");
    env.up.set_mode(Mode::Status(418));
    env.gw
        .get("/echo/x", Some(&key.secret))
        .await
        .assert_status(418);
}

/// Client-address headers: believed only from a trusted proxy, removed in any spelling
/// (`_` for `-`, any case) from everyone else (SPEC §3 "Headers").
const CLIENT_ADDRESS_LINES: [&str; 9] = [
    "Forwarded: for=1.2.3.4;proto=http",
    "X-Real-IP: 1.2.3.4",
    "True-Client-IP: 1.2.3.4",
    "x_real_ip: 1.2.3.4",
    "TRUE_CLIENT_IP: 1.2.3.4",
    "X_Forwarded_For: 1.2.3.4",
    "x_forwarded_host: evil.test",
    "X_FORWARDED_PROTO: http",
    "forwarded: for=5.6.7.8",
];

#[tokio::test]
async fn client_address_headers_are_removed_from_an_untrusted_peer() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let mut lines = vec![auth.as_str()];
    lines.extend_from_slice(&CLIENT_ADDRESS_LINES);
    env.gw
        .raw(raw_request("GET", "/echo/x", &lines, b""))
        .await
        .assert_status(200);
    let seen = env.up.last();
    for name in seen.header_names() {
        let n = normalized(&name);
        assert!(
            !matches!(n.as_str(), "forwarded" | "x-real-ip" | "true-client-ip")
                && (!n.starts_with("x-forwarded-") || name.contains('-')),
            "{name} from an untrusted client reached the upstream: {:?}",
            seen.header_all(&name)
        );
    }
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_one("x-forwarded-proto"), "https");
}

#[tokio::test]
async fn client_address_headers_are_kept_from_a_trusted_proxy() {
    let env = Env::start_with(|b| b.trusted_proxies(&["127.0.0.1/32"])).await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    env.gw
        .raw(raw_request(
            "GET",
            "/echo/x",
            &[
                &auth,
                "Forwarded: for=1.2.3.4",
                "X-Real-IP: 1.2.3.4",
                "True-Client-IP: 1.2.3.4",
            ],
            b"",
        ))
        .await
        .assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.header_one("forwarded"), "for=1.2.3.4");
    assert_eq!(seen.header_one("x-real-ip"), "1.2.3.4");
    assert_eq!(seen.header_one("true-client-ip"), "1.2.3.4");
}
