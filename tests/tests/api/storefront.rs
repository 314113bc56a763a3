//! The storefront and seller contract over real HTTP, with tokens signed by a test RSA key
//! served from a local JWKS endpoint.

use base64::Engine as _;
use granary_tests::{
    TestApp,
    clerk::{self, AZP},
    count,
};
use serde_json::{Value, json};

async fn app() -> TestApp {
    TestApp::builder().with_clerk().spawn().await
}

/// A seller's published product with a priced checkout URL; returns (product id, price id).
async fn seed_catalog(
    app: &TestApp,
    seller: &str,
    slug: &str,
    checkout_url: Option<&str>,
) -> (String, String) {
    let product = app
        .post_as(seller, "/api/seller/products/", &json!({"name": "Creator Bundle", "slug": slug, "product_type": "digital", "visibility": "published", "feature_keys": ["templates_pack"]}))
        .await;
    assert_eq!(product.status, 201, "{}", product.text);
    let pid = product.json["id"].as_str().unwrap().to_string();
    let metadata = checkout_url
        .map(|u| json!({"checkout_url": u}))
        .unwrap_or(json!({}));
    let price = app
        .post_as(seller, &format!("/api/seller/products/{pid}/prices/"), &json!({"name": "One-off", "amount_cents": 2900, "currency": "USD", "is_default": true, "metadata": metadata}))
        .await;
    assert_eq!(price.status, 201, "{}", price.text);
    (pid, price.json["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_whole_seller_to_buyer_walkthrough_works() {
    let app = TestApp::builder()
        .with_clerk()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .spawn()
        .await;
    let seller = app.token("user_seller", "seller").await;
    let buyer = app.token("user_buyer", "buyer").await;
    let (pid, price_id) = seed_catalog(
        &app,
        &seller,
        "creator-bundle",
        Some("https://checkout.example.com/c/1"),
    )
    .await;

    // Seller views, edits, lists; adds an asset and a service offer.
    assert_eq!(
        app.get_as(&seller, &format!("/api/seller/products/{pid}/"))
            .await
            .json["slug"],
        "creator-bundle"
    );
    let patched = app
        .patch_as(
            &seller,
            &format!("/api/seller/products/{pid}/"),
            &json!({"description": "Templates"}),
        )
        .await;
    assert_eq!(patched.json["description"], "Templates");
    assert_eq!(
        app.get_as(&seller, "/api/seller/products/")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get_as(&seller, &format!("/api/seller/products/{pid}/prices/"))
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let price = app
        .patch_as(
            &seller,
            &format!("/api/seller/prices/{price_id}/"),
            &json!({"clerk_plan_id": "cplan_1"}),
        )
        .await;
    assert_eq!(
        (
            price.json["clerk_plan_id"].as_str(),
            price.json["metadata"]["checkout_url"].as_str()
        ),
        (Some("cplan_1"), Some("https://checkout.example.com/c/1"))
    );
    let asset = app
        .post_as(
            &seller,
            &format!("/api/seller/products/{pid}/assets/"),
            &json!({"title": "Bundle ZIP", "file_path": "files/creator-bundle-v1.zip"}),
        )
        .await;
    assert_eq!(
        (asset.status, asset.json["status"].as_str()),
        (201, Some("pending")),
        "{}",
        asset.text
    );
    let aid = asset.json["id"].as_str().unwrap();
    assert_eq!(
        app.get_as(&seller, &format!("/api/seller/assets/{aid}/"))
            .await
            .json["title"],
        "Bundle ZIP"
    );
    assert_eq!(
        app.get_as(&seller, &format!("/api/seller/products/{pid}/assets/"))
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A service offer belongs to a service product: on a digital one it is refused.
    let put_offer = |product: String, body: serde_json::Value| {
        app.send(
            app.client
                .put(app.url(&format!("/api/seller/products/{product}/service-offer/")))
                .bearer_auth(&seller)
                .json(&body),
        )
    };
    let refused = put_offer(pid.clone(), json!({"session_minutes": 30})).await;
    assert_eq!(
        (refused.status, refused.json["detail"].as_str()),
        (400, Some("Product is not a service product.")),
        "{}",
        refused.text
    );
    let service = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "Coaching Call", "product_type": "service", "visibility": "published"}),
        )
        .await;
    assert_eq!(service.status, 201, "{}", service.text);
    let sid = service.json["id"].as_str().unwrap().to_string();
    let offer = put_offer(
        sid.clone(),
        json!({"session_minutes": 30, "delivery_days": 7, "revision_count": 1, "onboarding_instructions": "Bring questions", "capacity": 1, "booking_window_days": 30}),
    )
    .await;
    assert_eq!(offer.status, 200, "{}", offer.text);
    assert_eq!(
        (
            offer.json["session_minutes"].as_i64(),
            offer.json["revision_count"].as_i64(),
            offer.json["onboarding_instructions"].as_str()
        ),
        (Some(30), Some(1), Some("Bring questions"))
    );
    let offer_id = offer.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.patch_as(
            &seller,
            &format!("/api/seller/products/{sid}/service-offer/"),
            &json!({"capacity": 2})
        )
        .await
        .json["capacity"],
        2
    );

    // Buyer: catalog, detail, order, confirm.
    let catalog = app.get("/api/products/").await;
    assert_eq!(
        catalog.json.as_array().unwrap().len(),
        1,
        "the service product has no price yet"
    );
    assert_eq!(catalog.json[0]["active_price"]["id"], price_id.as_str());
    assert_eq!(
        app.get("/api/products/creator-bundle/").await.json["id"],
        pid.as_str()
    );
    let order = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price_id, "quantity": 2}),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    assert_eq!(
        order.json["order"]["total_cents"], 5800,
        "totals are computed server-side"
    );
    assert_eq!(
        order.json["checkout"]["checkout_url"],
        "https://checkout.example.com/c/1"
    );
    let public_id = order.json["order"]["public_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get_as(&buyer, "/api/account/orders/").await.json[0]["public_id"],
        public_id.as_str()
    );
    let confirmed = app
        .post_as(
            &buyer,
            &format!("/api/account/orders/{public_id}/confirm/"),
            &json!({"method": "manual"}),
        )
        .await;
    assert_eq!(
        (
            confirmed.status,
            confirmed.json["order"]["status"].as_str(),
            confirmed.json["already_confirmed"].as_bool()
        ),
        (200, Some("paid"), Some(false)),
        "{}",
        confirmed.text
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order'"
        )
        .await,
        1
    );
    // Confirming again changes nothing.
    app.post_as(
        &buyer,
        &format!("/api/account/orders/{public_id}/confirm/"),
        &json!({}),
    )
    .await;
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM payment_transactions").await,
        1
    );

    // Account pages.
    let customer = app.get_as(&buyer, "/api/account/customer/").await;
    assert_eq!(customer.json["billing_email"], "user_buyer@example.com");
    let patched = app
        .patch_as(
            &buyer,
            "/api/account/customer/",
            &json!({"full_name": "Ada L", "country": "DE"}),
        )
        .await;
    assert_eq!(
        (
            patched.json["full_name"].as_str(),
            patched.json["country"].as_str()
        ),
        (Some("Ada L"), Some("DE"))
    );
    assert_eq!(
        app.patch_as(
            &buyer,
            "/api/account/customer/",
            &json!({"country": "Germany"})
        )
        .await
        .error_code(),
        Some("validation_failed")
    );
    assert!(
        app.get_as(&buyer, "/api/account/subscriptions/")
            .await
            .json
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        app.get_as(&buyer, "/api/account/entitlements/")
            .await
            .json
            .as_array()
            .unwrap()
            .is_empty()
    );
    let downloads = app.get_as(&buyer, "/api/account/downloads/").await;
    assert_eq!(
        (
            downloads.status,
            downloads.headers["cache-control"].to_str().unwrap()
        ),
        (200, "no-store")
    );
    // A timed session is booked on a paid order of the service: first refused, then bought.
    let starts = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let body = json!({"service_offer_id": offer_id, "starts_at": starts, "notes": "hi"});
    let book = || app.post_as(&buyer, "/api/account/bookings/", &body);
    assert_eq!(book().await.error_code(), Some("booking_not_paid"));
    let call_price = app
        .post_as(&seller, &format!("/api/seller/products/{sid}/prices/"), &json!({"amount_cents": 5000, "currency": "USD", "metadata": {"checkout_url": "https://checkout.example.com/c/2"}}))
        .await;
    assert_eq!(call_price.status, 201, "{}", call_price.text);
    let call = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": call_price.json["id"]}),
        )
        .await;
    let call_id = call.json["order"]["public_id"]
        .as_str()
        .unwrap()
        .to_string();
    let paid = app
        .post_as(
            &buyer,
            &format!("/api/account/orders/{call_id}/confirm/"),
            &json!({"method": "manual"}),
        )
        .await;
    assert_eq!(paid.json["order"]["status"], "paid", "{}", paid.text);
    let booking = book().await;
    assert_eq!(booking.status, 201, "{}", booking.text);
    assert_eq!(
        app.get_as(&buyer, "/api/account/bookings/")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Who am I.
    let me = app.get_as(&buyer, "/api/me/").await;
    assert_eq!(
        (
            me.json["clerk_user_id"].as_str(),
            me.json["profile"]["role"].as_str()
        ),
        (Some("user_buyer"), Some("buyer"))
    );
    assert_eq!(
        app.get_as(&buyer, "/api/profile/").await.json["clerk_user_id"],
        "user_buyer"
    );
    assert_eq!(
        app.get_as(&buyer, "/api/me/clerk/").await.json["claims"]["azp"],
        AZP
    );
    sqlx::query("INSERT INTO entitlements (profile_id, feature_key, source_type, source_id) SELECT id, 'pro', 'manual', 'm1' FROM profiles WHERE clerk_user_id = 'user_buyer'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(
        app.get_as(&buyer, "/api/billing/features/").await.json["enabled_features"],
        json!(["pro"])
    );
    assert_eq!(
        app.get_as(&buyer, "/api/billing/features/?feature=pro")
            .await
            .json,
        json!({"feature": "pro", "enabled": true})
    );
    assert_eq!(
        app.get_as(&buyer, "/api/billing/features/?feature=ai")
            .await
            .json["enabled"],
        false
    );

    // Deleting a product that orders refer to archives it.
    let del = app
        .send(
            app.client
                .delete(app.url(&format!("/api/seller/products/{pid}/")))
                .bearer_auth(&seller),
        )
        .await;
    assert_eq!(del.status, 204);
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM products WHERE deleted_at IS NOT NULL"
        )
        .await,
        1
    );
    // Only the (priced) service is left in the catalog.
    let left: Vec<Value> = app
        .get("/api/products/")
        .await
        .json
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        left.iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec![sid.as_str()]
    );
}

