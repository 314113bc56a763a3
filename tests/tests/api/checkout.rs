//! Checkout through a Stripe Checkout Session that Granary creates for the order
//! (docs/payments.md): against the Stripe stand-in, which checks the form Stripe's API takes,
//! replays an idempotency key's first answer, and sends the session's own events.

use std::time::Duration;

use granary_tests::{TestApp, TestResponse, count, stripe};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

struct Shop {
    app: TestApp,
    seller: String,
    buyer: String,
}

impl Shop {
    async fn start() -> Self {
        let app = TestApp::shop()
            .with_stripe()
            .env("FRONTEND_APP_URL", "https://shop.example")
            .spawn()
            .await;
        let seller = app.token("user_seller", "seller").await;
        let buyer = app.token("user_buyer", "buyer").await;
        Shop { app, seller, buyer }
    }

    /// A published product with one price; `metadata` is the price's.
    async fn price(&self, name: &str, amount_cents: i64, metadata: Value) -> String {
        let slug = name.to_lowercase().replace(' ', "-");
        self.app
            .listed_product(
                &self.seller,
                &json!({"name": name, "slug": slug, "product_type": "digital", "visibility": "published"}),
                &json!({"amount_cents": amount_cents, "currency": "USD", "metadata": metadata}),
            )
            .await
            .1
    }

    async fn create(&self, body: &Value, key: &str) -> TestResponse {
        self.app
            .send(
                self.app
                    .client
                    .post(self.app.url("/api/account/orders/create/"))
                    .bearer_auth(&self.buyer)
                    .header("Idempotency-Key", key)
                    .json(body),
            )
            .await
    }

    /// Waits until order `public_id` is in `status`.
    async fn wait_status(&self, public_id: &str, status: &str) {
        self.app
            .wait_for_count(
                &format!(
                    "SELECT count(*) FROM orders WHERE public_id = '{public_id}' AND status = '{status}'"
                ),
                1,
                WAIT,
            )
            .await;
    }

    fn stripe(&self) -> &stripe::StripeStandIn {
        self.app.stripe.as_ref().unwrap()
    }
}

