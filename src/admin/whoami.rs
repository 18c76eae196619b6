//! `GET /v1/whoami` (any principal): the caller and what its role lets it do, so that a
//! client such as the web page offers only what the server will allow, and says why
//! the rest is missing (a manager without `api_access`).
//!
//! The answer comes from the role table itself ([`Caller::authorize`]), never from a
//! copy of it; the org checks stay with each call.

use axum::Json;
use serde_json::{Map, Value, json};

use super::auth::{Action, Caller};
use super::principals::PrincipalView;
use crate::key::Role;

/// The actions reported, by the name the answer gives them.
const ACTIONS: [(&str, Action); 5] = [
    ("write_keys", Action::WriteKeys),
    ("revoke_keys", Action::RevokeKeys),
    ("read_audit", Action::ReadAudit),
    ("manage_principals", Action::ManagePrincipals),
    ("manage_orgs", Action::ManageOrgs),
];

/// The roles this caller may give a new principal (SPEC §5: an admin never grants more
/// than manager).
fn grantable_roles(role: Role) -> &'static [&'static str] {
    match role {
        Role::Owner => &["owner", "admin", "manager", "viewer", "verifier"],
        Role::Admin => &["manager", "viewer", "verifier"],
        Role::Manager | Role::Viewer | Role::Verifier => &[],
    }
}

/// `{principal, can: {action: bool}, why_not: {action: reason}, grantable_roles}`.
pub fn describe(caller: &Caller) -> Value {
    let mut can = Map::new();
    let mut why_not = Map::new();
    for (name, action) in ACTIONS {
        match caller.authorize(action, None) {
            Ok(()) => {
                can.insert(name.into(), json!(true));
            }
            Err(e) => {
                can.insert(name.into(), json!(false));
                why_not.insert(name.into(), json!(e.to_string()));
            }
        }
    }
    json!({
        "principal": PrincipalView::from(caller.principal()),
        "can": can,
        "why_not": why_not,
        "grantable_roles": grantable_roles(caller.principal().role),
    })
}

pub async fn get(caller: Caller) -> Json<Value> {
    Json(describe(&caller))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::admin::tests::Harness;

    #[tokio::test]
    async fn whoami_reports_the_role_table_for_each_role() {
        let h = Harness::start().await;
        h.org("acme", json!({})).await;
        let (_, admin) = h.principal("admin", json!(["acme"]), true).await;
        let (_, manager) = h.principal("manager", json!(["acme"]), true).await;
        let (_, idle) = h.principal("manager", json!(["acme"]), false).await;
        let (_, viewer) = h.principal("viewer", json!(["acme"]), false).await;
        // (token, role, [write, revoke, audit, principals, orgs], grantable roles)
        let rows: [(&str, &str, [bool; 5], &[&str]); 5] = [
            (
                &h.owner,
                "owner",
                [true; 5],
                &["owner", "admin", "manager", "viewer", "verifier"],
            ),
            (
                &admin,
                "admin",
                [true, true, true, true, false],
                &["manager", "viewer", "verifier"],
            ),
            (&manager, "manager", [true, false, false, false, false], &[]),
            (&idle, "manager", [false; 5], &[]),
            (&viewer, "viewer", [false; 5], &[]),
        ];
        for (token, role, can, grantable) in rows {
            let r = h.get("/v1/whoami", token).await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.body["principal"]["role"], role);
            assert!(r.body["principal"].get("token_hash").is_none());
            let names = [
                "write_keys",
                "revoke_keys",
                "read_audit",
                "manage_principals",
                "manage_orgs",
            ];
            for (name, want) in names.iter().zip(can) {
                assert_eq!(r.body["can"][name], want, "{role} {name}");
                assert_eq!(
                    r.body["why_not"].get(name).is_some(),
                    !want,
                    "{role} {name}"
                );
            }
            assert_eq!(r.body["grantable_roles"], json!(grantable), "{role}");
        }
        let r = h.get("/v1/whoami", &idle).await;
        let why = r.body["why_not"]["write_keys"].as_str().unwrap();
        assert!(why.contains("api_access"), "{why}");
        assert_eq!(h.get("/v1/whoami", "kga_nope").await.status, 401);
    }
}
