//! The operator console in a real browser: headless Chromium (Debian's package) through
//! chromedriver, against the `granary-api` binary. The screenshots in docs/operations.md come from here.

use std::time::Duration;

use granary_tests::{TestApp, browser::Browser, count, resend::Answer, shop::sell_and_buy};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test]
async fn an_operator_finds_a_failed_receipt_by_its_error_and_requeues_it_in_the_browser() {
    let app = TestApp::webhooks()
        .with_clerk()
        .with_resend()
        .with_worker()
        .as_process()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .spawn()
        .await;
    let resend = app.resend.as_ref().unwrap();
    // Resend refuses the receipt for good: 422, so the job fails at once.
    resend.script([Answer::Invalid(
        "The mailbox for this address is disabled (case 7731).".into(),
    )]);
    let public_id = sell_and_buy(&app, "buyer").await;
    let buyer = app.token("buyer", "buyer").await;
    let paid = app
        .post_as(
            &buyer,
            &format!("/api/account/orders/{public_id}/confirm/"),
            &json!({"provider": "manual"}),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE queue = 'send_email' AND state = 'failed'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(resend.delivered_count(), 0);

    let browser = Browser::start().await;
    browser.goto(&app.console_login_link().await).await;
    browser.wait_heading("Overview").await;
    let cookie = browser
        .client
        .get_named_cookie("granary_console")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()),
        Some("Strict".to_string())
    );
    assert!(browser.text().await.contains("failed or cancelled"));
    browser.screenshot("overview").await;

    // Jobs: search by the error's text.
    browser.goto(&app.url("/console/jobs")).await;
    browser.wait_heading("Jobs").await;
    browser.fill("input[name=q]", "case 7731").await;
    browser.click_button("form.filters", "Filter").await;
    browser
        .find("table.jobs tbody a[href^='/console/jobs/']")
        .await;
    let rows = browser
        .client
        .find_all(fantoccini::Locator::Css("table.jobs tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one job carries that error");
    let row = rows[0].text().await.unwrap();
    assert!(
        row.contains("send_email") && row.contains("failed"),
        "{row}"
    );
    browser.screenshot("jobs").await;

    // Its page: every attempt with the whole error, then Requeue with a reason.
    browser
        .find("table.jobs tbody a[href^='/console/jobs/']")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_heading("Job ").await;
    let page = browser.text().await;
    assert!(
        page.contains("discarded") && page.contains("case 7731"),
        "{page}"
    );
    browser
        .fill(
            ".actions input[name=reason]",
            "the customer re-enabled their mailbox",
        )
        .await;
    browser.click_button(".actions", "Requeue").await;
    browser.wait_heading("Job ").await;

    // The receipt goes out.
    app.wait_for_count("SELECT count(*) FROM emails WHERE status = 'sent'", 1, WAIT)
        .await;
    assert_eq!(resend.delivered_count(), 1);
    let audit: (String, Option<String>) =
        sqlx::query_as("SELECT actor, reason FROM operator_actions WHERE action = 'job.requeue'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        (
            "console:cli:night-operator".into(),
            Some("the customer re-enabled their mailbox".into())
        )
    );

    // The order's page draws the whole story.
    browser
        .goto(&app.url(&format!("/console/orders/{public_id}")))
        .await;
    browser.wait_heading("Order ").await;
    let story = browser.text().await;
    for step in [
        "order.created",
        "order.paid",
        "job.attempt",
        "email.sent",
        "operator.job.requeue",
    ] {
        assert!(story.contains(step), "the timeline lacks {step}: {story}");
    }
    browser.screenshot("order").await;
    browser.close().await;
}

