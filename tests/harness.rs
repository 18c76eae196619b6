//! Checks of the test harness itself: the configs it generates pass keygate's own
//! validation, and the recording upstream records and misbehaves as the other tests
//! rely on. Needs no running gateway.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::sync::Notify;

fn check(builder: &GatewayBuilder, what: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let yaml = builder.yaml(dir.path());
    let path = dir.path().join("keygate.yaml");
    if let Err(e) = keygate::config::parse(&path, &yaml) {
        panic!("generated config ({what}) is refused: {e}\n{yaml}");
    }
}

#[test]
fn generated_configs_pass_validation() {
    let up = RecordingUpstream::start("live");
    let sandbox = RecordingUpstream::start("sandbox");
    let b = || GatewayBuilder::new(&up, &sandbox);
    check(&b(), "default");
    check(&b().plain(), "plain");
    check(
        &b().limit("max_header_bytes", 4096)
            .limit("max_uri_bytes", 1024)
            .limit("max_body_bytes", 1024)
            .limit("header_read_timeout", "1s")
            .limit("auth_failures_per_ip", 3)
            .limit("tls_handshake_timeout", "1s"),
        "limits",
    );
    check(&b().trusted_proxies(&["127.0.0.1/32"]), "trusted proxies");
    check(
        &b().with(|c| {
            c["identity_headers"] = json!({ "org": "X-Tenant", "key_id": "X-Client-Key",
                "scopes": "X-Client-Scopes", "environment": "X-Client-Env" })
        }),
        "identity headers",
    );
    check(
        &b().with(|c| c["upstreams"]["feeds"]["timeout"] = json!("500ms")),
        "upstream timeout",
    );
    let route = |name: &str, path: &str| json!({ "name": name, "methods": ["GET"], "path": path, "upstream": "feeds", "scope": "read" });
    check(
        &b().route(route("prec-literal", "/p/literal/x"))
            .route(route("prec-param", "/p/{a}/x"))
            .route(route("prec-wild", "/p/{*rest}"))
            .route(route("q-lit-first", "/q/lit/{b}"))
            .route(route("q-param-first", "/q/{a}/lit")),
        "precedence routes",
    );
    check(
        &b().route(json!({ "name": "m-get", "methods": ["GET"], "path": "/m", "upstream": "feeds", "scope": "read" }))
            .route(json!({ "name": "m-post", "methods": ["POST", "PUT"], "path": "/m", "upstream": "feeds", "scope": "read" })),
        "same path, other methods",
    );
    check(
        &b().route(
            json!({ "name": "hosted", "methods": ["GET"], "path": "/hosted",
                           "host": "api.example.test", "upstream": "feeds", "scope": "read" }),
        ),
        "host route",
    );
    check(
        &b().route(
            json!({ "name": "test-only", "methods": ["GET"], "path": "/test-only",
                           "upstream": "flows", "scope": "read", "environments": ["test"] }),
        ),
        "environments route",
    );
    check(
        &b().upstream(
            "kept",
            json!({ "url": up.url(), "preserve_host": true, "timeout": "5s" }),
        )
        .upstream(
            "dead",
            json!({ "url": "http://127.0.0.1:9", "connect_timeout": "1s", "timeout": "2s" }),
        ),
        "more upstreams",
    );
}

#[tokio::test]
async fn upstream_records_requests_exactly() {
    let up = RecordingUpstream::start("live");
    let mut c = RawConn::plain(up.addr).await;
    let req = raw_request(
        "POST",
        "/a//b/%2e%2e?x=1&x=2",
        &[
            "X-Dup: one",
            "x-dup: two",
            "X_Under: u",
            "Content-Length: 5",
        ],
        b"hello",
    );
    assert!(c.send(&req).await);
    let r = c
        .read_response(Duration::from_secs(5))
        .await
        .expect("response");
    r.assert_status(200);
    assert_eq!(r.json()["upstream"], "live");
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/a//b/%2e%2e?x=1&x=2");
    assert_eq!(seen.path(), "/a//b/%2e%2e");
    assert_eq!(seen.query(), Some("x=1&x=2"));
    assert_eq!(seen.header_all("x-dup"), vec!["one", "two"]);
    assert_eq!(seen.header_one("x_under"), "u");
    assert_eq!(seen.body, b"hello");
    assert!(seen.body_complete);
    assert_eq!(up.connections(), 1);
    assert_eq!(up.with_marker("%2e%2e").len(), 1);
}

#[tokio::test]
async fn upstream_modes_misbehave_as_asked() {
    let up = RecordingUpstream::start("live");
    let get = raw_request("GET", "/x", &[], b"");

    for mode in [Mode::Close, Mode::Reset] {
        up.set_mode(mode);
        let mut c = RawConn::plain(up.addr).await;
        assert!(c.send(&get).await);
        assert_eq!(
            c.read_response(Duration::from_secs(5)).await.err(),
            Some(RawEnd::Closed)
        );
    }

    up.set_mode(Mode::Delay(Duration::from_millis(300)));
    let mut c = RawConn::plain(up.addr).await;
    assert!(c.send(&get).await);
    assert_eq!(
        c.read_response(Duration::from_millis(100)).await.err(),
        Some(RawEnd::TimedOut)
    );
    c.read_response(Duration::from_secs(5))
        .await
        .expect("delayed response")
        .assert_status(200);

    up.set_mode(Mode::Status(418));
    let mut c = RawConn::plain(up.addr).await;
    assert!(c.send(&get).await);
    c.read_response(Duration::from_secs(5))
        .await
        .expect("response")
        .assert_status(418);

    up.set_mode(Mode::LargeBody(300_000));
    let mut c = RawConn::plain(up.addr).await;
    assert!(c.send(&get).await);
    let r = c
        .read_response(Duration::from_secs(5))
        .await
        .expect("large");
    assert_eq!(r.body.len(), 300_000);
    assert_eq!(&r.body[..3], b"abc");

    let gate = Arc::new(Notify::new());
    up.set_mode(Mode::Gated {
        first: Bytes::from_static(b"one;"),
        rest: Bytes::from_static(b"two"),
        gate: gate.clone(),
    });
    let mut c = RawConn::plain(up.addr).await;
    assert!(c.send(&get).await);
    assert_eq!(
        c.read_response(Duration::from_millis(300)).await.err(),
        Some(RawEnd::TimedOut),
        "a gated body does not end before the gate opens"
    );
    gate.notify_one();
    let r = c
        .read_response(Duration::from_secs(5))
        .await
        .expect("gated");
    assert_eq!(r.body, b"one;two");

    up.set_mode(Mode::Echo);
    let mut c = RawConn::plain(up.addr).await;
    let req = raw_request("POST", "/echo", &["Content-Length: 4"], b"ping");
    assert!(c.send(&req).await);
    let r = c.read_response(Duration::from_secs(5)).await.expect("echo");
    assert_eq!(r.body, b"ping");
    assert_eq!(up.last().body, b"ping");
}
