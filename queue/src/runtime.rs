//! Running jobs: one apalis worker per queue under one apalis `Monitor`, fed by Granary's own
//! backend ([`super::backend`]) over Granary's own `jobs` table.
//!
//! apalis gives the worker runtime: `WorkerBuilder`, per-queue concurrency, the `Monitor`, and
//! graceful shutdown. Granary's backend claims jobs in batches (the claim writes the attempt
//! rows, so even a SIGKILL mid-job leaves a trace), and [`execute`] runs the handler with panic
//! capture and hands the outcome to the group-commit completer: success, the retry with its
//! persisted backoff (or the provider's `Retry-After`), or the permanent failure.
//!
//! Every process has a unique id; its queue workers heartbeat in `job_workers`, and any live
//! process rescues the running jobs of a worker not seen within the rescue bound. Losing the
//! database (a restart, a failover) stops nothing: claims, heartbeats and outcome writes retry
//! until it is back (see [`persist`]).

use std::{collections::HashMap, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use apalis::prelude::{BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use futures::FutureExt as _;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    JobError,
    backend::{self, Buffer, Claimed, Claimer, Outcome, QueueBackend},
    backoff,
    completion::{self, Attempt},
    enqueue::Notifier,
    persist::persist,
    registry::{Handler, JobContext, Registry},
    settings::Settings,
    state::AttemptOutcome,
};

struct Binding<S> {
    queue: &'static str,
    worker_id: String,
    handler: Handler<S>,
    /// This queue's attempt time limit: the configured one, else the kind's own.
    timeout: Duration,
    pool: PgPool,
    config: Arc<S>,
    settings: Arc<Settings>,
    completer: tokio::sync::mpsc::Sender<Outcome>,
    wakes: Arc<Wakes>,
}

// Not derived: a derive would require `S: Clone`.
impl<S> Clone for Binding<S> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue,
            worker_id: self.worker_id.clone(),
            handler: self.handler.clone(),
            timeout: self.timeout,
            pool: self.pool.clone(),
            config: self.config.clone(),
            settings: self.settings.clone(),
            completer: self.completer.clone(),
            wakes: self.wakes.clone(),
        }
    }
}

/// Wakes queue workers: this process's at once, other processes' through the [`Notifier`]'s
/// NOTIFY, sent outside any data commit, and only for a queue another live process works.
///
/// A handler's jobs are nearly always for queues this process works itself, and with one worker
/// process every such NOTIFY woke only the process that sent it: in a burst, about one NOTIFY
/// round trip per order (a notifying commit, which PostgreSQL serialises). Which queues other
/// processes work is read at every heartbeat (`job_workers`); a process that starts meanwhile
/// finds those jobs at its poll, as it would after any lost wake-up.
pub(crate) struct Wakes {
    /// The same map the LISTEN task wakes.
    local: Arc<HashMap<&'static str, Arc<Notify>>>,
    notify: Notifier,
    /// Queues another live process works, as of the last heartbeat.
    peers: std::sync::RwLock<Vec<String>>,
}

impl Wakes {
    fn wake(&self, queues: &[&'static str]) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        for q in queues {
            // A queue this process does not work is always someone else's to wake.
            let others = match self.local.get(q) {
                Some(w) => {
                    w.notify_one();
                    peers.iter().any(|p| p == q)
                }
                None => true,
            };
            if others {
                self.notify.wake(q);
            }
        }
    }

    fn set_peers(&self, queues: Vec<String>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = queues;
    }
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
/// for up to `shutdown_timeout` and hands back whatever it could not finish. `config` is handed
/// to every handler and periodic task.
pub async fn run<S: Send + Sync + 'static>(
    pool: PgPool,
    settings: Settings,
    shutdown_timeout: Duration,
    config: Arc<S>,
    registry: Registry<S>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    check_pool(&pool, registry.held_connections())?;
    let process = process_id();
    let settings = Arc::new(settings);
    let workers: Vec<(String, &'static str)> = registry
        .kinds
        .keys()
        .map(|q| (format!("{q}@{process}"), *q))
        .collect();
    let worker_ids: Vec<String> = workers.iter().map(|(id, _)| id.clone()).collect();
    // Registered before the first claim, so no rescue can mistake a new worker for a dead one.
    let peers = persist("worker registration", || {
        heartbeat(&pool, &workers, settings.rescue_bound())
    })
    .await?;

    let wakes: Arc<HashMap<&'static str, Arc<Notify>>> = Arc::new(
        registry
            .kinds
            .keys()
            .map(|q| (*q, Arc::new(Notify::new())))
            .collect(),
    );
    let (support, waker, completer) =
        Support::start(&pool, &wakes, peers, &workers, &settings, &shutdown);

