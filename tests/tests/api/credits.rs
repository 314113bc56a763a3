//! Credits end to end: packs bought with a payment, plan allowances per billing period, atomic
//! and idempotent consumption, refunds that take back only what is left, and what the operator
//! and the starter's usage summary see.

use std::time::Duration;

use granary_tests::{TestApp, count, stripe, wait_for_count, worker::WorkerProcess};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const SERVICE_TOKEN: &str = "svc_0123456789abcdef0123456789abcdef";

async fn shop(in_process_worker: bool) -> TestApp {
    let b = TestApp::webhooks()
        .with_clerk()
        .env("CREDITS_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("JOB_BACKOFF_BASE_MS", "200");
    if in_process_worker {
        b.with_worker().spawn().await
    } else {
        b.spawn().await
    }
}

/// A published product granting `grants`, priced with a Stripe checkout URL or a Clerk plan;
/// returns (product id, price id).
async fn product(
    app: &TestApp,
    product_type: &str,
    grants: Value,
    plan: Option<&str>,
) -> (String, String) {
    let seller = app.token("user_seller", "seller").await;
    app.listed_product(
        &seller,
        &json!({"name": format!("Tokens {product_type}"), "product_type": product_type,
                "visibility": "published", "credit_grants": grants}),
        &json!({"name": "Pack", "amount_cents": PACK, "currency": "USD", "is_default": true,
                "clerk_plan_id": plan.unwrap_or(""),
                "metadata": {"checkout_url": "https://checkout.stripe.com/c/pay/x"}}),
    )
    .await
}

/// The pack's price, in USD cents.
const PACK: i64 = 1500;

async fn order(app: &TestApp, buyer: &str, price: &str) -> String {
    let res = app
        .post_as(
            buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price, "quantity": 1}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.json["order"]["public_id"].as_str().unwrap().to_string()
}

async fn balance(app: &TestApp, token: &str, unit: &str) -> i64 {
    let c = app.get_as(token, "/api/account/credits/").await;
    assert_eq!(c.status, 200, "{}", c.text);
    c.json["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["unit"] == unit)
        .map_or(0, |b| b["balance"].as_i64().unwrap())
}

async fn consume(
    app: &TestApp,
    token: &str,
    amount: i64,
    key: &str,
) -> granary_tests::TestResponse {
    app.post_as(
        token,
        "/api/account/credits/consume/",
        &json!({"unit": "tokens", "amount": amount, "idempotency_key": key}),
    )
    .await
}

async fn grant(app: &TestApp, user: &str, amount: i64) {
    let admin = app.token("user_admin", "admin").await;
    let res = app
        .post_as(
            &admin,
            "/api/admin/credits/adjust/",
            &json!({"clerk_user_id": user, "unit": "tokens", "amount": amount, "reason": "goodwill"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
}

#[tokio::test]
async fn amounts_at_the_ends_of_i64_are_refused_by_name_not_by_a_dropped_connection() {
    // Found by schemathesis on the debug build: `i64::MIN.abs()` overflowed in the adjust
    // route's bound check, and the panic dropped the connection.
    let app = shop(false).await;
    let admin = app.token("user_admin", "admin").await;
    let buyer = app.token("user_buyer", "buyer").await;
    for amount in [i64::MIN, i64::MAX, i64::MIN + 1] {
        let res = app
            .post_as(
                &admin,
                "/api/admin/credits/adjust/",
                &json!({"clerk_user_id": "user_buyer", "unit": "tokens", "amount": amount, "reason": "edge"}),
            )
            .await;
        assert_eq!(res.status, 422, "{amount}: {}", res.text);
        assert!(
            res.json["error"]["fields"]["amount"].is_array(),
            "{}",
            res.text
        );
        let res = consume(&app, &buyer, amount, &format!("edge-{amount}")).await;
        assert_eq!(res.status, 422, "{amount}: {}", res.text);
    }
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM credit_entries").await,
        0
    );
}

#[tokio::test]
async fn a_hundred_concurrent_debits_of_one_against_fifty_succeed_exactly_fifty_times() {
    let app = shop(false).await;
    let buyer = app.token("user_buyer", "buyer").await;
    grant(&app, "user_buyer", 50).await;
    let keys: Vec<String> = (0..100).map(|i| format!("debit-{i}")).collect();
    let answers = futures::future::join_all(keys.iter().map(|k| consume(&app, &buyer, 1, k))).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 402).collect();
    assert_eq!((ok, refused.len()), (50, 50));
    assert!(
        refused
            .iter()
            .all(|r| r.error_code() == Some("insufficient_credits") && r.json["balance"].is_i64())
    );
    assert_eq!(balance(&app, &buyer, "tokens").await, 0);
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM credit_entries WHERE source_type = 'consumption'"
        )
        .await,
        50
    );
}

#[tokio::test]
async fn a_consumption_repeated_with_its_key_debits_once() {
    let app = shop(false).await;
    let buyer = app.token("user_buyer", "buyer").await;
    grant(&app, "user_buyer", 10).await;
    let first = consume(&app, &buyer, 3, "k1").await;
    let again = consume(&app, &buyer, 3, "k1").await;
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(
        (&first.json["balance"], &first.json["replayed"]),
        (&json!(7), &json!(false))
    );
    assert_eq!(
        (
            &again.json["balance"],
            &again.json["replayed"],
            &again.json["entry_id"]
        ),
        (&json!(7), &json!(true), &first.json["entry_id"])
    );
    // Concurrent retries of one key debit once too.
    let same = futures::future::join_all((0..10).map(|_| consume(&app, &buyer, 2, "k2"))).await;
    assert!(same.iter().all(|r| r.status == 200));
    assert_eq!(balance(&app, &buyer, "tokens").await, 5);
    // Too much: 402 with the balance, and nothing changes.
    let short = consume(&app, &buyer, 6, "k3").await;
    assert_eq!(
        (short.status, short.error_code(), &short.json["balance"]),
        (402, Some("insufficient_credits"), &json!(5))
    );
    assert!(short.json["detail"].is_string());
    assert_eq!(balance(&app, &buyer, "tokens").await, 5);
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM credit_entries").await,
        3,
        "the grant and two debits"
    );

    // The shop's own service debits for a user it names, with the service token.
    let svc = |body: Value, token: &str| {
        app.send(
            app.client
                .post(app.url("/api/account/credits/consume/"))
                .bearer_auth(token)
                .json(&body),
        )
    };
    let res = svc(
        json!({"unit": "tokens", "amount": 1, "idempotency_key": "svc-1", "user": "user_buyer"}),
        SERVICE_TOKEN,
    )
    .await;
    assert_eq!(
        (res.status, &res.json["balance"]),
        (200, &json!(4)),
        "{}",
        res.text
    );
    let res = svc(
        json!({"unit": "tokens", "amount": 1, "idempotency_key": "svc-2"}),
        SERVICE_TOKEN,
    )
    .await;
    assert_eq!(res.status, 422, "the service must name the user");
    let res = svc(
        json!({"unit": "tokens", "amount": 1, "idempotency_key": "svc-3", "user": "user_buyer"}),
        "svc_0123456789abcdef0123456789abcdeX",
    )
    .await;
    assert_eq!(res.status, 401, "a wrong service token is no token");
    assert_eq!(balance(&app, &buyer, "tokens").await, 4);
}

