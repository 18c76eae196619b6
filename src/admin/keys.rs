//! API keys of an org: create, list, show, edit (JSON Merge Patch), regenerate, revoke,
//! delete (SPEC §1 lifecycle, §5 endpoints).
//!
//! Owns the key's JSON view ([`KeyView`]), which has every SPEC §1 field and never a
//! secret hash; the secret itself appears only in the create and regenerate responses
//! (with `Cache-Control: no-store`). Every change is a transition of [`lifecycle`]
//! applied by the one write path ([`write::apply`]: compare-and-swap on the version,
//! `If-Match`, invalidation), then audited. Responses carry the version as `ETag`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use super::AdminContext;
use super::audit;
use super::auth::{Action, Caller};
use super::creator;
use super::error::AdminError;
use super::input::{AdminPath, JsonObject, Patch, QueryParams};
use super::lifecycle::{self, Edit, KeyChange};
use super::orgs::{self, patch_rate_limit};
use super::validate::{self, ExpiryRequest};
use super::write::{self, Applied, IfMatch, with_etag};
use crate::key::{Environment, KeyPolicy, KeyRecord, KeyStatus, Org, Principal, RateLimit, new_id};
use crate::store::CreateOutcome;

/// Largest page of `GET …/keys`.
const MAX_PAGE: usize = 200;
const DEFAULT_PAGE: usize = 50;
/// With a `status` filter, store pages read per request at most; the cursor then
/// continues where the scan stopped.
const MAX_SCAN_PAGES: usize = 50;

const CREATE_FIELDS: &[&str] = &[
    "name",
    "description",
    "environment",
    "scopes",
    "resources",
    "endpoints",
    "ip_allow",
    "rate_limit",
    "expires_at",
    "expires_in_days",
];
const PATCH_FIELDS: &[&str] = &[
    "name",
    "description",
    "scopes",
    "resources",
    "endpoints",
    "ip_allow",
    "rate_limit",
    "expires_at",
    "expires_in_days",
];
/// Fields of the view that exist but cannot be edited: named as such in the 422.
const FIXED_FIELDS: &[&str] = &[
    "id",
    "org",
    "environment",
    "prefix",
    "created_at",
    "created_by",
    "updated_at",
    "last_used_at",
    "revoked_at",
    "deleted_at",
    "status",
    "grace_ends_at",
];

/// What admins see of a key. Never a secret or secret hash.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: String,
    pub org: String,
    pub name: String,
    pub description: Option<String>,
    pub environment: Environment,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub resources: Option<Vec<String>>,
    pub endpoints: Option<Vec<String>>,
    pub ip_allow: Option<Vec<IpNet>>,
    pub rate_limit: Option<RateLimit>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Always null: a deleted key is not shown any more (kept for clients that read it).
    pub deleted_at: Option<Timestamp>,
    /// When the previous secret stops working, during a regenerate grace.
    pub grace_ends_at: Option<Timestamp>,
    /// `active`, `expired`, `revoked` or `suspended`.
    pub status: &'static str,
}

impl KeyView {
    pub fn new(k: &KeyRecord, status: KeyStatus) -> Self {
        KeyView {
            id: k.id.clone(),
            org: k.org.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            environment: k.environment,
            prefix: k.prefix.clone(),
            scopes: k.scopes.clone(),
            resources: k.resources.clone(),
            endpoints: k.endpoints.clone(),
            ip_allow: k.ip_allow.clone(),
            rate_limit: k.rate_limit.clone(),
            created_at: k.created_at,
            created_by: k.created_by.clone(),
            updated_at: k.updated_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            deleted_at: k.deleted_at,
            grace_ends_at: k.previous_secret.as_ref().map(|p| p.expires_at),
            status: status.as_str(),
        }
    }
}

/// A key's status as admins see it: creator suspension is derived from the creator's
/// current state, as the data plane's lookup derives it (see [`super::creator`]).
pub fn effective_status(
    key: &KeyRecord,
    org: &Org,
    creator: Option<&Principal>,
    now: Timestamp,
) -> KeyStatus {
    let status = key.status_at(now);
    if status == KeyStatus::Active && creator::suspends(org.key_policy, creator) {
        KeyStatus::Suspended
    } else {
        status
    }
}