    let mut monitor = new_monitor(shutdown_timeout, shutdown.clone());
    let periodic = start_periodic(registry.periodic, &pool, &config, &shutdown);
    let shared = Shared {
        pool: pool.clone(),
        config: config.clone(),
        settings: settings.clone(),
        completer: completer.clone(),
        wakes: waker.clone(),
        local: wakes.clone(),
        shutdown: shutdown.clone(),
    };
    let mut claimers = Vec::new();
    for ((worker_id, queue), (_, kind)) in workers.iter().cloned().zip(registry.kinds) {
        let (claimer, registered) = start_queue(&shared, worker_id, queue, kind, monitor);
        claimers.push(claimer);
        monitor = registered;
    }
    drop(completer);
    tracing::info!(process = %process, rescue_bound_s = settings.rescue_bound().as_secs(), "job runtime starting");

    let maintenance = tokio::spawn(maintenance_loop(
        pool.clone(),
        settings.retention,
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
    // Claimed jobs that never started go back first (their claim undone), then the outcomes of
    // finished jobs are written, then whatever is still running is handed back.
    for claimer in claimers {
        let _ = claimer.await;
    }
    support.stop(maintenance).await;
    for task in periodic {
        let _ = task.await;
    }
    release_at_shutdown(&pool, &worker_ids).await;
    tracing::info!("job runtime stopped");
    result.map_err(|e| anyhow::anyhow!("job monitor failed: {e}"))
}

/// Refuses a pool too small for the runtime: it holds `held` connections for as long as it
/// runs and needs at least two more to work.
fn check_pool(pool: &PgPool, held: u32) -> anyhow::Result<()> {
    let max = pool.options().get_max_connections();
    anyhow::ensure!(
        max >= held + 2,
        "the pool has {max} connections, but the job runtime holds {held} (one LISTEN) and needs at least 2 more to work; size the pool with Registry::held_connections"
    );
    Ok(())
}

/// The process's own tasks beside its queue workers: the LISTEN connection, the heartbeat and
/// rescue, and the completer that writes outcomes.
struct Support {
    listener: tokio::task::JoinHandle<()>,
    lifeline: tokio::task::JoinHandle<()>,
    completing: tokio::task::JoinHandle<()>,
    /// Stops the completer and the notifier, after the workers are done.
    closing: CancellationToken,
}

impl Support {
    /// Starts them; returns the wakes for the workers and the completer's inbox.
    fn start(
        pool: &PgPool,
        wakes: &Arc<HashMap<&'static str, Arc<Notify>>>,
        peers: Vec<String>,
        workers: &[(String, &'static str)],
        settings: &Settings,
        shutdown: &CancellationToken,
    ) -> (Self, Arc<Wakes>, tokio::sync::mpsc::Sender<Outcome>) {
        let listener = tokio::spawn(listen(pool.clone(), wakes.clone(), shutdown.clone()));
        let closing = CancellationToken::new();
        let waker = Arc::new(Wakes {
            local: wakes.clone(),
            notify: Notifier::spawn(pool.clone(), closing.clone()),
            peers: std::sync::RwLock::new(peers),
        });
        let (completer, outcomes) = tokio::sync::mpsc::channel(8192);
        let completing = tokio::spawn(backend::complete_loop(
            pool.clone(),
            outcomes,
            closing.clone(),
        ));
        let lifeline = tokio::spawn(heartbeat_loop(
            pool.clone(),
            workers.to_vec(),
            settings.heartbeat_interval,
            settings.rescue_bound(),
            waker.clone(),
            shutdown.clone(),
        ));
        let support = Self {
            listener,
            lifeline,
            completing,
            closing,
        };
        (support, waker, completer)
    }

    /// After the workers: the outcomes of finished jobs are written, then the rest stops.
    async fn stop(self, maintenance: tokio::task::JoinHandle<()>) {
        self.closing.cancel();
        let _ = self.completing.await;
        let _ = maintenance.await;
        let _ = self.lifeline.await;
        let _ = self.listener.await;
    }
}

/// The monitor of the queue workers: a worker that stops on an error restarts, unless the
/// runtime is shutting down.
fn new_monitor(shutdown_timeout: Duration, shutdown: CancellationToken) -> Monitor {
    Monitor::new()
        .shutdown_timeout(shutdown_timeout)
        .should_restart(move |worker, error| {
            if shutdown.is_cancelled() {
                return false;
            }
            tracing::error!(worker = %worker.name(), restarts = worker.restarts(), error = %error, "queue worker stopped on an error; restarting it");
            true
        })
}

/// Starts each periodic task the configuration schedules.
fn start_periodic<S: Send + Sync + 'static>(
    tasks: Vec<super::registry::Periodic<S>>,
    pool: &PgPool,
    config: &Arc<S>,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut started = Vec::new();
    for task in tasks {
        if let Some(every) = (task.every)(config) {
            started.push(tokio::spawn(periodic_loop(
                task,
                every,
                pool.clone(),
                config.clone(),
                shutdown.clone(),
            )));
        }
    }
    started
}

/// What every queue of the process shares.
struct Shared<S> {
    pool: PgPool,
    config: Arc<S>,
    settings: Arc<Settings>,
    completer: tokio::sync::mpsc::Sender<Outcome>,
    wakes: Arc<Wakes>,
    /// Each queue's wake-up, as the LISTEN task rings it.
    local: Arc<HashMap<&'static str, Arc<Notify>>>,
    shutdown: CancellationToken,
}

/// Starts `queue`'s claimer and registers its apalis worker with `monitor`.
fn start_queue<S: Send + Sync + 'static>(
    shared: &Shared<S>,
    worker_id: String,
    queue: &'static str,
    kind: super::registry::Kind<S>,
    monitor: Monitor,
) -> (tokio::task::JoinHandle<()>, Monitor) {
    let settings = &shared.settings;
    let buffer = Buffer::new(settings.batch_size);
    let claimer = tokio::spawn(
        Claimer {
            pool: shared.pool.clone(),
            queue,
            worker: worker_id.clone(),
            buffer: buffer.clone(),
            wake: shared.local[queue].clone(),
            poll: settings.poll_interval,
            stop: shared.shutdown.clone(),
        }
        .run(),
    );
    let binding = Binding {
        queue,
        worker_id: worker_id.clone(),
        handler: kind.handler,
        timeout: settings
            .per_queue_timeout
            .get(queue)
            .copied()
            .unwrap_or(kind.timeout),
        pool: shared.pool.clone(),
        config: shared.config.clone(),
        settings: settings.clone(),
        completer: shared.completer.clone(),
        wakes: shared.wakes.clone(),
    };
    let concurrency = settings.concurrency_for(queue);
    let monitor = monitor.register(move |_restarts| {
        WorkerBuilder::new(worker_id.clone())
            .backend(QueueBackend::new(buffer.clone()))
            .concurrency(concurrency)
            .data(binding.clone())
            .build(execute::<S>)
    });
    (claimer, monitor)
}

/// Hands back whatever this process's workers still hold as it stops.
async fn release_at_shutdown(pool: &PgPool, worker_ids: &[String]) {
    match release_claims(pool, worker_ids).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "released unfinished jobs at shutdown; they will run again"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not release claims at shutdown; the rescue will pick them up")
        }
    }
}

