//! Orgs: `POST /v1/orgs`, `GET /v1/orgs`, `GET /v1/orgs/{org}`, `PATCH /v1/orgs/{org}`.
//!
//! Only owners create or edit orgs; everyone sees the orgs in its own list. An org
//! change re-decides its keys' creator suspensions and drops them all from the resolver
//! cache, so that the data plane reads them again with the new org settings.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::AdminContext;
use super::audit;
use super::auth::{Action, Caller};
use super::creator;
use super::error::AdminError;
use super::input::{AdminPath, JsonObject, Patch, decode, merge_patch};
use super::validate;
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
) -> Result<(StatusCode, Json<Org>), AdminError> {
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
    Ok((StatusCode::CREATED, Json(org)))
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
) -> Result<Json<Org>, AdminError> {
    caller.authorize(Action::Read, Some(&org))?;
    Ok(Json(load(&ctx, &org).await?))
}

/// The org, or 404. Callers check access first, so a 404 reveals nothing.
pub async fn load(ctx: &AdminContext, org: &str) -> Result<Org, AdminError> {
    ctx.store
        .get_org(org)
        .await?
        .ok_or_else(|| AdminError::not_found(format!("no org `{org}`")))
}

/// `PATCH /v1/orgs/{org}` (owner): JSON Merge Patch of name, key_policy,
/// max_key_lifetime_days, rate_limit.
pub async fn patch(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(org_id): AdminPath<String>,
    body: JsonObject,
) -> Result<Json<Org>, AdminError> {
    caller.authorize(Action::ManageOrgs, Some(&org_id))?;
    if body.0.contains_key("id") {
        return Err(AdminError::invalid("id", "an org's id cannot be changed"));
    }
    let mut f = body.fields(PATCH_FIELDS)?;
    let _write = super::write_guard().await;
    let mut org = load(&ctx, &org_id).await?;
    let mut changed = Vec::new();
    match f.patch::<String>("name")? {
        Patch::Absent => {}
        Patch::Null => return Err(AdminError::invalid("name", "cannot be removed")),
        Patch::Set(n) => {
            org.name = validate::name("name", n)?;
            changed.push("name");
        }
    }
    match f.patch::<KeyPolicy>("key_policy")? {
        Patch::Absent => {}
        Patch::Null => {
            org.key_policy = KeyPolicy::default();
            changed.push("key_policy");
        }
        Patch::Set(p) => {
            org.key_policy = p;
            changed.push("key_policy");
        }
    }
    match f.patch::<u32>("max_key_lifetime_days")? {
        Patch::Absent => {}
        Patch::Null => {
            org.max_key_lifetime_days = None;
            changed.push("max_key_lifetime_days");
        }
        Patch::Set(d) => {
            org.max_key_lifetime_days = Some(validate::lifetime_days("max_key_lifetime_days", d)?);
            changed.push("max_key_lifetime_days");
        }
    }
    match f.patch::<Value>("rate_limit")? {
        Patch::Absent => {}
        Patch::Null => {
            org.rate_limit = None;
            changed.push("rate_limit");
        }
        Patch::Set(p) => {
            org.rate_limit = patch_rate_limit(org.rate_limit.as_ref(), &p)?;
            changed.push("rate_limit");
        }
    }
    if changed.is_empty() {
        return Ok(Json(org));
    }
    let now = Timestamp::now();
    org.updated_at = now;
    ctx.store.update_org(&org).await?;
    creator::sync_org(&ctx, &org, now).await?;
    audit::record(
        ctx.store.as_ref(),
        caller.id(),
        Some(&org.id),
        "org.update",
        &org.id,
        json!({ "fields": changed }),
    )
    .await;
    Ok(Json(org))
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
