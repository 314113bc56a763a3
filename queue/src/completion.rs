//! Transactional completion: a handler whose last act is a database commit completes its own
//! job in that commit, instead of handing the outcome to the completer for a later one.
//!
//! The job's row (`completed`, unlocked), its attempt's finish (`succeeded`) and whatever the
//! handler enqueued then land in one commit, so a job costs its handler's commit and nothing
//! more. The write is the completer's own statement (`backend::complete`) for one outcome, so
//! it is guarded as the completer's is: only while this worker still holds this attempt. What
//! each fault leaves:
//! - **killed after the commit**, before the runtime's own bookkeeping: the job is completed, so
//!   the rescue (which takes only `running` jobs) leaves it alone; nothing runs twice;
//! - **rescued meanwhile** (the worker looked dead): the guard matches no row, the commit still
//!   carries the handler's idempotent work, the job is not marked here, and the runtime hands
//!   the outcome to the completer, whose guard matches no row either: the rescue stands, exactly
//!   as on the completer's path;
//! - **the handler fails before its commit**: the completion rolls back with the rest, and the
//!   runtime writes the retry as for any failure;
//! - **the commit's answer is lost** (a broken connection): the handler returns the error and
//!   the runtime hands a retry to the completer. Had the commit landed, the job is no longer
//!   locked by this worker and the retry changes nothing; had it not, the retry is written.
//!
//! Handlers that call out to a provider (Resend, Stripe, storage) keep the completer's path:
//! their last act is the call, and its effect cannot be rolled back with a transaction.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use sqlx::{PgConnection, Postgres, Transaction};

use crate::{
    backend::{self, Outcome},
    state::AttemptOutcome,
};

/// The attempt a handler runs, as the runtime sets it around the handler.
#[derive(Debug)]
pub(crate) struct Attempt {
    id: String,
    attempt: i32,
    worker: String,
    /// Set once a commit completed the job.
    done: AtomicBool,
}

impl Attempt {
    pub(crate) fn new(id: String, attempt: i32, worker: String) -> Arc<Self> {
        Arc::new(Self {
            id,
            attempt,
            worker,
            done: AtomicBool::new(false),
        })
    }

    /// Whether the handler's commit completed the job.
    pub(crate) fn completed(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

tokio::task_local! {
    static CURRENT: Arc<Attempt>;
}

/// Runs `f` (a handler) with `attempt` as the one its [`commit_completing`] completes.
pub(crate) async fn scope<F: std::future::Future>(attempt: Arc<Attempt>, f: F) -> F::Output {
    CURRENT.scope(attempt, f).await
}

/// Commits `tx` as the handler's last act, completing the handler's job in the same commit.
/// Outside the job runtime (a handler called directly, by a test or a CLI), it only commits.
///
/// Call it only as the last thing the handler does before it returns `Ok`: once it returns, the
/// job is done whatever the handler does next (an error after it is logged, not retried).
pub async fn commit_completing(mut tx: Transaction<'_, Postgres>) -> sqlx::Result<()> {
    let current = CURRENT.try_with(Arc::clone).ok();
    let completed = match &current {
        Some(a) => complete_in(&mut tx, &a.id, a.attempt, &a.worker).await?,
        None => false,
    };
    tx.commit().await?;
    if let (Some(a), true) = (current, completed) {
        a.done.store(true, Ordering::Release);
    }
    Ok(())
}

/// Marks attempt `attempt` of job `id` succeeded and the job completed, in the caller's
/// transaction, if `worker` still holds that attempt: the completer's own guarded write
/// ([`backend::complete`]), for one outcome. True when it did.
pub async fn complete_in(
    conn: &mut PgConnection,
    id: &str,
    attempt: i32,
    worker: &str,
) -> sqlx::Result<bool> {
    let succeeded = Outcome {
        id: id.to_owned(),
        attempt,
        worker: worker.to_owned(),
        outcome: AttemptOutcome::Succeeded.as_str(),
        error: None,
        retry_at: None,
        finished_at: chrono::Utc::now(),
    };
    Ok(backend::complete(conn, std::slice::from_ref(&succeeded)).await? == 1)
}