#[tokio::test]
async fn the_billing_claim_adds_features() {
    let app = app().await;
    app.token("user_claim", "buyer").await;
    let mut claims = clerk::claims("user_claim");
    claims["entitlements"] = json!("u:ai_coach,u:reports");
    let token = clerk::sign(&claims);
    assert_eq!(
        app.get_as(&token, "/api/billing/features/").await.json["enabled_features"],
        json!(["ai_coach", "reports"])
    );
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let app = app().await;
    let good = app.token("user_1", "buyer").await;
    assert_eq!(app.get_as(&good, "/api/me/").await.status, 200);
    let now = chrono::Utc::now().timestamp();
    let with = |patch: Value| {
        let mut c = clerk::claims("user_1");
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        clerk::sign(&c)
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(serde_json::to_vec(&clerk::claims("user_1")).unwrap());
    let alg_none = format!(
        "{}.{payload}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    // HS256 "signed" with the public key, the classic confusion attack.
    let hs256 = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(clerk::KID.into());
        jsonwebtoken::encode(
            &h,
            &clerk::claims("user_1"),
            &jsonwebtoken::EncodingKey::from_secret(clerk::key().public_pem.as_bytes()),
        )
        .unwrap()
    };
    let cases = [
        (
            "expired",
            with(json!({"exp": now - 60, "iat": now - 700, "nbf": now - 700})),
        ),
        ("not yet valid", with(json!({"nbf": now + 120}))),
        ("wrong issuer", with(json!({"iss": "https://evil.example"}))),
        ("wrong azp", with(json!({"azp": "https://evil.example"}))),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        (
            "unknown kid",
            clerk::sign_with(
                &clerk::claims("user_1"),
                &clerk::rogue_key().private_pem,
                "kid_unknown",
            ),
        ),
        (
            "served kid, wrong key",
            clerk::sign_with(
                &clerk::claims("user_1"),
                &clerk::rogue_key().private_pem,
                clerk::KID,
            ),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (name, token) in &cases {
        let res = app.get_as(token, "/api/me/").await;
        assert_eq!(
            (res.status, res.error_code()),
            (401, Some("unauthenticated")),
            "{name}"
        );
    }
    assert_eq!(app.get("/api/me/").await.status, 401, "no token");
}

#[tokio::test]
async fn a_flood_of_random_kids_costs_at_most_one_jwks_fetch() {
    // A thousand invalid tokens from one address are anonymous requests, which the address's
    // throttle would cut off after 120 (throttle.rs proves that); here every one must reach
    // the verifier.
    let app = TestApp::builder()
        .with_clerk()
        .env("THROTTLE_ANON", "0")
        .spawn()
        .await;
    let futs = (0..1000).map(|i| {
        let token = clerk::sign_with(
            &clerk::claims("user_flood"),
            &clerk::rogue_key().private_pem,
            &format!("kid_{i}"),
        );
        let app = &app;
        async move { app.get_as(&token, "/api/me/").await.status }
    });
    let statuses = futures::future::join_all(futs).await;
    assert!(statuses.iter().all(|s| *s == 401));
    assert_eq!(app.clerk.as_ref().unwrap().fetches(), 1);
}

#[tokio::test]
async fn roles_and_ownership_are_enforced_without_leaking_existence() {
    let app = TestApp::builder()
        .with_clerk()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .spawn()
        .await;
    let seller = app.token("s1", "seller").await;
    let other_seller = app.token("s2", "seller").await;
    let buyer = app.token("b1", "buyer").await;
    let thief = app.token("b2", "buyer").await;
    let admin = app.token("a1", "admin").await;
    let (pid, price_id) = seed_catalog(&app, &seller, "owned", Some("https://c.example/x")).await;

    let res = app
        .post_as(
            &buyer,
            "/api/seller/products/",
            &json!({"name": "x", "slug": "x"}),
        )
        .await;
    assert_eq!((res.status, res.error_code()), (403, Some("forbidden")));
    assert_eq!(
        app.get_as(&buyer, "/api/seller/products/").await.status,
        403
    );
    // Another seller's product is not found, not forbidden; an admin sees it.
    assert_eq!(
        app.get_as(&other_seller, &format!("/api/seller/products/{pid}/"))
            .await
            .status,
        404
    );
    assert_eq!(
        app.patch_as(
            &other_seller,
            &format!("/api/seller/prices/{price_id}/"),
            &json!({"amount_cents": 1})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        app.get_as(&admin, &format!("/api/seller/products/{pid}/"))
            .await
            .status,
        200
    );

    let order = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price_id}),
        )
        .await;
    let public_id = order.json["order"]["public_id"].as_str().unwrap();
    let res = app
        .post_as(
            &thief,
            &format!("/api/account/orders/{public_id}/confirm/"),
            &json!({}),
        )
        .await;
    assert_eq!((res.status, res.error_code()), (404, Some("not_found")));
    assert!(
        app.get_as(&thief, "/api/account/orders/")
            .await
            .json
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn cookie_requests_from_a_foreign_origin_are_refused() {
    let app = app().await;
    let seller = app.token("s1", "seller").await;
    let body = json!({"name": "Cookie", "slug": "cookie"});
    let post = |origin: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.url("/api/seller/products/"))
            .header("cookie", format!("__session={seller}"))
            .json(&body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req
    };
    let res = app.send(post(Some("https://evil.example"))).await;
    assert_eq!((res.status, res.error_code()), (403, Some("forbidden")));
    assert_eq!(
        app.send(post(None)).await.status,
        403,
        "no Origin and no Referer"
    );
    assert_eq!(app.send(post(Some(AZP))).await.status, 201);
    // A cookie GET needs no origin; a bearer POST is not a CSRF vector.
    assert_eq!(
        app.send(
            app.client
                .get(app.url("/api/me/"))
                .header("cookie", format!("a=b; __session={seller}"))
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn order_confirm_rules_answer_their_exact_codes() {
    let app = app().await;
    let seller = app.token("s1", "seller").await;
    let buyer = app.token("b1", "buyer").await;
    let (_, price_id) = seed_catalog(&app, &seller, "rules", Some("https://c.example/x")).await;
    let order = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price_id}),
        )
        .await;
    let confirm = format!(
        "/api/account/orders/{}/confirm/",
        order.json["order"]["public_id"].as_str().unwrap()
    );
    let res = app
        .post_as(&buyer, &confirm, &json!({"method": "manual"}))
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (403, Some("manual_confirm_disabled"))
    );
    let res = app
        .post_as(&buyer, &confirm, &json!({"method": "clerk"}))
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (409, Some("pending_verification"))
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM orders WHERE status = 'pending'"
        )
        .await,
        1
    );
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn an_idempotency_key_retry_returns_the_same_order() {
    let app = app().await;
    let seller = app.token("s1", "seller").await;
    let buyer = app.token("b1", "buyer").await;
    let (_, price_id) = seed_catalog(&app, &seller, "idem", Some("https://c.example/x")).await;
    let create = || {
        app.send(
            app.client
                .post(app.url("/api/account/orders/create/"))
                .bearer_auth(&buyer)
                .header("idempotency-key", "abc-123")
                .json(&json!({"price_id": price_id})),
        )
    };
    let (first, second) = (create().await, create().await);
    assert_eq!((first.status, second.status), (201, 200));
    assert_eq!(
        first.json["order"]["public_id"],
        second.json["order"]["public_id"]
    );
    // Concurrent retries too.
    let many = futures::future::join_all((0..5).map(|_| {
        app.send(
            app.client
                .post(app.url("/api/account/orders/create/"))
                .bearer_auth(&buyer)
                .header("idempotency-key", "xyz")
                .json(&json!({"price_id": price_id})),
        )
    }))
    .await;
    assert!(
        many.iter()
            .all(|r| r.json["order"]["public_id"] == many[0].json["order"]["public_id"])
    );
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM orders").await, 2);
    // The same key with a different body is not a retry: refused, nothing created.
    for body in [
        json!({"price_id": price_id, "quantity": 3}),
        json!({"price_id": price_id, "notes": "another order"}),
    ] {
        let reused = app
            .send(
                app.client
                    .post(app.url("/api/account/orders/create/"))
                    .bearer_auth(&buyer)
                    .header("idempotency-key", "abc-123")
                    .json(&body),
            )
            .await;
        assert_eq!(
            (reused.status, reused.error_code()),
            (409, Some("idempotency_key_reused")),
            "{}",
            reused.text
        );
    }
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM orders").await, 2);
}

