//! The operator surface: each command through the real `granary-worker` binary, each route
//! over HTTP, the same answers from both.

use std::time::Duration;

use granary_tests::{
    TestApp, count,
    resend::Answer,
    shop::sell_and_buy,
    worker::{cli, cli_errors},
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

async fn shop() -> TestApp {
    TestApp::shop()
        .env("JOB_BACKOFF_BASE_MS", "20")
        .env("JOB_BACKOFF_CAP_SECONDS", "1")
        .spawn()
        .await
}

#[tokio::test]
async fn a_failed_fulfillment_is_visible_requeued_by_order_and_completes() {
    let app = shop().await;
    let admin = app.token("admin", "admin").await;
    // Resend is down for longer than send_email's 12 attempts.
    app.resend
        .as_ref()
        .unwrap()
        .script(std::iter::repeat_n(Answer::ServerError, 12));
    let public_id = sell_and_buy(&app, "buyer").await;
    let buyer = app.token("buyer", "buyer").await;
    app.post_as(
        &buyer,
        &format!("/api/account/orders/{public_id}/confirm/"),
        &json!({"provider": "manual"}),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM job_attempts WHERE queue = 'send_email' AND outcome = 'failed'",
        1,
        WAIT,
    )
    .await;

    // The CLI and the HTTP route show the same failed job, with its attempt errors.
    let env = app.env_vars();
    let (code, out) = cli(&env, &["jobs", "list", "--state", "failed", "--json"]).await;
    assert_eq!(code, 0);
    let listed = json_of(&out);
    let http = app.get_as(&admin, "/api/admin/jobs/?state=failed").await;
    assert_eq!(http.status, 200);
    assert_eq!(listed["jobs"], http.json["jobs"]);
    let job = &listed["jobs"][0];
    assert_eq!(
        (job["kind"].as_str(), job["order"].as_str()),
        (Some("send_email"), Some(public_id.as_str()))
    );
    assert!(job["last_error"].as_str().unwrap().contains("Resend 500"));
    let id = job["id"].as_str().unwrap();
    let (_, shown) = cli(&env, &["jobs", "show", id, "--json"]).await;
    let shown = json_of(&shown);
    assert_eq!(shown["attempt_history"].as_array().unwrap().len(), 12);
    assert_eq!(
        shown,
        app.get_as(&admin, &format!("/api/admin/jobs/{id}/"))
            .await
            .json
    );
    // The table form is for people.
    let (_, table) = cli(&env, &["jobs", "show", id]).await;
    assert!(
        table.contains("OUTCOME") && table.contains("Resend 500"),
        "{table}"
    );

    // Requeue every failed job of the order from the command line: the email goes out.
    let (code, out) = cli(
        &env,
        &[
            "orders",
            "requeue",
            &public_id,
            "--reason",
            "Resend outage over",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_of(&out)["requeued"], json!([id]));
    app.wait_for_count("SELECT count(*) FROM emails WHERE status = 'sent'", 1, WAIT)
        .await;
    let audit: (String, String, Option<String>) =
        sqlx::query_as("SELECT actor, action, reason FROM operator_actions")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        (
            "cli:night-operator".into(),
            "order.requeue_failed_jobs".into(),
            Some("Resend outage over".into())
        )
    );

    // Over HTTP the same action is audited with the admin's id; nothing is left to requeue.
    let res = app
        .post_as(
            &admin,
            &format!("/api/admin/orders/{public_id}/requeue/"),
            &json!({"reason": "double check"}),
        )
        .await;
    assert_eq!((res.status, res.json["requeued"].clone()), (200, json!([])));
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM operator_actions WHERE actor = 'admin:admin'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_rejected_webhook_shows_with_its_reason_in_the_list_and_in_doctor() {
    let app = shop().await;
    let admin = app.token("admin", "admin").await;
    let body = br#"{"type":"user.created","data":{"id":"u"}}"#.to_vec();
    let headers = granary_tests::sign::svix_headers(
        "whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IHNlY3JldA==",
        "msg_wrong",
        granary_tests::sign::now(),
        &body,
    );
    let mut req = app.client.post(app.url("/api/webhooks/clerk/"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    assert_eq!(app.send(req.body(body)).await.status, 401);

    let env = app.env_vars();
    let (_, out) = cli(
        &env,
        &["webhooks", "list", "--status", "rejected", "--json"],
    )
    .await;
    let listed = json_of(&out);
    assert_eq!(
        listed["webhooks"][0]["rejection_reason"],
        "signature_mismatch"
    );
    assert_eq!(
        listed["webhooks"],
        app.get_as(&admin, "/api/admin/webhooks/?status=rejected")
            .await
            .json["webhooks"]
    );
    let id = listed["webhooks"][0]["id"].as_str().unwrap();
    let shown = app
        .get_as(&admin, &format!("/api/admin/webhooks/{id}/"))
        .await
        .json;
    assert!(
        shown["headers"]["svix-signature"]
            .as_str()
            .unwrap()
            .starts_with("[redacted"),
        "signatures are redacted: {}",
        shown["headers"]
    );
    assert_eq!(
        shown["body"],
        r#"{"type":"user.created","data":{"id":"u"}}"#
    );

    let (code, report) = cli(&env, &["doctor"]).await;
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("signature mismatch")
            && report.contains(
                "the secret in CLERK_WEBHOOK_SIGNING_SECRET does not match the one that signed"
            ),
        "{report}"
    );
}

#[tokio::test]
async fn replaying_a_stored_event_from_the_cli_applies_it_once() {
    let app = shop().await;
    app.deliver_clerk("msg_u", &json!({"type": "user.created", "timestamp": 1, "data": {"id": "user_r", "email_addresses": []}})).await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'processed'",
        1,
        WAIT,
    )
    .await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM webhook_events")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let (code, out) = cli(
        &app.env_vars(),
        &["webhooks", "replay", &id.to_string(), "--json"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE process_attempts = 2 AND status = 'processed'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM profiles WHERE clerk_user_id = 'user_r'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM operator_actions WHERE action = 'webhook.replay'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_timeline_of_a_refunded_order_lists_every_step_in_order() {
    let app = shop().await;
    let admin = app.token("admin", "admin").await;
    let public_id = sell_and_buy(&app, "buyer").await;
    let pay = json!({"id": "evt_pay", "type": "checkout.session.completed", "created": 1, "data": {"object": {
        "id": "cs_t", "client_reference_id": public_id, "payment_status": "paid", "mode": "payment", "amount_total": 900, "currency": "eur", "payment_intent": "pi_t"}}});
    app.deliver_stripe(&pay).await;
    app.wait_for_count("SELECT count(*) FROM emails WHERE status = 'sent'", 1, WAIT)
        .await;
    let refund = json!({"id": "evt_ref", "type": "charge.refunded", "created": 2, "data": {"object": {
        "id": "ch_t", "payment_intent": "pi_t", "amount": 900, "amount_refunded": 900, "refunded": true, "currency": "eur"}}});
    app.deliver_stripe(&refund).await;
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE revoked_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state <> 'completed'",
        0,
        WAIT,
    )
    .await;

    let (_, out) = cli(
        &app.env_vars(),
        &["orders", "timeline", &public_id, "--json"],
    )
    .await;
    let timeline = json_of(&out);
    assert_eq!(
        timeline,
        app.get_as(&admin, &format!("/api/admin/orders/{public_id}/timeline/"))
            .await
            .json
    );
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let first = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k} missing from {kinds:?}"))
    };
    let steps = [
        "order.created",
        "webhook.received",
        "payment.payment",
        "order.paid",
        "job.enqueued",
        "job.attempt",
        "entitlement.granted",
        "email.queued",
        "email.sent",
        "payment.refund",
        "entitlement.revoked",
    ];
    let positions: Vec<usize> = steps.iter().map(|s| first(s)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "steps out of order: {kinds:?}"
    );
    assert!(
        kinds.contains(&"order.fulfilled") && kinds.contains(&"order.refunded"),
        "{kinds:?}"
    );
    let ats: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap())
        .collect();
    let mut sorted = ats.clone();
    sorted.sort();
    assert_eq!(ats, sorted, "in time order");
    // The table form reads as a story.
    let (_, table) = cli(&app.env_vars(), &["orders", "timeline", &public_id]).await;
    assert!(table.contains("payment.refund"), "{table}");
}

