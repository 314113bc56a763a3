//! The operator's reads: jobs, webhook events, the order timeline. The CLI (`granary-worker`),
//! the admin HTTP routes and the console call these same functions, so all show the same results.
//!
//! The documents' fields are declared in alphabetical order (by their JSON name): serialized,
//! they read key for key as the JSON the routes and `--json` have always printed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use granary_queue::{JobState, stats::job_counts};

use crate::{
    platform::audit::Actor,
    webhooks::ingest::{self, ReplayError},
};

/// Headers whose values never leave the server whole.
const REDACTED_HEADERS: [&str; 6] = [
    "svix-signature",
    "webhook-signature",
    "stripe-signature",
    "authorization",
    "cookie",
    "x-api-key",
];

/// Redacts secrets and signatures from stored headers.
pub fn redact_headers(headers: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in headers.as_object().into_iter().flatten() {
        let value = if REDACTED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            let s = v.as_str().unwrap_or_default();
            json!(format!("[redacted, {} chars]", s.len()))
        } else {
            v.clone()
        };
        out.insert(k.clone(), value);
    }
    out
}

/// Job listing filters. The CLI, the JSON route and the console read them alike.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// pending, running, retrying, failed, cancelled, completed.
    pub state: Option<String>,
    /// The job's kind, which is also its queue (each kind has its own queue).
    #[serde(alias = "queue")]
    pub kind: Option<String>,
    /// Order public id.
    pub order: Option<String>,
    /// Only jobs created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs created before.
    pub until: Option<DateTime<Utc>>,
    /// Text in the arguments or the last error (case-insensitive). Without a state, it looks
    /// in the jobs an operator searches for (failed, cancelled, retrying), which are indexed.
    /// An id is looked up instead of scanned for: an order's public id (`ord_...`) or the
    /// UUID of an order or a stored webhook finds every job that concerns it, in any state.
    pub q: Option<String>,
    /// Keyset paging: only jobs older than this job id (the last id of the previous page).
    pub before: Option<String>,
    /// Page size (max 500).
    pub limit: Option<i64>,
    /// Offset (prefer `before`: an offset walks every skipped row).
    pub offset: Option<i64>,
}

impl JobFilter {
    /// Empty strings (an HTML form's blank fields) mean "any".
    pub fn normalized(&self) -> Self {
        let blank = |o: &Option<String>| {
            o.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let mut f = Self {
            state: blank(&self.state),
            kind: blank(&self.kind),
            order: blank(&self.order),
            q: blank(&self.q),
            before: blank(&self.before),
            ..self.clone()
        };
        // A searched order id is the order filter (indexed), not a text scan.
        if f.order.is_none()
            && f.q
                .as_deref()
                .is_some_and(|q| q.starts_with("ord_") && !q.contains(char::is_whitespace))
        {
            f.order = f.q.take();
        }
        f
    }
}

/// A job id (ULID) below every job created at or after `t`: time ranges become key ranges.
fn id_floor(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| {
        ulid::Ulid::from_parts(u64::try_from(t.timestamp_millis()).unwrap_or(0), 0).to_string()
    })
}

/// `%text%` for ILIKE, with the pattern characters in `text` taken literally.
fn contains_pattern(text: Option<&str>) -> Option<String> {
    text.map(|t| {
        let escaped = t
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    })
}

/// A job's state in the schema: its stored spelling (`granary-queue` knows no OpenAPI).
fn job_state_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(JobState::ALL.map(JobState::as_str)))
        .build()
}

/// A state as `jobs.state` stores it (its CHECK constraint allows no other spelling).
fn stored_state(s: &str) -> sqlx::Result<JobState> {
    JobState::parse(s).ok_or_else(|| sqlx::Error::Decode(format!("unknown job state `{s}`").into()))
}

/// One page of jobs matching `f`, newest first.
struct JobRow {
    id: String,
    queue: String,
    state: String,
    attempt: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    locked_by: Option<String>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    order_public_id: Option<String>,
}

