//! Admin principals: `POST/GET /v1/principals`, `GET/PATCH/DELETE /v1/principals/{id}`,
//! `POST /v1/principals/{id}/rotate-token`.
//!
//! Owners manage every principal; admins see principals within their orgs and manage
//! only managers and viewers there, and can never grant an org they do not hold or a
//! role above manager. Nobody disables or deletes itself (the last owner could lock
//! everyone out). A principal invisible to the caller is 404, so it does not leak.
//!
//! Every change goes through [`write::apply`] (compare-and-swap on the principal's
//! version, `If-Match`); disabling, enabling and deleting a principal invalidate the
//! keys it created on every replica, whose suspension under `key_policy: creator` is
//! derived from its state (see [`super::creator`]). Tokens appear only in the create
//! and rotate responses.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use super::AdminContext;
use super::audit;
use super::auth::{Action, AdminToken, Caller};
use super::error::AdminError;
use super::input::{AdminPath, JsonObject, Patch};
use super::validate;
use super::write::{self, Applied, IfMatch, with_etag};
use crate::key::{OrgScope, Principal, Role, new_id};

const CREATE_FIELDS: &[&str] = &["name", "role", "orgs", "api_access"];
const PATCH_FIELDS: &[&str] = &["name", "disabled", "api_access"];

/// What admins see of a principal: never its token hash.
#[derive(Debug, Clone, Serialize)]
pub struct PrincipalView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub orgs: OrgScope,
    pub api_access: bool,
    pub disabled: bool,
    pub created_at: Timestamp,
}

impl From<&Principal> for PrincipalView {
    fn from(p: &Principal) -> Self {
        PrincipalView {
            id: p.id.clone(),
            name: p.name.clone(),
            role: p.role,
            orgs: p.orgs.clone(),
            api_access: p.api_access,
            disabled: p.disabled,
            created_at: p.created_at,
        }
    }
}

/// A response carrying a fresh admin token: never cached by anything in between.
fn with_token(status: StatusCode, p: &Principal, token: String) -> Response {
    let body = json!({ "principal": PrincipalView::from(p), "token": token });
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether the caller may see `p`: owners all, admins those within their orgs, anyone itself.
fn sees(caller: &Caller, p: &Principal) -> bool {
    p.id == caller.id()
        || match caller.principal().role {
            Role::Owner => true,
            Role::Admin => matches!(p.orgs, OrgScope::List(_)) && caller.holds_orgs(&p.orgs),
            Role::Manager | Role::Viewer | Role::Verifier => false,
        }
}

/// Whether the caller may change `p`: owners any, admins managers and viewers of their orgs.
fn manages(caller: &Caller, p: &Principal) -> Result<(), AdminError> {
    caller.authorize(Action::ManagePrincipals, None)?;
    let ok = match caller.principal().role {
        Role::Owner => true,
        Role::Admin => {
            matches!(p.role, Role::Manager | Role::Viewer | Role::Verifier)
                && caller.holds_orgs(&p.orgs)
        }
        Role::Manager | Role::Viewer | Role::Verifier => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AdminError::forbidden(
            "an admin manages only managers and viewers of its own orgs",
        ))
    }
}

/// A live principal the caller can see, or 404.
async fn load_visible(
    ctx: &AdminContext,
    caller: &Caller,
    id: &str,
) -> Result<Principal, AdminError> {
    ctx.store
        .get_principal(id)
        .await?
        .filter(|p| p.deleted_at.is_none() && sees(caller, p))
        .ok_or_else(|| AdminError::not_found(format!("no principal `{id}`")))
}

/// One audit event per org of the principal (owners: one, without org).
async fn record(ctx: &AdminContext, caller: &Caller, p: &Principal, action: &str, details: Value) {
    match &p.orgs {
        OrgScope::All => {
            audit::record(
                ctx.store.as_ref(),
                caller.id(),
                None,
                action,
                &p.id,
                details,
            )
            .await;
        }
        OrgScope::List(orgs) => {
            for org in orgs {
                audit::record(
                    ctx.store.as_ref(),
                    caller.id(),
                    Some(org),
                    action,
                    &p.id,
                    details.clone(),
                )
                .await;
            }
        }
    }
}