fn session_id(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn a_buy_through_a_session_is_paid_by_its_webhook() {
    let s = Shop::start().await;
    let price = s.price("Field Guide", 1900, json!({})).await;
    let res = s.create(&json!({"price_id": price}), "buy-1").await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.json["checkout"]["provider"], "stripe");
    let url = res.json["checkout"]["checkout_url"].as_str().unwrap();
    assert!(url.starts_with("https://checkout.stripe.com/"), "{url}");
    assert_eq!(res.json["order"]["checkout_url"], url);
    let public_id = res.json["order"]["public_id"].as_str().unwrap().to_string();

    // What Granary sent Stripe.
    let calls = s.stripe().session_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    let order_id: String = sqlx::query_scalar("SELECT id::text FROM orders")
        .fetch_one(&s.app.db_pool)
        .await
        .unwrap();
    assert_eq!(
        call.idempotency_key.as_deref(),
        Some(format!("granary-checkout-{order_id}").as_str())
    );
    assert!(call.stripe_version.is_some(), "a pinned Stripe-Version");
    for (field, want) in [
        ("mode", "payment"),
        ("client_reference_id", public_id.as_str()),
        ("metadata[order_id]", public_id.as_str()),
        (
            "payment_intent_data[metadata][order_id]",
            public_id.as_str(),
        ),
        ("customer_email", "user_buyer@example.com"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", "1900"),
        (
            "line_items[0][price_data][product_data][name]",
            "Field Guide",
        ),
        ("line_items[0][quantity]", "1"),
        ("cancel_url", "https://shop.example/checkout/cancel"),
    ] {
        assert_eq!(call.get(field), Some(want), "{field}");
    }
    assert_eq!(
        call.get("success_url"),
        Some(
            format!(
                "https://shop.example/checkout/success?order={public_id}&session_id={{CHECKOUT_SESSION_ID}}"
            )
            .as_str()
        )
    );
    let expires: i64 = call.get("expires_at").unwrap().parse().unwrap();
    let in_an_hour = chrono::Utc::now().timestamp() + 3600;
    assert!(
        (expires - in_an_hour).abs() < 60,
        "CHECKOUT_SESSION_TTL's default is an hour"
    );
    let stored: (Option<String>, bool) = sqlx::query_as(
        "SELECT stripe_checkout_session_id, checkout_expires_at IS NOT NULL FROM orders",
    )
    .fetch_one(&s.app.db_pool)
    .await
    .unwrap();
    assert_eq!(stored, (Some(session_id(url).to_string()), true));

    // The buyer pays; Stripe's signed event for that session pays the order.
    let event = s.stripe().complete_session("evt_paid_1", session_id(url));
    assert_eq!(s.app.deliver_stripe(&event).await.status, 200);
    s.wait_status(&public_id, "fulfilled").await;
    let paid: i64 = sqlx::query_scalar(
        "SELECT amount_cents FROM payment_transactions WHERE kind = 'payment' AND provider = 'stripe'",
    )
    .fetch_one(&s.app.db_pool)
    .await
    .unwrap();
    assert_eq!(paid, 1900);
}

#[tokio::test]
async fn a_retried_create_answers_the_same_order_and_session_and_makes_no_second() {
    let s = Shop::start().await;
    let price = s.price("Kit", 900, json!({})).await;
    let first = s.create(&json!({"price_id": price}), "same-key").await;
    let again = s.create(&json!({"price_id": price}), "same-key").await;
    assert_eq!((first.status, again.status), (201, 200), "{}", again.text);
    assert_eq!(
        first.json["order"]["public_id"],
        again.json["order"]["public_id"]
    );
    assert_eq!(
        first.json["checkout"]["checkout_url"],
        again.json["checkout"]["checkout_url"]
    );
    assert_eq!(again.json["checkout"]["provider"], "stripe");
    assert_eq!(s.stripe().sessions().len(), 1);
    assert_eq!(
        count(&s.app.db_pool, "SELECT count(*) FROM orders").await,
        1
    );
}

#[tokio::test]
async fn stripe_down_at_create_leaves_the_order_pending_and_a_retry_opens_the_session() {
    let s = Shop::start().await;
    let price = s.price("Kit", 900, json!({})).await;
    let body = json!({"price_id": price});

    // 500: 502 with a code and Retry-After; the order is saved, pending, without a URL.
    s.stripe().script([500]);
    let res = s.create(&body, "k-down").await;
    assert_eq!(
        (res.status, res.error_code()),
        (502, Some("payment_provider_error")),
        "{}",
        res.text
    );
    assert_eq!(res.header("retry-after").as_deref(), Some("5"));
    let row: (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT status, checkout_url, stripe_checkout_session_id FROM orders")
            .fetch_one(&s.app.db_pool)
            .await
            .unwrap();
    assert_eq!(row, ("pending".into(), None, None));

    // 429: 503 with Stripe's own Retry-After.
    s.stripe().script([429]);
    let res = s.create(&body, "k-down").await;
    assert_eq!(
        (res.status, res.error_code()),
        (503, Some("payment_provider_rate_limited")),
        "{}",
        res.text
    );
    assert_eq!(res.header("retry-after").as_deref(), Some("1"));

    // No answer within ten seconds: 503, retry shortly.
    s.stripe().script([0]);
    let res = s.create(&body, "k-down").await;
    assert_eq!(
        (res.status, res.error_code()),
        (503, Some("payment_provider_unavailable")),
        "{}",
        res.text
    );
    assert!(res.header("retry-after").is_some());

    // Stripe is back: the retry (same key) finds the order and opens its one session.
    let res = s.create(&body, "k-down").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(
        res.json["checkout"]["checkout_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://checkout.stripe.com/"))
    );
    assert_eq!(
        count(&s.app.db_pool, "SELECT count(*) FROM orders").await,
        1
    );
    assert_eq!(s.stripe().sessions().len(), 1);
    let keys: std::collections::BTreeSet<_> = s
        .stripe()
        .session_calls()
        .into_iter()
        .map(|c| c.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 1, "every attempt used the order's one key");
}

#[tokio::test]
async fn a_refused_key_is_the_shop_owners_to_fix_and_is_never_shown() {
    let s = Shop::start().await;
    let price = s.price("Kit", 900, json!({})).await;
    s.stripe().roll_key();
    let res = s.create(&json!({"price_id": price}), "k-key").await;
    assert_eq!(
        (res.status, res.error_code()),
        (502, Some("payment_provider_misconfigured")),
        "{}",
        res.text
    );
    assert!(res.header("retry-after").is_none());
    assert!(!res.text.contains("sk_test"), "{}", res.text);
    assert!(res.text.contains("STRIPE_SECRET_KEY"), "{}", res.text);
}

#[tokio::test]
async fn a_multi_line_order_is_one_session_whose_total_is_the_orders() {
    let s = Shop::start().await;
    let guide = s.price("Guide", 1500, json!({})).await;
    let kit = s.price("Kit", 900, json!({})).await;
    let res = s
        .create(
            &json!({"items": [{"price_id": guide, "quantity": 2}, {"price_id": kit}]}),
            "k-multi",
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.json["order"]["total_cents"], 3900);
    let session = &s.stripe().sessions()[0];
    assert_eq!(session["amount_total"], 3900, "{session}");
    let call = &s.stripe().session_calls()[0];
    assert_eq!(call.get("line_items[0][quantity]"), Some("2"));
    assert_eq!(
        call.get("line_items[1][price_data][product_data][name]"),
        Some("Kit")
    );

    // A price that names its Stripe price is listed by it; a session that would charge another
    // total than the order's is refused, and its URL never shown.
    let odd = s
        .price(
            "Odd",
            1234,
            json!({"stripe_price_id": "price_odd", "checkout": "stripe"}),
        )
        .await;
    let res = s.create(&json!({"price_id": odd}), "k-odd").await;
    assert_eq!(
        s.stripe()
            .session_calls()
            .last()
            .unwrap()
            .get("line_items[0][price]"),
        Some("price_odd")
    );
    assert_eq!(
        (res.status, res.error_code()),
        (502, Some("checkout_total_mismatch")),
        "{}",
        res.text
    );
    let url: Option<String> =
        sqlx::query_scalar("SELECT checkout_url FROM orders WHERE total_cents = 1234")
            .fetch_one(&s.app.db_pool)
            .await
            .unwrap();
    assert_eq!(url, None);
}

#[tokio::test]
async fn a_static_checkout_url_or_checkout_static_keeps_the_price_off_stripe() {
    let s = Shop::start().await;
    let linked = s
        .price(
            "Linked",
            900,
            json!({"checkout_url": "https://pay.example/x"}),
        )
        .await;
    let opted_out = s.price("Opted", 900, json!({"checkout": "static"})).await;
    let res = s.create(&json!({"price_id": linked}), "k-l").await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        res.json["checkout"]["checkout_url"],
        "https://pay.example/x"
    );
    let res = s.create(&json!({"price_id": opted_out}), "k-o").await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.json["checkout"]["checkout_url"], "");
    assert!(s.stripe().session_calls().is_empty());
}

