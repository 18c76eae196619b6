//! `POST /v1/verify` (SPEC §9, every role; the only call a `verifier` may make): is this
//! key allowed? The decision is the data plane's, reached through
//! [`Verifier`](crate::authz::Verifier) so this module never imports the data plane.
//! A well-formed call is 200 whatever the answer; a malformed one names its field
//! (400/422). The key is never logged, echoed or audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::CACHE_CONTROL;

use super::AdminContext;
use super::auth::{Action, Caller};
use super::error::AdminError;
use super::input::JsonObject;
use crate::authz::VerifyRequest;
use crate::key::OrgScope;

const FIELDS: &[&str] = &["key", "method", "path", "host", "ip", "scopes", "count"];

pub async fn post(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    body: JsonObject,
) -> Result<Response, AdminError> {
    caller.authorize(Action::Verify, None)?;
    let mut f = body.fields(FIELDS)?;
    let req = VerifyRequest {
        key: f.required("key")?,
        method: f.optional("method")?,
        path: f.optional("path")?,
        host: f.optional("host")?,
        ip: f.optional("ip")?,
        scopes: f.optional("scopes")?,
        count: f.optional("count")?.unwrap_or(true),
    };
    let orgs = match &caller.principal().orgs {
        OrgScope::All => None,
        OrgScope::List(l) => Some(l.as_slice()),
    };
    let answer = ctx
        .verifier
        .verify(req, orgs)
        .await
        .map_err(|e| AdminError::invalid(e.field, e.message))?;
    let mut resp = Json(answer).into_response();
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
