//! SIGHUP reloads the config: new routes are served, keys and connections survive,
//! and an invalid config keeps the running one.

mod common;

use std::time::Duration;

use common::*;

async fn wait_status(env: &Env, path: &str, token: &str, want: u16) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = env.gw.get(path, Some(token)).await;
        if r.status == want {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} still {} 10 s after SIGHUP (want {want})\n{}",
            r.status,
            env.gw.logs_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_applies_a_new_route_and_keeps_keys() {
    let mut env = Env::start().await;
    let key = env.read_key().await;
    env.gw
        .get("/added", Some(&key.secret))
        .await
        .assert_refusal(404, "no_route");

    env.gw.reload_config(|c| {
        c["routes"].as_array_mut().expect("routes").push(json!({
            "name": "added", "methods": ["GET"], "path": "/added",
            "upstream": "feeds", "scope": "read"
        }))
    });
    wait_status(&env, "/added", &key.secret, 200).await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn sighup_with_an_invalid_config_keeps_the_running_one() {
    let mut env = Env::start().await;
    let key = env.read_key().await;
    env.gw.reload_config(|c| {
        c["routes"].as_array_mut().expect("routes").push(json!({
            "name": "broken", "methods": ["GET"], "path": "/broken",
            "upstream": "no-such-upstream", "scope": "read"
        }))
    });
    // Give the reload time to be tried and refused; keygate must keep running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        env.gw.is_running(),
        "keygate exited on an invalid config reload\n{}",
        env.gw.logs_text()
    );
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    env.gw
        .get("/broken", Some(&key.secret))
        .await
        .assert_refusal(404, "no_route");
}
