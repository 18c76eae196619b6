//! Principals: create (token once), list, patch, delete, rotate-token; admins'
//! limits (own orgs, managers and viewers only, never more than they hold).

use serde_json::{Value, json};

use super::Harness;

fn ids(r: &super::Resp) -> Vec<String> {
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_principal_token_is_shown_once_and_works_until_disabled_or_deleted() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let r = h
        .post(
            "/v1/principals",
            &h.owner,
            json!({ "name": "ops", "role": "admin", "orgs": ["acme"] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let token = r.body["token"].as_str().unwrap().to_string();
    let id = r.body["principal"]["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("kga_") && token.len() == 44);
    let p = &r.body["principal"];
    assert_eq!(p["role"], "admin");
    assert_eq!(p["orgs"], json!(["acme"]));
    assert_eq!(p["api_access"], false);
    assert_eq!(p["disabled"], false);
    assert!(p["created_at"].is_string());
    assert!(p.get("token_hash").is_none());

    let list = h.get("/v1/principals", &h.owner).await;
    assert!(!list.text.contains(&token) && !list.text.contains("token_hash"));
    assert_eq!(ids(&list).len(), 2);
    assert_eq!(h.get("/v1/orgs", &token).await.status, 200);
    let audit = serde_json::to_string(&h.all_audit().await).unwrap();
    assert!(!audit.contains(&token) && audit.contains("principal.create"));

    let pp = format!("/v1/principals/{id}");
    let r = h
        .patch(&pp, &h.owner, json!({ "disabled": true, "name": "ops2" }))
        .await;
    assert_eq!((r.status, r.body["disabled"].clone()), (200, json!(true)));
    assert_eq!(h.get("/v1/orgs", &token).await.status, 401);
    h.patch(&pp, &h.owner, json!({ "disabled": false })).await;
    assert_eq!(h.get("/v1/orgs", &token).await.status, 200);

    let r = h
        .post(&format!("{pp}/rotate-token"), &h.owner, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rotated = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(h.get("/v1/orgs", &token).await.status, 401);
    assert_eq!(h.get("/v1/orgs", &rotated).await.status, 200);

    assert_eq!(h.delete(&pp, &h.owner).await.status, 204);
    assert_eq!(h.get("/v1/orgs", &rotated).await.status, 401);
    assert_eq!(h.get(&pp, &h.owner).await.status, 404);
    assert!(!ids(&h.get("/v1/principals", &h.owner).await).contains(&id));
}

#[tokio::test]
async fn principal_fields_are_validated_by_name() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let rows = [
        (json!({ "role": "viewer", "orgs": ["acme"] }), "name"),
        (json!({ "name": "x", "orgs": ["acme"] }), "role"),
        (
            json!({ "name": "x", "role": "root", "orgs": ["acme"] }),
            "role",
        ),
        (json!({ "name": "x", "role": "viewer" }), "orgs"),
        (json!({ "name": "x", "role": "viewer", "orgs": [] }), "orgs"),
        (
            json!({ "name": "x", "role": "viewer", "orgs": "*" }),
            "orgs",
        ),
        (
            json!({ "name": "x", "role": "viewer", "orgs": "acme" }),
            "orgs",
        ),
        (
            json!({ "name": "x", "role": "viewer", "orgs": ["acme", "nope"] }),
            "orgs[1]",
        ),
        (
            json!({ "name": "x", "role": "owner", "orgs": ["acme"] }),
            "orgs",
        ),
        (
            json!({ "name": "x", "role": "viewer", "orgs": ["acme"], "api_access": "yes" }),
            "api_access",
        ),
        (
            json!({ "name": "x", "role": "viewer", "orgs": ["acme"], "token": "kga_x" }),
            "token",
        ),
    ];
    for (body, field) in rows {
        let r = h.post("/v1/principals", &h.owner, body.clone()).await;
        assert_eq!((r.status, r.field()), (422, field), "{body}: {}", r.text);
    }
    let r = h
        .post(
            "/v1/principals",
            &h.owner,
            json!({ "name": "o2", "role": "owner" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["principal"]["orgs"].clone()),
        (201, json!("*"))
    );

    let (id, _) = h.principal("viewer", json!(["acme"]), false).await;
    for (body, field) in [
        (json!({ "role": "admin" }), "role"),
        (json!({ "orgs": ["acme"] }), "orgs"),
        (json!({ "disabled": null }), "disabled"),
        (json!({ "name": "" }), "name"),
        (json!({ "colour": 1 }), "colour"),
    ] {
        let r = h
            .patch(&format!("/v1/principals/{id}"), &h.owner, body.clone())
            .await;
        assert_eq!((r.status, r.field()), (422, field), "{body}");
    }
}

#[tokio::test]
async fn nobody_disables_or_deletes_itself() {
    let h = Harness::start().await;
    let me = format!("/v1/principals/{}", h.owner_id);
    let r = h.patch(&me, &h.owner, json!({ "disabled": true })).await;
    assert_eq!((r.status, r.code()), (409, "self_lockout"));
    let r = h.delete(&me, &h.owner).await;
    assert_eq!((r.status, r.code()), (409, "self_lockout"));
    assert_eq!(h.get("/v1/orgs", &h.owner).await.status, 200);
    // Renaming yourself is fine.
    assert_eq!(
        h.patch(&me, &h.owner, json!({ "name": "root" }))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn admins_manage_only_managers_and_viewers_of_their_orgs() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    h.org("globex", json!({})).await;
    let (admin_id, admin) = h.principal("admin", json!(["acme"]), false).await;
    let (other_admin, _) = h.principal("admin", json!(["acme"]), false).await;
    let (globex_viewer, _) = h.principal("viewer", json!(["globex"]), false).await;
    let (both_viewer, _) = h
        .principal("viewer", json!(["acme", "globex"]), false)
        .await;

    // Create: manager/viewer within its orgs only.
    let r = h
        .post(
            "/v1/principals",
            &admin,
            json!({ "name": "m", "role": "manager", "orgs": ["acme"], "api_access": true }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mgr = r.body["principal"]["id"].as_str().unwrap().to_string();
    let mgr_token = r.body["token"].as_str().unwrap().to_string();
    for (body, code) in [
        (
            json!({ "name": "a", "role": "admin", "orgs": ["acme"] }),
            403,
        ),
        (json!({ "name": "o", "role": "owner" }), 403),
        (
            json!({ "name": "m", "role": "manager", "orgs": ["globex"] }),
            403,
        ),
        (
            json!({ "name": "m", "role": "manager", "orgs": ["acme", "globex"] }),
            403,
        ),
        // An org that does not exist is 403 too: no probing for org names.
        (
            json!({ "name": "m", "role": "manager", "orgs": ["initech"] }),
            403,
        ),
    ] {
        let r = h.post("/v1/principals", &admin, body.clone()).await;
        assert_eq!(r.status, code, "{body}: {}", r.text);
    }

    // List: itself and principals within its orgs, never globex ones or owners.
    let listed = ids(&h.get("/v1/principals", &admin).await);
    assert!(listed.contains(&admin_id) && listed.contains(&mgr) && listed.contains(&other_admin));
    assert!(!listed.contains(&globex_viewer));
    assert!(!listed.contains(&both_viewer));
    assert!(!listed.contains(&h.owner_id));

    // Patch, rotate, delete: its managers and viewers only.
    let r = h
        .patch(
            &format!("/v1/principals/{mgr}"),
            &admin,
            json!({ "api_access": false }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["api_access"].clone()),
        (200, json!(false))
    );
    let r = h
        .patch(
            &format!("/v1/principals/{other_admin}"),
            &admin,
            json!({ "disabled": true }),
        )
        .await;
    assert_eq!(r.status, 403);
    for target in [&globex_viewer, &both_viewer, &h.owner_id] {
        let r = h
            .patch(
                &format!("/v1/principals/{target}"),
                &admin,
                json!({ "disabled": true }),
            )
            .await;
        assert_eq!(r.status, 404, "{target}");
        let r = h.delete(&format!("/v1/principals/{target}"), &admin).await;
        assert_eq!(r.status, 404, "{target}");
        let r = h
            .post(
                &format!("/v1/principals/{target}/rotate-token"),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 404, "{target}");
    }
    let r = h
        .post(
            &format!("/v1/principals/{mgr}/rotate-token"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.get("/v1/orgs", &mgr_token).await.status, 401);
    assert_eq!(
        h.delete(&format!("/v1/principals/{mgr}"), &admin)
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn anyone_rotates_its_own_token_but_only_admins_list_principals() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (viewer_id, viewer) = h.principal("viewer", json!(["acme"]), false).await;
    let (mgr_id, mgr) = h.principal("manager", json!(["acme"]), true).await;
    for token in [&viewer, &mgr] {
        let r = h.get("/v1/principals", token).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"));
        let r = h
            .post(
                "/v1/principals",
                token,
                json!({ "name": "x", "role": "viewer", "orgs": ["acme"] }),
            )
            .await;
        assert_eq!(r.status, 403);
    }
    // A viewer cannot touch the manager, nor see it.
    let r = h
        .post(
            &format!("/v1/principals/{mgr_id}/rotate-token"),
            &viewer,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = h.get(&format!("/v1/principals/{viewer_id}"), &viewer).await;
    assert_eq!((r.status, r.body["role"].clone()), (200, json!("viewer")));
    let r = h
        .post(
            &format!("/v1/principals/{viewer_id}/rotate-token"),
            &viewer,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 400, "a JSON null body is not an object");
    let r = h
        .post(
            &format!("/v1/principals/{viewer_id}/rotate-token"),
            &viewer,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.body["token"].as_str().unwrap();
    assert_eq!(h.get("/v1/orgs", &viewer).await.status, 401);
    assert_eq!(h.get("/v1/orgs", new).await.status, 200);
    let _ = mgr;
}

/// Principals and orgs go through the same write path as keys: `ETag` on reads and
/// writes, `If-Match` with a stale one is 412 and changes nothing.
#[tokio::test]
async fn principals_and_orgs_honour_if_match() {
    use reqwest::Method;
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let r = h.get("/v1/orgs/acme", &h.owner).await;
    let org_etag = r.headers["etag"].to_str().unwrap().to_string();
    let (id, token) = h.principal("manager", json!(["acme"]), true).await;
    let p = format!("/v1/principals/{id}");
    let first = h.get(&p, &h.owner).await;
    let stale = first.headers["etag"].to_str().unwrap().to_string();
    let r = h.patch(&p, &h.owner, json!({ "name": "renamed" })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(r.headers["etag"].to_str().unwrap(), stale);

    let body = |v: Value| Some(v.to_string());
    let if_match = [("if-match", stale.as_str())];
    for (method, path, b) in [
        (Method::PATCH, p.clone(), body(json!({ "disabled": true }))),
        (Method::POST, format!("{p}/rotate-token"), body(json!({}))),
        (Method::DELETE, p.clone(), None),
    ] {
        let r = h
            .raw(method.clone(), &path, Some(&h.owner), b, &if_match)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (412, "precondition_failed"),
            "{method} {path}"
        );
    }
    let now = h.get(&p, &h.owner).await;
    assert_eq!(now.body["disabled"], false);
    assert_eq!(now.body["name"], "renamed");
    assert_eq!(h.get(&p, &token).await.status, 200, "the token still works");

    let r = h
        .raw(
            Method::PATCH,
            "/v1/orgs/acme",
            Some(&h.owner),
            body(json!({ "name": "Acme 2" })),
            &[("if-match", "\"999\"")],
        )
        .await;
    assert_eq!((r.status, r.code()), (412, "precondition_failed"));
    let r = h
        .raw(
            Method::PATCH,
            "/v1/orgs/acme",
            Some(&h.owner),
            body(json!({ "name": "Acme 2" })),
            &[("if-match", org_etag.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], "Acme 2");
}
