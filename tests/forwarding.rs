//! Forwarding (SPEC §3 "Forwarding", 502/504 rows): bodies stream both ways, pooled
//! connections, and upstream failures map to `upstream_unavailable` /
//! `upstream_timeout` without retrying a request that was already written.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::sync::{Notify, mpsc};

#[tokio::test]
async fn refused_upstream_is_502_upstream_unavailable() {
    let dead = format!("http://127.0.0.1:{}", upstream::dead_port());
    let env = Env::start_with(|b| {
        b.upstream(
            "dead",
            json!({ "url": dead, "connect_timeout": "1s", "timeout": "2s" }),
        )
        .route(json!({ "name": "dead", "methods": ["GET"], "path": "/dead",
                       "upstream": "dead", "scope": "read" }))
    })
    .await;
    let key = env.read_key().await;
    env.gw
        .get("/dead", Some(&key.secret))
        .await
        .assert_refusal(502, "upstream_unavailable");
}

#[tokio::test]
async fn reset_or_closed_upstream_is_502_and_not_retried() {
    let env = Env::start().await;
    let key = env.read_key().await;
    for mode in [Mode::Reset, Mode::Close] {
        env.clear();
        env.up.set_mode(mode);
        env.gw
            .get("/echo/x", Some(&key.secret))
            .await
            .assert_refusal(502, "upstream_unavailable");
        // The request was written upstream, so it must not be sent again.
        assert_eq!(env.up.count(), 1, "a written request was retried");
    }
}

#[tokio::test]
async fn slow_upstream_is_504_upstream_timeout() {
    let env =
        Env::start_with(|b| b.with(|c| c["upstreams"]["feeds"]["timeout"] = json!("500ms"))).await;
    let key = env.read_key().await;
    env.up.set_mode(Mode::Delay(Duration::from_secs(4)));
    env.gw
        .get("/echo/x", Some(&key.secret))
        .await
        .assert_refusal(504, "upstream_timeout");
    env.up.set_mode(Mode::Ok);
    env.gw
        .get("/echo/x", Some(&key.secret))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn method_query_and_body_are_forwarded_intact() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = env
            .gw
            .send(
                env.gw
                    .request(method, "/echo/a/b?x=1&y=two%20words")
                    .bearer_auth(&key.secret)
                    .body(body.clone()),
            )
            .await;
        r.assert_status(200);
        let seen = env.up.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.target, "/echo/a/b?x=1&y=two%20words");
        assert!(seen.body_complete);
        assert_eq!(seen.body.len(), body.len());
        assert!(seen.body == body, "{method} body changed on the way");
    }
}

#[tokio::test]
async fn large_response_body_arrives_intact() {
    let env = Env::start().await;
    let key = env.read_key().await;
    const SIZE: usize = 8 * 1024 * 1024;
    env.up.set_mode(Mode::LargeBody(SIZE));
    let r = env.gw.get("/echo/big", Some(&key.secret)).await;
    r.assert_status(200);
    assert_eq!(r.body.len(), SIZE);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == b'a' + (i % 26) as u8),
        "body bytes changed on the way"
    );
}

#[tokio::test]
async fn response_body_is_streamed_not_buffered() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let gate = Arc::new(Notify::new());
    env.up.set_mode(Mode::Gated {
        first: Bytes::from_static(b"first-part;"),
        rest: Bytes::from_static(b"second-part"),
        gate: gate.clone(),
    });
    let mut resp = tokio::time::timeout(
        Duration::from_secs(10),
        env.gw
            .request("GET", "/echo/stream")
            .bearer_auth(&key.secret)
            .send(),
    )
    .await
    .expect("response headers while the upstream body is still open")
    .expect("request");
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    while got.len() < b"first-part;".len() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("the first part arrives before the upstream finishes: keygate buffers")
            .expect("chunk")
            .expect("body not ended");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"first-part;");
    gate.notify_one();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("rest of the body")
        .expect("chunk")
    {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"first-part;second-part");
}

#[tokio::test]
async fn request_body_is_streamed_not_buffered() {
    let env = Env::start().await;
    let key = env.read_key().await;
    env.up.set_mode(Mode::Echo);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let send = env
        .gw
        .request("POST", "/echo/upload")
        .bearer_auth(&key.secret)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    tx.send(Ok(Bytes::from_static(b"ping;")))
        .await
        .expect("send");
    let mut resp = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("response headers while the request body is still open")
        .expect("request");
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the echo of the first part before the request body ends: keygate buffers")
        .expect("chunk")
        .expect("body not ended");
    assert_eq!(&first[..], b"ping;");
    tx.send(Ok(Bytes::from_static(b"pong")))
        .await
        .expect("send");
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("rest of the echo")
        .expect("chunk")
    {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"pong");
    assert_eq!(env.up.last().body, b"ping;pong");
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let env = Env::start().await;
    let key = env.read_key().await;
    for _ in 0..6 {
        env.gw
            .get("/echo/x", Some(&key.secret))
            .await
            .assert_status(200);
        // Lets the finished connection settle back into the pool.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.up.count(), 6);
    assert!(
        env.up.connections() <= 2,
        "6 sequential requests opened {} upstream connections",
        env.up.connections()
    );
}

/// An HTTP/1.0 upstream (like python's `http.server`) on a free loopback port: each
/// connection gets one `HTTP/1.0 200 OK` with a body, then is closed. Serves at most
/// `max` connections, each within a bounded time.
fn http10_upstream(max: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(
                b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3\r\n\
                  Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            );
        }
    });
    url
}