#[tokio::test]
async fn a_pack_bought_with_a_duplicate_webhook_and_a_killed_worker_is_added_once() {
    let app = shop(false).await;
    let buyer = app.token("user_buyer", "buyer").await;
    let (pid, price) = product(
        &app,
        "digital",
        json!([{"unit": "Tokens", "amount": 100000}]),
        None,
    )
    .await;
    let _ = pid;
    let listed = app.get("/api/products/").await;
    assert_eq!(
        listed.json[0]["credit_grants"],
        json!([{"unit": "tokens", "amount": 100000}]),
        "shown in the catalog, unit normalised"
    );
    let public_id = order(&app, &buyer, &price).await;
    let paid = stripe::checkout_completed("evt_pack_1", &public_id, PACK);
    assert_eq!(app.deliver_stripe(&paid).await.status, 200);
    assert_eq!(app.deliver_stripe(&paid).await.status, 200);
    let env: Vec<(String, String)> = app.env.clone().into_iter().collect();
    let worker = WorkerProcess::start(&env);
    // Kill the worker once fulfillment has started.
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM job_attempts WHERE queue = 'fulfill_order'",
        1,
        WAIT,
    )
    .await;
    worker.kill9();
    let worker = WorkerProcess::start(&env);
    wait_for_count(
        &app.db_pool,
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        1,
        Duration::from_secs(60),
    )
    .await;
    worker.wait_registered(&app.db_pool, WAIT).await;
    assert!(worker.terminate());
    assert_eq!(balance(&app, &buyer, "tokens").await, 100_000);
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM credit_entries").await,
        1
    );
    let receipt: String = sqlx::query_scalar("SELECT text_body FROM emails WHERE kind = 'receipt'")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert!(receipt.contains("100,000 tokens added"), "{receipt}");
}

