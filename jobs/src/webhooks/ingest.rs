//! Storing deliveries: every accepted event before the answer, every rejected one too.

use http::HeaderMap;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Provider, verify::Verified};
use crate::queue::{self, ops::Actor};

/// How much of a rejected body is kept (the whole body of an accepted one always is).
pub const REJECTED_BODY_LIMIT: usize = 8 * 1024;
/// How many rejected deliveries are kept; older ones are pruned as new ones arrive, so a flood
/// of junk cannot fill the disk.
pub const REJECTED_KEPT: i64 = 10_000;

/// The `process_webhook_event` job: apply one stored event.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProcessWebhookEvent {
    /// `webhook_events.id`.
    pub webhook_event_id: Uuid,
}

impl queue::Job for ProcessWebhookEvent {
    const QUEUE: &'static str = "process_webhook_event";
    const MAX_ATTEMPTS: i32 = 25;

    fn dedupe_key(&self) -> Option<String> {
        Some(self.webhook_event_id.to_string())
    }

    fn refs(&self) -> queue::JobRefs {
        queue::JobRefs {
            webhook_event_id: Some(self.webhook_event_id),
            ..Default::default()
        }
    }
}

/// Headers as stored: everything but credentials a proxy might have added.
pub fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if matches!(name, "authorization" | "cookie" | "proxy-authorization") {
            continue;
        }
        out.insert(
            name.to_string(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    Value::Object(out)
}

/// What storing an accepted delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A new event, with its processing job enqueued in the same transaction.
    New(Uuid),
    /// The provider delivered this event before; nothing was written.
    Duplicate,
}

/// Stores an accepted delivery and enqueues its processing, in one transaction. Returns only
/// after the commit: a 2xx answered on its strength means the event is durable.
pub async fn store_accepted(
    pool: &PgPool,
    provider: Provider,
    v: &Verified,
    headers: &HeaderMap,
    body: &[u8],
) -> sqlx::Result<Stored> {
    let mut tx = pool.begin().await?;
    let id = sqlx::query_scalar!(
        r#"
        INSERT INTO webhook_events (provider, event_id, event_type, headers, body, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (provider, event_id) WHERE status <> 'rejected' DO NOTHING
        RETURNING id
        "#,
        provider.as_str(),
        v.event_id,
        v.event_type,
        headers_json(headers),
        body,
        v.occurred_at,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        tx.rollback().await?;
        return Ok(Stored::Duplicate);
    };
    queue::enqueue(
        &mut tx,
        &ProcessWebhookEvent {
            webhook_event_id: id,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Stored::New(id))
}

/// Records a rejected delivery with its reason (body truncated), pruning the oldest rejected
/// rows beyond [`REJECTED_KEPT`].
pub async fn store_rejected(
    pool: &PgPool,
    provider: Provider,
    reason: &str,
    detail: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> sqlx::Result<Uuid> {
    let truncated = body.len() > REJECTED_BODY_LIMIT;
    let kept = &body[..body.len().min(REJECTED_BODY_LIMIT)];
    // The event id and type as claimed, for the audit; unverified.
    let event_id = headers
        .get("svix-id")
        .or_else(|| headers.get("webhook-id"))
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect::<String>());
    let event_type = serde_json::from_slice::<Value>(kept).ok().and_then(|b| {
        b["type"]
            .as_str()
            .map(|s| s.chars().take(200).collect::<String>())
    });
    let mut tx = pool.begin().await?;
    let id = sqlx::query_scalar!(
        r#"
        INSERT INTO webhook_events (provider, event_id, event_type, status, rejection_reason, last_error, headers, body, body_truncated)
        VALUES ($1, $2, $3, 'rejected', $4, $5, $6, $7, $8)
        RETURNING id
        "#,
        provider.as_str(),
        event_id,
        event_type,
        reason,
        detail,
        headers_json(headers),
        kept,
        truncated,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        r#"
        DELETE FROM webhook_events WHERE id IN (
            SELECT id FROM webhook_events WHERE status = 'rejected'
            ORDER BY received_at DESC OFFSET $1
        )
        "#,
        REJECTED_KEPT
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Why a replay did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No such event.
    #[error("no webhook event with id {0}")]
    NotFound(Uuid),
    /// Rejected deliveries were never verified and cannot be applied.
    #[error("webhook event {0} was rejected ({1}); only accepted events can be replayed")]
    Rejected(Uuid, String),
    /// Database error.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Re-applies a stored event: it is marked `received` again and its processing enqueued (once,
/// even if replayed twice before it runs). Applying is convergent, so a replay of an event that
/// was already applied changes nothing. Audited.
pub async fn replay(pool: &PgPool, id: Uuid, actor: &Actor) -> Result<String, ReplayError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        "SELECT status, rejection_reason FROM webhook_events WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ReplayError::NotFound(id))?;
    if row.status == "rejected" {
        return Err(ReplayError::Rejected(
            id,
            row.rejection_reason.unwrap_or_default(),
        ));
    }
    sqlx::query!(
        "UPDATE webhook_events SET status = 'received', last_error = NULL WHERE id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    let job = queue::enqueue(
        &mut tx,
        &ProcessWebhookEvent {
            webhook_event_id: id,
        },
    )
    .await?;
    sqlx::query!(
        "INSERT INTO operator_actions (actor, action, target_type, target_id, reason, details) VALUES ($1, 'webhook.replay', 'webhook_event', $2, $3, $4)",
        actor.name,
        id.to_string(),
        actor.reason,
        json!({ "previous_status": row.status, "job_id": job.id() }),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(job.id().to_string())
}
