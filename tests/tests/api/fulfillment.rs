//! The fulfillment pipeline end to end: a paid order becomes entitlements, download grants and
//! one receipt (through the real resend-rs client and a Resend stand-in), files move to
//! permanent `fs` storage, downloads are counted atomically and served by signed URLs, refunds
//! revoke exactly what their order granted.

use std::{sync::Arc, time::Duration};

use granary_jobs::{
    catalog::assets::FinalizeAsset,
    emails::SendEmail,
    orders::{
        FulfillOrder,
        fulfillment::{self, IssueGrants},
    },
    platform::audit::Actor,
    queue::JobContext,
};
use granary_tests::{TestApp, count, resend::Answer, sign::STRIPE_SECRET, stripe};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(25);

async fn shop() -> TestApp {
    TestApp::shop()
        .env("JOB_BACKOFF_BASE_MS", "200")
        .spawn()
        .await
}

/// Puts a file into the fs storage, as a seller's upload would.
fn upload(app: &TestApp, key: &str, bytes: &[u8]) {
    let path = app.storage_root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A published product granting `feature`, with a price; returns (product id, price id).
async fn product(
    app: &TestApp,
    seller: &str,
    slug: &str,
    feature: &str,
    extra: Value,
) -> (String, String) {
    let mut body =
        json!({"name": slug, "slug": slug, "visibility": "published", "feature_keys": [feature]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let price = json!({"amount_cents": 1500, "currency": "USD", "metadata": {"checkout_url": "https://pay.example/x"}});
    app.listed_product(seller, &body, &price).await
}

async fn add_asset(app: &TestApp, seller: &str, pid: &str, key: &str) -> String {
    let a = app
        .post_as(
            seller,
            &format!("/api/seller/products/{pid}/assets/"),
            &json!({"title": "Bundle ZIP", "file_path": key}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.json["id"].as_str().unwrap().to_string()
}

/// Uploads `bytes` at `key`, adds it as an asset of `pid`, and waits until `ready` assets are
/// ready in all (this one included).
async fn ready_asset(app: &TestApp, seller: &str, pid: &str, key: &str, bytes: &[u8], ready: i64) {
    upload(app, key, bytes);
    add_asset(app, seller, pid, key).await;
    app.wait_for_count(
        "SELECT count(*) FROM digital_assets WHERE status = 'ready'",
        ready,
        WAIT,
    )
    .await;
}

/// Creates and manually confirms an order; returns its public id.
async fn buy(app: &TestApp, buyer: &str, price_id: &str) -> String {
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
    let res = app
        .post_as(
            buyer,
            &format!("/api/account/orders/{public_id}/confirm/"),
            &json!({"provider": "manual"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    public_id
}

async fn order_id(app: &TestApp, public_id: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM orders WHERE public_id = $1")
        .bind(public_id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

fn ctx(app: &TestApp, queue: &'static str) -> JobContext {
    JobContext {
        pool: app.db_pool.clone(),
        config: Arc::new((*app.config).clone()),
        job_id: "manual-rerun".into(),
        queue,
        attempt: 1,
        worker_id: "test".into(),
    }
}

async fn tokens(app: &TestApp, buyer_token: &str) -> Vec<Value> {
    app.get_as(buyer_token, "/api/account/downloads/")
        .await
        .json
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_paid_order_is_fulfilled_once_even_when_every_job_runs_twice() {
    let app = shop().await;
    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    let (pid, price) = product(&app, &seller, "bundle", "templates", json!({})).await;
    upload(&app, "uploads/bundle-v1.zip", b"zip bytes one");
    upload(&app, "uploads/extras.pdf", b"pdf bytes two");
    let a1 = add_asset(&app, &seller, &pid, "uploads/bundle-v1.zip").await;
    add_asset(&app, &seller, &pid, "uploads/extras.pdf").await;
    app.wait_for_count(
        "SELECT count(*) FROM digital_assets WHERE status = 'ready'",
        2,
        WAIT,
    )
    .await;
    let (key, sha): (String, String) =
        sqlx::query_as("SELECT storage_key, sha256 FROM digital_assets WHERE id = $1::uuid")
            .bind(&a1)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(sha, hex::encode(Sha256::digest(b"zip bytes one")));
    assert!(key.starts_with("assets/") && key.ends_with(".zip"), "{key}");
    assert!(
        app.storage_root.join(&key).exists(),
        "copied to its permanent key"
    );

    let public_id = buy(&app, &buyer, &price).await;
    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        1,
        WAIT,
    )
    .await;
    app.wait_for_count("SELECT count(*) FROM emails WHERE status = 'sent'", 1, WAIT)
        .await;
    let resend = app.resend.as_ref().unwrap();
    assert_eq!(resend.delivered().len(), 1);
    let receipt = &resend.delivered()[0];
    assert_eq!(receipt.body["to"], json!(["buyer@example.com"]));
    assert!(
        receipt.body["subject"]
            .as_str()
            .unwrap()
            .contains(&public_id)
    );
    assert!(
        receipt.body["html"]
            .as_str()
            .unwrap()
            .contains("/account/downloads")
            && receipt.body["text"]
                .as_str()
                .unwrap()
                .contains("Total paid: 15.00 USD")
    );
    let snapshot = || async {
        (
            count(
                &app.db_pool,
                "SELECT count(*) FROM entitlements WHERE revoked_at IS NULL",
            )
            .await,
            count(&app.db_pool, "SELECT count(*) FROM download_grants").await,
            count(&app.db_pool, "SELECT count(*) FROM emails").await,
        )
    };
    assert_eq!(snapshot().await, (1, 2, 1));
    let grants = tokens(&app, &buyer).await;
    assert!(
        grants
            .iter()
            .all(|g| g["can_download"] == true && g["token"].as_str().unwrap().len() == 40),
        "{grants:?}"
    );

    // Every job of the order, run again by hand, changes nothing.
    let oid = order_id(&app, &public_id).await;
    fulfillment::fulfill_order(ctx(&app, "fulfill_order"), FulfillOrder { order_id: oid })
        .await
        .unwrap();
    granary_jobs::catalog::assets::finalize_asset(
        ctx(&app, "finalize_asset"),
        FinalizeAsset {
            asset_id: a1.parse().unwrap(),
            file_path: "uploads/bundle-v1.zip".into(),
        },
    )
    .await
    .unwrap();
    fulfillment::issue_grants(
        ctx(&app, "issue_grants"),
        IssueGrants {
            asset_id: a1.parse().unwrap(),
        },
    )
    .await
    .unwrap();
    let email_id: Uuid = sqlx::query_scalar("SELECT id FROM emails")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    granary_jobs::emails::send_email(
        ctx(&app, "send_email"),
        SendEmail {
            email_id,
            order_id: Some(oid),
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(snapshot().await, (1, 2, 1));
    assert_eq!(resend.delivered().len(), 1, "the receipt went out once");
}

#[tokio::test]
async fn resend_failures_retry_reject_or_skip_as_they_should() {
    let app = shop().await;
    let resend = app.resend.as_ref().unwrap();
    let seller = app.token("seller", "seller").await;
    let (_, price) = product(&app, &seller, "p", "f", json!({})).await;

    // 500 twice, then 200: delivered once, three attempts with their errors.
    resend.script([Answer::ServerError, Answer::ServerError]);
    let buyer = app.token("b1", "buyer").await;
    buy(&app, &buyer, &price).await;
    app.wait_for_count("SELECT count(*) FROM emails WHERE status = 'sent'", 1, WAIT)
        .await;
    let errors: Vec<(String, Option<String>)> = sqlx::query_as("SELECT a.outcome, a.error FROM job_attempts a WHERE a.queue = 'send_email' ORDER BY a.attempt").fetch_all(&app.db_pool).await.unwrap();
    assert_eq!(
        errors.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["retry", "retry", "succeeded"]
    );
    assert!(
        errors[0].1.as_deref().unwrap().contains("Resend 500"),
        "{errors:?}"
    );
    assert_eq!(resend.delivered().len(), 1);
    let keys: Vec<_> = resend
        .received()
        .iter()
        .map(|r| r.idempotency_key.clone().unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| k == &keys[0]),
        "every attempt carries the same idempotency key"
    );

    // 422: failed at once, Resend's message kept.
    resend.script([Answer::Invalid("Invalid `to` field.".into())]);
    let b2 = app.token("b2", "buyer").await;
    buy(&app, &b2, &price).await;
    app.wait_for_count(
        "SELECT count(*) FROM emails WHERE status = 'failed'",
        1,
        WAIT,
    )
    .await;
    let err: String = sqlx::query_scalar("SELECT last_error FROM emails WHERE status = 'failed'")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert!(err.contains("Invalid `to` field."), "{err}");
    app.wait_for_count(
        "SELECT count(*) FROM job_attempts WHERE queue = 'send_email' AND outcome = 'discarded'",
        1,
        WAIT,
    )
    .await;

    // 429 with a reset: honoured, then sent.
    resend.script([Answer::RateLimited(1)]);
    let b3 = app.token("b3", "buyer").await;
    buy(&app, &b3, &price).await;
    app.wait_for_count("SELECT count(*) FROM emails WHERE status = 'sent'", 2, WAIT)
        .await;

    // No address at all: skipped with the reason, nothing sent.
    let b4 = app.token("b4", "buyer").await;
    sqlx::query("UPDATE profiles SET email = NULL WHERE clerk_user_id = 'b4'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    buy(&app, &b4, &price).await;
    app.wait_for_count(
        "SELECT count(*) FROM emails WHERE status = 'skipped'",
        1,
        WAIT,
    )
    .await;
    let reason: String =
        sqlx::query_scalar("SELECT skip_reason FROM emails WHERE status = 'skipped'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert!(reason.contains("no recipient"), "{reason}");
}

#[tokio::test]
async fn without_a_resend_key_emails_go_to_the_outbox() {
    let app = TestApp::builder()
        .with_clerk()
        .with_worker()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .spawn()
        .await;
    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    let (_, price) = product(&app, &seller, "p", "f", json!({})).await;
    buy(&app, &buyer, &price).await;
    app.wait_for_count(
        "SELECT count(*) FROM emails WHERE status = 'outbox' AND kind = 'receipt'",
        1,
        WAIT,
    )
    .await;
}

#[tokio::test]
async fn an_asset_uploaded_after_payment_is_granted_when_finalized() {
    let app = shop().await;
    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    let (pid, price) = product(&app, &seller, "late", "f", json!({})).await;
    buy(&app, &buyer, &price).await;
    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        1,
        WAIT,
    )
    .await;
    // Paid, no file yet: a placeholder, not downloadable, with the reason.
    let listed = tokens(&app, &buyer).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0]["is_placeholder"], &listed[0]["can_download"]),
        (&json!(true), &json!(false))
    );
    assert!(listed[0]["reason"].is_string());
    let placeholder_token = listed[0]["token"].clone();

    // The seller registers the asset before uploading: a visible failure, retried.
    let aid = add_asset(&app, &seller, &pid, "uploads/late.zip").await;
    app.wait_for_count(
        "SELECT count(*) FROM job_attempts WHERE queue = 'finalize_asset' AND outcome = 'retry'",
        1,
        WAIT,
    )
    .await;
    let asset = app
        .get_as(&seller, &format!("/api/seller/assets/{aid}/"))
        .await;
    assert_eq!(asset.json["status"], "pending");
    assert!(
        asset.json["last_error"]
            .as_str()
            .unwrap()
            .contains("no object at `uploads/late.zip`"),
        "{}",
        asset.json
    );
    upload(&app, "uploads/late.zip", b"late bytes");
    app.wait_for_count(
        "SELECT count(*) FROM digital_assets WHERE status = 'ready'",
        1,
        WAIT,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM download_grants WHERE asset_id IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM emails WHERE kind = 'grant_issued' AND status = 'sent'",
        1,
        WAIT,
    )
    .await;
    let listed = tokens(&app, &buyer).await;
    assert_eq!(
        listed.len(),
        1,
        "the placeholder became the grant: {listed:?}"
    );
    assert_eq!(listed[0]["can_download"], true);
    assert_eq!(listed[0]["token"], placeholder_token);
    // A vanished staging object after finalization is fine.
    std::fs::remove_file(app.storage_root.join("uploads/late.zip")).unwrap();
    granary_jobs::catalog::assets::finalize_asset(
        ctx(&app, "finalize_asset"),
        FinalizeAsset {
            asset_id: aid.parse().unwrap(),
            file_path: "uploads/late.zip".into(),
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn downloads_are_counted_atomically_and_served_by_signed_urls() {
    let app = shop().await;
    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    let thief = app.token("thief", "buyer").await;
    let (pid, price) = product(&app, &seller, "dl", "f", json!({"download_max": 5})).await;
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    upload(&app, "uploads/big.zip", &bytes);
    add_asset(&app, &seller, &pid, "uploads/big.zip").await;
    app.wait_for_count(
        "SELECT count(*) FROM digital_assets WHERE status = 'ready'",
        1,
        WAIT,
    )
    .await;
    buy(&app, &buyer, &price).await;
    app.wait_for_count("SELECT count(*) FROM download_grants", 1, WAIT)
        .await;
    let token = tokens(&app, &buyer).await[0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let access = format!("/api/account/downloads/{token}/access/");

    // Another user's token is not found; the owner's answers a URL serving the exact bytes.
    assert_eq!(app.post_as(&thief, &access, &json!({})).await.status, 404);
    let res = app.post_as(&buyer, &access, &json!({})).await;
    assert_eq!(
        (res.status, res.headers["cache-control"].to_str().unwrap()),
        (200, "no-store"),
        "{}",
        res.text
    );
    let url = res.json["url"].as_str().unwrap().to_string();
    assert!(res.json["expires_at"].is_string());
    let file = app.client.get(&url).send().await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "application/zip");
    let got = file.bytes().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&got)),
        hex::encode(Sha256::digest(&bytes))
    );

    // Tampered signature, key or expiry: refused.
    for (from, to) in [
        ("sig=", "sig=00"),
        ("key=assets", "key=uploads"),
        ("exp=", "exp=1"),
    ] {
        let bad = url.replacen(from, to, 1);
        let res = app.send(app.client.get(&bad)).await;
        assert_eq!(
            (res.status, res.error_code()),
            (403, Some("download_not_allowed")),
            "{from}"
        );
    }

    // 50 concurrent accesses on a grant with 4 downloads left: exactly 4 succeed.
    let empty = json!({});
    let attempts =
        futures::future::join_all((0..50).map(|_| app.post_as(&buyer, &access, &empty))).await;
    let ok = attempts.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        4,
        "{:?}",
        attempts.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        attempts
            .iter()
            .filter(|r| r.status != 200)
            .all(|r| r.error_code() == Some("download_not_allowed"))
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT download_count::bigint FROM download_grants"
        )
        .await,
        5
    );
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM download_events").await,
        5
    );
    assert_eq!(tokens(&app, &buyer).await[0]["can_download"], false);

    // Expired: refused.
    sqlx::query(
        "UPDATE download_grants SET max_downloads = NULL, expires_at = now() - interval '1 second'",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    let res = app.post_as(&buyer, &access, &json!({})).await;
    assert_eq!(
        (res.status, res.error_code()),
        (403, Some("download_not_allowed"))
    );
    // Revoked by an operator: refused.
    sqlx::query("UPDATE download_grants SET expires_at = NULL")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let grant: Uuid = sqlx::query_scalar("SELECT id FROM download_grants")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(app.post_as(&buyer, &access, &json!({})).await.status, 200);
    assert!(
        granary_jobs::downloads::revoke_grant(
            &app.db_pool,
            grant,
            &Actor {
                name: "cli:ops".into(),
                reason: Some("chargeback".into())
            }
        )
        .await
        .unwrap()
        .revoked_at
        .is_some()
    );
    assert_eq!(app.post_as(&buyer, &access, &json!({})).await.status, 403);
}

#[tokio::test]
async fn a_missing_storage_configuration_is_503_storage_unavailable() {
    let app = TestApp::builder()
        .with_clerk()
        .env("ASSET_STORAGE_BACKEND", "s3")
        .spawn()
        .await;
    let seller = app.token("seller", "seller").await;
    let p = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "x", "slug": "x"}),
        )
        .await;
    let pid = p.json["id"].as_str().unwrap();
    let res = app
        .post_as(
            &seller,
            &format!("/api/seller/products/{pid}/assets/"),
            &json!({"title": "t", "file_path": "a.zip"}),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (503, Some("storage_unavailable"))
    );
    assert!(
        res.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ASSET_STORAGE_BUCKET")
    );
    let res = app
        .post_as(&seller, "/api/account/downloads/abc/access/", &json!({}))
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (503, Some("storage_unavailable"))
    );
}

#[tokio::test]
async fn a_refund_revokes_only_what_its_order_granted() {
    let app = shop().await;
    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    // Two products granting the same feature, one with a download.
    let (pid_a, price_a) = product(&app, &seller, "a", "pro", json!({})).await;
    let (_, price_b) = product(&app, &seller, "b", "pro", json!({})).await;
    upload(&app, "uploads/a.zip", b"a");
    add_asset(&app, &seller, &pid_a, "uploads/a.zip").await;
    app.wait_for_count(
        "SELECT count(*) FROM digital_assets WHERE status = 'ready'",
        1,
        WAIT,
    )
    .await;
    let mut publics = Vec::new();
    for (i, price) in [&price_a, &price_b].into_iter().enumerate() {
        let order = app
            .post_as(
                &buyer,
                "/api/account/orders/create/",
                &json!({"price_id": price}),
            )
            .await;
        let public_id = order.json["order"]["public_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            app.deliver_stripe(&stripe::checkout_completed(
                &format!("evt_pay_{i}"),
                &public_id,
                1500
            ))
            .await
            .status,
            200
        );
        publics.push(public_id);
    }
    app.wait_for_count(
        "SELECT count(*) FROM orders WHERE status = 'fulfilled'",
        2,
        WAIT,
    )
    .await;
    let features = || async {
        app.get_as(&buyer, "/api/billing/features/?feature=pro")
            .await
            .json["enabled"]
            .clone()
    };
    assert_eq!(features().await, true);
    // Order A's download; order B's product has no file, so B holds a placeholder.
    let listed = tokens(&app, &buyer).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let placeholder = listed
        .iter()
        .find(|g| g["is_placeholder"] == true)
        .expect("B's placeholder");
    assert_eq!(placeholder["order_public_id"], publics[1].as_str());
    let token = listed
        .iter()
        .find(|g| g["can_download"] == true)
        .expect("A's grant")["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.post_as(
            &buyer,
            &format!("/api/account/downloads/{token}/access/"),
            &json!({})
        )
        .await
        .status,
        200
    );

    // Refund order B (no download, only its placeholder): the feature stays, granted by
    // order A.
    app.deliver_stripe(&stripe::charge_refunded("evt_ref_1", &publics[1], 1500))
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE revoked_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM download_grants WHERE revoked_at IS NOT NULL AND asset_id IS NULL",
        1,
        WAIT,
    )
    .await;
    assert_eq!(features().await, true);
    assert_eq!(
        app.post_as(
            &buyer,
            &format!("/api/account/downloads/{token}/access/"),
            &json!({})
        )
        .await
        .status,
        200
    );

    // Refund order A: the feature goes, and its download stops working.
    app.deliver_stripe(&stripe::charge_refunded("evt_ref_0", &publics[0], 1500))
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE revoked_at IS NOT NULL",
        2,
        WAIT,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM download_grants WHERE revoked_at IS NOT NULL",
        2,
        WAIT,
    )
    .await;
    assert_eq!(features().await, false);
    let res = app
        .post_as(
            &buyer,
            &format!("/api/account/downloads/{token}/access/"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (403, Some("download_not_allowed"))
    );
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM orders ORDER BY created_at")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["refunded", "refunded"]);
    let _ = STRIPE_SECRET;
}

