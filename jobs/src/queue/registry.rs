//! Which handler runs which queue.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

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

type TickFuture = Pin<Box<dyn Future<Output = sqlx::Result<()>> + Send>>;

/// Something the runtime does on a schedule (queueing a periodic job, typically).
#[derive(Clone)]
pub(crate) struct Periodic {
    pub(crate) name: &'static str,
    /// How often, from the configuration; None: never.
    pub(crate) every: fn(&Config) -> Option<Duration>,
    pub(crate) tick: Arc<dyn Fn(PgPool, Arc<Config>) -> TickFuture + Send + Sync>,
}

/// The set of job kinds a worker runs, and what it does on a schedule.
#[derive(Clone, Default)]
pub struct Registry {
    pub(crate) handlers: BTreeMap<&'static str, Handler>,
    pub(crate) periodic: Vec<Periodic>,
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
                    Box::pin(async move {
                        job.refs().record_on(&tracing::Span::current());
                        let limit = ctx
                            .config
                            .worker
                            .per_queue_timeout
                            .get(J::QUEUE)
                            .copied()
                            .unwrap_or(J::TIMEOUT);
                        match tokio::time::timeout(limit, handler(ctx, job)).await {
                            Ok(done) => done,
                            Err(_) => Err(JobError::Retry(anyhow::anyhow!(
                                "timed out after {} s",
                                limit.as_secs()
                            ))),
                        }
                    })
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

    /// Runs `tick` every `every(config)` while the runtime runs (first after one interval).
    /// Several workers may tick at once: `tick` must be safe to repeat (a deduplicated enqueue).
    pub fn every<F, Fut>(
        mut self,
        name: &'static str,
        every: fn(&Config) -> Option<Duration>,
        tick: F,
    ) -> Self
    where
        F: Fn(PgPool, Arc<Config>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = sqlx::Result<()>> + Send + 'static,
    {
        self.periodic.push(Periodic {
            name,
            every,
            tick: Arc::new(move |pool, config| Box::pin(tick(pool, config))),
        });
        self
    }

    /// Connections the runtime holds for as long as it runs: one LISTEN for the process. A
    /// pool shared with the runtime needs this many on top of what the work itself uses.
    pub fn held_connections(&self) -> u32 {
        1
    }

    /// The queues this registry serves.
    pub fn queues(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }
}
