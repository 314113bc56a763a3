//! Queue depth figures for `/api/health/` and the operator surface.

use serde::Serialize;
use sqlx::PgExecutor;

/// How much work is waiting, running and failed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueDepth {
    /// Runnable now or later: `pending` or `retrying`.
    pub pending: i64,
    /// Claimed by a worker.
    pub running: i64,
    /// Out of attempts, discarded, or cancelled: waits for an operator.
    pub failed: i64,
    /// Age in seconds of the oldest job that is due and not yet started.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// Reads the queue depth in one statement.
pub async fn depth(db: impl PgExecutor<'_>) -> sqlx::Result<QueueDepth> {
    let row = sqlx::query!(
        r#"
        -- One subquery per partial index, so the figure costs the same with a million
        -- completed jobs as with none.
        SELECT
            (SELECT count(*) FROM jobs WHERE state IN ('pending', 'retrying')) AS "pending!",
            (SELECT count(*) FROM jobs WHERE state = 'running') AS "running!",
            (SELECT count(*) FROM jobs WHERE state IN ('failed', 'cancelled')) AS "failed!",
            (SELECT extract(epoch FROM now() - min(run_at))::float8 FROM jobs
             WHERE state IN ('pending', 'retrying') AND run_at <= now()) AS oldest_pending_age_seconds
        "#
    )
    .fetch_one(db)
    .await?;
    Ok(QueueDepth {
        pending: row.pending,
        running: row.running,
        failed: row.failed,
        oldest_pending_age_seconds: row.oldest_pending_age_seconds,
    })
}
