//! The starter's storefront contract (docs/storefront.md §1.1, §1.2, §6), black-box, on the
//! `granary-api` binary as a process (with its in-process worker): each test calls a route as the
//! starter's frontend calls it (same method, path, body) and reads exactly the fields the
//! frontend reads. Products are created the way the frontend's "Create
//! Offer Fast" creates them, by an ordinary signed-in user (`SELLER_ACCESS=any`), and paid for
//! through the real worker, the Resend stand-in and, for the HEAD flow, a signed Stripe webhook.

use std::time::Duration;

use granary_tests::{TestApp, count, stripe};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A shop as the starter runs it: any signed-in user sells, manual confirm allowed (the seed-era
/// flow), webhooks verified, the worker and Resend stand-in running.
struct Starter {
    app: TestApp,
    /// A plain signed-in user who sells (no seller role).
    seller: String,
    /// A plain signed-in user who buys.
    buyer: String,
}

/// What "Create Offer Fast" created.
struct Offer {
    product_id: String,
    price_id: String,
    slug: String,
}

impl Starter {
    async fn start() -> Self {
        Self::with(TestApp::webhooks()).await
    }

    async fn with(builder: granary_tests::TestAppBuilder) -> Self {
        let app = builder
            .as_process()
            .with_clerk()
            .with_resend()
            .with_worker()
            .env("SELLER_ACCESS", "any")
            .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
            .env("JOB_BACKOFF_BASE_MS", "200")
            .spawn()
            .await;
        let seller = app.token("user_maker", "buyer").await;
        let buyer = app.token("user_buyer", "buyer").await;
        Self { app, seller, buyer }
    }

    /// The frontend's "Create Offer Fast": product (no slug), price, and for a service the
    /// service offer, with exactly the bodies the frontend sends.
    async fn create_offer(
        &self,
        name: &str,
        product_type: &str,
        amount_cents: i64,
        currency: &str,
        checkout_url: Option<&str>,
    ) -> Offer {
        let app = &self.app;
        let product = app
            .post_as(
                &self.seller,
                "/api/seller/products/",
                &json!({"name": name, "tagline": format!("{name} in one line"), "description": "Made with care",
                        "product_type": product_type, "visibility": "published", "feature_keys": ["Templates Pack"]}),
            )
            .await;
        assert_eq!(product.status, 201, "{}", product.text);
        assert_eq!(product.json["name"], name);
        let product_id = product.json["id"].as_str().expect("product id").to_string();
        let metadata = checkout_url.map_or(json!({}), |u| json!({"checkout_url": u}));
        let price = app
            .post_as(
                &self.seller,
                &format!("/api/seller/products/{product_id}/prices/"),
                &json!({"name": "Standard", "amount_cents": amount_cents, "currency": currency.to_uppercase(),
                        "billing_period": "one_time", "clerk_plan_id": "", "clerk_price_id": "",
                        "is_active": true, "is_default": true, "metadata": metadata}),
            )
            .await;
        assert_eq!(price.status, 201, "{}", price.text);
        let price_id = price.json["id"].as_str().expect("price id").to_string();
        if product_type == "service" {
            let offer = app
                .send(
                    app.client
                        .put(app.url(&format!("/api/seller/products/{product_id}/service-offer/")))
                        .bearer_auth(&self.seller)
                        .json(
                            &json!({"session_minutes": 60, "delivery_days": 7, "revision_count": 1,
                                      "onboarding_instructions": "Send your brief"}),
                        ),
                )
                .await;
            assert_eq!(offer.status, 200, "{}", offer.text);
        }
        Offer {
            product_id,
            price_id,
            slug: product.json["slug"].as_str().expect("slug").to_string(),
        }
    }

    /// Adds a finalized asset to a product (the seller's upload, then `finalize_asset`).
    async fn add_ready_asset(&self, offer: &Offer, key: &str) {
        let path = self.app.storage_root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"the bundle").unwrap();
        let a = self
            .app
            .post_as(
                &self.seller,
                &format!("/api/seller/products/{}/assets/", offer.product_id),
                &json!({"title": "Bundle ZIP", "file_path": key}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        self.app
            .wait_for_count(
                &format!(
                    "SELECT count(*) FROM digital_assets WHERE product_id = '{}' AND status = 'ready'",
                    offer.product_id
                ),
                1,
                WAIT,
            )
            .await;
    }

    /// The frontend's buy call: `{price_id, quantity: 1}`; returns the whole answer.
    async fn order(&self, token: &str, price_id: &str) -> granary_tests::TestResponse {
        self.app
            .post_as(
                token,
                "/api/account/orders/create/",
                &json!({"price_id": price_id, "quantity": 1}),
            )
            .await
    }

    /// The seed-era buy flow: create, then confirm `{provider: "manual", external_id}`; waits
    /// until the order is fulfilled and its receipt was delivered to Resend.
    async fn buy_manually(&self, price_id: &str) -> String {
        let created = self.order(&self.buyer, price_id).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let public_id = created.json["order"]["public_id"]
            .as_str()
            .expect("order.public_id")
            .to_string();
        let confirmed = self
            .app
            .post_as(
                &self.buyer,
                &format!("/api/account/orders/{public_id}/confirm/"),
                &json!({"provider": "manual", "external_id": "manual_1700000000000"}),
            )
            .await;
        assert_eq!(confirmed.status, 200, "{}", confirmed.text);
        self.wait_fulfilled_with_receipt(&public_id).await;
        public_id
    }

    async fn wait_fulfilled_with_receipt(&self, public_id: &str) {
        self.app
            .wait_for_count(
                &format!(
                    "SELECT count(*) FROM orders o JOIN emails e ON e.order_id = o.id AND e.kind = 'receipt' AND e.status = 'sent' \
                     WHERE o.public_id = '{public_id}' AND o.status = 'fulfilled'"
                ),
                1,
                WAIT,
            )
            .await;
    }

    async fn get(&self, path: &str) -> Value {
        let res = self.app.get_as(&self.buyer, path).await;
        assert_eq!(res.status, 200, "{path}: {}", res.text);
        res.json
    }
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("a bare JSON array, as the frontend reads lists: {v}"))
}

// ---- §1.1, the dashboard's Promise.all ------------------------------------------------------

#[tokio::test]
async fn me_nests_profile_and_customer_account_as_the_starter_does() {
    let s = Starter::start().await;
    let mut claims = granary_tests::clerk::claims("user_buyer");
    claims["given_name"] = json!("Ada");
    claims["entitlements"] = json!(["pro"]);
    let token = granary_tests::clerk::sign(&claims);
    let me = s.app.get_as(&token, "/api/me/").await;
    assert_eq!(me.status, 200, "{}", me.text);
    let me = me.json;
    assert!(me["profile"].is_object() && me["customer_account"].is_object());
    assert_eq!(me["profile"]["plan_tier"], "pro");
    assert_eq!(me["profile"]["first_name"], "Ada");
    assert!(me["customer_account"]["full_name"].is_string());
    assert_eq!(me["billing_features"], json!(["pro"]));
    // The preflight email status the dashboard restores comes from the account's metadata.
    s.app
        .post_as(&token, "/api/account/preflight/email-test/", &json!(null))
        .await;
    let me = s.app.get_as(&token, "/api/me/").await.json;
    let meta = &me["customer_account"]["metadata"];
    assert!(meta["preflight_email_last_sent_at"].is_string(), "{me}");
    assert_eq!(
        meta["preflight_email_last_recipient"],
        "user_buyer@example.com"
    );
}

#[tokio::test]
async fn billing_features_answer_enabled_features_sorted_and_lower_case() {
    let s = Starter::start().await;
    let mut claims = granary_tests::clerk::claims("user_buyer");
    claims["entitlements"] = json!({"Reports": true, "beta": false});
    let token = granary_tests::clerk::sign(&claims);
    let offer = s.create_offer("Kit", "digital", 900, "usd", None).await;
    s.buy_manually(&offer.price_id).await;
    let f = s.app.get_as(&token, "/api/billing/features/").await.json;
    assert_eq!(f["enabled_features"], json!(["reports", "templates_pack"]));
    let one = s
        .app
        .get_as(&token, "/api/billing/features/?feature=Templates_Pack")
        .await
        .json;
    assert_eq!(one, json!({"feature": "templates_pack", "enabled": true}));
}

#[tokio::test]
async fn orders_list_reads_as_the_dashboard_counts_it() {
    let s = Starter::start().await;
    let offer = s.create_offer("Kit", "digital", 2900, "USD", None).await;
    let public_id = s.buy_manually(&offer.price_id).await;
    let pending = s.order(&s.buyer, &offer.price_id).await;
    assert_eq!(pending.status, 201);
    let orders = s.get("/api/account/orders/").await;
    let orders = list(&orders);
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0]["status"], "pending_payment", "newest first");
    assert_eq!(orders[1]["public_id"], public_id.as_str());
    assert_eq!(orders[1]["status"], "fulfilled");
    assert_eq!(orders[1]["total_cents"], 2900);
    assert_eq!(orders[1]["currency"], "USD");
    assert_eq!(list(&orders[1]["items"]).len(), 1);
}

