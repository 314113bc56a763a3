//! How the runtime runs: concurrency, time limits, heartbeats and the rescue bound, polling,
//! backoff and retention. The application reads these from its configuration.

use std::{collections::HashMap, time::Duration};

/// Job runtime settings (docs/queue.md; the variables are in docs/configuration.md).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Handlers running at once per queue, unless overridden in `per_queue_concurrency`.
    pub concurrency: usize,
    /// `WORKER_CONCURRENCY=send_email=4,fulfill_order=8`.
    pub per_queue_concurrency: HashMap<String, usize>,
    /// An attempt's time limit per queue, over the kind's own (`Job::TIMEOUT`):
    /// `JOB_TIMEOUT_SECONDS=finalize_asset=1800,send_email=30`.
    pub per_queue_timeout: HashMap<String, Duration>,
    /// How often a worker proves it is alive.
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which a worker is dead and its jobs are rescued.
    pub missed_heartbeats: usize,
    /// Poll interval for delayed, retried and requeued jobs (new jobs wake workers at once
    /// through LISTEN/NOTIFY).
    pub poll_interval: Duration,
    /// Jobs claimed per fetch.
    pub batch_size: usize,
    /// First retry delay; doubles per attempt (see [`crate::backoff`]).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// Completed jobs older than this are pruned; failed ones are kept.
    pub retention: Duration,
    /// A handler may complete its own job in its last commit
    /// ([`crate::commit_completing`]); off, every outcome goes through the completer.
    pub complete_in_commit: bool,
}

impl Settings {
    /// Concurrency for one queue.
    pub fn concurrency_for(&self, queue: &str) -> usize {
        self.per_queue_concurrency
            .get(queue)
            .copied()
            .unwrap_or(self.concurrency)
    }

    /// The bound within which a dead worker's jobs are picked up again.
    pub fn rescue_bound(&self) -> Duration {
        self.heartbeat_interval * (self.missed_heartbeats as u32 + 1)
    }
}
