//! Queue depth figures for `/api/health/` and the operator surface.

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

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

/// How many jobs of a queue are in a state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobCount {
    /// The queue (`*` for the estimate of completed jobs, which is not per queue).
    pub queue: String,
    /// The state.
    pub state: String,
    /// How many.
    pub count: i64,
    /// False for the estimate.
    pub exact: bool,
}

/// Jobs per queue and state. Exact for the states that have a partial index (the ones an
/// operator acts on); `completed` is the finished partition's estimated row count minus the
/// failed and cancelled jobs, so the figure costs the same with a million rows as with ten.
pub async fn job_counts(pool: &PgPool) -> sqlx::Result<Vec<JobCount>> {
    let rows = sqlx::query!(
        r#"
        SELECT queue AS "queue!", state AS "state!", count(*) AS "n!" FROM jobs WHERE state IN ('pending', 'retrying') GROUP BY 1, 2
        UNION ALL SELECT queue, state, count(*) FROM jobs WHERE state = 'running' GROUP BY 1, 2
        UNION ALL SELECT queue, state, count(*) FROM jobs WHERE state IN ('failed', 'cancelled') GROUP BY 1, 2
        "#
    )
    .fetch_all(pool)
    .await?;
    let estimate = sqlx::query_scalar!(
        r#"SELECT greatest(reltuples, 0)::int8 AS "n!" FROM pg_class WHERE oid = 'jobs_finished'::regclass"#
    )
    .fetch_one(pool)
    .await?;
    let stopped: i64 = rows
        .iter()
        .filter(|r| crate::JobState::parse(&r.state).is_some_and(crate::JobState::is_stopped))
        .map(|r| r.n)
        .sum();
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|r| JobCount {
            queue: r.queue,
            state: r.state,
            count: r.n,
            exact: true,
        })
        .collect();
    out.sort();
    out.push(JobCount {
        queue: "*".into(),
        state: crate::JobState::Completed.as_str().into(),
        count: (estimate - stopped).max(0),
        exact: false,
    });
    Ok(out)
}
