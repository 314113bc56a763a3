//! The job runtime's guarantees (docs/queue.md's guarantees), each shown against real
//! PostgreSQL with the `probe` job kind steered to fail, panic, sleep or record its runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use granary_jobs::{
    platform::audit::{self, Actor},
    queue::{
        Enqueued, backoff, enqueue,
        ops::{self, OpError},
        probe::Probe,
        runtime,
    },
};
use granary_tests::{TestApp, base_env, count, wait_for_count, worker::WorkerProcess};
use sqlx::PgPool;

fn probe(key: &str) -> Probe {
    Probe {
        key: key.into(),
        ..Probe::default()
    }
}

#[derive(Debug, sqlx::FromRow)]
struct AttemptRow {
    worker_id: String,
    outcome: String,
    error: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
}

async fn attempts(pool: &PgPool, job_id: &str) -> Vec<AttemptRow> {
    sqlx::query_as("SELECT worker_id, outcome, error, started_at, finished_at, retry_at FROM job_attempts WHERE job_id = $1 ORDER BY attempt")
        .bind(job_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The outcomes of a job's attempts, in order.
fn outcomes(rows: &[AttemptRow]) -> Vec<&str> {
    rows.iter().map(|r| r.outcome.as_str()).collect()
}

/// Waits until job `id` has completed, or panics after `timeout`.
async fn wait_completed(app: &TestApp, id: &str, timeout: Duration) {
    app.wait_for_count(
        &format!("SELECT count(*) FROM jobs WHERE id = '{id}' AND state = 'completed'"),
        1,
        timeout,
    )
    .await;
}

async fn job_state(pool: &PgPool, job_id: &str) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM jobs WHERE id = $1",
        ops::STATE_SQL
    )))
    .bind(job_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn actor() -> Actor {
    Actor {
        name: "cli:test".into(),
        reason: Some("testing".into()),
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_rollback_leaves_no_job_and_a_commit_leaves_exactly_one() {
    let app = TestApp::spawn().await;
    let mut tx = app.db_pool.begin().await.unwrap();
    enqueue(&mut tx, &probe("rolled-back")).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM jobs").await, 0);
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM job_refs").await,
        0
    );

    let mut tx = app.db_pool.begin().await.unwrap();
    let id = enqueue(&mut tx, &probe("committed")).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(id, Enqueued::New(_)));
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM jobs WHERE queue = 'probe' AND state = 'pending'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'probe'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_duplicate_enqueue_yields_one_job_and_the_callers_transaction_stays_usable() {
    let app = TestApp::spawn().await;
    let job = Probe {
        dedupe: Some("order-42".into()),
        ..probe("d")
    };
    let mut tx = app.db_pool.begin().await.unwrap();
    let first = enqueue(&mut tx, &job).await.unwrap();
    let second = enqueue(&mut tx, &job).await.unwrap();
    assert!(matches!(first, Enqueued::New(_)));
    assert_eq!(second, Enqueued::Existing(first.id().to_string()));
    // The transaction is not aborted: it can still write, and commit.
    sqlx::query("INSERT INTO profiles (clerk_user_id) VALUES ('still-usable')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM jobs").await, 1);
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM profiles").await,
        1
    );

    // Two transactions racing on the same key: the second waits for the first and finds its job.
    let mut tx1 = app.db_pool.begin().await.unwrap();
    let other = Probe {
        dedupe: Some("order-43".into()),
        ..probe("e")
    };
    let a = enqueue(&mut tx1, &other).await.unwrap();
    let pool = app.db_pool.clone();
    let racer = {
        let other = other.clone();
        tokio::spawn(async move {
            let mut tx2 = pool.begin().await.unwrap();
            let b = enqueue(&mut tx2, &other).await.unwrap();
            tx2.commit().await.unwrap();
            b
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx1.commit().await.unwrap();
    let b = racer.await.unwrap();
    assert_eq!(b, Enqueued::Existing(a.id().to_string()));
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE dedupe_key = 'order-43'"
        )
        .await,
        1
    );

    // Without a key, two enqueues are two jobs.
    app.enqueue(&probe("f")).await;
    app.enqueue(&probe("f")).await;
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM jobs").await, 4);
}

#[tokio::test]
async fn a_job_failing_twice_then_succeeding_has_three_attempts_and_backoff_gaps() {
    let app = TestApp::builder().with_worker().spawn().await;
    let id = app
        .enqueue(&Probe {
            fail_times: 2,
            ..probe("flaky")
        })
        .await;
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'flaky'",
        1,
        WAIT,
    )
    .await;
    wait_completed(&app, &id, WAIT).await;

    let rows = attempts(&app.db_pool, &id).await;
    assert_eq!(outcomes(&rows), ["retry", "retry", "succeeded"]);
    for (i, r) in rows.iter().take(2).enumerate() {
        let err = r.error.as_deref().unwrap();
        // The whole cause chain is kept.
        assert!(
            err.contains(&format!("told to fail on attempt {}", i + 1))
                && err.contains("simulated outage"),
            "{err}"
        );
        assert!(r.worker_id.starts_with("probe@"), "{}", r.worker_id);
    }
    let base = app.config.worker.backoff_base;
    let cap = app.config.worker.backoff_cap;
    for n in 0..2 {
        let failed_at = rows[n].finished_at.unwrap();
        let retry_at = rows[n].retry_at.unwrap();
        let next_start = rows[n + 1].started_at;
        let floor =
            chrono::Duration::from_std(backoff::base_delay(n as i32 + 1, base, cap)).unwrap();
        assert!(
            retry_at - failed_at >= floor,
            "attempt {}: retry planned {:?} after failure, formula says {floor:?}",
            n + 1,
            retry_at - failed_at
        );
        assert!(
            next_start >= retry_at,
            "attempt {} started before its run_at",
            n + 2
        );
    }
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_probe_runs WHERE probe_key = 'flaky'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn a_retry_after_from_the_handler_is_honoured() {
    let app = TestApp::builder().with_worker().spawn().await;
    let id = app
        .enqueue(&Probe {
            fail_times: 1,
            retry_after_ms: Some(1500),
            ..probe("429")
        })
        .await;
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key = '429'",
        1,
        WAIT,
    )
    .await;
    let rows = attempts(&app.db_pool, &id).await;
    assert_eq!(rows.len(), 2);
    let gap = rows[1].started_at - rows[0].finished_at.unwrap();
    assert!(
        gap >= chrono::Duration::milliseconds(1500),
        "retried after {gap:?}, asked for 1.5 s"
    );
}

