//! No paid order left behind: the reconciliation sweep against a Stripe stand-in speaking
//! Stripe's wire format, `payment_intent` events, the recovery checks of `doctor`, and the
//! operator's grant and role commands (CLI and HTTP, audited).

use std::time::Duration;

use granary_tests::{TestApp, count, shop::Shop, stripe as stripe_api, worker::cli};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

async fn n(app: &TestApp, sql: &str) -> i64 {
    count(&app.db_pool, sql).await
}

/// Waits until every job has finished (done, or failed for good).
async fn settle(app: &TestApp) {
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state IN ('pending', 'retrying', 'running')",
        0,
        WAIT,
    )
    .await;
}

#[tokio::test]
async fn a_payment_the_webhook_missed_is_fulfilled_by_a_sweep_once_even_when_the_webhook_then_arrives_twice()
 {
    let app = TestApp::webhooks()
        .with_stripe()
        .with_worker()
        .spawn()
        .await;
    let shop = Shop::seed(&app.pool).await;
    let ids = shop.orders(&app.pool, "rc", 2, false).await;
    let stripe = app.stripe.as_ref().unwrap();
    let missed = stripe_api::checkout_completed("evt_missed", &ids[0], 500);
    let delivered = stripe_api::checkout_completed("evt_delivered", &ids[1], 500);
    stripe.add_event(missed.clone());
    stripe.add_event(delivered.clone());
    // One payment's webhook arrived; the other never did.
    assert_eq!(app.deliver_stripe(&delivered).await.status, 200);

    let env = app.env_vars();
    let (code, out) = cli(&env, &["reconcile", "--since", "1h"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 payment event(s) listed, 1 never seen before"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "found evt_missed checkout.session.completed → processed: order {} paid",
            ids[0]
        )),
        "{out}"
    );
    // The sweep asked Stripe exactly for the payment events of the window, in Stripe's format.
    let q = stripe.requests().last().cloned().unwrap();
    for t in [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "payment_intent.succeeded",
        "charge.refunded",
        "charge.dispute.created",
    ] {
        assert!(
            q.contains(&format!("types%5B%5D={t}")),
            "{t} not asked for: {q}"
        );
    }
    assert!(
        q.contains("created%5Bgte%5D=") && q.contains("limit=100"),
        "{q}"
    );

    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        2,
        WAIT,
    )
    .await;
    // The real webhook of the missed payment arrives late, twice; a second sweep runs too.
    for _ in 0..2 {
        assert_eq!(app.deliver_stripe(&missed).await.status, 200);
    }
    let (code, out) = cli(&env, &["reconcile", "--since", "1h"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 payment event(s) listed, 0 never seen before"),
        "{out}"
    );
    settle(&app).await;

    // Exactly one effect per payment.
    assert_eq!(
        n(&app, "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_missed' AND found_by = 'reconciliation'").await,
        1
    );
    assert_eq!(
        n(&app, "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_delivered' AND found_by = 'delivery'").await,
        1
    );
    assert_eq!(n(&app, "SELECT count(*) FROM webhook_events").await, 2);
    assert_eq!(
        n(
            &app,
            "SELECT count(*) FROM payment_transactions WHERE kind = 'payment'"
        )
        .await,
        2
    );
    assert_eq!(
        n(
            &app,
            "SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order'"
        )
        .await,
        2
    );
    assert_eq!(n(&app, "SELECT count(*) FROM entitlements").await, 2);
    assert_eq!(n(&app, "SELECT count(*) FROM download_grants").await, 2);
    assert_eq!(
        n(&app, "SELECT count(*) FROM emails WHERE kind = 'receipt'").await,
        2
    );
    // The sweeps are jobs like any other, and the timeline says where the payment came from.
    assert_eq!(
        n(
            &app,
            "SELECT count(*) FROM jobs WHERE queue = 'reconcile_stripe' AND state = 'completed'"
        )
        .await,
        2
    );
    let timeline = serde_json::to_value(
        granary_jobs::operator::reads::timeline(&app.pool, &ids[0])
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        timeline["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "webhook.received" && e["detail"]["found_by"] == "reconciliation"
        }),
        "{timeline}"
    );
}