#[tokio::test]
async fn doctor_explains_a_broken_setup_and_passes_a_healthy_one() {
    let app = shop().await;
    let mut env = app.env_vars();
    let (code, report) = cli(&env, &["doctor"]).await;
    assert_eq!(code, 0, "a healthy setup: {report}");
    assert!(report.contains("all good"), "{report}");

    // An invisible product (draft) and a broken storage configuration.
    let seller = app.token("seller", "seller").await;
    app.post_as(
        &seller,
        "/api/seller/products/",
        &json!({"name": "Hidden", "slug": "hidden", "visibility": "draft"}),
    )
    .await;
    env.retain(|(k, _)| k != "ASSET_STORAGE_BACKEND");
    env.push(("ASSET_STORAGE_BACKEND".into(), "s3".into()));
    let (code, out) = cli(&env, &["doctor", "--json"]).await;
    assert_eq!(code, 1);
    let report = json_of(&out);
    let find = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))
            .clone()
    };
    // Who may sell is stated, with how to change it.
    let sellers = find("seller access");
    assert!(
        sellers["detail"]
            .as_str()
            .unwrap()
            .starts_with("SELLER_ACCESS=role")
            && sellers["fix"].as_str().unwrap().contains("users set-role"),
        "{sellers}"
    );
    let storage = find("storage");
    assert_eq!(storage["level"], "fail");
    assert!(
        storage["detail"]
            .as_str()
            .unwrap()
            .contains("ASSET_STORAGE_BUCKET")
            && storage["fix"]
                .as_str()
                .unwrap()
                .contains("ASSET_STORAGE_S3_ACCESS_KEY_ID"),
        "{storage}"
    );
    let product = find("product hidden");
    assert!(
        product["detail"]
            .as_str()
            .unwrap()
            .contains("not published")
            && product["detail"]
                .as_str()
                .unwrap()
                .contains("no active price"),
        "{product}"
    );

    // A malformed secret is a configuration failure, named with its fix.
    env.push(("CLERK_WEBHOOK_SIGNING_SECRET".into(), "not-a-secret".into()));
    let (code, out) = cli(&env, &["doctor"]).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("CLERK_WEBHOOK_SIGNING_SECRET") && out.contains("whsec_"),
        "{out}"
    );
}

