//! The admin API's one error type and its one mapping to HTTP responses.
//!
//! Every handler returns `Result<_, AdminError>`; the body is always
//! `{"error":{"code":"…","message":"…","field":"…"?}}`. Messages are written for the
//! admin who made the call: they name the field or header at fault. They must never
//! contain a token, a token hash or a store internal (store failures are logged here,
//! with a generic message to the client).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// `WWW-Authenticate` on every 401 of the admin port.
const ADMIN_REALM: &str = "Bearer realm=\"keygate-admin\"";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Malformed JSON, a body that is not an object, a bad header or path.
    #[error("{0}")]
    BadRequest(String),
    #[error("an admin token is required: Authorization: Bearer kga_…")]
    MissingToken,
    /// Unknown, malformed, disabled or deleted admin token, or an API key.
    #[error("{0}")]
    InvalidToken(String),
    /// Role or org not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The request conflicts with the state of the thing it names.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// `If-Match` names another version than the one stored: nothing was changed.
    #[error("{0}")]
    PreconditionFailed(String),
    /// A repeated `Idempotency-Key`: the key created the first time is `key_id`.
    #[error("this Idempotency-Key was already used, for key {key_id}")]
    IdempotencyReplay { key_id: String },
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A field has a bad value (or is unknown, or missing).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The store could not be reached: the request did nothing, try again.
    #[error("the key store is unavailable; try again")]
    Unavailable,
    /// A bug or damaged data; details are in the log only.
    #[error("internal error")]
    Internal,
}

impl AdminError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AdminError::Forbidden(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        AdminError::NotFound(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::MissingToken | AdminError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Conflict { .. } | AdminError::IdempotencyReplay { .. } => {
                StatusCode::CONFLICT
            }
            AdminError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            AdminError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AdminError::BadRequest(_) => "bad_request",
            AdminError::MissingToken => "missing_admin_token",
            AdminError::InvalidToken(_) => "invalid_admin_token",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound(_) => "not_found",
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::Conflict { code, .. } => code,
            AdminError::IdempotencyReplay { .. } => "idempotency_key_reused",
            AdminError::PreconditionFailed(_) => "precondition_failed",
            AdminError::BodyTooLarge(_) => "body_too_large",
            AdminError::Invalid { .. } => "invalid_field",
            AdminError::Unavailable => "store_unavailable",
            AdminError::Internal => "internal_error",
        }
    }

    fn body(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code() });
        match self {
            AdminError::Invalid { field, message } => {
                error["message"] = json!(message);
                error["field"] = json!(field);
            }
            AdminError::IdempotencyReplay { key_id } => {
                error["message"] = json!(self.to_string());
                error["key_id"] = json!(key_id);
            }
            _ => error["message"] = json!(self.to_string()),
        }
        json!({ "error": error })
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "admin request failed: key store unavailable");
                AdminError::Unavailable
            }
            StoreError::Conflict(detail) => AdminError::Conflict {
                code: "conflict",
                message: detail,
            },
            // The write path reloads on a version conflict; one that reaches here
            // (a record that kept changing) is a conflict the caller may retry.
            e @ StoreError::VersionConflict { .. } => AdminError::Conflict {
                code: "conflict",
                message: e.to_string(),
            },
            StoreError::Corrupt(detail) => {
                tracing::error!(error = %detail, "admin request failed: corrupt store data");
                AdminError::Internal
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self {
            AdminError::MissingToken | AdminError::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(ADMIN_REALM),
                );
            }
            AdminError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// JSON 404 for paths the admin API does not have.
pub async fn no_such_path() -> AdminError {
    AdminError::not_found("no such admin API path")
}

/// JSON 405 for a known path with another method.
pub async fn method_not_allowed() -> AdminError {
    AdminError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole mapping, pinned: one row per variant.
    #[test]
    fn every_error_maps_to_one_status_and_code() {
        let conflict = AdminError::Conflict {
            code: "key_not_editable",
            message: "revoked".into(),
        };
        let table: Vec<(AdminError, u16, &str)> = vec![
            (AdminError::BadRequest("x".into()), 400, "bad_request"),
            (AdminError::MissingToken, 401, "missing_admin_token"),
            (
                AdminError::InvalidToken("x".into()),
                401,
                "invalid_admin_token",
            ),
            (AdminError::forbidden("x"), 403, "forbidden"),
            (AdminError::not_found("x"), 404, "not_found"),
            (AdminError::MethodNotAllowed, 405, "method_not_allowed"),
            (conflict, 409, "key_not_editable"),
            (
                AdminError::IdempotencyReplay {
                    key_id: "key_1".into(),
                },
                409,
                "idempotency_key_reused",
            ),
            (
                AdminError::PreconditionFailed("x".into()),
                412,
                "precondition_failed",
            ),
            (AdminError::BodyTooLarge(10), 413, "body_too_large"),
            (AdminError::invalid("name", "x"), 422, "invalid_field"),
            (AdminError::Unavailable, 503, "store_unavailable"),
            (AdminError::Internal, 500, "internal_error"),
        ];
        for (err, status, code) in table {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            let body = err.body();
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].is_string(), "{err:?}");
            let response = err.clone().into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers().contains_key(header::WWW_AUTHENTICATE),
                status == 401
            );
        }
    }

    #[test]
    fn invalid_names_the_field_and_replay_names_the_key() {
        let body = AdminError::invalid("scopes[1]", "unknown scope `admin`").body();
        assert_eq!(body["error"]["field"], "scopes[1]");
        assert_eq!(body["error"]["message"], "unknown scope `admin`");
        let body = AdminError::IdempotencyReplay {
            key_id: "key_01".into(),
        }
        .body();
        assert_eq!(body["error"]["key_id"], "key_01");
        assert!(AdminError::Forbidden("x".into()).body()["error"]["field"].is_null());
    }

    #[test]
    fn store_errors_never_leak_details_except_conflicts() {
        let e: AdminError = StoreError::Unavailable("redis at 10.0.0.1 refused".into()).into();
        assert_eq!(e, AdminError::Unavailable);
        assert!(!e.body().to_string().contains("10.0.0.1"));
        let e: AdminError = StoreError::Corrupt("bad row".into()).into();
        assert_eq!(e, AdminError::Internal);
        let e: AdminError = StoreError::Conflict("org exists".into()).into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
    }
}