/// Statuses of one org's keys, looking each creator up at most once.
struct StatusOf<'a> {
    ctx: &'a AdminContext,
    org: &'a Org,
    now: Timestamp,
    creators: HashMap<String, Option<Principal>>,
}

impl<'a> StatusOf<'a> {
    fn new(ctx: &'a AdminContext, org: &'a Org) -> Self {
        StatusOf {
            ctx,
            org,
            now: Timestamp::now(),
            creators: HashMap::new(),
        }
    }

    async fn status(&mut self, key: &KeyRecord) -> Result<KeyStatus, AdminError> {
        if self.org.key_policy != KeyPolicy::Creator {
            return Ok(key.status_at(self.now));
        }
        if !self.creators.contains_key(&key.created_by) {
            let p = self.ctx.store.get_principal(&key.created_by).await?;
            self.creators.insert(key.created_by.clone(), p);
        }
        let creator = self.creators.get(&key.created_by).and_then(Option::as_ref);
        Ok(effective_status(key, self.org, creator, self.now))
    }

    async fn view(&mut self, key: &KeyRecord) -> Result<KeyView, AdminError> {
        let status = self.status(key).await?;
        Ok(KeyView::new(key, status))
    }
}

/// A response carrying a fresh secret: never cached by anything in between.
fn with_secret(status: StatusCode, view: KeyView, secret: String) -> Response {
    let mut response = (status, Json(json!({ "key": view, "secret": secret }))).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `Idempotency-Key`: 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AdminError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        AdminError::BadRequest(
            "Idempotency-Key must be one header of 1 to 255 visible ASCII characters".into(),
        )
    };
    if values.next().is_some() {
        return Err(bad());
    }
    let v = value.to_str().map_err(|_| bad())?;
    if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(v.to_string()))
}

/// `POST /v1/orgs/{org}/keys` (admin, manager with api_access): 201 `{key, secret}`.
pub async fn create(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(org_id): AdminPath<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::WriteKeys, Some(&org_id))?;
    let idempotency = idempotency_key(&headers)?;
    let org = orgs::load(&ctx, &org_id).await?;
    let mut f = body.fields(CREATE_FIELDS)?;
    let config = ctx.config.as_ref();

    let name = validate::name("name", f.required("name")?)?;
    let scopes = validate::scopes(config, f.required("scopes")?)?;
    let description = match f.optional::<String>("description")? {
        Some(d) => validate::description("description", d)?,
        None => None,
    };
    let environment = f
        .optional::<Environment>("environment")?
        .unwrap_or_default();
    let resources = f
        .optional("resources")?
        .map(|v| validate::resources(config, v))
        .transpose()?;
    let endpoints = f
        .optional("endpoints")?
        .map(|v| validate::endpoints(config, v))
        .transpose()?;
    let ip_allow = f
        .optional("ip_allow")?
        .map(validate::ip_allow)
        .transpose()?;
    let rate_limit = match f.optional::<RateLimit>("rate_limit")? {
        Some(l) => validate::rate_limit("rate_limit", l)?,
        None => None,
    };
    let now = Timestamp::now();
    let expiry_request = expiry_request(&mut f, true)?.unwrap_or(ExpiryRequest::Unset);
    let expires_at = validate::expiry(now, expiry_request, org.max_key_lifetime_days)?;

    let secret = ctx.key_format.generate(environment);
    let key = KeyRecord {
        id: new_id("key"),
        org: org.id.clone(),
        name,
        description,
        environment,
        prefix: secret.display_prefix.clone(),
        scopes,
        resources,
        endpoints,
        ip_allow,
        rate_limit,
        created_at: now,
        created_by: caller.id().to_string(),
        updated_at: now,
        last_used_at: None,
        expires_at,
        revoked_at: None,
        deleted_at: None,
        creator_suspended: false,
        secret_hash: secret.hash,
        previous_secret: None,
        version: 1,
    };
    match ctx.store.create_key(&key, idempotency.as_deref()).await? {
        CreateOutcome::Created => {}
        CreateOutcome::IdempotencyReplay { existing_id } => {
            return Err(AdminError::IdempotencyReplay {
                key_id: existing_id,
            });
        }
    }
    // A fresh hash cannot be cached, but a negative entry costs nothing to drop.
    ctx.resolver.invalidate_key(&key).await;
    audit::record(
        ctx.store.as_ref(),
        caller.id(),
        Some(&key.org),
        "key.create",
        &key.id,
        json!({ "name": key.name, "environment": key.environment, "scopes": key.scopes,
                "expires_at": key.expires_at }),
    )
    .await;
    let view = StatusOf::new(&ctx, &org).view(&key).await?;
    Ok(with_etag(
        key.version,
        with_secret(StatusCode::CREATED, view, secret.token),
    ))
}

