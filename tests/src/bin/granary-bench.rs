//! `cargo build --release --workspace --bins && target/release/granary-bench`: measures, in one run on this
//! machine's PostgreSQL, the ceiling (pgbench) and Granary (its release binaries), and writes a
//! markdown table to stdout and to `target/bench/latest.md` (docs/performance.md keeps the latest). Not a
//! test: nothing here asserts a timing.
//!
//! 1. ceiling: pgbench, one single-row insert of a webhook-sized body per transaction, at 1, 8
//!    and 32 clients;
//! 2. webhook ingest: signed Clerk deliveries (the same body) to the real `granary-api` at 1, 8
//!    and 32 concurrent connections over loopback, with the ratio to the ceiling;
//! 3. job runtime: the raw-SQL floor (pgbench: claim 10 + complete 10 per transaction, 10
//!    clients), no-op jobs/s at concurrency 10 as a ratio to it, and idle pickup latency;
//! 4. end to end: Stripe `checkout.session.completed` webhooks to `granary-api`, fulfilled by
//!    `granary-worker` (entitlement, grant, receipt) and the receipt delivered to the Resend
//!    stand-in: latency webhook-sent → email-received at a steady 50 orders/s, and the rate
//!    sustained through a burst;
//! 5. footprint: peak RSS of the api and the worker processes over the end-to-end run;
//! 6. console: the jobs page of `/console/` (whole HTTP answer, release api) over 1,000,000
//!    job rows: first page, deep keyset pages, filters, search, beside a primary-key lookup
//!    on the same table as the reference;
//! 7. history: no-op jobs/s, idle pickup and the claim statement's plan on an empty jobs table,
//!    then holding 1,000,000 and 5,000,000 finished jobs with their attempts and links, while
//!    retention prunes beside them (`BENCH_ONLY=history`);
//! 8. peers: apalis-postgres 1.0 and graphile-worker (installed with npm at run time, when
//!    `node` is present) on the same no-op workload, each run right after Granary's in the
//!    same shape (`BENCH_ONLY=peers`, `tests/src/peers.rs`).
//!
//! `BENCH_QUICK=1` shortens every phase (for a smoke run).

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use granary_jobs::{
    Config,
    queue::{Job, JobContext, JobError, NewJob, Registry, Wake, enqueue, enqueue::insert},
};
use granary_tests::{
    TestDb, base_env, db::server_options, free_port, resend::ResendStandIn, shop::Shop, sign,
    stripe::checkout_completed, wait_healthy, worker::WorkerProcess,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noop {
    sent_at_micros: i64,
}

impl Job for Noop {
    const QUEUE: &'static str = "bench_noop";
}

fn micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The median of repeated runs (the upper one of an even count), and the runs as the table
/// lists them, in the order given: `a / b / c`.
fn median_of(runs: &[f64]) -> (f64, String) {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let all: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
    (sorted[sorted.len() / 2], all.join(" / "))
}

/// Whether phase `name` (`ingest`, `jobs`, `e2e`) runs: all of them unless `BENCH_ONLY` lists
/// some (comma-separated).
fn phase(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p.trim() == name))
}

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

/// A Clerk `user.updated` delivery of realistic size (about 2 KB, like a real user object).
/// Written without `:` inside values so the same text can go into a pgbench script.
fn clerk_body() -> Vec<u8> {
    let addresses: Vec<_> = (0..3)
        .map(|i| serde_json::json!({
            "id": format!("idn_2bench{i}aaaaaaaaaaaaaaaaaaaa"), "object": "email_address",
            "email_address": format!("bench.user+{i}@example.com"), "linked_to": [],
            "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": 1_700_000_000_000_i64}
        }))
        .collect();
    let data = serde_json::json!({
            "id": "user_2benchaaaaaaaaaaaaaaaaaaaaa", "object": "user", "username": null,
            "first_name": "Bench", "last_name": "Marker", "image_url": "https.img.example/avatar.png",
            "has_image": false, "primary_email_address_id": "idn_2bench0aaaaaaaaaaaaaaaaaaaa",
            "primary_phone_number_id": null, "primary_web3_wallet_id": null,
            "password_enabled": false, "two_factor_enabled": false, "totp_enabled": false,
            "backup_code_enabled": false, "email_addresses": addresses, "phone_numbers": [],
            "web3_wallets": [], "passkeys": [], "external_accounts": [], "saml_accounts": [],
            "public_metadata": {"plan": "pro", "seats": 5, "features": ["downloads", "bookings", "priority_support"]},
            "private_metadata": {"crm_id": "crm_0000000000000000"},
            "unsafe_metadata": {"onboarded": true, "theme": "dark", "newsletter": false},
            "external_id": null, "last_sign_in_at": 1_700_000_000_000_i64, "banned": false,
            "locked": false, "lockout_expires_in_seconds": null, "verification_attempts_remaining": 100,
            "created_at": 1_690_000_000_000_i64, "updated_at": 1_700_000_000_000_i64,
            "delete_self_enabled": true, "create_organization_enabled": true,
            "last_active_at": 1_700_000_000_000_i64, "mfa_enabled_at": null, "mfa_disabled_at": null,
            "legal_accepted_at": null, "profile_image_url": "https.img.example/avatar.png"
    });
    let body = serde_json::json!({
        "type": "user.updated", "object": "event", "timestamp": 1_700_000_000_000_i64,
        "instance_id": "ins_2benchaaaaaaaaaaaaaaaaaaaaaa", "data": data,
        "event_attributes": {"http_request": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Bench/1.0"}}
    });
    serde_json::to_vec(&body).expect("json")
}

// ---------------------------------------------------------------------------------------------
// 1. The ceiling: pgbench.

/// pgbench's tps for a single-row insert of `body` (as the raw bytes of a stored delivery,
/// with a random event id) at `clients` clients for `secs` seconds.
fn pgbench(db: &TestDb, body: &[u8], clients: usize, secs: u64) -> f64 {
    let text = String::from_utf8(body.to_vec())
        .expect("utf8")
        .replace("\":", "\": ");
    assert!(!text.contains('\''), "the body must not contain quotes");
    let script = format!(
        "\\set id random(1, 1000000000)\nINSERT INTO bench_hooks (provider, event_id, body) VALUES ('clerk', 'msg_' || :id, convert_to('{text}', 'UTF8'));\n"
    );
    run_pgbench(db, &script, clients, &["-T", &secs.to_string()])
}

