//! Running jobs: one apalis worker per queue under one apalis `Monitor`, each job wrapped by
//! Granary's own bookkeeping.
//!
//! What apalis-postgres does here: claiming (`FOR UPDATE SKIP LOCKED`), LISTEN/NOTIFY wakeups,
//! per-queue concurrency, heartbeats and the rescue of a dead worker's jobs, graceful shutdown.
//! What Granary does in [`execute`]: an attempt row before the handler runs, panic capture, and
//! the outcome written in one statement together with the job's next state (its own "ack"):
//! the retry's `run_at` from the persisted backoff, or the permanent failure. That ack clears
//! `lock_by`, which makes apalis's own batched ack (`WHERE lock_by = <worker>`) a no-op, so
//! apalis never overwrites what Granary decided. `lock_tasks(false)` keeps apalis's batched
//! "lock" event from flipping a finished job back to `Running`.
//!
//! Losing the database (a restart, a failover) must not stop the worker for good: apalis ends a
//! worker whose fetch fails, so the monitor restarts it, under a new id (`<id>~r<n>`). The old
//! id stops heartbeating, and whatever it had claimed is rescued after the rescue bound, as for
//! a crashed process. Granary's own bookkeeping writes wait out a connection loss (see
//! [`persist`]) rather than leave a job claimed by a live worker that will never finish it.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use apalis::prelude::{
    BackendExt, BoxDynError, Data, Monitor, Strategy, TaskId, WorkerBuilder, WorkerBuilderExt,
    WorkerContext,
};
use apalis_postgres::{PostgresStorage, Pubsub};
use futures::FutureExt as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    JobError, backoff,
    registry::{Handler, JobContext, Registry},
};
use crate::Config;

#[derive(Clone)]
struct Binding {
    queue: &'static str,
    handler: Handler,
    pool: PgPool,
    config: Arc<Config>,
}

/// A process-unique worker id prefix: host, pid and 32 random bits. A restarted process never
/// reuses an id, so it can never mistake its predecessor's orphaned jobs for its own.
pub fn process_id() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Runs every queue in `registry` until `shutdown` is cancelled, then lets running jobs finish
/// for up to `config.shutdown_timeout` and hands back whatever it could not finish.
pub async fn run(
    pool: PgPool,
    config: Arc<Config>,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let held = registry.held_connections();
    let max = pool.options().get_max_connections();
    anyhow::ensure!(
        max >= held + 2,
        "the pool has {max} connections, but the job runtime holds {held} (one LISTEN per queue) and needs at least 2 more to work; size the pool with Registry::held_connections"
    );
    let process = process_id();
    let settings = config.worker.clone();
    let restarting = shutdown.clone();
    let mut monitor = Monitor::new()
        .shutdown_timeout(config.shutdown_timeout)
        .should_restart(move |worker, error| {
            if restarting.is_cancelled() {
                return false;
            }
            tracing::error!(
                worker = %worker.name(),
                restarts = worker.restarts(),
                error = %error,
                "queue worker stopped on an error (database unreachable?); restarting it under a new id"
            );
            true
        });
    let mut worker_ids = Vec::new();
    let mut periodic = Vec::new();
    for task in registry.periodic {
        if let Some(every) = (task.every)(&config) {
            periodic.push(tokio::spawn(periodic_loop(
                task,
                every,
                pool.clone(),
                config.clone(),
                shutdown.clone(),
            )));
        }
    }
    for (queue, handler) in registry.handlers {
        let worker_id = format!("{queue}@{process}");
        worker_ids.push(worker_id.clone());
        let binding = Binding {
            queue,
            handler,
            pool: pool.clone(),
            config: config.clone(),
        };
        let pg_config = apalis_postgres::Config::default()
            .queue(queue)
            .batch_size(settings.batch_size)
            .heartbeat_interval(settings.heartbeat_interval)
            .missed_heartbeats(settings.missed_heartbeats)
            .lock_tasks(false);
        let concurrency = settings.concurrency_for(queue);
        let poll = settings.poll_interval;
        let pool = pool.clone();
        monitor = monitor.register(move |restarts| {
            // New jobs wake the worker at once through NOTIFY; the interval poll catches what
            // NOTIFY cannot announce: delayed jobs coming due, retries, requeues, rescues.
            let strategy = Strategy::new()
                .stream(Pubsub::new(pool.clone(), queue.to_string()))
                .interval(poll);
            let storage = PostgresStorage::<serde_json::Value>::new(&pool)
                .with_config(pg_config.clone())
                .poll_with_strategy(strategy);
            WorkerBuilder::new(generation_id(&worker_id, restarts))
                .backend(storage)
                .concurrency(concurrency)
                .data(binding.clone())
                .build(execute)
        });
    }
    tracing::info!(process = %process, rescue_bound_s = settings.rescue_bound().as_secs(), "job runtime starting");

    let maintenance = tokio::spawn(maintenance_loop(
        pool.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    let signal = shutdown.clone();
    let result = monitor
        .run_with_signal(async move {
            signal.cancelled().await;
            Ok(())
        })
        .await;
    shutdown.cancel();
    let _ = maintenance.await;
    for task in periodic {
        let _ = task.await;
    }
    // Whatever is still claimed by this process did not finish within the shutdown timeout:
    // hand it back now rather than waiting for the rescue bound.
    match release_claims(&pool, &worker_ids).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "released unfinished jobs at shutdown; they will run again"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not release claims at shutdown; the rescue will pick them up")
        }
    }
    tracing::info!("job runtime stopped");
    result.map_err(|e| anyhow::anyhow!("job monitor failed: {e}"))
}

