//! Fault injection with the real binaries: SIGKILL at random points during a burst of paid
//! orders, two workers on the same queues, PostgreSQL restarted during a burst of webhooks, and
//! Resend down for a minute. Each test states its invariant and counts rows to check it.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use granary_jobs::queue::probe::Probe;
use granary_tests::{
    TestApp, base_env, count, enqueue, free_port, pgcluster::PrivateCluster, shop::Shop, sign,
    stripe::checkout_completed, wait_for_count, wait_healthy, worker::WorkerProcess,
};
use sqlx::{Connection as _, PgConnection, postgres::PgPoolOptions};
use uuid::Uuid;

fn jitter_ms(lo: u64, hi: u64) -> u64 {
    lo + u64::from(Uuid::new_v4().as_bytes()[0]) * (hi - lo) / 255
}

#[tokio::test]
async fn a_burst_of_paid_orders_survives_repeated_kill_9_and_is_fulfilled_exactly_once() {
    burst_under_kill_9(false).await;
}

/// The same burst with the handlers that can completing their jobs in their own commits
/// (`JOB_COMPLETE_IN_COMMIT`): kills land inside and right after those commits too.
#[tokio::test]
async fn a_burst_of_paid_orders_completing_in_their_commits_survives_repeated_kill_9_once() {
    burst_under_kill_9(true).await;
}

async fn burst_under_kill_9(complete_in_commit: bool) {
    // Invariant: every order fulfilled once — one entitlement, one grant and one receipt each —
    // and no job left claimed, however often the worker dies mid-burst.
    let app = TestApp::spawn().await;
    Shop::seed(&app.db_pool)
        .await
        .orders(&app.db_pool, "burst", 200, true)
        .await;
    let mut env: Vec<(String, String)> = base_env(&app.db.url).into_iter().collect();
    env.push((
        "ASSET_STORAGE_FS_ROOT".into(),
        app.storage_root.to_string_lossy().into_owned(),
    ));
    env.push(("WORKER_CONCURRENCY_DEFAULT".into(), "4".into()));
    env.push((
        "JOB_COMPLETE_IN_COMMIT".into(),
        complete_in_commit.to_string(),
    ));
    let mut worker = WorkerProcess::start(&env);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(jitter_ms(300, 1500))).await;
        worker.kill9();
        worker = WorkerProcess::start(&env);
    }
    let long = Duration::from_secs(120);
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        200,
        long,
    )
    .await;
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM jobs WHERE state <> 'completed'",
        0,
        long,
    )
    .await;
    worker.wait_registered(&app.db_pool, long).await;
    assert!(worker.terminate());
    let p = &app.db_pool;
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM entitlements WHERE source_type = 'order_item'"
        )
        .await,
        200
    );
    assert_eq!(count(p, "SELECT count(*) FROM download_grants").await, 200);
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM emails WHERE kind = 'receipt' AND status = 'outbox'"
        )
        .await,
        200
    );
    assert_eq!(count(p, "SELECT count(*) FROM (SELECT order_id FROM emails GROUP BY order_id HAVING count(*) > 1) d").await, 0);
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM job_attempts WHERE outcome IN ('running', 'failed', 'discarded')"
        )
        .await,
        0
    );
    // Which path completed the fulfillments: the transaction that made an order `fulfilled`
    // also completed its job, or the completer did later.
    let in_commit = count(
        p,
        "SELECT count(*) FROM jobs j JOIN job_refs r ON r.job_id = j.id JOIN orders o ON o.id = r.order_id
         WHERE j.queue = 'fulfill_order' AND j.xmin = o.xmin",
    )
    .await;
    if complete_in_commit {
        assert!(in_commit > 0, "no fulfillment completed in its own commit");
    } else {
        assert_eq!(
            in_commit, 0,
            "the completer's path writes in a later commit"
        );
    }
}

#[tokio::test]
async fn two_worker_processes_never_run_a_job_twice() {
    // Invariant: with two workers on the same queues and no crash, each job runs exactly once.
    let app = TestApp::spawn().await;
    let env: Vec<(String, String)> = base_env(&app.db.url).into_iter().collect();
    let a = WorkerProcess::start(&env);
    let b = WorkerProcess::start(&env);
    wait_for_count(
        &app.db_pool,
        "SELECT count(DISTINCT id) FROM job_workers WHERE queue = 'probe'",
        2,
        Duration::from_secs(60),
    )
    .await;
    for i in 0..300 {
        enqueue(
            &app.db_pool,
            &Probe {
                key: format!("p{i}"),
                ..Probe::default()
            },
        )
        .await;
    }
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects",
        300,
        Duration::from_secs(60),
    )
    .await;
    assert!(a.terminate() && b.terminate());
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM job_probe_runs").await,
        300,
        "no job ran twice"
    );
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM job_attempts").await,
        300
    );
}