/// Runs a pgbench `script` on `db` at `clients` clients with `limit` (`-T secs` or `-t n`);
/// returns its tps.
fn run_pgbench(db: &TestDb, script: &str, clients: usize, limit: &[&str]) -> f64 {
    let dir = std::env::temp_dir().join(format!("granary-pgbench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("script.sql");
    std::fs::write(&file, script).expect("script");
    let opts = server_options();
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-h",
            opts.get_host(),
            "-p",
            &opts.get_port().to_string(),
            "-U",
            opts.get_username(),
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(limit)
        .arg("-f")
        .arg(&file)
        .arg(&db.name)
        .output()
        .expect("run pgbench (Debian package postgresql-client)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"))
}

/// The raw-SQL floor of a PostgreSQL job queue on this machine, in jobs/s: pgbench, 10 clients,
/// each transaction claiming 10 due jobs (`FOR UPDATE SKIP LOCKED`, in index order) and
/// completing them, on a bare table with the claim and running indexes. No runtime, no
/// handler, no history: what the SQL alone costs.
async fn raw_floor(per_client: usize) -> f64 {
    const CLIENTS: usize = 10;
    let db = TestDb::new().await;
    for sql in [
        "CREATE TABLE floor_jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, queue text NOT NULL, args jsonb NOT NULL, state text NOT NULL DEFAULT 'available', attempt integer NOT NULL DEFAULT 0, run_at timestamptz NOT NULL DEFAULT now(), locked_by text) WITH (fillfactor = 85)",
        "CREATE INDEX ON floor_jobs (queue, run_at, id) WHERE state = 'available'",
        "CREATE INDEX ON floor_jobs (locked_by) WHERE state = 'running'",
    ] {
        sqlx::query(sql)
            .execute(&db.pool)
            .await
            .expect("floor table");
    }
    // Enough for every client's transactions, with room to spare so none runs dry.
    let rows = (CLIENTS * per_client * 10 * 11 / 10) as i64;
    sqlx::query("INSERT INTO floor_jobs (queue, args) SELECT 'noop', '{\"sent_at_micros\": 0}' FROM generate_series(1, $1)")
        .bind(rows)
        .execute(&db.pool)
        .await
        .expect("floor rows");
    sqlx::query("ANALYZE floor_jobs")
        .execute(&db.pool)
        .await
        .expect("analyze");
    let script = "\\set w random(1, 2000000000)\n\
        BEGIN;\n\
        WITH c AS (SELECT id FROM floor_jobs WHERE queue = 'noop' AND state = 'available' AND run_at <= now() ORDER BY run_at, id LIMIT 10 FOR UPDATE SKIP LOCKED) UPDATE floor_jobs f SET state = 'running', attempt = f.attempt + 1, locked_by = (:w)::text FROM c WHERE f.id = c.id;\n\
        UPDATE floor_jobs SET state = 'completed', locked_by = NULL WHERE locked_by = (:w)::text AND state = 'running';\n\
        COMMIT;\n";
    let tps = run_pgbench(&db, script, CLIENTS, &["-t", &per_client.to_string()]);
    tps * 10.0
}

// ---------------------------------------------------------------------------------------------
// The real binaries.

struct Services {
    api: WorkerProcess,
    worker: Option<WorkerProcess>,
    base: String,
}

async fn start_services(
    bin: &std::path::Path,
    db: &TestDb,
    extra: &[(&str, String)],
    with_worker: bool,
) -> Services {
    let port = free_port();
    let mut env: Vec<(String, String)> = base_env(&db.url).into_iter().collect();
    // Production timings: the test harness's fast heartbeats and polls are not what runs.
    env.retain(|(k, _)| !k.starts_with("WORKER_") && !k.starts_with("JOB_"));
    env.extend(
        [
            ("PORT", port.to_string()),
            ("BIND_HOST", "127.0.0.1".to_string()),
            (
                "CLERK_WEBHOOK_SIGNING_SECRET",
                sign::CLERK_SECRET.to_string(),
            ),
            ("STRIPE_WEBHOOK_SECRET", sign::STRIPE_SECRET.to_string()),
            ("RUST_LOG", "error".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    // Experiments: BENCH_SVC_<NAME>=<value> sets <NAME> for the api and the worker.
    env.extend(std::env::vars().filter_map(|(k, v)| {
        k.strip_prefix("BENCH_SVC_")
            .map(|name| (name.to_string(), v))
    }));
    let api = WorkerProcess::spawn(&bin.join("granary-api"), &["serve"], &env);
    let worker =
        with_worker.then(|| WorkerProcess::spawn(&bin.join("granary-worker"), &["run"], &env));
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, Duration::from_secs(30)).await;
    Services { api, worker, base }
}

// ---------------------------------------------------------------------------------------------
// 2. Webhook ingest.

/// Returns the latencies and where the CPU went meanwhile.
async fn ingest(
    bin: &std::path::Path,
    body: &[u8],
    concurrency: usize,
    total: usize,
) -> (Latency, String) {
    let db = TestDb::new().await;
    let svc = start_services(bin, &db, &[], false).await;
    let url = format!("{}/api/webhooks/clerk/", svc.base);
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = CpuMeter::start();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, next) = (client.clone(), url.clone(), body.to_vec(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let mut req = client.post(&url).header("content-type", "application/json");
                for (k, v) in sign::svix_headers(
                    sign::CLERK_SECRET,
                    &format!("msg_bench_{i}"),
                    sign::now(),
                    &body,
                ) {
                    req = req.header(k, v);
                }
                let t = Instant::now();
                let res = req.body(body.clone()).send().await.expect("send");
                assert_eq!(res.status(), 200, "ingest answered {}", res.status());
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("sender"));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.report();
    drop(svc);
    (Latency::of(total as f64 / secs, lat), cpu)
}

struct Latency {
    rate: f64,
    p50: f64,
    p99: f64,
}

impl Latency {
    fn of(rate: f64, mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Self {
            rate,
            p50: percentile(&ms, 0.5),
            p99: percentile(&ms, 0.99),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The job runtime, in-process.

/// How the measured job runtime runs: `processes` runtimes side by side (each with its own
/// worker id, claimer and completer, as separate `granary-worker` processes would), each with
/// `WORKER_CONCURRENCY_DEFAULT = concurrency` and `WORKER_BATCH_SIZE = batch`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    processes: usize,
    concurrency: usize,
    batch: usize,
}

impl Shape {
    /// The figure every earlier run reports: one process, concurrency 10, batch 100.
    const STANDARD: Shape = Shape {
        processes: 1,
        concurrency: 10,
        batch: 100,
    };
    /// The shape of the tuned graphile-worker beside it: two processes (one per core),
    /// concurrency 24 and 500 jobs fetched ahead in each.
    const LIKE_GRAPHILE: Shape = Shape {
        processes: 2,
        concurrency: 24,
        batch: 500,
    };

    fn describe(&self) -> String {
        format!(
            "{} process(es) × concurrency {}, batch {}",
            self.processes, self.concurrency, self.batch
        )
    }
}

async fn runtime_for(
    db: &TestDb,
    tx: Option<mpsc::UnboundedSender<i64>>,
    shape: Shape,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut env = base_env(&db.url);
    env.insert(
        "WORKER_CONCURRENCY_DEFAULT".into(),
        shape.concurrency.to_string(),
    );
    env.insert("WORKER_BATCH_SIZE".into(), shape.batch.to_string());
    env.insert("WORKER_POLL_INTERVAL_MS".into(), "1000".into());
    // BENCH_RT_<NAME>=<value> sets <NAME> for the measured runtime (experiments).
    env.extend(
        std::env::vars().filter_map(|(k, v)| Some((k.strip_prefix("BENCH_RT_")?.to_string(), v))),
    );
    let config = Arc::new(Config::from_map(&env).expect("config"));
    let registry = Registry::new().register(move |_ctx: JobContext, job: Noop| {
        let tx = tx.clone();
        async move {
            if let Some(tx) = tx {
                let _ = tx.send(micros() - job.sent_at_micros);
            }
            Ok::<(), JobError>(())
        }
    });
    let pool =
        granary_jobs::platform::db::pool(&config, 20 + registry.held_connections()).expect("pool");
    let token = CancellationToken::new();
    let handle = tokio::spawn(granary_jobs::registry::run(
        pool,
        config,
        registry,
        token.clone(),
    ));
    (token, handle)
}

async fn throughput(n: usize, shape: Shape) -> f64 {
    throughput_on(&TestDb::new().await, n, shape).await
}

/// [`throughput`] on `db`, whatever it holds.
async fn throughput_on(db: &TestDb, n: usize, shape: Shape) -> f64 {
    // The runtime is up and idle first: like pgbench's tps, the figure leaves out connecting.
    // The handlers report each job they run; the table is asked only once all have run (as
    // for the peers), so no query walks the jobs table's indexes every 5 ms while the runtime
    // works (measured: at 1M and 5M rows such a poll took 35–60 ms, through the claimed jobs'
    // index entries that vacuum had not yet removed).
    let (ran_tx, mut ran) = mpsc::unbounded_channel();
    let mut runtimes = Vec::new();
    for _ in 0..shape.processes {
        runtimes.push(runtime_for(db, Some(ran_tx.clone()), shape).await);
    }
    let mut handled = 0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every job becomes visible at once, at one commit, through the one enqueue path.
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::of(&Noop { sent_at_micros: 0 }, None).expect("job"))
        .collect();
    let mut tx = db.pool.begin().await.expect("begin");
    for chunk in jobs.chunks(1000) {
        insert(&mut tx, chunk, Wake::AtCommit)
            .await
            .expect("enqueue");
    }
    let started = Instant::now();
    tx.commit().await.expect("commit");
    loop {
        while ran.try_recv().is_ok() {
            handled += 1;
        }
        if handled < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        // Every handler has run: wait for the last completions to be written.
        let left: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'retrying')) \
             OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running')",
        )
        .fetch_one(&db.pool)
        .await
        .expect("count");
        if !left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    for (token, _) in &runtimes {
        token.cancel();
    }
    for (_, handle) in runtimes {
        let _ = handle.await;
    }
    n as f64 / secs
}

/// Returns p50 and p99 of enqueue → handler start, and of the enqueue's own insert and commit
/// (its reference: the part the runtime does not control, the commit's WAL flush above all).
async fn pickup_latency(samples: usize) -> ((f64, f64), (f64, f64)) {
    pickup_on(&TestDb::new().await, samples).await
}

/// [`pickup_latency`] on `db`, whatever it holds.
async fn pickup_on(db: &TestDb, samples: usize) -> ((f64, f64), (f64, f64)) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (token, handle) = runtime_for(db, Some(tx), Shape::STANDARD).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    let mut commits = Vec::new();
    for _ in 0..samples {
        let started = Instant::now();
        let mut t = db.pool.begin().await.expect("begin");
        enqueue(
            &mut t,
            &Noop {
                sent_at_micros: micros(),
            },
        )
        .await
        .expect("enqueue");
        t.commit().await.expect("commit");
        commits.push(started.elapsed().as_secs_f64() * 1000.0);
        let us = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("picked up")
            .expect("value");
        lat.push(us as f64 / 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    let _ = handle.await;
    lat.sort_by(f64::total_cmp);
    commits.sort_by(f64::total_cmp);
    (
        (percentile(&lat, 0.5), percentile(&lat, 0.99)),
        (percentile(&commits, 0.5), percentile(&commits, 0.99)),
    )
}

// ---------------------------------------------------------------------------------------------
// 4 and 5. End to end, and the footprint.

struct EndToEnd {
    steady_orders: usize,
    steady: Latency,
    burst_orders: usize,
    burst_accept_secs: f64,
    burst: Latency,
    /// Where the CPU went from the burst's first payment to its last receipt.
    burst_cpu: String,
    api_rss_mib: f64,
    worker_rss_mib: f64,
    /// What the database wrote per paid order, over both the steady run and the burst.
    writes: Writes,
}

/// What the database wrote between two snapshots: WAL (the whole server's: nothing else runs
/// during the bench), and the bench database's rows and index sizes.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
struct WriteStats {
    wal_bytes: f64,
    wal_records: f64,
    wal_fpi: f64,
    /// Rows inserted plus rows updated, every table.
    row_writes: f64,
    /// Of the updates, those that were HOT (no new index entries).
    updates: f64,
    hot_updates: f64,
    index_bytes: f64,
}

impl WriteStats {
    /// Read after the processes that wrote have exited, so their statistics are flushed.
    async fn read(pool: &sqlx::PgPool) -> Self {
        let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(pool)
            .await;
        sqlx::query_as(
            r#"SELECT w.wal_bytes::float8 AS wal_bytes, w.wal_records::float8 AS wal_records,
                      w.wal_fpi::float8 AS wal_fpi,
                      t.row_writes, t.updates, t.hot_updates, i.index_bytes
               FROM pg_stat_wal w,
                    (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::float8 AS row_writes,
                            coalesce(sum(n_tup_upd), 0)::float8 AS updates,
                            coalesce(sum(n_tup_hot_upd), 0)::float8 AS hot_updates
                     FROM pg_stat_user_tables) t,
                    (SELECT coalesce(sum(pg_relation_size(indexrelid)), 0)::float8 AS index_bytes
                     FROM pg_stat_user_indexes) i"#,
        )
        .fetch_one(pool)
        .await
        .expect("write statistics")
    }

    fn since(self, before: Self) -> Self {
        Self {
            wal_bytes: self.wal_bytes - before.wal_bytes,
            wal_records: self.wal_records - before.wal_records,
            wal_fpi: self.wal_fpi - before.wal_fpi,
            row_writes: self.row_writes - before.row_writes,
            updates: self.updates - before.updates,
            hot_updates: self.hot_updates - before.hot_updates,
            index_bytes: self.index_bytes - before.index_bytes,
        }
    }
}

/// Experiments: the statements (`;`-separated) in the environment variable `var`, if set, run on
/// `pool`: `BENCH_SQL` on the end-to-end phase's databases before the measurement (an index
/// dropped, a table's fillfactor changed), `BENCH_HISTORY_SQL` on the history phase's after
/// their fill.
async fn schema_experiment(pool: &sqlx::PgPool, var: &str) {
    if let Ok(sql) = std::env::var(var) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .expect(var);
    }
}

/// [`WriteStats`] per order.
struct Writes {
    orders: usize,
    d: WriteStats,
}

impl std::fmt::Display for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.orders as f64;
        let d = &self.d;
        write!(
            f,
            "WAL **{:.0} B** ({:.0} records, {:.2} full-page images); rows written (inserted, updated, deleted) {:.1}, of {:.1} updates {:.0}% HOT; index growth **{:.0} B**",
            d.wal_bytes / n,
            d.wal_records / n,
            d.wal_fpi / n,
            d.row_writes / n,
            d.updates / n,
            100.0 * d.hot_updates / d.updates.max(1.0),
            d.index_bytes / n
        )
    }
}