/// The id of a queue worker's `restarts`-th incarnation: the first keeps the plain id, later ones
/// get `~r<n>` so that a restarted worker never inherits (and keeps alive) the claims of the
/// incarnation that died.
fn generation_id(worker_id: &str, restarts: usize) -> String {
    if restarts == 0 {
        worker_id.to_string()
    } else {
        format!("{worker_id}~r{restarts}")
    }
}

/// Whether `e` means the database could not be reached (rather than that it refused the
/// statement): broken or refused connections, an exhausted pool, a server shutting down.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// How long a bookkeeping write waits for the database to come back.
const PERSIST_FOR: Duration = Duration::from_secs(300);

/// Runs a bookkeeping write, retrying it (0.2 s doubling to 5 s, for up to [`PERSIST_FOR`])
/// while the database is unreachable. Each write is idempotent for the same job attempt. Giving
/// up early would leave the job claimed by this live worker, so never rescued: the order stuck.
async fn persist<T, F, Fut>(what: &str, mut write: F) -> sqlx::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + PERSIST_FOR;
    let mut delay = Duration::from_millis(200);
    loop {
        match write().await {
            Err(e) if is_connection_error(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, what, retry_in_ms = delay.as_millis() as u64, "database unreachable; retrying the job's bookkeeping");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

/// One job attempt, wrapped in Granary's bookkeeping.
async fn execute(
    payload: serde_json::Value,
    task_id: TaskId,
    worker: WorkerContext,
    binding: Data<Binding>,
) -> Result<(), BoxDynError> {
    let job_id = task_id.to_string();
    let worker_id = worker.name().to_string();
    let b = &*binding;

    // The attempt row comes first, so that even a SIGKILL mid-job leaves a trace. An earlier
    // attempt still marked running belonged to a worker that died: it is closed as abandoned.
    let start = persist("attempt start", || sqlx::query!(
        r#"
        WITH abandoned AS (
            UPDATE job_attempts
            SET outcome = 'abandoned', finished_at = clock_timestamp(),
                error = 'the worker stopped (killed, crashed or timed out at shutdown) before this attempt finished'
            WHERE job_id = $1 AND outcome = 'running'
            RETURNING attempt
        )
        INSERT INTO job_attempts (job_id, queue, attempt, worker_id)
        SELECT $1, $2,
               greatest(
                   coalesce((SELECT max(attempt) FROM job_attempts WHERE job_id = $1), 0),
                   coalesce((SELECT max(attempt) FROM abandoned), 0)
               ) + 1,
               $3
        RETURNING id, attempt,
                  (SELECT max_attempts FROM apalis.jobs WHERE id = $1) AS "max_attempts?"
        "#,
        job_id,
        b.queue,
        worker_id,
    )
    .fetch_one(&b.pool))
    .await?;
    let attempt = start.attempt;
    let max_attempts = start.max_attempts.unwrap_or(1);

    let ctx = JobContext {
        pool: b.pool.clone(),
        config: b.config.clone(),
        job_id: job_id.clone(),
        queue: b.queue,
        attempt,
        worker_id: worker_id.clone(),
    };
    // The ids the job concerns are filled in once its payload is decoded (`Registry::register`,
    // from `Job::refs`) or when the handler finds them (`provider_event_id`, the order a webhook
    // paid): one grep for an order id follows it from webhook to receipt.
    let span = tracing::info_span!(
        "job",
        job_id = %job_id,
        queue = b.queue,
        attempt,
        order_id = tracing::field::Empty,
        event_id = tracing::field::Empty,
        provider_event_id = tracing::field::Empty,
        email_id = tracing::field::Empty,
        asset_id = tracing::field::Empty,
        clerk_user_id = tracing::field::Empty,
    );
    let outcome = AssertUnwindSafe((b.handler)(ctx, payload))
        .catch_unwind()
        .instrument(span.clone())
        .await;

    let (kind, error, retry_in) = match outcome {
        Ok(Ok(())) => {
            persist("success", || sqlx::query!(
                r#"
                WITH attempt AS (
                    UPDATE job_attempts SET outcome = 'succeeded', finished_at = clock_timestamp() WHERE id = $1
                )
                UPDATE apalis.jobs
                SET status = 'Done', attempts = $3, done_at = now(), lock_by = NULL, lock_at = NULL,
                    last_result = '{"Ok": null}'::jsonb
                WHERE id = $2
                "#,
                start.id,
                job_id,
                attempt,
            )
            .execute(&b.pool))
            .await?;
            span.in_scope(|| tracing::info!("job succeeded"));
            return Ok(());
        }
        Ok(Err(err)) => {
            let text = err.to_string();
            match err {
                JobError::Permanent(_) => ("discarded", text, None),
                JobError::RetryAfter(d, _) => {
                    ("retry", text, Some(d.min(backoff::MAX_RETRY_AFTER)))
                }
                JobError::Retry(_) => ("retry", text, None),
            }
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            ("panicked", format!("panicked: {msg}"), None)
        }
    };

    let exhausted = attempt >= max_attempts;
    let (outcome, retry_at) = match kind {
        "discarded" => ("discarded", None),
        _ if exhausted => ("failed", None),
        k => {
            let w = &b.config.worker;
            let delay =
                retry_in.unwrap_or_else(|| backoff::delay(attempt, w.backoff_base, w.backoff_cap));
            (
                if k == "panicked" { "panicked" } else { "retry" },
                Some(chrono::Utc::now() + delay),
            )
        }
    };
    // A job that will not run again gets max_attempts = attempts: apalis's fetch
    // (`attempts < max_attempts`) never takes it, and every listing shows it as failed.
    let retire = retry_at.is_none();
    persist("outcome", || {
        sqlx::query!(
            r#"
        WITH attempt AS (
            UPDATE job_attempts
            SET outcome = $3, finished_at = clock_timestamp(), error = $4, retry_at = $5
            WHERE id = $1
        )
        UPDATE apalis.jobs
        SET status = 'Failed', attempts = $6,
            max_attempts = CASE WHEN $7 THEN $6 ELSE max_attempts END,
            run_at = coalesce($5, run_at),
            done_at = now(), lock_by = NULL, lock_at = NULL,
            last_result = jsonb_build_object('Err', $4::text)
        WHERE id = $2
        "#,
            start.id,
            job_id,
            outcome,
            error,
            retry_at,
            attempt,
            retire,
        )
        .execute(&b.pool)
    })
    .await?;
    span.in_scope(|| match retry_at {
        Some(at) => tracing::warn!(error = %error, outcome, retry_at = %at, "job attempt failed; will retry"),
        None => tracing::error!(error = %error, outcome, "job failed; left for an operator"),
    });
    Err(error.into())
}

/// Hands back jobs claimed by these workers (any incarnation) and closes their open attempts.
pub async fn release_claims(pool: &PgPool, worker_ids: &[String]) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let released = sqlx::query!(
        r#"
        UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL
        WHERE split_part(lock_by, '~', 1) = ANY($1) AND status IN ('Queued', 'Running')
        "#,
        worker_ids
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        r#"
        UPDATE job_attempts
        SET outcome = 'abandoned', finished_at = clock_timestamp(),
            error = 'the worker shut down before this attempt finished'
        WHERE outcome = 'running' AND split_part(worker_id, '~', 1) = ANY($1)
        "#,
        worker_ids
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(released)
}

/// Retention: completed jobs older than the configured age are pruned with their history;
/// failed and cancelled ones are kept for the operator.
pub async fn prune_completed(pool: &PgPool, older_than: Duration) -> sqlx::Result<u64> {
    let cutoff = chrono::Utc::now() - older_than;
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar!(
        "DELETE FROM apalis.jobs WHERE status = 'Done' AND done_at < $1 RETURNING id",
        cutoff
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM job_attempts WHERE job_id = ANY($1)", &ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM job_refs WHERE job_id = ANY($1)", &ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ids.len() as u64)
}

async fn periodic_loop(
    task: super::registry::Periodic,
    every: Duration,
    pool: PgPool,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = (task.tick)(pool.clone(), config.clone()).await {
            tracing::warn!(task = task.name, error = %e, "periodic task failed; will try again");
        }
    }
}

async fn maintenance_loop(pool: PgPool, config: Arc<Config>, shutdown: CancellationToken) {
    let every = Duration::from_secs(60).min(config.worker.retention.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match prune_completed(&pool, config.worker.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned completed jobs past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning completed jobs failed; will try again"),
        }
    }
}