#[tokio::test]
async fn drafts_and_priceless_products_are_not_in_the_catalog() {
    let app = app().await;
    let seller = app.token("s1", "seller").await;
    app.post_as(
        &seller,
        "/api/seller/products/",
        &json!({"name": "Draft", "slug": "draft", "visibility": "draft"}),
    )
    .await;
    app.post_as(
        &seller,
        "/api/seller/products/",
        &json!({"name": "No price", "slug": "no-price", "visibility": "published"}),
    )
    .await;
    let (pid, price_id) = seed_catalog(&app, &seller, "visible", None).await;
    let inactive = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "Inactive", "slug": "inactive", "visibility": "published"}),
        )
        .await;
    let iid = inactive.json["id"].as_str().unwrap();
    app.post_as(
        &seller,
        &format!("/api/seller/products/{iid}/prices/"),
        &json!({"amount_cents": 100, "currency": "USD", "is_active": false}),
    )
    .await;
    let slugs: Vec<String> = app
        .get("/api/products/")
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(slugs, ["visible"]);
    for slug in ["draft", "no-price", "inactive"] {
        assert_eq!(
            app.get(&format!("/api/products/{slug}/")).await.status,
            404,
            "{slug}"
        );
    }
    // Without a checkout URL, the order is created pending and the checkout URL is "", as
    // the starter answers (the storefront then shows the pending order).
    let buyer = app.token("b1", "buyer").await;
    let res = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price_id}),
        )
        .await;
    assert_eq!(
        (
            res.status,
            res.json["checkout"]["checkout_url"].as_str(),
            res.json["order"]["status"].as_str()
        ),
        (201, Some(""), Some("pending_payment")),
        "{}",
        res.text
    );
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM orders").await, 1);
    let _ = pid;
}

