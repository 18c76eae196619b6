//! API keys: create (validation, secret once, idempotency), list, show, edit,
//! regenerate, revoke, delete, `key_policy: creator`.

use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Harness, Resp};
use crate::key::{KeyHash, KeyStatus};

fn path(org: &str, id: &Value) -> String {
    format!("/v1/orgs/{org}/keys/{}", id.as_str().unwrap())
}

#[tokio::test]
async fn a_created_key_shows_its_secret_once_and_never_its_hash() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let r = h
        .post(
            "/v1/orgs/acme/keys",
            &h.owner,
            json!({ "name": "ci deploy", "description": "deploys", "environment": "test",
                    "scopes": ["write", "read", "write"], "resources": ["feed:*", "flow:abc123"],
                    "endpoints": ["refresh-feed"], "ip_allow": ["10.0.0.0/8", "2001:db8::1"],
                    "rate_limit": { "per_minute": 60 }, "expires_in_days": 30 }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let secret = r.body["secret"].as_str().unwrap().to_string();
    let key = r.body["key"].clone();
    assert_eq!(
        h.key_format.check(&secret),
        Ok(crate::key::Environment::Test)
    );
    assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
    assert_eq!(key["prefix"].as_str().unwrap().len(), "mtf_test_".len() + 4);
    assert_eq!(key["org"], "acme");
    assert_eq!(key["name"], "ci deploy");
    assert_eq!(key["environment"], "test");
    assert_eq!(key["scopes"], json!(["write", "read"]));
    assert_eq!(key["resources"], json!(["feed:*", "flow:abc123"]));
    assert_eq!(key["endpoints"], json!(["refresh-feed"]));
    assert_eq!(key["ip_allow"], json!(["10.0.0.0/8", "2001:db8::1/128"]));
    assert_eq!(key["rate_limit"], json!({ "per_minute": 60 }));
    assert_eq!(key["created_by"], h.owner_id.as_str());
    assert_eq!(key["status"], "active");
    assert!(key["revoked_at"].is_null() && key["last_used_at"].is_null());
    let expires: Timestamp = key["expires_at"].as_str().unwrap().parse().unwrap();
    let days = expires.duration_since(Timestamp::now()).as_hours() / 24;
    assert!((29..=30).contains(&days), "{days}");
    assert!(key["id"].as_str().unwrap().starts_with("key_"));

    let stored = h
        .store
        .key_by_id(key["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secret_hash, KeyHash::of(&secret));
    let hash = stored.secret_hash.to_hex();
    for text in [
        r.text.clone(),
        h.get(&path("acme", &key["id"]), &h.owner).await.text,
        h.get("/v1/orgs/acme/keys", &h.owner).await.text,
        h.get("/v1/orgs/acme/audit", &h.owner).await.text,
        serde_json::to_string(&h.all_audit().await).unwrap(),
    ] {
        assert!(!text.contains(&hash), "hash leaked: {text}");
        assert!(!text.contains("secret_hash") && !text.contains("previous_secret"));
    }
    for text in [
        h.get(&path("acme", &key["id"]), &h.owner).await.text,
        h.get("/v1/orgs/acme/keys", &h.owner).await.text,
        serde_json::to_string(&h.all_audit().await).unwrap(),
    ] {
        assert!(!text.contains(&secret), "secret shown again: {text}");
    }
    assert!(h.all_audit().await.iter().any(|e| e.action == "key.create"));
}

#[tokio::test]
async fn bad_key_fields_are_422_naming_the_field() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    h.org("short", json!({ "max_key_lifetime_days": 30 })).await;
    let past = (Timestamp::now() - SignedDuration::from_hours(1)).to_string();
    let far = (Timestamp::now() + SignedDuration::from_hours(24 * 31)).to_string();
    let ok = || json!({ "name": "k", "scopes": ["read"] });
    let with = |field: &str, v: Value| {
        let mut b = ok();
        b[field] = v;
        b
    };
    let rows: Vec<(&str, Value, &str)> = vec![
        ("acme", json!({ "scopes": ["read"] }), "name"),
        ("acme", with("name", json!("")), "name"),
        ("acme", with("name", json!("x".repeat(101))), "name"),
        ("acme", with("name", json!(5)), "name"),
        ("acme", json!({ "name": "k" }), "scopes"),
        ("acme", with("scopes", json!([])), "scopes"),
        (
            "acme",
            with("scopes", json!(["read", "admin"])),
            "scopes[1]",
        ),
        ("acme", with("environment", json!("prod")), "environment"),
        ("acme", with("resources", json!([])), "resources"),
        ("acme", with("resources", json!(["feed"])), "resources[0]"),
        (
            "acme",
            with("resources", json!(["feed:*", "feed:a b"])),
            "resources[1]",
        ),
        ("acme", with("resources", json!([":x"])), "resources[0]"),
        ("acme", with("resources", json!(["feed:"])), "resources[0]"),
        ("acme", with("resources", json!(["fed:1"])), "resources[0]"),
        ("acme", with("endpoints", json!([])), "endpoints"),
        (
            "acme",
            with("endpoints", json!(["list-feeds", "nope"])),
            "endpoints[1]",
        ),
        ("acme", with("ip_allow", json!([])), "ip_allow"),
        (
            "acme",
            with("ip_allow", json!(["10.0.0.0/33"])),
            "ip_allow[0]",
        ),
        (
            "acme",
            with("ip_allow", json!(["10.0.0.1/8"])),
            "ip_allow[0]",
        ),
        (
            "acme",
            with("ip_allow", json!(["example.com"])),
            "ip_allow[0]",
        ),
        (
            "acme",
            with("rate_limit", json!({ "per_minute": 0 })),
            "rate_limit.per_minute",
        ),
        (
            "acme",
            with("rate_limit", json!({ "per_week": 5 })),
            "rate_limit",
        ),
        ("acme", with("expires_at", json!(past)), "expires_at"),
        ("acme", with("expires_at", json!("tomorrow")), "expires_at"),
        ("acme", with("expires_in_days", json!(0)), "expires_in_days"),
        ("short", with("expires_at", json!(far)), "expires_at"),
        (
            "short",
            with("expires_in_days", json!(31)),
            "expires_in_days",
        ),
        ("short", with("expires_at", Value::Null), "expires_at"),
        ("acme", with("secret", json!("mine")), "secret"),
        (
            "acme",
            with("description", json!("x".repeat(1001))),
            "description",
        ),
    ];
    for (org, body, field) in rows {
        let r = h
            .post(&format!("/v1/orgs/{org}/keys"), &h.owner, body.clone())
            .await;
        assert_eq!((r.status, r.field()), (422, field), "{body}: {}", r.text);
        assert_eq!(r.code(), "invalid_field");
    }
    let both = json!({ "name": "k", "scopes": ["read"], "expires_at": far, "expires_in_days": 3 });
    let r = h.post("/v1/orgs/acme/keys", &h.owner, both).await;
    assert_eq!(r.status, 422);

    let r = h
        .raw(
            Method::POST,
            "/v1/orgs/acme/keys",
            Some(&h.owner),
            Some("{name".into()),
            &[],
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = h.post("/v1/orgs/nope/keys", &h.owner, ok()).await;
    assert_eq!(r.status, 404);
    // With a max lifetime and no expiry asked for, the key gets the maximum.
    let (key, _) = h.key("short", &h.owner, ok()).await;
    assert!(key["expires_at"].is_string());
    // Nothing was stored by the refusals.
    let listed = h.get("/v1/orgs/acme/keys", &h.owner).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn lists_are_newest_first_paginated_and_filtered() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(h.read_key("acme").await.0["id"].clone());
    }
    ids.reverse();
    let r = h.get("/v1/orgs/acme/keys?limit=2", &h.owner).await;
    let page_ids = |r: &super::Resp| -> Vec<Value> {
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].clone())
            .collect()
    };
    assert_eq!(page_ids(&r), ids[0..2]);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = h
        .get(
            &format!("/v1/orgs/acme/keys?limit=2&cursor={cursor}"),
            &h.owner,
        )
        .await;
    assert_eq!(page_ids(&r), ids[2..4]);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = h
        .get(
            &format!("/v1/orgs/acme/keys?limit=2&cursor={cursor}"),
            &h.owner,
        )
        .await;
    assert_eq!(page_ids(&r), ids[4..5]);
    assert!(r.body["next_cursor"].is_null());
    assert_eq!(page_ids(&h.get("/v1/orgs/acme/keys", &h.owner).await), ids);

    for id in [&ids[1], &ids[3]] {
        let r = h
            .post(&format!("{}/revoke", path("acme", id)), &h.owner, json!({}))
            .await;
        assert_eq!(r.status, 200);
    }
    let r = h
        .get("/v1/orgs/acme/keys?status=revoked&limit=1", &h.owner)
        .await;
    assert_eq!(page_ids(&r), [ids[1].clone()]);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = h
        .get(
            &format!("/v1/orgs/acme/keys?status=revoked&limit=1&cursor={cursor}"),
            &h.owner,
        )
        .await;
    assert_eq!(page_ids(&r), [ids[3].clone()]);
    let r = h.get("/v1/orgs/acme/keys?status=active", &h.owner).await;
    assert_eq!(
        page_ids(&r),
        [ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("cursor=abc", "cursor"),
        ("status=gone", "status"),
        ("colour=red", "colour"),
    ] {
        let r = h
            .get(&format!("/v1/orgs/acme/keys?{query}"), &h.owner)
            .await;
        assert_eq!((r.status, r.field()), (422, field), "{query}");
    }
    let r = h.get("/v1/orgs/acme/keys?limit=200", &h.owner).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn revoke_is_immediate_idempotent_and_invalidates() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (key, _) = h.read_key("acme").await;
    let before = h.invalidations();
    let r = h
        .post(
            &format!("{}/revoke", path("acme", &key["id"])),
            &h.owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "revoked");
    let revoked_at = r.body["revoked_at"].clone();
    assert!(revoked_at.is_string());
    assert!(h.invalidations() > before);

    let r = h
        .call(
            Method::POST,
            &format!("{}/revoke", path("acme", &key["id"])),
            &h.owner,
            None,
        )
        .await;
    assert_eq!((r.status, r.body["revoked_at"].clone()), (200, revoked_at));
    let revokes = h
        .all_audit()
        .await
        .iter()
        .filter(|e| e.action == "key.revoke")
        .count();
    assert_eq!(revokes, 1);
    // Revoked keys stay listed.
    let r = h.get("/v1/orgs/acme/keys", &h.owner).await;
    assert_eq!(r.body["data"][0]["status"], "revoked");
    let r = h.get(&path("acme", &key["id"]), &h.owner).await;
    assert_eq!(r.body["status"], "revoked");
    let r = h
        .get(
            "/v1/orgs/acme/keys/key_01j0000000000000000000000a",
            &h.owner,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn edits_are_json_merge_patches_and_final_keys_refuse_them() {
    let h = Harness::start().await;
    h.org("acme", json!({ "max_key_lifetime_days": 10 })).await;
    let (key, secret) = h
        .key(
            "acme",
            &h.owner,
            json!({ "name": "k", "description": "d", "scopes": ["read"],
                    "resources": ["feed:1"], "rate_limit": { "per_minute": 10, "per_day": 100 } }),
        )
        .await;
    let p = path("acme", &key["id"]);
    let before = h.invalidations();
    let r = h
        .patch(
            &p,
            &h.owner,
            json!({ "name": "renamed", "description": null, "resources": null,
                    "endpoints": ["list-feeds"], "rate_limit": { "per_day": null, "per_hour": 50 },
                    "expires_in_days": 5 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], "renamed");
    assert!(r.body["description"].is_null());
    assert!(r.body["resources"].is_null());
    assert_eq!(r.body["endpoints"], json!(["list-feeds"]));
    assert_eq!(
        r.body["rate_limit"],
        json!({ "per_minute": 10, "per_hour": 50 })
    );
    assert_eq!(r.body["scopes"], json!(["read"]));
    assert_ne!(r.body["updated_at"], key["updated_at"]);
    assert!(h.invalidations() > before);
    assert!(!r.text.contains(&secret));
    let stored = h
        .store
        .key_by_id(key["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.secret_hash,
        KeyHash::of(&secret),
        "an edit keeps the secret"
    );

    for (body, field) in [
        (json!({ "endpoints": [] }), "endpoints"),
        (json!({ "ip_allow": [] }), "ip_allow"),
        (json!({ "resources": [] }), "resources"),
        (json!({ "scopes": null }), "scopes"),
        (json!({ "scopes": ["root"] }), "scopes[0]"),
        (json!({ "name": null }), "name"),
        (json!({ "environment": "test" }), "environment"),
        (json!({ "id": "key_x" }), "id"),
        (json!({ "status": "active" }), "status"),
        (json!({ "expires_at": null }), "expires_at"),
        (json!({ "expires_in_days": 11 }), "expires_in_days"),
        (json!({ "owner": "me" }), "owner"),
    ] {
        let r = h.patch(&p, &h.owner, body.clone()).await;
        assert_eq!((r.status, r.field()), (422, field), "{body}: {}", r.text);
    }
    let r = h
        .raw(Method::PATCH, &p, Some(&h.owner), Some("nope".into()), &[])
        .await;
    assert_eq!(r.status, 400);

    // Expired keys are final.
    let mut stored = h
        .store
        .key_by_id(key["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    stored.expires_at = Some(Timestamp::now() - SignedDuration::from_secs(1));
    h.store.update_key(&stored, stored.version).await.unwrap();
    let r = h.patch(&p, &h.owner, json!({ "name": "x" })).await;
    assert_eq!((r.status, r.code()), (409, "key_not_editable"));
    let r = h
        .post(&format!("{p}/regenerate"), &h.owner, json!({}))
        .await;
    assert_eq!((r.status, r.code()), (409, "key_not_editable"));
    assert_eq!(h.get(&p, &h.owner).await.body["status"], "expired");

    // So are revoked ones.
    let (key, _) = h.read_key("acme").await;
    let p = path("acme", &key["id"]);
    h.post(&format!("{p}/revoke"), &h.owner, json!({})).await;
    let r = h.patch(&p, &h.owner, json!({ "name": "x" })).await;
    assert_eq!((r.status, r.code()), (409, "key_not_editable"));
    let r = h
        .post(&format!("{p}/regenerate"), &h.owner, json!({}))
        .await;
    assert_eq!(r.status, 409);
    assert!(h.all_audit().await.iter().any(|e| e.action == "key.update"));
}

#[tokio::test]
async fn regenerate_keeps_one_previous_secret_for_its_grace() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (key, first) = h.read_key("acme").await;
    let id = key["id"].as_str().unwrap().to_string();
    let p = path("acme", &key["id"]);
    let stored = |h: &Harness, secret: &str| {
        let hash = KeyHash::of(secret);
        let store = h.store.clone();
        async move { store.key_by_hash(&hash).await.unwrap().map(|k| k.id) }
    };

    let r = h
        .post(
            &format!("{p}/regenerate"),
            &h.owner,
            json!({ "grace_seconds": 604_801 }),
        )
        .await;
    assert_eq!((r.status, r.field()), (422, "grace_seconds"));

    let before = h.invalidations();
    let r = h
        .post(
            &format!("{p}/regenerate"),
            &h.owner,
            json!({ "grace_seconds": 3600 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let second = r.body["secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(r.body["key"]["id"], id.as_str());
    assert!(second.starts_with(r.body["key"]["prefix"].as_str().unwrap()));
    assert!(r.body["key"]["grace_ends_at"].is_string());
    assert!(h.invalidations() > before);
    assert_eq!(stored(&h, &first).await.as_deref(), Some(id.as_str()));
    assert_eq!(stored(&h, &second).await.as_deref(), Some(id.as_str()));

    // A new regenerate ends the first grace: only one previous secret.
    let r = h
        .post(
            &format!("{p}/regenerate"),
            &h.owner,
            json!({ "grace_seconds": 60 }),
        )
        .await;
    let third = r.body["secret"].as_str().unwrap().to_string();
    assert_eq!(stored(&h, &first).await, None);
    assert_eq!(stored(&h, &second).await.as_deref(), Some(id.as_str()));
    assert_eq!(stored(&h, &third).await.as_deref(), Some(id.as_str()));

    // Without grace the old secret stops at once.
    let r = h
        .post(&format!("{p}/regenerate"), &h.owner, json!({}))
        .await;
    let fourth = r.body["secret"].as_str().unwrap().to_string();
    assert!(r.body["key"]["grace_ends_at"].is_null());
    assert_eq!(stored(&h, &third).await, None);

    // Revoke ends any grace.
    let r = h
        .post(
            &format!("{p}/regenerate"),
            &h.owner,
            json!({ "grace_seconds": 60 }),
        )
        .await;
    assert_eq!(r.status, 200);
    h.post(&format!("{p}/revoke"), &h.owner, json!({})).await;
    assert_eq!(stored(&h, &fourth).await, None);
    let audit = serde_json::to_string(&h.all_audit().await).unwrap();
    for s in [&first, &second, &third, &fourth] {
        assert!(!audit.contains(s.as_str()));
    }
    assert!(audit.contains("key.regenerate"));
}

#[tokio::test]
async fn deleted_keys_are_gone_but_their_usage_and_audit_stay_readable() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (key, _) = h.read_key("acme").await;
    let (other, _) = h.read_key("acme").await;
    let p = path("acme", &key["id"]);
    let before = h.invalidations();
    let r = h.delete(&p, &h.owner).await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert!(h.invalidations() > before);
    let r = h.get("/v1/orgs/acme/keys", &h.owner).await;
    let listed: Vec<Value> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].clone())
        .collect();
    assert_eq!(listed, [other["id"].clone()]);
    // SPEC §1: delete removes the key entirely; every call on it is 404.
    let r = h.get(&p, &h.owner).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = h.patch(&p, &h.owner, json!({ "name": "x" })).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = h.post(&format!("{p}/revoke"), &h.owner, json!({})).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = h
        .post(&format!("{p}/regenerate"), &h.owner, json!({}))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_eq!(h.delete(&p, &h.owner).await.status, 404);
    // Its usage and audit stay readable.
    let r = h.get(&format!("{p}/usage"), &h.owner).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let deletes = h
        .all_audit()
        .await
        .iter()
        .filter(|e| e.action == "key.delete")
        .count();
    assert_eq!(deletes, 1);
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_409_with_the_first_key() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    h.org("beta", json!({})).await;
    let body = json!({ "name": "k", "scopes": ["read"] }).to_string();
    let hdr = [("idempotency-key", "req-42")];
    let first = h
        .raw(
            Method::POST,
            "/v1/orgs/acme/keys",
            Some(&h.owner),
            Some(body.clone()),
            &hdr,
        )
        .await;
    assert_eq!(first.status, 201);
    let again = h
        .raw(
            Method::POST,
            "/v1/orgs/acme/keys",
            Some(&h.owner),
            Some(body.clone()),
            &hdr,
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "idempotency_key_reused")
    );
    assert_eq!(again.body["error"]["key_id"], first.body["key"]["id"]);
    assert!(again.body.get("secret").is_none());
    // Scoped to the org.
    let elsewhere = h
        .raw(
            Method::POST,
            "/v1/orgs/beta/keys",
            Some(&h.owner),
            Some(body.clone()),
            &hdr,
        )
        .await;
    assert_eq!(elsewhere.status, 201);
    let bad = h
        .raw(
            Method::POST,
            "/v1/orgs/acme/keys",
            Some(&h.owner),
            Some(body),
            &[("idempotency-key", "")],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        h.get("/v1/orgs/acme/keys", &h.owner).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn creator_policy_suspends_keys_of_disabled_and_deleted_creators() {
    let h = Harness::start().await;
    h.org("acme", json!({ "key_policy": "creator" })).await;
    h.org("loose", json!({})).await;
    let (mgr, mgr_token) = h.principal("manager", json!(["acme", "loose"]), true).await;
    let (key, secret) = h
        .key(
            "acme",
            &mgr_token,
            json!({ "name": "k", "scopes": ["read"] }),
        )
        .await;
    let (loose_key, _) = h
        .key(
            "loose",
            &mgr_token,
            json!({ "name": "k", "scopes": ["read"] }),
        )
        .await;
    let p = path("acme", &key["id"]);
    let lp = path("loose", &loose_key["id"]);
    assert_eq!(key["created_by"], mgr.as_str());

    let before = h.invalidations();
    let r = h
        .patch(
            &format!("/v1/principals/{mgr}"),
            &h.owner,
            json!({ "disabled": true }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        h.invalidations() > before,
        "the creator's keys were not invalidated"
    );
    assert_eq!(h.get(&p, &h.owner).await.body["status"], "suspended");
    assert_eq!(h.get(&lp, &h.owner).await.body["status"], "active");
    // The data plane's lookup derives it, at the next lookup.
    let seen = h
        .resolver
        .resolve(&KeyHash::of(&secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.status_at(Timestamp::now()), KeyStatus::Suspended);
    let r = h.get("/v1/orgs/acme/keys?status=suspended", &h.owner).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);

    h.patch(
        &format!("/v1/principals/{mgr}"),
        &h.owner,
        json!({ "disabled": false }),
    )
    .await;
    assert_eq!(h.get(&p, &h.owner).await.body["status"], "active");
    let seen = h
        .resolver
        .resolve(&KeyHash::of(&secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.status_at(Timestamp::now()), KeyStatus::Active);

    let r = h.delete(&format!("/v1/principals/{mgr}"), &h.owner).await;
    assert_eq!(r.status, 204);
    assert_eq!(h.get(&p, &h.owner).await.body["status"], "suspended");
    assert_eq!(h.get(&lp, &h.owner).await.body["status"], "active");
    let stored = h
        .store
        .key_by_id(key["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.creator_suspended, "derived, never stored");
    let seen = h
        .resolver
        .resolve(&KeyHash::of(&secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.status_at(Timestamp::now()), KeyStatus::Suspended);
}

/// The property the resolver invalidation exists for: after each admin change, the very
/// next data-plane lookup (through the real `KeyResolver` cache) sees it.
#[tokio::test]
async fn the_next_data_plane_lookup_sees_every_key_change() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (key, first) = h.read_key("acme").await;
    let p = path("acme", &key["id"]);
    let lookup = |secret: &str| {
        let resolver = h.resolver.clone();
        let hash = KeyHash::of(secret);
        async move { resolver.resolve(&hash).await.unwrap() }
    };
    assert_eq!(&*lookup(&first).await.unwrap().name, "k");

    h.patch(&p, &h.owner, json!({ "name": "edited" })).await;
    assert_eq!(&*lookup(&first).await.unwrap().name, "edited");

    let r = h
        .post(&format!("{p}/regenerate"), &h.owner, json!({}))
        .await;
    let second = r.body["secret"].as_str().unwrap().to_string();
    assert!(
        lookup(&first).await.is_none(),
        "the old secret still resolves"
    );
    assert!(lookup(&second).await.is_some());

    h.post(&format!("{p}/revoke"), &h.owner, json!({})).await;
    assert_eq!(
        lookup(&second).await.unwrap().status_at(Timestamp::now()),
        KeyStatus::Revoked
    );

    let (other, third) = h.read_key("acme").await;
    assert!(!lookup(&third).await.unwrap().deleted());
    h.delete(&path("acme", &other["id"]), &h.owner).await;
    assert!(lookup(&third).await.unwrap().deleted());
}

#[tokio::test]
async fn changing_an_orgs_key_policy_re_decides_its_suspensions() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (mgr, mgr_token) = h.principal("manager", json!(["acme"]), true).await;
    let (key, secret) = h
        .key(
            "acme",
            &mgr_token,
            json!({ "name": "k", "scopes": ["read"] }),
        )
        .await;
    let p = path("acme", &key["id"]);
    let status = |h: &Harness| {
        let resolver = h.resolver.clone();
        let hash = KeyHash::of(&secret);
        async move {
            let k = resolver.resolve(&hash).await.unwrap().unwrap();
            k.status_at(Timestamp::now())
        }
    };
    h.patch(
        &format!("/v1/principals/{mgr}"),
        &h.owner,
        json!({ "disabled": true }),
    )
    .await;
    assert_eq!(
        status(&h).await,
        KeyStatus::Active,
        "key_policy org keeps it"
    );

    h.patch(
        "/v1/orgs/acme",
        &h.owner,
        json!({ "key_policy": "creator" }),
    )
    .await;
    assert_eq!(status(&h).await, KeyStatus::Suspended);
    assert_eq!(h.get(&p, &h.owner).await.body["status"], "suspended");

    h.patch("/v1/orgs/acme", &h.owner, json!({ "key_policy": "org" }))
        .await;
    assert_eq!(status(&h).await, KeyStatus::Active);
    assert_eq!(h.get(&p, &h.owner).await.body["status"], "active");
}

/// SPEC §1/§5: responses carry the version as `ETag`; `If-Match` with a stale one is
/// 412 and changes nothing, with the current one the call goes through.
#[tokio::test]
async fn if_match_with_a_stale_etag_is_412_and_changes_nothing() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (key, secret) = h.read_key("acme").await;
    let p = path("acme", &key["id"]);
    let etag = |r: &Resp| r.headers["etag"].to_str().unwrap().to_string();
    let first = h.get(&p, &h.owner).await;
    assert_eq!(etag(&first), "\"1\"");
    let r = h.patch(&p, &h.owner, json!({ "name": "b" })).await;
    assert_eq!(etag(&r), "\"2\"");

    let body = |v: Value| Some(v.to_string());
    let stale = [("if-match", "\"1\"")];
    let calls = [
        (Method::PATCH, p.clone(), body(json!({ "name": "c" }))),
        (Method::POST, format!("{p}/regenerate"), body(json!({}))),
        (Method::POST, format!("{p}/revoke"), body(json!({}))),
        (Method::DELETE, p.clone(), None),
    ];
    for (method, at, b) in &calls {
        let r = h
            .raw(method.clone(), at, Some(&h.owner), b.clone(), &stale)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (412, "precondition_failed"),
            "{method} {at}"
        );
    }
    let now = h.get(&p, &h.owner).await;
    assert_eq!(
        (now.body["name"].as_str(), etag(&now).as_str()),
        (Some("b"), "\"2\"")
    );
    assert_eq!(now.body["status"], "active");
    assert!(
        h.resolver
            .resolve(&KeyHash::of(&secret))
            .await
            .unwrap()
            .is_some()
    );

    let r = h
        .raw(
            Method::PATCH,
            &p,
            Some(&h.owner),
            body(json!({ "name": "c" })),
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!((r.status, etag(&r).as_str()), (200, "\"3\""));
    let r = h
        .raw(
            Method::POST,
            &format!("{p}/revoke"),
            Some(&h.owner),
            body(json!({})),
            &[("if-match", "\"3\"")],
        )
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("revoked"))
    );
    let r = h
        .raw(
            Method::PATCH,
            &p,
            Some(&h.owner),
            body(json!({})),
            &[("if-match", "3")],
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
}
