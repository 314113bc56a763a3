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

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

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
                Matcher::Full("granary_job_duration_seconds".into()),
                &JOB_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("granary_job_queue_latency_seconds".into()),
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

/// One job attempt ended.
pub fn job_finished(queue: &'static str, outcome: &'static str, ran: Duration, latency: Duration) {
    metrics::counter!("granary_jobs_total", "queue" => queue, "kind" => queue, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("granary_job_duration_seconds", "queue" => queue).record(ran);
    metrics::histogram!("granary_job_queue_latency_seconds", "queue" => queue).record(latency);
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

/// The Prometheus text of everything recorded, with the queue depth read now.
pub async fn render(pool: &PgPool) -> String {
    let handle = install();
    match crate::admin::job_counts(pool).await {
        Ok(rows) => {
            // Every state of every queue seen is reported, zero included, so that a series
            // drops to 0 instead of vanishing when its last job leaves the state.
            let rows: Vec<_> = rows.into_iter().filter(|r| r.exact).collect();
            let mut queues: Vec<String> = rows.iter().map(|r| r.queue.clone()).collect();
            queues.extend(
                crate::handlers::registry()
                    .queues()
                    .into_iter()
                    .map(str::to_string),
            );
            queues.sort();
            queues.dedup();
            for q in &queues {
                for state in &crate::queue::ops::STATES[..5] {
                    let n = rows
                        .iter()
                        .find(|r| &r.queue == q && r.state == *state)
                        .map_or(0, |r| r.count);
                    metrics::gauge!("granary_queue_depth", "queue" => q.clone(), "state" => *state)
                        .set(n as f64);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable for /metrics"),
    }
    handle.run_upkeep();
    handle.render()
}
