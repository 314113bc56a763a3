//! Operator primitives: requeue, cancel, requeue every failed job of an order. Each writes an
//! `operator_actions` row in the same transaction as the change.

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Who does it and why, for the audit.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The operator (a Clerk user id, or `cli:<unix user>`).
    pub name: String,
    /// Why.
    pub reason: Option<String>,
}

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

/// The state an operator sees, from apalis's status refined by attempts (the Rust twin of
/// [`STATE_SQL`]).
pub fn state_of(status: &str, attempts: i32, max_attempts: i32) -> &'static str {
    match status {
        "Failed" if attempts >= max_attempts => "failed",
        "Failed" => "retrying",
        "Killed" => "cancelled",
        "Queued" | "Running" => "running",
        "Done" => "completed",
        _ => "pending",
    }
}

/// The state an operator sees: apalis's status refined by attempts.
pub const STATE_SQL: &str = "CASE WHEN status = 'Failed' AND attempts >= max_attempts THEN 'failed' \
     WHEN status = 'Failed' THEN 'retrying' WHEN status = 'Killed' THEN 'cancelled' \
     WHEN status IN ('Queued', 'Running') THEN 'running' WHEN status = 'Done' THEN 'completed' \
     ELSE 'pending' END";

async fn audit(
    conn: &mut PgConnection,
    actor: &Actor,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: serde_json::Value,
) -> sqlx::Result<()> {
    crate::audit::record(
        conn,
        &crate::audit::Action {
            actor: &actor.name,
            action,
            target_type,
            target_id,
            reason: actor.reason.as_deref(),
            details,
        },
    )
    .await
}

/// Requeues a failed or cancelled job: it runs again as soon as a worker is free, with its
/// attempt budget renewed. Its attempt history stays (the next attempt numbers continue).
pub async fn requeue(pool: &PgPool, job_id: &str, actor: &Actor) -> Result<(), OpError> {
    let mut tx = pool.begin().await?;
    let state = job_state(&mut tx, job_id).await?;
    if !matches!(state.as_str(), "failed" | "cancelled") {
        return Err(OpError::WrongState {
            id: job_id.into(),
            state,
            action: "requeue",
            allowed: "failed or cancelled jobs",
        });
    }
    requeue_locked(&mut tx, job_id).await?;
    audit(
        &mut tx,
        actor,
        "job.requeue",
        "job",
        job_id,
        json!({ "previous_state": state }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn requeue_locked(conn: &mut PgConnection, job_id: &str) -> sqlx::Result<()> {
    // Attempts restart from the history's count, and the budget is renewed from that point:
    // the original max_attempts more tries.
    sqlx::query!(
        r#"
        UPDATE apalis.jobs j
        SET status = 'Pending', run_at = now(), lock_by = NULL, lock_at = NULL, done_at = NULL,
            attempts = coalesce((SELECT max(attempt) FROM job_attempts WHERE job_id = j.id), 0),
            max_attempts = coalesce((SELECT max(attempt) FROM job_attempts WHERE job_id = j.id), 0)
                + coalesce((SELECT max_attempts FROM job_refs WHERE job_id = j.id), 1),
            last_result = NULL
        WHERE id = $1
        "#,
        job_id
    )
    .execute(&mut *conn)
    .await?;
    // Wake idle workers now rather than at their next poll.
    sqlx::query!(
        "SELECT pg_notify('apalis::job::insert', json_build_object('job_type', job_type, 'id', id, 'run_at', run_at)::text) FROM apalis.jobs WHERE id = $1",
        job_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn job_state(conn: &mut PgConnection, job_id: &str) -> Result<String, OpError> {
    // FOR UPDATE: the action and the state it was decided on are one.
    let row = sqlx::query!(
        r#"SELECT status, attempts, max_attempts FROM apalis.jobs WHERE id = $1 FOR UPDATE"#,
        job_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| OpError::NotFound(job_id.into()))?;
    Ok(state_of(&row.status, row.attempts, row.max_attempts).to_string())
}

/// Cancels a job that is waiting (pending or retrying) or failed; a running job cannot be
/// cancelled (its handler is already doing the work).
pub async fn cancel(pool: &PgPool, job_id: &str, actor: &Actor) -> Result<(), OpError> {
    let mut tx = pool.begin().await?;
    let state = job_state(&mut tx, job_id).await?;
    if !matches!(state.as_str(), "pending" | "retrying" | "failed") {
        return Err(OpError::WrongState {
            id: job_id.into(),
            state,
            action: "cancel",
            allowed: "pending, retrying or failed jobs",
        });
    }
    sqlx::query!(
        "UPDATE apalis.jobs SET status = 'Killed', done_at = now(), lock_by = NULL, lock_at = NULL WHERE id = $1",
        job_id
    )
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        actor,
        "job.cancel",
        "job",
        job_id,
        json!({ "previous_state": state }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Requeues every failed job linked to an order; returns their ids.
pub async fn requeue_order(
    pool: &PgPool,
    order_id: Uuid,
    actor: &Actor,
) -> Result<Vec<String>, OpError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar!(
        r#"
        SELECT j.id FROM apalis.jobs j JOIN job_refs r ON r.job_id = j.id
        WHERE r.order_id = $1 AND j.status = 'Failed' AND j.attempts >= j.max_attempts
        ORDER BY j.id
        FOR UPDATE OF j
        "#,
        order_id
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        requeue_locked(&mut tx, id).await?;
    }
    audit(
        &mut tx,
        actor,
        "order.requeue_failed_jobs",
        "order",
        &order_id.to_string(),
        json!({ "jobs": ids }),
    )
    .await?;
    tx.commit().await?;
    Ok(ids)
}