#[tokio::test]
async fn a_refund_takes_back_the_unspent_part_and_records_the_rest() {
    let app = shop(true).await;
    let buyer = app.token("user_buyer", "buyer").await;
    let (_, price) = product(
        &app,
        "digital",
        json!([{"unit": "tokens", "amount": 100}]),
        None,
    )
    .await;
    let public_id = order(&app, &buyer, &price).await;
    app.deliver_stripe(&stripe::checkout_completed("evt_pay", &public_id, PACK))
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(consume(&app, &buyer, 30, "spent").await.status, 200);
    assert_eq!(
        app.deliver_stripe(&stripe::charge_refunded("evt_refund", &public_id, PACK))
            .await
            .status,
        200
    );
    app.wait_for_count(
        "SELECT count(*) FROM credit_entries WHERE source_type = 'refund'",
        1,
        WAIT,
    )
    .await;
    let (amount, shortfall): (i64, i64) =
        sqlx::query_as("SELECT amount, shortfall FROM credit_entries WHERE source_type = 'refund'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!((amount, shortfall), (-70, 30));
    assert_eq!(balance(&app, &buyer, "tokens").await, 0);
    // The operator sees it on the order's timeline and in doctor.
    let admin = app.token("user_admin", "admin").await;
    let timeline = app
        .get_as(&admin, &format!("/api/admin/orders/{public_id}/timeline/"))
        .await;
    let kinds: Vec<&str> = timeline.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"credits.added") && kinds.contains(&"credits.taken_back"),
        "{kinds:?}"
    );
    let env: Vec<(String, String)> = app.env.clone().into_iter().collect();
    let (_, doctor) = granary_tests::worker::cli(&env, &["doctor"]).await;
    assert!(doctor.contains("30 tokens were already spent"), "{doctor}");
    // ...and can make it good from the command line, with a reason, audited.
    let (code, out) = granary_tests::worker::cli(
        &env,
        &[
            "credits",
            "adjust",
            "user_buyer",
            "tokens",
            "30",
            "--reason",
            "goodwill after refund",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(balance(&app, &buyer, "tokens").await, 30);
    let (code, _) = granary_tests::worker::cli(
        &env,
        &[
            "credits",
            "adjust",
            "user_buyer",
            "tokens",
            "-31",
            "--reason",
            "too much",
        ],
    )
    .await;
    assert_ne!(code, 0, "removing more than the balance is refused");
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM operator_actions WHERE action = 'credits.adjust' AND reason = 'goodwill after refund'"
        )
        .await,
        1
    );
}

fn item_event(ty: &str, ts_ms: i64, period_start_ms: i64) -> Value {
    json!({"type": ty, "object": "event", "timestamp": ts_ms,
        "data": {"id": "csubi_ai", "status": "active", "payer": {"user_id": "user_buyer"},
                 "plan": {"id": "cplan_ai", "slug": "ai"},
                 "period_start": period_start_ms, "period_end": period_start_ms + 30 * 86_400_000}})
}

#[tokio::test]
async fn a_plan_allowance_resets_once_per_period_under_shuffled_duplicated_events() {
    let app = shop(true).await;
    let buyer = app.token("user_buyer", "buyer").await;
    product(
        &app,
        "subscription",
        json!([{"unit": "tokens", "amount": 1000}]),
        Some("cplan_ai"),
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    let p1 = item_event("subscriptionItem.active", now - 40 * day, now - 40 * day);
    let p2 = item_event("subscriptionItem.updated", now - 10 * day, now - 10 * day);
    let settle = || async {
        app.wait_for_count(
            "SELECT count(*) FROM jobs WHERE state <> 'completed' AND run_at <= now()",
            0,
            WAIT,
        )
        .await
    };
    // Newer first, then the older one, each delivered twice.
    for (msg, body) in [
        ("msg_p2", &p2),
        ("msg_p1", &p1),
        ("msg_p2", &p2),
        ("msg_p1", &p1),
    ] {
        assert_eq!(app.deliver_clerk(msg, body).await.status, 200);
    }
    settle().await;
    assert_eq!(balance(&app, &buyer, "tokens").await, 1000);
    let resets = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT amount FROM credit_entries WHERE source_type = 'subscription_period' ORDER BY id",
        )
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
    };
    // The worker may apply the two periods in either order; either way the older one never
    // replaces the newer one, and the allowances add up to one period's.
    let first = resets().await;
    assert_eq!(first.iter().sum::<i64>(), 1000, "{first:?}");
    let start: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT allowance_period_start FROM credit_balances")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        start.timestamp_millis(),
        now - 10 * day,
        "the newest period is in force"
    );

    assert_eq!(consume(&app, &buyer, 300, "chat-1").await.status, 200);
    let usage = app.get_as(&buyer, "/api/ai/usage/summary/").await.json;
    let bucket = &usage["buckets"][0];
    assert_eq!(
        (
            &bucket["key"],
            &bucket["used"],
            &bucket["limit"],
            &bucket["percent_used"],
            &bucket["near_limit"],
            &bucket["reset_window"]
        ),
        (
            &json!("tokens"),
            &json!(300),
            &json!(1000),
            &json!(30.0),
            &json!(false),
            &json!("billing_period")
        ),
        "{usage}"
    );

    // The same period reported again (a later event) resets nothing.
    let p2_again = item_event("subscriptionItem.updated", now - 9 * day, now - 10 * day);
    app.deliver_clerk("msg_p2_again", &p2_again).await;
    settle().await;
    assert_eq!(balance(&app, &buyer, "tokens").await, 700);
    assert_eq!(resets().await, first);

    // The next period resets the allowance once: what was left of the old one lapses.
    let p3 = item_event("subscriptionItem.updated", now - day, now - day);
    for _ in 0..2 {
        app.deliver_clerk("msg_p3", &p3).await;
    }
    settle().await;
    assert_eq!(balance(&app, &buyer, "tokens").await, 1000);
    let last = resets().await;
    assert_eq!(
        (last.len(), last.last()),
        (first.len() + 1, Some(&300)),
        "one reset for the new period, topping 700 back up to 1000: {last:?}"
    );
}