/// Sends `checkout.session.completed` for each order, `rate` per second when given (each on its
/// own task, so a slow answer never delays the schedule), else as fast as 32 connections go.
/// Returns when each was sent, by buyer email, and when the last was answered.
async fn send_payments(
    base: &str,
    ids: &[String],
    prefix: &str,
    rate: Option<f64>,
) -> (HashMap<String, Instant>, Instant) {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/webhooks/stripe/");
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let sent_all = sent.clone();
    let prefix = prefix.to_string();
    let send = move |i: usize, public_id: String| {
        let (client, url, sent) = (client.clone(), url.clone(), sent.clone());
        let email = format!("{prefix}_{}@example.com", i + 1);
        async move {
            let raw = serde_json::to_vec(&checkout_completed(
                &format!("evt_{public_id}"),
                &public_id,
                500,
            ))
            .expect("json");
            let header = sign::stripe_header(sign::STRIPE_SECRET, sign::now(), &raw);
            sent.lock().expect("lock").insert(email, Instant::now());
            let res = client
                .post(&url)
                .header("stripe-signature", header)
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .expect("send");
            assert_eq!(
                res.status(),
                200,
                "payment webhook answered {}",
                res.status()
            );
        }
    };
    match rate {
        Some(rate) => {
            let started = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
                tasks.push(tokio::spawn(send(i, id.clone())));
            }
            for t in tasks {
                t.await.expect("sender");
            }
        }
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            let ids = Arc::new(ids.to_vec());
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let (next, ids, send) = (next.clone(), ids.clone(), send.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = ids.get(i) else { return };
                        send(i, id.clone()).await;
                    }
                }));
            }
            for t in tasks {
                t.await.expect("sender");
            }
        }
    }
    let sent = std::mem::take(&mut *sent_all.lock().expect("lock"));
    (sent, Instant::now())
}

/// Waits until `want` receipts to `<prefix>_*` addresses reached the stand-in; returns the
/// per-order latency (ms) and the last arrival.
async fn receipts(
    resend: &ResendStandIn,
    prefix: &str,
    sent: &HashMap<String, Instant>,
) -> (Vec<f64>, Instant) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let tag = format!("{prefix}_");
    loop {
        let got = resend
            .received()
            .into_iter()
            .filter(|r| r.delivered)
            .filter_map(|r| {
                let to = r.body["to"][0].as_str()?.to_string();
                to.starts_with(&tag).then_some((to, r.at))
            })
            .collect::<Vec<_>>();
        if got.len() >= sent.len() {
            let last = got.iter().map(|(_, at)| *at).max().expect("some");
            let lat = got
                .iter()
                .map(|(to, at)| at.duration_since(sent[to]).as_secs_f64() * 1000.0)
                .collect();
            return (lat, last);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} receipts arrived",
            got.len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn end_to_end(bin: &std::path::Path, steady_secs: usize, burst_orders: usize) -> EndToEnd {
    let db = TestDb::new().await;
    let resend = ResendStandIn::start().await;
    let storage = std::env::temp_dir().join(format!("granary-bench-{}", uuid::Uuid::new_v4()));
    let shop = Shop::seed(&db.pool).await;
    let steady_orders = 50 * steady_secs;
    let steady_ids = shop.orders(&db.pool, "st", steady_orders, false).await;
    let burst_ids = shop.orders(&db.pool, "bu", burst_orders, false).await;
    let mut env = resend.env().to_vec();
    env.push((
        "ASSET_STORAGE_FS_ROOT",
        storage.to_string_lossy().into_owned(),
    ));
    schema_experiment(&db.pool, "BENCH_SQL").await;
    let before = WriteStats::read(&db.pool).await;
    let svc = start_services(bin, &db, &env, true).await;

    let (sent, _) = send_payments(&svc.base, &steady_ids, "st", Some(50.0)).await;
    let (lat, last) = receipts(&resend, "st", &sent).await;
    let first = sent.values().min().copied().expect("sent");
    let steady = Latency::of(
        steady_orders as f64 / last.duration_since(first).as_secs_f64(),
        lat,
    );

    let cpu = CpuMeter::start();
    let (sent, accepted) = send_payments(&svc.base, &burst_ids, "bu", None).await;
    let first = sent.values().min().copied().expect("sent");
    let (lat, last) = receipts(&resend, "bu", &sent).await;
    let burst_cpu = cpu.report();
    let burst = Latency::of(
        burst_orders as f64 / last.duration_since(first).as_secs_f64(),
        lat,
    );
    let kib_to_mib = |k: Option<u64>| k.map_or(f64::NAN, |k| k as f64 / 1024.0);
    let api_rss_mib = kib_to_mib(svc.api.peak_rss_kib());
    let worker_rss_mib = kib_to_mib(svc.worker.as_ref().and_then(|w| w.peak_rss_kib()));
    drop(svc);
    // The api's and the worker's backends flushed their statistics as they exited.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = Writes {
        orders: steady_orders + burst_orders,
        d: WriteStats::read(&db.pool).await.since(before),
    };
    let _ = std::fs::remove_dir_all(storage);
    EndToEnd {
        writes,
        steady_orders,
        steady,
        burst_orders,
        burst_accept_secs: accepted.duration_since(first).as_secs_f64(),
        burst,
        burst_cpu,
        api_rss_mib,
        worker_rss_mib,
    }
}

/// The burst's reference: the same orders' own work with no HTTP and no job runtime. For each
/// order, its payment event is stored through ingest's batcher (as the api stores it, minus the
/// HTTP and the signature check), then the three handlers run in turn, called directly:
/// `process_webhook_event`, `fulfill_order` and `send_email` (whose email id is read back, one
/// small query the runtime does not need). Their enqueues write jobs that nobody runs, and wake
/// nobody. 32 orders at a time, on one pool the size of the worker's. Returns orders per second,
/// and where the CPU went.
async fn handlers_only(orders: usize) -> (f64, String, Writes) {
    use granary_jobs::{
        emails::{self, SendEmail},
        orders::{FulfillOrder, fulfillment},
        providers::{Provider, verify::Verified},
        queue::enqueue::deferring_wakes,
        webhooks::{
            apply,
            ingest::{Batcher, ProcessWebhookEvent, Stored},
        },
    };
    let db = TestDb::new().await;
    let resend = ResendStandIn::start().await;
    let shop = Shop::seed(&db.pool).await;
    let public_ids = shop.orders(&db.pool, "ho", orders, false).await;
    let ids: HashMap<String, uuid::Uuid> =
        sqlx::query_as("SELECT public_id, id FROM orders WHERE public_id = ANY($1)")
            .bind(&public_ids)
            .fetch_all(&db.pool)
            .await
            .expect("order ids")
            .into_iter()
            .collect();
    let mut env = base_env(&db.url);
    env.extend(resend.env().map(|(k, v)| (k.to_string(), v)));
    let config = Arc::new(Config::from_map(&env).expect("config"));
    let pool = granary_jobs::platform::db::pool(&config, 20).expect("pool");
    let batcher = Arc::new(Batcher::new(pool.clone()));
    schema_experiment(&db.pool, "BENCH_SQL").await;
    let before = WriteStats::read(&db.pool).await;
    let work: Arc<Vec<(String, uuid::Uuid)>> =
        Arc::new(public_ids.iter().map(|p| (p.clone(), ids[p])).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = CpuMeter::start();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (work, next, batcher, pool, config) = (
            work.clone(),
            next.clone(),
            batcher.clone(),
            pool.clone(),
            config.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let ctx = |queue: &'static str| JobContext {
                pool: pool.clone(),
                config: config.clone(),
                job_id: "reference".into(),
                queue,
                attempt: 1,
                worker_id: "reference".into(),
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((public_id, order_id)) = work.get(i) else {
                    return;
                };
                let event_id = format!("evt_{public_id}");
                let body = serde_json::to_vec(&checkout_completed(&event_id, public_id, 500))
                    .expect("json");
                let verified = Verified {
                    event_id,
                    event_type: "checkout.session.completed".into(),
                    occurred_at: None,
                };
                let Stored::New(event) = batcher
                    .store(
                        Provider::Stripe,
                        &verified,
                        &Default::default(),
                        body.into(),
                    )
                    .await
                    .expect("store")
                else {
                    panic!("a new event was stored as a duplicate")
                };
                let (done, _) = deferring_wakes(async {
                    apply::handle(
                        ctx(ProcessWebhookEvent::QUEUE),
                        ProcessWebhookEvent {
                            webhook_event_id: event,
                        },
                    )
                    .await?;
                    fulfillment::fulfill_order(
                        ctx(FulfillOrder::QUEUE),
                        FulfillOrder {
                            order_id: *order_id,
                        },
                    )
                    .await?;
                    let email_id: uuid::Uuid = sqlx::query_scalar(
                        "SELECT id FROM emails WHERE order_id = $1 AND kind = 'receipt'",
                    )
                    .bind(order_id)
                    .fetch_one(&pool)
                    .await?;
                    emails::send_email(
                        ctx(SendEmail::QUEUE),
                        SendEmail {
                            email_id,
                            order_id: Some(*order_id),
                        },
                    )
                    .await
                })
                .await;
                done.expect("the order's handlers");
            }
        }));
    }
    for t in tasks {
        t.await.expect("reference task");
    }
    let rate = orders as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu.report();
    drop(batcher);
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = Writes {
        orders,
        d: WriteStats::read(&db.pool).await.since(before),
    };
    assert_eq!(
        resend.delivered_count(),
        orders,
        "every receipt reached the Resend stand-in"
    );
    (rate, cpu, writes)
}