/// Reads `expires_at` / `expires_in_days` (at most one of them). `None`: neither given.
/// `allow_never`: whether `expires_at: null` may ask for no expiry.
fn expiry_request(
    f: &mut super::input::Fields,
    allow_never: bool,
) -> Result<Option<ExpiryRequest>, AdminError> {
    if f.contains("expires_at") && f.contains("expires_in_days") {
        return Err(AdminError::invalid(
            "expires_in_days",
            "give expires_at or expires_in_days, not both",
        ));
    }
    match f.patch::<String>("expires_at")? {
        Patch::Set(s) => {
            return Ok(Some(ExpiryRequest::At(validate::timestamp(
                "expires_at",
                &s,
            )?)));
        }
        Patch::Null if allow_never => return Ok(Some(ExpiryRequest::Never)),
        Patch::Null | Patch::Absent => {}
    }
    match f.patch::<u32>("expires_in_days")? {
        Patch::Set(d) => Ok(Some(ExpiryRequest::InDays(d))),
        Patch::Null => Err(AdminError::invalid(
            "expires_in_days",
            "cannot be null; use expires_at: null for no expiry",
        )),
        Patch::Absent => Ok(None),
    }
}

/// `GET /v1/orgs/{org}/keys?status=&limit=&cursor=`: newest first, deleted keys left out.
pub async fn list(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(org_id): AdminPath<String>,
    query: QueryParams,
) -> Result<Json<Value>, AdminError> {
    caller.authorize(Action::Read, Some(&org_id))?;
    query.allow(&["status", "limit", "cursor"])?;
    let limit = query.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let mut after = query.cursor("key")?;
    let wanted = query.get("status").map(parse_status).transpose()?;
    let org = orgs::load(&ctx, &org_id).await?;
    let mut statuses = StatusOf::new(&ctx, &org);

    let mut data = Vec::new();
    let mut next_cursor = None;
    for _ in 0..MAX_SCAN_PAGES {
        let page = ctx
            .store
            .list_keys(&org.id, after.as_deref(), limit)
            .await?;
        let page_len = page.items.len();
        for (i, key) in page.items.iter().enumerate() {
            let view = statuses.view(key).await?;
            if wanted.is_none_or(|w| w.as_str() == view.status) {
                data.push(view);
            }
            if data.len() == limit {
                let more = i + 1 < page_len || page.next.is_some();
                next_cursor = more.then(|| key.id.clone());
                break;
            }
        }
        if data.len() == limit {
            break;
        }
        match page.next {
            // With a status filter the scan may stop early: continue from here.
            Some(n) => {
                next_cursor = Some(n.clone());
                after = Some(n);
            }
            None => {
                next_cursor = None;
                break;
            }
        }
    }
    Ok(Json(json!({ "data": data, "next_cursor": next_cursor })))
}

fn parse_status(s: &str) -> Result<KeyStatus, AdminError> {
    match s {
        "active" => Ok(KeyStatus::Active),
        "expired" => Ok(KeyStatus::Expired),
        "revoked" => Ok(KeyStatus::Revoked),
        "suspended" => Ok(KeyStatus::Suspended),
        _ => Err(AdminError::invalid(
            "status",
            "must be active, expired, revoked or suspended",
        )),
    }
}

