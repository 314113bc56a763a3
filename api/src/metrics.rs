//! `/metrics` in Prometheus text format, and the request counter every route goes through.
//!
//! Who may scrape: with `METRICS_TOKEN` set, a request bearing it (`Authorization: Bearer`,
//! compared in constant time). With `METRICS_BIND` set, `/metrics` moves to that address (a
//! private interface) and the public port answers 404; the token, when set, is required there
//! too. With neither, `/metrics` refuses every request.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use granary_jobs::Config;
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

use crate::{ApiError, AppState};

/// What the scrape needs.
#[derive(Clone)]
struct Scrape {
    pool: PgPool,
    token: Option<String>,
    /// True on the standalone listener, where no token is needed unless one is set.
    private: bool,
}

fn authorized(s: &Scrape, headers: &HeaderMap) -> bool {
    match (&s.token, crate::auth::bearer(headers)) {
        (Some(t), Some(g)) => bool::from(g.as_bytes().ct_eq(t.as_bytes())),
        (Some(_), None) => false,
        (None, _) => s.private,
    }
}

async fn scrape(s: &Scrape, headers: &HeaderMap) -> Response {
    if !authorized(s, headers) {
        // The metrics credential, not a Clerk session, is what is missing.
        let why = if s.token.is_some() {
            "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>."
        } else {
            "Metrics are closed: set METRICS_TOKEN (then send Authorization: Bearer <METRICS_TOKEN>) or METRICS_BIND."
        };
        let mut r =
            crate::error::error_body(axum::http::StatusCode::UNAUTHORIZED, "unauthenticated", why);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return r;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        granary_jobs::metrics::render(&s.pool).await,
    )
        .into_response()
}

fn scrape_of(config: &Config, pool: &PgPool, private: bool) -> Scrape {
    Scrape {
        pool: pool.clone(),
        token: config
            .metrics_token
            .as_ref()
            .map(|t| t.expose_secret().to_string()),
        private,
    }
}

/// `GET /metrics` on the api's own port.
pub async fn public(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.config.metrics_bind.is_some() {
        return ApiError::NotFound.into_response();
    }
    scrape(&scrape_of(&state.config, &state.pool, false), &headers).await
}

/// Serves `/metrics` alone on `METRICS_BIND` until `shutdown` (the api and the worker each
/// serve their own).
pub async fn serve_private(
    addr: SocketAddr,
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let s = scrape_of(config, &pool, true);
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let s = s.clone();
            async move { scrape(&s, &headers).await }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    crate::server::serve(listener, app, config.header_timeout, shutdown).await
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
    granary_jobs::metrics::http_request(
        method.as_str(),
        &route,
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}
