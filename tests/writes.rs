//! SPEC §1 "Writes are never undone", through three real `keygate` replicas on one real
//! `redis-server`: conflicting admin calls raced on different replicas end in the later
//! admin intent, and a revoked, deleted or superseded secret (or a disabled creator's
//! key) never authenticates again on any replica; a write that lands after its caller
//! timed out, or whose invalidation publish is dropped, still reaches every replica
//! within 1 s; `If-Match` with a stale `ETag` is 412 and changes nothing.
//!
//! Tests in this file run one at a time (the 1 s bounds measure keygate, not a crowded
//! machine). Every loop is bounded in rounds and time.

// `common` and `support_redis` both bring in `common/ports.rs` (one port registry per
// module; `support_redis` is also used without `common`, by the store's unit tests).
#![allow(clippy::duplicate_mod)]

mod common;
mod support_redis;

use std::time::{Duration, Instant};

use common::*;
use support_redis::RedisServer;

/// SPEC §4: a change reaches every replica that can reach the store within 1 second.
const PROPAGATION: Duration = Duration::from_secs(1);
/// Rounds per pair of conflicting calls.
const ROUNDS: usize = 50;
/// `store.timeout` of every replica.
const STORE_TIMEOUT: &str = "1s";
/// How late replica 0's writes land in the fault test (after `STORE_TIMEOUT`).
const LATE_MS: u64 = 1500;
/// Bound on one whole test.
const TEST_BOUND: Duration = Duration::from_secs(240);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three replicas on one Redis; `faulty` is the environment of replica 0.
struct Cluster {
    nodes: Vec<Gateway>,
    _redis: RedisServer,
    _up: RecordingUpstream,
    _sandbox: RecordingUpstream,
    _shared: tempfile::TempDir,
}

impl Cluster {
    /// `store.timeout` is generous (1 s) so that a machine busy compiling does not turn
    /// an admin call into a 503; the fault test's late writes land well after it.
    async fn start(faulty: &[(&str, &str)]) -> Cluster {
        init_crypto();
        let redis = RedisServer::start();
        let up = RecordingUpstream::start("live");
        let sandbox = RecordingUpstream::start("sandbox");
        let shared = tempfile::tempdir().unwrap();
        let token_file = shared.path().join("admin-token");
        let url = redis.url(0);
        let builder = |env: &[(&str, &str)]| {
            let url = url.clone();
            let token_file = token_file.clone();
            let mut b = GatewayBuilder::new(&up, &sandbox).plain().with(move |c| {
                c["store"] = json!({ "backend": "redis", "url": url, "timeout": STORE_TIMEOUT });
                // Long enough that a stale cache entry would show.
                c["cache"] = json!({ "ttl": "30s", "negative_ttl": "5s",
                                     "max_staleness": "60s", "stale_if_error": "5m" });
                c["admin"] = json!({ "bootstrap_token_file": token_file });
                c["limits"]["auth_failures_per_ip"] = json!(0);
            });
            for (k, v) in env {
                b = b.env(k, v);
            }
            b
        };
        // The first replica bootstraps the owner; the others share its token file.
        let first = builder(faulty).start().await;
        let (second, third) = tokio::join!(builder(&[]).start(), builder(&[]).start());
        let cluster = Cluster {
            nodes: vec![first, second, third],
            _redis: redis,
            _up: up,
            _sandbox: sandbox,
            _shared: shared,
        };
        cluster.nodes[0].create_org(ORG).await;
        cluster
    }

    fn node(&self, i: usize) -> &Gateway {
        &self.nodes[i % self.nodes.len()]
    }

    /// A read key of `org`, created on replica 0 as `token`, used once on every replica
    /// so that each holds it in cache.
    async fn warm_key(&self, org: &str, token: &str) -> Key {
        let key = self.nodes[0]
            .create_key_as(token, org, json!({ "scopes": ["read"] }))
            .await;
        self.works_everywhere(&key.secret).await;
        key
    }