#[tokio::test]
async fn a_refund_found_only_by_the_sweep_revokes() {
    let app = TestApp::webhooks()
        .with_clerk()
        .with_stripe()
        .with_worker()
        .spawn()
        .await;
    let shop = Shop::seed(&app.pool).await;
    let ids = shop.orders(&app.pool, "rf", 1, false).await;
    let paid = stripe_api::checkout_completed("evt_paid", &ids[0], 500);
    assert_eq!(app.deliver_stripe(&paid).await.status, 200);
    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        1,
        WAIT,
    )
    .await;
    // The refund's webhook never arrives; Stripe lists it.
    let stripe = app.stripe.as_ref().unwrap();
    stripe.add_event(paid);
    stripe.add_event(stripe_api::charge_refunded("evt_refund", &ids[0], 500));

    // Through the HTTP twin of `granary-worker reconcile`.
    let admin = app.token("admin", "admin").await;
    let res = app
        .post_as(
            &admin,
            "/api/admin/reconcile/",
            &json!({"provider": "stripe"}),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.text);
    let run_id = res.json["runs"][0]["run_id"].as_str().unwrap().to_string();
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE revoked_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM download_grants WHERE revoked_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    let run = app
        .get_as(&admin, &format!("/api/admin/reconcile/{run_id}/"))
        .await;
    assert_eq!(run.json["status"], "succeeded", "{}", run.text);
    assert_eq!(run.json["examined"], 2);
    assert_eq!(run.json["recovered"], 1);
    let found = run.json["found"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{}", run.text);
    assert_eq!(found[0]["provider_event_id"], "evt_refund");
    assert_eq!(
        n(
            &app,
            "SELECT count(*) FROM orders WHERE status = 'refunded'"
        )
        .await,
        1
    );
    assert_eq!(
        n(
            &app,
            "SELECT count(*) FROM payment_transactions WHERE kind = 'refund'"
        )
        .await,
        1
    );
    // Admin only.
    let buyer = app.token("someone", "buyer").await;
    let res = app
        .post_as(&buyer, "/api/admin/reconcile/", &json!({}))
        .await;
    assert_eq!(res.status, 403);
}

