//! Granary's own apalis backend over Granary's own `jobs` table (docs/queue.md).
//!
//! apalis-core drives each queue's worker (`WorkerBuilder`, `Monitor`, concurrency, shutdown);
//! this module feeds it and records what happened:
//! - **Claim.** One claimer task per queue runs one statement per batch that claims the jobs
//!   (`FOR UPDATE SKIP LOCKED`) and writes their attempt rows. It fills a bounded prefetch
//!   buffer and claims again as soon as half of it is free, so the next batch is in flight
//!   before the buffer runs dry. [`QueueBackend`] hands the buffer's jobs to apalis.
//! - **Complete.** One completer per process writes finished attempts in one statement, one
//!   flush in flight at a time, never waiting to fill a batch. Each write is guarded by the
//!   worker and the attempt number, so the late completion of a job that was rescued (and
//!   perhaps claimed again) changes nothing.
//! - **Wake.** Enqueuers send one NOTIFY per statement on [`CHANNEL`] with the queue's name; one
//!   LISTEN connection per process wakes that queue's claimer. A poll catches what NOTIFY
//!   cannot announce (backoff and delayed jobs coming due, rescues).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use apalis::prelude::{Task, TaskBuilder, TaskId, WorkerContext};
use apalis_core::backend::{Backend, BackendConfig, finalize::Ephemeral};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The NOTIFY channel that wakes claimers; the payload is the queue's name.
pub const CHANNEL: &str = "granary_jobs";

/// A claimed job, as apalis hands it to the runtime's handler.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// The job's id.
    pub id: String,
    /// This attempt's number (1-based), written by the claim.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The payload.
    pub args: serde_json::Value,
    /// When it was due (its queue latency is measured from here).
    pub run_at: chrono::DateTime<chrono::Utc>,
    /// When it was claimed (the claim's transaction time).
    pub locked_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
struct Inner {
    jobs: VecDeque<Claimed>,
    waker: Option<Waker>,
}

/// A queue's prefetch buffer: claimed jobs not yet started.
pub(crate) struct Buffer {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Signalled when half the buffer is free (or it ran dry): the claimer may claim again.
    space: Notify,
}

impl Buffer {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            space: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn free(&self) -> usize {
        self.capacity.saturating_sub(self.lock().jobs.len())
    }

    fn low_water(&self) -> usize {
        self.capacity.div_ceil(2)
    }

