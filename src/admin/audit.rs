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
use super::input::{AdminPath, QueryParams};
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

/// `GET /v1/orgs/{org}/audit?limit=&cursor=` (owner, admin): newest first.
pub async fn list(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath(org): AdminPath<String>,
    query: QueryParams,
) -> Result<Json<Value>, AdminError> {
    caller.authorize(Action::ReadAudit, Some(&org))?;
    query.allow(&["limit", "cursor"])?;
    let limit = query.limit(50, 200)?;
    let cursor = query.cursor("aud")?;
    if ctx.store.get_org(&org).await?.is_none() {
        return Err(AdminError::not_found(format!("no org `{org}`")));
    }
    let page = ctx.store.list_audit(&org, cursor.as_deref(), limit).await?;
    Ok(Json(
        json!({ "data": page.items, "next_cursor": page.next }),
    ))
}