    /// Every replica lets `secret` through (within the propagation bound).
    async fn works_everywhere(&self, secret: &str) {
        for gw in &self.nodes {
            let deadline = Instant::now() + PROPAGATION;
            loop {
                let r = gw.get("/v1/feeds", Some(secret)).await;
                if r.status == 200 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a replica refused a valid key: {} {}",
                    r.status,
                    r.text()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Every replica refuses `secret` with 401 `code` within the propagation bound, and
    /// still does when asked again. Returns how long the slowest replica took.
    async fn refused_everywhere(&self, secret: &str, code: &str, since: Instant) -> Duration {
        let mut slowest = Duration::ZERO;
        for (i, gw) in self.nodes.iter().enumerate() {
            loop {
                let r = gw.get("/v1/feeds", Some(secret)).await;
                if r.status == 401 && r.error_code().as_deref() == Some(code) {
                    slowest = slowest.max(since.elapsed());
                    break;
                }
                assert!(
                    since.elapsed() < PROPAGATION,
                    "replica {i} still answers {} {} for a secret that must be {code} after {:?}",
                    r.status,
                    r.error_code().unwrap_or_default(),
                    since.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for gw in &self.nodes {
            gw.get("/v1/feeds", Some(secret))
                .await
                .assert_refusal(401, code);
        }
        slowest
    }

    async fn call(&self, i: usize, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.node(i).admin_call(method, path, body).await
    }

    /// A manager of `orgs` with API access: (id, token).
    async fn manager(&self, orgs: Value) -> (String, String) {
        let r = self
            .call(
                0,
                "POST",
                "/v1/principals",
                Some(json!({ "name": "m", "role": "manager", "orgs": orgs, "api_access": true })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["principal"]["id"].as_str().unwrap().to_string(),
            v["token"].as_str().unwrap().to_string(),
        )
    }

    /// Every replica refuses the admin token (401) within the propagation bound.
    async fn admin_token_refused_everywhere(&self, token: &str, path: &str) {
        let since = Instant::now();
        for (i, gw) in self.nodes.iter().enumerate() {
            loop {
                let r = gw.admin_call_as(token, "GET", path, None).await;
                if r.status == 401 {
                    break;
                }
                assert!(
                    since.elapsed() < PROPAGATION,
                    "replica {i} still accepts an admin token that must be dead: {}",
                    r.status
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn key_path(id: &str) -> String {
    format!("/v1/orgs/{ORG}/keys/{id}")
}

/// The key lifecycle calls that end or supersede a secret, each raced against two
/// PATCHes on the two other replicas.
#[derive(Clone, Copy, Debug)]
enum Ender {
    Revoke,
    Delete,
    Regenerate,
}

async fn race_key_ender_against_patches(c: &Cluster, ender: Ender) {
    let owner = c.nodes[0].admin_token.clone();
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let key = c.warm_key(ORG, &owner).await;
        let p = key_path(&key.id);
        let (a, b, d) = (round, round + 1, round + 2);
        let end = async {
            match ender {
                Ender::Revoke => {
                    c.call(a, "POST", &format!("{p}/revoke"), Some(json!({})))
                        .await
                }
                Ender::Delete => c.call(a, "DELETE", &p, None).await,
                Ender::Regenerate => {
                    let body = json!({ "grace_seconds": 0 });
                    c.call(a, "POST", &format!("{p}/regenerate"), Some(body))
                        .await
                }
            }
        };
        let patch = |i: usize, text: String| {
            let p = p.clone();
            async move {
                let body = json!({ "description": text });
                c.call(i, "PATCH", &p, Some(body)).await
            }
        };
        let (ended, p1, p2) = tokio::join!(
            end,
            patch(b, format!("b{round}")),
            patch(d, format!("c{round}"))
        );
        let since = Instant::now();
        match ender {
            Ender::Revoke => {
                assert_eq!(ended.status, 200, "revoke: {}", ended.text());
                for r in [&p1, &p2] {
                    assert!(
                        r.status == 200
                            || (r.status == 409
                                && r.error_code().as_deref() == Some("key_not_editable")),
                        "a PATCH racing a revoke: {} {}",
                        r.status,
                        r.text()
                    );
                }
                let now = c.call(d, "GET", &p, None).await;
                assert_eq!(
                    now.json()["status"],
                    "revoked",
                    "round {round}: {}",
                    now.text()
                );
                slowest = slowest.max(
                    c.refused_everywhere(&key.secret, "revoked_api_key", since)
                        .await,
                );
            }
            Ender::Delete => {
                assert_eq!(ended.status, 204, "delete: {}", ended.text());
                for r in [&p1, &p2] {
                    assert!(
                        r.status == 200 || r.status == 404,
                        "a PATCH racing a delete: {} {}",
                        r.status,
                        r.text()
                    );
                }
                for i in 0..3 {
                    let now = c.call(i, "GET", &p, None).await;
                    assert_eq!(now.status, 404, "round {round}: {}", now.text());
                }
                slowest = slowest.max(
                    c.refused_everywhere(&key.secret, "invalid_api_key", since)
                        .await,
                );
            }
            Ender::Regenerate => {
                assert_eq!(ended.status, 200, "regenerate: {}", ended.text());
                let regenerated = ended.json();
                // Both PATCHes and the regenerate take effect, in some order.
                assert_eq!(
                    (p1.status, p2.status),
                    (200, 200),
                    "{} {}",
                    p1.text(),
                    p2.text()
                );
                let now = c.call(d, "GET", &p, None).await.json();
                assert_eq!(now["prefix"], regenerated["key"]["prefix"], "round {round}");
                let desc = now["description"].as_str().unwrap_or_default().to_string();
                assert!(
                    desc == format!("b{round}") || desc == format!("c{round}"),
                    "round {round}: a PATCH was lost or undone: {now}"
                );
                slowest = slowest.max(
                    c.refused_everywhere(&key.secret, "invalid_api_key", since)
                        .await,
                );
                c.works_everywhere(regenerated["secret"].as_str().unwrap())
                    .await;
            }
        }
    }
    println!("{ender:?} vs PATCH: {ROUNDS} rounds, slowest propagation {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_delete_and_regenerate_raced_against_patches_are_never_undone() {
    let _one = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let c = Cluster::start(&[]).await;
        for ender in [Ender::Revoke, Ender::Delete, Ender::Regenerate] {
            race_key_ender_against_patches(&c, ender).await;
        }
    })
    .await
    .expect("the races finish in time");
}

/// An admin disables (or deletes) a manager on one replica while the manager rotates
/// its own token on another: the principal ends disabled (or gone) and no token of it
/// works anywhere, whichever call won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_delete_raced_against_a_self_rotation_end_with_the_principal_locked_out() {
    let _one = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let c = Cluster::start(&[]).await;
        for delete in [false, true] {
            let mut rotated = 0;
            for round in 0..ROUNDS {
                let (id, token) = c.manager(json!([ORG])).await;
                let me = format!("/v1/principals/{id}");
                for gw in &c.nodes {
                    assert_eq!(gw.admin_call_as(&token, "GET", &me, None).await.status, 200);
                }
                let lock_out = async {
                    if delete {
                        c.call(round, "DELETE", &me, None).await
                    } else {
                        c.call(round, "PATCH", &me, Some(json!({ "disabled": true })))
                            .await
                    }
                };
                let rotate_path = format!("{me}/rotate-token");
                let rotate =
                    c.node(round + 1)
                        .admin_call_as(&token, "POST", &rotate_path, Some(json!({})));
                let (locked, rotation) = tokio::join!(lock_out, rotate);
                assert_eq!(
                    locked.status,
                    if delete { 204 } else { 200 },
                    "{}",
                    locked.text()
                );
                let mut tokens = vec![token.clone()];
                match rotation.status {
                    200 => {
                        rotated += 1;
                        tokens.push(rotation.json()["token"].as_str().unwrap().to_string());
                    }
                    401 | 404 => {}
                    s => panic!("rotate-token racing a lock-out: {s} {}", rotation.text()),
                }
                let now = c.call(round + 2, "GET", &me, None).await;
                if delete {
                    assert_eq!(now.status, 404, "round {round}: {}", now.text());
                } else {
                    assert_eq!(
                        now.json()["disabled"],
                        true,
                        "round {round}: {}",
                        now.text()
                    );
                }
                for t in &tokens {
                    c.admin_token_refused_everywhere(t, &me).await;
                }
            }
            println!("delete={delete}: {ROUNDS} rounds, the rotation won {rotated} times");
        }
    })
    .await
    .expect("the races finish in time");
}

/// Under `key_policy: creator`, an org switched to that policy, a key created by its
/// manager and the manager's disable, all at once on three replicas: every key of that
/// manager ends suspended on every replica within 1 s, including the one created while
/// the manager was being disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_policy_change_raced_against_key_creation_and_a_disable_suspends_every_key() {
    let _one = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let c = Cluster::start(&[]).await;
        let mut created_in_race = 0;
        let mut slowest = Duration::ZERO;
        for round in 0..ROUNDS {
            let org = format!("org{round}");
            let r = c
                .call(
                    0,
                    "POST",
                    "/v1/orgs",
                    Some(json!({ "id": org, "name": org })),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            let (id, token) = c.manager(json!([org])).await;
            let before = c.warm_key(&org, &token).await;

            let (org_path, keys_path, principal_path) = (
                format!("/v1/orgs/{org}"),
                format!("/v1/orgs/{org}/keys"),
                format!("/v1/principals/{id}"),
            );
            let policy = c.call(
                round,
                "PATCH",
                &org_path,
                Some(json!({ "key_policy": "creator" })),
            );
            let create = c.node(round + 1).admin_call_as(
                &token,
                "POST",
                &keys_path,
                Some(json!({ "name": "racing", "scopes": ["read"] })),
            );
            let disable = c.call(
                round + 2,
                "PATCH",
                &principal_path,
                Some(json!({ "disabled": true })),
            );
            let (policy, created, disabled) = tokio::join!(policy, create, disable);
            let since = Instant::now();
            assert_eq!(policy.status, 200, "{}", policy.text());
            assert_eq!(disabled.status, 200, "{}", disabled.text());
            let mut secrets = vec![(before.id.clone(), before.secret.clone())];
            match created.status {
                201 => {
                    created_in_race += 1;
                    let v = created.json();
                    secrets.push((
                        v["key"]["id"].as_str().unwrap().to_string(),
                        v["secret"].as_str().unwrap().to_string(),
                    ));
                }
                401 => {}
                s => panic!("a create racing a disable: {s} {}", created.text()),
            }
            let now = c.call(round, "GET", &format!("/v1/orgs/{org}"), None).await;
            assert_eq!(now.json()["key_policy"], "creator", "round {round}");
            for (key_id, secret) in &secrets {
                slowest = slowest.max(
                    c.refused_everywhere(secret, "suspended_api_key", since)
                        .await,
                );
                let view = c
                    .call(
                        round + 1,
                        "GET",
                        &format!("/v1/orgs/{org}/keys/{key_id}"),
                        None,
                    )
                    .await;
                assert_eq!(
                    view.json()["status"],
                    "suspended",
                    "round {round}: {}",
                    view.text()
                );
            }
        }
        println!(
            "{ROUNDS} rounds, {created_in_race} keys created during the race, slowest \
             propagation {slowest:?}"
        );
    })
    .await
    .expect("the races finish in time");
}

/// Replica 0's store writes land 1.5 s after they are sent while its callers give up at
/// 1 s (503), and it drops every invalidation it publishes: a revoke, a
/// regenerate and a creator's disable made there still reach every replica within 1 s
/// of landing, through the store's own publish and the version the invalidation
/// carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_land_after_their_timeout_with_publishes_dropped_reach_every_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let late = Duration::from_millis(LATE_MS);
        let late_ms = LATE_MS.to_string();
        let c = Cluster::start(&[
            ("KEYGATE_FAULT_LATE_WRITES_MS", &late_ms),
            ("KEYGATE_FAULT_DROP_INVALIDATION_PUBLISH", "1"),
        ])
        .await;
        let owner = c.nodes[0].admin_token.clone();

        // Revoke: 503 to the admin, then it lands.
        let key = c.warm_key(ORG, &owner).await;
        let sent = Instant::now();
        let r = c
            .call(
                0,
                "POST",
                &format!("{}/revoke", key_path(&key.id)),
                Some(json!({})),
            )
            .await;
        r.assert_status(503);
        assert_eq!(r.error_code().as_deref(), Some("store_unavailable"));
        // Meanwhile replica 0 asks the store again (never a stale "revoked", never a
        // resurrected "active" from cache after the write lands).
        tokio::time::sleep_until((sent + late).into()).await;
        let took = c
            .refused_everywhere(&key.secret, "revoked_api_key", sent + late)
            .await;
        println!("late revoke reached every replica {took:?} after landing");
        let now = c.call(1, "GET", &key_path(&key.id), None).await;
        assert_eq!(now.json()["status"], "revoked");

        // Regenerate without grace: the old secret stops everywhere.
        let key = c.warm_key(ORG, &owner).await;
        let sent = Instant::now();
        let r = c
            .call(
                0,
                "POST",
                &format!("{}/regenerate", key_path(&key.id)),
                Some(json!({})),
            )
            .await;
        r.assert_status(503);
        tokio::time::sleep_until((sent + late).into()).await;
        c.refused_everywhere(&key.secret, "invalid_api_key", sent + late)
            .await;

        // A creator disabled under key_policy: creator: its keys stop everywhere.
        let r = c
            .call(
                1,
                "PATCH",
                &format!("/v1/orgs/{ORG}"),
                Some(json!({ "key_policy": "creator" })),
            )
            .await;
        r.assert_status(200);
        let (id, token) = c.manager(json!([ORG])).await;
        let key = c.warm_key(ORG, &token).await;
        let sent = Instant::now();
        let r = c
            .call(
                0,
                "PATCH",
                &format!("/v1/principals/{id}"),
                Some(json!({ "disabled": true })),
            )
            .await;
        r.assert_status(503);
        tokio::time::sleep_until((sent + late).into()).await;
        c.refused_everywhere(&key.secret, "suspended_api_key", sent + late)
            .await;
    })
    .await
    .expect("the fault test finishes in time");
}

/// Replica 0 drops every invalidation it publishes: its revoke still reaches the other
/// replicas within 1 s (the store publishes the change in the write itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_invalidation_publish_loses_no_revoke() {
    let _one = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let c = Cluster::start(&[("KEYGATE_FAULT_DROP_INVALIDATION_PUBLISH", "1")]).await;
        let owner = c.nodes[0].admin_token.clone();
        for _ in 0..10 {
            let key = c.warm_key(ORG, &owner).await;
            let sent = Instant::now();
            let r = c
                .call(
                    0,
                    "POST",
                    &format!("{}/revoke", key_path(&key.id)),
                    Some(json!({})),
                )
                .await;
            r.assert_status(200);
            c.refused_everywhere(&key.secret, "revoked_api_key", sent)
                .await;
        }
    })
    .await
    .expect("the fault test finishes in time");
}

