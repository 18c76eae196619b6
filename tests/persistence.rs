//! Durability of the embedded store (SPEC §4): keys survive a clean restart and a
//! SIGKILL right after the admin API acknowledged them; so does a revoke.

mod common;

use common::*;

#[tokio::test]
async fn keys_survive_a_restart() {
    let mut env = Env::start().await;
    let key = env.read_key().await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    let token_before = env.gw.admin_token.clone();

    let status = env.gw.terminate().await;
    assert!(
        status.is_some(),
        "keygate did not exit within 10 s of SIGTERM\n{}",
        env.gw.logs_text()
    );
    env.gw.restart().await;

    assert_eq!(
        env.gw.admin_token, token_before,
        "the bootstrap token file is not rewritten once a principal exists"
    );
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    let r = env
        .gw
        .admin_call("GET", &format!("/v1/orgs/{ORG}/keys/{}", key.id), None)
        .await;
    r.assert_status(200);
    assert!(
        !r.text().contains(&key.secret),
        "the secret is never returned after creation"
    );
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let mut env = Env::start().await;
    let kept = env.read_key().await;
    let revoked = env.read_key().await;
    env.gw.revoke_key(ORG, &revoked.id).await;
    // Created last, killed at once after the 201.
    let fresh = env.read_key().await;
    env.gw.kill9();

    env.gw.restart().await;
    env.gw
        .get("/v1/feeds", Some(&fresh.secret))
        .await
        .assert_status(200);
    env.gw
        .get("/v1/feeds", Some(&kept.secret))
        .await
        .assert_status(200);
    env.clear();
    env.gw
        .get("/v1/feeds", Some(&revoked.secret))
        .await
        .assert_refusal(401, "revoked_api_key");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn day_and_month_quotas_survive_a_restart() {
    let mut env = Env::start().await;
    let key = env
        .gw
        .create_key(
            ORG,
            serde_json::json!({"name": "quota", "scopes": ["read"],
                               "rate_limit": {"per_day": 3, "per_month": 5}}),
        )
        .await;
    for _ in 0..2 {
        env.gw
            .get("/v1/feeds", Some(&key.secret))
            .await
            .assert_status(200);
    }
    let status = env.gw.terminate().await;
    assert!(
        status.is_some(),
        "keygate did not exit within 10 s of SIGTERM"
    );
    env.gw.restart().await;

    // The two requests of the day before the restart still count: one is left.
    let r = env.gw.get("/v1/feeds", Some(&key.secret)).await;
    r.assert_status(200);
    assert_eq!(
        r.header("ratelimit-remaining").as_deref(),
        Some("0"),
        "{r:?}"
    );
    let r = env.gw.get("/v1/feeds", Some(&key.secret)).await;
    r.assert_status(429);
    assert!(r.text().contains("quota_exceeded"), "{}", r.text());
}
