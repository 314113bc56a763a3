//! Peers for the bench's no-op job throughput: other PostgreSQL job queues measured the same way
//! as Granary's `throughput` (N no-op jobs become visible at one commit to workers that are up
//! and idle; jobs/s from that commit until every job is done), in the same run, on the same
//! server, each in a fresh database of its own.
//!
//! How "done" is detected: every 5 ms the bench checks; it asks the peer's own table only once
//! its handlers have run all N jobs (an in-process counter, so no query scans the peer's table
//! while it works: neither peer has an index that answers "anything left?" cheaply, and a scan
//! of 20,000 rows every 5 ms would take CPU from the peer on a 2-core machine). The figure
//! therefore includes writing the last completions.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use apalis::prelude::{
    BackendExt as _, BoxDynError, Data, TaskBuilder, WorkerBuilder, WorkerBuilderExt as _,
    WorkerContext,
};
use apalis_postgres::{Config as ApalisConfig, PgTask, PostgresStorage};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

use crate::TestDb;

/// The no-op job's arguments: the same JSON body as the bench's Granary no-op job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noop {
    sent_at_micros: i64,
}

const APALIS_QUEUE: &str = "bench_noop";

/// apalis-postgres 1.0's no-op throughput over `n` jobs, in jobs/s.
///
/// Configured like Granary's measured runtime, knob for knob: one worker, `concurrency(10)`
/// (apalis's own concurrency layer, the one Granary's runtime uses too), `Config::batch_size(100)`
/// (how many jobs one `get_jobs` call claims: apalis-postgres's fetch/buffer size, default 10),
/// woken by `LISTEN/NOTIFY` (`with_pubsub()`, which the crate's README advises for prompt
/// pickup) with a 1 s poll as the fallback (`poll_with_interval`, Granary's poll interval).
/// Everything else is apalis-postgres's default: locking each task as it starts
/// (`lock_tasks`) and persisting results (`persist_results`, the only way a job is marked
/// `Done`), both written in batches by its persistence layer. The schema is its own
/// (`PostgresStorage::setup`, all its migrations) in an empty database; the `n` jobs go in
/// with its batch insert (`queries::push_tasks`: one `INSERT … SELECT unnest(…)`) in one
/// transaction, and the clock starts at that transaction's commit, as for Granary.
pub async fn apalis_postgres_noop(n: usize) -> anyhow::Result<f64> {
    let db = TestDb::empty().await;
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect(&db.url)
        .await
        .context("connect")?;
    PostgresStorage::setup(&pool)
        .await
        .context("apalis-postgres migrations")?;
    let config = ApalisConfig::default().queue(APALIS_QUEUE).batch_size(100);
    let backend = PostgresStorage::<Noop>::new(&pool)
        .with_config(config)
        .with_pubsub()
        .poll_with_interval(Duration::from_secs(1));
    let done = Arc::new(AtomicUsize::new(0));
    async fn noop(_job: Noop, done: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
        done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    let ctx = WorkerContext::new("bench-apalis-postgres");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend)
        .concurrency(10)
        .data(done.clone())
        .build(noop);
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        worker.run_until(async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        })
    });
    // The worker is up and idle first (registered, listening), as Granary's runtime is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = serde_json::to_vec(&Noop { sent_at_micros: 0 })?;
    let tasks: Vec<PgTask> = (0..n)
        .map(|_| TaskBuilder::new(body.clone()).build())
        .collect();
    let mut tx = pool.begin().await?;
    apalis_postgres::queries::push_tasks(&mut *tx, APALIS_QUEUE, tasks)
        .await
        .context("push the jobs")?;
    let started = Instant::now();
    tx.commit().await?;
    let deadline = started + Duration::from_secs(600);
    loop {
        anyhow::ensure!(
            !running.is_finished(),
            "the apalis worker stopped: {:?}",
            running.await
        );
        if done.load(Ordering::Relaxed) >= n {
            let left: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM apalis.jobs WHERE job_type = $1 AND status <> 'Done')",
            )
            .bind(APALIS_QUEUE)
            .fetch_one(&pool)
            .await?;
            if !left {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "apalis-postgres did not finish {n} jobs in 10 minutes ({} run)",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    pool.close().await;
    Ok(n as f64 / secs)
}