#[tokio::test]
async fn dev_manual_checkout_allows_orders_without_a_checkout_url() {
    let app = TestApp::builder()
        .with_clerk()
        .env("DEV_MANUAL_CHECKOUT", "true")
        .spawn()
        .await;
    let seller = app.token("s1", "seller").await;
    let buyer = app.token("b1", "buyer").await;
    let (_, price_id) = seed_catalog(&app, &seller, "manual", None).await;
    let res = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"items": [{"price_id": price_id, "quantity": 1}]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        (
            res.json["checkout"]["checkout_url"].as_str(),
            res.json["checkout"]["provider"].as_str()
        ),
        (Some(""), Some("manual"))
    );
}

#[tokio::test]
async fn validation_and_conflicts_use_the_contract_codes() {
    let app = app().await;
    let seller = app.token("s1", "seller").await;
    let res = app.post_as(&seller, "/api/seller/products/", &json!({"name": "", "visibility": "public", "product_type": "course", "feature_keys": ["ok", "no/slash"]})).await;
    assert_eq!(
        (res.status, res.error_code()),
        (422, Some("validation_failed"))
    );
    for field in ["name", "visibility", "product_type", "feature_keys"] {
        assert!(
            res.json["error"]["fields"][field].is_array(),
            "{field}: {}",
            res.json
        );
    }
    let (pid, _) = seed_catalog(&app, &seller, "taken", None).await;
    let res = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "Again", "slug": "taken"}),
        )
        .await;
    assert_eq!((res.status, res.error_code()), (409, Some("conflict")));
    let res = app
        .post_as(
            &seller,
            &format!("/api/seller/products/{pid}/prices/"),
            &json!({"amount_cents": -1, "currency": "US1", "billing_period": "daily"}),
        )
        .await;
    assert_eq!(res.status, 422);
    for field in ["amount_cents", "currency", "billing_period"] {
        assert!(
            res.json["error"]["fields"][field].is_array(),
            "{field}: {}",
            res.json
        );
    }
    // A second default price demotes the first: one default per product.
    let second = app
        .post_as(
            &seller,
            &format!("/api/seller/products/{pid}/prices/"),
            &json!({"amount_cents": 100, "currency": "USD", "is_default": true}),
        )
        .await;
    assert_eq!(second.status, 201);
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM prices WHERE is_default").await,
        1
    );
    let res = app
        .send(
            app.client
                .post(app.url("/api/seller/products/"))
                .bearer_auth(&seller)
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_eq!((res.status, res.error_code()), (400, Some("invalid_json")));
    let res = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": 5, "slug": "x"}),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (400, Some("invalid_request"))
    );
}