// ---------------------------------------------------------------------------------------------
// Where the CPU went: what `pidstat` shows, read from /proc around one phase.

/// CPU time by process over a phase, from `/proc/<pid>/stat` and `/proc/stat`. PostgreSQL's
/// backends that exit meanwhile are counted through the postmaster's reaped-children time
/// (`cutime`/`cstime`). Time the hypervisor took is `steal`; whatever else no named process
/// accounts for (short-lived processes, the kernel's own threads, other services on the
/// machine) is `other`; with `idle` they add up to the machine. The kernel's interrupt work
/// (the loopback network's softirqs, mostly) is given apart, as a part of those figures, not
/// beside them: with tick-based accounting (no `CONFIG_IRQ_TIME_ACCOUNTING`, as on this
/// machine's kernel) a tick spent in an interrupt counts both as `/proc/stat`'s irq/softirq
/// and as system time of the process it interrupted.
struct CpuMeter {
    machine: Machine,
    by_group: HashMap<&'static str, u64>,
}

impl CpuMeter {
    /// The groups a phase's CPU is split into, in the order they are reported.
    const GROUPS: [&'static str; 4] = ["PostgreSQL", "granary-api", "granary-worker", "bench"];

    fn start() -> Self {
        Self {
            machine: Self::machine_ticks(),
            by_group: Self::process_ticks(),
        }
    }

    /// Ticks of the whole machine so far, every core.
    fn machine_ticks() -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let at = |i: usize| cpu.get(i).copied().unwrap_or(0);
        Machine {
            total: cpu.iter().sum(),
            idle: at(3) + at(4),
            irq: at(5) + at(6),
            steal: at(7),
        }
    }

    /// Ticks spent so far by each group's live processes (and PostgreSQL's reaped backends).
    fn process_ticks() -> HashMap<&'static str, u64> {
        let me = std::process::id().to_string();
        let mut out = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces, so split at the last ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            let group = match comm {
                _ if pid == me => "bench",
                "postgres" => "PostgreSQL",
                "granary-api" => "granary-api",
                "granary-worker" => "granary-worker",
                _ => continue,
            };
            // After the comm: state(0) … utime(11) stime(12) cutime(13) cstime(14).
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|v| v.parse().ok())
                .collect();
            if f.len() < 4 {
                continue;
            }
            let reaped = if group == "PostgreSQL" {
                f[2] + f[3]
            } else {
                0
            };
            *out.entry(group).or_default() += f[0] + f[1] + reaped;
        }
        out
    }

    /// Steal since the start, in % of one core.
    fn steal(&self) -> f64 {
        let d = Self::machine_ticks().since(&self.machine);
        d.pct(d.steal)
    }

    /// The phase's CPU in % of one core (100 × the number of cores = the whole machine):
    /// "PostgreSQL 131, granary-api 4, … other 3, steal 2, idle 12 (interrupt work, within these: 11)".
    fn report(&self) -> String {
        let d = Self::machine_ticks().since(&self.machine);
        let now = Self::process_ticks();
        let pct = |ticks: u64| d.pct(ticks);
        let mut named = 0;
        let mut parts = Vec::new();
        for g in Self::GROUPS {
            let d = now
                .get(g)
                .copied()
                .unwrap_or(0)
                .saturating_sub(self.by_group.get(g).copied().unwrap_or(0));
            named += d;
            if d > 0 {
                parts.push(format!("{g} {:.0}", pct(d)));
            }
        }
        let rest = d.total.saturating_sub(named + d.idle + d.steal);
        parts.push(format!("other {:.0}", pct(rest)));
        parts.push(format!("steal {:.0}", pct(d.steal)));
        parts.push(format!("idle {:.0}", pct(d.idle)));
        format!(
            "{} (interrupt work, within these: {:.0})",
            parts.join(", "),
            pct(d.irq)
        )
    }
}

/// `/proc/stat`'s first line, in ticks.
struct Machine {
    total: u64,
    idle: u64,
    irq: u64,
    steal: u64,
}

impl Machine {
    /// The ticks from `earlier` to these.
    fn since(&self, earlier: &Machine) -> Machine {
        Machine {
            total: self.total.saturating_sub(earlier.total),
            idle: self.idle.saturating_sub(earlier.idle),
            irq: self.irq.saturating_sub(earlier.irq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    /// `ticks` as % of one core over this span (100 × the number of cores = all of it).
    fn pct(&self, ticks: u64) -> f64 {
        100.0 * cores() as f64 * ticks as f64 / self.total.max(1) as f64
    }
}

// ---------------------------------------------------------------------------------------------

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cores();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let pg = Command::new("pgbench")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB; PostgreSQL server on the same machine ({pg}); \
         load generator, api, worker and PostgreSQL share the cores"
    )
}

// ---------------------------------------------------------------------------------------------
// 6. The console's jobs page over a large table.

/// Fills `jobs` with `rows` jobs, one per millisecond up to now (ULIDs, as the runtime makes
/// them): 98.7% completed, 0.5% failed with a Resend-like error naming a mailbox, 0.2%
/// cancelled, 0.3% pending; arguments like the real payloads.
async fn fill_jobs(pool: &sqlx::PgPool, rows: usize) {
    let now = chrono::Utc::now().timestamp_millis() as u64;
    let start = now - rows as u64;
    let chunk = 50_000;
    let mut i = 0;
    while i < rows {
        let n = chunk.min(rows - i);
        let mut ids = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        for k in 0..n {
            let ms = start + (i + k) as u64;
            ids.push(ulid::Ulid::from_parts(ms, rand::random::<u128>()).to_string());
            at.push(
                chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64).expect("time"),
            );
        }
        sqlx::query(
            r#"INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, run_at, created_at, finished_at, last_error)
               SELECT id, (ARRAY['send_email', 'fulfill_order', 'process_webhook_event', 'issue_grants'])[1 + (n::int + $3) % 4],
                      jsonb_build_object('order_id', md5((n + $3)::text)::uuid, 'email_id', md5((n + $3 + 1)::text)::uuid, 'attempt_note', 'bench'),
                      CASE WHEN (n + $3) % 200 = 0 THEN 'failed' WHEN (n + $3) % 500 = 1 THEN 'cancelled'
                           WHEN (n + $3) % 333 = 2 THEN 'pending' ELSE 'completed' END,
                      1, 12, c, c,
                      CASE WHEN (n + $3) % 333 = 2 AND (n + $3) % 200 <> 0 AND (n + $3) % 500 <> 1 THEN NULL ELSE c + interval '40 ms' END,
                      CASE WHEN (n + $3) % 200 = 0 THEN 'Resend refused the email (422 validation_error): the mailbox m' || md5((n + $3)::text) || ' is disabled'
                           WHEN (n + $3) % 500 = 1 THEN 'cancelled by an operator' END
               FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS t(id, c, n)"#,
        )
        .bind(&ids)
        .bind(&at)
        .bind(i as i64)
        .execute(pool)
        .await
        .expect("fill jobs");
        i += n;
    }
    // One job in a thousand concerns one of 1,000 orders (through job_refs, as enqueue writes).
    sqlx::query(
        r#"WITH c AS (INSERT INTO profiles (clerk_user_id) VALUES ('bench_buyer') RETURNING id),
           o AS (INSERT INTO orders (public_id, customer_profile_id, currency, subtotal_cents, total_cents)
                 SELECT 'ord_bench_' || g, c.id, 'USD', 500, 500 FROM c, generate_series(1, 1000) g RETURNING id, public_id),
           numbered AS (SELECT id, row_number() OVER (ORDER BY public_id) AS k FROM o),
           picked AS (SELECT id, queue, row_number() OVER (ORDER BY id) AS k FROM jobs WHERE right(id, 3) = '000' OR id IN (SELECT min(id) FROM jobs))
           INSERT INTO job_refs (job_id, queue, order_id, max_attempts)
           SELECT p.id, p.queue, n.id, 12 FROM picked p JOIN numbered n ON n.k = 1 + (p.k - 1) % 1000"#,
    )
    .execute(pool)
    .await
    .expect("job refs");
    sqlx::query("VACUUM ANALYZE jobs")
        .execute(pool)
        .await
        .expect("analyze");
    sqlx::query("VACUUM ANALYZE job_refs")
        .execute(pool)
        .await
        .expect("analyze");
}

/// Median and worst of `runs` GETs of `path` with the console session `cookie`.
async fn time_page(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    runs: usize,
) -> (f64, f64, String) {
    let mut ms = Vec::new();
    let mut body = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        let res = client
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 200, "{path}");
        body = res.text().await.expect("body");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1], body)
}

