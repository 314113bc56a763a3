//! `operator_actions`: who did what by hand, and why. One insert for every operator action
//! (requeue, cancel, replay, revoke, role changes).

use serde_json::{Value, json};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use granary_queue::ops::{self, OpError};

/// Who does it and why, for the audit.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The operator (a Clerk user id, or `cli:<unix user>`).
    pub name: String,
    /// Why.
    pub reason: Option<String>,
}

/// One operator action.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// Who (`cli:<user>` or `admin:<clerk id>`).
    pub actor: &'a str,
    /// What (`job.requeue`, `webhook.replay`, ...).
    pub action: &'a str,
    /// The kind of row it touched.
    pub target_type: &'a str,
    /// Its id.
    pub target_id: &'a str,
    /// Why, as the operator said.
    pub reason: Option<&'a str>,
    /// Anything else worth keeping.
    pub details: Value,
}

/// Records an action, in the caller's transaction when given one.
pub async fn record(db: impl PgExecutor<'_>, a: &Action<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO operator_actions (actor, action, target_type, target_id, reason, details) VALUES ($1, $2, $3, $4, $5, $6)",
        a.actor,
        a.action,
        a.target_type,
        a.target_id,
        a.reason,
        a.details
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records `actor`'s action, with the actor's reason: the one way every audited domain action
/// is written.
pub async fn record_by(
    db: impl PgExecutor<'_>,
    actor: &Actor,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: Value,
) -> sqlx::Result<()> {
    record(
        db,
        &Action {
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

/// Requeues a failed or cancelled job (see [`ops::requeue`]), audited in the same commit.
pub async fn requeue_job(pool: &PgPool, job_id: &str, actor: &Actor) -> Result<(), OpError> {
    let mut tx = pool.begin().await?;
    let state = ops::requeue(&mut tx, job_id).await?;
    let details = json!({ "previous_state": state });
    record_by(&mut *tx, actor, "job.requeue", "job", job_id, details).await?;
    tx.commit().await?;
    Ok(())
}

/// Cancels a waiting or failed job (see [`ops::cancel`]), audited in the same commit.
pub async fn cancel_job(pool: &PgPool, job_id: &str, actor: &Actor) -> Result<(), OpError> {
    let mut tx = pool.begin().await?;
    let state = ops::cancel(&mut tx, job_id).await?;
    let details = json!({ "previous_state": state });
    record_by(&mut *tx, actor, "job.cancel", "job", job_id, details).await?;
    tx.commit().await?;
    Ok(())
}

/// Requeues every failed job of an order, audited in the same commit; returns their ids.
pub async fn requeue_order_jobs(
    pool: &PgPool,
    order_id: Uuid,
    actor: &Actor,
) -> Result<Vec<String>, OpError> {
    let mut tx = pool.begin().await?;
    let ids = ops::requeue_order(&mut tx, order_id).await?;
    let (action, order) = ("order.requeue_failed_jobs", order_id.to_string());
    record_by(
        &mut *tx,
        actor,
        action,
        "order",
        &order,
        json!({ "jobs": ids }),
    )
    .await?;
    tx.commit().await?;
    Ok(ids)
}
