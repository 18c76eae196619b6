//! Limits and framing (SPEC §3 "Limits and timeouts", 400/413/414/431 rows, `100
//! Continue`): refused before anything is forwarded, streamed bodies cut off, slow
//! clients disconnected.

mod common;

use std::time::Duration;

use common::*;

const MAX_BODY: usize = 1024;

async fn limited() -> Env {
    Env::start_with(|b| {
        b.limit("max_header_bytes", 4096)
            .limit("max_uri_bytes", 1024)
            .limit("max_body_bytes", MAX_BODY)
            .limit("header_read_timeout", "1s")
    })
    .await
}

#[tokio::test]
async fn large_content_length_is_413_before_forwarding() {
    let env = limited().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    // The body is never sent: keygate must answer from the header alone.
    let r = env
        .gw
        .raw(raw_request(
            "POST",
            "/echo/x",
            &[&auth, "Content-Length: 100000000"],
            b"",
        ))
        .await;
    r.assert_refusal(413, "body_too_large");
    // One byte over, body sent in full.
    let body = vec![b'x'; MAX_BODY + 1];
    let len = format!("Content-Length: {}", body.len());
    env.gw
        .raw(raw_request("POST", "/echo/x", &[&auth, &len], &body))
        .await
        .assert_refusal(413, "body_too_large");
    env.assert_nothing_forwarded();

    // Exactly at the limit is fine.
    let body = vec![b'y'; MAX_BODY];
    let len = format!("Content-Length: {}", body.len());
    env.gw
        .raw(raw_request("POST", "/echo/x", &[&auth, &len], &body))
        .await
        .assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.body, body);
    assert!(seen.body_complete);
}

