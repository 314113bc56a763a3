//! How a job handler says what went wrong, and so what happens next.

use std::time::Duration;

/// A failed attempt. The variant decides the job's fate; the error keeps its cause chain, which
/// `job_attempts.error` records in full.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Transient: retry after the backoff (database hiccup, provider 5xx, network).
    #[error("{0:#}")]
    Retry(anyhow::Error),
    /// Transient with a delay the other side asked for (a 429's Retry-After).
    #[error("{1:#} (retry after {0:?})")]
    RetryAfter(Duration, anyhow::Error),
    /// Permanent: retrying cannot help (a 422 for an invalid address, an undecodable payload).
    /// The job stops at once and stays visible as failed with this reason.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl JobError {
    /// A permanent error from anything printable.
    pub fn permanent(err: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(err.into())
    }

    /// True when no retry should follow.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }
}

/// Any error is transient unless the handler says otherwise: a wrong "permanent" loses work,
/// a wrong "transient" only costs retries.
impl From<anyhow::Error> for JobError {
    fn from(err: anyhow::Error) -> Self {
        Self::Retry(err)
    }
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        Self::Retry(err.into())
    }
}