async fn console_pages(bin: &std::path::Path, rows: usize) -> Vec<String> {
    let db = TestDb::new().await;
    let t = Instant::now();
    fill_jobs(&db.pool, rows).await;
    eprintln!("{rows} jobs written in {:.0} s", t.elapsed().as_secs_f64());
    let svc = start_services(bin, &db, &[("THROTTLE_ANON", "0".to_string())], false).await;
    let (token, _) = granary_jobs::operator::console::create_login_link(
        &db.pool,
        "bench",
        Duration::from_secs(60),
    )
    .await
    .expect("login link");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = client
        .get(format!("{}/console/login?token={token}", svc.base))
        .send()
        .await
        .expect("login");
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    // The reference: one primary-key lookup on the same table, over the same loopback (psql-free:
    // the api's health route reads the queue depth from the partial indexes).
    let (pk_ms, _) = {
        let id: String =
            sqlx::query_scalar("SELECT id FROM jobs ORDER BY id DESC LIMIT 1 OFFSET 5000")
                .fetch_one(&db.pool)
                .await
                .expect("an id");
        let mut ms = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let _: String = sqlx::query_scalar("SELECT id FROM jobs WHERE id = $1")
                .bind(&id)
                .fetch_one(&db.pool)
                .await
                .expect("lookup");
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ())
    };
    let runs = 7;
    let mut lines = vec![format!(
        "| reference: one primary-key lookup on the {rows}-row jobs table (sqlx, loopback), median | **{pk_ms:.2} ms** |"
    )];
    let mailbox: String = sqlx::query_scalar("SELECT substring(last_error from 'mailbox (m[0-9a-f]+)') FROM jobs WHERE state = 'failed' ORDER BY id LIMIT 1 OFFSET 7")
        .fetch_one(&db.pool)
        .await
        .expect("a failed job's mailbox");
    // The worst case of a search outside the indexed states: the oldest job's order id.
    let (order_uuid, order_public): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT o.id, o.public_id FROM job_refs r JOIN orders o ON o.id = r.order_id ORDER BY r.job_id LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the oldest job's order");
    let oldest_order: String = sqlx::query_scalar("SELECT left(args->>'order_id', 18) FROM jobs WHERE state = 'completed' ORDER BY id LIMIT 1")
        .fetch_one(&db.pool)
        .await
        .expect("the oldest job");
    // The tenth page, reached as an operator does: following "Older" nine times.
    let mut before = String::new();
    for _ in 0..9 {
        let (_, _, body) = time_page(
            &client,
            &svc.base,
            &cookie,
            &format!("/console/jobs{before}"),
            1,
        )
        .await;
        let at = body.find("before=").expect("an Older link") + 7;
        before = format!("?before={}", &body[at..at + 26]);
    }
    let since = (chrono::Utc::now() - chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M");
    let until = (chrono::Utc::now() - chrono::Duration::minutes(4)).format("%Y-%m-%dT%H:%M");
    for (what, path) in [
        ("first page, no filter".to_string(), "/console/jobs".to_string()),
        ("tenth page (keyset, `before=`)".to_string(), format!("/console/jobs{before}")),
        ("failed jobs".to_string(), "/console/jobs?state=failed".to_string()),
        ("one kind, one minute".to_string(), format!("/console/jobs?kind=send_email&since={since}&until={until}")),
        ("search: one mailbox in errors (failed, cancelled, retrying)".to_string(), format!("/console/jobs?q={mailbox}")),
        ("search: a common word (\"refused\")".to_string(), "/console/jobs?q=refused".to_string()),
        ("search: a common word in completed jobs' arguments".to_string(), "/console/jobs?state=completed&q=bench".to_string()),
        ("search: an order's UUID (its jobs in every state, through job_refs)".to_string(), format!("/console/jobs?q={order_uuid}")),
        ("search: an order's public id".to_string(), format!("/console/jobs?q={order_public}")),
        ("free text in completed jobs' arguments, found only in the oldest (not indexed: scans the table)".to_string(), format!("/console/jobs?state=completed&q={oldest_order}")),
        ("overview (counts, charts, workers, doctor)".to_string(), "/console/".to_string()),
    ] {
        let (p50, max, body) = time_page(&client, &svc.base, &cookie, &path, runs).await;
        assert!(!body.contains("No job matches") || what.starts_with("overview"), "{what}: nothing matched");
        lines.push(format!(
            "| console over {rows} jobs: {what}; median / worst of {runs} | **{p50:.0} ms** / {max:.0} ms |"
        ));
    }
    drop(svc);
    lines
}

// ---------------------------------------------------------------------------------------------
// 7. The job runtime against history.

/// The orders, webhook events and emails the history's `job_refs` point to: their foreign keys
/// need real rows, and one per job would double the fill, so the history cycles through these.
const HISTORY_REF_POOL: i64 = 10_000;

/// SQL for the ULID (26 characters, Crockford base32, as the `ulid` crate writes them) of the
/// millisecond `ms` with 64 random-looking bits hashed from the bigint `seed` (hex digits are
/// base32 digits): the history's ids are made server-side.
fn ulid_sql(ms: &str, seed: &str) -> String {
    let time: Vec<String> = (0..10)
        .rev()
        .map(|i| {
            format!(
                "substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((({ms}) >> {}) & 31)::int + 1, 1)",
                5 * i
            )
        })
        .collect();
    format!(
        "{} || upper(lpad(to_hex(hashint8extended(({seed})::bigint, 11)), 16, '0'))",
        time.join(" || ")
    )
}

/// SQL for a random-looking UUID that is a function of the bigint `key` and `seed` (cheaper than
/// `md5(…)::uuid`: the fill makes a few per job).
fn uuid_sql(key: &str, seed: u32) -> String {
    format!(
        "(lpad(to_hex(hashint8extended(({key})::bigint, {seed})), 16, '0') || lpad(to_hex(hashint8extended(({key})::bigint, {})), 16, '0'))::uuid",
        seed + 1
    )
}

/// Fills `jobs` with `rows` finished jobs as the runtime leaves them, each with its one attempt
/// (`job_attempts`) and its one `job_refs` row (as `granary_insert_jobs` writes it): created
/// evenly over the retention age and 1% more (the oldest 1% are past it: retention has work),
/// ids the ULIDs of their creation, finished 20–200 ms later; 98.67% completed, 1% failed
/// permanently at their attempt, 0.33% cancelled after a failed attempt. Three kinds in turn,
/// as a paid order makes them (`process_webhook_event`, `fulfill_order`, `send_email`), with
/// their real arguments and dedupe keys (each its own event, order, email: unique, as in
/// production); their links point to [`HISTORY_REF_POOL`] orders, events and emails (real rows
/// for the foreign keys, one per job would double the fill). Server-side, 100,000 jobs per
/// statement in creation order, two statements at a time (the machine's two cores), then
/// `VACUUM ANALYZE`. Returns the seconds the inserts and the vacuum took.
async fn fill_history(pool: &sqlx::PgPool, rows: usize, retention: Duration) -> (f64, f64) {
    let started = Instant::now();
    for sql in [
        format!(
            r#"WITH p AS (INSERT INTO profiles (clerk_user_id) VALUES ('bench_history_buyer') RETURNING id)
               INSERT INTO orders (id, public_id, customer_profile_id, currency, subtotal_cents, total_cents)
               SELECT {}, 'ord_hist_' || g, p.id, 'USD', 500, 500
               FROM p, generate_series(0, $1 - 1) g"#,
            uuid_sql("g", 1)
        ),
        format!(
            r#"INSERT INTO webhook_events (id, provider, event_id, event_type, status, body, processed_at)
               SELECT {}, 'stripe', 'evt_hist_' || g, 'checkout.session.completed', 'processed',
                      convert_to('{{"id": "evt_hist_' || g || '"}}', 'UTF8'), now()
               FROM generate_series(0, $1 - 1) g"#,
            uuid_sql("g", 3)
        ),
        format!(
            r#"INSERT INTO emails (id, dedupe_key, kind, to_address, subject, html_body, text_body, status, order_id, sent_at)
               SELECT {}, 'receipt:hist_' || g, 'receipt', 'buyer' || g || '@example.com', 'Your receipt',
                      '<p>Thank you for your order.</p>', 'Thank you for your order.', 'sent', {}, now()
               FROM generate_series(0, $1 - 1) g"#,
            uuid_sql("g", 5),
            uuid_sql("g", 1)
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(HISTORY_REF_POOL)
            .execute(pool)
            .await
            .expect("the rows the history links to");
    }

    let span_ms = i64::try_from(retention.as_millis() * 100 / 99).expect("retention");
    let start_ms = chrono::Utc::now().timestamp_millis() - span_ms;
    // Job n is of kind n % 3 (0: process_webhook_event, 1: fulfill_order, 2: send_email) and
    // belongs to the (n / 3)th order; `key` is its own event or email, `key_order` its order.
    let sql = format!(
        r#"WITH g AS MATERIALIZED (
               SELECT s.*,
                      CASE WHEN s.state = 'failed' THEN
                               CASE s.queue
                                   WHEN 'send_email' THEN 'Resend refused the email (422 validation_error): the mailbox m' || md5(s.n::text) || ' is disabled'
                                   WHEN 'fulfill_order' THEN 'order ' || s.key_order || ': the price price_' || left(md5(s.n::text), 14) || ' is no longer sold'
                                   ELSE 'webhook event ' || s.key || ': no order matches checkout session cs_' || left(md5(s.n::text), 24) END
                           WHEN s.state = 'cancelled' THEN 'Stripe answered 503 Service Unavailable (request req_' || left(md5(s.n::text), 14) || '); retrying'
                      END AS err
               FROM (
                   SELECT n, to_timestamp(ms / 1000.0) AS c,
                          to_timestamp(ms / 1000.0) + (20 + n % 180) * interval '1 millisecond' AS f,
                          (ARRAY['process_webhook_event', 'fulfill_order', 'send_email'])[1 + (n % 3)::int] AS queue,
                          CASE WHEN n % 100 = 0 THEN 'failed' WHEN n % 300 = 1 THEN 'cancelled' ELSE 'completed' END AS state,
                          {key} AS key,
                          CASE WHEN n % 3 <> 0 THEN {key_order} END AS key_order,
                          CASE WHEN n % 3 <> 0 THEN {order_id} END AS order_id,
                          CASE WHEN n % 3 = 0 THEN {event_id} END AS event_id,
                          CASE WHEN n % 3 = 2 THEN {email_id} END AS email_id,
                          {ulid} AS id
                   FROM (SELECT n, $3::bigint + n * $4::bigint / $5::bigint AS ms
                         FROM generate_series($1::bigint, $2::bigint) n) t
               ) s
           ), j AS (
               INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, run_at, created_at, finished_at, last_error)
               SELECT id, queue,
                      CASE queue WHEN 'process_webhook_event' THEN jsonb_build_object('webhook_event_id', key)
                                 WHEN 'fulfill_order' THEN jsonb_build_object('order_id', key_order)
                                 ELSE jsonb_build_object('email_id', key, 'order_id', key_order) END,
                      state, 1, CASE queue WHEN 'send_email' THEN 12 ELSE 25 END, c, c, f, err
               FROM g
           ), a AS (
               INSERT INTO job_attempts (job_id, queue, attempt, worker_id, started_at, finished_at, outcome, error, retry_at)
               SELECT id, queue, 1, queue || '@granary-worker-' || (n % 2) || ':' || (1000 + n / 1000000) || ':5eedf00d',
                      c + interval '2 milliseconds', f,
                      CASE state WHEN 'completed' THEN 'succeeded' WHEN 'failed' THEN 'failed' ELSE 'retry' END,
                      err, CASE WHEN state = 'cancelled' THEN f + interval '2 seconds' END
               FROM g
           ), r AS (
               INSERT INTO job_refs (job_id, queue, dedupe_key, order_id, webhook_event_id, email_id, max_attempts, created_at)
               SELECT id, queue, CASE queue WHEN 'fulfill_order' THEN key_order ELSE key END::text,
                      order_id, event_id, email_id, CASE queue WHEN 'send_email' THEN 12 ELSE 25 END, c
               FROM g
           )
           SELECT count(*) FROM g"#,
        key = uuid_sql("n", 7),
        key_order = uuid_sql("n / 3", 9),
        order_id = uuid_sql("(n / 3) % $6", 1),
        event_id = uuid_sql("(n / 3) % $6", 3),
        email_id = uuid_sql("(n / 3) % $6", 5),
        ulid = ulid_sql("ms", "n"),
    );
    // The links' foreign-key checks (a third of the inserts' time) are skipped when this user
    // may: every link points to a row written above.
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(pool)
            .await
            .expect("role");
    let rows = rows as i64;
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (pool, sql, next) = (pool.clone(), sql.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            const CHUNK: i64 = 100_000;
            loop {
                let lo = next.fetch_add(1, Ordering::Relaxed) as i64 * CHUNK;
                if lo >= rows {
                    return;
                }
                let hi = (lo + CHUNK).min(rows) - 1;
                let mut tx = pool.begin().await.expect("begin");
                if superuser {
                    sqlx::query("SET LOCAL session_replication_role = replica")
                        .execute(&mut *tx)
                        .await
                        .expect("replica role");
                }
                let written: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(lo)
                    .bind(hi)
                    .bind(start_ms)
                    .bind(span_ms)
                    .bind(rows)
                    .bind(HISTORY_REF_POOL)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("fill history");
                tx.commit().await.expect("commit");
                assert_eq!(written, hi - lo + 1);
            }
        }));
    }
    for w in writers {
        w.await.expect("history writer");
    }
    let inserts = started.elapsed().as_secs_f64();
    // The ids are the ULIDs of the creation times, as the runtime's retention assumes.
    let (id, created): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT id, created_at FROM jobs ORDER BY id LIMIT 1")
            .fetch_one(pool)
            .await
            .expect("oldest job");
    let ulid = ulid::Ulid::from_string(&id).expect("a ULID");
    assert_eq!(
        ulid.timestamp_ms() as i64,
        created.timestamp_millis(),
        "{id}"
    );
    let started = Instant::now();
    for sql in [
        "VACUUM ANALYZE jobs",
        "VACUUM ANALYZE job_attempts",
        "VACUUM ANALYZE job_refs",
        "ANALYZE orders",
        "ANALYZE webhook_events",
        "ANALYZE emails",
    ] {
        sqlx::query(sql).execute(pool).await.expect(sql);
    }
    (inserts, started.elapsed().as_secs_f64())
}