/// The graphile-worker release measured: the newest that runs on Node 20 (0.18 asks for Node
/// 22.18). 0.17 is the release that brought the local queue and batched completion, the
/// settings its performance page tunes (0.16 has neither).
pub const GRAPHILE_VERSION: &str = "0.17.3";

/// How graphile-worker runs: `processes` worker processes (each one `run()` instance), each with
/// `concurrentJobs = concurrency`, against the same database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphileConfig {
    /// Worker processes (`node`, one `run()` each).
    pub processes: usize,
    /// `concurrentJobs` of each.
    pub concurrency: usize,
    /// `localQueue.size` (None: off, graphile's default).
    pub local_queue: Option<usize>,
    /// `localQueue.refetchDelay.durationMs` (None: unset).
    pub refetch_delay_ms: Option<u64>,
    /// `completeJobBatchDelay` in ms (None: off, graphile's default).
    pub complete_batch_delay_ms: Option<u64>,
    /// `failJobBatchDelay` in ms (None: off).
    pub fail_batch_delay_ms: Option<u64>,
    /// `pollInterval` in ms (graphile's default 2000; new jobs arrive by LISTEN/NOTIFY).
    pub poll_interval_ms: u64,
}

impl GraphileConfig {
    /// The tuned configuration (the best of those tried on this 2-core machine; see
    /// docs/performance.md): graphile's performance page's settings (`concurrentJobs: 24`,
    /// `localQueue: { size: 500 }`, `completeJobBatchDelay: 0`, `failJobBatchDelay: 0`),
    /// in 2 worker processes, one per core (Node runs one thread per process).
    pub fn tuned() -> Self {
        Self {
            processes: 2,
            concurrency: 24,
            local_queue: Some(500),
            refetch_delay_ms: None,
            complete_batch_delay_ms: Some(0),
            fail_batch_delay_ms: Some(0),
            poll_interval_ms: 2000,
        }
    }

    /// `BENCH_GRAPHILE` (for experiments) over [`Self::tuned`]: comma-separated `key=value`
    /// with keys `processes`, `concurrency`, `local_queue`, `refetch_delay`, `complete_delay`,
    /// `fail_delay`, `poll` (a value of `off` or `-1` turns an optional setting off).
    pub fn from_env() -> Result<Self, String> {
        let mut c = Self::tuned();
        let Ok(spec) = std::env::var("BENCH_GRAPHILE") else {
            return Ok(c);
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("BENCH_GRAPHILE: `{part}` is not key=value"))?;
            let opt = |v: &str| -> Result<Option<u64>, String> {
                if v == "off" || v == "-1" {
                    Ok(None)
                } else {
                    v.parse()
                        .map(Some)
                        .map_err(|e| format!("BENCH_GRAPHILE {k}: {e}"))
                }
            };
            let num = |v: &str| -> Result<u64, String> {
                v.parse().map_err(|e| format!("BENCH_GRAPHILE {k}: {e}"))
            };
            match k.trim() {
                "processes" => c.processes = num(v)? as usize,
                "concurrency" => c.concurrency = num(v)? as usize,
                "local_queue" => c.local_queue = opt(v)?.map(|s| s as usize),
                "refetch_delay" => c.refetch_delay_ms = opt(v)?,
                "complete_delay" => c.complete_batch_delay_ms = opt(v)?,
                "fail_delay" => c.fail_batch_delay_ms = opt(v)?,
                "poll" => c.poll_interval_ms = num(v)?,
                other => return Err(format!("BENCH_GRAPHILE: unknown key `{other}`")),
            }
        }
        Ok(c)
    }

    /// In words, for the bench's table.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} process(es) × concurrentJobs {}",
            self.processes, self.concurrency
        );
        match self.local_queue {
            Some(size) => s.push_str(&format!(", localQueue {size}")),
            None => s.push_str(", no localQueue"),
        }
        if let Some(ms) = self.refetch_delay_ms {
            s.push_str(&format!(" (refetchDelay {ms} ms)"));
        }
        match self.complete_batch_delay_ms {
            Some(ms) => s.push_str(&format!(", completeJobBatchDelay {ms}")),
            None => s.push_str(", unbatched completion"),
        }
        if let Some(ms) = self.fail_batch_delay_ms {
            s.push_str(&format!(", failJobBatchDelay {ms}"));
        }
        if self.poll_interval_ms != 2000 {
            s.push_str(&format!(", pollInterval {} ms", self.poll_interval_ms));
        }
        s
    }

    fn to_json(&self, url: &str, n: usize) -> String {
        let ms = |v: Option<u64>| v.map_or(-1, |v| v as i64);
        serde_json::json!({
            "url": url,
            "n": n,
            "processes": self.processes,
            "concurrency": self.concurrency,
            "localQueue": self.local_queue.map_or(-1, |v| v as i64),
            "refetchDelayMs": ms(self.refetch_delay_ms),
            "completeDelay": ms(self.complete_batch_delay_ms),
            "failDelay": ms(self.fail_batch_delay_ms),
            "pollInterval": self.poll_interval_ms,
        })
        .to_string()
    }
}