/// `buyer` orders `price_id` through the api and the order is marked paid (the payment path has
/// its own tests); returns the order's public id.
async fn paid_order(app: &TestApp, buyer: &str, price_id: &str) -> String {
    let order = app
        .post_as(
            buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price_id}),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    let public_id = order.json["order"]["public_id"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query("UPDATE orders SET status = 'paid', paid_at = now() WHERE public_id = $1")
        .bind(&public_id)
        .execute(&app.db_pool)
        .await
        .unwrap();
    public_id
}

/// A published service product with an offer of `offer`; returns (product id, price id).
async fn service(app: &TestApp, seller: &str, slug: &str, offer: Value) -> (String, String) {
    let (pid, price) = seed_catalog(app, seller, slug, Some("https://c.example/x")).await;
    app.patch_as(
        seller,
        &format!("/api/seller/products/{pid}/"),
        &json!({"product_type": "service"}),
    )
    .await;
    let res = app
        .send(
            app.client
                .put(app.url(&format!("/api/seller/products/{pid}/service-offer/")))
                .bearer_auth(seller)
                .json(&offer),
        )
        .await;
    assert!(res.status < 300, "{}", res.text);
    (pid, price)
}

#[tokio::test]
async fn bookings_respect_capacity_and_the_window() {
    let app = app().await;
    let seller = app.token("s1", "seller").await;
    let (pid, price) = service(
        &app,
        &seller,
        "session",
        json!({"capacity": 2, "booking_window_days": 7, "min_notice_hours": 24}),
    )
    .await;
    let slot = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let buyer = app.token(&format!("b{i}"), "buyer").await;
        paid_order(&app, &buyer, &price).await;
        statuses.push(
            app.post_as(
                &buyer,
                "/api/account/bookings/",
                &json!({"product_id": pid, "starts_at": slot}),
            )
            .await
            .status,
        );
    }
    assert_eq!(statuses, [201, 201, 409]);
    let buyer = app.token("late", "buyer").await;
    paid_order(&app, &buyer, &price).await;
    for when in [chrono::Duration::hours(2), chrono::Duration::days(30)] {
        let res = app
            .post_as(
                &buyer,
                "/api/account/bookings/",
                &json!({"product_id": pid, "starts_at": (chrono::Utc::now() + when).to_rfc3339()}),
            )
            .await;
        assert_eq!(res.status, 422, "{}", res.text);
    }
}