#[tokio::test]
async fn resend_down_for_a_minute_then_back_sends_every_email_exactly_once() {
    // Invariant: while Resend refuses connections every receipt waits, its refused attempts
    // recorded with their errors; once Resend is back each receipt is delivered exactly once
    // (one Idempotency-Key, one delivery, one `sent` row) and no job is left failed.
    const ORDERS: i64 = 20;
    let app = TestApp::builder()
        .with_resend()
        .with_worker()
        // Production's backoff base (2 s), capped at 10 s so the retries straddle the minute
        // without the test then waiting out a 64 s delay (12 attempts still span ~100 s).
        .env("JOB_BACKOFF_BASE_MS", "2000")
        .env("JOB_BACKOFF_CAP_SECONDS", "10")
        .spawn()
        .await;
    let resend = app.resend.clone().expect("resend stand-in");
    resend.down().await;
    let went_down = Instant::now();
    Shop::seed(&app.db_pool)
        .await
        .orders(&app.db_pool, "rd", ORDERS as usize, true)
        .await;
    let p = &app.db_pool;
    // Every receipt has been tried and refused at least once.
    wait_for_count(
        p,
        "SELECT count(DISTINCT r.email_id) FROM job_refs r JOIN job_attempts a ON a.job_id = r.job_id \
         WHERE r.queue = 'send_email' AND a.outcome = 'retry'",
        ORDERS,
        Duration::from_secs(45),
    )
    .await;
    tokio::time::sleep_until((went_down + Duration::from_secs(60)).into()).await;
    assert!(
        resend.received().is_empty(),
        "nothing can reach Resend while it is down"
    );
    assert_eq!(
        count(p, "SELECT count(*) FROM emails WHERE status <> 'pending'").await,
        0,
        "every receipt is still pending after a minute of outage"
    );
    resend.up().await;
    let back = Duration::from_secs(90);
    wait_for_count(
        p,
        "SELECT count(*) FROM emails WHERE kind = 'receipt' AND status = 'sent' AND provider_message_id IS NOT NULL",
        ORDERS,
        back,
    )
    .await;
    wait_for_count(
        p,
        "SELECT count(*) FROM jobs WHERE state <> 'completed'",
        0,
        back,
    )
    .await;

    let delivered = resend.delivered();
    assert_eq!(delivered.len() as i64, ORDERS, "one delivery per receipt");
    let keys: HashSet<String> = delivered
        .iter()
        .map(|r| r.idempotency_key.clone().expect("every send carries a key"))
        .collect();
    assert_eq!(keys.len() as i64, ORDERS, "each receipt its own key");
    assert_eq!(count(p, "SELECT count(*) FROM emails").await, ORDERS);
    // Per send_email job: exactly one success, at least one refused attempt before it, each
    // refused attempt with its error, and none given up on.
    let per_job: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.job_id, \
                count(*) FILTER (WHERE a.outcome = 'succeeded'), \
                count(*) FILTER (WHERE a.outcome = 'retry'), \
                count(*) FILTER (WHERE a.outcome = 'retry' AND coalesce(a.error, '') = ''), \
                count(*) FILTER (WHERE a.outcome NOT IN ('succeeded', 'retry')) \
         FROM job_attempts a WHERE a.queue = 'send_email' GROUP BY a.job_id",
    )
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(per_job.len() as i64, ORDERS);
    for (job, ok, retries, silent, other) in per_job {
        assert_eq!(ok, 1, "job {job}: one success");
        assert!(
            retries >= 2,
            "job {job}: refused attempts are visible ({retries})"
        );
        assert_eq!(silent, 0, "job {job}: every refused attempt says why");
        assert_eq!(other, 0, "job {job}: no attempt failed for good");
    }
}

/// What a delivery got back.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    NoAnswer(String),
}

impl Answer {
    fn ok(&self) -> bool {
        matches!(self, Answer::Status(s) if (200..300).contains(s))
    }
}

