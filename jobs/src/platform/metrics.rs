//! Prometheus metrics (the `metrics` facade, exported by metrics-exporter-prometheus). Each
//! process records its own: the worker its jobs, the api its requests and webhooks (both, when
//! the api runs the worker in-process). Queue depth is read from the database at each scrape,
//! so every process reports the same figure.
//!
//! Series:
//! - `granary_jobs_total{queue,kind,outcome}`: attempts by how they ended (succeeded, retry,
//!   failed, discarded, panicked);
//! - `granary_job_duration_seconds{queue}`: how long a handler ran;
//! - `granary_job_queue_latency_seconds{queue}`: from when a job was due to when it started;
//! - `granary_queue_depth{queue,state}`: jobs per queue and state (completed excluded);
//! - `granary_webhooks_total{provider,status}`: deliveries by what Granary answered;
//! - `granary_http_requests_total{method,route,status}` and
//!   `granary_http_request_duration_seconds{method,route}`: by matched route, never by raw path.

//!
//! Who may scrape: with `METRICS_TOKEN` set, a request bearing it (`Authorization: Bearer`,
//! compared in constant time). With `METRICS_BIND` set, `/metrics` moves to that address (a
//! private interface, [`serve_private`]) and the api's public port answers 404; the token, when
//! set, is required there too. With neither, `/metrics` refuses every request.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse as _, Response},
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    platform::server::{self, bearer},
};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const JOB_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
];
const HTTP_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Installs the process's recorder (once; later calls return the same handle).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(granary_queue::metrics::JOB_DURATION.into()),
                &JOB_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(granary_queue::metrics::JOB_QUEUE_LATENCY.into()),
                    &LATENCY_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("granary_http_request_duration_seconds".into()),
                    &HTTP_BUCKETS,
                )
            })
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only depth");
        }
        handle
    })
}

/// A webhook delivery was answered (`status`: accepted, duplicate, rejected, unavailable).
pub fn webhook(provider: &'static str, status: &'static str) {
    metrics::counter!("granary_webhooks_total", "provider" => provider, "status" => status)
        .increment(1);
}

/// An HTTP request was answered.
pub fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let (method, route) = (method.to_string(), route.to_string());
    metrics::counter!("granary_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("granary_http_request_duration_seconds", "method" => method, "route" => route)
        .record(took);
}

/// The Prometheus text of everything recorded, with the queue depth read now (each state of
/// every `known` queue, and of any other queue that has jobs).
pub async fn render(pool: &PgPool, known: &[&'static str]) -> String {
    let handle = install();
    match granary_queue::stats::job_counts(pool).await {
        Ok(rows) => {
            // Every state of every queue seen is reported, zero included, so that a series
            // drops to 0 instead of vanishing when its last job leaves the state.
            let rows: Vec<_> = rows.into_iter().filter(|r| r.exact).collect();
            let mut queues: Vec<String> = rows.iter().map(|r| r.queue.clone()).collect();
            queues.extend(known.iter().map(|q| q.to_string()));
            queues.sort();
            queues.dedup();
            for q in &queues {
                for state in granary_queue::JobState::WATCHED.map(|s| s.as_str()) {
                    let n = rows
                        .iter()
                        .find(|r| &r.queue == q && r.state == state)
                        .map_or(0, |r| r.count);
                    metrics::gauge!("granary_queue_depth", "queue" => q.clone(), "state" => state)
                        .set(n as f64);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable for /metrics"),
    }
    handle.run_upkeep();
    handle.render()
}

/// Who may scrape, and what the scrape reads.
#[derive(Clone)]
pub struct Scrape {
    pool: PgPool,
    token: Option<String>,
    /// True on the standalone listener, where no token is needed unless one is set.
    private: bool,
    /// The queues whose depth is always reported.
    queues: Vec<&'static str>,
}

impl Scrape {
    /// The scrape of `config`'s metrics credential; `private` on the `METRICS_BIND` listener.
    pub fn new(config: &Config, pool: &PgPool, queues: Vec<&'static str>, private: bool) -> Self {
        Self {
            pool: pool.clone(),
            token: config
                .metrics_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            private,
            queues,
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        match (&self.token, bearer(headers)) {
            (Some(t), Some(g)) => bool::from(g.as_bytes().ct_eq(t.as_bytes())),
            (Some(_), None) => false,
            (None, _) => self.private,
        }
    }

    /// The Prometheus text, or 401 `unauthenticated` (with `request_id` in its body when given).
    pub async fn answer(&self, headers: &HeaderMap, request_id: Option<String>) -> Response {
        if !self.authorized(headers) {
            // The metrics credential, not a Clerk session, is what is missing.
            let why = if self.token.is_some() {
                "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>."
            } else {
                "Metrics are closed: set METRICS_TOKEN (then send Authorization: Bearer <METRICS_TOKEN>) or METRICS_BIND."
            };
            let mut r =
                server::error_body(StatusCode::UNAUTHORIZED, "unauthenticated", why, request_id);
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
            render(&self.pool, &self.queues).await,
        )
            .into_response()
    }
}

/// With `METRICS_BIND` set, serves [`serve_private`] there in the background (the api and the
/// worker each serve their own); a listener that cannot start is logged, never fatal.
pub fn spawn_private(
    config: &Arc<Config>,
    pool: &PgPool,
    queues: Vec<&'static str>,
    shutdown: &CancellationToken,
) {
    let Some(addr) = config.metrics_bind else {
        return;
    };
    let (config, pool, stop) = (config.clone(), pool.clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = serve_private(addr, &config, pool, queues, stop).await {
            tracing::error!(error = %e, %addr, "METRICS_BIND could not be served");
        }
    });
}

/// Serves `/metrics` alone on `METRICS_BIND` until `shutdown` (the api and the worker each
/// serve their own).
pub async fn serve_private(
    addr: SocketAddr,
    config: &Config,
    pool: PgPool,
    queues: Vec<&'static str>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let s = Scrape::new(config, &pool, queues, true);
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let s = s.clone();
            async move { s.answer(&headers, None).await }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    server::serve(listener, app, config.header_timeout, shutdown).await
}
