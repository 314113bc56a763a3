//! Enqueueing inside the caller's transaction.

use sqlx::{PgConnection, types::Json};

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
/// still waiting to run (`pending`, or `retrying` after a failed attempt). A transaction-scoped
/// advisory lock on the key serialises concurrent enqueuers, so this never raises a unique
/// violation and never aborts the caller's transaction. A job that is already running does not count: it may have read
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

tokio::task_local! {
    /// Set by the job runtime around a handler: the queues its enqueues wrote to. They are
    /// woken when the handler returns (its commits done), so a handler's commit never carries
    /// a NOTIFY: PostgreSQL serialises commits that notify, and with a NOTIFY in every
    /// handler commit, a burst of orders ran at one notifying commit per WAL flush (measured:
    /// ~120 orders/s whatever the pool size or concurrency).
    pub(crate) static DEFERRED_WAKES: std::cell::RefCell<Vec<&'static str>>;
}

/// Runs `f` as the job runtime runs a handler: its enqueues wake nobody at their commits, and
/// the queues they wrote to are returned, for the caller to wake once `f`'s commits are done.
pub async fn deferring_wakes<F: std::future::Future>(f: F) -> (F::Output, Vec<&'static str>) {
    DEFERRED_WAKES
        .scope(Default::default(), async {
            let out = f.await;
            (out, DEFERRED_WAKES.with(|w| w.take()))
        })
        .await
}

/// Whether the caller runs inside a handler of the job runtime (see [`deferring_wakes`]).
fn deferring() -> bool {
    DEFERRED_WAKES.try_with(|_| ()).is_ok()
}

/// How an enqueue into `queue` wakes the workers: after the handler it runs in, if any, else at
/// the caller's commit.
fn wake_for(queue: &'static str) -> Wake {
    match DEFERRED_WAKES.try_with(|w| w.borrow_mut().push(queue)) {
        Ok(()) => Wake::AfterCommit,
        Err(_) => Wake::AtCommit,
    }
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
            JOIN jobs j ON j.id = r.job_id
            WHERE r.queue = $1 AND r.dedupe_key = $2 AND j.state IN ('pending', 'retrying')
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

    Ok(Enqueued::New(insert_one(conn, job, run_at).await?))
}

/// Writes `job` through [`insert`], woken as [`wake_for`] says; returns its new id.
async fn insert_one<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    run_at: Option<chrono::DateTime<chrono::Utc>>,
) -> sqlx::Result<String> {
    let new = NewJob::of(job, run_at)?;
    insert(&mut *conn, std::slice::from_ref(&new), wake_for(J::QUEUE)).await?;
    Ok(new.id)
}

/// A job ready to be written: what [`insert`] takes.
/// Serialized as `granary_insert_jobs` reads it (the links flattened into the job).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewJob {
    /// Its id: a ULID, so ids sort by creation time.
    pub id: String,
    /// Its queue (its kind).
    pub queue: &'static str,
    /// The payload.
    pub args: serde_json::Value,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Not before (None: now).
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Its dedupe key.
    pub dedupe_key: Option<String>,
    /// The rows it works for.
    #[serde(flatten)]
    pub refs: super::JobRefs,
}

