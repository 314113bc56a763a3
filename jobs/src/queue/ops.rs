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

/// The states a job can be in, as stored in `jobs.state` and shown to operators; `completed`
/// last, after the five an operator watches.
pub const STATES: [&str; 6] = [
    "pending",
    "retrying",
    "running",
    "failed",
    "cancelled",
    "completed",
];

/// The state an operator sees: the stored state, as such (kept for the SQL that interpolates it).
pub const STATE_SQL: &str = "state";

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
    // Attempt numbers continue from the history, and the budget is renewed from that point:
    // the original max_attempts more tries.
    sqlx::query!(
        r#"
        WITH j AS (
            UPDATE jobs j
            SET state = 'pending', run_at = now(), locked_by = NULL, locked_at = NULL,
                finished_at = NULL,
                max_attempts = j.attempt
                    + coalesce((SELECT max_attempts FROM job_refs WHERE job_id = j.id), 1)
            WHERE id = $1
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

async fn job_state(conn: &mut PgConnection, job_id: &str) -> Result<String, OpError> {
    // FOR UPDATE: the action and the state it was decided on are one.
    sqlx::query_scalar!("SELECT state FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| OpError::NotFound(job_id.into()))
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
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), locked_by = NULL, locked_at = NULL WHERE id = $1",
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
