//! `/metrics` on the api's own port (who may scrape: [`granary_jobs::platform::metrics`]), and
//! the request counter every route goes through.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use granary_jobs::platform::metrics::Scrape;

use crate::{ApiError, AppState, request_id::current_request_id};

/// `GET /metrics` on the api's own port.
pub async fn public(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.config.metrics_bind.is_some() {
        return ApiError::NotFound.into_response();
    }
    let queues = granary_jobs::registry::registry().queues();
    Scrape::new(&state.config, &state.pool, queues, false)
        .answer(&headers, current_request_id())
        .await
}

/// Counts every request by method, matched route (never the raw path, which may hold a
/// download token) and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let started = Instant::now();
    let res = next.run(req).await;
    granary_jobs::platform::metrics::http_request(
        method.as_str(),
        &route,
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}
