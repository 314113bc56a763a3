//! `cargo run --release -p granary-tests --bin granary-bench`: measures the job runtime and the
//! webhook ingest path on this machine's PostgreSQL and prints a markdown table (README keeps
//! the latest). Not a test: nothing here asserts a timing.
//!
//! - no-op job throughput: N jobs bulk-enqueued, one runtime with concurrency 10, timed until
//!   all are done (median of 3 runs);
//! - idle pickup latency: one job at a time into an idle runtime, commit → handler start;
//! - webhook ingest: signed Clerk deliveries at 1, 8 and 32 concurrent connections.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use granary_jobs::{
    Config,
    queue::{Job, JobContext, JobError, Registry, enqueue, runtime},
};
use granary_tests::{TestApp, TestDb, base_env, sign};
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
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

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
    let pool = granary_jobs::db::pool(&config, 20).expect("pool");
    let registry = Registry::new().register(move |_ctx: JobContext, job: Noop| {
        let tx = tx.clone();
        async move {
            if let Some(tx) = tx {
                let _ = tx.send(micros() - job.sent_at_micros);
            }
            Ok::<(), JobError>(())
        }
    });
    let token = CancellationToken::new();
    let handle = tokio::spawn(runtime::run(pool, config, registry, token.clone()));
    (token, handle)
}

async fn throughput(n: usize) -> f64 {
    let db = TestDb::new().await;
    for chunk in 0..(n / 1000) {
        let mut tx = db.pool.begin().await.unwrap();
        for _ in 0..1000 {
            enqueue(&mut tx, &Noop { sent_at_micros: 0 }).await.unwrap();
        }
        tx.commit().await.unwrap();
        let _ = chunk;
    }
    let started = Instant::now();
    let (token, handle) = runtime_for(&db, None).await;
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status <> 'Done'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    token.cancel();
    let _ = handle.await;
    n as f64 / secs
}

async fn pickup_latency(samples: usize) -> (f64, f64) {
    let db = TestDb::new().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (token, handle) = runtime_for(&db, Some(tx)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    for _ in 0..samples {
        let mut t = db.pool.begin().await.unwrap();
        enqueue(
            &mut t,
            &Noop {
                sent_at_micros: micros(),
            },
        )
        .await
        .unwrap();
        t.commit().await.unwrap();
        let us = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("picked up")
            .unwrap();
        lat.push(us as f64 / 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    let _ = handle.await;
    lat.sort_by(f64::total_cmp);
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

async fn ingest(concurrency: usize, total: usize) -> (f64, f64, f64) {
    let app = TestApp::webhooks()
        .env("MAX_BODY_BYTES", "1048576")
        .spawn()
        .await;
    let body = serde_json::to_vec(&serde_json::json!({"type": "user.updated", "timestamp": 1, "data": {"id": "user_bench", "first_name": "Bench", "email_addresses": []}})).unwrap();
    let client = reqwest::Client::new();
    let url = app.url("/api/webhooks/clerk/");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let mut req = client.post(&url);
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
                assert_eq!(res.status(), 200);
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (
        total as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(throughput(n).await);
    }
    runs.sort_by(f64::total_cmp);
    let (p50, p99) = pickup_latency(200).await;
    println!("| measure | result |\n|---|---|");
    println!(
        "| no-op jobs/s ({n} jobs, concurrency 10, batch 100; median of 3: {:.0} / {:.0} / {:.0}) | **{:.0}** |",
        runs[0], runs[1], runs[2], runs[1]
    );
    println!(
        "| idle pickup latency p50 / p99 (200 jobs, commit → handler start) | **{p50:.1} ms / {p99:.1} ms** |"
    );
    for c in [1, 8, 32] {
        let (rps, p50, p99) = ingest(c, 2000).await;
        println!(
            "| webhook ingest, {c} connections (2,000 signed Clerk deliveries): req/s, p50, p99 | **{rps:.0}**, {p50:.1} ms, {p99:.1} ms |"
        );
    }
}