/// What retention pruned while it ran beside a measurement.
#[derive(Debug, Default)]
struct Pruned {
    rows: u64,
    calls: usize,
    longest_ms: f64,
}

/// The runtime's retention, `prune_completed`, called in a loop (a pause of 1 s after each
/// call) on `pool` until stopped.
struct Pruner {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Pruned>,
}

impl Pruner {
    fn start(pool: &sqlx::PgPool, retention: Duration) -> Self {
        let stop = CancellationToken::new();
        let (token, pool) = (stop.clone(), pool.clone());
        let task = tokio::spawn(async move {
            let mut p = Pruned::default();
            while !token.is_cancelled() {
                let t = Instant::now();
                match granary_jobs::queue::runtime::prune_completed(&pool, retention).await {
                    Ok(n) => p.rows += n,
                    Err(e) => eprintln!("prune_completed failed: {e}"),
                }
                p.calls += 1;
                p.longest_ms = p.longest_ms.max(t.elapsed().as_secs_f64() * 1000.0);
                tokio::select! {
                    () = token.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            p
        });
        Self { stop, task }
    }

    async fn stop(self) -> Pruned {
        self.stop.cancel();
        self.task.await.expect("pruner")
    }
}

/// The claim statement as EXPLAIN (ANALYZE, BUFFERS) saw it.
#[derive(Debug, Default, Clone)]
struct ClaimPlan {
    planning_ms: f64,
    execution_ms: f64,
    /// Shared buffers hit and read by the whole statement (its attempts insert included).
    hit: u64,
    read: u64,
    planning_hit: u64,
    planning_read: u64,
}

/// Shared buffers (hit, read) of the nodes under `node` that match `pick`, each counted whole
/// (with what runs under it) and not looked into further.
fn plan_buffers(node: &serde_json::Value, pick: &dyn Fn(&serde_json::Value) -> bool) -> (u64, u64) {
    if pick(node) {
        let get = |k: &str| node[k].as_u64().unwrap_or(0);
        return (get("Shared Hit Blocks"), get("Shared Read Blocks"));
    }
    node["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| plan_buffers(n, pick))
        .fold((0, 0), |(h, r), (a, b)| (h + a, r + b))
}

/// `granary_queue::backend::claim`'s statement (batch 100, queue `bench_noop`, with 1,000 jobs
/// pending there), under EXPLAIN (ANALYZE, BUFFERS), each run in a transaction rolled back:
/// the median of 5 runs by execution time. The text plan of one more run goes to stderr.
async fn explain_claim(db: &TestDb) -> ClaimPlan {
    let jobs: Vec<NewJob> = (0..1000)
        .map(|_| NewJob::of(&Noop { sent_at_micros: 0 }, None).expect("job"))
        .collect();
    let mut tx = db.pool.begin().await.expect("begin");
    insert(&mut tx, &jobs, Wake::AfterCommit)
        .await
        .expect("pending jobs");
    tx.commit().await.expect("commit");
    // Copied from `claim` (queue/src/backend.rs), its parameters written in.
    let claim = r#"
        WITH j AS (
            UPDATE jobs_active SET state = 'running', attempt = attempt + 1,
                            locked_by = 'bench_noop@explain', locked_at = now()
            WHERE id = ANY(ARRAY(
                SELECT id FROM jobs_active
                WHERE queue = 'bench_noop' AND state IN ('pending', 'retrying') AND run_at <= now()
                ORDER BY priority DESC, run_at, id
                LIMIT 100
                FOR UPDATE SKIP LOCKED
            ))
            RETURNING id, attempt, max_attempts, args, run_at, locked_at
        ), a AS (
            INSERT INTO job_attempts (job_id, queue, attempt, worker_id)
            SELECT id, 'bench_noop', attempt, 'bench_noop@explain' FROM j
        )
        SELECT id, attempt, max_attempts, args, run_at, locked_at FROM j ORDER BY id"#;
    let mut plans = Vec::new();
    for _ in 0..5 {
        let mut tx = db.pool.begin().await.expect("begin");
        let v: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {claim}"
        )))
        .fetch_one(&mut *tx)
        .await
        .expect("explain the claim");
        tx.rollback().await.expect("rollback");
        let v = &v[0];
        let root = &v["Plan"];
        // The root counts what the statement's result pulls (the UPDATE); the attempts insert,
        // a CTE nothing reads, runs after it and is counted apart.
        let (hit, read) = plan_buffers(root, &|n| std::ptr::eq(n, root));
        let (ins_hit, ins_read) = plan_buffers(root, &|n| {
            n["Node Type"] == "ModifyTable" && n["Operation"] == "Insert"
        });
        let planning = |k: &str| v["Planning"][k].as_u64().unwrap_or(0);
        plans.push(ClaimPlan {
            planning_ms: v["Planning Time"].as_f64().unwrap_or(f64::NAN),
            execution_ms: v["Execution Time"].as_f64().unwrap_or(f64::NAN),
            hit: hit + ins_hit,
            read: read + ins_read,
            planning_hit: planning("Shared Hit Blocks"),
            planning_read: planning("Shared Read Blocks"),
        });
    }
    let mut tx = db.pool.begin().await.expect("begin");
    let text: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS) {claim}"
    )))
    .fetch_all(&mut *tx)
    .await
    .expect("explain the claim");
    tx.rollback().await.expect("rollback");
    eprintln!("the claim's plan:\n{}", text.join("\n"));
    plans.sort_by(|a, b| a.execution_ms.total_cmp(&b.execution_ms));
    plans[plans.len() / 2].clone()
}

/// The job runtime's figures with `rows` finished jobs in the table (retention pruning meanwhile).
struct History {
    db: TestDb,
    rows: usize,
    /// Seconds: the inserts, the VACUUM ANALYZE.
    fill: (f64, f64),
    /// Jobs/s of each run and what retention pruned meanwhile.
    runs: Vec<(f64, Pruned)>,
    pickup: (f64, f64),
    pickup_pruned: Pruned,
    claim: ClaimPlan,
    /// Bytes, tables with their indexes: jobs, job_attempts, job_refs.
    sizes: (i64, i64, i64),
}

impl History {
    /// The median jobs/s of the runs, and the runs listed.
    fn rates(&self) -> (f64, String) {
        median_of(&self.runs.iter().map(|(r, _)| *r).collect::<Vec<_>>())
    }

