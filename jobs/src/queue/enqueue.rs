//! Enqueueing inside the caller's transaction.

use sqlx::PgConnection;

use super::Job;

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job with this id.
    New(String),
    /// The same logical job was already waiting to run; nothing was inserted.
    Existing(String),
}

impl Enqueued {
    /// The job's id, new or existing.
    pub fn id(&self) -> &str {
        match self {
            Self::New(id) | Self::Existing(id) => id,
        }
    }
}

/// Writes `job` into the caller's transaction (pass `&mut *tx`): a rollback leaves no job, a
/// commit leaves exactly one, and workers are woken (NOTIFY) only at commit.
///
/// A job with a dedupe key is not inserted again while one with the same queue and key is
/// still waiting to run (`Pending`, or `Failed` with attempts left). A transaction-scoped
/// advisory lock on the key serialises concurrent enqueuers, so this never raises a unique
/// violation and never aborts the caller's transaction (apalis's own `idempotency_key` is unique
/// in every state and would). A job that is already running does not count: it may have read
/// the state before the change that asks for it to run again.
///
/// The waiting job found is locked (`FOR UPDATE`) until the caller commits: without that, a
/// worker could claim and run it before the caller's changes are visible, and the change would
/// never be acted on (found by the out-of-order subscription test: entitlements of a canceled
/// item survived). A claim already in flight makes this wait, and the job, then no longer
/// waiting, does not count.
pub async fn enqueue<J: Job>(conn: &mut PgConnection, job: &J) -> sqlx::Result<Enqueued> {
    enqueue_at(conn, job, None).await
}

/// [`enqueue`], not to run before `run_at`.
pub async fn enqueue_at<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    run_at: Option<chrono::DateTime<chrono::Utc>>,
) -> sqlx::Result<Enqueued> {
    let dedupe_key = job.dedupe_key();
    if let Some(key) = &dedupe_key {
        let lock_key = format!("granary-job:{}:{key}", J::QUEUE);
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            lock_key
        )
        .execute(&mut *conn)
        .await?;
        let existing = sqlx::query_scalar!(
            r#"
            SELECT j.id
            FROM job_refs r
            JOIN apalis.jobs j ON j.id = r.job_id
            WHERE r.queue = $1 AND r.dedupe_key = $2
              AND (j.status = 'Pending' OR (j.status = 'Failed' AND j.attempts < j.max_attempts))
            LIMIT 1
            FOR UPDATE OF j
            "#,
            J::QUEUE,
            key
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = existing {
            return Ok(Enqueued::Existing(id));
        }
    }

    // apalis-postgres reads ids back as ULIDs.
    let id = ulid::Ulid::new().to_string();
    let payload = serde_json::to_vec(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let refs = job.refs();
    sqlx::query!(
        r#"
        WITH job AS (
            INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
            VALUES ($1, $2, $3, 'Pending', 0, $4, coalesce($5, now()), 0)
            RETURNING id
        )
        INSERT INTO job_refs (job_id, queue, dedupe_key, order_id, webhook_event_id, asset_id,
                              email_id, clerk_user_id, max_attempts)
        SELECT job.id, $2, $6, $7, $8, $9, $10, $11, $4 FROM job
        "#,
        id,
        J::QUEUE,
        payload,
        J::MAX_ATTEMPTS,
        run_at,
        dedupe_key,
        refs.order_id,
        refs.webhook_event_id,
        refs.asset_id,
        refs.email_id,
        refs.clerk_user_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(Enqueued::New(id))
}
