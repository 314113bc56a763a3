//! Cross-cutting middleware: tracing spans and the JSON error safety net.

use axum::{
    extract::{MatchedPath, Request},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::TraceLayer,
};

use crate::{ApiError, error::error_body, request_id};

/// A span per request carrying the method, the matched route (never the raw path: it may hold
/// a download token) and the request id.
pub fn trace_layer()
-> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, fn(&Request) -> tracing::Span> {
    TraceLayer::new_for_http().make_span_with(make_span as fn(&Request) -> tracing::Span)
}

fn make_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("<unmatched>");
    let request_id = req
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("http", method = %req.method(), route, request_id)
}

/// Unknown routes answer the contract's 404 body.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A URL whose path or query encodes the NUL character (`%00`) is refused with 400
/// `invalid_request` before any handler runs: PostgreSQL stores NUL in no text column, so such
/// an id, slug or filter could only fail as a 500.
pub async fn refuse_nul_in_url(req: Request, next: Next) -> Response {
    if req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().contains("%00"))
    {
        return ApiError::bad_request("The URL may not contain the NUL character (%00).")
            .into_response();
    }
    next.run(req).await
}

/// Every error leaves in the contract's shape, even those produced below the handlers (the
/// body limit's 413, axum's 405, a rejected extractor): a client never has to parse plain text.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    // JSON already, or a console page (HTML, for a browser).
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("invalid_request", "The request is malformed."),
        StatusCode::UNAUTHORIZED => ("unauthenticated", "Authentication required."),
        StatusCode::FORBIDDEN => ("forbidden", "You are not allowed to do this."),
        StatusCode::NOT_FOUND => ("not_found", "Not found."),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "This method is not allowed on this path.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "The request body is larger than the limit.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "Send a JSON body with Content-Type: application/json.",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "Some fields are invalid."),
        StatusCode::TOO_MANY_REQUESTS => ("throttled", "Too many requests."),
        s if s.is_server_error() => ("internal_error", "Something went wrong on our side."),
        _ => ("invalid_request", "The request could not be handled."),
    };
    let mut out = error_body(status, code, message);
    // Keep headers that matter to clients (CORS, Allow, Retry-After, request id).
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