#[tokio::test]
async fn stripe_answering_500_then_429_then_200_ends_with_one_effect() {
    let app = TestApp::webhooks()
        .with_stripe()
        .with_worker()
        .spawn()
        .await;
    let shop = Shop::seed(&app.pool).await;
    let ids = shop.orders(&app.pool, "flaky", 1, false).await;
    let stripe = app.stripe.as_ref().unwrap();
    stripe.add_event(stripe_api::checkout_completed("evt_flaky", &ids[0], 500));
    stripe.script([500, 429]);

    // The operator sees the failure at once, with what to do.
    let (code, out) = cli(&app.env_vars(), &["reconcile", "--since", "1h"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed: Stripe answered"), "{out}");
    assert!(out.contains("retries with backoff"), "{out}");

    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        1,
        WAIT,
    )
    .await;
    settle(&app).await;
    // Three attempts, each recorded with its error, and one effect.
    let errors: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT a.attempt, a.outcome, a.error FROM job_attempts a JOIN jobs j ON j.id = a.job_id
         WHERE j.queue = 'reconcile_stripe' ORDER BY a.attempt",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].2.as_deref().unwrap_or_default().contains("500"),
        "{errors:?}"
    );
    assert!(
        errors[1].2.as_deref().unwrap_or_default().contains("429"),
        "{errors:?}"
    );
    assert_eq!(errors[2].1, "succeeded", "{errors:?}");
    let run: (String, i32, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, recovered, error_code FROM reconcile_runs")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(run, ("succeeded".into(), 3, 1, None));
    assert_eq!(n(&app, "SELECT count(*) FROM webhook_events").await, 1);
    assert_eq!(
        n(&app, "SELECT count(*) FROM payment_transactions").await,
        1
    );
    assert_eq!(
        n(&app, "SELECT count(*) FROM emails WHERE kind = 'receipt'").await,
        1
    );
}

#[tokio::test]
async fn a_bad_stripe_key_is_a_visible_explained_failure_and_doctor_names_it() {
    let app = TestApp::webhooks()
        .with_stripe()
        .with_worker()
        .env("STRIPE_SECRET_KEY", "sk_test_rolled_key_9999")
        .spawn()
        .await;
    let env = app.env_vars();
    let (code, out) = cli(&env, &["reconcile", "--since", "1h"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Stripe answered 401") && out.contains("Invalid API Key provided"),
        "{out}"
    );
    assert!(
        out.contains("STRIPE_SECRET_KEY is wrong or was rolled"),
        "{out}"
    );

    let (code, out) = cli(&env, &["doctor"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] stripe reconciliation") && out.contains("stripe_unauthorized"),
        "{out}"
    );
    assert!(
        out.contains("STRIPE_SECRET_KEY is wrong or was rolled"),
        "{out}"
    );
    // --live asks Stripe itself.
    let (code, out) = cli(&env, &["doctor", "--live"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] stripe api"), "{out}");
}

#[tokio::test]
async fn the_schedule_sweeps_without_an_operator() {
    let app = TestApp::webhooks()
        .with_stripe()
        .with_worker()
        .env("RECONCILE_INTERVAL_SECONDS", "1")
        .spawn()
        .await;
    let shop = Shop::seed(&app.pool).await;
    let ids = shop.orders(&app.pool, "sched", 1, false).await;
    app.stripe
        .as_ref()
        .unwrap()
        .add_event(stripe_api::checkout_completed("evt_sched", &ids[0], 500));
    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        1,
        WAIT,
    )
    .await;
    assert!(
        n(&app, "SELECT count(*) FROM reconcile_runs WHERE trigger = 'schedule' AND status = 'succeeded'").await >= 1
    );
    // Never two scheduled sweeps waiting at once.
    assert!(
        n(
            &app,
            "SELECT count(*) FROM jobs WHERE queue = 'reconcile_stripe' AND state = 'pending'"
        )
        .await
            <= 1
    );
}

#[tokio::test]
async fn payment_intent_succeeded_alone_pays_and_with_its_checkout_session_pays_once() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let shop = Shop::seed(&app.pool).await;
    let ids = shop.orders(&app.pool, "pi", 3, false).await;

    // A: the payment intent alone fulfils; its checkout session after it records nothing more.
    let r = app
        .deliver_stripe(&stripe_api::payment_intent_succeeded(
            "evt_pi_a", &ids[0], 500,
        ))
        .await;
    assert_eq!(r.status, 200);
    app.wait_for_count(
        &format!(
            "SELECT count(*) FROM orders WHERE public_id = '{}' AND status = 'fulfilled'",
            ids[0]
        ),
        1,
        WAIT,
    )
    .await;
    app.deliver_stripe(&stripe_api::checkout_completed("evt_cs_a", &ids[0], 500))
        .await;
    // B: the other order round.
    app.deliver_stripe(&stripe_api::checkout_completed("evt_cs_b", &ids[1], 500))
        .await;
    app.deliver_stripe(&stripe_api::payment_intent_succeeded(
        "evt_pi_b", &ids[1], 500,
    ))
    .await;
    // C: a failed payment attempt is on the timeline; the order stays payable.
    let mut failed = stripe_api::payment_intent_succeeded("evt_pi_c_failed", &ids[2], 500);
    failed["type"] = json!("payment_intent.payment_failed");
    failed["data"]["object"]["status"] = json!("requires_payment_method");
    failed["data"]["object"]["last_payment_error"] = json!({"message": "Your card was declined."});
    app.deliver_stripe(&failed).await;
    settle(&app).await;

    for id in &ids[..2] {
        let one = |sql: &str| sql.replace("{id}", id);
        assert_eq!(
            n(&app, &one("SELECT count(*) FROM payment_transactions t JOIN orders o ON o.id = t.order_id WHERE o.public_id = '{id}'")).await,
            1,
            "one payment for {id}"
        );
        assert_eq!(
            n(&app, &one("SELECT count(*) FROM emails m JOIN orders o ON o.id = m.order_id WHERE o.public_id = '{id}' AND m.kind = 'receipt'")).await,
            1,
            "one receipt for {id}"
        );
        assert_eq!(
            n(&app, &one("SELECT count(*) FROM job_refs r JOIN orders o ON o.id = r.order_id WHERE o.public_id = '{id}' AND r.queue = 'fulfill_order'")).await,
            1
        );
    }
    assert_eq!(
        n(
            &app,
            &format!(
                "SELECT count(*) FROM orders WHERE public_id = '{}' AND status = 'pending'",
                ids[2]
            )
        )
        .await,
        1
    );
    let timeline = serde_json::to_value(
        granary_jobs::operator::reads::timeline(&app.pool, &ids[2])
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        timeline["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "webhook.received"
                && e["detail"]["type"] == "payment_intent.payment_failed"
                && e["detail"]["action"] == "payment_failed"
        }),
        "{timeline}"
    );
    // A payment intent that names no order is stored and ignored, with the reason.
    let mut anonymous = stripe_api::payment_intent_succeeded("evt_pi_anon", "nobody", 500);
    anonymous["data"]["object"]["metadata"] = json!({});
    app.deliver_stripe(&anonymous).await;
    settle(&app).await;
    let why: (String, Option<String>) = sqlx::query_as(
        "SELECT status, last_error FROM webhook_events WHERE event_id = 'evt_pi_anon'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(why.0, "ignored");
    assert!(
        why.1.unwrap_or_default().contains("metadata.order_id"),
        "the reason names what is missing"
    );
}

fn find(report: &Value, pred: impl Fn(&str) -> bool) -> Vec<&Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| pred(c["name"].as_str().unwrap_or_default()))
        .collect()
}

