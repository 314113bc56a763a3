//! Request ids: taken from `x-request-id` when the caller (or a proxy) sent a sane one, else a
//! fresh UUID; echoed on the response, attached to the tracing span, and quoted in 500 bodies.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The header carrying the request id.
pub const HEADER: &str = "x-request-id";

/// The request id of the request being handled, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Middleware: assigns the id and runs the rest of the stack inside its scope.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = HeaderValue::from_str(&id).expect("validated ascii");
    req.headers_mut().insert(HEADER, value.clone());
    let mut res = REQUEST_ID.scope(id, next.run(req)).await;
    res.headers_mut().insert(HEADER, value);
    res
}
