//! Operator primitives: requeue, cancel, requeue every failed job linked to an order. Each runs
//! in the caller's transaction and locks the rows it decides on, so the application can record
//! its audit of the action in the same commit.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::JobState;

/// Why an operator action did nothing.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such job.
    #[error("no job with id {0}")]
    NotFound(String),
    /// The job is in a state the action does not apply to.
    #[error("job {id} is {state}; {action} applies to {allowed}")]
    WrongState {
        /// Job id.
        id: String,
        /// Its state.
        state: String,
        /// The action tried.
        action: &'static str,
        /// The states it applies to.
        allowed: &'static str,
    },
    /// Database error.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The state an operator sees: the stored state, as such (kept for the SQL that interpolates it).
pub const STATE_SQL: &str = "state";

/// Requeues a failed or cancelled job: it runs again as soon as a worker is free, with its
/// attempt budget renewed. Its attempt history stays (the next attempt numbers continue).
/// Returns the state it was in.
pub async fn requeue(tx: &mut PgConnection, job_id: &str) -> Result<JobState, OpError> {
    let state = job_state(tx, job_id).await?;
    if !state.is_stopped() {
        return Err(OpError::WrongState {
            id: job_id.into(),
            state: state.to_string(),
            action: "requeue",
            allowed: "failed or cancelled jobs",
        });
    }
    requeue_locked(tx, job_id).await?;
    Ok(state)
}

async fn requeue_locked(conn: &mut PgConnection, job_id: &str) -> sqlx::Result<()> {
    // Attempt numbers continue from the history, and the budget is renewed from that point:
    // the original max_attempts more tries. Out of `jobs_finished` and into `jobs_active`: a
    // delete and an insert (docs/queue.md).
    sqlx::query!(
        r#"
        WITH d AS (
            DELETE FROM jobs WHERE id = $1
            RETURNING id, queue, args, attempt, priority, created_at, last_error
        ), j AS (
            INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, priority, run_at,
                              created_at, last_error)
            SELECT id, queue, args, 'pending', attempt,
                   attempt + coalesce((SELECT max_attempts FROM job_refs WHERE job_id = d.id), 1),
                   priority, now(), created_at, last_error
            FROM d
            RETURNING queue
        )
        -- Wake idle workers now rather than at their next poll.
        SELECT pg_notify('granary_jobs', queue) FROM j
        "#,
        job_id
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(())
}

async fn job_state(conn: &mut PgConnection, job_id: &str) -> Result<JobState, OpError> {
    // FOR UPDATE: the action and the state it was decided on are one. A job that changed
    // partition while this waited for its lock (its worker finished it) was deleted and
    // inserted anew: the lock finds the deleted row and returns nothing, and a second read, with
    // a new snapshot, finds the job where it went.
    for _ in 0..2 {
        let state = sqlx::query_scalar!(
            r#"SELECT state AS "state: JobState" FROM jobs WHERE id = $1 FOR UPDATE"#,
            job_id
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(state) = state {
            return Ok(state);
        }
    }
    Err(OpError::NotFound(job_id.into()))
}

/// Cancels a job that is waiting (pending or retrying) or failed; a running job cannot be
/// cancelled (its handler is already doing the work). Returns the state it was in.
pub async fn cancel(tx: &mut PgConnection, job_id: &str) -> Result<JobState, OpError> {
    let state = job_state(tx, job_id).await?;
    if !(state.is_waiting() || state == JobState::Failed) {
        return Err(OpError::WrongState {
            id: job_id.into(),
            state: state.to_string(),
            action: "cancel",
            allowed: "pending, retrying or failed jobs",
        });
    }
    // Into `jobs_finished` (a waiting job leaves `jobs_active`): a delete and an insert.
    sqlx::query!(
        r#"
        WITH d AS (
            DELETE FROM jobs WHERE id = $1
            RETURNING id, queue, args, attempt, max_attempts, priority, run_at, created_at,
                      last_error
        )
        INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, priority, run_at,
                          created_at, finished_at, last_error)
        SELECT id, queue, args, 'cancelled', attempt, max_attempts, priority, run_at, created_at,
               now(), last_error
        FROM d
        "#,
        job_id
    )
    .execute(&mut *tx)
    .await?;
    Ok(state)
}

/// Requeues every failed job linked to an order; returns their ids.
pub async fn requeue_order(tx: &mut PgConnection, order_id: Uuid) -> Result<Vec<String>, OpError> {
    let ids: Vec<String> = sqlx::query_scalar!(
        r#"
        SELECT j.id FROM jobs j JOIN job_refs r ON r.job_id = j.id
        WHERE r.order_id = $1 AND j.state = 'failed'
        ORDER BY j.id
        FOR UPDATE OF j
        "#,
        order_id
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        requeue_locked(tx, id).await?;
    }
    Ok(ids)
}
