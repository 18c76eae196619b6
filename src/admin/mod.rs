//! The admin port (SPEC §5): a JSON API over HTTP for orgs, API keys, principals and
//! audit, plus the unauthenticated `/healthz`, `/readyz` and `/metrics`.
//!
//! # Layout
//!
//! - [`auth`]: admin token → [`auth::Caller`]; the role table; org checks.
//! - [`orgs`], [`keys`], [`principals`], [`audit`], [`usage`] (and a key's limit
//!   standing): one file per resource; [`whoami`]: the caller and what it may do.
//! - [`input`]: JSON bodies, query strings and paths → typed values or errors naming
//!   the field; [`validate`]: field rules shared by the resources.
//! - [`error`]: the one error type and its one mapping to responses.
//! - [`bootstrap`]: the first owner principal and its token file.
//! - [`write`]: the one path that changes a stored key, principal or org
//!   (compare-and-swap on its version, `If-Match`/`ETag`, invalidation);
//!   [`lifecycle`]: the key transitions it applies, as pure functions.
//! - [`creator`]: `key_policy: creator`, derived from the creator's state.
//! - `openapi.json`: the OpenAPI 3 document served at `/openapi.json`.
//! - [`web`]: the "API keys" page at `/`, a static client of this API.
//!
//! The admin side writes keys, the data plane reads them: every change goes through
//! [`write::apply`], which invalidates the resolver's entries (here and, through the
//! bus, on every replica), so the next data-plane request sees it.
//! It never imports `proxy`, and never logs or returns a secret except the one response
//! that creates it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::auth::KeyResolver;
use crate::config::Config;
use crate::key::KeyFormat;
use crate::metrics::Metrics;
use crate::store::KeyStore;

pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod creator;
pub mod error;
pub mod input;
pub mod keys;
pub mod lifecycle;
pub mod orgs;
pub mod principals;
pub mod usage;
pub mod validate;
pub mod verify;
pub mod web;
pub mod whoami;
pub mod write;

#[cfg(test)]
pub(crate) mod tests;

pub use bootstrap::{BootstrapOutcome, bootstrap};
pub use error::AdminError;

/// Everything the admin handlers need; built once by the wiring (`app`).
pub struct AdminContext {
    /// Where orgs, keys, principals and audit records are written.
    pub store: Arc<dyn KeyStore>,
    /// The data plane's key cache: told about every key change, so no stale entry serves.
    pub resolver: Arc<KeyResolver>,
    /// Rendered on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Makes new secrets (`keys.prefix`) and recognises API keys sent here by mistake.
    pub key_format: KeyFormat,
    /// Scopes, route names and resource types that key settings are checked against.
    pub config: Arc<Config>,
    /// Set by the wiring once config is loaded, listeners bound and the store reached.
    pub ready: Arc<AtomicBool>,
    /// `POST /v1/verify`: the data plane's decision (SPEC §9).
    pub verifier: Arc<dyn crate::authz::Verifier>,
}

/// Prometheus text exposition format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole admin API, including `/healthz`, `/readyz` and `/metrics`.
pub fn router(ctx: Arc<AdminContext>) -> Router {
    let metrics = ctx.metrics.clone();
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .merge(web::router())
        .route("/v1/orgs", post(orgs::create).get(orgs::list))
        .route("/v1/orgs/{org}", get(orgs::get).patch(orgs::patch))
        .route("/v1/orgs/{org}/keys", post(keys::create).get(keys::list))
        .route(
            "/v1/orgs/{org}/keys/{id}",
            get(keys::get).patch(keys::patch).delete(keys::delete),
        )
        .route("/v1/orgs/{org}/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/orgs/{org}/keys/{id}/usage", get(usage::get))
        .route("/v1/orgs/{org}/keys/{id}/limits", get(usage::limits))
        .route(
            "/v1/orgs/{org}/keys/{id}/regenerate",
            post(keys::regenerate),
        )
        .route("/v1/orgs/{org}/audit", get(audit::list))
        .route("/v1/whoami", get(whoami::get))
        .route("/v1/verify", post(verify::post))
        .route(
            "/v1/principals",
            post(principals::create).get(principals::list),
        )
        .route(
            "/v1/principals/{id}",
            get(principals::get)
                .patch(principals::patch)
                .delete(principals::delete),
        )
        .route(
            "/v1/principals/{id}/rotate-token",
            post(principals::rotate_token),
        )
        .fallback(error::no_such_path)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(ctx);
    api.merge(metrics_router(metrics))
}

/// Just `/metrics`, for a separate `metrics.address`.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(ctx): State<Arc<AdminContext>>) -> Response {
    if ctx.ready.load(Ordering::Acquire) {
        (StatusCode::OK, axum::Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "starting" })),
        )
            .into_response()
    }
}

/// The OpenAPI 3 document of this API, kept next to the handlers it describes (a test
/// checks that every documented operation is routed).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut response = metrics.render().into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    response
}