/// One LISTEN connection for the process: a notification wakes its queue's claimer. After a
/// lost connection every claimer is woken, since notifications may have been missed.
async fn listen(
    pool: PgPool,
    wakes: Arc<HashMap<&'static str, Arc<Notify>>>,
    shutdown: CancellationToken,
) {
    let wake_all = || wakes.values().for_each(|w| w.notify_one());
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling until it is back");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(backend::CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; polling until it works");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        wake_all();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => {
                        if let Some(w) = wakes.get(n.payload()) {
                            w.notify_one();
                        }
                    }
                    // The connection was lost; the listener reconnects on the next call.
                    Ok(None) => wake_all(),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

/// Marks these queue workers alive, and returns the queues that other processes' workers, seen
/// within `bound` (the rescue's test of life), work: what [`Wakes`] NOTIFYs.
async fn heartbeat(
    pool: &PgPool,
    workers: &[(String, &'static str)],
    bound: Duration,
) -> sqlx::Result<Vec<String>> {
    let ids: Vec<&str> = workers.iter().map(|(id, _)| id.as_str()).collect();
    let queues: Vec<&str> = workers.iter().map(|(_, q)| *q).collect();
    sqlx::query_scalar!(
        r#"
        WITH beat AS (
            INSERT INTO job_workers (id, queue)
            SELECT * FROM unnest($1::text[], $2::text[])
            ON CONFLICT (id) DO UPDATE SET last_seen = now()
        )
        SELECT DISTINCT queue AS "queue!" FROM job_workers
        WHERE id <> ALL($1) AND last_seen > now() - make_interval(secs => $3)
        "#,
        &ids as &[&str],
        &queues as &[&str],
        bound.as_secs_f64(),
    )
    .fetch_all(pool)
    .await
}

/// Rescues the running jobs of every worker not seen within `bound`: their open attempt is
/// closed as abandoned, and the job waits to run again (or fails, out of attempts). Runs on the
/// database's clock. Returns the jobs rescued.
pub async fn rescue(pool: &PgPool, bound: Duration) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        WITH d AS (
            -- Out of `jobs_active` and back in with its next state (docs/queue.md: a job
            -- changes partition by a delete and an insert, never by an update of `state`).
            DELETE FROM jobs_active
            WHERE id = ANY(ARRAY(
                SELECT j.id FROM jobs_active j
                WHERE j.state = 'running'
                  AND NOT EXISTS (SELECT 1 FROM job_workers w
                                  WHERE w.id = j.locked_by
                                    AND w.last_seen > now() - make_interval(secs => $1))
                FOR UPDATE OF j SKIP LOCKED
            )) AND state = 'running'
            RETURNING id, queue, args, attempt, max_attempts, priority, created_at
        ), j AS (
            INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, priority, run_at,
                              created_at, finished_at, last_error)
            SELECT id, queue, args,
                   CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'pending' END,
                   attempt, max_attempts, priority, now(), created_at,
                   CASE WHEN attempt >= max_attempts THEN now() END,
                   'the worker stopped (killed, crashed or lost) before this attempt finished'
            FROM d
        ), a AS (
            UPDATE job_attempts t
            SET outcome = 'abandoned', finished_at = clock_timestamp(),
                error = 'the worker stopped (killed, crashed or lost) before this attempt finished'
            FROM d WHERE t.job_id = d.id AND t.attempt = d.attempt AND t.outcome = 'running'
        )
        SELECT id AS "id!" FROM d
        "#,
        bound.as_secs_f64(),
    )
    .fetch_all(pool)
    .await
}

