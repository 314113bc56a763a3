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

/// A handler's panic, answered as the contract's 500 `internal_error` (tower-http's
/// `CatchPanicLayer`): the client gets a body and the request id, the log gets the panic.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    ApiError::Internal(anyhow::anyhow!("handler panicked: {what}")).into_response()
}

/// Unknown routes answer the contract's 404 body.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The longest URL (path and query) a request may have. Longer ones get 414 `uri_too_long` in
/// the contract's shape (hyper's own 414, past 64 KiB, has no body).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// A URL whose path or query encodes the NUL character (`%00`) is refused with 400
/// `invalid_request` before any handler runs: PostgreSQL stores NUL in no text column, so such
/// an id, slug or filter could only fail as a 500. One longer than [`MAX_URI_BYTES`] is 414.
pub async fn refuse_nul_in_url(req: Request, next: Next) -> Response {
    if req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().len() > MAX_URI_BYTES)
    {
        return error_body(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            &format!("The URL is longer than {MAX_URI_BYTES} bytes."),
        );
    }
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
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "The request took too long to arrive."),
        StatusCode::URI_TOO_LONG => ("uri_too_long", "The URL is too long."),
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

/// Reads the request body whole before any handler runs: within `HTTP_BODY_TIMEOUT_SECONDS`
/// (else 408 `request_timeout`: a client that sends less than its `Content-Length` and stalls
/// holds nothing for long) and within `MAX_BODY_BYTES` (else 413 `payload_too_large`, answered
/// from `Content-Length` before reading when it is declared). A webhook delivery refused for
/// its size is recorded as a rejected delivery, with its size and not its bytes.
pub async fn read_body(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.config.max_body_bytes;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let size = match declared {
        Some(n) if n > limit as u64 => Some(format!("{n} bytes (Content-Length)")),
        _ => None,
    };
    let body = match size {
        Some(size) => Err(size),
        None => {
            match tokio::time::timeout(state.config.body_timeout, axum::body::to_bytes(body, limit))
                .await
            {
                Err(_) => {
                    return error_body(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        &format!(
                            "The request body did not arrive within {} s.",
                            state.config.body_timeout.as_secs()
                        ),
                    );
                }
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(e)) => {
                    let inner = e.into_inner();
                    if inner
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Err(format!("more than {limit} bytes"))
                    } else {
                        return ApiError::bad_request(format!(
                            "The request body could not be read: {inner}."
                        ))
                        .into_response();
                    }
                }
            }
        }
    };
    match body {
        Ok(bytes) => next.run(Request::from_parts(parts, bytes.into())).await,
        Err(size) => too_large(&state, &parts, &size, limit).await,
    }
}

/// 413 `payload_too_large` for a body of `size`; a webhook delivery refused for it is recorded
/// as a rejected delivery (its size, not its bytes).
async fn too_large(
    state: &crate::AppState,
    parts: &axum::http::request::Parts,
    size: &str,
    limit: usize,
) -> Response {
    let detail = format!("the body is {size}, over the limit of {limit} bytes");
    let provider = match parts.uri.path().trim_end_matches('/') {
        "/api/webhooks/clerk" => Some(granary_jobs::providers::Provider::Clerk),
        "/api/webhooks/stripe" => Some(granary_jobs::providers::Provider::Stripe),
        _ => None,
    };
    if let Some(provider) = provider {
        granary_jobs::platform::metrics::webhook(provider.as_str(), "rejected");
        if let Err(e) = granary_jobs::webhooks::ingest::store_rejected(
            &state.pool,
            provider,
            "payload_too_large",
            &detail,
            &parts.headers,
            &[],
        )
        .await
        {
            tracing::error!(error = %e, "could not record a rejected webhook delivery");
        }
    }
    error_body(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("The request body is larger than the limit: {detail}."),
    )
}
