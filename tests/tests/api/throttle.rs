//! Abuse limits: each throttled route hammered past its limit answers 429 `throttled` with
//! `Retry-After` after exactly the configured count; webhooks at the same rate are all stored.

use granary_tests::{TestApp, TestResponse, count};
use serde_json::json;

fn assert_throttled(res: &TestResponse) {
    assert_eq!(res.status, 429, "{}", res.text);
    assert_eq!(res.json["error"]["code"], "throttled", "{}", res.text);
    let detail = res.json["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Request was throttled. Expected available in ")
            && detail.ends_with(" seconds."),
        "{detail}"
    );
    let retry: u64 = res.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
}

/// Sends `n` requests one after another; returns how many got through before the first 429
/// and that 429.
async fn hammer(
    n: usize,
    mut send: impl AsyncFnMut(usize) -> TestResponse,
) -> (usize, Option<TestResponse>) {
    for i in 0..n {
        let res = send(i).await;
        if res.status == 429 {
            return (i, Some(res));
        }
        assert!(res.status < 500, "{}", res.text);
    }
    (n, None)
}

#[tokio::test]
async fn anonymous_requests_are_limited_per_address_and_webhooks_never() {
    let app = TestApp::webhooks()
        .with_worker()
        .env("THROTTLE_ANON", "5/minute")
        .spawn()
        .await;
    let (ok, refused) = hammer(20, async |_| app.get("/api/products/").await).await;
    assert_eq!(ok, 5, "exactly the configured count gets through");
    assert_throttled(&refused.unwrap());
    // Any anonymous route shares the address's budget.
    assert_eq!(app.get("/api/products/kit/").await.status, 429);
    // Health and webhooks are never throttled: 30 Stripe deliveries, all stored.
    assert_eq!(app.get("/api/health/").await.status, 200);
    for i in 0..30 {
        let body = json!({"id": format!("evt_storm_{i}"), "object": "event", "type": "customer.created",
                          "created": 1_700_000_000, "data": {"object": {"id": format!("cus_{i}")}}});
        assert_eq!(app.deliver_stripe(&body).await.status, 200);
    }
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM webhook_events WHERE event_id LIKE 'evt_storm_%'"
        )
        .await,
        30
    );
}

#[tokio::test]
async fn signed_in_requests_are_limited_per_user() {
    let app = TestApp::builder()
        .with_clerk()
        .env("THROTTLE_USER", "8/hour")
        .env("THROTTLE_ANON", "3/minute")
        .spawn()
        .await;
    let alice = app.token("user_alice", "buyer").await;
    let bob = app.token("user_bob", "buyer").await;
    let (ok, refused) = hammer(20, async |_| {
        app.get_as(&alice, "/api/account/orders/").await
    })
    .await;
    assert_eq!(ok, 8);
    assert_throttled(&refused.unwrap());
    // Another user, and anonymous requests from the same address, have their own budgets.
    let (ok, _) = hammer(20, async |_| app.get_as(&bob, "/api/account/orders/").await).await;
    assert_eq!(ok, 8);
    let (ok, _) = hammer(20, async |_| app.get("/api/products/").await).await;
    assert_eq!(ok, 3);
    // An invalid token is an anonymous request (and gets the address's 429, not a free pass).
    let (ok, refused) = hammer(5, async |_| {
        app.get_as("not-a-token", "/api/account/orders/").await
    })
    .await;
    assert_eq!(ok, 0);
    assert_throttled(&refused.unwrap());
}

#[tokio::test]
async fn the_costly_routes_have_their_own_scopes() {
    let app = TestApp::builder()
        .with_clerk()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .env("THROTTLE_CHECKOUT_CREATE", "3/hour")
        .env("THROTTLE_ORDER_CONFIRM", "2/hour")
        .env("THROTTLE_DOWNLOAD_ACCESS", "4/hour")
        .spawn()
        .await;
    let seller = app.token("user_seller", "seller").await;
    let buyer = app.token("user_buyer", "buyer").await;
    let p = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "Kit", "slug": "kit", "visibility": "published"}),
        )
        .await;
    let pid = p.json["id"].as_str().unwrap().to_string();
    let price = app
        .post_as(&seller, &format!("/api/seller/products/{pid}/prices/"), &json!({"amount_cents": 900, "currency": "EUR", "metadata": {"checkout_url": "https://pay.example/k"}}))
        .await;
    let price_id = price.json["id"].clone();

    let mut orders = Vec::new();
    let (ok, refused) = hammer(10, async |_| {
        app.post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price_id}),
        )
        .await
    })
    .await;
    assert_eq!(ok, 3);
    assert_throttled(&refused.unwrap());
    let listed = app.get_as(&buyer, "/api/account/orders/").await.json;
    let rows = listed["results"]
        .as_array()
        .or(listed.as_array())
        .cloned()
        .unwrap_or_default();
    for o in rows {
        orders.push(o["public_id"].as_str().unwrap().to_string());
    }
    assert_eq!(orders.len(), 3, "the refused creations created nothing");
    // The general budget is untouched by the scope: reads still work.
    assert_eq!(app.get_as(&buyer, "/api/account/orders/").await.status, 200);

    let (ok, refused) = hammer(orders.len(), async |i| {
        app.post_as(
            &buyer,
            &format!("/api/account/orders/{}/confirm/", orders[i]),
            &json!({"provider": "manual", "external_id": format!("m_{i}")}),
        )
        .await
    })
    .await;
    assert_eq!(ok, 2);
    assert_throttled(&refused.unwrap());

    // Download access: a made-up token still spends the scope (a token scan is what it stops).
    let (ok, refused) = hammer(10, async |i| {
        app.post_as(
            &buyer,
            &format!("/api/account/downloads/tok_{i}_aaaaaaaaaaaaaaaaaaaaaa/access/"),
            &json!({}),
        )
        .await
    })
    .await;
    assert_eq!(ok, 4);
    assert_throttled(&refused.unwrap());
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    // Without TRUSTED_PROXIES, X-Forwarded-For is ignored: a client cannot pick its identity.
    let app = TestApp::builder()
        .env("THROTTLE_ANON", "2/minute")
        .spawn()
        .await;
    let (ok, _) = hammer(6, async |i| {
        app.send(
            app.client
                .get(app.url("/api/products/"))
                .header("x-forwarded-for", format!("203.0.113.{i}")),
        )
        .await
    })
    .await;
    assert_eq!(ok, 2);

    // Behind a trusted proxy (the test client's loopback address), each forwarded client has
    // its own budget.
    let app = TestApp::builder()
        .env("THROTTLE_ANON", "2/minute")
        .env("TRUSTED_PROXIES", "127.0.0.1")
        .spawn()
        .await;
    for client in ["203.0.113.7", "203.0.113.8"] {
        let (ok, refused) = hammer(6, async |_| {
            app.send(
                app.client
                    .get(app.url("/api/products/"))
                    .header("x-forwarded-for", format!("{client}, 127.0.0.1")),
            )
            .await
        })
        .await;
        assert_eq!(ok, 2, "{client}");
        assert_throttled(&refused.unwrap());
    }
}

#[tokio::test]
async fn a_rate_of_zero_turns_a_throttle_off() {
    let app = TestApp::builder().env("THROTTLE_ANON", "0").spawn().await;
    let (ok, refused) = hammer(300, async |_| app.get("/api/products/").await).await;
    assert_eq!(ok, 300);
    assert!(refused.is_none());
}