async fn deliver_stripe(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> Answer {
    let raw = serde_json::to_vec(body).unwrap();
    let header = sign::stripe_header(sign::STRIPE_SECRET, sign::now(), &raw);
    match client
        .post(url)
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
    {
        Ok(res) => Answer::Status(res.status().as_u16()),
        Err(e) => Answer::NoAnswer(e.to_string()),
    }
}

#[tokio::test]
async fn postgres_restarted_during_a_webhook_burst_loses_no_acknowledged_delivery() {
    // Invariant: every delivery answered 2xx is stored; every delivery not stored was answered
    // 5xx (or not at all), so the provider retries it; after those retries every order is paid
    // and fulfilled exactly once (one stored event, one payment, one entitlement, one grant,
    // one receipt each), and no job is left unfinished, whatever the restart cut mid-flight.
    const N: usize = 300;
    let interval = Duration::from_millis(33); // a steady ~30 deliveries/s for 10 s
    let cluster = Arc::new(PrivateCluster::start());
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE granary")
        .execute(&mut admin)
        .await
        .unwrap();
    drop(admin);
    let url = cluster.url("granary");
    let setup = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    granary_jobs::platform::db::migrate(&setup).await.unwrap();
    let ids = Shop::seed(&setup)
        .await
        .orders(&setup, "pgr", N, false)
        .await;
    setup.close().await;

    let port = free_port();
    let storage = std::env::temp_dir().join(format!("granary-pgr-{}", Uuid::new_v4().simple()));
    let mut env: Vec<(String, String)> = base_env(&url).into_iter().collect();
    env.extend(
        [
            ("PORT", port.to_string()),
            ("BIND_HOST", "127.0.0.1".to_string()),
            ("STRIPE_WEBHOOK_SECRET", sign::STRIPE_SECRET.to_string()),
            (
                "ASSET_STORAGE_FS_ROOT",
                storage.to_string_lossy().into_owned(),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let api = WorkerProcess::start_api(&env);
    let worker = WorkerProcess::start(&env);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_healthy(&base, Duration::from_secs(60)).await;

    // The restart: 2 s into the burst the server stops at once (as a crash would) and stays
    // down for 6 s, longer than the api's 5 s wait for a connection.
    let restart = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || c.stop_immediate())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(6)).await;
            tokio::task::spawn_blocking(move || cluster.start_again())
                .await
                .unwrap();
        })
    };
    let url_hook = format!("{base}/api/webhooks/stripe/");
    let started = tokio::time::Instant::now();
    let mut sends = Vec::new();
    for (i, public_id) in ids.iter().enumerate() {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let (client, url_hook) = (client.clone(), url_hook.clone());
        let body = checkout_completed(&format!("evt_pgr_{i}"), public_id, 500);
        sends.push(tokio::spawn(async move {
            (deliver_stripe(&client, &url_hook, &body).await, body)
        }));
    }
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    restart.await.unwrap();

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let stored: HashSet<String> = sqlx::query_scalar(
        "SELECT event_id FROM webhook_events WHERE provider = 'stripe' AND status <> 'rejected'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut refused = 0;
    for (i, (answer, _)) in answers.iter().enumerate() {
        let evt = format!("evt_pgr_{i}");
        if answer.ok() {
            assert!(
                stored.contains(&evt),
                "{evt} was answered 2xx but is not stored"
            );
        } else {
            refused += 1;
            if let Answer::Status(s) = answer {
                assert!(
                    *s >= 500,
                    "{evt} was answered {s}: only 5xx makes a provider retry"
                );
            }
        }
        if !stored.contains(&evt) {
            assert!(
                !answer.ok(),
                "{evt} is not stored but was answered {answer:?}"
            );
        }
    }
    let reasons: Vec<String> = answers
        .iter()
        .filter(|(a, _)| !a.ok())
        .map(|(a, _)| match a {
            Answer::Status(s) => format!("HTTP {s}"),
            Answer::NoAnswer(e) => format!("no answer: {e}"),
        })
        .collect();
    eprintln!("{refused} of {N} deliveries refused during the restart: {reasons:?}");
    assert!(
        refused > 0,
        "the restart fell inside the burst: some deliveries must have been refused; server log:\n{}",
        cluster.log()
    );

    // The provider retries every delivery that did not get a 2xx, until one does.
    for (answer, body) in answers.iter().filter(|(a, _)| !a.ok()) {
        let mut last = answer.clone();
        for _ in 0..40 {
            last = deliver_stripe(&client, &url_hook, body).await;
            if last.ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            last.ok(),
            "a retried delivery is accepted once PostgreSQL is back: {last:?}"
        );
    }

    let long = Duration::from_secs(120);
    wait_for_count(
        &pool,
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        N as i64,
        long,
    )
    .await;
    wait_for_count(
        &pool,
        "SELECT count(*) FROM jobs WHERE state <> 'completed'",
        0,
        long,
    )
    .await;
    assert!(
        worker.terminate(),
        "the worker outlived the restart and stops cleanly"
    );
    assert!(
        api.terminate(),
        "the api outlived the restart and stops cleanly"
    );
    let n = N as i64;
    for (sql, want) in [
        (
            "SELECT count(*) FROM webhook_events WHERE provider = 'stripe' AND status = 'processed'",
            n,
        ),
        (
            "SELECT count(*) FROM webhook_events WHERE status <> 'processed'",
            0,
        ),
        (
            "SELECT count(*) FROM payment_transactions WHERE provider = 'stripe'",
            n,
        ),
        (
            "SELECT count(*) FROM entitlements WHERE source_type = 'order_item'",
            n,
        ),
        ("SELECT count(*) FROM download_grants", n),
        ("SELECT count(*) FROM emails WHERE kind = 'receipt'", n),
        (
            "SELECT count(*) FROM (SELECT order_id FROM emails GROUP BY order_id HAVING count(*) > 1) d",
            0,
        ),
        (
            "SELECT count(*) FROM job_attempts WHERE outcome IN ('running', 'failed', 'discarded')",
            0,
        ),
    ] {
        assert_eq!(count(&pool, sql).await, want, "{sql}");
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(storage);
}