/// `POST /v1/principals` (owner, admin): 201 `{principal, token}`.
pub async fn create(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::ManagePrincipals, None)?;
    let mut f = body.fields(CREATE_FIELDS)?;
    let name = validate::name("name", f.required("name")?)?;
    let role = f.required::<Role>("role")?;
    if caller.principal().role != Role::Owner
        && !matches!(role, Role::Manager | Role::Viewer | Role::Verifier)
    {
        return Err(AdminError::forbidden(
            "an admin may create manager, viewer and verifier principals only",
        ));
    }
    let orgs = match (role, f.optional::<OrgScope>("orgs")?) {
        (Role::Owner, None | Some(OrgScope::All)) => OrgScope::All,
        (Role::Owner, Some(OrgScope::List(_))) => {
            return Err(AdminError::invalid(
                "orgs",
                "owners hold every org: orgs must be \"*\"",
            ));
        }
        (_, None) => return Err(AdminError::invalid("orgs", "is required")),
        (_, Some(OrgScope::All)) => {
            return Err(AdminError::invalid(
                "orgs",
                "only owners hold \"*\"; list the org ids",
            ));
        }
        (_, Some(OrgScope::List(list))) => OrgScope::List(org_list(&ctx, &caller, list).await?),
    };
    let api_access = f.optional::<bool>("api_access")?.unwrap_or(false);
    let token = AdminToken::generate();
    let principal = Principal {
        id: new_id("prn"),
        name,
        role,
        orgs,
        api_access,
        disabled: false,
        created_at: Timestamp::now(),
        deleted_at: None,
        token_hash: token.hash,
        version: 1,
    };
    ctx.store.create_principal(&principal).await?;
    record(
        &ctx,
        &caller,
        &principal,
        "principal.create",
        json!({ "role": principal.role, "orgs": principal.orgs, "api_access": api_access }),
    )
    .await;
    Ok(with_etag(
        principal.version,
        with_token(StatusCode::CREATED, &principal, token.token),
    ))
}

/// A non-empty list of existing orgs that the caller holds (403 before 404-like 422,
/// so that an admin cannot probe for other orgs).
async fn org_list(
    ctx: &AdminContext,
    caller: &Caller,
    list: Vec<String>,
) -> Result<Vec<String>, AdminError> {
    if list.is_empty() {
        return Err(AdminError::invalid("orgs", "must name at least one org"));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, org) in list.into_iter().enumerate() {
        if !caller.sees_org(&org) {
            return Err(AdminError::forbidden(format!(
                "cannot grant org `{org}`: the caller does not hold it"
            )));
        }
        if ctx.store.get_org(&org).await?.is_none() {
            return Err(AdminError::invalid(
                format!("orgs[{i}]"),
                format!("no org `{org}`"),
            ));
        }
        if !out.contains(&org) {
            out.push(org);
        }
    }
    Ok(out)
}

/// `GET /v1/principals` (owner, admin): the live principals the caller can see.
pub async fn list(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
) -> Result<Json<Value>, AdminError> {
    caller.authorize(Action::ManagePrincipals, None)?;
    let mut all = ctx.store.list_principals().await?;
    all.retain(|p| p.deleted_at.is_none() && sees(&caller, p));
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let data: Vec<PrincipalView> = all.iter().map(PrincipalView::from).collect();
    Ok(Json(json!({ "data": data })))
}

/// `GET /v1/principals/{id}`: any principal it may see (anyone may read itself).
pub async fn get(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(id): AdminPath<String>,
) -> Result<Response, AdminError> {
    let p = load_visible(&ctx, &caller, &id).await?;
    Ok(with_etag(p.version, Json(PrincipalView::from(&p))))
}