async fn matching_jobs(
    pool: &PgPool,
    f: &JobFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<JobRow>> {
    let mut f = f.normalized();
    // A searched UUID names an order or a stored webhook: found through job_refs' indexes.
    let concerning = f.q.as_deref().and_then(|q| Uuid::parse_str(q).ok());
    if concerning.is_some() {
        f.q = None;
    }
    // The filters are optional, so each statement must be planned for its values: a generic
    // plan would scan the whole table for a state a partial index answers.
    let mut tx = pool.begin().await?;
    sqlx::query!("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query_as!(
        JobRow,
        r#"
        SELECT j.id, j.queue, j.state, j.attempt, j.max_attempts, j.run_at, j.finished_at,
               j.locked_by, j.last_error, j.created_at, o.public_id AS "order_public_id?"
        FROM jobs j
        LEFT JOIN job_refs r ON r.job_id = j.id
        LEFT JOIN orders o ON o.id = r.order_id
        WHERE ($1::text IS NULL OR j.state = $1) AND ($2::text IS NULL OR j.queue = $2)
          AND ($3::text IS NULL OR o.public_id = $3)
          AND ($4::text IS NULL OR j.id >= $4) AND ($5::text IS NULL OR j.id < $5)
          AND ($6::text IS NULL OR j.id < $6)
          -- The same expression as jobs_search_idx, in the states it covers.
          AND ($7::text IS NULL OR ((j.args::text || ' ' || coalesce(j.last_error, '')) ILIKE $7
                AND ($1::text IS NOT NULL OR j.state IN ('failed', 'cancelled', 'retrying'))))
          AND ($10::uuid IS NULL OR r.order_id = $10 OR r.webhook_event_id = $10)
        ORDER BY j.id DESC
        LIMIT $8 OFFSET $9
        "#,
        f.state,
        f.kind,
        f.order,
        id_floor(f.since),
        id_floor(f.until),
        f.before,
        contains_pattern(f.q.as_deref()),
        limit,
        offset,
        concerning
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Ids of the failed or cancelled jobs matching `f` (its state aside), oldest first, at most
/// `max`: what "requeue every failed job matching this filter" acts on.
pub async fn failed_job_ids(pool: &PgPool, f: &JobFilter, max: i64) -> sqlx::Result<Vec<String>> {
    let mut ids = Vec::new();
    for state in [JobState::Failed, JobState::Cancelled] {
        let f = JobFilter {
            state: Some(state.as_str().into()),
            before: None,
            ..f.clone()
        };
        ids.extend(
            matching_jobs(pool, &f, max, 0)
                .await?
                .into_iter()
                .map(|r| r.id),
        );
    }
    ids.sort();
    ids.truncate(max.max(0) as usize);
    Ok(ids)
}

/// A page of jobs with the counts per state and queue: `GET /api/admin/jobs/`, `jobs list`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobList {
    /// Jobs per queue and state (see [`job_counts`]).
    pub counts: Vec<JobStateCount>,
    /// The page, newest first.
    pub jobs: Vec<JobSummary>,
    /// The page size.
    pub limit: i64,
    /// The next page's `before` (null on the last page).
    pub next_before: Option<String>,
    /// The offset.
    pub offset: i64,
}

/// A job in a listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobSummary {
    /// Attempts so far.
    pub attempts: i32,
    /// Enqueued.
    pub created_at: DateTime<Utc>,
    /// Finished (completed, failed or cancelled).
    pub done_at: Option<DateTime<Utc>>,
    /// The job id (a ULID).
    pub id: String,
    /// The job's kind, which is also its queue.
    pub kind: String,
    /// The job's last error, else its latest attempt's.
    pub last_error: Option<String>,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The order it concerns (public id).
    pub order: Option<String>,
    /// When it runs (or ran) next.
    pub run_at: DateTime<Utc>,
    /// Its state.
    #[schema(schema_with = job_state_schema)]
    pub state: JobState,
    /// The worker that holds it.
    pub worker: Option<String>,
}

/// How many jobs of a queue are in a state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStateCount {
    /// How many.
    pub count: i64,
    /// False for the estimate of completed jobs.
    pub exact: bool,
    /// The queue (`*` for the estimate of completed jobs, which is not per queue).
    pub queue: String,
    /// The state.
    #[schema(schema_with = job_state_schema)]
    pub state: JobState,
}