/// A live key of `org` by id, or 404 (a deleted key is gone for the admin API).
async fn load_key(ctx: &AdminContext, org: &str, id: &str) -> Result<KeyRecord, AdminError> {
    ctx.store
        .key_by_id(id)
        .await?
        .filter(|k| k.org == org && k.deleted_at.is_none())
        .ok_or_else(|| AdminError::not_found(format!("no key `{id}` in org `{org}`")))
}

/// Applies one lifecycle change through the one write path ([`write::apply`]):
/// compare-and-swap on the loaded version, `If-Match` honoured, caches invalidated.
async fn change_key(
    ctx: &Arc<AdminContext>,
    org: &Org,
    id: &str,
    headers: &HeaderMap,
    change: KeyChange,
) -> Result<Applied<KeyRecord>, AdminError> {
    let if_match = IfMatch::from_headers(headers)?;
    let now = Timestamp::now();
    write::apply(
        ctx,
        if_match.as_ref(),
        || load_key(ctx, &org.id, id),
        |key| lifecycle::apply(key, &change, now),
    )
    .await
}

/// Audits a stored change (never a secret in `details`).
async fn audit_change(
    ctx: &AdminContext,
    caller: &Caller,
    applied: &Applied<KeyRecord>,
    action: &str,
    details: Value,
) {
    if let Applied::Changed { after, .. } = applied {
        audit::record(
            ctx.store.as_ref(),
            caller.id(),
            Some(&after.org),
            action,
            &after.id,
            details,
        )
        .await;
    }
}

/// The key's view with its version as `ETag`.
async fn key_response(
    ctx: &AdminContext,
    org: &Org,
    key: &KeyRecord,
) -> Result<Response, AdminError> {
    let view = StatusOf::new(ctx, org).view(key).await?;
    Ok(with_etag(key.version, Json(view)))
}

/// `GET /v1/orgs/{org}/keys/{id}`: 404 once deleted.
pub async fn get(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath((org_id, id)): AdminPath<(String, String)>,
) -> Result<Response, AdminError> {
    caller.authorize(Action::Read, Some(&org_id))?;
    let org = orgs::load(&ctx, &org_id).await?;
    let key = load_key(&ctx, &org.id, &id).await?;
    key_response(&ctx, &org, &key).await
}

/// `PATCH /v1/orgs/{org}/keys/{id}` (admin, manager): JSON Merge Patch; 409 when final;
/// `If-Match` makes it conditional.
pub async fn patch(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath((org_id, id)): AdminPath<(String, String)>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::WriteKeys, Some(&org_id))?;
    if let Some(fixed) = FIXED_FIELDS.iter().find(|f| body.0.contains_key(**f)) {
        return Err(AdminError::invalid(*fixed, "cannot be changed"));
    }
    let mut f = body.fields(PATCH_FIELDS)?;
    let org = orgs::load(&ctx, &org_id).await?;
    let config = ctx.config.as_ref();
    let mut edit = Edit::default();
    let mut changed: Vec<&str> = Vec::new();

    match f.patch::<String>("name")? {
        Patch::Absent => {}
        Patch::Null => return Err(AdminError::invalid("name", "cannot be removed")),
        Patch::Set(n) => {
            edit.name = Some(validate::name("name", n)?);
            changed.push("name");
        }
    }
    match f.patch::<String>("description")? {
        Patch::Absent => {}
        Patch::Null => {
            edit.description = Some(None);
            changed.push("description");
        }
        Patch::Set(d) => {
            edit.description = Some(validate::description("description", d)?);
            changed.push("description");
        }
    }
    match f.patch::<Vec<String>>("scopes")? {
        Patch::Absent => {}
        Patch::Null => {
            return Err(AdminError::invalid(
                "scopes",
                "cannot be removed: a key holds at least one scope",
            ));
        }
        Patch::Set(s) => {
            edit.scopes = Some(validate::scopes(config, s)?);
            changed.push("scopes");
        }
    }
    if let Some(v) = restriction(&mut f, "resources", |v| validate::resources(config, v))? {
        edit.resources = Some(v);
        changed.push("resources");
    }
    if let Some(v) = restriction(&mut f, "endpoints", |v| validate::endpoints(config, v))? {
        edit.endpoints = Some(v);
        changed.push("endpoints");
    }
    if let Some(v) = restriction(&mut f, "ip_allow", validate::ip_allow)? {
        edit.ip_allow = Some(v);
        changed.push("ip_allow");
    }
    match f.patch::<Value>("rate_limit")? {
        Patch::Absent => {}
        Patch::Null => {
            edit.rate_limit = Some(Value::Null);
            changed.push("rate_limit");
        }
        Patch::Set(p) => {
            // Checked here against an empty limit, so a bad value is 422 before any
            // load; merged into the stored limit by the transition.
            patch_rate_limit(None, &p)?;
            edit.rate_limit = Some(p);
            changed.push("rate_limit");
        }
    }
    if let Some(request) = expiry_request(&mut f, true)? {
        let expires_at = validate::expiry(Timestamp::now(), request, org.max_key_lifetime_days)?;
        edit.expires_at = Some(expires_at);
        changed.push("expires_at");
    }

    let applied = change_key(&ctx, &org, &id, &headers, KeyChange::Edit(edit)).await?;
    audit_change(
        &ctx,
        &caller,
        &applied,
        "key.update",
        json!({ "fields": changed }),
    )
    .await;
    key_response(&ctx, &org, applied.current()).await
}

