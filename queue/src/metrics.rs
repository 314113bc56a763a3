//! What the runtime records through the `metrics` facade; the application installs the
//! recorder and exports it.
//!
//! - `granary_jobs_total{queue,kind,outcome}`: attempts by how they ended (succeeded, retry,
//!   failed, discarded, panicked);
//! - `granary_job_duration_seconds{queue}`: how long a handler ran;
//! - `granary_job_queue_latency_seconds{queue}`: from when a job was due to when it started.

use std::time::Duration;

use crate::state::AttemptOutcome;

/// The series' names, for the recorder's bucket settings.
pub const JOB_DURATION: &str = "granary_job_duration_seconds";
/// See [`JOB_DURATION`].
pub const JOB_QUEUE_LATENCY: &str = "granary_job_queue_latency_seconds";

/// One job attempt ended.
pub fn job_finished(
    queue: &'static str,
    outcome: AttemptOutcome,
    ran: Duration,
    latency: Duration,
) {
    let outcome = outcome.as_str();
    metrics::counter!("granary_jobs_total", "queue" => queue, "kind" => queue, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(JOB_DURATION, "queue" => queue).record(ran);
    metrics::histogram!(JOB_QUEUE_LATENCY, "queue" => queue).record(latency);
}
