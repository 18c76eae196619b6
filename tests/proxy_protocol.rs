//! PROXY protocol (SPEC §2 "IP restrictions", §8 `listen.proxy_protocol`): with it on,
//! the client address is the PROXY source, and a connection without a valid PROXY
//! header is not served.

mod common;

use std::time::Duration;

use common::*;

fn v2_header(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h
}

async fn env_with(version: &str) -> Env {
    let v = version.to_string();
    Env::start_with(|b| b.plain().with(|c| c["listen"]["proxy_protocol"] = json!(v))).await
}

async fn send_with_header(env: &Env, header: &[u8], request: &[u8]) -> Result<Reply, RawEnd> {
    let mut conn = env.gw.raw_conn().await;
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(request);
    if !conn.send(&bytes).await {
        return Err(RawEnd::Closed);
    }
    conn.read_response(Duration::from_secs(5)).await
}

#[tokio::test]
async fn proxy_v1_source_is_the_client_address() {
    let env = env_with("v1").await;
    let key = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["10.0.0.0/8"] }))
        .await;
    let req = raw_request(
        "GET",
        "/echo/x",
        &[&bearer(&key.secret), "X-Forwarded-For: 192.0.2.1"],
        b"",
    );
    let r = send_with_header(&env, b"PROXY TCP4 10.1.2.3 127.0.0.1 50000 443\r\n", &req)
        .await
        .expect("response");
    r.assert_status(200);
    assert_eq!(
        env.up.last().header_all("x-forwarded-for"),
        vec!["10.1.2.3"],
        "the PROXY source replaces X-Forwarded-For"
    );
    env.clear();
    let r = send_with_header(&env, b"PROXY TCP4 192.0.2.9 127.0.0.1 50000 443\r\n", &req)
        .await
        .expect("response");
    r.assert_refusal(403, "ip_not_allowed");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn proxy_v2_source_is_the_client_address() {
    let env = env_with("v2").await;
    let key = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["10.0.0.0/8"] }))
        .await;
    let req = raw_request("GET", "/echo/x", &[&bearer(&key.secret)], b"");
    let r = send_with_header(
        &env,
        &v2_header([10, 9, 8, 7], [127, 0, 0, 1], 40000, 443),
        &req,
    )
    .await
    .expect("response");
    r.assert_status(200);
    assert_eq!(
        env.up.last().header_all("x-forwarded-for"),
        vec!["10.9.8.7"]
    );
    env.clear();
    let r = send_with_header(
        &env,
        &v2_header([192, 0, 2, 9], [127, 0, 0, 1], 40000, 443),
        &req,
    )
    .await
    .expect("response");
    r.assert_refusal(403, "ip_not_allowed");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn connection_without_a_proxy_header_is_not_served() {
    let env = env_with("v1").await;
    let key = env.read_key().await;
    let req = raw_request("GET", "/echo/x", &[&bearer(&key.secret)], b"");
    for header in [&b""[..], b"PROXY GARBAGE\r\n", b"PROXY TCP4 10.1.2.3\r\n"] {
        match send_with_header(&env, header, &req).await {
            Err(RawEnd::Closed) => {}
            Ok(r) => assert!(
                r.status >= 400,
                "served without a valid PROXY header ({:?}): {}",
                String::from_utf8_lossy(header),
                r.status
            ),
            Err(RawEnd::TimedOut) => panic!(
                "no answer and no hang-up for PROXY header {:?}",
                String::from_utf8_lossy(header)
            ),
        }
    }
    env.assert_nothing_forwarded();
}
