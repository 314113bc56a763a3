//! Which handler runs which queue.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use sqlx::PgPool;

use super::{Job, JobError};

/// What a handler gets besides its payload. `S` is the application's configuration, handed to
/// every handler as is.
pub struct JobContext<S> {
    /// Database pool.
    pub pool: PgPool,
    /// The application's configuration.
    pub config: Arc<S>,
    /// This job's id.
    pub job_id: String,
    /// This job's queue.
    pub queue: &'static str,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// The worker running it.
    pub worker_id: String,
}

// Not derived: a derive would require `S: Clone`, and only the `Arc` is cloned.
impl<S> Clone for JobContext<S> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
            job_id: self.job_id.clone(),
            queue: self.queue,
            attempt: self.attempt,
            worker_id: self.worker_id.clone(),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;
/// A registered handler: the context, the payload, and the attempt's time limit.
pub(crate) type Handler<S> =
    Arc<dyn Fn(JobContext<S>, serde_json::Value, Duration) -> BoxFuture + Send + Sync>;

type TickFuture = Pin<Box<dyn Future<Output = sqlx::Result<()>> + Send>>;

/// Something the runtime does on a schedule (queueing a periodic job, typically).
pub(crate) struct Periodic<S> {
    pub(crate) name: &'static str,
    /// How often, from the configuration; None: never.
    pub(crate) every: fn(&S) -> Option<Duration>,
    pub(crate) tick: Arc<dyn Fn(PgPool, Arc<S>) -> TickFuture + Send + Sync>,
}

/// One job kind: its handler and its own time limit (`Job::TIMEOUT`).
pub(crate) struct Kind<S> {
    pub(crate) handler: Handler<S>,
    pub(crate) timeout: Duration,
}

/// The set of job kinds a worker runs, and what it does on a schedule.
pub struct Registry<S> {
    pub(crate) kinds: BTreeMap<&'static str, Kind<S>>,
    pub(crate) periodic: Vec<Periodic<S>>,
}

impl<S> Default for Registry<S> {
    fn default() -> Self {
        Self {
            kinds: BTreeMap::new(),
            periodic: Vec::new(),
        }
    }
}

impl<S: Send + Sync + 'static> Registry<S> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `handler` for jobs of kind `J`. A payload that does not decode as `J` is a permanent
    /// failure: no retry can fix it.
    pub fn register<J, F, Fut>(mut self, handler: F) -> Self
    where
        J: Job,
        F: Fn(JobContext<S>, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let handler: Handler<S> =
            Arc::new(
                move |ctx, value, limit| match serde_json::from_value::<J>(value) {
                    Ok(job) => {
                        let handler = handler.clone();
                        Box::pin(async move {
                            job.refs().record_on(&tracing::Span::current());
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
                },
            );
        self.kinds.insert(
            J::QUEUE,
            Kind {
                handler,
                timeout: J::TIMEOUT,
            },
        );
        self
    }

    /// Runs `tick` every `every(config)` while the runtime runs (first after one interval).
    /// Several workers may tick at once: `tick` must be safe to repeat (a deduplicated enqueue).
    pub fn every<F, Fut>(
        mut self,
        name: &'static str,
        every: fn(&S) -> Option<Duration>,
        tick: F,
    ) -> Self
    where
        F: Fn(PgPool, Arc<S>) -> Fut + Send + Sync + 'static,
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
        self.kinds.keys().copied().collect()
    }
}
