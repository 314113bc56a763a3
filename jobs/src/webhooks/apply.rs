//! `process_webhook_event`: apply one stored event, convergently. Duplicates, replays and any
//! delivery order end in the same rows: every write is an upsert keyed by the provider's ids,
//! subscription rows ignore events older than the last one applied, and payments are unique.

use serde_json::Value;
use uuid::Uuid;

use super::ingest::ProcessWebhookEvent;
use crate::{
    model::WebhookStatus,
    providers::Provider,
    queue::{self, JobContext, JobError},
};

/// What applying an event did.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Rows changed (entity, id, action).
    Applied(Vec<(&'static str, Uuid, &'static str)>),
    /// Nothing to do, and why.
    Ignored(String),
    /// The provider reported a payment for `order` that proves nothing (an amount or currency
    /// missing, malformed or not the order's; a session that is not paid): never a fulfillment.
    /// The event fails for good with `reason`, linked to the order so its timeline shows it.
    Refused {
        /// `orders.id`.
        order: Uuid,
        /// What was wrong, naming the field.
        reason: String,
    },
}

impl Outcome {
    /// `what` (the provider's object) proves no payment for `order`, because `why`.
    pub(super) fn refused(
        order: Uuid,
        what: impl std::fmt::Display,
        why: impl std::fmt::Display,
    ) -> Self {
        Self::Refused {
            order,
            reason: format!("{what}: {why}"),
        }
    }
}

/// Runs `process_webhook_event`.
pub async fn handle(ctx: JobContext, job: ProcessWebhookEvent) -> Result<(), JobError> {
    let id = job.webhook_event_id;
    let mut tx = ctx.pool.begin().await?;
    let Some(ev) = sqlx::query!(
        r#"SELECT provider AS "provider: Provider", event_id, event_type, status AS "status: WebhookStatus", body, occurred_at, received_at FROM webhook_events WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(JobError::permanent(anyhow::anyhow!("webhook event {id} does not exist")));
    };
    let span = tracing::Span::current();
    if let Some(provider_id) = &ev.event_id {
        span.record("provider_event_id", provider_id.as_str());
    }
    if ev.status.is_settled() {
        // Already applied (a duplicate job, or a replay that raced): nothing to do.
        return Ok(());
    }
    let event_type = ev.event_type.unwrap_or_default();
    let event_at = ev.occurred_at.unwrap_or(ev.received_at);

    // A body that cannot be read fails the event like any other permanent error (below), so it
    // is `failed` on the event, not left `received`.
    let result = match serde_json::from_slice::<Value>(&ev.body) {
        Err(e) => Err(JobError::permanent(
            anyhow::anyhow!(e).context("the stored body is not readable JSON"),
        )),
        Ok(body) => match ev.provider {
            Provider::Clerk => {
                let frontend = ctx.config.frontend_app_url.to_string();
                super::clerk::apply(&mut tx, id, &event_type, &body, event_at, &frontend).await
            }
            Provider::Stripe => super::stripe::apply(&mut tx, id, &event_type, &body).await,
        },
    };
    match result {
        Ok(outcome) => record(tx, id, &event_type, outcome).await,
        Err(err) => {
            tx.rollback().await?;
            // Visible on the event itself; the job retries (or stops, if permanent).
            sqlx::query!(
                "UPDATE webhook_events SET status = 'failed', process_attempts = process_attempts + 1, last_error = $2 WHERE id = $1",
                id,
                err.to_string()
            )
            .execute(&ctx.pool)
            .await?;
            Err(err)
        }
    }
}

/// Writes what applying event `id` did: its effects and its new status in one statement, in
/// the transaction that applied it. A refusal fails the job for good, with the reason.
async fn record(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    event_type: &str,
    outcome: Outcome,
) -> Result<(), JobError> {
    let span = tracing::Span::current();
    let refused;
    let (status, note, effects) = match &outcome {
        Outcome::Applied(effects) => {
            if let Some((_, order, _)) = effects.iter().find(|(e, _, _)| *e == "order") {
                span.record("order_id", tracing::field::display(order));
            }
            (WebhookStatus::Processed, None, effects.as_slice())
        }
        Outcome::Ignored(why) => (WebhookStatus::Ignored, Some(why.clone()), &[][..]),
        Outcome::Refused { order, reason } => {
            span.record("order_id", tracing::field::display(order));
            refused = [("order", *order, "payment_refused")];
            (WebhookStatus::Failed, Some(reason.clone()), &refused[..])
        }
    };
    let entities: Vec<&str> = effects.iter().map(|(e, _, _)| *e).collect();
    let ids: Vec<Uuid> = effects.iter().map(|(_, i, _)| *i).collect();
    let actions: Vec<&str> = effects.iter().map(|(_, _, a)| *a).collect();
    sqlx::query!(
        r#"
        WITH fx AS (
            INSERT INTO webhook_event_effects (webhook_event_id, entity, entity_id, action)
            SELECT $1, e, i, a FROM unnest($4::text[], $5::uuid[], $6::text[]) AS t(e, i, a)
            ON CONFLICT DO NOTHING
        )
        UPDATE webhook_events SET status = $2, processed_at = now(), process_attempts = process_attempts + 1, last_error = $3
        WHERE id = $1
        "#,
        id,
        status.as_str(),
        note,
        &entities as &[&str],
        &ids,
        &actions as &[&str],
    )
    .execute(&mut *tx)
    .await?;
    if let Outcome::Refused { reason, .. } = outcome {
        tx.commit().await?;
        tracing::warn!(event_id = %id, event_type, reason, "payment refused");
        // Failed for good: the job's error says why, as the event does.
        return Err(JobError::permanent(anyhow::anyhow!(
            "payment refused: {reason}"
        )));
    }
    // The event's effects, its status, the jobs they call for and this job's own completion:
    // one commit.
    queue::commit_completing(tx).await?;
    tracing::info!(event_id = %id, event_type, status = status.as_str(), "webhook event applied");
    Ok(())
}
