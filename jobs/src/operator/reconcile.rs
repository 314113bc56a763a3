//! Reconciliation: recovering what a webhook never delivered.
//!
//! - **Stripe.** `reconcile_stripe` lists the payment events of a window from Stripe's API and
//!   stores each one Granary has never seen as a webhook event marked `found_by =
//!   'reconciliation'`, with its `process_webhook_event` job in the same transaction. From there
//!   it takes exactly the path a delivered event takes. Events are unique by `(provider,
//!   event_id)`, so a real delivery arriving later (or twice) inserts nothing, and a sweep after
//!   a delivery inserts nothing either.
//! - **Clerk.** `reconcile_clerk` pulls, through Clerk's Backend API, the subscriptions of users
//!   whose billing looks stale (a live subscription and no event nor pull for a while), through
//!   the same upsert as a webhook ([`crate::billing::refresh`]).
//!
//! Each sweep is a job (visible, retried with backoff, never lost) and a `reconcile_runs` row
//! updated on every attempt, which `granary-worker reconcile` prints and `doctor` reads.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    Config, billing,
    model::{RunStatus, WebhookStatus},
    providers::stripe::{self, PAYMENT_EVENT_TYPES, StripeApiError},
    queue::{self, Enqueued, Job, JobContext, JobError},
    webhooks::ingest,
};

/// Pages one sweep reads at most (100 events each): a bound on one run's work.
const MAX_PAGES: usize = 200;
/// A scheduled sweep starts this long before the previous successful one did, so an event
/// Stripe listed late is still seen.
const OVERLAP: Duration = Duration::from_secs(15 * 60);
/// Users one Clerk sweep pulls at most (the stalest first).
const CLERK_USERS_PER_SWEEP: i64 = 100;

/// Which provider a sweep asks: Stripe's events, or Clerk's billing subscriptions.
pub use crate::providers::Provider;

/// Who asked for a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The worker's schedule (`RECONCILE_INTERVAL_SECONDS`).
    Schedule,
    /// `granary-worker reconcile` or `POST /api/admin/reconcile/`.
    Operator,
}

/// `reconcile_stripe`: one Stripe sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileStripe {
    /// `reconcile_runs.id`.
    pub run_id: Uuid,
    /// Scheduled sweeps are one logical job: a second is not queued while one waits or retries.
    pub scheduled: bool,
}

impl Job for ReconcileStripe {
    const QUEUE: &'static str = "reconcile_stripe";
    const MAX_ATTEMPTS: i32 = 12;

    fn dedupe_key(&self) -> Option<String> {
        Some(if self.scheduled {
            "schedule".into()
        } else {
            self.run_id.to_string()
        })
    }
}

/// `reconcile_clerk`: one Clerk billing sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileClerk {
    /// `reconcile_runs.id`.
    pub run_id: Uuid,
    /// As for [`ReconcileStripe::scheduled`].
    pub scheduled: bool,
}

impl Job for ReconcileClerk {
    const QUEUE: &'static str = "reconcile_clerk";
    const MAX_ATTEMPTS: i32 = 12;

    fn dedupe_key(&self) -> Option<String> {
        Some(if self.scheduled {
            "schedule".into()
        } else {
            self.run_id.to_string()
        })
    }
}

/// A queued sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    /// `reconcile_runs.id` (None when a scheduled sweep was already waiting).
    pub run_id: Option<Uuid>,
    /// The job's id.
    pub job_id: String,
    /// Which provider.
    pub provider: Provider,
}

/// Queues a sweep: its run row and its job, in one transaction. A scheduled sweep is not queued
/// twice: while one waits (or retries), this answers that one's job and writes nothing.
pub async fn enqueue(
    pool: &PgPool,
    provider: Provider,
    trigger: Trigger,
    since: Option<DateTime<Utc>>,
) -> sqlx::Result<Queued> {
    let run_id = Uuid::new_v4();
    let scheduled = trigger == Trigger::Schedule;
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO reconcile_runs (id, provider, trigger, since) VALUES ($1, $2, $3, $4)",
        run_id,
        provider.as_str(),
        if scheduled { "schedule" } else { "operator" },
        since
    )
    .execute(&mut *tx)
    .await?;
    let queued = match provider {
        Provider::Stripe => queue::enqueue(&mut tx, &ReconcileStripe { run_id, scheduled }).await?,
        Provider::Clerk => queue::enqueue(&mut tx, &ReconcileClerk { run_id, scheduled }).await?,
    };
    match queued {
        Enqueued::New(job_id) => {
            sqlx::query!(
                "UPDATE reconcile_runs SET job_id = $2 WHERE id = $1",
                run_id,
                job_id
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Queued {
                run_id: Some(run_id),
                job_id,
                provider,
            })
        }
        Enqueued::Existing(job_id) => {
            tx.rollback().await?;
            Ok(Queued {
                run_id: None,
                job_id,
                provider,
            })
        }
    }
}