#[tokio::test]
async fn a_permanent_error_stops_at_once_with_its_reason() {
    let app = TestApp::builder().with_worker().spawn().await;
    let id = app
        .enqueue(&Probe {
            permanent: true,
            ..probe("doomed")
        })
        .await;
    app.wait_for_count(
        &format!(
            "SELECT count(*) FROM job_attempts WHERE job_id = '{id}' AND outcome = 'discarded'"
        ),
        1,
        WAIT,
    )
    .await;
    // Give a retry every chance to happen (the poll is 100 ms, the backoff 0.5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = attempts(&app.db_pool, &id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("told to fail permanently")
    );
    assert!(rows[0].retry_at.is_none());
    assert_eq!(job_state(&app.db_pool, &id).await, "failed");
    let last: String = sqlx::query_scalar("SELECT last_error FROM jobs WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert!(last.contains("told to fail permanently"));
}

#[tokio::test]
async fn a_panic_is_recorded_as_a_failed_attempt_and_retried() {
    let app = TestApp::builder().with_worker().spawn().await;
    let id = app
        .enqueue(&Probe {
            panic_times: 1,
            ..probe("panicky")
        })
        .await;
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'panicky'",
        1,
        WAIT,
    )
    .await;
    // The effect commits inside the handler; the outcome is written after it.
    wait_completed(&app, &id, WAIT).await;
    let rows = attempts(&app.db_pool, &id).await;
    assert_eq!(outcomes(&rows), ["panicked", "succeeded"]);
    let err = rows[0].error.as_deref().unwrap();
    assert!(
        err.contains("panicked: probe panicky told to panic on attempt 1"),
        "{err}"
    );
}

#[tokio::test]
async fn an_exhausted_job_stays_visible_as_failed_and_is_not_retried() {
    let app = TestApp::builder()
        .env("JOB_BACKOFF_BASE_MS", "20")
        .with_worker()
        .spawn()
        .await;
    let id = app
        .enqueue(&Probe {
            fail_times: 100,
            ..probe("always")
        })
        .await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM job_attempts WHERE job_id = '{id}' AND outcome = 'failed'"),
        1,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rows = attempts(&app.db_pool, &id).await;
    // Probe::MAX_ATTEMPTS is 5: four retries, then failed.
    assert_eq!(
        outcomes(&rows),
        ["retry", "retry", "retry", "retry", "failed"]
    );
    assert_eq!(job_state(&app.db_pool, &id).await, "failed");
    let health = app.get("/api/health/").await;
    assert_eq!(health.json["queue"]["failed"], 1, "{}", health.json);
}