/// The driver `node` runs: `node driver.js <config JSON>` migrates the empty database
/// (`runMigrations`), forks the worker processes (`driver.js <config> child`: one `run()` each,
/// a no-op `noop` task, no logging) and waits until every one is up, then adds the `n` jobs
/// with one `add_jobs` statement (a JSON array of job specs, as `workerUtils.addJobs` sends it)
/// in a transaction, starts the clock at its commit, and prints `jobs/s: <rate>` once the jobs
/// table is empty (graphile deletes a job when it completes). The children report how many
/// jobs their handlers ran every 5 ms over IPC; the table is asked only once all have run.
const GRAPHILE_DRIVER: &str = r#""use strict";
const { fork } = require("child_process");
const { run, runMigrations, Logger } = require("graphile-worker");
const { Client } = require("pg");

const cfg = JSON.parse(process.argv[2]);
const silent = new Logger(() => () => {});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function preset() {
  const worker = {
    connectionString: cfg.url,
    concurrentJobs: cfg.concurrency,
    // The docs' advice: 10 or concurrentJobs + 2, whichever is larger.
    maxPoolSize: Math.max(10, cfg.concurrency + 2),
    pollInterval: cfg.pollInterval,
  };
  if (cfg.localQueue > 0) {
    worker.localQueue = { size: cfg.localQueue };
    if (cfg.refetchDelayMs >= 0) worker.localQueue.refetchDelay = { durationMs: cfg.refetchDelayMs };
  }
  if (cfg.completeDelay >= 0) worker.completeJobBatchDelay = cfg.completeDelay;
  if (cfg.failDelay >= 0) worker.failJobBatchDelay = cfg.failDelay;
  return { worker };
}

async function child() {
  let done = 0;
  let sent = 0;
  const runner = await run({
    preset: preset(),
    logger: silent,
    noHandleSignals: true,
    taskList: {
      noop: async () => {
        done++;
      },
    },
  });
  const tick = setInterval(() => {
    if (done !== sent) {
      sent = done;
      process.send({ done });
    }
  }, 5);
  process.on("disconnect", () => process.exit(1));
  process.on("message", async (m) => {
    if (m === "stop") {
      clearInterval(tick);
      await runner.stop();
      process.exit(0);
    }
  });
  process.send({ ready: true });
}

