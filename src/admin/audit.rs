//! The audit trail: one [`AuditEvent`] per admin write, and `GET /v1/orgs/{org}/audit`.
//!
//! Details hold field names and settings, never a secret, token or hash. An event is
//! appended after its write succeeded; if the append then fails, the write stands (a
//! created key's secret must still reach its caller) and the failure is logged.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AdminContext;
use super::auth::{Action, Caller};
use super::error::AdminError;
use super::input::{AdminPath, QueryParams, is_id_of};
use crate::key::{AuditEvent, new_id};
use crate::store::KeyStore;

/// Appends one event; never fails the request.
pub async fn record(
    store: &dyn KeyStore,
    actor: &str,
    org: Option<&str>,
    action: &str,
    target: &str,
    details: Value,
) {
    let event = AuditEvent {
        id: new_id("aud"),
        at: jiff::Timestamp::now(),
        actor: actor.to_string(),
        org: org.map(str::to_string),
        action: action.to_string(),
        target: Some(target.to_string()),
        details,
    };
    if let Err(e) = store.append_audit(&event).await {
        tracing::error!(error = %e, action, target, "could not append an audit event");
    }
}

/// Events scanned at most per filtered request, so a filter matching nothing in a long
/// history answers promptly; the answer's `next_cursor` resumes the scan.
const MAX_SCANNED: usize = 5_000;
/// Events read from the store per step of a filtered scan.
const SCAN_PAGE: usize = 500;

/// `?key=` and `?actor=`: events whose target is that key, or done by that principal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Filter {
    key: Option<String>,
    actor: Option<String>,
}

impl Filter {
    fn parse(key: Option<&str>, actor: Option<&str>) -> Result<Filter, AdminError> {
        let mut filter = Filter::default();
        for (field, kind, given, slot) in [
            ("key", "key", key, &mut filter.key),
            ("actor", "prn", actor, &mut filter.actor),
        ] {
            if let Some(value) = given {
                if !is_id_of(kind, value) {
                    return Err(AdminError::invalid(
                        field,
                        format!("must be an id like {kind}_01j…"),
                    ));
                }
                *slot = Some(value.to_string());
            }
        }
        Ok(filter)
    }

    fn is_empty(&self) -> bool {
        self.key.is_none() && self.actor.is_none()
    }

    fn matches(&self, event: &AuditEvent) -> bool {
        self.key
            .as_deref()
            .is_none_or(|k| event.target.as_deref() == Some(k))
            && self.actor.as_deref().is_none_or(|a| event.actor == a)
    }
}

/// One step of a filtered scan: the matching events of `scanned` (newest first) are
/// added to `found` until it holds `limit`. Returns the id to resume after when the
/// scan stopped inside `scanned` because `found` is full.
fn take_matching(
    filter: &Filter,
    scanned: Vec<AuditEvent>,
    found: &mut Vec<AuditEvent>,
    limit: usize,
) -> Option<String> {
    let count = scanned.len();
    for (i, event) in scanned.into_iter().enumerate() {
        if !filter.matches(&event) {
            continue;
        }
        let id = event.id.clone();
        found.push(event);
        if found.len() >= limit {
            return (i + 1 < count).then_some(id);
        }
    }
    None
}