    fn push(&self, jobs: Vec<Claimed>) {
        let waker = {
            let mut inner = self.lock();
            inner.jobs.extend(jobs);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes every job not yet started (at shutdown, to hand them back).
    pub(crate) fn drain(&self) -> Vec<Claimed> {
        self.lock().jobs.drain(..).collect()
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Claimed> {
        let mut inner = self.lock();
        match inner.jobs.pop_front() {
            Some(job) => {
                if self.capacity - inner.jobs.len() >= self.low_water() {
                    self.space.notify_one();
                }
                Poll::Ready(job)
            }
            None => {
                inner.waker = Some(cx.waker().clone());
                self.space.notify_one();
                Poll::Pending
            }
        }
    }
}

/// The apalis backend of one queue: it yields what the queue's claimer put in the buffer.
pub struct QueueBackend {
    buffer: Arc<Buffer>,
}

impl QueueBackend {
    pub(crate) fn new(buffer: Arc<Buffer>) -> Self {
        Self { buffer }
    }
}

impl Backend for QueueBackend {
    type Task = Task<Claimed>;
    type Error = std::io::Error;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.buffer.poll_pop(cx).map(|job| {
            let (id, attempt, max_attempts) = (job.id.clone(), job.attempt, job.max_attempts);
            let task = TaskBuilder::new(job)
                .task_id(TaskId::from_string(id))
                .attempt(attempt.max(1) as usize)
                .max_attempts(max_attempts.max(0) as usize)
                .build();
            Some(Ok(task))
        })
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // The runtime hands back what is still buffered once every worker has stopped.
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for QueueBackend {
    type Args = Claimed;
    type Id = String;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = tower::layer::util::Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        tower::layer::util::Identity::new()
    }
}

/// Claims up to `limit` due jobs of `queue` for `worker` and writes their attempt rows, in one
/// statement.
pub async fn claim(
    pool: &PgPool,
    queue: &str,
    worker: &str,
    limit: i64,
) -> sqlx::Result<Vec<Claimed>> {
    // Planned at each call (`persistent(false)`), like `complete`: a plan cached while the
    // jobs table was small scans it (measured: a burst of orders on a fresh database ran
    // 1,500 sequential scans of `jobs` in 14 s, and PostgreSQL re-plans only after the next
    // ANALYZE). A claim serves a whole batch, so planning it each time is cheap.
    // `query_as` (checked by every runtime test, not at compile time): the checked macros
    // cannot turn the statement cache off.
    sqlx::query_as::<_, Claimed>(
        r#"
        WITH j AS (
            -- `= ANY(ARRAY(…))`, not a join: the planner cannot know the LIMIT of a prepared
            -- statement and would hash-join the whole table (measured: 10 ms per claim at 20k
            -- rows, against 0.5 ms).
            -- `jobs_active`, the partition of waiting and running jobs: a lookup by id in the
            -- parent would also descend the finished jobs' primary key (docs/queue.md).
            UPDATE jobs_active SET state = 'running', attempt = attempt + 1,
                            locked_by = $3, locked_at = now()
            WHERE id = ANY(ARRAY(
                SELECT id FROM jobs_active
                WHERE queue = $1 AND state IN ('pending', 'retrying') AND run_at <= now()
                ORDER BY priority DESC, run_at, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            ))
            RETURNING id, attempt, max_attempts, args, run_at, locked_at
        ), a AS (
            INSERT INTO job_attempts (job_id, queue, attempt, worker_id)
            SELECT id, $1, attempt, $3 FROM j
        )
        SELECT id, attempt, max_attempts, args, run_at, locked_at FROM j ORDER BY id
        "#,
    )
    .bind(queue)
    .bind(limit)
    .bind(worker)
    .persistent(false)
    .fetch_all(pool)
    .await
}

/// Hands back the jobs of a claim whose answer was lost: PostgreSQL committed it, then the
/// connection broke before the rows reached this worker (a server crash or restart at that
/// instant). They are `running` and locked by this live, heartbeating worker, so the rescue
/// would never free them. They are told apart by their claim time: later than `after` (the
/// newest claim this worker received before the failure) and not among `received` (the claim
/// that just succeeded). Claims of one worker are sequential, so nothing else matches.
pub async fn hand_back_lost_claims(
    pool: &PgPool,
    worker: &str,
    after: Option<chrono::DateTime<chrono::Utc>>,
    received: &[Claimed],
) -> sqlx::Result<u64> {
    let received: Vec<String> = received.iter().map(|j| j.id.clone()).collect();
    let lost = sqlx::query_as::<_, Claimed>(
        r#"SELECT id, attempt, max_attempts, args, run_at, locked_at FROM jobs
           WHERE locked_by = $1 AND state = 'running' AND ($2::timestamptz IS NULL OR locked_at > $2)
             AND id <> ALL($3)"#,
    )
    .bind(worker)
    .bind(after)
    .bind(&received)
    .fetch_all(pool)
    .await?;
    unclaim(pool, worker, &lost).await
}

/// Gives back claimed jobs that never started: the claim is undone (attempt number and row).
pub async fn unclaim(pool: &PgPool, worker: &str, jobs: &[Claimed]) -> sqlx::Result<u64> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.attempt).collect();
    let n = sqlx::query_scalar!(
        r#"
        WITH j AS (
            UPDATE jobs_active t SET state = 'pending', attempt = t.attempt - 1,
                            locked_by = NULL, locked_at = NULL
            FROM unnest($1::text[], $2::int4[]) AS r(id, attempt)
            WHERE t.id = r.id AND t.attempt = r.attempt AND t.locked_by = $3
            RETURNING t.id, r.attempt
        ), d AS (
            DELETE FROM job_attempts a USING j WHERE a.job_id = j.id AND a.attempt = j.attempt
        )
        SELECT count(*) AS "n!" FROM j
        "#,
        &ids,
        &attempts,
        worker,
    )
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}

/// What a claimer needs.
pub(crate) struct Claimer {
    pub(crate) pool: PgPool,
    pub(crate) queue: &'static str,
    pub(crate) worker: String,
    pub(crate) buffer: Arc<Buffer>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) poll: Duration,
    pub(crate) stop: CancellationToken,
}