async fn heartbeat_loop(
    pool: PgPool,
    workers: Vec<(String, &'static str)>,
    every: Duration,
    bound: Duration,
    wakes: Arc<Wakes>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match heartbeat(&pool, &workers, bound).await {
            Ok(peers) => wakes.set_peers(peers),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; will try again");
                continue;
            }
        }
        match rescue(&pool, bound).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                tracing::warn!(jobs = ?ids, "rescued the running jobs of a worker that stopped")
            }
            Err(e) => tracing::warn!(error = %e, "rescue failed; will try again"),
        }
    }
}

/// The span of one attempt. The ids the job concerns are filled in once its payload is decoded
/// (`Registry::register`, from `Job::refs`) or when the handler finds them (`provider_event_id`,
/// the order a webhook paid): one grep for an order id follows it from webhook to receipt.
fn job_span(job_id: &str, queue: &'static str, attempt: i32) -> tracing::Span {
    tracing::info_span!(
        "job",
        job_id = %job_id,
        queue,
        attempt,
        order_id = tracing::field::Empty,
        event_id = tracing::field::Empty,
        provider_event_id = tracing::field::Empty,
        email_id = tracing::field::Empty,
        asset_id = tracing::field::Empty,
        clerk_user_id = tracing::field::Empty,
    )
}