/// `GET /v1/orgs/{org}/audit?limit=&cursor=&key=&actor=` (owner, admin): newest first.
/// With `key` or `actor`, only the matching events; a page may then hold fewer than
/// `limit` events (at most [`MAX_SCANNED`] are read per call) while `next_cursor`
/// still says where to go on.
pub async fn list(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(org): AdminPath<String>,
    query: QueryParams,
) -> Result<Json<Value>, AdminError> {
    caller.authorize(Action::ReadAudit, Some(&org))?;
    query.allow(&["limit", "cursor", "key", "actor"])?;
    let limit = query.limit(50, 200)?;
    let cursor = query.cursor("aud")?;
    let filter = Filter::parse(query.get("key"), query.get("actor"))?;
    if ctx.store.get_org(&org).await?.is_none() {
        return Err(AdminError::not_found(format!("no org `{org}`")));
    }
    if filter.is_empty() {
        let page = ctx.store.list_audit(&org, cursor.as_deref(), limit).await?;
        return Ok(Json(
            json!({ "data": page.items, "next_cursor": page.next }),
        ));
    }
    let mut found = Vec::new();
    let mut after = cursor;
    let mut scanned = 0;
    let next = loop {
        let page = ctx
            .store
            .list_audit(&org, after.as_deref(), SCAN_PAGE)
            .await?;
        scanned += page.items.len();
        let last = page.items.last().map(|e| e.id.clone());
        if let Some(resume) = take_matching(&filter, page.items, &mut found, limit) {
            break Some(resume);
        }
        if found.len() >= limit || scanned >= MAX_SCANNED {
            break page.next.and(last);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break None,
        }
    };
    Ok(Json(json!({ "data": found, "next_cursor": next })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32, actor: &str, target: &str) -> AuditEvent {
        AuditEvent {
            id: format!("aud_{n:026}"),
            at: jiff::Timestamp::UNIX_EPOCH,
            actor: actor.into(),
            org: Some("acme".into()),
            action: "key.update".into(),
            target: Some(target.into()),
            details: Value::Null,
        }
    }

    #[test]
    fn a_filter_matches_target_key_and_actor() {
        let e = event(1, "prn_a", "key_k");
        let f = |key: Option<&str>, actor: Option<&str>| Filter {
            key: key.map(str::to_string),
            actor: actor.map(str::to_string),
        };
        for (filter, want) in [
            (f(None, None), true),
            (f(Some("key_k"), None), true),
            (f(Some("key_x"), None), false),
            (f(None, Some("prn_a")), true),
            (f(None, Some("prn_b")), false),
            (f(Some("key_k"), Some("prn_a")), true),
            (f(Some("key_k"), Some("prn_b")), false),
        ] {
            assert_eq!(filter.matches(&e), want, "{filter:?}");
        }
    }

    #[test]
    fn take_matching_stops_when_full_and_says_where_to_resume() {
        let filter = Filter {
            key: Some("key_k".into()),
            actor: None,
        };
        let page = || {
            vec![
                event(5, "prn_a", "key_k"),
                event(4, "prn_a", "key_x"),
                event(3, "prn_a", "key_k"),
                event(2, "prn_a", "key_x"),
            ]
        };
        // (limit, already found, resume after, ids found)
        let cases: [(usize, usize, Option<u32>, &[u32]); 4] = [
            (1, 0, Some(5), &[5]),
            (2, 0, Some(3), &[5, 3]),
            (3, 0, None, &[5, 3]),
            (2, 1, Some(5), &[9, 5]),
        ];
        for (limit, already, resume, ids) in cases {
            let mut found: Vec<AuditEvent> =
                (0..already).map(|_| event(9, "prn_a", "key_k")).collect();
            let got = take_matching(&filter, page(), &mut found, limit);
            assert_eq!(got, resume.map(|n| format!("aud_{n:026}")), "limit {limit}");
            let want: Vec<String> = ids.iter().map(|n| format!("aud_{n:026}")).collect();
            let got: Vec<String> = found.into_iter().map(|e| e.id).collect();
            assert_eq!(got, want, "limit {limit}");
        }
    }

    #[test]
    fn a_filter_takes_only_ids() {
        let id = "01jabcdefghjkmnpqrstvwxyz0";
        let (key, prn) = (format!("key_{id}"), format!("prn_{id}"));
        assert!(Filter::parse(Some(&key), Some(&prn)).is_ok());
        for (key, actor) in [
            (Some("abc"), None),
            (None, Some(key.as_str())),
            (None, Some("prn_")),
        ] {
            let err = Filter::parse(key, actor).unwrap_err();
            assert!(err.to_string().contains("must be an id"), "{err}");
        }
    }
}

#[cfg(test)]
mod endpoint_tests {
    use serde_json::json;

    use crate::admin::tests::Harness;

    #[tokio::test]
    async fn the_audit_list_filters_by_key_and_actor_across_pages() {
        let h = Harness::start().await;
        h.org("acme", json!({})).await;
        let (admin_id, admin) = h.principal("admin", json!(["acme"]), true).await;
        let (first, _) = h
            .key("acme", &admin, json!({"name": "one", "scopes": ["read"]}))
            .await;
        let first = first["id"].as_str().unwrap().to_string();
        for i in 0..3 {
            h.key(
                "acme",
                &h.owner,
                json!({"name": format!("k{i}"), "scopes": ["read"]}),
            )
            .await;
        }
        let r = h
            .patch(
                &format!("/v1/orgs/acme/keys/{first}"),
                &h.owner,
                json!({"name": "uno"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);

        let ids = |r: &crate::admin::tests::Resp| -> Vec<(String, String)> {
            r.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["action"].as_str().unwrap().into(),
                        e["actor"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        let r = h
            .get(&format!("/v1/orgs/acme/audit?key={first}&limit=1"), &admin)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(ids(&r), [("key.update".to_string(), h.owner_id.clone())]);
        let next = r.body["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_string();
        let r = h
            .get(
                &format!("/v1/orgs/acme/audit?key={first}&limit=1&cursor={next}"),
                &admin,
            )
            .await;
        assert_eq!(ids(&r), [("key.create".to_string(), admin_id.clone())]);
        // Older events remain unscanned, so the page says where to go on; the rest of
        // the history holds no match.
        let next = r.body["next_cursor"]
            .as_str()
            .expect("a cursor")
            .to_string();
        let r = h
            .get(
                &format!("/v1/orgs/acme/audit?key={first}&cursor={next}"),
                &admin,
            )
            .await;
        assert_eq!(ids(&r), []);
        assert!(r.body["next_cursor"].is_null(), "{}", r.text);

        let r = h
            .get(&format!("/v1/orgs/acme/audit?actor={admin_id}"), &admin)
            .await;
        assert_eq!(ids(&r), [("key.create".to_string(), admin_id.clone())]);
        let r = h.get("/v1/orgs/acme/audit?key=nope", &admin).await;
        assert_eq!((r.status, r.field()), (422, "key"));
    }
}