#[tokio::test]
async fn capacity_counts_overlapping_sessions_and_a_timed_session_needs_a_paid_order() {
    let app = app().await;
    let seller = app.token("s_ov", "seller").await;
    let (pid, price) = service(
        &app,
        &seller,
        "hour-session",
        json!({"capacity": 1, "session_minutes": 60, "booking_window_days": 30, "min_notice_hours": 1}),
    )
    .await;
    let ten = (chrono::Utc::now() + chrono::Duration::days(3))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    let at = |minutes: i64| (ten + chrono::Duration::minutes(minutes)).to_rfc3339();
    let book = |token: String, starts: String| {
        let app = &app;
        let pid = pid.clone();
        async move {
            app.post_as(
                &token,
                "/api/account/bookings/",
                &json!({"product_id": pid, "starts_at": starts}),
            )
            .await
        }
    };

    // Without a paid order of the service, no timed session: any signed-in user cannot fill
    // the seller's calendar.
    let stranger = app.token("stranger", "buyer").await;
    let res = book(stranger.clone(), at(0)).await;
    assert_eq!(
        (res.status, res.error_code()),
        (403, Some("booking_not_paid")),
        "{}",
        res.text
    );
    // A request without a time takes no seat and stays open to anyone.
    let res = app
        .post_as(
            &stranger,
            "/api/account/bookings/",
            &json!({"service_offer_id": null, "product_id": pid}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);

    // 10:00–11:00 is booked; 10:30–11:30 overlaps it on a one-seat offer: refused. 11:00 is free.
    let (a, b, c) = (
        app.token("ov_a", "buyer").await,
        app.token("ov_b", "buyer").await,
        app.token("ov_c", "buyer").await,
    );
    for t in [&a, &b, &c] {
        paid_order(&app, t, &price).await;
    }
    assert_eq!(book(a.clone(), at(0)).await.status, 201);
    assert_eq!(book(b.clone(), at(30)).await.status, 409);
    assert_eq!(book(b.clone(), at(-59)).await.status, 409);
    assert_eq!(book(b.clone(), at(60)).await.status, 201);
    // One paid order books one session.
    let res = book(a.clone(), at(180)).await;
    assert_eq!(
        (res.status, res.error_code()),
        (403, Some("booking_not_paid"))
    );

    // Two buyers racing for one overlapping seat: exactly one gets it.
    let d = app.token("ov_d", "buyer").await;
    paid_order(&app, &d, &price).await;
    let (rc, rd) = tokio::join!(book(c.clone(), at(300)), book(d.clone(), at(330)));
    let mut got = [rc.status, rd.status];
    got.sort();
    assert_eq!(got, [201, 409], "{} / {}", rc.text, rd.text);

    // The seller books their own calendar without an order (and capacity still holds).
    assert_eq!(book(seller.clone(), at(600)).await.status, 201);
    assert_eq!(book(seller.clone(), at(630)).await.status, 409);
    let timed = count(
        &app.db_pool,
        "SELECT count(*) FROM bookings WHERE starts_at IS NOT NULL AND status <> 'canceled'",
    )
    .await;
    assert_eq!(timed, 4);
}

#[tokio::test]
async fn the_openapi_contract_is_published() {
    let app = app().await;
    let res = app.get("/api/openapi.json").await;
    assert_eq!(res.status, 200);
    let paths = res.json["paths"].as_object().unwrap();
    for p in [
        "/api/products/",
        "/api/account/orders/create/",
        "/api/seller/products/{id}/",
        "/api/billing/features/",
        "/api/account/orders/work/",
        "/api/account/subscriptions/status/",
        "/api/account/preflight/email-test/",
        "/api/seller/work-orders/{id}/",
        "/api/ai/usage/summary/",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    // The answers are described with the starter's shapes.
    let schemas = &res.json["components"]["schemas"];
    for (schema, field) in [
        ("Created", "checkout"),
        ("ProductOut", "active_price"),
        ("AccessOut", "download_url"),
        ("MeOut", "customer_account"),
        ("WorkOrderOut", "delivery_mode"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} missing"
        );
    }
}

#[tokio::test]
async fn development_tokens_work_only_where_development_auth_is_on() {
    let trusting = TestApp::builder()
        .with_clerk()
        .env("GRANARY_DEV_AUTH", "true")
        .spawn()
        .await;
    let strict = TestApp::builder().with_clerk().spawn().await;
    // `granary-api token` (the real binary) signs with the local key under var/dev-auth/ of its
    // working directory; the in-process app here reads the same path.
    let bin = granary_tests::worker::binary().with_file_name("granary-api");
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |db: String, app_env: &'static str| {
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(["token", "--user", "user_dev", "--role", "seller"])
                .current_dir(dir)
                .env_clear()
                .env("APP_ENV", app_env)
                .env("DATABASE_URL", db)
                .output()
                .expect("run granary-api token")
        })
    };
    let out = run(trusting.db.url.clone(), "development").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let me = trusting.get_as(&token, "/api/me/").await;
    assert_eq!(
        (me.status, me.json["role"].as_str()),
        (200, Some("seller")),
        "{}",
        me.text
    );
    assert_eq!(
        strict.get_as(&token, "/api/me/").await.status,
        401,
        "not trusted without GRANARY_DEV_AUTH"
    );
    let refused = run(trusting.db.url.clone(), "production").await.unwrap();
    assert!(
        !refused.status.success(),
        "production refuses development tokens"
    );
}