#[tokio::test]
async fn a_webhooks_payload_is_shown_and_a_failed_one_replayed_in_the_browser() {
    let app = TestApp::webhooks().with_worker().as_process().spawn().await;
    let shop = granary_tests::shop::Shop::seed(&app.db_pool).await;
    let public_id = shop.orders(&app.db_pool, "wh", 1, false).await.remove(0);
    // Paid 100 for an order of 500: applying it fails, visibly.
    let mut event = granary_tests::stripe::checkout_completed("evt_short", &public_id, 500);
    event["data"]["object"]["amount_total"] = json!(100);
    assert_eq!(app.deliver_stripe(&event).await.status, 200);
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'failed'",
        1,
        WAIT,
    )
    .await;

    let browser = Browser::start().await;
    browser.goto(&app.console_login_link().await).await;
    browser.wait_heading("Overview").await;
    browser
        .goto(&app.url("/console/webhooks?status=failed"))
        .await;
    browser.wait_heading("Webhooks").await;
    browser
        .find("table tbody a[href^='/console/webhooks/']")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_heading("Webhook ").await;
    let page = browser.text().await;
    assert!(
        page.contains("paid 100 USD for an order of 500 USD"),
        "{page}"
    );
    // The exact stored body, and the signature redacted.
    let body = browser.find("pre.body").await.text().await.unwrap();
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM webhook_events WHERE event_id = 'evt_short'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(body, String::from_utf8(stored).unwrap());
    let headers = browser.find("table.headers").await.text().await.unwrap();
    assert!(
        headers.contains("stripe-signature") && headers.contains("[redacted"),
        "{headers}"
    );
    assert!(
        !headers.contains("v1="),
        "no signature leaves the server: {headers}"
    );
    browser.screenshot("webhook").await;

    // The cause is fixed (the order's total was wrong), then the event is replayed.
    sqlx::query("UPDATE orders SET subtotal_cents = 100, total_cents = 100 WHERE public_id = $1")
        .bind(&public_id)
        .execute(&app.db_pool)
        .await
        .unwrap();
    browser
        .fill(
            ".actions input[name=reason]",
            "order total corrected by the seller",
        )
        .await;
    browser.click_button(".actions", "Replay").await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_short' AND status = 'processed'",
        1,
        WAIT,
    )
    .await;
    app.wait_for_count(
        &format!(
            "SELECT count(*) FROM orders WHERE public_id = '{public_id}' AND paid_at IS NOT NULL"
        ),
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM operator_actions WHERE action = 'webhook.replay' AND reason = 'order total corrected by the seller' AND actor = 'console:cli:night-operator'"
        )
        .await,
        1
    );
    browser.close().await;
}