#[tokio::test]
async fn chunked_body_over_the_limit_aborts_the_upstream_request() {
    let env = limited().await;
    let key = env.read_key().await;
    let mut conn = env.gw.raw_conn().await;
    let head = raw_request(
        "POST",
        "/echo/x",
        &[&bearer(&key.secret), "Transfer-Encoding: chunked"],
        b"",
    );
    assert!(conn.send(&head).await);
    let chunk = vec![b'z'; 512];
    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(b"\r\n");
    // 8 × 512 = 4 KiB, four times the limit; keygate may hang up on the way.
    for _ in 0..8 {
        if !conn.send(&framed).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = conn.send(b"0\r\n\r\n").await;
    match conn.read_response(Duration::from_secs(10)).await {
        Ok(r) => {
            assert!(
                !(200..300).contains(&r.status),
                "an over-long chunked body was accepted: {} {}",
                r.status,
                r.text()
            );
            if r.error_code().is_some() {
                r.assert_refusal(413, "body_too_large");
            }
        }
        Err(RawEnd::Closed) => {}
        Err(RawEnd::TimedOut) => panic!("no answer and no hang-up after an over-long body"),
    }
    env.up
        .wait_for(
            "every forwarded body to end in an abort",
            Duration::from_secs(5),
            |reqs| reqs.iter().all(|r| r.body_error.is_some()),
        )
        .await;
    for r in env.up.requests() {
        assert!(!r.body_complete, "the upstream received a complete body");
        assert!(r.body.len() <= 4 * MAX_BODY);
    }
}

#[tokio::test]
async fn long_uri_is_414() {
    let env = limited().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let long_path = format!("/echo/{}", "a".repeat(2000));
    env.gw
        .raw(raw_request("GET", &long_path, &[&auth], b""))
        .await
        .assert_refusal(414, "uri_too_long");
    let long_query = format!("/echo/x?q={}", "b".repeat(2000));
    env.gw
        .raw(raw_request("GET", &long_query, &[&auth], b""))
        .await
        .assert_refusal(414, "uri_too_long");
    env.assert_nothing_forwarded();
    // Under the limit passes.
    let ok = format!("/echo/{}", "a".repeat(500));
    env.gw
        .raw(raw_request("GET", &ok, &[&auth], b""))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let env = limited().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let big = format!("X-Big: {}", "a".repeat(6000));
    env.gw
        .raw(raw_request("GET", "/echo/x", &[&auth, &big], b""))
        .await
        .assert_parser_refusal(431, "headers_too_large");
    let many: Vec<String> = (0..120)
        .map(|i| format!("X-Many-{i}: {}", "m".repeat(40)))
        .collect();
    let mut lines: Vec<&str> = vec![&auth];
    lines.extend(many.iter().map(String::as_str));
    env.gw
        .raw(raw_request("GET", "/echo/x", &lines, b""))
        .await
        .assert_parser_refusal(431, "headers_too_large");
    env.assert_nothing_forwarded();
    // Normal headers pass.
    let fine = format!("X-Fine: {}", "f".repeat(1000));
    env.gw
        .raw(raw_request("GET", "/echo/x", &[&auth, &fine], b""))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn slow_client_is_disconnected() {
    let env = limited().await;
    let mut conn = env.gw.raw_conn().await;
    let mut head = b"GET /v1/feeds HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..40 {
        head.extend_from_slice(format!("X-Slow-{i}: x\r\n").as_bytes());
    }
    let started = tokio::time::Instant::now();
    let mut outcome = None;
    // header_read_timeout is 1 s; one byte every 100 ms never finishes the head.
    for b in head.iter().take(120) {
        if !conn.send(std::slice::from_ref(b)).await {
            outcome = Some("closed on write".to_string());
            break;
        }
        match conn.read_response(Duration::from_millis(100)).await {
            Ok(r) => {
                outcome = Some(format!("answered {}", r.status));
                break;
            }
            Err(RawEnd::Closed) => {
                outcome = Some("closed".to_string());
                break;
            }
            Err(RawEnd::TimedOut) => {}
        }
    }
    let elapsed = started.elapsed();
    let outcome = outcome.unwrap_or_else(|| {
        panic!("a client sending headers byte by byte was still connected after {elapsed:?}")
    });
    // A 408 is a fine way to hang up; a 2xx/4xx for a request that never finished is not.
    assert!(
        outcome.starts_with("closed") || outcome == "answered 408",
        "slow client: {outcome}"
    );
    if outcome.starts_with("answered") {
        assert!(conn.wait_closed(Duration::from_secs(5)).await.is_ok());
    }
    env.assert_nothing_forwarded();
}

/// Content-Length with Transfer-Encoding (SPEC §3): 400 and the connection closed, in
/// any order and spelling, also as the second request of a kept-alive connection, and
/// nothing reaches the upstream. hyper drops Content-Length before a request exists, so
/// keygate refuses these below hyper (`proxy::framing`).
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closes() {
    let env = limited().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let cases: [&[&str]; 4] = [
        &["Content-Length: 5", "Transfer-Encoding: chunked"],
        &["Transfer-Encoding: chunked", "Content-Length: 5"],
        &["content-length: 0", "transfer-encoding: gzip, chunked"],
        &["Content-Length: 5", "Transfer-Encoding: identity"],
    ];
    let mut failures = Vec::new();
    for framing in cases {
        let mut lines = vec![auth.as_str()];
        lines.extend_from_slice(framing);
        for kept_alive in [false, true] {
            let mut conn = env.gw.raw_conn().await;
            if kept_alive {
                assert!(
                    conn.send(&raw_request("GET", "/echo/first", &[&auth], b""))
                        .await
                );
                conn.read_response(Duration::from_secs(10))
                    .await
                    .expect("first response")
                    .assert_status(200);
            }
            let _ = conn
                .send(&raw_request(
                    "POST",
                    "/echo/x",
                    &lines,
                    b"5\r\nhello\r\n0\r\n\r\n",
                ))
                .await;
            match conn.read_response(Duration::from_secs(10)).await {
                Ok(r) if r.status == 400 => {
                    r.assert_parser_refusal(400, "bad_request");
                    if conn.wait_closed(Duration::from_secs(5)).await.is_err() {
                        failures.push(format!("{framing:?}: 400 but the connection stayed open"));
                    }
                }
                Ok(r) => failures.push(format!("{framing:?}: {} {}", r.status, r.text())),
                Err(e) => failures.push(format!("{framing:?} (kept alive: {kept_alive}): {e:?}")),
            }
        }
    }
    let forwarded: Vec<String> = env
        .up
        .requests()
        .into_iter()
        .map(|r| r.target)
        .filter(|t| t != "/echo/first")
        .collect();
    assert!(
        failures.is_empty() && forwarded.is_empty(),
        "Content-Length with Transfer-Encoding not refused:\n{}\nforwarded: {forwarded:?}",
        failures.join("\n")
    );
}

/// A body that carries a conflicting head is body: the guard below hyper follows the
/// framing and does not refuse it.
#[tokio::test]
async fn a_body_that_looks_like_a_conflicting_head_is_forwarded() {
    let env = limited().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let smuggled =
        b"POST /echo/x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut body = format!("{:x}\r\n", smuggled.len()).into_bytes();
    body.extend_from_slice(smuggled);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut conn = env.gw.raw_conn().await;
    let req = raw_request(
        "POST",
        "/echo/x",
        &[&auth, "Transfer-Encoding: chunked"],
        &body,
    );
    assert!(conn.send(&req).await);
    conn.read_response(Duration::from_secs(10))
        .await
        .expect("response")
        .assert_status(200);
    assert_eq!(env.up.last().body, smuggled);
    // The connection is still usable.
    assert!(
        conn.send(&raw_request("GET", "/echo/next", &[&auth], b""))
            .await
    );
    conn.read_response(Duration::from_secs(10))
        .await
        .expect("second response")
        .assert_status(200);
}

#[tokio::test]
async fn conflicting_framing_is_400() {
    let env = limited().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let cases: [(&[&str], &[u8]); 1] = [(&["Content-Length: 5", "Content-Length: 6"], b"hello!")];
    let mut failures = Vec::new();
    for (framing, body) in cases {
        let mut lines = vec![auth.as_str()];
        lines.extend_from_slice(framing);
        let mut conn = env.gw.raw_conn().await;
        let _ = conn
            .send(&raw_request("POST", "/echo/x", &lines, body))
            .await;
        match conn.read_response(Duration::from_secs(10)).await {
            Ok(r) if r.status == 400 => {
                r.assert_parser_refusal(400, "bad_request");
            }
            Ok(r) => failures.push(format!("{framing:?}: {} {}", r.status, r.text())),
            // A parser may also just hang up on a smuggling attempt.
            Err(RawEnd::Closed) => {}
            Err(RawEnd::TimedOut) => failures.push(format!("{framing:?}: no answer")),
        }
    }
    let forwarded = env.up.requests();
    assert!(
        failures.is_empty() && forwarded.is_empty(),
        "conflicting framing not refused with 400:\n{}\nforwarded: {forwarded:?}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn continue_is_sent_only_after_authorization() {
    let env = limited().await;
    let key = env.read_key().await;

    let mut conn = env.gw.raw_conn().await;
    let head = raw_request(
        "POST",
        "/echo/x",
        &["Expect: 100-continue", "Content-Length: 5"],
        b"",
    );
    assert!(conn.send(&head).await);
    let r = conn
        .read_response(Duration::from_secs(5))
        .await
        .expect("an answer without waiting for the body");
    r.assert_refusal(401, "missing_api_key");
    env.assert_nothing_forwarded();

    let mut conn = env.gw.raw_conn().await;
    let auth = bearer(&key.secret);
    let head = raw_request(
        "POST",
        "/echo/x",
        &[&auth, "Expect: 100-continue", "Content-Length: 5"],
        b"",
    );
    assert!(conn.send(&head).await);
    let first = conn
        .read_response(Duration::from_secs(5))
        .await
        .expect("100 Continue for an authorized request");
    assert_eq!(first.status, 100, "{first:?}");
    assert!(conn.send(b"hello").await);
    let r = conn
        .read_response(Duration::from_secs(10))
        .await
        .expect("final response");
    r.assert_status(200);
    assert_eq!(env.up.last().body, b"hello");
}

/// SPEC §3: a kept-alive connection waits `idle_timeout` for its next request, not
/// `header_read_timeout` (hyper's own header timer would close it then); but a next
/// head that has begun must still be complete within `header_read_timeout`.
#[tokio::test]
async fn keep_alive_lasts_idle_timeout_and_a_begun_head_header_read_timeout() {
    let env = Env::start_with(|b| {
        b.limit("header_read_timeout", "1s")
            .limit("idle_timeout", "10s")
    })
    .await;
    // Idle for three header_read_timeouts, then the same connection is still served.
    let mut conn = served_again_after(&env, Duration::from_secs(3)).await;

    // Now a head begun and trickled, a header line every 300 ms: closed after about
    // header_read_timeout, long before idle_timeout.
    let started = tokio::time::Instant::now();
    assert!(
        conn.send(b"GET /echo/x HTTP/1.1\r\nHost: localhost\r\n")
            .await
    );
    let mut closed = false;
    for i in 0..30 {
        if !conn.send(format!("X-Slow-{i}: x\r\n").as_bytes()).await {
            closed = true;
            break;
        }
        match conn.read_response(Duration::from_millis(300)).await {
            Err(RawEnd::Closed) => {
                closed = true;
                break;
            }
            Err(RawEnd::TimedOut) => {}
            Ok(r) => panic!("an unfinished head was answered {}", r.status),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        closed,
        "a slow second head was still open after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "a slow second head was closed only after {elapsed:?} (header_read_timeout 1s)"
    );
}

/// A kept-alive connection idle for longer than hyper's own default header timer
/// (30 s, armed whenever hyper has a timer) is still served: only `idle_timeout`
/// (default 60 s) closes it.
#[tokio::test]
async fn keep_alive_outlasts_hypers_default_header_timer() {
    let env = Env::start_with(|b| b.limit("idle_timeout", "60s")).await;
    served_again_after(&env, Duration::from_secs(32)).await;
}

/// A request, `idle` without a byte, and a second request on the same connection:
/// both answered 200. The connection is returned for more.
async fn served_again_after(env: &Env, idle: Duration) -> RawConn {
    let key = env.read_key().await;
    let request = raw_request("GET", "/echo/x", &[&bearer(&key.secret)], b"");
    let mut conn = env.gw.raw_conn().await;
    assert!(conn.send(&request).await);
    conn.read_response(Duration::from_secs(5))
        .await
        .expect("first response")
        .assert_status(200);
    tokio::time::sleep(idle).await;
    assert!(conn.send(&request).await, "closed while idle for {idle:?}");
    conn.read_response(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("no second response after {idle:?} idle: {e:?}"))
        .assert_status(200);
    conn
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let env = Env::start_with(|b| b.limit("idle_timeout", "1s")).await;
    let key = env.read_key().await;
    let mut conn = env.gw.raw_conn().await;
    assert!(
        conn.send(&raw_request("GET", "/echo/x", &[&bearer(&key.secret)], b""))
            .await
    );
    conn.read_response(Duration::from_secs(5))
        .await
        .expect("response")
        .assert_status(200);
    assert!(
        conn.wait_closed(Duration::from_secs(8)).await.is_ok(),
        "an idle keep-alive connection was kept open for 8 s with idle_timeout 1s"
    );
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let env = limited().await;
    let key = env.read_key().await;
    let auth = bearer(&key.secret);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "HTTP/1.1 without Host",
            format!("GET /echo/x HTTP/1.1\r\n{auth}\r\n\r\n").into_bytes(),
        ),
        (
            "two Host headers",
            raw_request(
                "GET",
                "/echo/x",
                &["Host: a.test", "Host: b.test", &auth],
                b"",
            ),
        ),
        (
            "space in a header name",
            raw_request("GET", "/echo/x", &[&auth, "Bad Header: x"], b""),
        ),
        ("garbage request line", b"GET\r\n\r\n".to_vec()),
        (
            "invalid chunk size",
            raw_request(
                "POST",
                "/echo/x",
                &[&auth, "Transfer-Encoding: chunked"],
                b"zz\r\nhello\r\n0\r\n\r\n",
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (what, bytes) in cases {
        let mut conn = env.gw.raw_conn().await;
        let _ = conn.send(&bytes).await;
        match conn.read_response(Duration::from_secs(5)).await {
            Ok(r) if r.status == 400 => {
                r.assert_parser_refusal(400, "bad_request");
            }
            Ok(r) => failures.push(format!("{what}: {} {}", r.status, r.text())),
            Err(RawEnd::Closed) => {}
            Err(RawEnd::TimedOut) => failures.push(format!("{what}: no answer")),
        }
    }
    // A chunked body that turns out malformed may already be on its way; it must
    // not arrive complete.
    let complete: Vec<_> = env
        .up
        .requests()
        .into_iter()
        .filter(|r| r.body_complete)
        .collect();
    assert!(
        failures.is_empty() && complete.is_empty(),
        "malformed requests not refused with 400:\n{}\nforwarded: {complete:?}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn body_limit_applies_over_http2() {
    let env = limited().await;
    let key = env.read_key().await;
    let r = env
        .gw
        .send(
            env.gw
                .client()
                .post(env.gw.url("/echo/x"))
                .bearer_auth(&key.secret)
                .body(vec![b'x'; MAX_BODY * 4]),
        )
        .await;
    assert_eq!(r.version, http::Version::HTTP_2);
    r.assert_refusal(413, "body_too_large");
    env.assert_nothing_forwarded();
}
