//! Orgs: `POST /v1/orgs`, `GET /v1/orgs`, `GET /v1/orgs/{org}`, `PATCH /v1/orgs/{org}`.
//!
//! Only owners create or edit orgs; everyone sees the orgs in its own list. An org
//! change goes through [`write::apply`] (compare-and-swap on the org's version,
//! `If-Match`) and touches no key: only a `key_policy` change concerns keys, and it
//! invalidates the org's cached keys by org id on every replica (suspension under
//! `key_policy: creator` is derived when a key is read).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::AdminContext;
use super::audit;
use super::auth::{Action, Caller};
use super::error::AdminError;
use super::input::{AdminPath, JsonObject, Patch, decode, merge_patch};
use super::validate;
use super::write::{self, Applied, IfMatch, with_etag};
use crate::key::{KeyPolicy, Org, RateLimit};

const CREATE_FIELDS: &[&str] = &[
    "id",
    "name",
    "key_policy",
    "max_key_lifetime_days",
    "rate_limit",
];
const PATCH_FIELDS: &[&str] = &["name", "key_policy", "max_key_lifetime_days", "rate_limit"];

/// `POST /v1/orgs` (owner): 201 with the org; 409 if the id is taken.
pub async fn create(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::ManageOrgs, None)?;
    let mut f = body.fields(CREATE_FIELDS)?;
    let id = validate::org_id("id", f.required("id")?)?;
    let name = validate::name("name", f.required("name")?)?;
    let key_policy = f.optional::<KeyPolicy>("key_policy")?.unwrap_or_default();
    let max_key_lifetime_days = f
        .optional::<u32>("max_key_lifetime_days")?
        .map(|d| validate::lifetime_days("max_key_lifetime_days", d))
        .transpose()?;
    let rate_limit = match f.optional::<RateLimit>("rate_limit")? {
        Some(l) => validate::rate_limit("rate_limit", l)?,
        None => None,
    };
    let now = Timestamp::now();
    let org = Org {
        id,
        name,
        key_policy,
        max_key_lifetime_days,
        rate_limit,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    if ctx.store.get_org(&org.id).await?.is_some() {
        return Err(org_exists(&org.id));
    }
    ctx.store.create_org(&org).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => org_exists(&org.id),
        other => other.into(),
    })?;
    audit::record(
        ctx.store.as_ref(),
        caller.id(),
        Some(&org.id),
        "org.create",
        &org.id,
        json!({ "name": org.name, "key_policy": org.key_policy,
                "max_key_lifetime_days": org.max_key_lifetime_days }),
    )
    .await;
    Ok(with_etag(org.version, (StatusCode::CREATED, Json(org))))
}

fn org_exists(id: &str) -> AdminError {
    AdminError::Conflict {
        code: "org_exists",
        message: format!("an org with id `{id}` already exists"),
    }
}

/// `GET /v1/orgs`: the orgs the caller can see.
pub async fn list(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
) -> Result<Json<Value>, AdminError> {
    caller.authorize(Action::Read, None)?;
    let mut orgs = ctx.store.list_orgs().await?;
    orgs.retain(|o| caller.sees_org(&o.id));
    orgs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(json!({ "data": orgs })))
}

/// `GET /v1/orgs/{org}`.
pub async fn get(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(org): AdminPath<String>,
) -> Result<Response, AdminError> {
    caller.authorize(Action::Read, Some(&org))?;
    let org = load(&ctx, &org).await?;
    Ok(with_etag(org.version, Json(org)))
}

/// The org, or 404. Callers check access first, so a 404 reveals nothing.
pub async fn load(ctx: &AdminContext, org: &str) -> Result<Org, AdminError> {
    ctx.store
        .get_org(org)
        .await?
        .ok_or_else(|| AdminError::not_found(format!("no org `{org}`")))
}

/// `PATCH /v1/orgs/{org}` (owner): JSON Merge Patch of name, key_policy,
/// max_key_lifetime_days, rate_limit; `If-Match` makes it conditional. Touches no key:
/// a `key_policy` change invalidates the org's cached keys by org id.
pub async fn patch(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(org_id): AdminPath<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::ManageOrgs, Some(&org_id))?;
    if body.0.contains_key("id") {
        return Err(AdminError::invalid("id", "an org's id cannot be changed"));
    }
    let if_match = IfMatch::from_headers(&headers)?;
    let mut f = body.fields(PATCH_FIELDS)?;
    let mut changed = Vec::new();
    let name = match f.patch::<String>("name")? {
        Patch::Absent => None,
        Patch::Null => return Err(AdminError::invalid("name", "cannot be removed")),
        Patch::Set(n) => {
            changed.push("name");
            Some(validate::name("name", n)?)
        }
    };
    let key_policy = match f.patch::<KeyPolicy>("key_policy")? {
        Patch::Absent => None,
        Patch::Null => {
            changed.push("key_policy");
            Some(KeyPolicy::default())
        }
        Patch::Set(p) => {
            changed.push("key_policy");
            Some(p)
        }
    };
    let lifetime = match f.patch::<u32>("max_key_lifetime_days")? {
        Patch::Absent => None,
        Patch::Null => {
            changed.push("max_key_lifetime_days");
            Some(None)
        }
        Patch::Set(d) => {
            changed.push("max_key_lifetime_days");
            Some(Some(validate::lifetime_days("max_key_lifetime_days", d)?))
        }
    };
    let rate_limit = match f.patch::<Value>("rate_limit")? {
        Patch::Absent => None,
        Patch::Null => {
            changed.push("rate_limit");
            Some(Value::Null)
        }
        Patch::Set(p) => {
            // 422 before any load; merged into the stored limit when applied.
            patch_rate_limit(None, &p)?;
            changed.push("rate_limit");
            Some(p)
        }
    };
    let now = Timestamp::now();
    let applied = write::apply(
        &ctx,
        if_match.as_ref(),
        || load(&ctx, &org_id),
        |before: &Org| {
            let mut org = before.clone();
            if let Some(n) = &name {
                org.name = n.clone();
            }
            if let Some(p) = key_policy {
                org.key_policy = p;
            }
            if let Some(d) = lifetime {
                org.max_key_lifetime_days = d;
            }
            match &rate_limit {
                None => {}
                Some(Value::Null) => org.rate_limit = None,
                Some(p) => org.rate_limit = patch_rate_limit(org.rate_limit.as_ref(), p)?,
            }
            if org == *before {
                return Ok(None);
            }
            org.updated_at = now;
            Ok(Some(org))
        },
    )
    .await?;
    if let Applied::Changed { after: org, .. } = &applied {
        audit::record(
            ctx.store.as_ref(),
            caller.id(),
            Some(&org.id),
            "org.update",
            &org.id,
            json!({ "fields": changed }),
        )
        .await;
    }
    let org = applied.current();
    Ok(with_etag(org.version, Json(org.clone())))
}

/// Merges a patch into a rate limit (RFC 7396: `{"per_minute": null}` drops one window).
pub fn patch_rate_limit(
    current: Option<&RateLimit>,
    patch: &Value,
) -> Result<Option<RateLimit>, AdminError> {
    let mut merged = serde_json::to_value(current.cloned().unwrap_or_default())
        .map_err(|_| AdminError::Internal)?;
    merge_patch(&mut merged, patch);
    validate::rate_limit("rate_limit", decode::<RateLimit>("rate_limit", merged)?)
}
