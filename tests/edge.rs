//! The edge against clients that try to hold it open or flood it (SPEC §3 "Limits and
//! timeouts"), through the real binary and raw sockets: h2 clients that only answer
//! PINGs, h2 frame floods (rapid reset, CONTINUATION, SETTINGS, PING), oversized header
//! lists, and the admin and metrics ports' timeouts and connection cap.

mod common;

use std::time::Duration;

use common::h2raw::*;
use common::ports::free_port;
use common::*;
use tokio::time::Instant;

/// The gateway's resident memory in KiB (Linux), to show a flood is not buffered.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn h2_client_that_only_answers_pings_is_closed_at_header_read_timeout() {
    let env = Env::start_with(|b| {
        b.limit("header_read_timeout", "1s")
            .limit("idle_timeout", "30s")
    })
    .await;
    // Preface only, answering PINGs and sending its own: bytes move, no request starts.
    let mut c = H2Conn::tls(env.gw.listen).await;
    assert!(c.handshake().await);
    let (frames, closed) = c
        .ping_until_closed(Duration::from_secs(10), Some(Duration::from_millis(100)))
        .await;
    assert!(
        closed,
        "an h2 connection that only exchanges PINGs was open after 10 s with \
         header_read_timeout 1s; frames: {frames:?}"
    );
    let pongs = frames
        .iter()
        .filter(|f| f.kind == PING && f.flags & ACK != 0)
        .count();
    assert!(pongs > 3, "PINGs were answered meanwhile: {pongs}");
    assert!(
        frames.iter().any(|f| f.kind == GOAWAY),
        "GOAWAY: {frames:?}"
    );

    // A header block that never ends (no END_HEADERS, no CONTINUATION): nothing else
    // may be sent meanwhile, so this one only waits.
    let mut c = H2Conn::tls(env.gw.listen).await;
    assert!(c.handshake().await);
    c.settle().await;
    let half_block = frame(HEADERS, 0, 1, &request_block("GET", "/v1/feeds", &[]));
    assert!(c.send(&half_block).await);
    let started = Instant::now();
    let (frames, closed) = c.ping_until_closed(Duration::from_secs(10), None).await;
    eprintln!("half a header block: closed after {:?}", started.elapsed());
    // Closed by the deadline, not as a protocol error.
    assert!(
        !frames
            .iter()
            .any(|f| f.kind == GOAWAY && f.error_code() == Some(1)),
        "{frames:?}"
    );
    assert!(
        closed,
        "an h2 connection with half a header block was open after 10 s with \
         header_read_timeout 1s; frames: {frames:?}"
    );
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn h2_connection_without_open_streams_is_closed_at_idle_timeout_whatever_pings() {
    let env = Env::start_with(|b| {
        b.limit("header_read_timeout", "5s")
            .limit("idle_timeout", "1s")
    })
    .await;
    let key = env.read_key().await;
    let mut c = H2Conn::tls(env.gw.listen).await;
    assert!(c.handshake().await);
    let auth = format!("Bearer {}", key.secret);
    let block = request_block("GET", "/v1/feeds", &[("authorization", &auth)]);
    assert!(
        c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
    );
    assert_eq!(c.response(1, Duration::from_secs(10)).await.ok(), Some(200));
    let (frames, closed) = c
        .ping_until_closed(Duration::from_secs(10), Some(Duration::from_millis(100)))
        .await;
    assert!(
        closed,
        "an idle h2 connection answering PINGs was open after 10 s with idle_timeout 1s"
    );
    assert!(
        frames.iter().any(|f| f.kind == GOAWAY),
        "closed with a GOAWAY: {frames:?}"
    );
}