fn recovery_check(name: &str) -> bool {
    name == "cors"
        || name == "prices without a checkout URL"
        || name.starts_with("pending order ")
        || name.ends_with(" reconciliation")
}

#[tokio::test]
async fn doctor_reports_the_recovery_checks_on_a_broken_shop_and_is_silent_on_a_healthy_one() {
    let app = TestApp::webhooks()
        .with_clerk()
        .with_stripe()
        .with_worker()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .spawn()
        .await;
    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    let product = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "Kit", "slug": "kit", "visibility": "published"}),
        )
        .await;
    let pid = product.json["id"].as_str().unwrap().to_string();
    let price = app
        .post_as(&seller, &format!("/api/seller/products/{pid}/prices/"), &json!({"amount_cents": 900, "currency": "EUR", "metadata": {"checkout_url": "https://pay.example/k"}}))
        .await;
    let order = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price.json["id"]}),
        )
        .await;
    let public_id = order.json["order"]["public_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A healthy sweep ran.
    let (code, out) = cli(&app.env_vars(), &["reconcile", "--since", "1h"]).await;
    assert_eq!(code, 0, "{out}");

    // Healthy: every recovery check is ok (or has nothing to say).
    let mut env = app.env_vars();
    let (code, out) = cli(&env, &["doctor", "--json", "--pending-minutes", "0"]).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0, "{out}");
    let checks = find(&report, recovery_check);
    assert!(!checks.is_empty(), "{out}");
    for c in checks {
        assert_eq!(c["level"], "ok", "{c}");
    }

    // Broken, four ways.
    // 1. A purchasable price with no checkout URL, kept off Stripe Checkout (with the key set,
    //    a one-time price without a URL would be sold through a Checkout Session).
    let bare = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "Bare", "slug": "bare", "visibility": "published"}),
        )
        .await;
    let bare_id = bare.json["id"].as_str().unwrap().to_string();
    let bare_price = app
        .post_as(
            &seller,
            &format!("/api/seller/products/{bare_id}/prices/"),
            &json!({"amount_cents": 100, "currency": "EUR", "name": "Once", "metadata": {"checkout": "static"}}),
        )
        .await;
    assert_eq!(bare_price.status, 201, "{}", bare_price.text);
    // 2. Stripe reports the pending order's payment, but for the wrong amount: it fails to apply
    //    and the order stays pending.
    let mut wrong = stripe_api::checkout_completed("evt_wrong_amount", &public_id, 1);
    wrong["data"]["object"]["currency"] = json!("eur");
    assert_eq!(app.deliver_stripe(&wrong).await.status, 200);
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_wrong_amount' AND status = 'failed'",
        1,
        WAIT,
    )
    .await;
    // 3. The storefront moved to an origin CORS does not allow.
    env.retain(|(k, _)| k != "FRONTEND_APP_URL");
    env.push(("FRONTEND_APP_URL".into(), "https://shop.example".into()));
    // 4. The Stripe key was rolled at Stripe: the worker's key stops working.
    app.stripe.as_ref().unwrap().roll_key();
    let (code, out) = cli(
        &env,
        &["reconcile", "--since", "1h", "--provider", "stripe"],
    )
    .await;
    assert_eq!(code, 1, "{out}");

    let (code, out) = cli(&env, &["doctor", "--json", "--pending-minutes", "0"]).await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let one = |name: &str| {
        let found = find(&report, |n| n == name);
        assert_eq!(found.len(), 1, "one {name} in {out}");
        found[0].clone()
    };
    let prices = one("prices without a checkout URL");
    assert_eq!(prices["level"], "warn");
    assert!(
        prices["detail"].as_str().unwrap().contains("Bare (bare)")
            && prices["detail"]
                .as_str()
                .unwrap()
                .contains(bare_price.json["id"].as_str().unwrap())
            && prices["fix"].as_str().unwrap().contains("checkout_url"),
        "{prices}"
    );
    let pending = one(&format!("pending order {public_id}"));
    assert_eq!(pending["level"], "fail");
    assert!(
        pending["detail"]
            .as_str()
            .unwrap()
            .contains("evt_wrong_amount")
            && pending["detail"].as_str().unwrap().contains("paid 1 EUR")
            && pending["fix"].as_str().unwrap().contains("webhooks replay"),
        "{pending}"
    );
    let cors = one("cors");
    assert_eq!(cors["level"], "fail");
    assert!(
        cors["detail"]
            .as_str()
            .unwrap()
            .contains("https://shop.example")
            && cors["fix"]
                .as_str()
                .unwrap()
                .contains("add https://shop.example to CORS_ALLOWED_ORIGINS"),
        "{cors}"
    );
    let sweep = one("stripe reconciliation");
    assert_eq!(sweep["level"], "fail");
    assert!(
        sweep["fix"].as_str().unwrap().contains("STRIPE_SECRET_KEY"),
        "{sweep}"
    );
}