#[tokio::test]
async fn subscriptions_carry_product_name_price_summary_and_trialing() {
    let s = Starter::start().await;
    let offer = s
        .create_offer("Pro Plan", "subscription", 1900, "USD", None)
        .await;
    s.app
        .patch_as(
            &s.seller,
            &format!("/api/seller/prices/{}/", offer.price_id),
            &json!({"clerk_plan_id": "cplan_pro", "billing_period": "monthly"}),
        )
        .await;
    let now = chrono::Utc::now().timestamp_millis();
    let event = json!({"type": "subscriptionItem.freeTrialEnding", "object": "event", "timestamp": now,
        "data": {"id": "csubi_1", "status": "free_trial", "payer": {"user_id": "user_buyer"},
                 "plan": {"id": "cplan_pro", "slug": "pro", "features": [{"slug": "ai_coach"}]},
                 "period_start": now, "period_end": now + 86_400_000}});
    assert_eq!(s.app.deliver_clerk("msg_sub_1", &event).await.status, 200);
    s.app
        .wait_for_count(
            "SELECT count(*) FROM subscriptions WHERE provider_subscription_id = 'csubi_1'",
            1,
            WAIT,
        )
        .await;
    let subs = s.get("/api/account/subscriptions/").await;
    let sub = &list(&subs)[0];
    assert_eq!(sub["id"], "csubi_1");
    assert_eq!(sub["product_name"], "Pro Plan");
    assert_eq!(sub["status"], "trialing", "the starter's spelling");
    assert_eq!(
        (
            &sub["price_summary"]["amount_cents"],
            &sub["price_summary"]["currency"],
            &sub["price_summary"]["billing_period"]
        ),
        (&json!(1900), &json!("USD"), &json!("monthly"))
    );
}

