//! Extractors whose rejections speak the contract.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{StatusCode, header::CONTENT_TYPE},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ApiError;

/// `Json<T>` whose rejections are the contract's errors: malformed JSON is 400 `invalid_json`,
/// wrong types 400 `invalid_request`, an oversized body 413 `payload_too_large`, and a value
/// PostgreSQL cannot keep ([`unstorable`]) 400 `invalid_request` before anything is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// `application/json`, or any `application/*+json`, as axum's own `Json` accepts.
fn is_json(req: &Request) -> bool {
    let Some(value) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Why PostgreSQL could not keep this JSON value as given, if it could not: a string (or key)
/// holding the NUL character, which neither `text` nor `jsonb` stores, or a number so large
/// that `jsonb` prints it back as a 309-digit integer serde_json refuses to read as a float
/// (`1.7976931348623157e308` goes in, and every later read of the row fails).
pub fn unstorable(value: &Value) -> Option<&'static str> {
    const NUL: &str = "Text may not contain the NUL character (\\u0000).";
    const HUGE: &str = "Numbers must lie between -1e300 and 1e300.";
    match value {
        Value::String(s) => s.contains('\0').then_some(NUL),
        Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() > 1e300).then_some(HUGE),
        Value::Array(items) => items.iter().find_map(unstorable),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(NUL)
            } else {
                unstorable(v)
            }
        }),
        Value::Null | Value::Bool(_) => None,
    }
}

/// 400 `invalid_request` when a JSON body holds what PostgreSQL cannot keep ([`unstorable`]),
/// before anything is written (it would otherwise fail the write, or every later read, as a
/// 500). A body that is not JSON passes: its parser answers for it.
pub fn refuse_unstorable(json: &[u8]) -> Result<(), ApiError> {
    match serde_json::from_slice::<Value>(json)
        .ok()
        .as_ref()
        .and_then(unstorable)
    {
        Some(why) => Err(ApiError::bad_request(why)),
        None => Ok(()),
    }
}

/// A body that may be empty (then `T::default()`), else JSON: 400 `invalid_json` when it does
/// not parse as `T`, 400 `invalid_request` when it holds what PostgreSQL cannot keep.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("The body is not valid JSON for this request: {e}"),
    })?;
    refuse_unstorable(body)?;
    Ok(value)
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest {
            code: "invalid_json",
            message: format!("The body is not valid JSON: {}", e.body_text()),
        },
        JsonRejection::JsonDataError(e) => ApiError::bad_request(e.body_text()),
        other => ApiError::bad_request(other.body_text()),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::bad_request(
                "Send the body as JSON with Content-Type: application/json.",
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&body).map_err(json_rejection)?;
        refuse_unstorable(&body)?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::unstorable;

    #[test]
    fn what_postgresql_cannot_keep_is_found_anywhere_in_the_body() {
        assert!(unstorable(&json!({"a": "x\u{0}y"})).is_some());
        assert!(unstorable(&json!({"m": {"k\u{0}": 1}})).is_some());
        assert!(unstorable(&json!({"m": [1, {"n": 1.797_693_134_862_315_7e308}]})).is_some());
        assert!(unstorable(&json!({"m": [-1e301]})).is_some());
        assert!(
            unstorable(
                &json!({"a": "\\u0000", "n": 1e300, "i": i64::MIN, "u": u64::MAX, "t": 1e-320})
            )
            .is_none()
        );
    }
}
