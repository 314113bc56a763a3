//! Extractors whose rejections speak the contract.

use axum::{
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::StatusCode,
};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// `Json<T>` whose rejections are the contract's errors: malformed JSON is 400 `invalid_json`,
/// wrong types 400 `invalid_request`, an oversized body 413 `payload_too_large`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest {
                    code: "invalid_json",
                    message: format!("The body is not valid JSON: {}", e.body_text()),
                },
                JsonRejection::JsonDataError(e) => ApiError::bad_request(e.body_text()),
                JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
                    "Send the body as JSON with Content-Type: application/json.",
                ),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge
                }
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}
