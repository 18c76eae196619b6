//! TLS and protocols (SPEC §3 "TLS", "Forwarding"): HTTP/1.1 and HTTP/2 by ALPN,
//! TLS 1.2 and 1.3 only, certificates from PEM files reloaded on SIGHUP, plain HTTP
//! only when asked for, and the TLS handshake timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn http1_and_http2_are_negotiated_by_alpn() {
    let env = Env::start().await;
    let key = env.read_key().await;

    let r = env
        .gw
        .send(
            env.gw
                .client_h1()
                .get(env.gw.url("/echo/x"))
                .bearer_auth(&key.secret),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.version, http::Version::HTTP_11);

    let r = env
        .gw
        .send(
            env.gw
                .client()
                .get(env.gw.url("/echo/x"))
                .bearer_auth(&key.secret),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.version, http::Version::HTTP_2, "ALPN should pick h2");
    let seen = env.up.last();
    // HTTP/2 has no Host header: the client's :authority goes in X-Forwarded-Host.
    assert_eq!(
        seen.header_one("x-forwarded-host"),
        env.gw.listen.to_string()
    );
    assert_eq!(seen.header_one("host"), env.up.addr.to_string());
    assert_eq!(seen.header_one("x-org-id"), ORG);
    assert_eq!(seen.header_one("x-api-key-id"), key.id);
    assert!(!seen.has_header("authorization"));

    // Refusals over HTTP/2 carry the same body and headers.
    let r = env.gw.get("/echo/x", None).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    r.assert_refusal(401, "missing_api_key");
    let r = env.gw.get("/nowhere", Some(&key.secret)).await;
    r.assert_refusal(404, "no_route");
}

#[tokio::test]
async fn http2_request_bodies_are_forwarded() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let body = vec![b'q'; 200_000];
    let r = env
        .gw
        .send(
            env.gw
                .client()
                .post(env.gw.url("/echo/upload?x=1"))
                .bearer_auth(&key.secret)
                .body(body.clone()),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.version, http::Version::HTTP_2);
    let seen = env.up.last();
    assert_eq!(seen.target, "/echo/upload?x=1");
    assert_eq!(seen.body, body);
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_accepted() {
    let env = Env::start().await;
    let key = env.read_key().await;
    for (min, max) in [
        (
            reqwest::tls::Version::TLS_1_2,
            reqwest::tls::Version::TLS_1_2,
        ),
        (
            reqwest::tls::Version::TLS_1_3,
            reqwest::tls::Version::TLS_1_3,
        ),
    ] {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_danger_accept_invalid_certs(true)
            .tls_version_min(min)
            .tls_version_max(max)
            .build()
            .expect("client");
        let r = env
            .gw
            .send(client.get(env.gw.url("/echo/x")).bearer_auth(&key.secret))
            .await;
        r.assert_status(200);
    }
}

/// A hand-made ClientHello offering only `version` (no supported_versions extension),
/// with ECDHE suites for both ECDSA and RSA certificates.
fn client_hello(version: u16) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut exts = Vec::new();
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    ext(&mut exts, 0x0000, &sni);
    ext(&mut exts, 0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    ext(&mut exts, 0x000b, &[0x01, 0x00]);
    ext(
        &mut exts,
        0x000d,
        &[0x00, 0x08, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03],
    );
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc009, 0xc013, 0x002f, 0x0035];
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// Whether the server answers a ClientHello with a ServerHello.
async fn server_hello_for(addr: std::net::SocketAddr, version: u16) -> bool {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&client_hello(version))
        .await
        .expect("write hello");
    let mut head = [0u8; 6];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
        Ok(Ok(_)) => head[0] == 0x16 && head[5] == 0x02,
        Ok(Err(_)) => false,
        Err(_) => panic!("no answer to a ClientHello for version {version:#06x}"),
    }
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_not_offered() {
    let env = Env::start().await;
    assert!(
        server_hello_for(env.gw.listen, 0x0303).await,
        "control: a TLS 1.2 ClientHello gets a ServerHello"
    );
    assert!(
        !server_hello_for(env.gw.listen, 0x0301).await,
        "TLS 1.0 was accepted"
    );
    assert!(
        !server_hello_for(env.gw.listen, 0x0302).await,
        "TLS 1.1 was accepted"
    );
}

#[tokio::test]
async fn plain_http_when_tls_is_none() {
    let env = Env::start_with(|b| b.plain()).await;
    assert!(env.gw.url("/").starts_with("http://"));
    let key = env.read_key().await;
    let r = env.gw.get("/echo/x", Some(&key.secret)).await;
    r.assert_status(200);
    assert_eq!(env.up.last().header_one("x-forwarded-proto"), "http");
    env.gw
        .get("/echo/x", None)
        .await
        .assert_refusal(401, "missing_api_key");
}

#[tokio::test]
async fn stalled_tls_handshake_is_closed() {
    let env = Env::start_with(|b| b.limit("tls_handshake_timeout", "1s")).await;
    let mut s = TcpStream::connect(env.gw.listen).await.expect("connect");
    let mut buf = [0u8; 64];
    // Say nothing: keygate must give up on the handshake by itself.
    let r = tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf)).await;
    match r {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("unexpected {n} bytes before any ClientHello"),
        Err(_) => panic!("a connection without a TLS handshake was kept open for 8 s"),
    }
}

fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    // Write to temporary names and rename, so keygate never reads half a file.
    std::fs::write(dir.join("tls.crt.tmp"), ck.cert.pem()).expect("write cert");
    std::fs::write(dir.join("tls.key.tmp"), ck.signing_key.serialize_pem()).expect("write key");
    std::fs::rename(dir.join("tls.key.tmp"), dir.join("tls.key")).expect("rename key");
    std::fs::rename(dir.join("tls.crt.tmp"), dir.join("tls.crt")).expect("rename cert");
    ck.cert.der().to_vec()
}

/// Handshakes trusting only `root` (for `localhost`) and returns the server's
/// end-entity certificate.
async fn handshake_trusting(addr: std::net::SocketAddr, root: &[u8]) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|c| c.to_vec()).unwrap_or_default())
}

#[tokio::test]
async fn certificate_files_are_reloaded_on_sighup_without_dropping_connections() {
    init_crypto();
    let certs = tempfile::tempdir().expect("cert dir");
    let first = write_cert(certs.path());
    let (crt, key_file) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let env = Env::start_with(|b| {
        b.with(|c| c["listen"]["tls"] = json!({ "cert": crt, "key": key_file }))
    })
    .await;
    let key = env.read_key().await;
    assert_eq!(
        handshake_trusting(env.gw.listen, &first)
            .await
            .expect("handshake with the first cert"),
        first
    );

    // A keep-alive connection opened before the reload.
    let mut old = env.gw.raw_conn().await;
    let req = raw_request("GET", "/echo/x", &[&bearer(&key.secret)], b"");
    assert!(old.send(&req).await);
    old.read_response(Duration::from_secs(5))
        .await
        .expect("first response on the old connection")
        .assert_status(200);

    let second = write_cert(certs.path());
    env.gw.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(served) = handshake_trusting(env.gw.listen, &second).await
            && served == second
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within 10 s of SIGHUP\n{}",
            env.gw.logs_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(
        old.send(&req).await,
        "the old connection was dropped by the reload"
    );
    old.read_response(Duration::from_secs(5))
        .await
        .expect("response on the old connection after the reload")
        .assert_status(200);
}
