//! HTTPS upstreams (SPEC §3 "Forwarding"): verified against `ca_file`, with the
//! upstream's own host as SNI and Host, and an optional client certificate.

mod common;

use common::pki::{TestCa, server_config};
use common::*;

fn secure_route(b: GatewayBuilder, upstream: Value) -> GatewayBuilder {
    b.upstream("secure", upstream).route(json!({
        "name": "secure", "methods": ["GET", "POST"], "path": "/secure/{*rest}",
        "upstream": "secure", "scope": "read"
    }))
}

#[tokio::test]
async fn https_upstream_is_verified_against_ca_file() {
    init_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("upstream ca");
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], false, dir.path(), "upstream");
    let up = RecordingUpstream::start_tls("secure", server_config(&leaf, None));
    let url = up.https_url();
    let env = Env::start_with(|b| {
        secure_route(
            b,
            json!({ "url": url, "ca_file": ca_file, "connect_timeout": "2s", "timeout": "5s" }),
        )
    })
    .await;
    let key = env.read_key().await;
    for _ in 0..2 {
        let r = env.gw.get("/secure/x?y=1", Some(&key.secret)).await;
        r.assert_status(200);
        assert_eq!(r.json()["upstream"], "secure");
    }
    let seen = up.last();
    assert_eq!(seen.target, "/secure/x?y=1");
    assert_eq!(
        seen.sni.as_deref(),
        Some("localhost"),
        "SNI is the upstream's host"
    );
    assert_eq!(
        seen.header_one("host"),
        format!("localhost:{}", up.addr.port()),
        "Host is the upstream's host"
    );
    assert_eq!(seen.header_one("x-org-id"), ORG);
    assert!(up.connections() <= 1, "HTTPS connections are pooled too");
}

#[tokio::test]
async fn https_upstream_with_an_untrusted_certificate_is_502() {
    init_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("unknown ca");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], false, dir.path(), "upstream");
    let up = RecordingUpstream::start_tls("secure", server_config(&leaf, None));
    let url = up.https_url();
    let env = Env::start_with(|b| {
        secure_route(
            b,
            json!({ "url": url, "connect_timeout": "2s", "timeout": "5s" }),
        )
    })
    .await;
    let key = env.read_key().await;
    env.gw
        .get("/secure/x", Some(&key.secret))
        .await
        .assert_refusal(502, "upstream_unavailable");
    assert_eq!(up.count(), 0, "no request over an unverified connection");
}

#[tokio::test]
async fn client_certificate_is_presented_to_the_upstream() {
    init_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("internal ca");
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], false, dir.path(), "upstream");
    let client = ca.leaf(&["keygate.test"], true, dir.path(), "client");
    let up = RecordingUpstream::start_tls("secure", server_config(&leaf, Some(&ca)));
    let url = up.https_url();
    let env = Env::start_with(|b| {
        let b = secure_route(
            b,
            json!({ "url": url.clone(), "ca_file": ca_file.clone(),
                    "client_cert": client.cert_file, "client_key": client.key_file,
                    "connect_timeout": "2s", "timeout": "5s" }),
        );
        // The same upstream without a client certificate.
        b.upstream(
            "anonymous",
            json!({ "url": url, "ca_file": ca_file, "connect_timeout": "2s", "timeout": "5s" }),
        )
        .route(
            json!({ "name": "anonymous", "methods": ["GET"], "path": "/anonymous",
                       "upstream": "anonymous", "scope": "read" }),
        )
    })
    .await;
    let key = env.read_key().await;
    env.gw
        .get("/secure/x", Some(&key.secret))
        .await
        .assert_status(200);
    assert_eq!(
        up.last().client_cert.as_deref(),
        Some(client.der.as_slice())
    );
    up.clear();
    env.gw
        .get("/anonymous", Some(&key.secret))
        .await
        .assert_refusal(502, "upstream_unavailable");
    assert_eq!(up.count(), 0);
}
