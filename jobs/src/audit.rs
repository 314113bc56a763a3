//! `operator_actions`: who did what by hand, and why. One insert for every operator action
//! (requeue, cancel, replay, revoke, role changes).

use serde_json::Value;
use sqlx::PgExecutor;

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
