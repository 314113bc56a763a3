//! The foundation: health, the error contract, the body limit, request ids, CORS, migrations.

use std::time::Duration;

use granary_tests::{TestApp, TestDb, count};
use serde_json::json;

#[tokio::test]
async fn health_reports_the_database_and_queue_figures() {
    let app = TestApp::spawn().await;
    let res = app.get("/api/health/").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.json["status"], "ok");
    assert_eq!(res.json["database"]["reachable"], true);
    for figure in ["pending", "running", "failed"] {
        assert_eq!(res.json["queue"][figure], 0, "{figure} in {}", res.json);
    }
    assert!(res.json["queue"]["oldest_pending_age_seconds"].is_null());
}

#[tokio::test]
async fn health_counts_pending_and_failed_jobs() {
    let app = TestApp::spawn().await;
    let mut tx = app.db_pool.begin().await.unwrap();
    granary_jobs::queue::enqueue(
        &mut tx,
        &granary_jobs::queue::probe::Probe {
            key: "a".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, finished_at) VALUES ('01HZZZZZZZZZZZZZZZZZZZZZZZ', 'probe', '{}', 'failed', 3, 3, now())")
        .execute(&app.db_pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let res = app.get("/api/health/").await;
    assert_eq!(res.json["queue"]["pending"], 1, "{}", res.json);
    assert_eq!(res.json["queue"]["failed"], 1, "{}", res.json);
    assert!(
        res.json["queue"]["oldest_pending_age_seconds"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
}

#[tokio::test]
async fn health_reports_an_unreachable_database_as_unhealthy_instead_of_crashing() {
    // Nothing listens on port 1: the pool cannot connect.
    let app = TestApp::builder()
        .database_url("postgres://postgres@127.0.0.1:1/none")
        .spawn()
        .await;
    let res = app.get("/api/health/").await;
    assert_eq!(res.status, 503, "{}", res.text);
    assert_eq!(res.json["status"], "unhealthy");
    assert_eq!(res.json["database"]["reachable"], false);
    assert!(res.json["database"]["error"].is_string());
    assert!(res.json["queue"].is_null());
    // And it keeps answering.
    assert_eq!(app.get("/api/health/").await.status, 503);
}

#[tokio::test]
async fn an_unknown_route_answers_the_contract_error_body_with_a_request_id() {
    let app = TestApp::spawn().await;
    let res = app.get("/api/no-such-thing/").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.error_code(), Some("not_found"));
    assert!(res.json["error"]["message"].is_string());
    let id = res.headers["x-request-id"].to_str().unwrap();
    assert_eq!(res.json["error"]["request_id"], id);
    assert_eq!(res.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let app = TestApp::spawn().await;
    let res = app.send(app.client.delete(app.url("/api/health/"))).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.error_code(), Some("method_not_allowed"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_payload_too_large() {
    let app = TestApp::builder()
        .env("MAX_BODY_BYTES", "4096")
        .spawn()
        .await;
    let big = "x".repeat(5000);
    let res = app
        .send(app.client.post(app.url("/api/health/")).body(big.clone()))
        .await;
    assert_eq!(res.status, 413, "{}", res.text);
    assert_eq!(res.error_code(), Some("payload_too_large"));
    // Also on a path that does not exist: the limit applies to every route.
    let res = app
        .send(app.client.post(app.url("/api/anything/")).body(big))
        .await;
    assert_eq!(res.status, 413);
    assert_eq!(res.error_code(), Some("payload_too_large"));
    // A body under the limit gets past it.
    let res = app
        .send(
            app.client
                .post(app.url("/api/health/"))
                .body("x".repeat(100)),
        )
        .await;
    assert_eq!(res.status, 405);
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_kept_and_a_hostile_one_replaced() {
    let app = TestApp::spawn().await;
    let res = app
        .send(
            app.client
                .get(app.url("/api/health/"))
                .header("x-request-id", "trace-abc_123"),
        )
        .await;
    assert_eq!(res.headers["x-request-id"], "trace-abc_123");
    let res = app
        .send(
            app.client
                .get(app.url("/api/health/"))
                .header("x-request-id", "bad id with spaces"),
        )
        .await;
    assert_ne!(res.headers["x-request-id"], "bad id with spaces");
    assert_eq!(res.headers["x-request-id"].len(), 36);
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = TestApp::builder()
        .env("CORS_ALLOWED_ORIGINS", "https://shop.example.com")
        .spawn()
        .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/health/"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
    };
    let ok = app.send(preflight("https://shop.example.com")).await;
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert_eq!(ok.headers["access-control-allow-credentials"], "true");
    let foreign = app.send(preflight("https://evil.example.net")).await;
    assert!(foreign.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_rerun_as_a_no_op() {
    let db = TestDb::empty().await;
    assert!(
        !granary_jobs::platform::db::pending_migrations(&db.pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        granary_jobs::platform::db::ensure_migrated(&db.pool)
            .await
            .is_err()
    );
    granary_jobs::platform::db::migrate(&db.pool)
        .await
        .expect("first run");
    let applied = count(&db.pool, "SELECT count(*) FROM _sqlx_migrations").await;
    granary_jobs::platform::db::migrate(&db.pool)
        .await
        .expect("second run is a no-op");
    let again = count(&db.pool, "SELECT count(*) FROM _sqlx_migrations").await;
    assert_eq!(applied, again);
    assert!(
        granary_jobs::platform::db::pending_migrations(&db.pool)
            .await
            .unwrap()
            .is_empty()
    );
    granary_jobs::platform::db::ensure_migrated(&db.pool)
        .await
        .unwrap();
    // Every table of the data model exists.
    for table in [
        "profiles",
        "customer_accounts",
        "products",
        "prices",
        "orders",
        "order_items",
        "payment_transactions",
        "subscriptions",
        "webhook_events",
        "entitlements",
        "digital_assets",
        "download_grants",
        "download_events",
        "service_offers",
        "bookings",
        "emails",
        "job_attempts",
        "operator_actions",
        "jobs",
        "job_workers",
    ] {
        count(&db.pool, &format!("SELECT count(*) FROM {table}")).await;
    }
}

#[tokio::test]
async fn schema_constraints_hold_the_promises() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let profile: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO profiles (clerk_user_id) VALUES ('user_1') RETURNING id")
            .fetch_one(p)
            .await
            .unwrap();
    // Money can't be negative, currency must be ISO.
    let product: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO products (seller_profile_id, name, slug) VALUES ($1, 'P', 'p-1') RETURNING id",
    )
    .bind(profile)
    .fetch_one(p)
    .await
    .unwrap();
    let neg = sqlx::query(
        "INSERT INTO prices (product_id, amount_cents, currency) VALUES ($1, -1, 'USD')",
    )
    .bind(product)
    .execute(p)
    .await;
    assert_constraint(neg, "prices_amount_check");
    let cur = sqlx::query(
        "INSERT INTO prices (product_id, amount_cents, currency) VALUES ($1, 1, 'usd')",
    )
    .bind(product)
    .execute(p)
    .await;
    assert_constraint(cur, "prices_currency_check");
    // Slugs are unique and well-formed.
    let dup =
        sqlx::query("INSERT INTO products (seller_profile_id, name, slug) VALUES ($1, 'Q', 'p-1')")
            .bind(profile)
            .execute(p)
            .await;
    assert_constraint(dup, "products_slug_key");
    let bad = sqlx::query(
        "INSERT INTO products (seller_profile_id, name, slug) VALUES ($1, 'Q', 'Bad Slug')",
    )
    .bind(profile)
    .execute(p)
    .await;
    assert_constraint(bad, "products_slug_format");
    // One default price per product.
    sqlx::query("INSERT INTO prices (product_id, amount_cents, currency, is_default) VALUES ($1, 1, 'USD', true)").bind(product).execute(p).await.unwrap();
    let second = sqlx::query("INSERT INTO prices (product_id, amount_cents, currency, is_default) VALUES ($1, 2, 'USD', true)").bind(product).execute(p).await;
    assert_constraint(second, "prices_one_default_per_product");
    // A webhook event is stored once per provider + id, but rejected deliveries never block it.
    sqlx::query("INSERT INTO webhook_events (provider, event_id, status, rejection_reason, body) VALUES ('clerk', 'evt_1', 'rejected', 'signature_mismatch', '')").execute(p).await.unwrap();
    sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, body) VALUES ('clerk', 'evt_1', '')",
    )
    .execute(p)
    .await
    .unwrap();
    let twice = sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, body) VALUES ('clerk', 'evt_1', '')",
    )
    .execute(p)
    .await;
    assert_constraint(twice, "webhook_events_provider_event_key");
    // Entitlements are unique per source and feature; emails per dedupe key.
    sqlx::query("INSERT INTO entitlements (profile_id, feature_key, source_type, source_id) VALUES ($1, 'pro', 'manual', 'm1')").bind(profile).execute(p).await.unwrap();
    let ent = sqlx::query("INSERT INTO entitlements (profile_id, feature_key, source_type, source_id) VALUES ($1, 'pro', 'manual', 'm1')").bind(profile).execute(p).await;
    assert_constraint(ent, "entitlements_source_feature_key");
    sqlx::query("INSERT INTO emails (dedupe_key, kind, subject, html_body, text_body) VALUES ('k', 'receipt', 's', 'h', 't')").execute(p).await.unwrap();
    let email = sqlx::query("INSERT INTO emails (dedupe_key, kind, subject, html_body, text_body) VALUES ('k', 'receipt', 's', 'h', 't')").execute(p).await;
    assert_constraint(email, "emails_dedupe_key");
    let _ = json!({});
}

fn assert_constraint(res: Result<sqlx::postgres::PgQueryResult, sqlx::Error>, name: &str) {
    match res {
        Err(sqlx::Error::Database(db)) => assert_eq!(db.constraint(), Some(name), "{db}"),
        other => panic!("expected a violation of {name}, got {other:?}"),
    }
}

/// A database from before Granary's own job runtime: apalis-postgres's schema with jobs in
/// every state, Granary's attempts and links beside them. Upgrading loses none of them.
#[tokio::test]
async fn upgrading_from_apalis_postgres_moves_every_job_with_its_history() {
    let db = TestDb::empty().await;
    let p = &db.pool;
    // The old order: apalis-postgres's migrations, then Granary's up to the runtime change.
    apalis_postgres::PostgresStorage::setup(p).await.unwrap();
    granary_jobs::platform::db::MIGRATOR
        .run_to(20261202000001, p)
        .await
        .unwrap();
    let probe = |key: &str| format!(r#"{{"key":"{key}"}}"#);
    // id, status, attempts, max_attempts, last_result, lock_by, run_at offset (s)
    let old = [
        ("01J00000000000000000000001", "Pending", 0, 20, None, -5),
        (
            "01J00000000000000000000002",
            "Failed",
            2,
            20,
            Some("boom 2"),
            -1,
        ),
        (
            "01J00000000000000000000003",
            "Failed",
            3,
            3,
            Some("out of attempts"),
            -60,
        ),
        (
            "01J00000000000000000000004",
            "Killed",
            1,
            20,
            Some("cancelled"),
            -60,
        ),
        ("01J00000000000000000000005", "Done", 1, 20, None, -60),
        ("01J00000000000000000000006", "Running", 1, 20, None, -1),
    ];
    for (id, status, attempts, max, err, offset) in old {
        sqlx::query(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, last_result, done_at)
             VALUES ($1, 'probe', convert_to($2, 'UTF8'), $3, $4, $5, now() + make_interval(secs => $6),
                     CASE WHEN $7::text IS NULL THEN NULL ELSE jsonb_build_object('Err', $7::text) END,
                     CASE WHEN $3 IN ('Done', 'Killed', 'Failed') THEN now() END)",
        )
        .bind(id)
        .bind(probe(id))
        .bind(status)
        .bind(attempts)
        .bind(max)
        .bind(offset as f64)
        .bind(err)
        .execute(p)
        .await
        .unwrap();
        sqlx::query("INSERT INTO job_refs (job_id, queue, max_attempts) VALUES ($1, 'probe', 20)")
            .bind(id)
            .execute(p)
            .await
            .unwrap();
        for n in 1..=attempts {
            let outcome = match (status, n == attempts) {
                ("Running", true) => "running",
                ("Done", true) => "succeeded",
                _ => "retry",
            };
            sqlx::query("INSERT INTO job_attempts (job_id, queue, attempt, worker_id, outcome, error) VALUES ($1, 'probe', $2, 'probe@old:1:0', $3, $4)")
                .bind(id)
                .bind(n)
                .bind(outcome)
                .bind(format!("attempt {n}"))
                .execute(p)
                .await
                .unwrap();
        }
    }

    granary_jobs::platform::db::migrate(p)
        .await
        .expect("the upgrade");

    let moved: Vec<(String, String, i32, i32, serde_json::Value, Option<String>)> = sqlx::query_as(
        "SELECT id, state, attempt, max_attempts, args, last_error FROM jobs ORDER BY id",
    )
    .fetch_all(p)
    .await
    .unwrap();
    let states: Vec<(&str, &str, i32)> = moved
        .iter()
        .map(|(id, s, a, _, _, _)| (&id[24..], s.as_str(), *a))
        .collect();
    assert_eq!(
        states,
        [
            ("01", "pending", 0),
            ("02", "retrying", 2),
            ("03", "failed", 3),
            ("04", "cancelled", 1),
            ("05", "completed", 1),
            ("06", "pending", 1),
        ]
    );
    for (id, _, _, _, args, _) in &moved {
        assert_eq!(args["key"], id.as_str(), "the payload came across");
    }
    assert_eq!(moved[2].5.as_deref(), Some("out of attempts"));
    assert_eq!(moved[2].3, 3);
    // The history came across; the attempt that was running when the old runtime stopped is
    // closed as abandoned.
    assert_eq!(count(p, "SELECT count(*) FROM job_attempts").await, 8);
    assert_eq!(count(p, "SELECT count(*) FROM job_refs").await, 6);
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM job_attempts WHERE job_id = '01J00000000000000000000006'",
    )
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(open, ["abandoned"]);
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'apalis'"
        )
        .await,
        0,
        "the old schema is gone"
    );
    granary_jobs::platform::db::ensure_migrated(p)
        .await
        .unwrap();
    // What was waiting runs: the pending, the due retry, and the one that was running.
    let claimed = granary_jobs::queue::backend::claim(p, "probe", "probe@new:2:0", 10)
        .await
        .unwrap();
    let mut ids: Vec<&str> = claimed.iter().map(|c| &c.id[24..]).collect();
    ids.sort();
    assert_eq!(ids, ["01", "02", "06"]);
    let attempts: Vec<i32> = claimed.iter().map(|c| c.attempt).collect();
    assert!(attempts.contains(&3) && attempts.contains(&2) && attempts.contains(&1));
}
