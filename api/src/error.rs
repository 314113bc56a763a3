//! The api's one error type, mapped once to the JSON error body of docs/storefront.md:
//! `{"error": {"code": "...", "message": "...", "fields"?: {...}, "request_id"?: "..."}}`.

use std::collections::BTreeMap;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::request_id::current_request_id;

/// `Result` with [`ApiError`] as the default error.
pub type ApiResult<T, E = ApiError> = std::result::Result<T, E>;

/// Every error a handler can answer with. Internal errors keep their cause chain for the log
/// and show the client only a generic sentence and the request id.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a contract code (`invalid_request`, `invalid_json`).
    #[error("{message}")]
    BadRequest {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 401 `unauthenticated`.
    #[error("authentication required")]
    Unauthenticated(String),
    /// 403 with a contract code (`forbidden`, `manual_confirm_disabled`, ...).
    #[error("{message}")]
    Forbidden {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 404 `not_found` (also for other users' rows: no existence leak).
    #[error("not found")]
    NotFound,
    /// 409 with a contract code (`conflict`, `pending_verification`).
    #[error("{message}")]
    Conflict {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 413 `payload_too_large`.
    #[error("The request body is larger than the limit.")]
    PayloadTooLarge,
    /// 422 `validation_failed` with per-field reasons.
    #[error("validation failed")]
    Validation(BTreeMap<String, Vec<String>>),
    /// 422 with another contract code (`checkout_url_missing`).
    #[error("{message}")]
    Unprocessable {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 503 with a contract code (`storage_unavailable`, `database_unavailable`).
    #[error("{message}")]
    Unavailable {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 502 or 503 from a provider called for this request, with `Retry-After` where a retry
    /// may succeed.
    #[error("{message}")]
    Upstream {
        /// 502 or 503.
        status: StatusCode,
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
        /// Seconds.
        retry_after: Option<u64>,
    },
    /// 429 `throttled`, with `Retry-After` and the starter's `detail`.
    #[error("Request was throttled. Expected available in {retry_after} seconds.")]
    Throttled {
        /// Seconds until a request would be allowed.
        retry_after: u64,
    },
    /// 500; the cause goes to the log only.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// A 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            code: "conflict",
            message: message.into(),
        }
    }

    /// A 422 `validation_failed` on one field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        Self::Validation(BTreeMap::from([(field.to_string(), vec![reason.into()])]))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            Self::Upstream { status, code, .. } => (*status, code),
            Self::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

/// Builds the contract's error body: `{"error": {code, message, request_id}, "detail": message}`.
/// The top-level `detail` is what a client written for the Django starter (DRF) shows.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    granary_jobs::platform::server::error_body(status, code, message, current_request_id())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match self {
            Self::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                error_body(
                    status,
                    code,
                    "Something went wrong on our side. Quote the request id when reporting it.",
                )
            }
            Self::Unauthenticated(why) => {
                tracing::info!(reason = %why, "unauthenticated");
                error_body(
                    status,
                    code,
                    "Authentication required: send a valid Clerk session token.",
                )
            }
            Self::Validation(fields) => {
                let detail = fields
                    .iter()
                    .map(|(f, why)| format!("{f}: {}", why.join(" ")))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut body = json!({ "error": {
                    "code": code,
                    "message": "Some fields are invalid.",
                    "fields": fields,
                }, "detail": format!("Some fields are invalid: {detail}")});
                if let Some(id) = current_request_id() {
                    body["error"]["request_id"] = json!(id);
                }
                (status, Json(body)).into_response()
            }
            Self::Upstream {
                message,
                retry_after,
                ..
            } => {
                let mut res = error_body(status, code, &message);
                if let Some(s) = retry_after {
                    res.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from(s),
                    );
                }
                res
            }
            Self::Throttled { retry_after } => {
                let message =
                    format!("Request was throttled. Expected available in {retry_after} seconds.");
                let mut res = error_body(status, code, &message);
                res.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(retry_after),
                );
                res
            }
            other => error_body(status, code, &other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(error = %err, "database unavailable");
                Self::Unavailable {
                    code: "database_unavailable",
                    message: "The database is unavailable; retry shortly.".into(),
                }
            }
            _ => Self::Internal(err.into()),
        }
    }
}

impl From<granary_jobs::error::DomainError> for ApiError {
    fn from(err: granary_jobs::error::DomainError) -> Self {
        use granary_jobs::error::DomainError as D;
        match err {
            D::NotFound => Self::NotFound,
            D::Validation(fields) => Self::Validation(fields),
            D::BadRequest(message) => Self::BadRequest {
                code: "invalid_request",
                message,
            },
            D::Forbidden { code, message } => Self::Forbidden { code, message },
            D::Conflict { code, message } => Self::Conflict { code, message },
            D::Unavailable { code, message } => Self::Unavailable { code, message },
            D::Upstream {
                status,
                code,
                message,
                retry_after,
            } => Self::Upstream {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                code,
                message,
                retry_after,
            },
            D::Db(e) => e.into(),
            D::Other(e) => Self::Internal(e),
        }
    }
}