/// `If-Match` with an `ETag` read before another replica's change: 412, and nothing
/// changed anywhere; with the current `ETag` the call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_with_a_stale_etag_is_412_on_every_replica_and_changes_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let c = Cluster::start(&[]).await;
        let owner = c.nodes[0].admin_token.clone();
        let key = c.warm_key(ORG, &owner).await;
        let p = key_path(&key.id);
        let read = c.call(1, "GET", &p, None).await;
        let stale = read.header("etag").expect("an ETag on GET");
        let r = c
            .call(2, "PATCH", &p, Some(json!({ "name": "renamed" })))
            .await;
        r.assert_status(200);
        let current = r.header("etag").expect("an ETag on PATCH");
        assert_ne!(stale, current);

        let http = reqwest::Client::new();
        let conditional = |i: usize, method: &str, path: &str, etag: &str, body: Option<Value>| {
            let mut rb = http
                .request(method.parse().unwrap(), c.node(i).admin_url(path))
                .bearer_auth(&owner)
                .header("if-match", etag);
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            async move { Reply::from_reqwest(rb.send().await.unwrap()).await }
        };
        let calls: [(&str, String, Option<Value>); 4] = [
            ("PATCH", p.clone(), Some(json!({ "name": "lost" }))),
            ("POST", format!("{p}/regenerate"), Some(json!({}))),
            ("POST", format!("{p}/revoke"), Some(json!({}))),
            ("DELETE", p.clone(), None),
        ];
        for (i, (method, path, body)) in calls.iter().enumerate() {
            let r = conditional(i, method, path, &stale, body.clone()).await;
            assert_eq!(
                (r.status, r.error_code().as_deref()),
                (412, Some("precondition_failed")),
                "{method} {path}: {}",
                r.text()
            );
        }
        for i in 0..3 {
            let now = c.call(i, "GET", &p, None).await;
            assert_eq!(now.header("etag"), Some(current.clone()));
            assert_eq!(now.json()["name"], "renamed");
            assert_eq!(now.json()["status"], "active");
        }
        c.works_everywhere(&key.secret).await;

        let r = conditional(0, "DELETE", &p, &current, None).await;
        r.assert_status(204);
        c.refused_everywhere(&key.secret, "invalid_api_key", Instant::now())
            .await;
    })
    .await
    .expect("the test finishes in time");
}
