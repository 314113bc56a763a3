//! The `probe` job: a canary that proves workers are alive end to end (`granary-worker probe`),
//! and the job kind the runtime's tests steer. It records every run; its effect is idempotent
//! by key, like every real job's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, JobRefs};

/// What the probe should do when it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Probe {
    /// Identifies the probe's runs and its one effect.
    pub key: String,
    /// Fail (transiently) on the first N attempts.
    #[serde(default)]
    pub fail_times: i32,
    /// Panic on the first N attempts.
    #[serde(default)]
    pub panic_times: i32,
    /// Fail permanently.
    #[serde(default)]
    pub permanent: bool,
    /// Ask to be retried after this many milliseconds (like a 429 with Retry-After).
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Sleep this long before applying the effect.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Hang (a peer that never answers) on the first N attempts.
    #[serde(default)]
    pub hang_times: i32,
    /// Dedupe key, if the probe should be deduplicated.
    #[serde(default)]
    pub dedupe: Option<String>,
    /// The order this probe is linked to (tests of requeue-by-order).
    #[serde(default)]
    pub order_id: Option<uuid::Uuid>,
    /// Write the effect in a transaction that also completes the job
    /// ([`crate::commit_completing`]). Its transient failures (`fail_times`) then come after
    /// the effect is written and before the commit: a handler that fails once it has begun.
    #[serde(default)]
    pub complete_in_commit: bool,
}

impl Job for Probe {
    const QUEUE: &'static str = "probe";
    const MAX_ATTEMPTS: i32 = 5;

    fn dedupe_key(&self) -> Option<String> {
        self.dedupe.clone()
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            order_id: self.order_id,
            ..JobRefs::default()
        }
    }
}

/// Runs a probe.
pub async fn handle<S>(ctx: JobContext<S>, probe: Probe) -> Result<(), JobError> {
    sqlx::query!(
        "INSERT INTO job_probe_runs (job_id, probe_key, attempt, worker_id) VALUES ($1, $2, $3, $4)",
        ctx.job_id,
        probe.key,
        ctx.attempt,
        ctx.worker_id
    )
    .execute(&ctx.pool)
    .await?;
    if ctx.attempt <= probe.panic_times {
        panic!(
            "probe {} told to panic on attempt {}",
            probe.key, ctx.attempt
        );
    }
    if probe.permanent {
        return Err(JobError::permanent(anyhow::anyhow!(
            "probe {} told to fail permanently",
            probe.key
        )));
    }
    if probe.complete_in_commit {
        return effect_completing(&ctx, &probe).await;
    }
    if ctx.attempt <= probe.fail_times {
        let err = anyhow::anyhow!("simulated outage").context(format!(
            "probe {} told to fail on attempt {}",
            probe.key, ctx.attempt
        ));
        return Err(told_to_fail(&probe, err));
    }
    if ctx.attempt <= probe.hang_times {
        std::future::pending::<()>().await;
    }
    sleep_then_write_effect(&ctx.pool, &probe, &ctx.job_id).await?;
    Ok(())
}

/// The probe's effect: its sleep, then its row, written once whatever the runs.
async fn sleep_then_write_effect<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    probe: &Probe,
    job_id: &str,
) -> sqlx::Result<()> {
    if probe.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(probe.sleep_ms)).await;
    }
    sqlx::query!(
        "INSERT INTO job_probe_effects (probe_key, job_id) VALUES ($1, $2) ON CONFLICT (probe_key) DO NOTHING",
        probe.key,
        job_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn told_to_fail(probe: &Probe, err: anyhow::Error) -> JobError {
    match probe.retry_after_ms {
        Some(ms) => JobError::RetryAfter(Duration::from_millis(ms), err),
        None => JobError::Retry(err),
    }
}

/// The effect in the transaction that completes the job: slept, written, then (on the first
/// `fail_times` attempts) failed before the commit, else committed with the job's completion.
async fn effect_completing<S>(ctx: &JobContext<S>, probe: &Probe) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    sleep_then_write_effect(&mut *tx, probe, &ctx.job_id).await?;
    if ctx.attempt <= probe.fail_times {
        let err = anyhow::anyhow!("simulated outage").context(format!(
            "probe {} told to fail on attempt {}, its effect written and not committed",
            probe.key, ctx.attempt
        ));
        return Err(told_to_fail(probe, err));
    }
    crate::commit_completing(tx).await?;
    Ok(())
}