/// `PATCH /v1/principals/{id}` (owner, admin): `name`, `disabled`, `api_access`;
/// `If-Match` makes it conditional.
pub async fn patch(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(id): AdminPath<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::ManagePrincipals, None)?;
    for fixed in ["id", "role", "orgs", "created_at"] {
        if body.0.contains_key(fixed) {
            return Err(AdminError::invalid(fixed, "cannot be changed"));
        }
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
    let disabled = match f.patch::<bool>("disabled")? {
        Patch::Absent => None,
        Patch::Null => return Err(AdminError::invalid("disabled", "must be true or false")),
        Patch::Set(d) => {
            if d && id == caller.id() {
                return Err(self_lockout("disable"));
            }
            changed.push("disabled");
            Some(d)
        }
    };
    let api_access = match f.patch::<bool>("api_access")? {
        Patch::Absent => None,
        Patch::Null => return Err(AdminError::invalid("api_access", "must be true or false")),
        Patch::Set(a) => {
            changed.push("api_access");
            Some(a)
        }
    };
    let applied = write::apply(
        &ctx,
        if_match.as_ref(),
        || load_visible(&ctx, &caller, &id),
        |before: &Principal| {
            manages(&caller, before)?;
            let mut p = before.clone();
            if let Some(n) = &name {
                p.name = n.clone();
            }
            if let Some(d) = disabled {
                p.disabled = d;
            }
            if let Some(a) = api_access {
                p.api_access = a;
            }
            Ok((p != *before).then_some(p))
        },
    )
    .await?;
    if let Applied::Changed { after: p, .. } = &applied {
        record(
            &ctx,
            &caller,
            p,
            "principal.update",
            json!({ "fields": changed, "disabled": p.disabled, "api_access": p.api_access }),
        )
        .await;
    }
    let p = applied.current();
    Ok(with_etag(p.version, Json(PrincipalView::from(p))))
}

fn self_lockout(what: &str) -> AdminError {
    AdminError::Conflict {
        code: "self_lockout",
        message: format!("a principal cannot {what} itself"),
    }
}

/// `DELETE /v1/principals/{id}` (owner, admin): 204. Its token stops at once; under
/// `key_policy: creator` its keys are suspended for good.
pub async fn delete(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(id): AdminPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    caller.authorize(Action::ManagePrincipals, None)?;
    let if_match = IfMatch::from_headers(&headers)?;
    if id == caller.id() {
        return Err(self_lockout("delete"));
    }
    let now = Timestamp::now();
    // Re-keyed to a hash nobody holds, so the old token leaves the token index.
    let unusable = AdminToken::generate().hash;
    let applied = write::apply(
        &ctx,
        if_match.as_ref(),
        || load_visible(&ctx, &caller, &id),
        |before: &Principal| {
            manages(&caller, before)?;
            let mut p = before.clone();
            p.deleted_at = Some(now);
            p.disabled = true;
            p.token_hash = unusable;
            Ok(Some(p))
        },
    )
    .await?;
    if let Applied::Changed { before, .. } = &applied {
        record(&ctx, &caller, before, "principal.delete", json!({})).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/principals/{id}/rotate-token` (owner, admin, self): `{principal, token}`;
/// the old token stops at once. A principal disabled or deleted meanwhile rotates
/// nothing of its own.
pub async fn rotate_token(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(id): AdminPath<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, AdminError> {
    body.fields(&[])?;
    let if_match = IfMatch::from_headers(&headers)?;
    let token = AdminToken::generate();
    let applied = write::apply(
        &ctx,
        if_match.as_ref(),
        || load_visible(&ctx, &caller, &id),
        |before: &Principal| {
            if before.id != caller.id() {
                manages(&caller, before)?;
            } else if before.is_away() {
                return Err(AdminError::InvalidToken(
                    "this admin token's principal is disabled".into(),
                ));
            }
            let mut p = before.clone();
            p.token_hash = token.hash;
            Ok(Some(p))
        },
    )
    .await?;
    let Applied::Changed { after: p, .. } = &applied else {
        return Err(AdminError::Internal);
    };
    record(&ctx, &caller, p, "principal.rotate_token", json!({})).await;
    Ok(with_etag(
        p.version,
        with_token(StatusCode::OK, p, token.token),
    ))
}