#[tokio::test]
async fn downloads_carry_product_name_and_a_numeric_limit() {
    let s = Starter::start().await;
    let offer = s
        .create_offer("Creator Bundle", "digital", 2900, "USD", None)
        .await;
    s.add_ready_asset(&offer, "uploads/bundle.zip").await;
    s.buy_manually(&offer.price_id).await;
    let grants = s.get("/api/account/downloads/").await;
    let g = &list(&grants)[0];
    assert!(g["token"].as_str().is_some_and(|t| t.len() >= 22));
    assert_eq!(g["asset_title"], "Bundle ZIP");
    assert_eq!(g["product_name"], "Creator Bundle");
    assert_eq!(g["can_download"], true);
    assert_eq!(g["max_downloads"], 10, "a number (0 would mean unlimited)");
    assert_eq!(g["download_count"], 0);
}

#[tokio::test]
async fn a_paid_digital_product_without_its_file_shows_a_placeholder_that_becomes_the_download() {
    let s = Starter::start().await;
    let offer = s
        .create_offer("Field Guide", "digital", 1900, "USD", None)
        .await;
    let public_id = s.buy_manually(&offer.price_id).await;
    // The buyer sees the purchase in their downloads, not downloadable yet, and why.
    let grants = s.get("/api/account/downloads/").await;
    assert_eq!(list(&grants).len(), 1, "{grants}");
    let g = &list(&grants)[0];
    let token = g["token"].as_str().expect("a token").to_string();
    assert_eq!(g["product_name"], "Field Guide");
    assert_eq!(g["order_public_id"], public_id.as_str());
    assert_eq!(
        (&g["can_download"], &g["is_active"], &g["is_placeholder"]),
        (&json!(false), &json!(false), &json!(true)),
        "{g}"
    );
    assert!(g["asset"].is_null() && g["expires_at"].is_null(), "{g}");
    assert!(
        g["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not uploaded this file yet")),
        "{g}"
    );
    let res = s
        .app
        .post_as(
            &s.buyer,
            &format!("/api/account/downloads/{token}/access/"),
            &json!(null),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (403, Some("download_not_ready")),
        "{}",
        res.text
    );
    let receipt: String = sqlx::query_scalar("SELECT text_body FROM emails WHERE kind = 'receipt'")
        .fetch_one(&s.app.db_pool)
        .await
        .unwrap();
    assert!(receipt.contains("not uploaded yet"), "{receipt}");

    // The seller uploads the file: the placeholder becomes the download (same token), and the
    // buyer is told.
    s.add_ready_asset(&offer, "uploads/guide.pdf").await;
    s.app
        .wait_for_count(
            "SELECT count(*) FROM emails WHERE kind = 'grant_issued' AND status = 'sent'",
            1,
            WAIT,
        )
        .await;
    let grants = s.get("/api/account/downloads/").await;
    assert_eq!(
        list(&grants).len(),
        1,
        "one grant, not a placeholder and a grant: {grants}"
    );
    let g = &list(&grants)[0];
    assert_eq!(g["token"], token.as_str());
    assert_eq!(
        (&g["can_download"], &g["is_active"], &g["is_placeholder"]),
        (&json!(true), &json!(true), &json!(false)),
        "{g}"
    );
    assert_eq!(g["asset_title"], "Bundle ZIP");
    assert!(g["reason"].is_null() && g["expires_at"].is_string(), "{g}");
    let res = s
        .app
        .post_as(
            &s.buyer,
            &format!("/api/account/downloads/{token}/access/"),
            &json!(null),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let url = res.json["download_url"].as_str().expect("download_url");
    let file = s.app.client.get(url).send().await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.unwrap().as_ref(), b"the bundle");
}