#[tokio::test]
async fn grants_are_reset_and_revoked_and_roles_set_from_the_cli_and_over_http_audited() {
    let app = TestApp::webhooks()
        .with_clerk()
        .with_worker()
        .env("DOWNLOAD_DEFAULT_MAX", "2")
        .env("DOWNLOAD_DEFAULT_EXPIRY_DAYS", "1")
        .spawn()
        .await;
    let shop = Shop::seed(&app.pool).await;
    let ids = shop.orders(&app.pool, "gr", 2, true).await;
    app.wait_for_count("SELECT count(*) FROM download_grants", 2, WAIT)
        .await;
    const GRANT_OF: &str = "SELECT g.id FROM download_grants g JOIN order_items oi ON oi.id = g.order_item_id JOIN orders o ON o.id = oi.order_id WHERE o.public_id = $1";
    let g1: uuid::Uuid = sqlx::query_scalar(GRANT_OF)
        .bind(&ids[0])
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let g2: uuid::Uuid = sqlx::query_scalar(GRANT_OF)
        .bind(&ids[1])
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    // The customer used both downloads.
    sqlx::query("UPDATE download_grants SET download_count = 2")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let expiry: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM download_grants WHERE id = $1")
            .bind(g1)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();

    // CLI: reset, with two more and a week more.
    let env = app.env_vars();
    let (code, out) = cli(
        &env,
        &[
            "grants",
            "reset",
            &g1.to_string(),
            "--add",
            "2",
            "--extend",
            "7d",
            "--reason",
            "ticket 42: ran out",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (count_after, max_after, expires_after): (i32, Option<i32>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "SELECT download_count, max_downloads, expires_at FROM download_grants WHERE id = $1",
        )
        .bind(g1)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!((count_after, max_after), (0, Some(4)));
    let extended = (expires_after - expiry).num_seconds();
    assert!(
        (7 * 86400 - 5..=7 * 86400 + 5).contains(&extended),
        "{extended}"
    );
    let can: bool = sqlx::query_scalar(
        "SELECT granary_can_download(g, a) FROM download_grants g JOIN digital_assets a ON a.id = g.asset_id WHERE g.id = $1",
    )
    .bind(g1)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert!(can, "the customer can download again");

    // HTTP: reset the other, then revoke it; a second revoke is a conflict.
    let admin = app.token("admin", "admin").await;
    let res = app
        .post_as(
            &admin,
            &format!("/api/admin/grants/{g2}/reset/"),
            &json!({"reason": "goodwill"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.json["download_count"], 0);
    assert_eq!(res.json["max_downloads"], 2);
    let res = app
        .post_as(
            &admin,
            &format!("/api/admin/grants/{g2}/revoke/"),
            &json!({"reason": "chargeback by phone"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.json["revoked_at"].is_string());
    let res = app
        .post_as(
            &admin,
            &format!("/api/admin/grants/{g2}/revoke/"),
            &json!({}),
        )
        .await;
    assert_eq!(res.status, 409);
    // A revoked grant is not reset (CLI), and an unknown one is a 404 (HTTP).
    let (code, _) = cli(&env, &["grants", "reset", &g2.to_string()]).await;
    assert_ne!(code, 0);
    let res = app
        .post_as(
            &admin,
            &format!("/api/admin/grants/{}/reset/", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await;
    assert_eq!(res.status, 404);
    // CLI revoke.
    let (code, out) = cli(
        &env,
        &["grants", "revoke", &g1.to_string(), "--reason", "abuse"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let can: bool = sqlx::query_scalar(
        "SELECT granary_can_download(g, a) FROM download_grants g JOIN digital_assets a ON a.id = g.asset_id WHERE g.id = $1",
    )
    .bind(g1)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert!(!can);

    // Every action is audited, with who and why, and shows on the order's timeline.
    let audit: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, actor, reason FROM operator_actions WHERE target_type = 'download_grant' ORDER BY created_at",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        vec![
            (
                "grant.reset".into(),
                "cli:night-operator".into(),
                Some("ticket 42: ran out".into())
            ),
            (
                "grant.reset".into(),
                "admin:admin".into(),
                Some("goodwill".into())
            ),
            (
                "grant.revoke".into(),
                "admin:admin".into(),
                Some("chargeback by phone".into())
            ),
            (
                "grant.revoke".into(),
                "cli:night-operator".into(),
                Some("abuse".into())
            ),
        ]
    );
    let timeline = serde_json::to_value(
        granary_jobs::operator::reads::timeline(&app.pool, &ids[0])
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        timeline["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "operator.grant.reset"),
        "{timeline}"
    );

    // Roles: over HTTP (admins only), and the role survives Clerk's later user.updated that
    // carries none.
    let buyer = app.token("buyer", "buyer").await;
    let res = app
        .post_as(
            &buyer,
            "/api/admin/users/user_newseller/role/",
            &json!({"role": "seller"}),
        )
        .await;
    assert_eq!(res.status, 403);
    let res = app
        .post_as(
            &admin,
            "/api/admin/users/user_newseller/role/",
            &json!({"role": "seller", "reason": "onboarding"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.json["role"], "seller");
    let res = app
        .post_as(
            &admin,
            "/api/admin/users/user_newseller/role/",
            &json!({"role": "owner"}),
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text);
    let updated = json!({"type": "user.updated", "timestamp": chrono::Utc::now().timestamp_millis(),
        "data": {"id": "user_newseller", "first_name": "Nia", "last_name": "Seller", "public_metadata": {},
                 "primary_email_address_id": "idn_1",
                 "email_addresses": [{"id": "idn_1", "email_address": "nia@example.com"}]}});
    assert_eq!(
        app.deliver_clerk("msg_user_updated", &updated).await.status,
        200
    );
    app.wait_for_count(
        "SELECT count(*) FROM profiles WHERE clerk_user_id = 'user_newseller' AND email = 'nia@example.com'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        n(&app, "SELECT count(*) FROM profiles WHERE clerk_user_id = 'user_newseller' AND role = 'seller'").await,
        1
    );
    assert_eq!(
        n(&app, "SELECT count(*) FROM operator_actions WHERE action = 'profile.set_role' AND actor = 'admin:admin' AND reason = 'onboarding'").await,
        1
    );
}

#[tokio::test]
async fn the_clerk_sweep_pulls_subscriptions_whose_events_went_quiet() {
    let app = TestApp::webhooks().with_clerk().with_worker().spawn().await;
    let now = chrono::Utc::now().timestamp_millis();
    let hour = 3_600_000;
    let item = |user: &str, status: &str, ts: i64| {
        json!({"type": "subscriptionItem.active", "object": "event", "timestamp": ts,
            "data": {"id": format!("csubi_{user}"), "status": status, "payer": {"user_id": user},
                     "plan": {"id": "cplan_pro", "slug": "pro", "features": [{"slug": "ai_coach"}]},
                     "period_start": ts, "period_end": ts + 720 * hour}})
    };
    // Two users subscribed: one quiet for five hours, one who just had an event.
    assert_eq!(
        app.deliver_clerk("msg_quiet", &item("user_quiet", "active", now - 5 * hour))
            .await
            .status,
        200
    );
    assert_eq!(
        app.deliver_clerk("msg_fresh", &item("user_fresh", "active", now))
            .await
            .status,
        200
    );
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE feature_key = 'ai_coach' AND revoked_at IS NULL",
        2,
        WAIT,
    )
    .await;
    // At Clerk, the quiet user's subscription ended; the webhook never came.
    let clerk = app.clerk.as_ref().unwrap();
    for user in ["user_quiet", "user_fresh"] {
        clerk.set_subscription(user, json!({
            "object": "commerce_subscription", "id": format!("csub_{user}"), "status": "ended", "payer_id": user,
            "created_at": now - 5 * hour, "updated_at": now,
            "subscription_items": [{"object": "commerce_subscription_item", "id": format!("csubi_{user}"), "status": "ended",
                "plan": {"id": "cplan_pro", "slug": "pro", "features": [{"slug": "ai_coach"}]},
                "period_start": now - 5 * hour, "period_end": now - hour}]
        }));
    }
    let (code, out) = cli(&app.env_vars(), &["reconcile", "--provider", "clerk"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 stale user(s) examined, 1 pulled"), "{out}");
    // Only the quiet user was asked about, and their entitlement follows Clerk.
    assert_eq!(clerk.backend_api_calls(), 1);
    app.wait_for_count(
        "SELECT count(*) FROM entitlements e JOIN profiles p ON p.id = e.profile_id WHERE p.clerk_user_id = 'user_quiet' AND e.revoked_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        n(&app, "SELECT count(*) FROM entitlements e JOIN profiles p ON p.id = e.profile_id WHERE p.clerk_user_id = 'user_fresh' AND e.revoked_at IS NULL").await,
        1
    );
    // Clerk refusing every pull fails the sweep visibly, and it retries.
    sqlx::query("UPDATE subscriptions SET last_event_at = now() - interval '5 hours'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    sqlx::query("UPDATE billing_sync SET last_success_at = now() - interval '5 hours'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    clerk.fail_backend_api(Some(401));
    let (code, out) = cli(&app.env_vars(), &["reconcile", "--provider", "clerk"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed:") && out.contains("401"), "{out}");
}