/// How a handler's attempt ended: its outcome (before the attempt budget is counted), the
/// error text, and the provider's `Retry-After` when it gave one.
fn classify(
    outcome: std::thread::Result<Result<(), JobError>>,
) -> (AttemptOutcome, Option<String>, Option<Duration>) {
    match outcome {
        Ok(Ok(())) => (AttemptOutcome::Succeeded, None, None),
        Ok(Err(err)) => {
            let text = err.to_string();
            match err {
                JobError::Permanent(_) => (AttemptOutcome::Discarded, Some(text), None),
                JobError::RetryAfter(d, _) => (
                    AttemptOutcome::Retry,
                    Some(text),
                    Some(d.min(backoff::MAX_RETRY_AFTER)),
                ),
                JobError::Retry(_) => (AttemptOutcome::Retry, Some(text), None),
            }
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            let text = format!("panicked: {msg}");
            (AttemptOutcome::Panicked, Some(text), None)
        }
    }
}

/// Runs the handler of `job` with panic capture, then wakes the queues it wrote jobs to. Also
/// says whether the handler's own commit completed the job ([`completion`]).
async fn run_handler<S: Send + Sync + 'static>(
    b: &Binding<S>,
    job: &mut Claimed,
    span: &tracing::Span,
) -> (std::thread::Result<Result<(), JobError>>, bool) {
    let ctx = JobContext {
        pool: b.pool.clone(),
        config: b.config.clone(),
        job_id: job.id.clone(),
        queue: b.queue,
        attempt: job.attempt,
        worker_id: b.worker_id.clone(),
    };
    let running = Attempt::new(job.id.clone(), job.attempt, b.worker_id.clone());
    let handler = AssertUnwindSafe((b.handler)(ctx, std::mem::take(&mut job.args), b.timeout))
        .catch_unwind()
        .instrument(span.clone());
    let (outcome, enqueued) = super::enqueue::deferring_wakes(async {
        match b.settings.complete_in_commit {
            true => completion::scope(running.clone(), handler).await,
            false => handler.await,
        }
    })
    .await;
    // The handler's commits are done: wake the queues it wrote jobs to.
    if !enqueued.is_empty() {
        b.wakes.wake(&enqueued);
    }
    (outcome, running.completed())
}

/// What an attempt that ended as `kind` records, `(attempt, max_attempts)` counted: its outcome,
/// and when it runs again (a retry's backoff, or the provider's `Retry-After`).
fn settle(
    kind: AttemptOutcome,
    retry_in: Option<Duration>,
    (attempt, max_attempts): (i32, i32),
    settings: &Settings,
    finished_at: chrono::DateTime<chrono::Utc>,
) -> (AttemptOutcome, Option<chrono::DateTime<chrono::Utc>>) {
    match kind {
        k if k.is_final() => (k, None),
        _ if attempt >= max_attempts => (AttemptOutcome::Failed, None),
        k => {
            let delay = retry_in.unwrap_or_else(|| {
                backoff::delay(attempt, settings.backoff_base, settings.backoff_cap)
            });
            (k, Some(finished_at + delay))
        }
    }
}