    /// The report's rows; `base` is the first database's (None: this is it). The ratio is the
    /// median of the rounds' ratios: each round's runs came minutes apart at most.
    fn lines(&self, n: usize, base: Option<&History>) -> Vec<String> {
        let at = if self.rows == 0 {
            "on an empty jobs table".to_string()
        } else {
            format!("holding {} finished jobs", self.rows)
        };
        let pruned: Vec<String> = self.runs.iter().map(|(_, p)| p.rows.to_string()).collect();
        let total: u64 = self.runs.iter().map(|(_, p)| p.rows).sum();
        let calls: usize = self.runs.iter().map(|(_, p)| p.calls).sum();
        let longest = self
            .runs
            .iter()
            .map(|(_, p)| p.longest_ms)
            .fold(0.0, f64::max);
        let (median, runs) = self.rates();
        let rate = match base {
            None => format!("**{median:.0}**"),
            Some(b) => {
                let ratios: Vec<f64> = self
                    .runs
                    .iter()
                    .zip(&b.runs)
                    .map(|((r, _), (e, _))| r / e)
                    .collect();
                let (ratio, _) = median_of(&ratios);
                let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                format!(
                    "**{median:.0}**, **{ratio:.2} ×** (rounds: {})",
                    all.join(" / ")
                )
            }
        };
        let mb = |b: i64| b as f64 / 1024.0 / 1024.0;
        let c = &self.claim;
        let mut lines = vec![format!(
            "| history: no-op jobs/s {at} ({n} jobs, concurrency 10, batch 100; runs: {runs}; retention pruning meanwhile: {total} rows ({}) in {calls} calls, longest {longest:.0} ms){} | {rate} |",
            pruned.join(" / "),
            if base.is_some() {
                "; ratio to the empty table, the median of the rounds' (each round runs every table once)"
            } else {
                ""
            },
        )];
        lines.push(format!(
            "| history: idle pickup p50 / p99 {at} (retention pruning meanwhile: {} rows in {} calls, longest {:.0} ms) | **{:.1} ms / {:.1} ms** |",
            self.pickup_pruned.rows,
            self.pickup_pruned.calls,
            self.pickup_pruned.longest_ms,
            self.pickup.0,
            self.pickup.1
        ));
        lines.push(format!(
            "| history: the claim statement (LIMIT 100 of 1,000 pending jobs), EXPLAIN (ANALYZE, BUFFERS), median of 5, {at}: planning / execution; shared buffers hit / read, the planning's hit / read | {:.2} ms / **{:.2} ms**; {} / {}, planning {} / {} |",
            c.planning_ms, c.execution_ms, c.hit, c.read, c.planning_hit, c.planning_read
        ));
        let filled = if self.rows == 0 {
            String::new()
        } else {
            format!(
                " (written in {:.0} s, VACUUM ANALYZE {:.0} s)",
                self.fill.0, self.fill.1
            )
        };
        lines.push(format!(
            "| history: on disk {at}{filled}: jobs / job_attempts / job_refs, each with its indexes | {:.0} MiB / {:.0} MiB / {:.0} MiB |",
            mb(self.sizes.0),
            mb(self.sizes.1),
            mb(self.sizes.2)
        ));
        lines
    }
}

/// A fresh database holding `rows` finished jobs ([`fill_history`]), checkpointed, with its
/// sizes read. `BENCH_HISTORY_SQL` runs after the fill on the `index`th database and those after
/// it, from `BENCH_HISTORY_SQL_FROM` (default 0: all).
async fn history_db(index: usize, rows: usize, retention: Duration) -> History {
    let db = TestDb::new().await;
    let mut fill = (0.0, 0.0);
    if rows > 0 {
        fill = fill_history(&db.pool, rows, retention).await;
        eprintln!(
            "{rows} finished jobs written in {:.0} s, VACUUM ANALYZE in {:.0} s",
            fill.0, fill.1
        );
    }
    // Experiments: BENCH_HISTORY_SQL (statements, `;`-separated) runs after the fill.
    let from: usize = std::env::var("BENCH_HISTORY_SQL_FROM")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    if index >= from {
        schema_experiment(&db.pool, "BENCH_HISTORY_SQL").await;
    }
    // The fill's gigabytes are dirty in shared buffers and the WAL: without a checkpoint here,
    // the checkpointer writes them back during the measurement (measured: 0.71× of the empty
    // table's jobs/s at 5M, the claim's plan unchanged), a cost of the fill, not of the table.
    if let Err(e) = sqlx::query("CHECKPOINT").execute(&db.pool).await {
        eprintln!("CHECKPOINT failed ({e}): the fill's writeback may overlap the measurement");
    }
    let sizes: (i64, i64, i64) = sqlx::query_as(
        // `jobs` is partitioned (active, finished): its size is its partitions'.
        "SELECT (SELECT sum(pg_total_relation_size(relid))::int8 FROM pg_partition_tree('jobs')), pg_total_relation_size('job_attempts'), pg_total_relation_size('job_refs')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("sizes");
    History {
        db,
        rows,
        fill,
        runs: Vec::new(),
        pickup: (0.0, 0.0),
        pickup_pruned: Pruned::default(),
        claim: ClaimPlan::default(),
        sizes,
    }
}

/// Measures no-op throughput (`runs` runs of `n` jobs), idle pickup (`samples`) and the claim
/// statement on each of `dbs`, while retention prunes beside each measurement. The databases
/// take turns, run by run, in an order reversed every round: on this machine two runs minutes
/// apart differ more than an empty table and a full one do (12-07: the same 5M comparison read
/// 0.59× and 0.92× in two runs ten minutes apart), so each round's runs share a moment.
async fn measure_history(
    dbs: &mut [History],
    n: usize,
    runs: usize,
    samples: usize,
    retention: Duration,
) {
    for round in 0..runs {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..dbs.len()).collect()
        } else {
            (0..dbs.len()).rev().collect()
        };
        for i in order {
            let h = &mut dbs[i];
            let pruner = Pruner::start(&h.db.pool, retention);
            let rate = throughput_on(&h.db, n, Shape::STANDARD).await;
            let pruned = pruner.stop().await;
            eprintln!("{}: {rate:.0} jobs/s, pruned meanwhile {pruned:?}", h.rows);
            h.runs.push((rate, pruned));
        }
    }
    for h in dbs.iter_mut() {
        let pruner = Pruner::start(&h.db.pool, retention);
        let ((p50, p99), _) = pickup_on(&h.db, samples).await;
        h.pickup = (p50, p99);
        h.pickup_pruned = pruner.stop().await;
        eprintln!("{}: pickup p50 {p50:.1} ms, p99 {p99:.1} ms", h.rows);
        h.claim = explain_claim(&h.db).await;
        let tables: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT relname::text, n_live_tup, n_dead_tup, coalesce(n_tup_del, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname IN ('jobs_active', 'jobs_finished', 'job_attempts', 'job_refs') ORDER BY relname",
        )
        .fetch_all(&h.db.pool)
        .await
        .expect("table stats");
        eprintln!(
            "{}: (table, live, dead, deleted, index scans) after the runs: {tables:?}",
            h.rows
        );
    }
}

/// The peers' rows: apalis-postgres 1.0 and graphile-worker (tuned) over their no-op jobs,
/// `runs` times each, every run of a peer right after a run of Granary in the same shape (so
/// each pair shares the machine's moment): apalis-postgres beside [`Shape::STANDARD`] (one
/// worker, concurrency 10, batch 100: its knobs set alike), graphile-worker beside
/// [`Shape::LIKE_GRAPHILE`]. Each row gives the medians and Granary's ratio.
async fn peers((apalis_n, graphile_n): (usize, usize), runs: usize) -> Vec<String> {
    let cell = |e: &str| e.replace('|', "/").replace('\n', " ");
    let mut lines = Vec::new();

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut failed = None;
    let n = apalis_n;
    for _ in 0..runs {
        ours.push(throughput(n, Shape::STANDARD).await);
        match granary_tests::peers::apalis_postgres_noop(n).await {
            Ok(r) => theirs.push(r),
            Err(e) => {
                failed = Some(format!("failed: {e:#}"));
                break;
            }
        }
    }
    let (granary, granary_all) = median_of(&ours);
    lines.push(match failed {
        None => {
            let (apalis, all) = median_of(&theirs);
            format!(
                "| peer: apalis-postgres 1.0, no-op jobs/s ({n} jobs; one worker, concurrency 10, batch 100, LISTEN/NOTIFY; runs: {all}) beside Granary in the same shape (runs: {granary_all}): apalis, Granary, Granary's ratio | {apalis:.0}, **{granary:.0}**, **{:.2} ×** |",
                granary / apalis
            )
        }
        Some(e) => format!(
            "| peer: apalis-postgres 1.0, no-op jobs/s ({n} jobs) | {} |",
            cell(&e)
        ),
    });
    eprintln!("apalis-postgres done");

    let version = granary_tests::peers::GRAPHILE_VERSION;
    let config = granary_tests::peers::GraphileConfig::from_env();
    let what = config.as_ref().map_or_else(|e| e.clone(), |c| c.describe());
    let shape = Shape::LIKE_GRAPHILE;
    let n = graphile_n;
    let graphile: Result<(Vec<f64>, Vec<f64>), String> = async {
        let config = config?;
        let driver = granary_tests::peers::GraphileDriver::install().await?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            ours.push(throughput(n, shape).await);
            theirs.push(driver.noop(n, &config).await?);
        }
        Ok((ours, theirs))
    }
    .await;
    lines.push(match graphile {
        Ok((ours, theirs)) => {
            let (graphile, all) = median_of(&theirs);
            let (tuned, tuned_all) = median_of(&ours);
            format!(
                "| peer: graphile-worker {version}, no-op jobs/s ({n} jobs; tuned: {what}; runs: {all}) beside Granary in its shape ({}; runs: {tuned_all}): graphile-worker, Granary, Granary's ratio; the ratio of Granary's standard shape (the apalis row's median) | {graphile:.0}, **{tuned:.0}**, **{:.2} ×**; {:.2} × |",
                shape.describe(),
                tuned / graphile,
                granary / graphile
            )
        }
        Err(e) => format!(
            "| peer: graphile-worker {version}, no-op jobs/s ({n} jobs; tuned: {what}) | {} |",
            cell(&e)
        ),
    });
    eprintln!("graphile-worker done");
    lines
}