#[tokio::test]
async fn the_console_refuses_a_visitor_who_has_not_logged_in() {
    let app = TestApp::builder().as_process().spawn().await;
    let browser = Browser::start().await;
    for page in [
        "/console/",
        "/console/jobs?state=failed",
        "/console/webhooks",
        "/console/doctor",
    ] {
        browser.goto(&app.url(page)).await;
        browser.wait_heading("Log in to the console").await;
        assert!(
            browser.url().await.ends_with("/console/login-help"),
            "{page}"
        );
        assert!(
            browser
                .client
                .get_named_cookie("granary_console")
                .await
                .is_err()
        );
    }
    // A made-up link does not open a session either.
    browser
        .goto(&app.url(
            "/console/login?token=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ))
        .await;
    browser.wait_heading("This login link cannot be used").await;
    browser.goto(&app.url("/console/jobs")).await;
    browser.wait_heading("Log in to the console").await;
    browser.close().await;
}

#[tokio::test]
async fn every_other_page_and_action_works_in_the_browser() {
    let app = TestApp::webhooks()
        .with_clerk()
        .with_resend()
        .with_worker()
        .as_process()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .spawn()
        .await;
    // A job due in an hour, to cancel and requeue.
    let later = granary_jobs::queue::NewJob::of(
        &granary_jobs::queue::probe::Probe::default(),
        Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .unwrap();
    let later_id = later.id.clone();
    let mut conn = app.db_pool.acquire().await.unwrap();
    granary_jobs::queue::enqueue::insert(&mut conn, &[later], granary_jobs::queue::Wake::AtCommit)
        .await
        .unwrap();
    drop(conn);
    // A paid order whose receipt Resend refused; a payment event that failed to apply.
    let shop = granary_tests::shop::Shop::seed(&app.db_pool).await;
    app.resend
        .as_ref()
        .unwrap()
        .script([Answer::Invalid("Invalid `to` field.".into())]);
    let public_id = sell_and_buy(&app, "buyer").await;
    let buyer = app.token("buyer", "buyer").await;
    app.post_as(
        &buyer,
        &format!("/api/account/orders/{public_id}/confirm/"),
        &json!({"provider": "manual"}),
    )
    .await;
    let short_order = shop.orders(&app.db_pool, "short", 1, false).await.remove(0);
    let mut event = granary_tests::stripe::checkout_completed("evt_short_2", &short_order, 500);
    event["data"]["object"]["amount_total"] = json!(100);
    assert_eq!(app.deliver_stripe(&event).await.status, 200);
    app.wait_for_count(
        "SELECT (SELECT count(*) FROM webhook_events WHERE status = 'failed') + (SELECT count(*) FROM jobs WHERE queue = 'send_email' AND state = 'failed')",
        2,
        WAIT,
    )
    .await;

    let browser = Browser::start().await;
    browser.goto(&app.console_login_link().await).await;
    browser.wait_heading("Overview").await;

    // Doctor.
    browser.goto(&app.url("/console/doctor")).await;
    browser.wait_heading("Doctor").await;
    let doctor = browser.text().await;
    assert!(
        doctor.contains("config") && doctor.contains("fix"),
        "{doctor}"
    );

    // Cancel one job, then requeue every cancelled job matching a filter.
    browser
        .goto(&app.url(&format!("/console/jobs/{later_id}")))
        .await;
    browser.wait_heading("Job ").await;
    browser
        .fill(".actions input[name=reason]", "not needed tonight")
        .await;
    browser.click_button(".actions", "Cancel").await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM jobs WHERE id = '{later_id}' AND state = 'cancelled'"),
        1,
        WAIT,
    )
    .await;
    browser
        .goto(&app.url("/console/jobs?state=cancelled&kind=probe"))
        .await;
    browser.wait_heading("Jobs").await;
    browser
        .fill("form.bulk input[name=reason]", "needed after all")
        .await;
    browser.click_button("form.bulk", "Requeue").await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM jobs WHERE id = '{later_id}' AND state <> 'cancelled'"),
        1,
        WAIT,
    )
    .await;

    // Requeue the order's failed receipt from its page.
    browser
        .goto(&app.url(&format!("/console/orders/{public_id}")))
        .await;
    browser.wait_heading("Order ").await;
    browser
        .fill(".actions input[name=reason]", "address fixed")
        .await;
    browser.click_button(".actions", "Requeue").await;
    app.wait_for_count("SELECT count(*) FROM emails WHERE status = 'sent'", 1, WAIT)
        .await;

    // Replay every failed event of the last day, once the cause is fixed.
    sqlx::query("UPDATE orders SET subtotal_cents = 100, total_cents = 100 WHERE public_id = $1")
        .bind(&short_order)
        .execute(&app.db_pool)
        .await
        .unwrap();
    browser.goto(&app.url("/console/webhooks")).await;
    browser.wait_heading("Webhooks").await;
    browser
        .fill("form.bulk input[name=reason]", "totals corrected")
        .await;
    browser.click_button("form.bulk", "Replay").await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_short_2' AND status = 'processed'",
        1,
        WAIT,
    )
    .await;

    let audited: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT action, reason FROM operator_actions WHERE actor = 'console:cli:night-operator' ORDER BY id",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    for (action, reason) in [
        ("job.cancel", "not needed tonight"),
        ("job.requeue", "needed after all"),
        ("order.requeue_failed_jobs", "address fixed"),
        ("webhook.replay", "totals corrected"),
    ] {
        assert!(
            audited.contains(&(action.to_string(), Some(reason.to_string()))),
            "{action} is not audited with its reason: {audited:?}"
        );
    }

    // Log out: the session ends.
    browser.click_button("form.logout", "Log out").await;
    browser.wait_heading("Log in to the console").await;
    browser.goto(&app.url("/console/")).await;
    browser.wait_heading("Log in to the console").await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM console_sessions WHERE ended_at IS NOT NULL"
        )
        .await,
        1
    );
    browser.close().await;
}