impl Claimer {
    /// Keeps the buffer filled until `stop`, then hands back what was never started.
    pub(crate) async fn run(self) {
        let mut failures = 0u32;
        // The newest claim time received, and whether a claim failed since: its commit may
        // have reached the server even though its answer did not reach us.
        let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
        let mut maybe_lost = false;
        'outer: loop {
            // Room for at least half a buffer (or an empty one) before claiming.
            while self.buffer.free() < self.buffer.low_water() {
                tokio::select! {
                    () = self.stop.cancelled() => break 'outer,
                    () = self.buffer.space.notified() => {}
                }
            }
            let want = self.buffer.free();
            let started = std::time::Instant::now();
            match claim(&self.pool, self.queue, &self.worker, want as i64).await {
                Ok(jobs) => {
                    failures = 0;
                    if maybe_lost {
                        maybe_lost = !self.recover_lost_claim(newest, &jobs).await;
                    }
                    newest = jobs.iter().map(|j| j.locked_at).max().or(newest);
                    let got = jobs.len();
                    tracing::debug!(
                        queue = self.queue,
                        want,
                        got,
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        "claimed"
                    );
                    if got > 0 {
                        self.buffer.push(jobs);
                    }
                    if got == want {
                        continue;
                    }
                    // The queue ran dry: sleep until an enqueue wakes us or the poll comes.
                    tokio::select! {
                        () = self.stop.cancelled() => break 'outer,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.poll) => {}
                    }
                }
                Err(e) => {
                    failures += 1;
                    maybe_lost |= crate::persist::is_connection_error(&e);
                    let delay = Duration::from_millis(200 * 2u64.pow(failures.min(5)))
                        .min(Duration::from_secs(5));
                    tracing::warn!(queue = self.queue, error = %e, retry_in_ms = delay.as_millis() as u64, "claiming jobs failed (database unreachable?); retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => break 'outer,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.hand_back_unstarted().await;
    }

    /// After a claim whose answer may have been lost, hands back the jobs that claim took (see
    /// [`hand_back_lost_claims`]). True once the search is done (whatever it found).
    async fn recover_lost_claim(
        &self,
        newest: Option<chrono::DateTime<chrono::Utc>>,
        jobs: &[Claimed],
    ) -> bool {
        match hand_back_lost_claims(&self.pool, &self.worker, newest, jobs).await {
            Ok(0) => true,
            Ok(n) => {
                tracing::warn!(
                    queue = self.queue,
                    jobs = n,
                    "handed back jobs of a claim whose answer was lost"
                );
                true
            }
            Err(e) => {
                tracing::warn!(queue = self.queue, error = %e, "looking for a lost claim failed; will look again");
                false
            }
        }
    }

    /// At shutdown: hands back the claimed jobs that never started.
    async fn hand_back_unstarted(&self) {
        let left = self.buffer.drain();
        if left.is_empty() {
            return;
        }
        match crate::persist::persist("hand back", || unclaim(&self.pool, &self.worker, &left))
            .await
        {
            Ok(n) => tracing::info!(
                queue = self.queue,
                jobs = n,
                "handed back claimed jobs that never started"
            ),
            Err(e) => {
                tracing::error!(queue = self.queue, error = %e, "could not hand back claimed jobs; the rescue will pick them up")
            }
        }
    }
}

/// A finished attempt, on its way to the completer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Job id.
    pub id: String,
    /// Attempt number.
    pub attempt: i32,
    /// The worker that ran it.
    pub worker: String,
    /// `succeeded`, `retry`, `panicked`, `failed` or `discarded`.
    pub outcome: &'static str,
    /// The error, whole chain.
    pub error: Option<String>,
    /// When it runs again, for a retry.
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the handler returned (the completer writes later).
    pub finished_at: chrono::DateTime<chrono::Utc>,
}

/// Most outcomes in one statement.
const MAX_FLUSH: usize = 1000;

/// Writes outcomes as they come, one flush in flight at a time, until `close` and the channel
/// is empty.
pub(crate) async fn complete_loop(
    pool: PgPool,
    mut rx: tokio::sync::mpsc::Receiver<Outcome>,
    close: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_FLUSH);
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, MAX_FLUSH) => {
                if n == 0 {
                    return;
                }
            }
            () = close.cancelled() => {
                while let Ok(o) = rx.try_recv() {
                    batch.push(o);
                }
                if !batch.is_empty() {
                    flush(&pool, std::mem::take(&mut batch)).await;
                }
                return;
            }
        }
        flush(&pool, std::mem::take(&mut batch)).await;
    }
}