/// `granary-api dev`, the newcomer's first command, lets every signed-in user sell (the
/// starter's rule), so the storefront's "Create Offer Fast" works on the first click; `serve`
/// keeps the seller role (the contract tests cover that refusal and its message).
#[tokio::test]
async fn dev_lets_every_signed_in_user_create_an_offer() {
    let db = granary_tests::TestDb::new().await;
    let port = granary_tests::free_port();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("PORT", port.to_string()),
        ("BIND_HOST", "127.0.0.1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bin = granary_tests::worker::binary_named("granary-api");
    let _api = granary_tests::worker::WorkerProcess::spawn(&bin, &["dev"], &env);
    let base = format!("http://127.0.0.1:{port}");
    granary_tests::wait_healthy(&base, std::time::Duration::from_secs(60)).await;
    // A plain buyer's development token, minted as README says (same working directory as the
    // api, whose local key signs it).
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["token", "--user", "user_maker", "--role", "buyer"])
            .current_dir(std::env::temp_dir())
            .env_clear()
            .env("DATABASE_URL", &env[0].1)
            .output()
            .expect("run granary-api token")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let res = reqwest::Client::new()
        .post(format!("{base}/api/seller/products/"))
        .bearer_auth(&token)
        .json(&json!({"name": "First Offer", "product_type": "digital", "visibility": "published"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
}

/// What PostgreSQL cannot keep (the NUL character in text, a number that `jsonb` prints back in
/// a form serde_json cannot read) is refused with 400 before anything is written; found by
/// schemathesis, where the huge number was stored and every later read of the row was a 500.
#[tokio::test]
async fn what_postgresql_cannot_keep_is_refused_before_anything_is_written() {
    let app = app().await;
    let buyer = app.token("user_buyer", "buyer").await;
    let before = app.get_as(&buyer, "/api/account/customer/").await;
    assert_eq!(before.status, 200, "{}", before.text);
    for body in [
        json!({"full_name": "Ada\u{0}L"}),
        json!({"metadata": {"note\u{0}": "x"}}),
        json!({"metadata": {"n": [1, f64::MAX]}}),
    ] {
        let res = app.patch_as(&buyer, "/api/account/customer/", &body).await;
        assert_eq!(res.status, 400, "{body} → {}", res.text);
        assert_eq!(res.error_code(), Some("invalid_request"), "{}", res.text);
    }
    let after = app.get_as(&buyer, "/api/account/customer/").await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.json, before.json, "nothing was written");
    // A large number that reads back is fine.
    let ok = app
        .patch_as(
            &buyer,
            "/api/account/customer/",
            &json!({"metadata": {"n": 1e300}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        app.get_as(&buyer, "/api/account/customer/").await.status,
        200
    );
    // In the URL too: an id or slug holding NUL is a 400, not a failed query.
    for path in ["/api/products/a%00b/", "/api/products/?q=%00"] {
        let res = app.get(path).await;
        assert_eq!(res.status, 400, "{path}: {}", res.text);
        assert_eq!(res.error_code(), Some("invalid_request"));
    }
}

/// A product that was never sold is deleted for good, with its assets, though each asset has a
/// finalize_asset job; the job keeps its history (found by schemathesis: a 500 before).
#[tokio::test]
async fn an_unsold_product_whose_asset_has_a_job_can_be_deleted() {
    let app = app().await;
    let seller = app.token("user_seller", "seller").await;
    let p = app
        .post_as(&seller, "/api/seller/products/", &json!({"name": "Bundle"}))
        .await;
    let pid = p.json["id"].as_str().unwrap().to_string();
    let asset = app
        .post_as(
            &seller,
            &format!("/api/seller/products/{pid}/assets/"),
            &json!({"title": "Bundle ZIP", "file_path": "files/bundle.zip"}),
        )
        .await;
    assert_eq!(asset.status, 201, "{}", asset.text);
    let jobs_for_asset = "SELECT count(*) FROM job_refs WHERE queue = 'finalize_asset'";
    assert_eq!(count(&app.db_pool, jobs_for_asset).await, 1);
    let deleted = app
        .send(
            app.client
                .delete(app.url(&format!("/api/seller/products/{pid}/")))
                .bearer_auth(&seller),
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(
        app.get_as(&seller, &format!("/api/seller/products/{pid}/"))
            .await
            .status,
        404
    );
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM digital_assets").await,
        0
    );
    // The job and its link are kept; only the asset is gone from the link.
    assert_eq!(count(&app.db_pool, jobs_for_asset).await, 1);
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'finalize_asset' AND asset_id IS NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn every_free_text_span_currency_and_zone_has_a_bound_named_in_its_error() {
    let app = app().await;
    let seller = app.token("s_bounds", "seller").await;
    let (pid, price) = seed_catalog(&app, &seller, "bounded", Some("https://c.example/x")).await;
    let long = "x".repeat(100_000);
    let big_metadata = json!({"blob": "y".repeat(900_000)});
    let product = format!("/api/seller/products/{pid}/");
    let price_url = format!("/api/seller/prices/{price}/");
    let offer = format!("/api/seller/products/{pid}/service-offer/");
    // (path, body, the field the error must name)
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            &product,
            json!({"download_expiry_days": 2_147_483_647}),
            "download_expiry_days",
        ),
        (
            &product,
            json!({"download_max": 2_147_483_647}),
            "download_max",
        ),
        (&product, json!({"description": long}), "description"),
        (&product, json!({"metadata": big_metadata}), "metadata"),
        (&price_url, json!({"name": long}), "name"),
        (&price_url, json!({"currency": "XXX"}), "currency"),
        (&price_url, json!({"currency": "ZZZ"}), "currency"),
        (&price_url, json!({"metadata": big_metadata}), "metadata"),
        (
            &price_url,
            json!({"amount_cents": 1_000_000_000_000i64}),
            "amount_cents",
        ),
    ];
    for (path, body, field) in &cases {
        let res = app.patch_as(&seller, path, body).await;
        assert_eq!(
            res.status,
            422,
            "{path} {field}: {}",
            &res.text[..res.text.len().min(300)]
        );
        assert!(
            res.json["error"]["fields"][field].is_array(),
            "{path}: names {field}: {}",
            &res.text[..res.text.len().min(300)]
        );
    }
    let res = app
        .patch_as(
            &seller,
            &price_url,
            &json!({"amount_cents": 1_000_000_000_000i64}),
        )
        .await;
    assert!(res.text.contains("0 to 100000000000"), "{}", res.text);
    // The offer's time zone is a real IANA name, and its prose is bounded.
    app.patch_as(&seller, &product, &json!({"product_type": "service"}))
        .await;
    for (body, field) in [
        (json!({"timezone": "Mars/Olympus"}), "timezone"),
        (json!({"timezone": long}), "timezone"),
        (json!({"instructions": long}), "instructions"),
    ] {
        let res = app
            .send(
                app.client
                    .put(app.url(&offer))
                    .bearer_auth(&seller)
                    .json(&body),
            )
            .await;
        assert_eq!(
            res.status,
            422,
            "{field}: {}",
            &res.text[..res.text.len().min(300)]
        );
        assert!(res.json["error"]["fields"][field].is_array(), "{field}");
    }
    let res = app
        .send(
            app.client
                .put(app.url(&offer))
                .bearer_auth(&seller)
                .json(&json!({"timezone": "Europe/Berlin"})),
        )
        .await;
    assert!(res.status < 300, "{}", res.text);
    // The buyer's own account fields.
    let buyer = app.token("b_bounds", "buyer").await;
    for field in ["full_name", "company_name", "phone"] {
        let res = app
            .patch_as(&buyer, "/api/account/customer/", &json!({ field: long }))
            .await;
        assert_eq!(res.status, 422, "{field}");
        assert!(res.json["error"]["fields"][field].is_array(), "{field}");
    }
    // Nothing was written by any refused request.
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM products WHERE download_expiry_days > 3650 OR length(description) > 10000").await,
        0
    );
}