#[tokio::test]
async fn entitlements_carry_id_and_is_current_and_take_current_false() {
    let s = Starter::start().await;
    let offer = s.create_offer("Kit", "digital", 900, "USD", None).await;
    s.buy_manually(&offer.price_id).await;
    sqlx::query("INSERT INTO entitlements (profile_id, feature_key, source_type, source_id, revoked_at) SELECT id, 'old_perk', 'manual', 'm1', now() FROM profiles WHERE clerk_user_id = 'user_buyer'")
        .execute(&s.app.db_pool)
        .await
        .unwrap();
    let current = s.get("/api/account/entitlements/").await;
    let current = list(&current);
    assert_eq!(current.len(), 1);
    assert!(current[0]["id"].is_string());
    assert_eq!(current[0]["feature_key"], "templates_pack");
    assert_eq!(current[0]["is_current"], true);
    assert_eq!(current[0]["source_type"], "purchase");
    let all = s.get("/api/account/entitlements/?current=false").await;
    let all: Vec<(String, bool)> = list(&all)
        .iter()
        .map(|e| {
            (
                e["feature_key"].as_str().unwrap().to_string(),
                e["is_current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        all,
        [("old_perk".into(), false), ("templates_pack".into(), true)]
    );
}

#[tokio::test]
async fn work_orders_list_answers_the_dashboard_and_the_work_orders_page() {
    let s = Starter::start().await;
    let empty = s.get("/api/account/orders/work/").await;
    assert!(list(&empty).is_empty(), "200 and [] before any purchase");
    let offer = s
        .create_offer("Logo Design", "service", 15000, "USD", None)
        .await;
    s.app
        .post_as(
            &s.buyer,
            "/api/account/orders/create/",
            &json!({"price_id": offer.price_id, "quantity": 1, "notes": "A fox, in orange"}),
        )
        .await;
    let public_id: String = sqlx::query_scalar("SELECT public_id FROM orders")
        .fetch_one(&s.app.db_pool)
        .await
        .unwrap();
    s.app
        .post_as(
            &s.buyer,
            &format!("/api/account/orders/{public_id}/confirm/"),
            &json!({"provider": "manual"}),
        )
        .await;
    s.wait_fulfilled_with_receipt(&public_id).await;
    let work = s.get("/api/account/orders/work/").await;
    let w = &list(&work)[0];
    assert!(w["id"].is_string());
    assert_eq!(w["product_name"], "Logo Design");
    assert_eq!(w["status"], "requested");
    assert_eq!(w["delivery_mode"], "downloadable");
    assert_eq!(w["customer_request"], "A fox, in orange");
    assert_eq!(w["shipping_carrier"], "");
    assert_eq!(w["shipping_tracking_number"], "");
}

#[tokio::test]
async fn catalog_cards_have_an_active_price_with_its_amount() {
    let s = Starter::start().await;
    let usd = s
        .create_offer("Creator Bundle", "digital", 2900, "usd", None)
        .await;
    let jpy = s
        .create_offer("Anime Pack", "digital", 500, "JPY", None)
        .await;
    let products = s.app.get("/api/products/").await;
    assert_eq!(products.status, 200);
    let products = list(&products.json);
    assert_eq!(
        products
            .iter()
            .map(|p| p["slug"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["anime-pack", "creator-bundle"],
        "by name, slugs derived from the names"
    );
    let card = &products[1];
    assert_eq!(card["id"], usd.product_id.as_str());
    assert_eq!(card["name"], "Creator Bundle");
    assert_eq!(card["product_type"], "digital");
    assert_eq!(card["tagline"], "Creator Bundle in one line");
    assert_eq!(card["description"], "Made with care");
    assert_eq!(card["active_price"]["id"], usd.price_id.as_str());
    assert_eq!(card["active_price"]["amount_cents"], 2900);
    assert_eq!(card["active_price"]["currency"], "USD");
    assert_eq!(card["active_price"]["amount"], "29.00");
    assert_eq!(list(&card["prices"]).len(), 1);
    assert_eq!(products[0]["active_price"]["id"], jpy.price_id.as_str());
    assert_eq!(
        products[0]["active_price"]["amount"], "500",
        "JPY has no minor unit"
    );
    assert_eq!(
        card["feature_keys"],
        json!(["templates_pack"]),
        "normalised"
    );
}

#[tokio::test]
async fn the_dashboard_probes_answer_honestly() {
    let s = Starter::start().await;
    assert_eq!(s.get("/api/ai/providers/").await, json!([]));
    let usage = s.get("/api/ai/usage/summary/").await;
    assert_eq!(usage["buckets"], json!([]));
    assert!(
        list(&usage["notes"])[0]
            .as_str()
            .unwrap()
            .contains("no usage to report")
    );
    assert_eq!(usage["plan_tier"], "free");
    assert!(usage["period_end"].is_null());
    // The profile probe reads the caller's profile from Granary's own database.
    let probe = s.get("/api/supabase/profile/").await;
    assert_eq!(probe["ok"], true, "{probe}");
    assert_eq!(probe["profile"]["clerk_user_id"], "user_buyer", "{probe}");
    assert_eq!(probe["profile"]["email"], "user_buyer@example.com");
    assert_eq!(probe["source_table"], "profiles");
    assert!(
        probe["detail"]
            .as_str()
            .is_some_and(|d| d.contains("PostgreSQL")),
        "{probe}"
    );
}

#[tokio::test]
async fn the_profile_probe_fails_with_the_reason_when_the_database_is_unreachable() {
    // Nothing listens on port 1: the app's pool cannot connect.
    let app = TestApp::builder()
        .with_clerk()
        .database_url("postgres://postgres@127.0.0.1:1/none")
        .spawn()
        .await;
    let token = granary_tests::clerk::sign(&granary_tests::clerk::claims("user_buyer"));
    let res = app.get_as(&token, "/api/supabase/profile/").await;
    assert_eq!(
        res.status, 200,
        "the starter's probe answers 200: {}",
        res.text
    );
    assert_eq!(res.json["ok"], false, "{}", res.text);
    assert!(res.json["profile"].is_null());
    assert!(
        res.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("could not read your profile") && d.contains("unavailable")),
        "{}",
        res.text
    );
}

#[tokio::test]
async fn subscription_status_is_computed_and_refresh_pulls_from_clerk() {
    let s = Starter::start().await;
    // Never synced: stale (Granary has no news of this account), said so, not blocking, and in
    // the reason the frontend auto-syncs on.
    let status = s.get("/api/account/subscriptions/status/").await;
    assert_eq!(
        (
            &status["state"],
            &status["blocking"],
            &status["reason_code"]
        ),
        (
            &json!("hard_stale"),
            &json!(false),
            &json!("no_subscription_payload")
        ),
        "{status}"
    );
    assert!(status["error_code"].is_null() && status["last_success_at"].is_null());
    assert!(status["age_seconds"].is_null());
    assert!(
        status["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Never synced")),
        "{status}"
    );

    // Clerk has a subscription the webhooks never delivered: ?refresh=1 pulls it.
    let now = chrono::Utc::now().timestamp_millis();
    let clerk = s.app.clerk.as_ref().unwrap();
    clerk.set_subscription("user_buyer", json!({
        "object": "commerce_subscription", "id": "csub_9", "status": "active", "payer_id": "user_buyer",
        "created_at": now, "updated_at": now,
        "subscription_items": [{"object": "commerce_subscription_item", "id": "csubi_9", "status": "active",
            "plan": {"id": "cplan_team", "slug": "team", "features": [{"slug": "team_seats"}]},
            "period_start": now, "period_end": now + 86_400_000}]
    }));
    let status = s.get("/api/account/subscriptions/status/?refresh=1").await;
    assert_eq!(clerk.backend_api_calls(), 1);
    assert_eq!(
        (&status["state"], &status["reason_code"]),
        (&json!("fresh"), &json!("synced")),
        "{status}"
    );
    assert!(status["last_success_at"].is_string());
    let subs = s.get("/api/account/subscriptions/").await;
    assert_eq!(list(&subs)[0]["id"], "csubi_9");
    s.app
        .wait_for_count(
            "SELECT count(*) FROM entitlements WHERE feature_key = 'team_seats' AND revoked_at IS NULL",
            1,
            WAIT,
        )
        .await;

    // Clerk failing is reported in the status, never thrown at the dashboard.
    clerk.fail_backend_api(Some(500));
    let status = s
        .get("/api/account/subscriptions/status/?refresh=true")
        .await;
    assert_eq!(
        (&status["reason_code"], &status["error_code"]),
        (&json!("sync_failed"), &json!("clerk_error")),
        "{status}"
    );
    assert_eq!(
        status["blocking"], false,
        "fresh data is not blocked by one failed pull"
    );
}

#[tokio::test]
async fn a_failed_pull_on_a_never_synced_account_blocks_until_a_later_event_arrives() {
    let s = Starter::start().await;
    let clerk = s.app.clerk.as_ref().unwrap();
    clerk.fail_backend_api(Some(500));
    let status = s.get("/api/account/subscriptions/status/?refresh=1").await;
    assert_eq!(
        (
            &status["state"],
            &status["blocking"],
            &status["reason_code"],
            &status["error_code"]
        ),
        (
            &json!("hard_stale"),
            &json!(true),
            &json!("sync_failed"),
            &json!("clerk_error")
        ),
        "Clerk Billing is in use and Granary cannot vouch for the account: {status}"
    );
    // A Clerk billing event for the account, newer than the failed pull, clears it.
    let now = chrono::Utc::now().timestamp_millis();
    let event = json!({"type": "subscriptionItem.active", "object": "event", "timestamp": now,
        "data": {"id": "csubi_e", "status": "active", "payer": {"user_id": "user_buyer"},
                 "plan": {"id": "cplan_pro", "slug": "pro", "features": [{"slug": "pro"}]},
                 "period_start": now, "period_end": now + 86_400_000}});
    let res = s.app.deliver_clerk("msg_sync_e", &event).await;
    assert_eq!(res.status, 200, "{}", res.text);
    s.app
        .wait_for_count(
            "SELECT count(*) FROM subscriptions WHERE provider_subscription_id = 'csubi_e'",
            1,
            WAIT,
        )
        .await;
    let status = s.get("/api/account/subscriptions/status/").await;
    assert_eq!(
        (
            &status["state"],
            &status["blocking"],
            &status["reason_code"]
        ),
        (&json!("fresh"), &json!(false), &json!("synced")),
        "{status}"
    );
    assert!(status["error_code"].is_null(), "{status}");
}

#[tokio::test]
async fn a_shop_without_clerk_billing_is_never_blocked_by_it() {
    // Sign-in through Clerk, but no Backend API key: the shop does not use Clerk Billing.
    let app = TestApp::builder()
        .with_clerk()
        .env("CLERK_SECRET_KEY", "")
        .spawn()
        .await;
    let buyer = app.token("user_buyer", "buyer").await;
    let status = app
        .get_as(&buyer, "/api/account/subscriptions/status/")
        .await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(
        (&status.json["state"], &status.json["blocking"]),
        (&json!("hard_stale"), &json!(false)),
        "{}",
        status.text
    );
    assert!(
        status.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not use Clerk Billing")),
        "{}",
        status.text
    );
    // The dashboard's sync button: the pull cannot run, and says why, without blocking.
    let status = app
        .get_as(&buyer, "/api/account/subscriptions/status/?refresh=1")
        .await;
    assert_eq!(
        (
            &status.json["blocking"],
            &status.json["reason_code"],
            &status.json["error_code"]
        ),
        (
            &json!(false),
            &json!("sync_failed"),
            &json!("not_configured")
        ),
        "{}",
        status.text
    );
}

#[tokio::test]
async fn the_preflight_email_test_without_resend_says_it_cannot_send_and_queues_nothing() {
    let app = TestApp::builder().with_clerk().spawn().await;
    let buyer = app.token("user_buyer", "buyer").await;
    let res = app
        .send(
            app.client
                .post(app.url("/api/account/preflight/email-test/"))
                .bearer_auth(&buyer),
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.text);
    assert_eq!(res.json["sent"], false);
    assert!(
        res.json["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Resend is not configured")),
        "{}",
        res.text
    );
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM emails").await, 0);
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM jobs WHERE queue = 'send_email'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_preflight_email_test_sends_a_real_email_through_the_job() {
    let s = Starter::start().await;
    let res = s
        .app
        .send(
            s.app
                .client
                .post(s.app.url("/api/account/preflight/email-test/"))
                .bearer_auth(&s.buyer),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.json["sent"], true);
    assert_eq!(res.json["recipient_email"], "user_buyer@example.com");
    assert!(res.json["detail"].is_string() && res.json["sent_at"].is_string());
    s.app
        .wait_for_count(
            "SELECT count(*) FROM emails WHERE kind = 'preflight_test' AND status = 'sent'",
            1,
            WAIT,
        )
        .await;
    let resend = s.app.resend.as_ref().unwrap();
    assert_eq!(resend.delivered_count(), 1);
    assert_eq!(
        resend.delivered()[0].body["to"],
        json!(["user_buyer@example.com"])
    );
}

#[tokio::test]
async fn download_access_answers_download_url_and_the_counted_grant() {
    let s = Starter::start().await;
    let offer = s
        .create_offer("Creator Bundle", "digital", 2900, "USD", None)
        .await;
    s.add_ready_asset(&offer, "uploads/bundle.zip").await;
    s.buy_manually(&offer.price_id).await;
    let grants = s.get("/api/account/downloads/").await;
    let token = list(&grants)[0]["token"].as_str().unwrap().to_string();
    // The frontend posts with no body.
    let res = s
        .app
        .send(
            s.app
                .client
                .post(
                    s.app
                        .url(&format!("/api/account/downloads/{token}/access/")),
                )
                .bearer_auth(&s.buyer),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let url = res.json["download_url"].as_str().expect("download_url");
    assert_eq!(res.json["grant"]["download_count"], 1);
    let file = s.app.client.get(url).send().await.unwrap();
    assert_eq!(file.bytes().await.unwrap().as_ref(), b"the bundle");
}

#[tokio::test]
async fn create_offer_fast_works_for_any_signed_in_user_with_seller_access_any() {
    let s = Starter::start().await;
    let a = s
        .create_offer("Coaching Call", "service", 9900, "usd", None)
        .await;
    let b = s
        .create_offer("Coaching Call", "service", 9900, "usd", None)
        .await;
    assert_eq!(
        (a.slug.as_str(), b.slug.as_str()),
        ("coaching-call", "coaching-call-2"),
        "slugs are derived and made unique"
    );
    // A service offer on a digital product is refused.
    let d = s.create_offer("Ebook", "digital", 900, "usd", None).await;
    let res = s
        .app
        .send(
            s.app
                .client
                .put(s.app.url(&format!(
                    "/api/seller/products/{}/service-offer/",
                    d.product_id
                )))
                .bearer_auth(&s.seller)
                .json(&json!({"session_minutes": 60})),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json["detail"], "Product is not a service product.");

    // With the default SELLER_ACCESS=role, the same user is refused until the operator grants
    // the role.
    let strict = TestApp::builder().as_process().with_clerk().spawn().await;
    let maker = strict.token("user_maker", "buyer").await;
    let res = strict
        .post_as(
            &maker,
            "/api/seller/products/",
            &json!({"name": "X", "product_type": "digital", "visibility": "published"}),
        )
        .await;
    assert_eq!((res.status, res.error_code()), (403, Some("forbidden")));
    // The refusal says how to grant the role, and that command works.
    let detail = res.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("granary-worker users set-role user_maker seller"),
        "{detail}"
    );
    let (code, out) = granary_tests::worker::cli(
        &strict.env_vars(),
        &[
            "users",
            "set-role",
            "user_maker",
            "seller",
            "--reason",
            "first seller",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let res = strict
        .post_as(
            &maker,
            "/api/seller/products/",
            &json!({"name": "X", "product_type": "digital", "visibility": "published"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
}

#[tokio::test]
async fn order_create_answers_order_and_checkout() {
    let s = Starter::start().await;
    let hosted = s
        .create_offer(
            "Kit",
            "digital",
            2900,
            "USD",
            Some("https://checkout.example.com/c/1"),
        )
        .await;
    let res = s.order(&s.buyer, &hosted.price_id).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert!(
        res.json["order"]["public_id"]
            .as_str()
            .is_some_and(|p| !p.is_empty())
    );
    assert_eq!(res.json["order"]["status"], "pending_payment");
    assert_eq!(
        res.json["checkout"]["checkout_url"],
        "https://checkout.example.com/c/1"
    );
    let bare = s.create_offer("Bare", "digital", 100, "USD", None).await;
    let res = s.order(&s.buyer, &bare.price_id).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        res.json["checkout"]["checkout_url"], "",
        "no checkout URL is not an error"
    );
}

#[tokio::test]
async fn product_detail_has_every_price_the_assets_and_the_service_offer() {
    let s = Starter::start().await;
    let service = s
        .create_offer("Coaching Call", "service", 9900, "USD", None)
        .await;
    let res = s.app.get(&format!("/api/products/{}/", service.slug)).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let p = res.json;
    assert_eq!(p["name"], "Coaching Call");
    assert_eq!(p["tagline"], "Coaching Call in one line");
    assert_eq!(p["description"], "Made with care");
    assert_eq!(p["product_type"], "service");
    let price = &list(&p["prices"])[0];
    assert_eq!(price["id"], service.price_id.as_str());
    assert_eq!(
        (
            &price["name"],
            &price["billing_period"],
            &price["amount_cents"],
            &price["currency"]
        ),
        (
            &json!("Standard"),
            &json!("one_time"),
            &json!(9900),
            &json!("USD")
        )
    );
    assert_eq!(
        (
            &p["service_offer"]["session_minutes"],
            &p["service_offer"]["delivery_days"],
            &p["service_offer"]["revision_count"]
        ),
        (&json!(60), &json!(7), &json!(1))
    );
    let digital = s
        .create_offer("Creator Bundle", "digital", 2900, "USD", None)
        .await;
    s.add_ready_asset(&digital, "uploads/bundle.zip").await;
    let p = s
        .app
        .get(&format!("/api/products/{}/", digital.slug))
        .await
        .json;
    let asset = &list(&p["assets"])[0];
    assert!(asset["id"].is_string());
    assert_eq!(asset["title"], "Bundle ZIP");
    assert!(p["service_offer"].is_null());
    let missing = s.app.get("/api/products/no-such-thing/").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json["detail"].is_string());
}

// ---- §1.2, the seed-era frontends ---------------------------------------------------------

#[tokio::test]
async fn the_seed_era_manual_buy_flow_completes_with_a_receipt() {
    let s = Starter::start().await;
    let offer = s.create_offer("Kit", "digital", 900, "USD", None).await;
    // Create with no checkout URL, then POST confirm {provider: manual, external_id}.
    let public_id = s.buy_manually(&offer.price_id).await;
    let orders = s.get("/api/account/orders/").await;
    assert_eq!(list(&orders)[0]["status"], "fulfilled");
    assert_eq!(list(&orders)[0]["public_id"], public_id.as_str());
    assert_eq!(s.app.resend.as_ref().unwrap().delivered_count(), 1);
    // Confirming again answers the order as it is.
    let again = s
        .app
        .post_as(
            &s.buyer,
            &format!("/api/account/orders/{public_id}/confirm/"),
            &json!({"provider": "manual", "external_id": "manual_2"}),
        )
        .await;
    assert_eq!(
        (again.status, &again.json["already_confirmed"]),
        (200, &json!(true))
    );
    assert_eq!(
        count(&s.app.db_pool, "SELECT count(*) FROM payment_transactions").await,
        1
    );
}

#[tokio::test]
async fn the_head_buy_flow_completes_with_a_receipt_after_the_payment_webhook() {
    let s = Starter::start().await;
    let offer = s
        .create_offer(
            "Kit",
            "digital",
            2900,
            "USD",
            Some("https://checkout.stripe.com/c/pay/cs_1"),
        )
        .await;
    let res = s.order(&s.buyer, &offer.price_id).await;
    assert_eq!(res.json["checkout"]["provider"], "stripe");
    let public_id = res.json["order"]["public_id"].as_str().unwrap().to_string();
    let paid = stripe::checkout_completed("evt_paid_1", &public_id, 2900);
    assert_eq!(s.app.deliver_stripe(&paid).await.status, 200);
    s.wait_fulfilled_with_receipt(&public_id).await;
    assert_eq!(
        list(&s.get("/api/account/orders/").await)[0]["status"],
        "fulfilled"
    );
}

#[tokio::test]
async fn seed_era_bookings_take_a_request_without_a_time() {
    let s = Starter::start().await;
    let offer = s
        .create_offer("Coaching Call", "service", 9900, "USD", None)
        .await;
    let detail = s.app.get(&format!("/api/products/{}/", offer.slug)).await;
    let offer_id = detail.json["service_offer"]["id"].as_str().unwrap();
    let res = s
        .app
        .post_as(
            &s.buyer,
            "/api/account/bookings/",
            &json!({"service_offer": offer_id, "customer_notes": "Mornings please"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let bookings = s.get("/api/account/bookings/").await;
    let b = &list(&bookings)[0];
    assert!(b["id"].is_string());
    assert_eq!(b["product_name"], "Coaching Call");
    assert_eq!(b["status"], "requested");
    assert_eq!(b["customer_notes"], "Mornings please");
    // The booked customer hears that the request arrived, through the email job (seed: "no
    // email to a booked customer").
    s.app
        .wait_for_count(
            "SELECT count(*) FROM emails WHERE kind = 'booking_request' AND status = 'sent' AND order_id IS NULL",
            1,
            Duration::from_secs(30),
        )
        .await;
    let sent = s.app.resend.as_ref().unwrap().delivered();
    assert!(
        sent.iter().any(|m| m.body["subject"]
            .as_str()
            .unwrap_or_default()
            .contains("Coaching Call")),
        "{sent:?}"
    );
    let res = s
        .app
        .post_as(&s.buyer, "/api/account/bookings/", &json!({}))
        .await;
    assert_eq!(res.status, 422);
    assert!(res.json["error"]["fields"]["service_offer"].is_array());
}

// ---- bad input, transport ---------------------------------------------------------------------

#[tokio::test]
async fn bad_input_keeps_the_contract_codes_and_adds_detail() {
    let s = Starter::start().await;
    let offer = s.create_offer("Kit", "digital", 900, "USD", None).await;
    let unknown = s.order(&s.buyer, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(
        (unknown.status, unknown.error_code()),
        (404, Some("not_found"))
    );
    assert!(unknown.json["detail"].is_string());
    s.app
        .patch_as(
            &s.seller,
            &format!("/api/seller/prices/{}/", offer.price_id),
            &json!({"is_active": false}),
        )
        .await;
    assert_eq!(
        s.order(&s.buyer, &offer.price_id).await.status,
        404,
        "inactive price"
    );
    s.app
        .patch_as(
            &s.seller,
            &format!("/api/seller/prices/{}/", offer.price_id),
            &json!({"is_active": true}),
        )
        .await;
    let zero = s
        .app
        .post_as(
            &s.buyer,
            "/api/account/orders/create/",
            &json!({"price_id": offer.price_id, "quantity": 0}),
        )
        .await;
    assert_eq!(
        (zero.status, zero.error_code()),
        (422, Some("validation_failed"))
    );
    assert!(zero.json["detail"].as_str().unwrap().contains("quantity"));
    assert_eq!(
        count(&s.app.db_pool, "SELECT count(*) FROM orders").await,
        0
    );
    let mine = s.order(&s.buyer, &offer.price_id).await;
    let public_id = mine.json["order"]["public_id"].as_str().unwrap();
    let other = s.app.token("user_other", "buyer").await;
    let res = s
        .app
        .post_as(
            &other,
            &format!("/api/account/orders/{public_id}/confirm/"),
            &json!({"provider": "manual"}),
        )
        .await;
    assert_eq!((res.status, res.error_code()), (404, Some("not_found")));
    let res = s
        .app
        .send(s.app.client.get(s.app.url("/api/account/orders/")))
        .await;
    assert_eq!(res.status, 401);
    assert!(res.json["detail"].is_string());
    let res = s.app.get("/api/nowhere/").await;
    assert_eq!((res.status, res.json["detail"].is_string()), (404, true));
}

#[tokio::test]
async fn cors_allows_the_headers_a_drf_era_client_sends() {
    let s = Starter::start().await;
    let res = s
        .app
        .client
        .request(reqwest::Method::OPTIONS, s.app.url("/api/account/orders/"))
        .header("origin", granary_tests::clerk::AZP)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-csrftoken,x-requested-with",
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "authorization",
        "content-type",
        "x-csrftoken",
        "x-requested-with",
    ] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
}

// ---- work orders, the seller side ------------------------------------------------------------

#[tokio::test]
async fn a_seller_moves_a_work_order_along_audited_and_emailed() {
    let s = Starter::start().await;
    let offer = s
        .create_offer("Logo Design", "service", 15000, "USD", None)
        .await;
    s.buy_manually(&offer.price_id).await;
    let listed = s.app.get_as(&s.seller, "/api/seller/work-orders/").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let id = list(&listed.json)[0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/seller/work-orders/{id}/");
    // Another user's work orders are not theirs to see.
    let stranger = s.app.token("user_stranger", "buyer").await;
    assert_eq!(s.app.get_as(&stranger, &path).await.status, 404);
    let bad = s
        .app
        .patch_as(&s.seller, &path, &json!({"status": "completed"}))
        .await;
    assert_eq!(
        (bad.status, bad.error_code()),
        (409, Some("conflict")),
        "requested cannot jump to completed"
    );
    for (status, extra) in [
        ("in_progress", json!({})),
        (
            "ready_for_delivery",
            json!({"delivery_notes": "Three concepts attached"}),
        ),
        (
            "completed",
            json!({"shipping_carrier": "DHL", "shipping_tracking_number": "JD0001",
                   "shipping_tracking_url": "https://dhl.example/track/JD0001"}),
        ),
    ] {
        let mut body = extra;
        body["status"] = json!(status);
        let res = s.app.patch_as(&s.seller, &path, &body).await;
        assert_eq!(
            (res.status, res.json["status"].as_str()),
            (200, Some(status)),
            "{}",
            res.text
        );
    }
    let mine = s.get("/api/account/orders/work/").await;
    let w = &list(&mine)[0];
    assert_eq!(w["status"], "completed");
    assert_eq!(w["shipping_carrier"], "DHL");
    assert_eq!(w["shipping_tracking_number"], "JD0001");
    assert_eq!(w["delivery_notes"], "Three concepts attached");
    assert!(w["completed_at"].is_string() && w["shipped_at"].is_string());
    assert_eq!(
        count(&s.app.db_pool, "SELECT count(*) FROM work_order_events").await,
        3
    );
    s.app
        .wait_for_count(
            "SELECT count(*) FROM emails WHERE kind = 'work_order_status' AND status = 'sent'",
            3,
            WAIT,
        )
        .await;
    let reopened = s
        .app
        .patch_as(&s.seller, &path, &json!({"status": "in_progress"}))
        .await;
    assert_eq!(reopened.status, 409, "a completed work order stays closed");
}

#[tokio::test]
async fn a_refund_cancels_the_open_work_order() {
    let s = Starter::start().await;
    let offer = s
        .create_offer("Logo Design", "service", 1500, "USD", None)
        .await;
    let res = s.order(&s.buyer, &offer.price_id).await;
    let public_id = res.json["order"]["public_id"].as_str().unwrap().to_string();
    let paid = stripe::checkout_completed("evt_p", &public_id, 1500);
    assert_eq!(s.app.deliver_stripe(&paid).await.status, 200);
    s.wait_fulfilled_with_receipt(&public_id).await;
    let refund = stripe::charge_refunded("evt_r", &public_id, 1500);
    assert_eq!(s.app.deliver_stripe(&refund).await.status, 200);
    s.app
        .wait_for_count(
            "SELECT count(*) FROM work_orders WHERE status = 'canceled'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(
        list(&s.get("/api/account/orders/work/").await)[0]["status"],
        "canceled"
    );
}
