//! Orgs: create, list, show, patch; validation; audit.

use serde_json::json;

use super::Harness;

#[tokio::test]
async fn owners_create_and_read_orgs() {
    let h = Harness::start().await;
    let org = h
        .org(
            "acme",
            json!({ "key_policy": "creator", "max_key_lifetime_days": 90,
                    "rate_limit": { "per_minute": 600 } }),
        )
        .await;
    assert_eq!(org["id"], "acme");
    assert_eq!(org["name"], "Org acme");
    assert_eq!(org["key_policy"], "creator");
    assert_eq!(org["max_key_lifetime_days"], 90);
    assert_eq!(org["rate_limit"], json!({ "per_minute": 600 }));
    assert!(org["created_at"].is_string());
    h.org("beta", json!({})).await;

    let r = h.get("/v1/orgs", &h.owner).await;
    let ids: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);
    let r = h.get("/v1/orgs/acme", &h.owner).await;
    assert_eq!((r.status, r.body["id"].clone()), (200, json!("acme")));
    let r = h.get("/v1/orgs/nope", &h.owner).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    let r = h
        .post(
            "/v1/orgs",
            &h.owner,
            json!({ "id": "acme", "name": "again" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "org_exists"));

    let events = h.all_audit().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "org.create" && e.target.as_deref() == Some("acme"))
    );
}

#[tokio::test]
async fn org_fields_are_validated_by_name() {
    let h = Harness::start().await;
    let rows = [
        (json!({ "name": "x" }), "id"),
        (json!({ "id": "Acme", "name": "x" }), "id"),
        (json!({ "id": "*", "name": "x" }), "id"),
        (json!({ "id": "acme" }), "name"),
        (json!({ "id": "acme", "name": "" }), "name"),
        (
            json!({ "id": "acme", "name": "x", "key_policy": "mine" }),
            "key_policy",
        ),
        (
            json!({ "id": "acme", "name": "x", "max_key_lifetime_days": 0 }),
            "max_key_lifetime_days",
        ),
        (
            json!({ "id": "acme", "name": "x", "max_key_lifetime_days": -1 }),
            "max_key_lifetime_days",
        ),
        (
            json!({ "id": "acme", "name": "x", "rate_limit": { "per_week": 1 } }),
            "rate_limit",
        ),
        (
            json!({ "id": "acme", "name": "x", "rate_limit": { "per_minute": 0 } }),
            "rate_limit.per_minute",
        ),
        (
            json!({ "id": "acme", "name": "x", "colour": "red" }),
            "colour",
        ),
    ];
    for (body, field) in rows {
        let r = h.post("/v1/orgs", &h.owner, body.clone()).await;
        assert_eq!((r.status, r.field()), (422, field), "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn owners_patch_orgs_as_merge_patches() {
    let h = Harness::start().await;
    h.org(
        "acme",
        json!({ "max_key_lifetime_days": 90, "rate_limit": { "per_minute": 600, "per_day": 1000 } }),
    )
    .await;
    h.read_key("acme").await;
    let before = h.invalidations();
    let r = h
        .patch(
            "/v1/orgs/acme",
            &h.owner,
            json!({ "name": "Acme Inc", "key_policy": "creator",
                    "max_key_lifetime_days": null, "rate_limit": { "per_day": null } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], "Acme Inc");
    assert_eq!(r.body["key_policy"], "creator");
    assert!(r.body["max_key_lifetime_days"].is_null());
    assert_eq!(r.body["rate_limit"], json!({ "per_minute": 600 }));
    assert!(h.invalidations() > before, "org keys were not invalidated");
    assert_eq!(
        h.get("/v1/orgs/acme", &h.owner).await.body["name"],
        "Acme Inc"
    );

    let r = h
        .patch("/v1/orgs/acme", &h.owner, json!({ "id": "other" }))
        .await;
    assert_eq!((r.status, r.field()), (422, "id"));
    let r = h
        .patch("/v1/orgs/acme", &h.owner, json!({ "name": null }))
        .await;
    assert_eq!((r.status, r.field()), (422, "name"));
    let r = h
        .patch("/v1/orgs/nope", &h.owner, json!({ "name": "x" }))
        .await;
    assert_eq!(r.status, 404);
    assert!(h.all_audit().await.iter().any(|e| e.action == "org.update"));
}

#[tokio::test]
async fn the_audit_log_says_who_did_what_newest_first() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    h.org("beta", json!({})).await;
    let (admin_id, admin) = h.principal("admin", json!(["acme"]), false).await;
    let (key, secret) = h
        .key("acme", &admin, json!({ "name": "k", "scopes": ["read"] }))
        .await;
    let kp = format!("/v1/orgs/acme/keys/{}", key["id"].as_str().unwrap());
    h.patch(&kp, &admin, json!({ "name": "k2" })).await;
    let regenerated = h.post(&format!("{kp}/regenerate"), &admin, json!({})).await;
    let new_secret = regenerated.body["secret"].as_str().unwrap().to_string();
    h.post(&format!("{kp}/revoke"), &admin, json!({})).await;
    h.read_key("beta").await;

    let r = h.get("/v1/orgs/acme/audit", &admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let actions: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.revoke",
            "key.regenerate",
            "key.update",
            "key.create",
            "principal.create",
            "org.create"
        ]
    );
    assert_eq!(r.body["data"][0]["actor"], admin_id.as_str());
    assert_eq!(r.body["data"][0]["target"], key["id"]);
    assert_eq!(r.body["data"][2]["details"]["fields"], json!(["name"]));
    for s in [&secret, &new_secret, &admin] {
        assert!(!r.text.contains(s.as_str()));
    }

    let r = h.get("/v1/orgs/acme/audit?limit=4", &admin).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 4);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = h
        .get(
            &format!("/v1/orgs/acme/audit?limit=4&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    assert!(r.body["next_cursor"].is_null());
    let r = h.get("/v1/orgs/acme/audit?cursor=key_x", &admin).await;
    assert_eq!((r.status, r.field()), (422, "cursor"));
    assert_eq!(h.get("/v1/orgs/beta/audit", &admin).await.status, 403);
    assert_eq!(h.get("/v1/orgs/nope/audit", &h.owner).await.status, 404);
}
