//! The runtime's two state machines, each spelled once: a job's state (`jobs.state`, CHECK
//! `jobs_state_check`) and how one attempt ended (`job_attempts.outcome`, CHECK
//! `job_attempts_outcome_check`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A job's state. `pending` → `running` → `completed`, or `retrying` (back to `running` when
/// due) or `failed` (out of attempts, or a permanent error); `cancelled` by an operator.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Due at `run_at`, never run (or handed back).
    Pending,
    /// Failed an attempt; runs again at `run_at`.
    Retrying,
    /// Claimed by a worker.
    Running,
    /// Out of attempts or failed permanently: waits for an operator.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
    /// Done.
    Completed,
}

impl JobState {
    /// Every state, in the order an operator reads them: the five they watch, then `completed`.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Retrying,
        Self::Running,
        Self::Failed,
        Self::Cancelled,
        Self::Completed,
    ];

    /// The states an operator watches (every one but `completed`).
    pub const WATCHED: [Self; 5] = [
        Self::Pending,
        Self::Retrying,
        Self::Running,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
        }
    }

    /// The state spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Waiting to run: `pending` or `retrying`.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Pending | Self::Retrying)
    }

    /// Left for an operator: `failed` or `cancelled`.
    pub fn is_stopped(self) -> bool {
        matches!(self, Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Still running (the attempt row is written at the claim).
    Running,
    /// The handler returned Ok.
    Succeeded,
    /// It failed and will run again.
    Retry,
    /// It failed with no attempt left.
    Failed,
    /// It failed permanently: no retry can fix it.
    Discarded,
    /// The handler panicked (retried like an error).
    Panicked,
    /// The worker shut down or died before it finished.
    Abandoned,
}

impl AttemptOutcome {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Discarded => "discarded",
            Self::Panicked => "panicked",
            Self::Abandoned => "abandoned",
        }
    }

    /// Whether the job ends with this attempt, whatever attempts it has left.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Discarded)
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