#[tokio::test]
async fn h2_rapid_reset_is_cut_off() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let mut c = H2Conn::tls(env.gw.listen).await;
    assert!(c.handshake().await);
    let block = request_block("GET", "/v1/feeds", &[]);
    // CVE-2023-44487: open and cancel streams as fast as possible.
    let mut flood = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        flood.extend_from_slice(&frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        flood.extend_from_slice(&frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let _ = c.send_within(&flood, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut goaway = None;
    loop {
        match c.read_frame(deadline).await {
            Ok(f) if f.kind == GOAWAY => {
                goaway = Some(f);
                break;
            }
            Ok(_) => {}
            Err(RawEnd::Closed) => break,
            Err(RawEnd::TimedOut) => panic!("a rapid-reset flood was neither refused nor closed"),
        }
    }
    let goaway = goaway.expect("a GOAWAY before the close");
    assert_eq!(
        goaway.error_code(),
        Some(ENHANCE_YOUR_CALM),
        "rapid reset answered with GOAWAY ENHANCE_YOUR_CALM: {goaway:?}"
    );
    // The gateway still serves everyone else.
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn h2_continuation_flood_is_cut_off() {
    let env = Env::start().await;
    let mut c = H2Conn::tls(env.gw.listen).await;
    assert!(c.handshake().await);
    // CVE-2024-27316 style: a header block that never ends, one small CONTINUATION
    // frame at a time (each well under any size limit on its own).
    let mut flood = frame(HEADERS, 0, 1, &request_block("GET", "/v1/feeds", &[]));
    let field = hpack(&[("x-a", "b")]);
    for _ in 0..50_000 {
        flood.extend_from_slice(&frame(CONTINUATION, 0, 1, &field));
    }
    let _ = c.send_within(&flood, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut end = None;
    while end.is_none() {
        match c.read_frame(deadline).await {
            Ok(f) if f.kind == GOAWAY || f.kind == RST_STREAM => end = Some(format!("{f:?}")),
            Ok(_) => {}
            Err(RawEnd::Closed) => end = Some("closed".into()),
            Err(RawEnd::TimedOut) => panic!("a CONTINUATION flood was neither refused nor closed"),
        }
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn h2_oversized_header_list_is_refused() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let mut c = H2Conn::tls(env.gw.listen).await;
    assert!(c.handshake().await);
    let auth = format!("Bearer {}", key.secret);
    let big = "x".repeat(60_000);
    let block = request_block(
        "GET",
        "/v1/feeds",
        &[("authorization", &auth), ("x-big", &big)],
    );
    // Split into frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
    let pieces: Vec<&[u8]> = block.chunks(16_384).collect();
    let mut bytes = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let flags = if last { END_HEADERS | END_STREAM } else { 0 };
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        bytes.extend_from_slice(&frame(kind, flags, 1, p));
    }
    let _ = c.send_within(&bytes, Duration::from_secs(10)).await;
    match c.response(1, Duration::from_secs(10)).await {
        Ok(status) => assert_eq!(status, 431, "an oversized header list"),
        Err(f) => assert!(
            f.kind == RST_STREAM || f.kind == GOAWAY,
            "refused at the h2 layer: {f:?}"
        ),
    }
    env.assert_nothing_forwarded();
}

/// SETTINGS and PING floods (CVE-2019-9515, -9512): each frame asks for an answer; a
/// client that never reads must stall its own writes instead of making the gateway
/// queue answers, and everyone else is still served.
#[tokio::test]
async fn h2_settings_and_ping_floods_are_not_buffered() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let pid = env.gw.pid();
    let before = rss_kib(pid);
    for (name, one) in [
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
        ("PING", frame(PING, 0, 0, &[7; 8])),
    ] {
        let mut c = H2Conn::tls(env.gw.listen).await;
        assert!(c.handshake().await);
        let batch: Vec<u8> = one.repeat(65_536);
        // At most 64 batches (4 Mi frames, about 60 MiB): the gateway would owe as
        // many answers if it buffered them.
        let mut outcome = "all written";
        for _ in 0..64 {
            match c.send_within(&batch, Duration::from_secs(3)).await {
                Ok(true) => {}
                Ok(false) => {
                    outcome = "closed";
                    break;
                }
                Err(()) => {
                    outcome = "stalled";
                    break;
                }
            }
        }
        assert_ne!(
            outcome, "all written",
            "a {name} flood of 4 Mi frames from a client that never reads was all accepted"
        );
        // Meanwhile the data plane serves others.
        env.gw
            .get("/v1/feeds", Some(&key.secret))
            .await
            .assert_status(200);
    }
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the gateway grew by {grown} KiB during the floods"
    );
}

#[tokio::test]
async fn admin_and_metrics_ports_close_silent_and_half_sent_connections() {
    let metrics_port = free_port();
    let env = Env::start_with(|b| {
        b.limit("header_read_timeout", "1s")
            .limit("idle_timeout", "2s")
            .with(|c| c["metrics"] = json!({ "address": format!("127.0.0.1:{metrics_port}") }))
    })
    .await;
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    for (port, addr) in [("admin", env.gw.admin), ("metrics", metrics)] {
        for (what, bytes) in [
            ("nothing", &b""[..]),
            (
                "half a request head",
                &b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..],
            ),
            ("an h2 preface", PREFACE),
        ] {
            let mut c = RawConn::plain(addr).await;
            assert!(c.send(bytes).await);
            assert!(
                c.wait_closed(Duration::from_secs(6)).await.is_ok(),
                "the {port} port kept a connection that sent {what} for 6 s \
                 (header_read_timeout 1s)"
            );
        }
        // A kept-alive connection is closed after idle_timeout.
        let mut c = RawConn::plain(addr).await;
        let path = if port == "admin" {
            "/healthz"
        } else {
            "/metrics"
        };
        assert!(c.send(&raw_request("GET", path, &[], b"")).await);
        c.read_response(Duration::from_secs(5))
            .await
            .expect("response")
            .assert_status(200);
        assert!(
            c.wait_closed(Duration::from_secs(8)).await.is_ok(),
            "the {port} port kept an idle connection for 8 s (idle_timeout 2s)"
        );
    }
}

#[tokio::test]
async fn admin_port_has_its_own_connection_cap() {
    let env = Env::start_with(|b| {
        b.limit("header_read_timeout", "4s")
            .limit("idle_timeout", "1s")
            .with(|c| c["admin"]["max_connections"] = json!(3))
    })
    .await;
    let key = env.read_key().await;
    // The test client's pooled admin connections go idle and are closed.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    // Three slow clients take every admin slot.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = RawConn::plain(env.gw.admin).await;
        assert!(c.send(b"GET /healthz HTTP/1.1\r\n").await);
        slow.push(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut waiting = RawConn::plain(env.gw.admin).await;
    assert!(
        waiting
            .send(&raw_request("GET", "/healthz", &[], b""))
            .await
    );
    assert_eq!(
        waiting
            .read_response(Duration::from_millis(1500))
            .await
            .err(),
        Some(RawEnd::TimedOut),
        "a fourth admin connection was served with admin.max_connections 3"
    );
    // The data plane has its own slots.
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    // Once the slow clients time out, the waiting one is served.
    let r = waiting
        .read_response(Duration::from_secs(8))
        .await
        .expect("the waiting admin connection is served once a slot frees");
    r.assert_status(200);
    for mut c in slow {
        assert!(c.wait_closed(Duration::from_secs(2)).await.is_ok());
    }
}
