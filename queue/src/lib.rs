//! The durable job runtime: apalis's workers over Granary's own backend and tables (see
//! docs/queue.md): enqueue in the caller's transaction with dedupe that never aborts it,
//! persisted backoff, permanent failures, per-attempt history, crash rescue with unique worker
//! ids, LISTEN/NOTIFY pickup plus a poll, operator requeue/cancel, and retention.
//!
//! It knows no job of Granary's: the application registers its kinds ([`Registry`]), hands its
//! configuration to them through [`JobContext`], and audits the operator's actions around
//! [`ops`] in the same transaction.

pub mod backend;
pub mod backoff;
pub mod completion;
pub mod enqueue;
pub mod error;
pub mod metrics;
pub mod ops;
pub mod persist;
pub mod probe;
pub mod registry;
pub mod runtime;
pub mod settings;
pub mod state;
pub mod stats;

use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

pub use completion::commit_completing;
pub use enqueue::{Enqueued, NewJob, Prepared, Wake, enqueue};
pub use error::JobError;
pub use registry::{JobContext, Registry};
pub use settings::Settings;
pub use state::{AttemptOutcome, JobState};

/// A typed job payload. Each kind has its own named queue (never the Rust type name, which
/// would silently orphan stored jobs on a rename).
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The queue (and job kind) name stored in `jobs.queue`.
    const QUEUE: &'static str;
    /// Attempts before the job is left failed for an operator.
    const MAX_ATTEMPTS: i32 = 20;
    /// How long one attempt may run. Past it the attempt fails with "timed out after N s" and
    /// the job retries: a handler stuck on a peer that never answers cannot hold a worker slot
    /// (and its job) forever.
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

    /// Jobs with the same key on the same queue are one logical job: enqueueing it again while
    /// one is waiting to run yields the waiting one.
    fn dedupe_key(&self) -> Option<String> {
        None
    }

    /// The business rows this job works for (order timeline, requeue by order).
    fn refs(&self) -> JobRefs {
        JobRefs::default()
    }
}

/// Links from a job to the rows it works for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobRefs {
    /// The order.
    pub order_id: Option<Uuid>,
    /// The stored webhook event.
    pub webhook_event_id: Option<Uuid>,
    /// The digital asset.
    pub asset_id: Option<Uuid>,
    /// The email row.
    pub email_id: Option<Uuid>,
    /// The Clerk user.
    pub clerk_user_id: Option<String>,
}

impl JobRefs {
    /// Writes these ids into `span`'s fields of the same names (`event_id` is the stored
    /// webhook row; the provider's own id is `provider_event_id`).
    pub fn record_on(&self, span: &tracing::Span) {
        let ids = [
            ("order_id", self.order_id),
            ("event_id", self.webhook_event_id),
            ("asset_id", self.asset_id),
            ("email_id", self.email_id),
        ];
        for (field, id) in ids {
            if let Some(id) = id {
                span.record(field, tracing::field::display(id));
            }
        }
        if let Some(user) = &self.clerk_user_id {
            span.record("clerk_user_id", user.as_str());
        }
    }
}