impl NewJob {
    /// `job`, with a fresh id.
    pub fn of<J: Job>(
        job: &J,
        run_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> sqlx::Result<Self> {
        Ok(Self {
            id: ulid::Ulid::new().to_string(),
            queue: J::QUEUE,
            args: serde_json::to_value(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            max_attempts: J::MAX_ATTEMPTS,
            run_at,
            dedupe_key: job.dedupe_key(),
            refs: job.refs(),
        })
    }
}

/// When [`insert`] wakes the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A NOTIFY in the caller's transaction, delivered at its commit (one per statement).
    AtCommit,
    /// None: the caller sends [`notify`] after its commit, keeping the notification's lock out
    /// of that commit (PostgreSQL serialises commits that notify).
    AfterCommit,
}

/// A job for a statement of the caller's own to write, in the same round trip as the rows it
/// follows from (a payment and the order's fulfillment; an email row and its sending), by calling
/// `granary_insert_jobs(batch, notify)` where it writes them. Only for a job that cannot be
/// waiting already, so without [`enqueue`]'s dedupe check and its two round trips (the advisory
/// lock and the lookup): for a statement that creates the row the job works for (a new email's
/// `send_email`) or wins the guarded update that asks for it (the order that becomes paid), which
/// only one transaction can ever do. The dedupe key is still recorded, so a later [`enqueue`] of
/// the same job finds this one. When the statement wrote the job, the caller calls
/// [`Prepared::written`], which wakes the workers as [`insert`] would.
#[derive(Debug, Clone)]
pub struct Prepared {
    job: NewJob,
    notify: bool,
}

impl Prepared {
    /// `job`, with a fresh id, to run now.
    pub fn of<J: Job>(job: &J) -> sqlx::Result<Self> {
        Ok(Self {
            job: NewJob::of(job, None)?,
            notify: !deferring(),
        })
    }

    /// `granary_insert_jobs`'s first argument.
    pub fn batch(&self) -> Json<&[NewJob]> {
        Json(std::slice::from_ref(&self.job))
    }

    /// `granary_insert_jobs`'s second: NOTIFY at commit (outside the job runtime's handlers).
    pub fn notify(&self) -> bool {
        self.notify
    }

    /// The statement wrote the job: in a handler, its queue is woken when the handler returns.
    pub fn written(&self) {
        if !self.notify {
            let _ = DEFERRED_WAKES.try_with(|w| w.borrow_mut().push(self.job.queue));
        }
    }
}

/// The one place jobs are written from Rust: `jobs` with their links, through the database's
/// `granary_insert_jobs` (migration `20261202000004`), in one statement; no dedupe check (that
/// is [`enqueue`]'s). Every enqueue path, single or batched, goes through here or, for a
/// statement that writes its job itself, through [`Prepared`].
pub async fn insert(conn: &mut PgConnection, jobs: &[NewJob], wake: Wake) -> sqlx::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    sqlx::query_scalar!(
        r#"SELECT granary_insert_jobs($1, $2) AS "n!""#,
        Json(jobs) as _,
        wake == Wake::AtCommit,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(())
}

/// Sends the wake-ups of commits made with [`Wake::AfterCommit`], off the committers' path: one
/// task sends one NOTIFY at a time, for every queue woken while the previous one was in flight.
///
/// Ingest used to spawn a task per commit for its NOTIFY. PostgreSQL serialises committing
/// transactions that notify, so under load those tasks could queue on that lock while each held
/// a pool connection, up to the whole pool. Here there is one, and the NOTIFYs are coalesced.
#[derive(Clone)]
pub struct Notifier {
    tx: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

impl Notifier {
    /// Starts the sending task on `pool`. It stops at `stop`, or when every clone is dropped.
    pub fn spawn(pool: sqlx::PgPool, stop: tokio_util::sync::CancellationToken) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        tokio::spawn(async move {
            let mut queues = Vec::new();
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut queues, 256) => if n == 0 { return },
                    () = stop.cancelled() => return,
                }
                queues.sort_unstable();
                queues.dedup();
                if let Err(e) = notify(&pool, &queues).await {
                    tracing::debug!(error = %e, "NOTIFY failed; workers find the jobs at their poll");
                }
                queues.clear();
            }
        });
        Self { tx }
    }

    /// Wakes `queue`'s workers in every process, soon. A lost wake-up costs only the workers'
    /// poll interval.
    pub fn wake(&self, queue: &'static str) {
        let _ = self.tx.send(queue);
    }
}

/// Wakes the workers of `queues` (after a commit that wrote their jobs with
/// [`Wake::AfterCommit`]).
pub async fn notify(db: impl sqlx::PgExecutor<'_>, queues: &[&str]) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT pg_notify('granary_jobs', q) FROM unnest($1::text[]) AS q",
        queues as &[&str]
    )
    .fetch_all(db)
    .await?;
    Ok(())
}