#[tokio::main]
async fn main() {
    // BENCH_LOG=granary_queue=debug shows the runtime's claims and flushes as they happen.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let q = quick();
    // The api and the worker are this binary's siblings, built in the same `cargo build`
    // (building them from here with other packages selected would resolve features
    // differently and recompile the shared dependencies).
    let bin = std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("folder")
        .to_path_buf();
    for b in ["granary-api", "granary-worker"] {
        assert!(
            bin.join(b).exists(),
            "{b} is missing next to granary-bench: run `cargo build --release --workspace --bins` first"
        );
    }
    let body = clerk_body();
    let pg_secs = if q { 3 } else { 10 };
    let run_started = chrono::Utc::now();
    let run_cpu = CpuMeter::start();
    let mut out = String::new();
    let _ = writeln!(out, "| measure | result |\n|---|---|");

    // 1 and 2: the ceiling and the ingest path, side by side.
    for c in [1usize, 8, 32] {
        if !phase("ingest") {
            break;
        }
        let db = TestDb::new().await;
        sqlx::query("CREATE TABLE bench_hooks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, provider text NOT NULL, event_id text NOT NULL, body bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now())")
            .execute(&db.pool)
            .await
            .expect("bench table");
        let ceiling = pgbench(&db, &body, c, pg_secs);
        drop(db);
        let scale: usize = std::env::var("BENCH_INGEST_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let total = scale * if q { 300 * c.min(4) } else { 1500 * c.min(4) };
        let (l, cpu) = ingest(&bin, &body, c, total).await;
        let _ = writeln!(
            out,
            "| ceiling: pgbench single-row insert of the {} B body, {c} client(s) | **{ceiling:.0} tps** |",
            body.len()
        );
        let _ = writeln!(
            out,
            "| webhook ingest, {c} connection(s) ({total} signed Clerk deliveries): req/s, p50, p99, share of ceiling | **{:.0}**, {:.1} ms, {:.1} ms, **{:.0}%** |",
            l.rate,
            l.p50,
            l.p99,
            100.0 * l.rate / ceiling
        );
        if c == 32 {
            let _ = writeln!(
                out,
                "| where the CPU went during ingest at {c} connections (% of one core; {} = the machine) | {cpu} |",
                100 * cores()
            );
        }
        eprintln!("{c} clients done");
    }

    // 3: the job runtime, beside the raw-SQL floor measured in this run.
    let n = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if q { 2000 } else { 20_000 });
    let mut floor = None;
    if phase("jobs") || phase("e2e") {
        let mut runs = Vec::new();
        for _ in 0..if q { 1 } else { 3 } {
            runs.push(raw_floor(if q { 300 } else { 2000 }).await);
        }
        runs.sort_by(f64::total_cmp);
        let (median, all) = median_of(&runs);
        let _ = writeln!(
            out,
            "| raw-SQL floor: pgbench, 10 clients, claim 10 + complete 10 per transaction (runs: {all}) | **{median:.0} jobs/s** |"
        );
        floor = Some(median);
        eprintln!("raw floor done");
    }
    if phase("jobs") {
        let mut runs = Vec::new();
        for _ in 0..if q { 1 } else { 3 } {
            runs.push(throughput(n, Shape::STANDARD).await);
        }
        runs.sort_by(f64::total_cmp);
        let (median, all) = median_of(&runs);
        let _ = writeln!(
            out,
            "| no-op jobs/s ({n} jobs, concurrency 10, batch 100; runs: {all}): jobs/s, ratio to the raw floor | **{median:.0}**, **{:.2} ×** |",
            median / floor.unwrap_or(f64::NAN)
        );
        let ((p50, p99), (c50, c99)) = pickup_latency(if q { 50 } else { 200 }).await;
        let _ = writeln!(
            out,
            "| idle pickup latency p50 / p99 (enqueue → handler start: the enqueue's insert and commit, its WAL flush included); the enqueue's insert and commit alone, p50 / p99 | **{p50:.1} ms / {p99:.1} ms**; {c50:.1} ms / {c99:.1} ms |"
        );
        eprintln!("job runtime done");
    }

    // The peers: other PostgreSQL job queues' no-op throughput, measured as `throughput`
    // measures Granary's, on the same server in the same run, beside this run's Granary figure.
    if phase("peers") {
        // apalis-postgres at the jobs phase's size: its claim slows as its table fills
        // (4.3k jobs/s at 100,000 against 16k at 20,000 on 2026-12-07), and the comparison
        // takes each peer at its best. graphile-worker over more jobs: 20,000 take it half a
        // second, which its start-up would dominate.
        let sizes = (n, if q { 20_000 } else { 100_000 });
        for line in peers(sizes, if q { 1 } else { 3 }).await {
            let _ = writeln!(out, "{line}");
        }
    }

    // 4 and 5: end to end, and the footprint.
    if phase("e2e") {
        // BENCH_E2E=<steady seconds>,<burst orders> overrides the sizes (for profiling runs).
        let sizes = std::env::var("BENCH_E2E").ok().and_then(|v| {
            let (s, b) = v.split_once(',')?;
            Some((s.trim().parse().ok()?, b.trim().parse().ok()?))
        });
        let (steady_secs, burst_orders) = sizes.unwrap_or(if q { (5, 300) } else { (30, 2000) });
        let e = end_to_end(&bin, steady_secs, burst_orders).await;
        let (reference, reference_cpu, reference_writes) = handlers_only(burst_orders).await;
        let _ = writeln!(
            out,
            "| end to end at a steady 50 orders/s ({} orders): payment webhook sent → receipt at Resend, p50 / p99 | **{:.0} ms / {:.0} ms** |",
            e.steady_orders, e.steady.p50, e.steady.p99
        );
        let _ = writeln!(
            out,
            "| end to end, burst of {} payments over 32 connections (accepted in {:.1} s): orders fulfilled and receipted per second (3 jobs each: their share of the raw floor); latency p50 / p99 | **{:.0} orders/s** ({:.0}%); {:.1} s / {:.1} s |",
            e.burst_orders,
            e.burst_accept_secs,
            e.burst.rate,
            300.0 * e.burst.rate / floor.unwrap_or(f64::NAN),
            e.burst.p50 / 1000.0,
            e.burst.p99 / 1000.0
        );
        let _ = writeln!(
            out,
            "| reference for the burst: the same {} orders' handlers called directly, no HTTP and no job runtime (32 at a time, one pool of 20): orders/s, and the burst's ratio to it | **{reference:.0} orders/s**, burst at **{:.2} ×** |",
            e.burst_orders,
            e.burst.rate / reference
        );
        let _ = writeln!(
            out,
            "| where the CPU went (% of one core; {} = the machine): during the burst / during its reference (`bench` runs the handlers there) | {} / {reference_cpu} |",
            100 * cores(),
            e.burst_cpu
        );
        let _ = writeln!(
            out,
            "| peak RSS over the end-to-end run: api / worker | **{:.0} MiB / {:.0} MiB** |",
            e.api_rss_mib, e.worker_rss_mib
        );
        let _ = writeln!(
            out,
            "| written per paid order, payment webhook to receipt ({} orders, steady and burst; WAL is the server's) | {} |",
            e.writes.orders, e.writes
        );
        let _ = writeln!(
            out,
            "| written per order by the burst's reference (its handlers alone: no job runtime, no HTTP) | {reference_writes} |"
        );
    }

    if phase("console") {
        let rows = if q { 100_000 } else { 1_000_000 };
        for line in console_pages(&bin, rows).await {
            let _ = writeln!(out, "{line}");
        }
        eprintln!("console done");
    }

    if phase("history") {
        // Retention as the runtime is configured by default (JOB_RETENTION_HOURS).
        let retention = Config::from_map(&base_env("postgres://localhost/bench"))
            .expect("config")
            .worker
            .retention;
        let _ = writeln!(
            out,
            "| history: retention age pruned to (the default `JOB_RETENTION_HOURS`), by `prune_completed` every second beside each measurement; finished jobs written over it and 1% more | {} h |",
            retention.as_secs() / 3600
        );
        // BENCH_HISTORY=<rows>,<rows>,… picks the sizes (the first is the ratios' base).
        let sizes: Vec<usize> = match std::env::var("BENCH_HISTORY") {
            Ok(v) => v
                .split(',')
                .map(|r| r.trim().parse().expect("BENCH_HISTORY"))
                .collect(),
            Err(_) if q => vec![0, 100_000, 500_000],
            Err(_) => vec![0, 1_000_000, 5_000_000],
        };
        let mut dbs = Vec::new();
        for (i, rows) in sizes.into_iter().enumerate() {
            dbs.push(history_db(i, rows, retention).await);
        }
        let rounds = std::env::var("BENCH_HISTORY_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(if q { 1 } else { 5 });
        measure_history(&mut dbs, n, rounds, if q { 50 } else { 200 }, retention).await;
        for (i, h) in dbs.iter().enumerate() {
            for line in h.lines(n, (i > 0).then(|| &dbs[0])) {
                let _ = writeln!(out, "{line}");
            }
        }
        eprintln!("history done");
    }

    // The run's header, with what the hypervisor took from this VM over the whole run: figures
    // from runs with much steal are lower across the board.
    let out = format!(
        "Machine: {}. Run: {}. Command: `cargo build --release --workspace --bins && target/release/granary-bench`. \
         CPU taken by the hypervisor over the run (steal): {:.0}% of one core on average.\n\n{out}",
        machine(),
        run_started.format("%Y-%m-%d %H:%M UTC"),
        run_cpu.steal()
    );
    print!("{out}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("latest.md");
    std::fs::write(&file, &out).expect("write the table");
    eprintln!("written to {}", file.display());
}