#[tokio::test]
async fn requeue_and_cancel_behave_and_are_audited() {
    let app = TestApp::builder()
        .env("JOB_BACKOFF_BASE_MS", "20")
        .with_worker()
        .spawn()
        .await;
    // Fails its 5 attempts, then succeeds on the 6th: only a requeue gets it there.
    let id = app
        .enqueue(&Probe {
            fail_times: 5,
            ..probe("requeued")
        })
        .await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM job_attempts WHERE job_id = '{id}' AND outcome = 'failed'"),
        1,
        WAIT,
    )
    .await;

    // Only failed or cancelled jobs can be requeued; only waiting or failed ones cancelled.
    audit::requeue_job(&app.db_pool, &id, &actor())
        .await
        .unwrap();
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'requeued'",
        1,
        WAIT,
    )
    .await;
    wait_completed(&app, &id, WAIT).await;
    let rows = attempts(&app.db_pool, &id).await;
    assert_eq!(
        rows.len(),
        6,
        "history is kept and numbering continues: {rows:?}"
    );
    assert_eq!(rows[5].outcome, "succeeded");
    assert!(matches!(
        audit::requeue_job(&app.db_pool, &id, &actor()).await,
        Err(OpError::WrongState { .. })
    ));
    assert!(matches!(
        audit::cancel_job(&app.db_pool, &id, &actor()).await,
        Err(OpError::WrongState { .. })
    ));
    assert!(matches!(
        audit::requeue_job(&app.db_pool, "01HNOSUCHJOB0000000000000A", &actor()).await,
        Err(OpError::NotFound(_))
    ));

    // A job due in an hour is cancelled and never runs; a cancelled job can be requeued.
    let mut tx = app.db_pool.begin().await.unwrap();
    let later = granary_jobs::queue::enqueue::enqueue_at(
        &mut tx,
        &probe("cancelled"),
        Some(Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    audit::cancel_job(&app.db_pool, later.id(), &actor())
        .await
        .unwrap();
    assert_eq!(job_state(&app.db_pool, later.id()).await, "cancelled");
    audit::requeue_job(&app.db_pool, later.id(), &actor())
        .await
        .unwrap();
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'cancelled'",
        1,
        WAIT,
    )
    .await;

    let audit: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT actor, action, target_id, reason FROM operator_actions ORDER BY id")
            .fetch_all(&app.db_pool)
            .await
            .unwrap();
    let actions: Vec<_> = audit
        .iter()
        .map(|(_, a, t, _)| (a.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("job.requeue", id.as_str()),
            ("job.cancel", later.id()),
            ("job.requeue", later.id())
        ]
    );
    assert!(
        audit
            .iter()
            .all(|(who, _, _, why)| who == "cli:test" && why.as_deref() == Some("testing"))
    );
}

#[tokio::test]
async fn requeue_by_order_requeues_exactly_that_orders_failed_jobs() {
    let app = TestApp::builder()
        .env("JOB_BACKOFF_BASE_MS", "20")
        .with_worker()
        .spawn()
        .await;
    let p = &app.db_pool;
    let profile: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO profiles (clerk_user_id) VALUES ('u') RETURNING id")
            .fetch_one(p)
            .await
            .unwrap();
    let mut orders = Vec::new();
    for public in ["ord_a", "ord_b"] {
        let id: uuid::Uuid = sqlx::query_scalar("INSERT INTO orders (public_id, customer_profile_id, currency, subtotal_cents, total_cents) VALUES ($1, $2, 'USD', 0, 0) RETURNING id")
            .bind(public)
            .bind(profile)
            .fetch_one(p)
            .await
            .unwrap();
        orders.push(id);
    }
    let failing = |key: &str, order| Probe {
        fail_times: 5,
        order_id: Some(order),
        ..probe(key)
    };
    let a1 = app.enqueue(&failing("a1", orders[0])).await;
    let a2 = app.enqueue(&failing("a2", orders[0])).await;
    let b1 = app.enqueue(&failing("b1", orders[1])).await;
    app.wait_for_count(
        "SELECT count(*) FROM job_attempts WHERE outcome = 'failed'",
        3,
        WAIT,
    )
    .await;

    let mut requeued = audit::requeue_order_jobs(p, orders[0], &actor())
        .await
        .unwrap();
    requeued.sort();
    let mut want = vec![a1, a2];
    want.sort();
    assert_eq!(requeued, want);
    wait_for_count(
        p,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key IN ('a1', 'a2')",
        2,
        WAIT,
    )
    .await;
    assert_eq!(
        job_state(p, &b1).await,
        "failed",
        "the other order's job is untouched"
    );
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM operator_actions WHERE action = 'order.requeue_failed_jobs'"
        )
        .await,
        1
    );
}

fn process_env(app: &TestApp) -> Vec<(String, String)> {
    base_env(&app.db.url).into_iter().collect()
}