async function main() {
  await runMigrations({ connectionString: cfg.url, logger: silent });
  const kids = [];
  const done = new Array(cfg.processes).fill(0);
  let ready = 0;
  let stopping = false;
  for (let i = 0; i < cfg.processes; i++) {
    const k = fork(__filename, [process.argv[2], "child"], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    k.on("message", (m) => {
      if (m.ready) ready++;
      if (m.done !== undefined) done[i] = m.done;
    });
    k.on("exit", (code) => {
      if (code !== 0 && !stopping) {
        console.error(`worker process ${i} exited with ${code}`);
        process.exit(1);
      }
    });
    kids.push(k);
  }
  const ready_by = Date.now() + 60000;
  while (ready < cfg.processes) {
    if (Date.now() > ready_by) throw new Error("the worker processes never became ready");
    await sleep(5);
  }
  // Up and idle first, as Granary's runtime is.
  await sleep(500);
  const db = new Client({ connectionString: cfg.url });
  await db.connect();
  const specs = JSON.stringify(
    Array.from({ length: cfg.n }, () => ({ identifier: "noop", payload: { sent_at_micros: 0 } })),
  );
  await db.query("begin");
  await db.query(
    "select count(*) from graphile_worker.add_jobs(array(select json_populate_recordset(null::graphile_worker.job_spec, $1::json)))",
    [specs],
  );
  const started = process.hrtime.bigint();
  await db.query("commit");
  const deadline = Date.now() + 600000;
  for (;;) {
    if (Date.now() > deadline) throw new Error("the jobs never finished");
    if (done.reduce((a, b) => a + b, 0) >= cfg.n) {
      const { rows } = await db.query(
        "select exists (select 1 from graphile_worker._private_jobs) as left",
      );
      if (!rows[0].left) break;
    }
    await sleep(5);
  }
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  stopping = true;
  await db.end();
  for (const k of kids) k.send("stop");
  await Promise.all(
    kids.map((k) => new Promise((r) => (k.exitCode !== null ? r() : k.on("exit", r)))),
  );
  console.log(`jobs/s: ${(cfg.n / secs).toFixed(1)}`);
}

(process.argv[3] === "child" ? child() : main()).catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
"#;

/// graphile-worker installed in a throwaway folder (removed on drop), ready to be measured.
#[derive(Debug)]
pub struct GraphileDriver {
    dir: PathBuf,
}

impl GraphileDriver {
    /// `npm install graphile-worker@GRAPHILE_VERSION pg@8` into a new folder under the temp dir
    /// and writes the driver there. Err("not run: no node") when `node` is absent.
    pub async fn install() -> Result<Self, String> {
        let has = |cmd: &'static str| async move {
            tokio::process::Command::new(cmd)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success())
        };
        if !has("node").await {
            return Err("not run: no node".into());
        }
        if !has("npm").await {
            return Err("not run: no npm".into());
        }
        let dir = std::env::temp_dir().join(format!(
            "granary-bench-graphile-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let driver = Self { dir };
        std::fs::write(
            driver.dir.join("package.json"),
            r#"{"name": "granary-bench-graphile", "private": true}"#,
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(driver.dir.join("driver.js"), GRAPHILE_DRIVER).map_err(|e| e.to_string())?;
        run_within(
            tokio::process::Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--no-progress",
                    "--loglevel=error",
                    &format!("graphile-worker@{GRAPHILE_VERSION}"),
                    "pg@8",
                ])
                .current_dir(&driver.dir),
            Duration::from_secs(600),
            "npm install",
        )
        .await?;
        Ok(driver)
    }

    /// One measurement: `n` no-op jobs under `config`, in a fresh empty database; jobs/s.
    pub async fn noop(&self, n: usize, config: &GraphileConfig) -> Result<f64, String> {
        let db = TestDb::empty().await;
        let out = run_within(
            tokio::process::Command::new("node")
                .arg("driver.js")
                .arg(config.to_json(&db.url, n))
                .current_dir(&self.dir),
            Duration::from_secs(900),
            "the graphile-worker driver",
        )
        .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("jobs/s: "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no jobs/s in the driver's output: {}", tail(&stdout)))
    }
}

impl Drop for GraphileDriver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` to its end within `limit` (killed past it); Err names `what` and carries the
/// last lines of its output when it fails.
async fn run_within(
    cmd: &mut tokio::process::Command,
    limit: Duration,
    what: &str,
) -> Result<std::process::Output, String> {
    let out = tokio::time::timeout(limit, cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| format!("{what} took over {} s", limit.as_secs()))?
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            tail(&String::from_utf8_lossy(&out.stdout)),
            tail(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(out)
}

/// The last 20 lines of `s`.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