#[tokio::test]
async fn admin_routes_refuse_buyers_and_sellers() {
    let app = TestApp::builder().with_clerk().spawn().await;
    let buyer = app.token("b", "buyer").await;
    let seller = app.token("s", "seller").await;
    let admin = app.token("a", "admin").await;
    for path in ["/api/admin/jobs/", "/api/admin/webhooks/"] {
        for token in [&buyer, &seller] {
            let res = app.get_as(token, path).await;
            assert_eq!(
                (res.status, res.error_code()),
                (403, Some("forbidden")),
                "{path}"
            );
        }
        assert_eq!(app.get_as(&admin, path).await.status, 200);
        assert_eq!(app.get(path).await.status, 401);
    }
    let res = app
        .post_as(&seller, "/api/admin/orders/ord_x/requeue/", &json!({}))
        .await;
    assert_eq!(res.status, 403);
    assert_eq!(
        app.post_as(&admin, "/api/admin/orders/ord_x/requeue/", &json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        app.post_as(
            &admin,
            "/api/admin/jobs/01HNOSUCHJOB0000000000000A/requeue/",
            &json!({})
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn time_spans_and_bounds_are_checked_never_a_panic_or_a_500() {
    let app = TestApp::builder().with_clerk().spawn().await;
    let env = app.env_vars();
    let grant = uuid::Uuid::new_v4().to_string();
    // Spans past ten years, on every command that takes one: a clear error, never exit 101.
    for args in [
        vec!["jobs", "list", "--since", "100000000d"],
        vec!["webhooks", "list", "--since", "100000000d"],
        vec!["grants", "reset", &grant, "--extend", "100000000d"],
        vec![
            "grants",
            "reset",
            &grant,
            "--extend",
            "18446744073709551615s",
        ],
    ] {
        let (code, _, out) = cli_errors(&env, &args).await;
        assert!(code != 0 && code != 101, "{args:?}: exit {code}: {out}");
        assert!(out.contains("longer than 3650 days"), "{args:?}: {out}");
    }
    // An unknown state or status is refused, not an empty list.
    for args in [
        vec!["jobs", "list", "--state", "bogus"],
        vec!["webhooks", "list", "--status", "bogus"],
    ] {
        let (code, _, out) = cli_errors(&env, &args).await;
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains("bogus"), "{args:?}: {out}");
    }
    // A validation error names its field.
    let (code, _, out) = cli_errors(&env, &["grants", "reset", &grant, "--add", "2000000"]).await;
    assert_ne!(code, 0);
    assert!(out.contains("add: 0 to 1000000"), "{out}");

    // Over HTTP: the extension is bounded (was a 500 "interval out of range").
    let admin = app.token("admin_b", "admin").await;
    let res = app
        .post_as(
            &admin,
            &format!("/api/admin/grants/{grant}/reset/"),
            &json!({"extend_seconds": 1_000_000_000_000u64, "reason": "probe"}),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (422, Some("validation_failed")),
        "{}",
        res.text
    );
    assert!(res.text.contains("extend_seconds"), "{}", res.text);
}
