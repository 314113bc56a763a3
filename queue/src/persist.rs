//! Bookkeeping that outlives a database outage: claims, heartbeats and outcome writes retry
//! while PostgreSQL is unreachable (a restart, a failover), instead of giving up on the job.

use std::{future::Future, time::Duration};

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
pub(crate) async fn persist<T, F, Fut>(what: &str, mut write: F) -> sqlx::Result<T>
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