/// The sweeps this configuration can run: Stripe with a secret key, Clerk with a secret key.
pub fn configured(config: &Config) -> Vec<Provider> {
    let mut out = Vec::new();
    if config.stripe.secret_key.is_some() {
        out.push(Provider::Stripe);
    }
    if config.clerk.secret_key.is_some() {
        out.push(Provider::Clerk);
    }
    out
}

/// How often the scheduled sweeps run (None: never, `RECONCILE_INTERVAL_SECONDS=0`).
pub fn interval(config: &Config) -> Option<Duration> {
    let every = config.stripe.reconcile_interval;
    (!every.is_zero()).then_some(every)
}

/// The worker's schedule: queues each configured sweep (at most one waiting per provider).
pub async fn schedule(pool: &PgPool, config: &Config) -> sqlx::Result<()> {
    for provider in configured(config) {
        enqueue(pool, provider, Trigger::Schedule, None).await?;
    }
    Ok(())
}

async fn start_attempt(conn: &PgPool, ctx: &JobContext, run_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE reconcile_runs SET status = 'running', attempts = attempts + 1,
               started_at = coalesce(started_at, now()), job_id = $2
           WHERE id = $1"#,
        run_id,
        ctx.job_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn finish(
    pool: &PgPool,
    run_id: Uuid,
    examined: i32,
    recovered: i32,
    failure: Option<(&str, String)>,
) -> sqlx::Result<()> {
    let (code, error) = failure.map_or((None, None), |(c, e)| (Some(c), Some(e)));
    sqlx::query!(
        r#"UPDATE reconcile_runs SET status = CASE WHEN $4::text IS NULL THEN 'succeeded' ELSE 'failed' END,
               examined = $2, recovered = recovered + $3, error_code = $4, error = $5,
               finished_at = now()
           WHERE id = $1"#,
        run_id,
        examined,
        recovered,
        code,
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Where a sweep starts: the operator's `since`; else the look-back, shortened to just before
/// the last successful scheduled sweep started (so a healthy shop lists minutes, not days).
async fn window_start(pool: &PgPool, config: &Config, run_id: Uuid) -> sqlx::Result<DateTime<Utc>> {
    let row = sqlx::query!(
        r#"SELECT since,
                  (SELECT max(started_at) FROM reconcile_runs
                   WHERE provider = 'stripe' AND trigger = 'schedule' AND status = 'succeeded') AS last_ok
           FROM reconcile_runs WHERE id = $1"#,
        run_id
    )
    .fetch_one(pool)
    .await?;
    if let Some(since) = row.since {
        return Ok(since);
    }
    let lookback = Utc::now() - config.stripe.reconcile_lookback;
    Ok(match row.last_ok {
        Some(t) => (t - OVERLAP).max(lookback),
        None => lookback,
    })
}

/// Runs `reconcile_stripe`.
pub async fn reconcile_stripe(ctx: JobContext, job: ReconcileStripe) -> Result<(), JobError> {
    start_attempt(&ctx.pool, &ctx, job.run_id).await?;
    let since = window_start(&ctx.pool, &ctx.config, job.run_id).await?;
    let client = crate::platform::http::client();
    let mut examined = 0i32;
    let mut recovered = 0i32;
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = match stripe::list_events(
            client,
            &ctx.config,
            PAYMENT_EVENT_TYPES,
            since.timestamp(),
            after.as_deref(),
        )
        .await
        {
            Ok(page) => page,
            Err(e) => {
                // What was stored from earlier pages stays stored; the retry lists again and
                // finds those already there.
                tracing::warn!(run_id = %job.run_id, error = %e, "Stripe sweep failed; it retries with backoff");
                finish(
                    &ctx.pool,
                    job.run_id,
                    examined,
                    recovered,
                    Some((e.code(), e.to_string())),
                )
                .await?;
                let err = anyhow::anyhow!("{e}").context("listing Stripe events");
                return Err(match &e {
                    StripeApiError::Api {
                        retry_after: Some(d),
                        ..
                    } => JobError::RetryAfter(*d, err),
                    StripeApiError::NotConfigured => JobError::permanent(err),
                    _ => JobError::Retry(err),
                });
            }
        };
        examined += page.data.len() as i32;
        let mut tx = ctx.pool.begin().await?;
        for event in &page.data {
            if store_found(&mut tx, event, job.run_id).await? {
                recovered += 1;
            }
        }
        tx.commit().await?;
        after = page
            .data
            .last()
            .and_then(|e| e["id"].as_str())
            .map(str::to_string);
        if !page.has_more || after.is_none() {
            break;
        }
    }
    finish(&ctx.pool, job.run_id, examined, recovered, None).await?;
    tracing::info!(run_id = %job.run_id, since = %since, examined, recovered, "Stripe sweep done");
    Ok(())
}

/// Stores one listed event unless Granary has it already; true when it was new.
async fn store_found(conn: &mut PgConnection, event: &Value, run_id: Uuid) -> sqlx::Result<bool> {
    let (Some(id), Some(ty)) = (event["id"].as_str(), event["type"].as_str()) else {
        tracing::warn!(run_id = %run_id, "Stripe listed an event without id or type; skipped");
        return Ok(false);
    };
    let occurred_at = event["created"]
        .as_i64()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
    let body = serde_json::to_vec(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let stored = ingest::store_found(
        conn,
        ingest::Found {
            provider: Provider::Stripe,
            event_id: id,
            event_type: ty,
            occurred_at,
            body: &body,
            run_id,
        },
    )
    .await?;
    if let ingest::Stored::New(event_row) = stored {
        tracing::info!(run_id = %run_id, event_id = %event_row, provider_event_id = id, event_type = ty, "found an event the webhook never delivered");
        return Ok(true);
    }
    Ok(false)
}

/// Runs `reconcile_clerk`: pulls the stalest users' subscriptions. Fails (and retries) when
/// every pull failed: one flaky user does not fail the sweep, a bad key does.
pub async fn reconcile_clerk(ctx: JobContext, job: ReconcileClerk) -> Result<(), JobError> {
    start_attempt(&ctx.pool, &ctx, job.run_id).await?;
    let users = stale_clerk_users(&ctx.pool).await?;
    let mut ok = 0i32;
    let mut last_error = None;
    for user in &users {
        billing::refresh(&ctx.pool, &ctx.config, user).await?;
        let failed = sqlx::query!(
            "SELECT last_error_code, last_error FROM billing_sync WHERE clerk_user_id = $1",
            user
        )
        .fetch_one(&ctx.pool)
        .await?;
        match failed.last_error_code {
            None => ok += 1,
            Some(code) => last_error = Some((code, failed.last_error.unwrap_or_default())),
        }
    }
    let examined = users.len() as i32;
    if ok == 0
        && let Some((code, error)) = last_error
    {
        finish(
            &ctx.pool,
            job.run_id,
            examined,
            0,
            Some((&code, error.clone())),
        )
        .await?;
        return Err(JobError::Retry(anyhow::anyhow!(
            "every Clerk pull of this sweep failed: {error}"
        )));
    }
    finish(&ctx.pool, job.run_id, examined, ok, None).await?;
    tracing::info!(run_id = %job.run_id, examined, pulled = ok, "Clerk billing sweep done");
    Ok(())
}

/// Users with a live subscription whose billing has been quiet past the hard-stale bound (no
/// event and no successful pull), stalest first.
async fn stale_clerk_users(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        SELECT s.clerk_user_id AS "clerk_user_id!" FROM subscriptions s
        LEFT JOIN billing_sync b ON b.clerk_user_id = s.clerk_user_id
        WHERE s.status IN ('active', 'past_due', 'free_trial')
        GROUP BY s.clerk_user_id, b.last_success_at, b.last_attempt_at
        HAVING greatest(max(s.last_event_at), b.last_success_at)
               < now() - make_interval(secs => $1)
            OR greatest(max(s.last_event_at), b.last_success_at) IS NULL
        ORDER BY b.last_attempt_at NULLS FIRST, greatest(max(s.last_event_at), b.last_success_at) NULLS FIRST
        LIMIT $2
        "#,
        billing::HARD_TTL_SECONDS as f64,
        CLERK_USERS_PER_SWEEP
    )
    .fetch_all(pool)
    .await
}

/// One sweep as the operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Run {
    /// Run id.
    pub id: Uuid,
    /// `stripe` or `clerk`.
    #[schema(value_type = String)]
    pub provider: Provider,
    /// `schedule` or `operator`.
    pub trigger: String,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub status: RunStatus,
    /// Attempts so far.
    pub attempts: i32,
    /// Events listed (Stripe) or users pulled (Clerk).
    pub examined: i32,
    /// Events never seen before (Stripe) or successful pulls (Clerk).
    pub recovered: i32,
    /// Last failure's code and message.
    pub error_code: Option<String>,
    /// Last failure's message.
    pub error: Option<String>,
    /// The job.
    pub job_id: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it last finished an attempt.
    pub finished_at: Option<DateTime<Utc>>,
    /// What the events it found did (Stripe).
    pub found: Vec<FoundEvent>,
}

/// An event a sweep found, and what applying it did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FoundEvent {
    /// `webhook_events.id`.
    pub id: Uuid,
    /// Stripe's event id.
    pub provider_event_id: String,
    /// Event type.
    pub event_type: String,
    /// `received` (not applied yet), `processed`, `ignored`, `failed`.
    pub status: WebhookStatus,
    /// Why it was ignored, or why it failed.
    pub note: Option<String>,
    /// `order ord_… paid`, ...
    pub effects: Vec<String>,
}