/// Jobs matching `f`, newest first, with counts per state and queue (see [`job_counts`]).
pub async fn list_jobs(pool: &PgPool, f: &JobFilter) -> sqlx::Result<JobList> {
    let limit = f.limit.unwrap_or(50).clamp(1, 500);
    let offset = f.offset.unwrap_or(0).max(0);
    let rows = matching_jobs(pool, f, limit, offset).await?;
    let counts = job_counts(pool).await?;
    let last_errors =
        last_errors(pool, &rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>()).await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let jobs = rows
        .into_iter()
        .map(|r| {
            Ok(JobSummary {
                state: stored_state(&r.state)?,
                last_error: r
                    .last_error
                    .or_else(|| last_errors.get(&r.id).cloned().flatten()),
                attempts: r.attempt,
                created_at: r.created_at,
                done_at: r.finished_at,
                id: r.id,
                kind: r.queue,
                max_attempts: r.max_attempts,
                order: r.order_public_id,
                run_at: r.run_at,
                worker: r.locked_by,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    let counts = counts
        .into_iter()
        .map(|c| {
            Ok(JobStateCount {
                state: stored_state(&c.state)?,
                count: c.count,
                exact: c.exact,
                queue: c.queue,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    Ok(JobList {
        counts,
        jobs,
        limit,
        next_before,
        offset,
    })
}

async fn last_errors(
    pool: &PgPool,
    ids: &[String],
) -> sqlx::Result<std::collections::HashMap<String, Option<String>>> {
    Ok(sqlx::query!(
        r#"SELECT DISTINCT ON (job_id) job_id, error FROM job_attempts WHERE job_id = ANY($1) AND error IS NOT NULL ORDER BY job_id, attempt DESC"#,
        ids
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.job_id, r.error))
    .collect())
}

/// One job with its payload and every attempt: `GET /api/admin/jobs/{id}/`, `jobs show`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobDetail {
    /// The asset it concerns.
    pub asset_id: Option<Uuid>,
    /// Every attempt, oldest first.
    pub attempt_history: Vec<JobAttempt>,
    /// Attempts so far.
    pub attempts: i32,
    /// The key that kept it from being enqueued twice.
    pub dedupe_key: Option<String>,
    /// Finished (completed, failed or cancelled).
    pub done_at: Option<DateTime<Utc>>,
    /// The email it concerns.
    pub email_id: Option<Uuid>,
    /// The job id (a ULID).
    pub id: String,
    /// The job's kind, which is also its queue.
    pub kind: String,
    /// The job's own last error.
    pub last_error: Option<String>,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When it runs next (only while it waits: pending or retrying).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The order it concerns (public id).
    pub order: Option<String>,
    /// Its arguments, as stored.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Its state.
    #[schema(schema_with = job_state_schema)]
    pub state: JobState,
    /// The stored webhook event it concerns.
    pub webhook_event_id: Option<Uuid>,
    /// The worker that holds it.
    pub worker: Option<String>,
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobAttempt {
    /// Its number, from 1.
    pub attempt: i32,
    /// Its error.
    pub error: Option<String>,
    /// Ended (null while it runs).
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended: running, succeeded, retry, failed, discarded, panicked, abandoned.
    pub outcome: String,
    /// When the job runs again, after a retry.
    pub retry_at: Option<DateTime<Utc>>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// The worker that ran it.
    pub worker: String,
}

/// One job with its payload, state, next run time and every attempt.
pub async fn show_job(pool: &PgPool, id: &str) -> sqlx::Result<Option<JobDetail>> {
    let Some(j) = sqlx::query!(
        r#"SELECT j.id, j.queue, j.args, j.state, j.attempt, j.max_attempts, j.run_at, j.finished_at, j.locked_by, j.last_error,
                  o.public_id AS "order_public_id?", r.webhook_event_id AS "webhook_event_id?", r.asset_id AS "asset_id?", r.email_id AS "email_id?",
                  r.dedupe_key AS "dedupe_key?"
           FROM jobs j LEFT JOIN job_refs r ON r.job_id = j.id LEFT JOIN orders o ON o.id = r.order_id
           WHERE j.id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let attempts = sqlx::query!(
        "SELECT attempt, worker_id, started_at, finished_at, outcome, error, retry_at FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
        id
    )
    .fetch_all(pool)
    .await?;
    let state = stored_state(&j.state)?;
    Ok(Some(JobDetail {
        asset_id: j.asset_id,
        attempt_history: attempts
            .into_iter()
            .map(|a| JobAttempt {
                attempt: a.attempt,
                error: a.error,
                finished_at: a.finished_at,
                outcome: a.outcome,
                retry_at: a.retry_at,
                started_at: a.started_at,
                worker: a.worker_id,
            })
            .collect(),
        attempts: j.attempt,
        dedupe_key: j.dedupe_key,
        done_at: j.finished_at,
        email_id: j.email_id,
        id: j.id,
        kind: j.queue,
        last_error: j.last_error,
        max_attempts: j.max_attempts,
        next_run_at: state.is_waiting().then_some(j.run_at),
        order: j.order_public_id,
        payload: j.args,
        state,
        webhook_event_id: j.webhook_event_id,
        worker: j.locked_by,
    }))
}

/// Webhook listing filters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookFilter {
    /// clerk or stripe.
    pub provider: Option<String>,
    /// received, processed, ignored, failed, rejected.
    pub status: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Received since.
    pub since: Option<DateTime<Utc>>,
    /// Page size (max 500).
    pub limit: Option<i64>,
    /// Offset.
    pub offset: Option<i64>,
}

/// A page of stored deliveries: `GET /api/admin/webhooks/`, `webhooks list`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The page size.
    pub limit: i64,
    /// The offset.
    pub offset: i64,
    /// The page, newest first.
    pub webhooks: Vec<WebhookSummary>,
}

/// A stored delivery in a listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookSummary {
    /// Why processing it failed.
    pub error: Option<String>,
    /// The provider's event id.
    pub event_id: Option<String>,
    /// `provider` (delivered) or `reconciliation` (found by a sweep).
    pub found_by: String,
    /// The stored event's id.
    pub id: Uuid,
    /// Times it was processed.
    pub process_attempts: i32,
    /// Processed.
    pub processed_at: Option<DateTime<Utc>>,
    /// clerk or stripe.
    pub provider: String,
    /// Received.
    pub received_at: DateTime<Utc>,
    /// Why it was rejected (a rejected delivery is never processed).
    pub rejection_reason: Option<String>,
    /// received, processed, ignored, failed, rejected.
    pub status: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
}

/// Stored deliveries matching `f`, newest first.
pub async fn list_webhooks(pool: &PgPool, f: &WebhookFilter) -> sqlx::Result<WebhookList> {
    let limit = f.limit.unwrap_or(50).clamp(1, 500);
    let offset = f.offset.unwrap_or(0).max(0);
    let rows = sqlx::query!(
        r#"SELECT id, provider, event_id, event_type, status, rejection_reason, last_error, received_at, processed_at, process_attempts, found_by
           FROM webhook_events
           WHERE ($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR event_type = $3) AND ($4::timestamptz IS NULL OR received_at >= $4)
           ORDER BY received_at DESC, id LIMIT $5 OFFSET $6"#,
        f.provider,
        f.status,
        f.event_type,
        f.since,
        limit,
        offset
    )
    .fetch_all(pool)
    .await?;
    Ok(WebhookList {
        limit,
        offset,
        webhooks: rows
            .into_iter()
            .map(|r| WebhookSummary {
                error: r.last_error,
                event_id: r.event_id,
                found_by: r.found_by,
                id: r.id,
                process_attempts: r.process_attempts,
                processed_at: r.processed_at,
                provider: r.provider,
                received_at: r.received_at,
                rejection_reason: r.rejection_reason,
                status: r.status,
                event_type: r.event_type,
            })
            .collect(),
    })
}

/// One stored delivery: `GET /api/admin/webhooks/{id}/`, `webhooks show`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookDetail {
    /// The exact body received (invalid UTF-8 replaced).
    pub body: String,
    /// Only the body's first bytes were kept.
    pub body_truncated: bool,
    /// What processing it changed.
    pub effects: Vec<WebhookEffect>,
    /// Why processing it failed.
    pub error: Option<String>,
    /// The provider's event id.
    pub event_id: Option<String>,
    /// `provider` (delivered) or `reconciliation` (found by a sweep).
    pub found_by: String,
    /// The headers received, signatures and secrets redacted.
    #[schema(value_type = Object)]
    pub headers: Map<String, Value>,
    /// The stored event's id.
    pub id: Uuid,
    /// When the provider says it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Times it was processed.
    pub process_attempts: i32,
    /// Processed.
    pub processed_at: Option<DateTime<Utc>>,
    /// clerk or stripe.
    pub provider: String,
    /// Received.
    pub received_at: DateTime<Utc>,
    /// The sweep that found it.
    pub reconcile_run_id: Option<Uuid>,
    /// Why it was rejected (a rejected delivery is never processed).
    pub rejection_reason: Option<String>,
    /// received, processed, ignored, failed, rejected.
    pub status: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
}

/// A row a stored delivery changed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookEffect {
    /// What it did to the row.
    pub action: String,
    /// The row's kind (`order`, `profile`, ...).
    pub entity: String,
    /// The row's id.
    #[serde(rename = "id")]
    pub entity_id: Uuid,
}

/// One delivery with its headers (signatures redacted) and exact body.
pub async fn show_webhook(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<WebhookDetail>> {
    let Some(r) = sqlx::query!(
        r#"SELECT id, provider, event_id, event_type, status, rejection_reason, last_error, headers, body, body_truncated,
                  occurred_at, received_at, processed_at, process_attempts, found_by, reconcile_run_id FROM webhook_events WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let effects = sqlx::query!(
        "SELECT entity, entity_id, action FROM webhook_event_effects WHERE webhook_event_id = $1",
        id
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(WebhookDetail {
        body: String::from_utf8_lossy(&r.body).into_owned(),
        body_truncated: r.body_truncated,
        effects: effects
            .into_iter()
            .map(|e| WebhookEffect {
                action: e.action,
                entity: e.entity,
                entity_id: e.entity_id,
            })
            .collect(),
        error: r.last_error,
        event_id: r.event_id,
        found_by: r.found_by,
        headers: redact_headers(&r.headers),
        id: r.id,
        occurred_at: r.occurred_at,
        process_attempts: r.process_attempts,
        processed_at: r.processed_at,
        provider: r.provider,
        received_at: r.received_at,
        reconcile_run_id: r.reconcile_run_id,
        rejection_reason: r.rejection_reason,
        status: r.status,
        event_type: r.event_type,
    }))
}

/// Replays every failed event received in `[since, until)`; returns their ids.
pub async fn replay_failed(
    pool: &PgPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    actor: &Actor,
) -> Result<Vec<Uuid>, ReplayError> {
    let ids: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM webhook_events WHERE status = 'failed' AND received_at >= $1 AND received_at < $2 ORDER BY received_at",
        since,
        until
    )
    .fetch_all(pool)
    .await?;
    for id in &ids {
        ingest::replay(pool, *id, actor).await?;
    }
    Ok(ids)
}

/// An order and everything that happened to it: `GET /api/admin/orders/{public_id}/timeline/`,
/// `orders timeline`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderTimeline {
    /// What happened, in time order (events of one transaction in causal order).
    pub events: Vec<TimelineEvent>,
    /// The order now.
    pub order: TimelineOrder,
}

/// The order a timeline tells.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineOrder {
    /// Created.
    pub created_at: DateTime<Utc>,
    /// ISO 4217 code.
    pub currency: String,
    /// Fulfilled.
    pub fulfilled_at: Option<DateTime<Utc>>,
    /// Paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// The order's public id.
    pub public_id: String,
    /// Refunded (or disputed).
    pub refunded_at: Option<DateTime<Utc>>,
    /// Its status, as stored (`pending`, `paid`, `fulfilled`, ...).
    pub status: String,
    /// The total, in cents.
    pub total_cents: i64,
}

/// One thing that happened to an order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// Its facts; which ones depends on the kind (`job_id`, `attempt`, `outcome`, `error`,
    /// `provider`, `type`, `status`, `found_by`, `actor`, `reason`, ...).
    #[schema(value_type = Object)]
    pub detail: Value,
    /// What happened: `order.created`, `webhook.received`, `payment.payment`, `job.attempt`,
    /// `email.sent`, `operator.<action>`, ...
    pub kind: String,
}

/// Everything that happened to an order, in time order: the webhook events that touched it,
/// payments, jobs and their attempts, entitlements and grants, emails, downloads, operator
/// actions.
pub async fn timeline(pool: &PgPool, public_id: &str) -> sqlx::Result<Option<OrderTimeline>> {
    let Some(o) = sqlx::query!(
        "SELECT id, public_id, status, total_cents, currency, created_at, paid_at, fulfilled_at, refunded_at FROM orders WHERE public_id = $1",
        public_id
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let rows = sqlx::query_file!("queries/order_timeline.sql", o.id)
        .fetch_all(pool)
        .await?;
    Ok(Some(OrderTimeline {
        events: rows
            .into_iter()
            .map(|r| TimelineEvent {
                at: r.at,
                detail: r.detail,
                kind: r.kind,
            })
            .collect(),
        order: TimelineOrder {
            created_at: o.created_at,
            currency: o.currency,
            fulfilled_at: o.fulfilled_at,
            paid_at: o.paid_at,
            public_id: o.public_id,
            refunded_at: o.refunded_at,
            status: o.status,
            total_cents: o.total_cents,
        },
    }))
}

/// An order's internal id from its public id.
pub async fn order_id(pool: &PgPool, public_id: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("SELECT id FROM orders WHERE public_id = $1", public_id)
        .fetch_optional(pool)
        .await
}

/// Attempts that started in one time bucket, by how they ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    /// The bucket's start.
    pub at: DateTime<Utc>,
    /// Ended well.
    pub succeeded: i64,
    /// Ended for good (failed, discarded, panicked).
    pub failed: i64,
    /// Will run again.
    pub retried: i64,
}

/// Attempts over the last `window`, in buckets of `bucket` (empty buckets included).
pub async fn throughput(
    pool: &PgPool,
    window: std::time::Duration,
    bucket: std::time::Duration,
) -> sqlx::Result<Vec<Throughput>> {
    sqlx::query_as!(
        Throughput,
        r#"
        WITH bounds AS (
            SELECT date_bin(make_interval(secs => $2), now() - make_interval(secs => $1), 'epoch') AS start
        ), buckets AS (
            SELECT generate_series(b.start, now(), make_interval(secs => $2)) AS at FROM bounds b
        ), counted AS (
            SELECT date_bin(make_interval(secs => $2), a.started_at, 'epoch') AS at,
                   count(*) FILTER (WHERE a.outcome = 'succeeded') AS succeeded,
                   count(*) FILTER (WHERE a.outcome IN ('failed', 'discarded', 'panicked')) AS failed,
                   count(*) FILTER (WHERE a.outcome = 'retry') AS retried
            FROM job_attempts a, bounds b WHERE a.started_at >= b.start GROUP BY 1
        )
        SELECT b.at AS "at!", coalesce(c.succeeded, 0) AS "succeeded!", coalesce(c.failed, 0) AS "failed!",
               coalesce(c.retried, 0) AS "retried!"
        FROM buckets b LEFT JOIN counted c ON c.at = b.at ORDER BY b.at
        "#,
        window.as_secs_f64(),
        bucket.as_secs_f64()
    )
    .fetch_all(pool)
    .await
}

/// A worker process's queue worker that has reported within the rescue bound.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveWorker {
    /// Worker id (as in `jobs.locked_by`).
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Jobs it runs now.
    pub running: i64,
}

/// Workers alive within `bound`, with what each runs.
pub async fn live_workers(
    pool: &PgPool,
    bound: std::time::Duration,
) -> sqlx::Result<Vec<LiveWorker>> {
    sqlx::query_as!(
        LiveWorker,
        r#"SELECT w.id, w.queue, w.started_at, w.last_seen,
                  (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.locked_by = w.id) AS "running!"
           FROM job_workers w WHERE w.last_seen > now() - make_interval(secs => $1) ORDER BY w.queue, w.id"#,
        bound.as_secs_f64()
    )
    .fetch_all(pool)
    .await
}