async fn flush(pool: &PgPool, batch: Vec<Outcome>) {
    let started = std::time::Instant::now();
    let result = crate::persist::persist("job outcomes", || complete(pool, &batch)).await;
    tracing::debug!(
        jobs = batch.len(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "outcomes written"
    );
    match result {
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, jobs = batch.len(), "writing job outcomes failed; their jobs will be rescued and run again");
        }
    }
}

/// Writes finished attempts and their jobs' next states in one statement. A row whose job is no
/// longer claimed by that worker for that attempt (it was rescued) is left alone. Returns the
/// number of jobs written. On the pool for the completer; in a handler's transaction for
/// [`crate::completion`].
pub async fn complete<'c>(conn: impl sqlx::PgExecutor<'c>, batch: &[Outcome]) -> sqlx::Result<u64> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut retry_ats = Vec::with_capacity(n);
    let mut finished_ats = Vec::with_capacity(n);
    for o in batch {
        ids.push(o.id.as_str());
        attempts.push(o.attempt);
        workers.push(o.worker.as_str());
        outcomes.push(o.outcome);
        errors.push(o.error.as_deref());
        retry_ats.push(o.retry_at);
        finished_ats.push(o.finished_at);
    }
    let written = sqlx::query_scalar!(
        r#"
        WITH d AS (
            -- A finished attempt takes its job out of `jobs_active` and writes it back with its
            -- next state, which PostgreSQL routes to its partition: `jobs_finished` when it
            -- completed or failed, `jobs_active` again when it retries. A delete and an insert,
            -- not an update of `state`, so that a statement waiting on the row skips it as
            -- deleted instead of failing on a row moved between partitions (docs/queue.md).
            -- The outcomes are joined straight from unnest (not through a CTE, which the
            -- planner can only scan once per job row) and carried on by RETURNING.
            DELETE FROM jobs_active t
            USING unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::timestamptz[])
                AS r(id, attempt, worker, outcome, error, retry_at, finished_at)
            -- Only a running job has `locked_by`. No `state = 'running'` here: it would let the
            -- planner drive the join from the running-jobs index and rescan the unnest for
            -- each running job (measured: 2 s per 1,000 outcomes), where the outcomes should
            -- drive primary-key lookups.
            WHERE t.id = r.id AND t.attempt = r.attempt AND t.locked_by = r.worker
            RETURNING t.id, t.queue, t.args, t.attempt, t.max_attempts, t.priority, t.run_at,
                      t.created_at, r.outcome, r.error, r.retry_at, r.finished_at
        ), j AS (
            INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, priority, run_at,
                              created_at, finished_at, last_error)
            SELECT id, queue, args,
                   CASE WHEN outcome = 'succeeded' THEN 'completed'
                        WHEN retry_at IS NOT NULL THEN 'retrying'
                        ELSE 'failed' END,
                   attempt, max_attempts, priority, coalesce(retry_at, run_at), created_at,
                   CASE WHEN outcome = 'succeeded' OR retry_at IS NULL THEN finished_at END,
                   error
            FROM d
        ), a AS (
            UPDATE job_attempts t
            SET outcome = d.outcome, finished_at = d.finished_at, error = d.error,
                retry_at = d.retry_at
            FROM d
            WHERE t.job_id = d.id AND t.attempt = d.attempt
        )
        SELECT count(*) AS "n!" FROM d
        "#,
        &ids as &[&str],
        &attempts,
        &workers as &[&str],
        &outcomes as &[&str],
        &errors as &[Option<&str>],
        &retry_ats as &[Option<chrono::DateTime<chrono::Utc>>],
        &finished_ats,
    )
    // Planned at each call: see `claim`. A generic plan made while the table was small
    // hash-joins the outcomes against a scan of every job.
    .persistent(false)
    .fetch_one(conn)
    .await?;
    Ok(written as u64)
}