/// One job attempt: the handler, then its outcome to the completer (unless the handler's own
/// commit completed the job: [`completion`]).
async fn execute<S: Send + Sync + 'static>(
    mut job: Claimed,
    binding: Data<Binding<S>>,
) -> Result<(), BoxDynError> {
    let b = &*binding;
    let attempt = job.attempt;
    let span = job_span(&job.id, b.queue, attempt);
    let started = std::time::Instant::now();
    let queue_latency = (chrono::Utc::now() - job.run_at)
        .to_std()
        .unwrap_or_default();
    let (outcome, completed_in_commit) = run_handler(b, &mut job, &span).await;
    let (kind, error, retry_in) = classify(outcome);
    let (kind, error) = match (completed_in_commit, error) {
        (true, Some(error)) => {
            // Its commit completed the job; what the handler did after it cannot undo that.
            span.in_scope(|| tracing::warn!(error = %error, "the handler failed after its commit completed the job; the job stays completed"));
            (AttemptOutcome::Succeeded, None)
        }
        (_, error) => (kind, error),
    };

    let finished_at = chrono::Utc::now();
    let (outcome, retry_at) = settle(
        kind,
        retry_in,
        (attempt, job.max_attempts),
        &b.settings,
        finished_at,
    );
    crate::metrics::job_finished(b.queue, outcome, started.elapsed(), queue_latency);
    let outcome = outcome.as_str();
    span.in_scope(|| match (&error, retry_at) {
        (None, _) => tracing::info!("job succeeded"),
        (Some(error), Some(at)) => tracing::warn!(error = %error, outcome, retry_at = %at, "job attempt failed; will retry"),
        (Some(error), None) => tracing::error!(error = %error, outcome, "job failed; left for an operator"),
    });
    let result = match &error {
        None => Ok(()),
        Some(e) => Err(e.clone().into()),
    };
    if completed_in_commit {
        return result;
    }
    // Written by the completer, together with whatever else finished meanwhile. Should this
    // process die first, the job is rescued and runs again (every handler is idempotent).
    let _ = b
        .completer
        .send(Outcome {
            id: job.id,
            attempt,
            worker: b.worker_id.clone(),
            outcome,
            error,
            retry_at,
            finished_at,
        })
        .await;
    result
}

/// Hands back the running jobs of these workers and closes their open attempts as abandoned.
pub async fn release_claims(pool: &PgPool, worker_ids: &[String]) -> sqlx::Result<u64> {
    let released = sqlx::query_scalar!(
        r#"
        WITH j AS (
            -- Running to pending: both in `jobs_active`, so an update.
            UPDATE jobs_active SET state = 'pending', locked_by = NULL, locked_at = NULL
            WHERE state = 'running' AND locked_by = ANY($1)
            RETURNING id, attempt
        ), a AS (
            UPDATE job_attempts t
            SET outcome = 'abandoned', finished_at = clock_timestamp(),
                error = 'the worker shut down before this attempt finished'
            FROM j WHERE t.job_id = j.id AND t.attempt = j.attempt AND t.outcome = 'running'
        )
        SELECT count(*) AS "n!" FROM j
        "#,
        worker_ids
    )
    .fetch_one(pool)
    .await?;
    Ok(released as u64)
}

/// Retention: completed jobs older than the configured age are pruned with their history;
/// failed and cancelled ones are kept for the operator. Job ids are ULIDs, so the jobs created
/// before the cutoff are a range of the primary key.
pub async fn prune_completed(pool: &PgPool, older_than: Duration) -> sqlx::Result<u64> {
    let cutoff = chrono::Utc::now() - older_than;
    let below =
        ulid::Ulid::from_parts(u64::try_from(cutoff.timestamp_millis()).unwrap_or(0) + 1, 0)
            .to_string();
    let pruned = sqlx::query_scalar!(
        r#"
        WITH j AS (
            DELETE FROM jobs_finished
            WHERE id < $1 AND state = 'completed' AND finished_at < $2
            RETURNING id
        ), a AS (
            DELETE FROM job_attempts t USING j WHERE t.job_id = j.id
        ), r AS (
            DELETE FROM job_refs t USING j WHERE t.job_id = j.id
        )
        SELECT count(*) AS "n!" FROM j
        "#,
        below,
        cutoff,
    )
    .fetch_one(pool)
    .await?;
    // Workers gone for a day are forgotten.
    sqlx::query!("DELETE FROM job_workers WHERE last_seen < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(pruned as u64)
}

async fn periodic_loop<S>(
    task: super::registry::Periodic<S>,
    every: Duration,
    pool: PgPool,
    config: Arc<S>,
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

async fn maintenance_loop(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    let every = Duration::from_secs(60).min(retention.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match prune_completed(&pool, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned completed jobs past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning completed jobs failed; will try again"),
        }
    }
}
