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
//!    on the same table as the reference.
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

async fn runtime_for(
    db: &TestDb,
    tx: Option<mpsc::UnboundedSender<i64>>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut env = base_env(&db.url);
    env.insert("WORKER_CONCURRENCY_DEFAULT".into(), "10".into());
    env.insert("WORKER_BATCH_SIZE".into(), "100".into());
    env.insert("WORKER_POLL_INTERVAL_MS".into(), "1000".into());
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

async fn throughput(n: usize) -> f64 {
    let db = TestDb::new().await;
    // The runtime is up and idle first: like pgbench's tps, the figure leaves out connecting.
    let (token, handle) = runtime_for(&db, None).await;
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
        // Through the claim and running indexes: no scan of the whole table while it runs.
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
    token.cancel();
    let _ = handle.await;
    n as f64 / secs
}

/// Returns p50 and p99 of enqueue → handler start, and of the enqueue's own insert and commit
/// (its reference: the part the runtime does not control, the commit's WAL flush above all).
async fn pickup_latency(samples: usize) -> ((f64, f64), (f64, f64)) {
    let db = TestDb::new().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (token, handle) = runtime_for(&db, Some(tx)).await;
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
    let _ = std::fs::remove_dir_all(storage);
    EndToEnd {
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
async fn handlers_only(orders: usize) -> (f64, String) {
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
    assert_eq!(
        resend.delivered_count(),
        orders,
        "every receipt reached the Resend stand-in"
    );
    (rate, cpu)
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
    let n = if q { 2000 } else { 20_000 };
    let mut floor = None;
    if phase("jobs") || phase("e2e") {
        let mut runs = Vec::new();
        for _ in 0..if q { 1 } else { 3 } {
            runs.push(raw_floor(if q { 300 } else { 2000 }).await);
        }
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let all: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        let _ = writeln!(
            out,
            "| raw-SQL floor: pgbench, 10 clients, claim 10 + complete 10 per transaction (runs: {}) | **{median:.0} jobs/s** |",
            all.join(" / ")
        );
        floor = Some(median);
        eprintln!("raw floor done");
    }
    if phase("jobs") {
        let mut runs = Vec::new();
        for _ in 0..if q { 1 } else { 3 } {
            runs.push(throughput(n).await);
        }
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let all: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        let _ = writeln!(
            out,
            "| no-op jobs/s ({n} jobs, concurrency 10, batch 100; runs: {}): jobs/s, ratio to the raw floor | **{median:.0}**, **{:.2} ×** |",
            all.join(" / "),
            median / floor.unwrap_or(f64::NAN)
        );
        let ((p50, p99), (c50, c99)) = pickup_latency(if q { 50 } else { 200 }).await;
        let _ = writeln!(
            out,
            "| idle pickup latency p50 / p99 (enqueue → handler start: the enqueue's insert and commit, its WAL flush included); the enqueue's insert and commit alone, p50 / p99 | **{p50:.1} ms / {p99:.1} ms**; {c50:.1} ms / {c99:.1} ms |"
        );
        eprintln!("job runtime done");
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
        let (reference, reference_cpu) = handlers_only(burst_orders).await;
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
    }

    if phase("console") {
        let rows = if q { 100_000 } else { 1_000_000 };
        for line in console_pages(&bin, rows).await {
            let _ = writeln!(out, "{line}");
        }
        eprintln!("console done");
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