#[tokio::test]
async fn a_sigkilled_workers_job_is_finished_by_another_worker_and_applied_once() {
    let app = TestApp::spawn().await;
    let env = process_env(&app);
    let first = WorkerProcess::start(&env);
    let id = app
        .enqueue(&Probe {
            sleep_ms: 3000,
            ..probe("killed-mid-job")
        })
        .await;
    // Wait until the first worker is inside the job, then SIGKILL it.
    app.wait_for_count(
        &format!("SELECT count(*) FROM job_attempts WHERE job_id = '{id}' AND outcome = 'running'"),
        1,
        WAIT,
    )
    .await;
    let victim: String = sqlx::query_scalar("SELECT worker_id FROM job_attempts WHERE job_id = $1")
        .bind(&id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    first.kill9();

    let second = WorkerProcess::start(&env);
    wait_completed(&app, &id, Duration::from_secs(30)).await;
    let rows = attempts(&app.db_pool, &id).await;
    assert_eq!(outcomes(&rows), ["abandoned", "succeeded"], "{rows:?}");
    assert_eq!(rows[0].worker_id, victim);
    assert_ne!(
        rows[1].worker_id, victim,
        "another worker (a new process id) finished it"
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'killed-mid-job'"
        )
        .await,
        1
    );
    assert!(second.terminate());
}

#[tokio::test]
async fn a_slow_job_past_the_heartbeat_bound_is_not_run_twice() {
    let app = TestApp::spawn().await;
    let env = process_env(&app);
    // Heartbeat 1 s, three missed: a dead worker's job is rescued after 3–4 s (the other side
    // of this bound is the SIGKILL test). This job takes 8 s while two workers watch the queue.
    let a = WorkerProcess::start(&env);
    let b = WorkerProcess::start(&env);
    let id = app
        .enqueue(&Probe {
            sleep_ms: 8000,
            ..probe("slow")
        })
        .await;
    wait_completed(&app, &id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_probe_runs WHERE probe_key = 'slow'"
        )
        .await,
        1
    );
    assert_eq!(attempts(&app.db_pool, &id).await.len(), 1);
    assert!(a.terminate() && b.terminate());
}

#[tokio::test]
async fn worker_ids_are_unique_per_process_and_never_reused() {
    let app = TestApp::spawn().await;
    let env = process_env(&app);
    let a = WorkerProcess::start(&env);
    let b = WorkerProcess::start(&env);
    app.wait_for_count(
        "SELECT count(DISTINCT id) FROM job_workers WHERE queue = 'probe'",
        2,
        WAIT,
    )
    .await;
    assert!(a.terminate());
    let c = WorkerProcess::start(&env);
    app.wait_for_count(
        "SELECT count(DISTINCT id) FROM job_workers WHERE queue = 'probe'",
        3,
        WAIT,
    )
    .await;
    assert!(b.terminate() && c.terminate());
}

#[tokio::test]
async fn graceful_shutdown_finishes_running_jobs_and_hands_back_the_rest() {
    let app = TestApp::spawn().await;
    let mut env = process_env(&app);
    env.push(("SHUTDOWN_TIMEOUT_SECONDS".into(), "3".into()));
    // One job that finishes within the shutdown timeout, one that cannot.
    let worker = WorkerProcess::start(&env);
    let quick = app
        .enqueue(&Probe {
            sleep_ms: 1000,
            ..probe("quick")
        })
        .await;
    let long = app
        .enqueue(&Probe {
            sleep_ms: 15_000,
            ..probe("long")
        })
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM job_attempts WHERE outcome = 'running'",
        2,
        WAIT,
    )
    .await;
    assert!(worker.terminate(), "the worker exits cleanly on SIGTERM");
    assert_eq!(job_state(&app.db_pool, &quick).await, "completed");
    // The long one was handed back at once, its attempt closed as abandoned.
    assert_eq!(job_state(&app.db_pool, &long).await, "pending");
    assert_eq!(attempts(&app.db_pool, &long).await[0].outcome, "abandoned");
    // A new worker finishes it: nothing was lost.
    let next = WorkerProcess::start(&process_env(&app));
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'long'",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(next.terminate());
}