/// A restriction list in a merge patch: `Some(None)` to lift it, `Some(Some(list))` to
/// set it, `None` when absent. An empty list is refused by `check`.
fn restriction<T>(
    f: &mut super::input::Fields,
    field: &str,
    check: impl FnOnce(Vec<String>) -> Result<Vec<T>, AdminError>,
) -> Result<Option<Option<Vec<T>>>, AdminError> {
    match f.patch::<Vec<String>>(field)? {
        Patch::Absent => Ok(None),
        Patch::Null => Ok(Some(None)),
        Patch::Set(v) => Ok(Some(Some(check(v)?))),
    }
}

/// `POST /v1/orgs/{org}/keys/{id}/regenerate` (admin, manager): `{grace_seconds}`;
/// 200 `{key, secret}`. Any earlier grace ends here: a key has one previous secret.
pub async fn regenerate(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath((org_id, id)): AdminPath<(String, String)>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::WriteKeys, Some(&org_id))?;
    let mut f = body.fields(&["grace_seconds"])?;
    let grace = f.optional::<u64>("grace_seconds")?.unwrap_or(0);
    if grace > validate::MAX_GRACE_SECONDS {
        return Err(AdminError::invalid(
            "grace_seconds",
            format!("must be from 0 to {} (7 days)", validate::MAX_GRACE_SECONDS),
        ));
    }
    let org = orgs::load(&ctx, &org_id).await?;
    let environment = load_key(&ctx, &org.id, &id).await?.environment;
    let secret = ctx.key_format.generate(environment);
    let change = KeyChange::Regenerate {
        secret_hash: secret.hash,
        display_prefix: secret.display_prefix.clone(),
        grace_seconds: grace,
    };
    let applied = change_key(&ctx, &org, &id, &headers, change).await?;
    let Applied::Changed { after: key, .. } = &applied else {
        // A new secret always changes the record.
        return Err(AdminError::Internal);
    };
    audit_change(
        &ctx,
        &caller,
        &applied,
        "key.regenerate",
        json!({ "grace_seconds": grace }),
    )
    .await;
    let view = StatusOf::new(&ctx, &org).view(key).await?;
    Ok(with_etag(
        key.version,
        with_secret(StatusCode::OK, view, secret.token),
    ))
}

