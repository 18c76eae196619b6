//! Logs (SPEC §1, §4 "Access log", §5 "Bootstrap"): one JSON access-log line per
//! request, and never a token, an admin token or a query string in anything keygate
//! prints.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn logs_never_contain_secrets_or_query_strings() {
    let env = Env::start().await;
    let key = env.write_key().await;
    let unknown = unknown_token("kg", "live");

    let allowed = env
        .gw
        .send(
            env.gw
                .request("GET", "/echo/x?qmarker=allowed")
                .bearer_auth(&key.secret)
                .header("x-request-id", "log-check-allowed"),
        )
        .await;
    allowed.assert_status(200);
    env.gw
        .send(
            env.gw
                .request(
                    "POST",
                    &format!("/flows/f1/execute?qmarker=querykey&api_key={}", key.secret),
                )
                .header("x-request-id", "log-check-querykey"),
        )
        .await
        .assert_status(200);
    env.gw
        .send(
            env.gw
                .request("GET", "/v1/feeds?qmarker=refused")
                .bearer_auth(&unknown)
                .header("x-request-id", "log-check-refused"),
        )
        .await
        .assert_refusal(401, "invalid_api_key");

    // Log lines may be written just after the response.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let logs = loop {
        let logs = env.gw.logs_text();
        if logs.contains("log-check-refused") || tokio::time::Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for (what, needle) in [
        ("an API key", key.secret.as_str()),
        ("a presented unknown token", unknown.as_str()),
        ("the admin token", env.gw.admin_token.as_str()),
        ("a query string", "qmarker"),
    ] {
        assert!(!logs.contains(needle), "keygate logged {what}:\n{logs}");
    }
    for rid in [
        "log-check-allowed",
        "log-check-querykey",
        "log-check-refused",
    ] {
        let line = logs
            .lines()
            .find(|l| l.contains(rid))
            .unwrap_or_else(|| panic!("no access-log line for request {rid}:\n{logs}"));
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("access-log line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
}

/// Access-log lines are buffered (src/logbuf.rs), yet none is lost on SIGTERM: every
/// request answered before the signal has its line in the log once keygate has exited.
#[tokio::test]
async fn sigterm_loses_no_access_log_line() {
    let mut env = Env::start().await;
    let key = env.write_key().await;
    const N: usize = 200;
    for i in 0..N {
        env.gw
            .send(
                env.gw
                    .request("GET", "/echo/x")
                    .bearer_auth(&key.secret)
                    .header("x-request-id", format!("flush-check-{i}")),
            )
            .await
            .assert_status(200);
    }
    assert!(
        env.gw.terminate().await.is_some(),
        "keygate did not exit within 10 s of SIGTERM"
    );
    let logs = env.gw.logs_text();
    let logged = (0..N)
        .filter(|i| logs.contains(&format!("\"flush-check-{i}\"")))
        .count();
    assert_eq!(logged, N, "access-log lines lost on SIGTERM");
}