#[tokio::test]
async fn retention_prunes_completed_jobs_and_keeps_failed_ones() {
    let app = TestApp::builder()
        .env("JOB_BACKOFF_BASE_MS", "20")
        .with_worker()
        .spawn()
        .await;
    let done = app.enqueue(&probe("done")).await;
    let failed = app
        .enqueue(&Probe {
            permanent: true,
            ..probe("failed")
        })
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM job_attempts WHERE outcome IN ('succeeded', 'discarded')",
        2,
        WAIT,
    )
    .await;
    // Nothing is old enough yet.
    assert_eq!(
        runtime::prune_completed(&app.db_pool, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        runtime::prune_completed(&app.db_pool, Duration::from_millis(10))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            &format!("SELECT count(*) FROM jobs WHERE id = '{done}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app.db_pool,
            &format!("SELECT count(*) FROM job_attempts WHERE job_id = '{done}'")
        )
        .await,
        0
    );
    assert_eq!(job_state(&app.db_pool, &failed).await, "failed");
    assert_eq!(attempts(&app.db_pool, &failed).await.len(), 1);
}

/// The worker of the tests that claim and complete by hand.
const W: &str = "w@host:1:0";

/// Claims job `id` for a worker that never heartbeats (to the rescue, it is dead), rescues it,
/// and claims it again for a live worker: attempt 1 is `gone@host:1:0`'s, abandoned; attempt 2
/// is `live@host:2:0`'s, running.
async fn rescued_and_claimed_again(p: &PgPool, id: &str) {
    use granary_jobs::queue::backend;
    let first = backend::claim(p, "probe", "gone@host:1:0", 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    let rescued = runtime::rescue(p, Duration::from_secs(3)).await.unwrap();
    assert_eq!(rescued, [id]);
    assert_eq!(job_state(p, id).await, "pending");
    let second = backend::claim(p, "probe", "live@host:2:0", 10)
        .await
        .unwrap();
    assert_eq!(second[0].attempt, 2);
}

/// The partition holding a job's row (`jobs_active` while it waits or runs, `jobs_finished`
/// once it has finished), and how many rows the job has across both.
async fn partition(pool: &PgPool, job_id: &str) -> (Option<String>, i64) {
    sqlx::query_as("SELECT min(tableoid::regclass::text), count(*) FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// An attempt's outcome as the completer receives it; an error for every outcome but success.
fn outcome_of(
    id: &str,
    worker: &str,
    attempt: i32,
    outcome: &'static str,
    retry_at: Option<DateTime<Utc>>,
) -> granary_jobs::queue::backend::Outcome {
    granary_jobs::queue::backend::Outcome {
        id: id.into(),
        attempt,
        worker: worker.into(),
        outcome,
        error: (outcome != "succeeded").then(|| format!("attempt {attempt}: {outcome}")),
        retry_at,
        finished_at: Utc::now(),
    }
}

#[tokio::test]
async fn a_job_stays_in_the_active_partition_until_it_finishes_and_returns_there_when_requeued() {
    use granary_jobs::queue::backend;
    let app = TestApp::spawn().await;
    let p = &app.db_pool;
    let active = || (Some("jobs_active".to_string()), 1);
    let finished = || (Some("jobs_finished".to_string()), 1);
    let id = app.enqueue(&probe("moves")).await;
    assert_eq!(partition(p, &id).await, active());

    // Claimed, then a retry: still active, due at the retry's time.
    let claimed = backend::claim(p, "probe", W, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(partition(p, &id).await, active());
    let retry_at = Utc::now() + chrono::Duration::hours(1);
    let retry = outcome_of(&id, W, 1, "retry", Some(retry_at));
    assert_eq!(backend::complete(p, &[retry]).await.unwrap(), 1);
    assert_eq!(job_state(p, &id).await, "retrying");
    assert_eq!(partition(p, &id).await, active());
    assert!(backend::claim(p, "probe", W, 10).await.unwrap().is_empty());

    // Due now, claimed again, failed for good: finished, with its finish time and error.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
        .bind(&id)
        .execute(p)
        .await
        .unwrap();
    assert_eq!(
        backend::claim(p, "probe", W, 10).await.unwrap()[0].attempt,
        2
    );
    let failed = outcome_of(&id, W, 2, "failed", None);
    assert_eq!(backend::complete(p, &[failed]).await.unwrap(), 1);
    let (state, finished_at, error): (String, Option<DateTime<Utc>>, Option<String>) =
        sqlx::query_as("SELECT state, finished_at, last_error FROM jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert!(finished_at.is_some());
    assert_eq!(error.as_deref(), Some("attempt 2: failed"));
    assert_eq!(partition(p, &id).await, finished());

    // An operator's requeue brings it back; a cancel finishes it; a requeue again.
    audit::requeue_job(p, &id, &actor()).await.unwrap();
    assert_eq!(job_state(p, &id).await, "pending");
    assert_eq!(partition(p, &id).await, active());
    audit::cancel_job(p, &id, &actor()).await.unwrap();
    assert_eq!(job_state(p, &id).await, "cancelled");
    assert_eq!(partition(p, &id).await, finished());
    audit::requeue_job(p, &id, &actor()).await.unwrap();
    assert_eq!(partition(p, &id).await, active());

    // Its third attempt succeeds: completed, finished, the whole history kept.
    assert_eq!(
        backend::claim(p, "probe", W, 10).await.unwrap()[0].attempt,
        3
    );
    let succeeded = outcome_of(&id, W, 3, "succeeded", None);
    assert_eq!(backend::complete(p, &[succeeded]).await.unwrap(), 1);
    assert_eq!(job_state(p, &id).await, "completed");
    assert_eq!(partition(p, &id).await, finished());
    let rows = attempts(p, &id).await;
    assert_eq!(outcomes(&rows), ["retry", "failed", "succeeded"]);

    // Retention prunes it from the finished partition.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        runtime::prune_completed(p, Duration::from_millis(5))
            .await
            .unwrap(),
        1
    );
    assert_eq!(partition(p, &id).await, (None, 0));
}

#[tokio::test]
async fn an_operator_waiting_on_a_job_its_worker_finishes_meanwhile_is_told_it_finished() {
    use granary_jobs::queue::backend;
    let app = TestApp::spawn().await;
    let p = &app.db_pool;
    let id = app.enqueue(&probe("race")).await;
    backend::claim(p, "probe", W, 10).await.unwrap();

    // The completer's statement, in a transaction held open: it holds the job's row, and
    // moves the job to the finished partition (a delete and an insert).
    let mut completer = p.begin().await.unwrap();
    let done = outcome_of(&id, W, 1, "succeeded", None);
    assert_eq!(
        backend::complete(&mut *completer, &[done]).await.unwrap(),
        1
    );

    // An operator's cancel waits for that row's lock...
    let cancel = tokio::spawn({
        let (pool, id) = (p.clone(), id.clone());
        async move { audit::cancel_job(&pool, &id, &actor()).await }
    });
    wait_for_count(
        p,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        1,
        WAIT,
    )
    .await;
    // ...which it gets once the job has finished: the row it waited on is gone, and it finds
    // the job where it went instead of calling it missing.
    completer.commit().await.unwrap();
    let result = cancel.await.unwrap();
    assert!(
        matches!(&result, Err(OpError::WrongState { state, .. }) if state == "completed"),
        "{result:?}"
    );
    assert_eq!(job_state(p, &id).await, "completed");
    assert_eq!(
        partition(p, &id).await,
        (Some("jobs_finished".to_string()), 1)
    );
}

#[tokio::test]
async fn a_completion_arriving_after_its_job_was_rescued_changes_nothing() {
    use granary_jobs::queue::backend;
    let app = TestApp::spawn().await;
    let p = &app.db_pool;
    let id = app.enqueue(&probe("late")).await;
    let outcome = |worker: &str, attempt: i32| outcome_of(&id, worker, attempt, "succeeded", None);
    rescued_and_claimed_again(p, &id).await;

    // The first worker's completion arrives late: nothing changes.
    assert_eq!(
        backend::complete(p, &[outcome("gone@host:1:0", 1)])
            .await
            .unwrap(),
        0
    );
    // Nor does a completion naming the live worker with the rescued attempt's number.
    assert_eq!(
        backend::complete(p, &[outcome("live@host:2:0", 1)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(job_state(p, &id).await, "running");
    let rows = attempts(p, &id).await;
    assert_eq!(outcomes(&rows), ["abandoned", "running"], "{rows:?}");
    assert!(rows[1].finished_at.is_none());

    // The live worker's own completion is written.
    assert_eq!(
        backend::complete(p, &[outcome("live@host:2:0", 2)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(job_state(p, &id).await, "completed");
    let rows = attempts(p, &id).await;
    assert_eq!(outcomes(&rows), ["abandoned", "succeeded"]);
}

#[tokio::test]
async fn an_attempt_past_its_time_limit_fails_with_the_limit_and_the_job_retries() {
    let app = TestApp::builder()
        .with_worker()
        .env("JOB_TIMEOUT_SECONDS", "probe=1")
        .env("JOB_BACKOFF_BASE_MS", "20")
        .spawn()
        .await;
    // A handler whose peer never answers: its first attempt would hold a worker slot forever.
    let id = granary_tests::enqueue(
        &app.db_pool,
        &Probe {
            hang_times: 1,
            ..probe("hangs")
        },
    )
    .await;
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'hangs'",
        1,
        WAIT,
    )
    .await;
    // The effect commits inside the handler; the outcome is written after it.
    wait_completed(&app, &id, WAIT).await;
    let tried = attempts(&app.db_pool, &id).await;
    assert_eq!(outcomes(&tried), ["retry", "succeeded"]);
    assert_eq!(tried[0].error.as_deref(), Some("timed out after 1 s"));
    assert_eq!(job_state(&app.db_pool, &id).await, "completed");
}

/// A claim whose answer is lost (PostgreSQL committed it, then the connection broke) leaves
/// jobs `running` under a live worker that never saw them, which the rescue never frees (its
/// heartbeat is fine). Seen once in the restart fault test. The worker hands them back after
/// its next claim succeeds: they are the ones claimed after its newest received claim and not
/// in the claim it just received.
#[tokio::test]
async fn jobs_of_a_claim_whose_answer_was_lost_are_handed_back_by_the_worker() {
    use granary_jobs::queue::backend;
    let app = TestApp::spawn().await;
    let p = &app.db_pool;
    let worker = "live@host:7:0";
    let held = app.enqueue(&probe("held")).await;
    let first = backend::claim(p, "probe", worker, 1).await.unwrap();
    assert_eq!(first.len(), 1, "the worker holds one job, running it");
    // The lost claim: committed at the server, its rows never reached the worker.
    let lost = app.enqueue(&probe("lost")).await;
    let lost_claim = backend::claim(p, "probe", worker, 10).await.unwrap();
    assert_eq!(lost_claim.len(), 1);
    // The next claim succeeds and receives a third job.
    let next = app.enqueue(&probe("next")).await;
    let received = backend::claim(p, "probe", worker, 1).await.unwrap();
    assert_eq!(received[0].id, next);
    let n = backend::hand_back_lost_claims(p, worker, Some(first[0].locked_at), &received)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(job_state(p, &lost).await, "pending");
    assert_eq!(
        job_state(p, &held).await,
        "running",
        "the job it holds stays its"
    );
    assert_eq!(
        job_state(p, &next).await,
        "running",
        "the claim it received stays its"
    );
    assert!(
        attempts(p, &lost).await.is_empty(),
        "the lost attempt is undone"
    );
    // Nothing else is lost: a second look hands back nothing.
    assert_eq!(
        backend::hand_back_lost_claims(p, worker, Some(received[0].locked_at), &[])
            .await
            .unwrap(),
        0
    );
}

/// The transaction ids that last wrote the job's row, its attempts and the probe's effect.
async fn writers(pool: &PgPool, job_id: &str, key: &str) -> (String, Vec<String>, String) {
    let job: String = sqlx::query_scalar("SELECT xmin::text FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap();
    let tries: Vec<String> = sqlx::query_scalar(
        "SELECT xmin::text FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
    .unwrap();
    let effect: String =
        sqlx::query_scalar("SELECT xmin::text FROM job_probe_effects WHERE probe_key = $1")
            .bind(key)
            .fetch_one(pool)
            .await
            .unwrap();
    (job, tries, effect)
}

#[tokio::test]
async fn a_handler_completing_in_its_commit_writes_its_effect_and_its_completion_in_that_one_commit()
 {
    let app = TestApp::builder()
        .with_worker()
        .env("JOB_COMPLETE_IN_COMMIT", "true")
        .spawn()
        .await;
    let in_commit = app
        .enqueue(&Probe {
            complete_in_commit: true,
            ..probe("in-commit")
        })
        .await;
    // Beside it, the completer's path: the effect's commit, then the completer's.
    let after = app.enqueue(&probe("after-commit")).await;
    for id in [&in_commit, &after] {
        wait_completed(&app, id, WAIT).await;
    }
    let rows = attempts(&app.db_pool, &in_commit).await;
    assert_eq!(outcomes(&rows), ["succeeded"]);
    assert!(rows[0].finished_at.is_some() && rows[0].error.is_none());
    let (job, tries, effect) = writers(&app.db_pool, &in_commit, "in-commit").await;
    assert_eq!(job, effect, "the job was completed by the effect's commit");
    assert_eq!(
        tries,
        std::slice::from_ref(&effect),
        "and so was its attempt"
    );

    let (job, tries, effect) = writers(&app.db_pool, &after, "after-commit").await;
    assert_ne!(job, effect, "the completer's path writes in a later commit");
    assert_ne!(tries, [effect]);
}

#[tokio::test]
async fn a_handler_failing_after_it_began_leaves_nothing_of_that_attempt_and_its_retry_completes_in_its_commit()
 {
    let app = TestApp::builder()
        .with_worker()
        .env("JOB_BACKOFF_BASE_MS", "20")
        .env("JOB_COMPLETE_IN_COMMIT", "true")
        .spawn()
        .await;
    let id = app
        .enqueue(&Probe {
            complete_in_commit: true,
            fail_times: 1,
            ..probe("fails-mid-way")
        })
        .await;
    wait_completed(&app, &id, WAIT).await;
    let rows = attempts(&app.db_pool, &id).await;
    assert_eq!(outcomes(&rows), ["retry", "succeeded"]);
    let err = rows[0].error.as_deref().unwrap();
    assert!(err.contains("not committed"), "{err}");
    assert!(rows[0].retry_at.is_some());
    // The first attempt's effect was rolled back; the second wrote it, and completed the job,
    // in one commit.
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_probe_effects WHERE probe_key = 'fails-mid-way'"
        )
        .await,
        1
    );
    let (job, tries, effect) = writers(&app.db_pool, &id, "fails-mid-way").await;
    assert_eq!(job, effect);
    assert_eq!(tries[1], effect);
    assert_ne!(tries[0], effect, "the retry was written by the completer");
}

#[tokio::test]
async fn a_completing_commit_after_its_job_was_rescued_changes_nothing() {
    use granary_jobs::queue::completion;
    let app = TestApp::spawn().await;
    let p = &app.db_pool;
    let id = app.enqueue(&probe("late-in-commit")).await;
    rescued_and_claimed_again(p, &id).await;

    // The first worker's handler commits late: its work lands, its completion does not.
    let mut tx = p.begin().await.unwrap();
    sqlx::query("INSERT INTO job_probe_effects (probe_key, job_id) VALUES ('late-in-commit', $1)")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(
        !completion::complete_in(&mut tx, &id, 1, "gone@host:1:0")
            .await
            .unwrap()
    );
    // Nor the live worker naming the rescued attempt.
    assert!(
        !completion::complete_in(&mut tx, &id, 1, "live@host:2:0")
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert_eq!(job_state(p, &id).await, "running");
    let rows = attempts(p, &id).await;
    assert_eq!(outcomes(&rows), ["abandoned", "running"]);

    // The live worker's own completion is written.
    let mut tx = p.begin().await.unwrap();
    assert!(
        completion::complete_in(&mut tx, &id, 2, "live@host:2:0")
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert_eq!(job_state(p, &id).await, "completed");
    assert_eq!(
        outcomes(&attempts(p, &id).await),
        ["abandoned", "succeeded"]
    );
}

/// A worker killed between its handler's completing commit and its own bookkeeping: the job is
/// already completed, so the rescue leaves it and no worker runs it again.
#[tokio::test]
async fn a_worker_killed_right_after_its_completing_commit_leaves_the_job_completed_once() {
    use granary_jobs::queue::{backend, completion};
    let app = TestApp::spawn().await;
    let p = &app.db_pool;
    let id = app.enqueue(&probe("killed-after-commit")).await;
    // A worker that never heartbeats again (it was killed) claimed it...
    let claimed = backend::claim(p, "probe", "killed@host:3:0", 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // ...and its handler committed the effect with the completion; then the process died,
    // before any outcome reached its completer.
    let mut tx = p.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO job_probe_effects (probe_key, job_id) VALUES ('killed-after-commit', $1)",
    )
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert!(
        completion::complete_in(&mut tx, &id, 1, "killed@host:3:0")
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    assert!(
        runtime::rescue(p, Duration::from_secs(3))
            .await
            .unwrap()
            .is_empty(),
        "a completed job is not the rescue's"
    );
    assert!(
        backend::claim(p, "probe", "live@host:4:0", 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing to run again"
    );
    assert_eq!(job_state(p, &id).await, "completed");
    assert_eq!(outcomes(&attempts(p, &id).await), ["succeeded"]);
}

/// The SIGKILL test's twin for a handler completing in its commit: killed inside its open
/// transaction, the attempt is abandoned, nothing of it lands, and another worker's run
/// applies the effect once.
#[tokio::test]
async fn a_worker_sigkilled_inside_its_completing_transaction_is_finished_by_another_once() {
    let app = TestApp::spawn().await;
    let mut env = process_env(&app);
    env.push(("JOB_COMPLETE_IN_COMMIT".into(), "true".into()));
    let first = WorkerProcess::start(&env);
    let id = app
        .enqueue(&Probe {
            sleep_ms: 3000,
            complete_in_commit: true,
            ..probe("killed-in-tx")
        })
        .await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM job_attempts WHERE job_id = '{id}' AND outcome = 'running'"),
        1,
        WAIT,
    )
    .await;
    first.kill9();
    let second = WorkerProcess::start(&env);
    wait_completed(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(
        outcomes(&attempts(&app.db_pool, &id).await),
        ["abandoned", "succeeded"]
    );
    let (job, tries, effect) = writers(&app.db_pool, &id, "killed-in-tx").await;
    assert_eq!(job, effect);
    assert_eq!(tries[1], effect);
    assert!(second.terminate());
}