#[tokio::test]
async fn the_fs_store_serves_only_regular_files_and_a_seller_only_their_own_uploads() {
    let app = shop().await;
    let seller = app.token("seller", "seller").await;
    let other = app.token("other_seller", "seller").await;
    let (pid, _) = product(&app, &seller, "links", "f", json!({})).await;
    let (other_pid, _) = product(&app, &other, "theirs", "g", json!({})).await;

    // A link to a host file, a link to a host folder, and a FIFO, each named as an upload.
    std::fs::create_dir_all(app.storage_root.join("uploads")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", app.storage_root.join("uploads/passwd.zip")).unwrap();
    std::os::unix::fs::symlink("/etc", app.storage_root.join("uploads/etc")).unwrap();
    let fifo = app.storage_root.join("uploads/pipe.zip");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for key in [
        "uploads/passwd.zip",
        "uploads/etc/passwd",
        "uploads/pipe.zip",
    ] {
        add_asset(&app, &seller, &pid, key).await;
    }
    // Each is refused with the reason on the asset, promptly (the FIFO does not block a
    // worker), and nothing of the host reaches the permanent store.
    app.wait_for_count(
        "SELECT count(*) FROM digital_assets WHERE last_error LIKE '%only regular files are served%'",
        3,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM digital_assets WHERE status = 'ready'"
        )
        .await,
        0
    );
    assert!(!app.storage_root.join("assets").exists());

    // A regular upload is the first registrant's: another seller cannot name it, nor any
    // finalized object.
    ready_asset(
        &app,
        &seller,
        &pid,
        "uploads/mine.zip",
        b"seller one's bytes",
        1,
    )
    .await;
    let key: String =
        sqlx::query_scalar("SELECT storage_key FROM digital_assets WHERE status = 'ready'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    for path in ["uploads/mine.zip", key.as_str()] {
        let res = app
            .post_as(
                &other,
                &format!("/api/seller/products/{other_pid}/assets/"),
                &json!({"title": "Mine now", "file_path": path}),
            )
            .await;
        assert_eq!(res.status, 422, "{path}: {}", res.text);
        assert!(
            res.json["error"]["fields"]["file_path"].is_array(),
            "{path}"
        );
    }
    // The same seller may name their own upload again (a second product, a fix).
    let again = app
        .post_as(
            &seller,
            &format!("/api/seller/products/{pid}/assets/"),
            &json!({"title": "Again", "file_path": "uploads/mine.zip"}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
}

#[tokio::test]
async fn a_signed_fs_url_stops_working_when_its_grant_is_revoked() {
    let app = shop().await;
    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    let (pid, price) = product(&app, &seller, "rv", "f", json!({})).await;
    ready_asset(&app, &seller, &pid, "uploads/rv.zip", b"the bytes", 1).await;
    buy(&app, &buyer, &price).await;
    app.wait_for_count("SELECT count(*) FROM download_grants", 1, WAIT)
        .await;
    let token = tokens(&app, &buyer).await[0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .post_as(
            &buyer,
            &format!("/api/account/downloads/{token}/access/"),
            &json!({}),
        )
        .await;
    let url = res.json["url"].as_str().unwrap().to_string();
    assert_eq!(app.send(app.client.get(&url)).await.status, 200);
    // The operator revokes the grant; the URL signed before is refused at once.
    let admin = app.token("admin", "admin").await;
    let grant: Uuid = sqlx::query_scalar("SELECT id FROM download_grants")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let revoked = app
        .post_as(
            &admin,
            &format!("/api/admin/grants/{grant}/revoke/"),
            &json!({"reason": "chargeback"}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let res = app.send(app.client.get(&url)).await;
    assert_eq!(
        (res.status, res.error_code()),
        (403, Some("download_not_allowed"))
    );
    // And the grant cannot be swapped for another in a signed URL.
    let other = url.replace(&grant.to_string(), &Uuid::new_v4().to_string());
    assert_eq!(app.send(app.client.get(&other)).await.status, 403);
}