#[tokio::test]
async fn an_http10_upstream_does_not_change_the_clients_protocol() {
    let upstream = http10_upstream(16);
    let env = Env::start_with(|b| {
        b.plain()
            .upstream("old", json!({ "url": upstream, "timeout": "5s" }))
            .route(json!({ "name": "old", "methods": ["GET"], "path": "/old",
                           "upstream": "old", "scope": "read" }))
    })
    .await;
    let key = env.read_key().await;
    // Two requests on one HTTP/1.1 connection: both answered in HTTP/1.1, and the
    // connection stays open for the second.
    let mut conn = env.gw.raw_conn().await;
    for round in 0..2 {
        let request = raw_request("GET", "/old", &[&bearer(&key.secret)], b"");
        assert!(
            conn.send(&request).await,
            "keygate closed the connection before request {round}"
        );
        let reply = conn
            .read_response(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("no response to request {round}: {e:?}"));
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.version, http::Version::HTTP_11, "{reply:?}");
        assert_eq!(reply.body, b"hello");
        assert_ne!(
            reply.header("connection").as_deref(),
            Some("close"),
            "{reply:?}"
        );
    }
    // HTTP/2 clients are unaffected: the TLS gateway negotiates h2 with reqwest.
    let tls = Env::start_with(|b| {
        b.upstream("old", json!({ "url": upstream, "timeout": "5s" }))
            .route(json!({ "name": "old", "methods": ["GET"], "path": "/old",
                           "upstream": "old", "scope": "read" }))
    })
    .await;
    let key = tls.read_key().await;
    let reply = tls.gw.get("/old", Some(&key.secret)).await;
    reply.assert_status(200);
    assert_eq!(reply.version, http::Version::HTTP_2);
}

/// A scripted HTTP/1.1 upstream on a free loopback port: each request (a head
/// without a body) gets the next of `replies` as raw bytes, on connections kept open
/// unless a reply says to close after it. Returns its URL and its count of
/// connections. Serves at most `replies.len()` requests, each within a bounded time.
fn scripted_upstream(
    replies: Vec<(&'static [u8], bool)>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let max = replies.len();
    let replies = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        replies,
    )));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let replies = replies.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                        match s.read(&mut byte) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => head.push(byte[0]),
                        }
                    }
                    let Some((reply, close)) = replies.lock().expect("replies").pop_front() else {
                        return;
                    };
                    if s.write_all(reply).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (url, connections)
}

/// keygate's own upstream client (a request without a body to a plain-HTTP upstream)
/// reads what hyper's would: informational heads skipped, chunked bodies with
/// extensions and trailers, `HEAD` without a body, a body that ends with the
/// connection; it keeps a connection whose response ended cleanly, and answers 502
/// to a malformed response.
#[tokio::test]
async fn the_upstream_client_follows_every_response_framing() {
    let (upstream, connections) = scripted_upstream(vec![
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n\
              3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nTrailer-A: x\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            true,
        ),
    ]);
    let env = Env::start_with(|b| {
        b.plain()
            .upstream("scripted", json!({ "url": upstream, "timeout": "5s" }))
            .route(
                json!({ "name": "scripted", "methods": ["GET", "HEAD"], "path": "/s",
                           "upstream": "scripted", "scope": "read" }),
            )
    })
    .await;
    let key = env.read_key().await;
    let get = |method: &'static str| {
        env.gw
            .send(env.gw.request(method, "/s").bearer_auth(&key.secret))
    };

    let r = get("GET").await;
    r.assert_status(200);
    assert_eq!(r.body, b"abcdefg");
    assert_eq!(r.header("x-up").as_deref(), Some("1"));
    assert!(r.header("trailer-a").is_none(), "{r:?}");

    let r = get("GET").await;
    r.assert_status(200);
    assert_eq!(r.body, b"hello");

    let r = get("HEAD").await;
    r.assert_status(200);
    assert_eq!(r.header("content-length").as_deref(), Some("5"));
    assert!(r.body.is_empty());

    let r = get("GET").await;
    r.assert_status(404);
    assert!(r.body.is_empty());
    // Four responses that ended cleanly: one upstream connection.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    let r = get("GET").await;
    r.assert_status(200);
    assert_eq!(r.body, b"until the end");

    get("GET").await.assert_refusal(502, "upstream_unavailable");
    // The body that ended with its connection took that connection with it.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}
