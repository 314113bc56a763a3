//! `GET /api/health/`: liveness plus database reachability and queue depth.

use std::time::{Duration, Instant};

use axum::{Json, extract::State, http::StatusCode};
use granary_jobs::queue::stats::{self, QueueDepth};
use serde::Serialize;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

/// The health report.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` when the database answers, else `unhealthy`.
    pub status: &'static str,
    /// Build version.
    pub version: &'static str,
    /// Database reachability.
    pub database: DatabaseHealth,
    /// Queue depth; null when the database is unreachable.
    pub queue: Option<QueueDepth>,
}

/// Database part of the report.
#[derive(Debug, Serialize)]
pub struct DatabaseHealth {
    /// Whether `SELECT 1` answered in time.
    pub reachable: bool,
    /// Round trip of that query.
    pub latency_ms: f64,
    /// Why not, when unreachable (no connection details).
    pub error: Option<String>,
}

/// Answers 200 when the database is reachable, 503 otherwise; never fails itself.
#[utoipa::path(get, path = "/api/health/", tag = "health", responses((status = 200, description = "The database answers: `{status: ok, version, database, queue}`"), (status = 503, description = "The database does not answer: `{status: unhealthy, ...}`")))]
#[tracing::instrument(skip_all)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let started = Instant::now();
    let probe = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(&state.pool),
    )
    .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let error = match probe {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database unreachable");
            Some(match e {
                sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_string(),
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "cannot connect".to_string(),
                sqlx::Error::Database(db) => {
                    format!("database error {}", db.code().unwrap_or_default())
                }
                _ => "query failed".to_string(),
            })
        }
        Err(_) => Some("timed out after 3 s".to_string()),
    };
    let queue = if error.is_none() {
        match stats::depth(&state.pool).await {
            Ok(depth) => Some(depth),
            Err(e) => {
                tracing::warn!(error = %e, "health: queue depth unavailable");
                None
            }
        }
    } else {
        None
    };
    let reachable = error.is_none();
    let status = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if reachable { "ok" } else { "unhealthy" },
            version: env!("CARGO_PKG_VERSION"),
            database: DatabaseHealth {
                reachable,
                latency_ms,
                error,
            },
            queue,
        }),
    )
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}
