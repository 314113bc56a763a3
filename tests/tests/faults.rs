//! Fault injection with the real worker binary: SIGKILL at random points during a burst of paid
//! orders, and two workers on the same queues. Each test states its invariant and counts rows.

use std::time::Duration;

use granary_jobs::{orders::FulfillOrder, queue::probe::Probe};
use granary_tests::{TestApp, base_env, count, enqueue, wait_for_count, worker::WorkerProcess};
use uuid::Uuid;

/// 200 paid orders of a product with one feature and one ready asset, each with its
/// `fulfill_order` job enqueued, as a burst of payment webhooks would leave them.
async fn paid_burst(app: &TestApp, n: usize) {
    let p = &app.db_pool;
    let seller: Uuid = sqlx::query_scalar(
        "INSERT INTO profiles (clerk_user_id, role) VALUES ('seller', 'seller') RETURNING id",
    )
    .fetch_one(p)
    .await
    .unwrap();
    let product: Uuid = sqlx::query_scalar("INSERT INTO products (seller_profile_id, name, slug, visibility, feature_keys) VALUES ($1, 'Kit', 'kit', 'published', '{kit}') RETURNING id")
        .bind(seller)
        .fetch_one(p)
        .await
        .unwrap();
    let price: Uuid = sqlx::query_scalar("INSERT INTO prices (product_id, amount_cents, currency) VALUES ($1, 500, 'USD') RETURNING id").bind(product).fetch_one(p).await.unwrap();
    sqlx::query("INSERT INTO digital_assets (product_id, title, file_path, storage_key, status, size_bytes, sha256) VALUES ($1, 'Kit', 'u/kit.zip', 'assets/ab/kit.zip', 'ready', 1, 'ab')")
        .bind(product)
        .execute(p)
        .await
        .unwrap();
    for i in 0..n {
        let mut tx = p.begin().await.unwrap();
        let buyer: Uuid = sqlx::query_scalar(
            "INSERT INTO profiles (clerk_user_id, email) VALUES ($1, $2) RETURNING id",
        )
        .bind(format!("buyer_{i}"))
        .bind(format!("buyer_{i}@example.com"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let order: Uuid = sqlx::query_scalar("INSERT INTO orders (public_id, customer_profile_id, status, currency, subtotal_cents, total_cents, paid_at) VALUES ($1, $2, 'paid', 'USD', 500, 500, now()) RETURNING id")
            .bind(format!("ord_burst_{i}"))
            .bind(buyer)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO order_items (order_id, product_id, price_id, product_name, unit_amount_cents, total_cents, currency) VALUES ($1, $2, $3, 'Kit', 500, 500, 'USD')")
            .bind(order)
            .bind(product)
            .bind(price)
            .execute(&mut *tx)
            .await
            .unwrap();
        granary_jobs::queue::enqueue(&mut tx, &FulfillOrder { order_id: order })
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

fn jitter_ms(lo: u64, hi: u64) -> u64 {
    lo + u64::from(Uuid::new_v4().as_bytes()[0]) * (hi - lo) / 255
}

#[tokio::test]
async fn a_burst_of_paid_orders_survives_repeated_kill_9_and_is_fulfilled_exactly_once() {
    // Invariant: every order fulfilled once — one entitlement, one grant and one receipt each —
    // and no job left claimed, however often the worker dies mid-burst.
    let app = TestApp::spawn().await;
    paid_burst(&app, 200).await;
    let mut env: Vec<(String, String)> = base_env(&app.db.url).into_iter().collect();
    env.push((
        "ASSET_STORAGE_FS_ROOT".into(),
        app.storage_root.to_string_lossy().into_owned(),
    ));
    env.push(("WORKER_CONCURRENCY_DEFAULT".into(), "4".into()));
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
        "SELECT count(*) FROM apalis.jobs WHERE status <> 'Done'",
        0,
        long,
    )
    .await;
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
        "SELECT count(DISTINCT id) FROM apalis.workers WHERE worker_type = 'probe'",
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
