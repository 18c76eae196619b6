//! Every role × every SPEC §5 row, and cross-org attempts.

use reqwest::Method;
use serde_json::{Value, json};

use super::Harness;

#[derive(Clone, Copy, Debug)]
enum Row {
    CreateOrg,
    PatchOrg,
    ListOrgs,
    GetOrg,
    CreateKey,
    ListKeys,
    GetKey,
    PatchKey,
    Regenerate,
    Revoke,
    DeleteKey,
    Audit,
    ListPrincipals,
    CreatePrincipal,
}

const ROWS: [Row; 14] = [
    Row::CreateOrg,
    Row::PatchOrg,
    Row::ListOrgs,
    Row::GetOrg,
    Row::CreateKey,
    Row::ListKeys,
    Row::GetKey,
    Row::PatchKey,
    Row::Regenerate,
    Row::Revoke,
    Row::DeleteKey,
    Row::Audit,
    Row::ListPrincipals,
    Row::CreatePrincipal,
];

/// Calls one row against org `org`, on a fresh key made by the owner where needed.
async fn call(h: &Harness, row: Row, org: &str, token: &str, n: usize) -> u16 {
    let (key, _) = h.read_key(org).await;
    let kp = format!("/v1/orgs/{org}/keys/{}", key["id"].as_str().unwrap());
    let r = match row {
        Row::CreateOrg => {
            h.post(
                "/v1/orgs",
                token,
                json!({ "id": format!("new{n}"), "name": "n" }),
            )
            .await
        }
        Row::PatchOrg => {
            h.patch(&format!("/v1/orgs/{org}"), token, json!({ "name": "p" }))
                .await
        }
        Row::ListOrgs => h.get("/v1/orgs", token).await,
        Row::GetOrg => h.get(&format!("/v1/orgs/{org}"), token).await,
        Row::CreateKey => {
            h.post(
                &format!("/v1/orgs/{org}/keys"),
                token,
                json!({ "name": "k", "scopes": ["read"] }),
            )
            .await
        }
        Row::ListKeys => h.get(&format!("/v1/orgs/{org}/keys"), token).await,
        Row::GetKey => h.get(&kp, token).await,
        Row::PatchKey => h.patch(&kp, token, json!({ "name": "renamed" })).await,
        Row::Regenerate => h.post(&format!("{kp}/regenerate"), token, json!({})).await,
        Row::Revoke => h.post(&format!("{kp}/revoke"), token, json!({})).await,
        Row::DeleteKey => h.delete(&kp, token).await,
        Row::Audit => h.get(&format!("/v1/orgs/{org}/audit"), token).await,
        Row::ListPrincipals => h.get("/v1/principals", token).await,
        Row::CreatePrincipal => {
            h.post(
                "/v1/principals",
                token,
                json!({ "name": "v", "role": "viewer", "orgs": [org] }),
            )
            .await
        }
    };
    if r.status == 403 {
        assert_eq!(r.code(), "forbidden", "{row:?}");
    }
    r.status
}

#[tokio::test]
async fn every_role_on_every_row() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    let (_, admin) = h.principal("admin", json!(["acme"]), false).await;
    let (_, manager) = h.principal("manager", json!(["acme"]), true).await;
    let (_, manager_off) = h.principal("manager", json!(["acme"]), false).await;
    let (_, viewer) = h.principal("viewer", json!(["acme"]), true).await;
    let owner = h.owner.clone();

    // Columns: owner, admin, manager (api_access), manager (no api_access), viewer.
    let expected: [(Row, [u16; 5]); 14] = [
        (Row::CreateOrg, [201, 403, 403, 403, 403]),
        (Row::PatchOrg, [200, 403, 403, 403, 403]),
        (Row::ListOrgs, [200, 200, 200, 200, 200]),
        (Row::GetOrg, [200, 200, 200, 200, 200]),
        (Row::CreateKey, [201, 201, 201, 403, 403]),
        (Row::ListKeys, [200, 200, 200, 200, 200]),
        (Row::GetKey, [200, 200, 200, 200, 200]),
        (Row::PatchKey, [200, 200, 200, 403, 403]),
        (Row::Regenerate, [200, 200, 200, 403, 403]),
        (Row::Revoke, [200, 200, 403, 403, 403]),
        (Row::DeleteKey, [204, 204, 403, 403, 403]),
        (Row::Audit, [200, 200, 403, 403, 403]),
        (Row::ListPrincipals, [200, 200, 403, 403, 403]),
        (Row::CreatePrincipal, [201, 201, 403, 403, 403]),
    ];
    assert_eq!(expected.len(), ROWS.len());
    let tokens = [&owner, &admin, &manager, &manager_off, &viewer];
    let mut n = 0;
    for (row, statuses) in expected {
        for (col, (token, want)) in tokens.iter().zip(statuses).enumerate() {
            n += 1;
            let got = call(&h, row, "acme", token, n).await;
            assert_eq!(got, want, "{row:?} as column {col}");
        }
    }
}

#[tokio::test]
async fn an_admin_of_one_org_neither_sees_nor_touches_another() {
    let h = Harness::start().await;
    h.org("acme", json!({})).await;
    h.org("globex", json!({})).await;
    let (_, admin) = h.principal("admin", json!(["globex"]), false).await;
    let (_, manager) = h.principal("manager", json!(["globex"]), true).await;
    let (_, viewer) = h.principal("viewer", json!(["globex"]), false).await;
    let (acme_key, acme_secret) = h.read_key("acme").await;
    let acme_id = acme_key["id"].as_str().unwrap().to_string();

    for token in [&admin, &manager, &viewer] {
        let r = h.get("/v1/orgs", token).await;
        let orgs: Vec<&Value> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| &o["id"])
            .collect();
        assert_eq!(orgs, [&json!("globex")]);
        let mut n = 100;
        for row in ROWS {
            if matches!(row, Row::ListOrgs | Row::CreateOrg | Row::ListPrincipals) {
                continue;
            }
            n += 1;
            let got = call(&h, row, "acme", token, n).await;
            assert_eq!(got, 403, "{row:?} on acme");
        }
        // An unknown org looks the same as a foreign one.
        assert_eq!(h.get("/v1/orgs/initech", token).await.status, 403);
        // Acme's key through globex's path is not found.
        let r = h
            .get(&format!("/v1/orgs/globex/keys/{acme_id}"), token)
            .await;
        assert_eq!(r.status, 404);
        let r = h
            .call(
                Method::POST,
                &format!("/v1/orgs/globex/keys/{acme_id}/revoke"),
                &admin,
                None,
            )
            .await;
        assert_eq!(r.status, 404);
    }
    // Acme's key is untouched, and the secret never showed.
    let r = h
        .get(&format!("/v1/orgs/acme/keys/{acme_id}"), &h.owner)
        .await;
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["name"], acme_key["name"]);
    assert!(!r.text.contains(&acme_secret));
}