/// `POST /v1/orgs/{org}/keys/{id}/revoke` (admin): immediate, permanent, idempotent;
/// ends any regenerate grace.
pub async fn revoke(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath((org_id, id)): AdminPath<(String, String)>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::RevokeKeys, Some(&org_id))?;
    body.fields(&[])?;
    let org = orgs::load(&ctx, &org_id).await?;
    let applied = change_key(&ctx, &org, &id, &headers, KeyChange::Revoke).await?;
    if let Applied::Unchanged(key) = &applied {
        // A repeated revoke: a replica that missed the first one catches up.
        ctx.resolver.invalidate_key(key).await;
    }
    audit_change(&ctx, &caller, &applied, "key.revoke", json!({})).await;
    key_response(&ctx, &org, applied.current()).await
}

/// `DELETE /v1/orgs/{org}/keys/{id}` (admin): 204; the key leaves listings and the admin
/// API (404 from now on) and stops at once; its usage and audit stay readable.
pub async fn delete(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath((org_id, id)): AdminPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    caller.authorize(Action::RevokeKeys, Some(&org_id))?;
    let org = orgs::load(&ctx, &org_id).await?;
    let applied = change_key(&ctx, &org, &id, &headers, KeyChange::Delete).await?;
    audit_change(&ctx, &caller, &applied, "key.delete", json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyHash, OrgScope, PreviousSecret, Role};

    fn org(policy: KeyPolicy) -> Org {
        Org {
            id: "acme".into(),
            name: "Acme".into(),
            key_policy: policy,
            max_key_lifetime_days: None,
            rate_limit: None,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            version: 1,
        }
    }

    fn key() -> KeyRecord {
        KeyRecord {
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            previous_secret: Some(PreviousSecret {
                hash: KeyHash([8; 32]),
                expires_at: Timestamp::UNIX_EPOCH,
            }),
            ..KeyRecord::sample(KeyHash([7; 32]))
        }
    }

    fn creator(disabled: bool, deleted: bool) -> Principal {
        Principal {
            id: "prn_1".into(),
            name: "c".into(),
            role: Role::Manager,
            orgs: OrgScope::List(vec!["acme".into()]),
            api_access: true,
            disabled,
            created_at: Timestamp::UNIX_EPOCH,
            deleted_at: deleted.then_some(Timestamp::UNIX_EPOCH),
            token_hash: KeyHash([9; 32]),
            version: 1,
        }
    }

    #[test]
    fn creator_policy_suspends_while_the_creator_is_away() {
        let now = Timestamp::now();
        let k = key();
        let by_org = org(KeyPolicy::Org);
        let by_creator = org(KeyPolicy::Creator);
        let rows = [
            (&by_org, Some(creator(true, false)), KeyStatus::Active),
            (&by_org, None, KeyStatus::Active),
            (&by_creator, Some(creator(false, false)), KeyStatus::Active),
            (
                &by_creator,
                Some(creator(true, false)),
                KeyStatus::Suspended,
            ),
            (&by_creator, Some(creator(true, true)), KeyStatus::Suspended),
            (&by_creator, None, KeyStatus::Suspended),
        ];
        for (o, c, want) in rows {
            assert_eq!(effective_status(&k, o, c.as_ref(), now), want);
        }
        let mut revoked = key();
        revoked.revoked_at = Some(now);
        assert_eq!(
            effective_status(&revoked, &by_creator, None, now),
            KeyStatus::Revoked
        );
    }

    #[test]
    fn the_view_never_holds_a_secret_hash() {
        let k = key();
        let text = serde_json::to_string(&KeyView::new(&k, KeyStatus::Active)).unwrap();
        assert!(!text.contains(&k.secret_hash.to_hex()));
        assert!(!text.contains(&KeyHash([8; 32]).to_hex()));
        assert!(!text.contains("secret_hash"));
        assert!(!text.contains("previous_secret"));
        let v: Value = serde_json::from_str(&text).unwrap();
        for field in [
            "id",
            "org",
            "name",
            "description",
            "environment",
            "prefix",
            "scopes",
            "resources",
            "endpoints",
            "ip_allow",
            "rate_limit",
            "created_at",
            "created_by",
            "updated_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "status",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["status"], "active");
    }
}
