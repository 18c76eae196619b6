//! Credentials and key status (SPEC §3 "Credentials", the 401 rows, and "Guessing"):
//! every refusal has its status, code, `X-Request-Id`, `WWW-Authenticate`, and never
//! reaches the upstream.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn no_credential_is_401_missing_api_key() {
    let env = Env::start().await;
    let r = env.gw.get("/v1/feeds", None).await;
    r.assert_refusal(401, "missing_api_key");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keygate""#)
    );
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn malformed_tokens_are_401_invalid_api_key() {
    let env = Env::start().await;
    let good = unknown_token("kg", "live");
    let cases = [
        "nonsense".to_string(),
        bad_checksum(&good),
        // Right shape and checksum, wrong deployment prefix.
        unknown_token("zz", "live"),
        good.replace("_live_", "_prod_"),
        good[..good.len() - 1].to_string(),
        format!("{good}x"),
    ];
    for token in &cases {
        let r = env.gw.get("/v1/feeds", Some(token)).await;
        r.assert_refusal(401, "invalid_api_key");
        assert!(
            !r.text().contains(token.as_str()),
            "the error body must not echo the token"
        );
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn unknown_and_deleted_keys_are_401_invalid_api_key() {
    let env = Env::start().await;
    env.gw
        .get("/v1/feeds", Some(&unknown_token("kg", "live")))
        .await
        .assert_refusal(401, "invalid_api_key");
    env.assert_nothing_forwarded();

    let key = env.read_key().await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    env.gw.delete_key(ORG, &key.id).await;
    env.clear();
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_refusal(401, "invalid_api_key");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let env = Env::start().await;
    let key = env.read_key().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = env
            .gw
            .send(
                env.gw
                    .request("GET", "/v1/feeds")
                    .header("authorization", format!("{scheme} {}", key.secret)),
            )
            .await;
        r.assert_status(200);
    }
    assert_eq!(env.up.count(), 4);
}

#[tokio::test]
async fn two_authorization_headers_are_401_invalid_api_key() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let other = env.read_key().await;
    for (a, b) in [(&key.secret, &key.secret), (&key.secret, &other.secret)] {
        let req = raw_request("GET", "/v1/feeds", &[&bearer(a), &bearer(b)], b"");
        env.gw.raw(req).await.assert_refusal(401, "invalid_api_key");
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn header_and_query_credential_together_are_401_invalid_api_key() {
    let env = Env::start().await;
    let key = env.write_key().await;
    let path = format!("/flows/abc/execute?api_key={}", key.secret);
    let r = env.gw.call("POST", &path, Some(&key.secret)).await;
    r.assert_refusal(401, "invalid_api_key");
    // Two api_key parameters are two credentials as well.
    let path = format!("/flows/abc/execute?api_key={0}&api_key={0}", key.secret);
    env.gw
        .call("POST", &path, None)
        .await
        .assert_refusal(401, "invalid_api_key");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn query_key_on_route_without_query_key_is_401_invalid_api_key() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let r = env
        .gw
        .get(&format!("/v1/feeds?api_key={}", key.secret), None)
        .await;
    r.assert_refusal(401, "invalid_api_key");
    assert!(!r.text().contains(&key.secret));
    // Even alongside a valid header credential, api_key in the query is a credential.
    env.gw
        .get(
            &format!("/v1/feeds?api_key={}", key.secret),
            Some(&key.secret),
        )
        .await
        .assert_refusal(401, "invalid_api_key");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn query_key_works_where_allowed_and_is_stripped() {
    let env = Env::start().await;
    let key = env.write_key().await;
    let path = format!("/flows/abc/execute?x=1&api_key={}&y=2", key.secret);
    env.gw.call("POST", &path, None).await.assert_status(200);
    let seen = env.up.last();
    assert_eq!(seen.path(), "/flows/abc/execute");
    assert!(
        !seen.target.contains("api_key") && !seen.target.contains(&key.secret),
        "api_key must not be forwarded: {}",
        seen.target
    );
    assert_eq!(seen.query(), Some("x=1&y=2"));
    assert!(!seen.has_header("authorization"));
}

#[tokio::test]
async fn revocation_is_effective_on_the_next_request() {
    let env = Env::start().await;
    let key = env.read_key().await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    env.gw.revoke_key(ORG, &key.id).await;
    env.clear();
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_refusal(401, "revoked_api_key");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn expired_key_is_401_expired_api_key() {
    let env = Env::start().await;
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let key = env
        .key(json!({ "scopes": ["read"], "expires_at": expires.to_string() }))
        .await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    let now = jiff::Timestamp::now();
    if expires > now {
        let wait = now.duration_until(expires).unsigned_abs();
        tokio::time::sleep(wait + Duration::from_millis(300)).await;
    }
    env.clear();
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_refusal(401, "expired_api_key");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn key_of_disabled_creator_is_suspended_under_creator_policy() {
    let env = Env::start().await;
    let gw = &env.gw;
    let r = gw
        .admin_call(
            "POST",
            "/v1/orgs",
            Some(json!({ "id": "strict", "name": "Strict", "key_policy": "creator" })),
        )
        .await;
    assert!(
        r.status == 201 || r.status == 200,
        "create org: {}",
        r.text()
    );
    let r = gw
        .admin_call(
            "POST",
            "/v1/principals",
            Some(
                json!({ "name": "alice", "role": "admin", "orgs": ["strict"], "api_access": true }),
            ),
        )
        .await;
    assert!(
        r.status == 201 || r.status == 200,
        "create principal: {}",
        r.text()
    );
    let p = r.json();
    let pid = p["principal"]["id"]
        .as_str()
        .expect("principal.id")
        .to_string();
    let ptoken = p["token"].as_str().expect("token").to_string();
    let key = gw
        .create_key_as(&ptoken, "strict", json!({ "scopes": ["read"] }))
        .await;
    gw.get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);

    let r = gw
        .admin_call(
            "PATCH",
            &format!("/v1/principals/{pid}"),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(r.status, 200, "disable principal: {}", r.text());
    env.clear();
    gw.get("/v1/feeds", Some(&key.secret))
        .await
        .assert_refusal(401, "suspended_api_key");
    env.assert_nothing_forwarded();

    let r = gw
        .admin_call(
            "PATCH",
            &format!("/v1/principals/{pid}"),
            Some(json!({ "disabled": false })),
        )
        .await;
    assert_eq!(r.status, 200, "enable principal: {}", r.text());
    gw.get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn too_many_auth_failures_spares_known_good_keys() {
    const LIMIT: usize = 3;
    let env = Env::start_with(|b| b.limit("auth_failures_per_ip", LIMIT)).await;
    let good = env.read_key().await;
    env.gw
        .get("/v1/feeds", Some(&good.secret))
        .await
        .assert_status(200);

    // The failures of one run must fall into one UTC minute, should the limiter count
    // in fixed windows.
    let second_of_minute = jiff::Timestamp::now().as_second().rem_euclid(60);
    if second_of_minute >= 57 {
        tokio::time::sleep(Duration::from_secs((61 - second_of_minute) as u64)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..LIMIT + 4 {
        let r = env
            .gw
            .get("/v1/feeds", Some(&unknown_token("kg", "live")))
            .await;
        if r.status == 429 {
            r.assert_refusal(429, "too_many_auth_failures");
        } else {
            r.assert_refusal(401, "invalid_api_key");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses[..LIMIT].iter().all(|s| *s == 401),
        "the first {LIMIT} failures are plain 401s: {statuses:?}"
    );
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .unwrap_or_else(|| panic!("no 429 after {} failures: {statuses:?}", statuses.len()));
    assert!(
        first_429 <= LIMIT + 1,
        "429 from failure {LIMIT}+1 on: {statuses:?}"
    );
    assert!(
        statuses[first_429..].iter().all(|s| *s == 429),
        "429 stays: {statuses:?}"
    );
    assert_eq!(env.up.count(), 1, "only the good request was forwarded");

    env.gw
        .get("/v1/feeds", Some(&good.secret))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn forwarded_request_carries_no_credential() {
    let env = Env::start().await;
    let key = env.read_key().await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    let seen = env.up.last();
    assert!(!seen.has_header("authorization"), "{:?}", seen.headers);
    for (_, v) in &seen.headers {
        assert!(
            !String::from_utf8_lossy(v).contains(&key.secret),
            "the token reached the upstream in a header"
        );
    }
    assert!(!seen.target.contains(&key.secret));
}

#[tokio::test]
async fn percent_encoded_api_key_parameter_never_reaches_the_upstream() {
    let env = Env::start().await;
    let key = env.write_key().await;
    // `api%5Fkey` decodes to `api_key`: still a credential, never forwarded.
    for (path, header) in [
        (format!("/flows/abc/execute?api%5Fkey={}", key.secret), true),
        (
            format!("/flows/abc/execute?api%5fkey={}&x=1", key.secret),
            false,
        ),
        (format!("/v1/feeds?api%5Fkey={}", key.secret), true),
    ] {
        let method = if path.starts_with("/flows") {
            "POST"
        } else {
            "GET"
        };
        let token = header.then_some(key.secret.as_str());
        let r = env.gw.call(method, &path, token).await;
        assert!(
            r.status == 200 || r.status == 401,
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
    }
    for seen in env.up.requests() {
        assert!(
            !seen.target.contains(&key.secret),
            "the token reached the upstream in the query: {}",
            seen.target
        );
    }
}

async fn regenerate(env: &Env, id: &str, grace: u64) -> String {
    let path = format!("/v1/orgs/{ORG}/keys/{id}/regenerate");
    let r = env
        .gw
        .admin_call("POST", &path, Some(json!({ "grace_seconds": grace })))
        .await;
    assert_eq!(r.status, 200, "regenerate: {}", r.text());
    let v = r.json();
    assert_eq!(v["key"]["id"], id, "same id after regenerate");
    v["secret"].as_str().expect("secret").to_string()
}

#[tokio::test]
async fn regenerate_replaces_the_secret_with_optional_grace() {
    let env = Env::start().await;
    let key = env.read_key().await;
    // Without grace the old secret stops at once.
    let second = regenerate(&env, &key.id, 0).await;
    env.gw
        .get("/v1/feeds", Some(&second))
        .await
        .assert_status(200);
    env.clear();
    let r = env.gw.get("/v1/feeds", Some(&key.secret)).await;
    r.assert_status(401);
    env.assert_nothing_forwarded();

    // With grace both work, until a revoke ends the grace.
    let third = regenerate(&env, &key.id, 600).await;
    env.gw
        .get("/v1/feeds", Some(&third))
        .await
        .assert_status(200);
    env.gw
        .get("/v1/feeds", Some(&second))
        .await
        .assert_status(200);
    env.gw.revoke_key(ORG, &key.id).await;
    env.clear();
    env.gw
        .get("/v1/feeds", Some(&third))
        .await
        .assert_refusal(401, "revoked_api_key");
    // The previous secret's grace ended with the revoke: refused either as revoked
    // or as no longer valid.
    let r = env.gw.get("/v1/feeds", Some(&second)).await;
    let code = r.error_code().unwrap_or_default();
    assert!(
        code == "revoked_api_key" || code == "invalid_api_key",
        "previous secret after revoke: {} {}",
        r.status,
        r.text()
    );
    r.assert_refusal(401, &code);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn last_used_at_follows_use() {
    let env = Env::start().await;
    let key = env.read_key().await;
    let path = format!("/v1/orgs/{ORG}/keys/{}", key.id);
    let before = env.gw.admin_call("GET", &path, None).await.json();
    assert!(
        before["last_used_at"].is_null(),
        "an unused key has no last_used_at: {before}"
    );
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    // Kept within 10 s of the truth.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    loop {
        let v = env.gw.admin_call("GET", &path, None).await.json();
        if v["last_used_at"].is_string() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_used_at still unset 12 s after use: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
