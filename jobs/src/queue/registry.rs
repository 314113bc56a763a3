//! Which handler runs which queue.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use sqlx::PgPool;

use super::{Job, JobError};
use crate::Config;

/// What a handler gets besides its payload.
#[derive(Clone)]
pub struct JobContext {
    /// Database pool.
    pub pool: PgPool,
    /// Configuration.
    pub config: Arc<Config>,
    /// This job's id.
    pub job_id: String,
    /// This job's queue.
    pub queue: &'static str,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// The worker running it.
    pub worker_id: String,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(JobContext, serde_json::Value) -> BoxFuture + Send + Sync>;

/// The set of job kinds a worker runs.
#[derive(Clone, Default)]
pub struct Registry {
    pub(crate) handlers: BTreeMap<&'static str, Handler>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `handler` for jobs of kind `J`. A payload that does not decode as `J` is a permanent
    /// failure: no retry can fix it.
    pub fn register<J, F, Fut>(mut self, handler: F) -> Self
    where
        J: Job,
        F: Fn(JobContext, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.handlers.insert(
            J::QUEUE,
            Arc::new(move |ctx, value| match serde_json::from_value::<J>(value) {
                Ok(job) => {
                    let handler = handler.clone();
                    Box::pin(async move { handler(ctx, job).await })
                }
                Err(e) => Box::pin(async move {
                    Err(JobError::permanent(anyhow::Error::new(e).context(format!(
                        "the payload is not a valid {} job",
                        J::QUEUE
                    ))))
                }),
            }),
        );
        self
    }

    /// The queues this registry serves.
    pub fn queues(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }
}