/// A run with the events it found.
pub async fn run(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Run>> {
    let Some(r) = sqlx::query!(
        r#"SELECT id, provider AS "provider: Provider", trigger, status AS "status: RunStatus",
                  attempts, examined, recovered, error_code, error, job_id, created_at, finished_at
           FROM reconcile_runs WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let events = sqlx::query!(
        r#"SELECT w.id, w.event_id AS "event_id!", w.event_type AS "event_type!", w.status AS "status: WebhookStatus", w.last_error,
                  coalesce(array_agg(e.entity || ' ' || coalesce(o.public_id, e.entity_id::text) || ' ' || e.action) FILTER (WHERE e.action IS NOT NULL), '{}') AS "effects!"
           FROM webhook_events w
           LEFT JOIN webhook_event_effects e ON e.webhook_event_id = w.id
           LEFT JOIN orders o ON e.entity = 'order' AND o.id = e.entity_id
           WHERE w.reconcile_run_id = $1
           GROUP BY w.id ORDER BY w.occurred_at, w.event_id"#,
        id
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(Run {
        id: r.id,
        provider: r.provider,
        trigger: r.trigger,
        status: r.status,
        attempts: r.attempts,
        examined: r.examined,
        recovered: r.recovered,
        error_code: r.error_code,
        error: r.error,
        job_id: r.job_id,
        created_at: r.created_at,
        finished_at: r.finished_at,
        found: events
            .into_iter()
            .map(|e| FoundEvent {
                id: e.id,
                provider_event_id: e.event_id,
                event_type: e.event_type,
                status: e.status,
                note: e.last_error,
                effects: e.effects,
            })
            .collect(),
    }))
}

/// The newest run per provider (doctor, the console).
pub async fn latest(pool: &PgPool) -> sqlx::Result<Vec<Run>> {
    let ids = sqlx::query_scalar!(
        r#"SELECT DISTINCT ON (provider) id FROM reconcile_runs
           WHERE status IN ('succeeded', 'failed') ORDER BY provider, coalesce(finished_at, created_at) DESC"#
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for id in ids {
        out.extend(run(pool, id).await?);
    }
    Ok(out)
}

/// Waits until the run has finished an attempt and every event it found has been applied (or
/// `timeout` passes), and returns it as it then is.
pub async fn wait_for(pool: &PgPool, id: Uuid, timeout: Duration) -> sqlx::Result<Option<Run>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let run = run(pool, id).await?;
        let settled = run.as_ref().is_none_or(|r| {
            let applied = |e: &FoundEvent| e.status != WebhookStatus::Received;
            r.status == RunStatus::Failed
                || (r.status == RunStatus::Succeeded && r.found.iter().all(applied))
        });
        if settled || tokio::time::Instant::now() >= deadline {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