async fn timeline_kinds(s: &Shop, public_id: &str) -> Vec<String> {
    let admin = s.app.token("user_admin", "admin").await;
    let t = s
        .app
        .get_as(&admin, &format!("/api/admin/orders/{public_id}/timeline/"))
        .await;
    assert_eq!(t.status, 200, "{}", t.text);
    t.json["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events: {}", t.text))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn status_of(s: &Shop, public_id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM orders WHERE public_id = $1")
        .bind(public_id)
        .fetch_one(&s.app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_expired_session_expires_its_order_and_a_late_payment_still_pays_it_in_full() {
    let s = Shop::start().await;
    let price = s.price("Field Guide", 1900, json!({})).await;
    let res = s.create(&json!({"price_id": price}), "k-exp").await;
    assert_eq!(res.status, 201, "{}", res.text);
    let public_id = res.json["order"]["public_id"].as_str().unwrap().to_string();
    let session = session_id(res.json["checkout"]["checkout_url"].as_str().unwrap()).to_string();

    let expired = s.stripe().expire_session("evt_exp_1", &session);
    assert_eq!(s.app.deliver_stripe(&expired).await.status, 200);
    s.wait_status(&public_id, "expired").await;
    // The buyer's list says it was never paid.
    let orders = s.app.get_as(&s.buyer, "/api/account/orders/").await;
    assert_eq!(orders.json[0]["status"], "expired", "{}", orders.text);
    assert!(orders.json[0]["paid_at"].is_null());

    // Stripe still took a payment for it (a slow wallet, a session paid at the last second):
    // the money wins, and the order is fulfilled in full.
    let paid = s.stripe().complete_session("evt_late_1", &session);
    assert_eq!(s.app.deliver_stripe(&paid).await.status, 200);
    s.wait_status(&public_id, "fulfilled").await;
    s.app
        .wait_for_count(
            "SELECT count(*) FROM emails WHERE kind = 'receipt'",
            1,
            WAIT,
        )
        .await;
    let kinds = timeline_kinds(&s, &public_id).await;
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(at("order.expired") < at("order.paid"), "{kinds:?}");
    assert!(at("order.paid") < at("order.fulfilled"), "{kinds:?}");
}

#[tokio::test]
async fn the_sweep_expires_old_pending_orders_but_not_one_whose_checkout_is_still_open() {
    let s = Shop::start().await;
    let off_stripe = s.price("Linked", 900, json!({"checkout": "static"})).await;
    let on_stripe = s.price("Guide", 1900, json!({})).await;
    let stale = s.create(&json!({"price_id": off_stripe}), "k-stale").await;
    let open = s.create(&json!({"price_id": on_stripe}), "k-open").await;
    let fresh = s.create(&json!({"price_id": off_stripe}), "k-fresh").await;
    let id = |r: &TestResponse| r.json["order"]["public_id"].as_str().unwrap().to_string();
    let (stale, open, fresh) = (id(&stale), id(&open), id(&fresh));
    // Two of them were created two days ago; one of those still has an open session.
    sqlx::query(
        "UPDATE orders SET created_at = now() - interval '2 days' WHERE public_id = ANY($1)",
    )
    .bind(vec![stale.clone(), open.clone()])
    .execute(&s.app.db_pool)
    .await
    .unwrap();
    let n = granary_jobs::orders::expire_stale(&s.app.db_pool, &s.app.config)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(status_of(&s, &stale).await, "expired");
    assert_eq!(
        status_of(&s, &open).await,
        "pending",
        "its checkout is still open"
    );
    assert_eq!(
        status_of(&s, &fresh).await,
        "pending",
        "younger than PENDING_ORDER_TTL"
    );
    // Once the session has lapsed too, the next sweep takes it; a sweep changes nothing twice.
    sqlx::query(
        "UPDATE orders SET checkout_expires_at = now() - interval '1 minute' WHERE public_id = $1",
    )
    .bind(&open)
    .execute(&s.app.db_pool)
    .await
    .unwrap();
    let n = granary_jobs::orders::expire_stale(&s.app.db_pool, &s.app.config)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(status_of(&s, &open).await, "expired");
    assert!(
        timeline_kinds(&s, &stale)
            .await
            .contains(&"order.expired".to_string())
    );
}

#[tokio::test]
async fn a_missed_expiry_event_is_found_by_the_reconciliation_sweep() {
    let s = Shop::start().await;
    let price = s.price("Guide", 1900, json!({})).await;
    let res = s.create(&json!({"price_id": price}), "k-missed").await;
    let public_id = res.json["order"]["public_id"].as_str().unwrap().to_string();
    let session = session_id(res.json["checkout"]["checkout_url"].as_str().unwrap()).to_string();
    // Stripe has the event; its webhook never arrived.
    s.stripe().expire_session("evt_exp_missed", &session);
    let (code, out) =
        granary_tests::worker::cli(&s.app.env_vars(), &["reconcile", "--since", "1h"]).await;
    assert_eq!(code, 0, "{out}");
    let q = s.stripe().requests().last().cloned().unwrap();
    assert!(q.contains("types%5B%5D=checkout.session.expired"), "{q}");
    assert!(
        q.contains("types%5B%5D=checkout.session.async_payment_failed"),
        "{q}"
    );
    s.wait_status(&public_id, "expired").await;
}

/// A paid order through a session: (public id, payment intent).
async fn paid_order(s: &Shop, price: &str, key: &str) -> (String, String) {
    let res = s.create(&json!({"price_id": price}), key).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let public_id = res.json["order"]["public_id"].as_str().unwrap().to_string();
    let session = session_id(res.json["checkout"]["checkout_url"].as_str().unwrap()).to_string();
    let event = s
        .stripe()
        .complete_session(&format!("evt_paid_{key}"), &session);
    assert_eq!(s.app.deliver_stripe(&event).await.status, 200);
    s.wait_status(&public_id, "fulfilled").await;
    let intent = event["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    (public_id, intent)
}

#[tokio::test]
async fn a_partial_refund_then_the_rest_each_once_and_the_full_one_revokes_the_purchase() {
    let s = Shop::start().await;
    let price = s.price("Field Guide", 1900, json!({})).await;
    // The product grants a feature, so revocation shows.
    sqlx::query("UPDATE products SET feature_keys = '{guide}'")
        .execute(&s.app.db_pool)
        .await
        .unwrap();
    let (public_id, intent) = paid_order(&s, &price, "r1").await;
    let admin = s.app.token("user_admin", "admin").await;
    let refund = |body: Value| {
        let path = format!("/api/admin/orders/{public_id}/refund/");
        let admin = admin.clone();
        let app = &s.app;
        async move { app.post_as(&admin, &path, &body).await }
    };

    // Part of it.
    let res = refund(json!({"amount_cents": 500, "reason": "one chapter was missing"})).await;
    assert_eq!(res.status, 202, "{}", res.text);
    assert_eq!(
        (
            &res.json["amount_cents"],
            &res.json["refundable_after_cents"]
        ),
        (&json!(500), &json!(1400))
    );
    s.app
        .wait_for_count(
            "SELECT count(*) FROM refund_requests WHERE status = 'submitted'",
            1,
            WAIT,
        )
        .await;
    let sent = s.stripe().refund_calls();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].get("payment_intent"), Some(intent.as_str()));
    assert_eq!(sent[0].get("amount"), Some("500"));
    assert_eq!(sent[0].get("metadata[order_id]"), Some(public_id.as_str()));
    // Stripe reports it; recorded once even when delivered twice. The buyer keeps the purchase.
    let reported = s.stripe().charge_refunded("evt_ref_1", &intent);
    for _ in 0..2 {
        assert_eq!(s.app.deliver_stripe(&reported).await.status, 200);
    }
    s.app
        .wait_for_count(
            "SELECT count(*) FROM payment_transactions WHERE kind = 'refund' AND amount_cents = 500",
            1,
            WAIT,
        )
        .await;
    assert_eq!(
        sqlx::query_scalar::<_, String>("SELECT status FROM orders")
            .fetch_one(&s.app.db_pool)
            .await
            .unwrap(),
        "fulfilled"
    );

    // The rest (no amount), then Stripe's report of it: the order is refunded and what it
    // granted is revoked.
    let res = refund(json!({"reason": "the buyer asked for the rest back"})).await;
    assert_eq!(res.status, 202, "{}", res.text);
    assert_eq!(res.json["amount_cents"], 1400);
    s.app
        .wait_for_count(
            "SELECT count(*) FROM refund_requests WHERE status = 'submitted'",
            2,
            WAIT,
        )
        .await;
    let keys: std::collections::BTreeSet<_> = s
        .stripe()
        .refund_calls()
        .into_iter()
        .map(|c| c.idempotency_key.unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "an idempotency key per refund");
    let reported = s.stripe().charge_refunded("evt_ref_2", &intent);
    assert_eq!(s.app.deliver_stripe(&reported).await.status, 200);
    s.app
        .wait_for_count(
            "SELECT count(*) FROM orders WHERE status = 'refunded'",
            1,
            WAIT,
        )
        .await;
    s.app
        .wait_for_count(
            "SELECT count(*) FROM entitlements WHERE feature_key = 'guide' AND revoked_at IS NOT NULL",
            1,
            WAIT,
        )
        .await;
    assert_eq!(
        count(&s.app.db_pool, "SELECT coalesce(sum(amount_cents), 0)::bigint FROM payment_transactions WHERE kind = 'refund'").await,
        1900
    );
    // Each refund is audited with its reason.
    assert_eq!(
        count(
            &s.app.db_pool,
            "SELECT count(*) FROM operator_actions WHERE action = 'order.refund' AND reason IS NOT NULL"
        )
        .await,
        2
    );
    let kinds = timeline_kinds(&s, &public_id).await;
    assert!(
        kinds.contains(&"operator.order.refund".to_string()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_refund_larger_than_paid_is_refused_and_nothing_is_queued() {
    let s = Shop::start().await;
    let price = s.price("Kit", 900, json!({})).await;
    let (public_id, _) = paid_order(&s, &price, "r2").await;
    let admin = s.app.token("user_admin", "admin").await;
    let path = format!("/api/admin/orders/{public_id}/refund/");
    let res = s
        .app
        .post_as(
            &admin,
            &path,
            &json!({"amount_cents": 901, "reason": "too much"}),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (409, Some("refund_exceeds_payment")),
        "{}",
        res.text
    );
    let res = s
        .app
        .post_as(&admin, &path, &json!({"amount_cents": 900}))
        .await;
    assert_eq!(res.status, 422, "a refund needs a reason: {}", res.text);
    assert_eq!(
        count(&s.app.db_pool, "SELECT count(*) FROM refund_requests").await,
        0
    );
    assert!(s.stripe().refund_calls().is_empty());
    // The CLI takes the same path: the whole order, then nothing is left.
    let (code, out) = granary_tests::worker::cli(
        &s.app.env_vars(),
        &["orders", "refund", &public_id, "--reason", "goodwill"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("900"), "{out}");
    let res = s
        .app
        .post_as(
            &admin,
            &path,
            &json!({"amount_cents": 1, "reason": "again"}),
        )
        .await;
    assert_eq!(
        res.error_code(),
        Some("refund_exceeds_payment"),
        "{}",
        res.text
    );
}

#[tokio::test]
async fn a_seller_refunds_their_own_order_but_not_another_sellers() {
    let s = Shop::start().await;
    let price = s.price("Kit", 900, json!({})).await;
    let (public_id, _) = paid_order(&s, &price, "r3").await;
    let other = s.app.token("user_other_seller", "seller").await;
    let path = format!("/api/seller/orders/{public_id}/refund/");
    let res = s
        .app
        .post_as(&other, &path, &json!({"reason": "not mine"}))
        .await;
    assert_eq!(res.status, 404, "{}", res.text);
    assert_eq!(
        count(&s.app.db_pool, "SELECT count(*) FROM refund_requests").await,
        0
    );
    let res = s
        .app
        .post_as(
            &s.seller,
            &path,
            &json!({"amount_cents": 300, "reason": "late delivery"}),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.text);
    s.app
        .wait_for_count(
            "SELECT count(*) FROM refund_requests WHERE status = 'submitted'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(s.stripe().refunds()[0]["amount"], 300);
}
