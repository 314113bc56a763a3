//! One grep follows an order: every job's span carries the ids it concerns (`order_id`,
//! `event_id` for the stored webhook row, `provider_event_id` for the provider's id,
//! `email_id`), so the lines of the payment webhook's job, the fulfillment and the receipt all
//! name the order. The log subscriber is this test's own (scoped to its thread, which runs the
//! in-process worker: the test runtime is single-threaded), so other tests' lines never mix in.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use granary_tests::{TestApp, shop::Shop, wait_for_count};
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

/// The log, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn one_grep_for_the_order_follows_it_from_webhook_to_receipt() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_env_filter("granary_jobs=info,granary_queue=info")
        .with_ansi(false)
        .finish();
    let _scoped = ::tracing::subscriber::set_default(subscriber);
    let app = TestApp::webhooks().with_worker().spawn().await;
    let shop = Shop::seed(&app.db_pool).await;
    let public_id = shop
        .orders(&app.db_pool, "traced", 1, false)
        .await
        .remove(0);
    let order: Uuid = sqlx::query_scalar("SELECT id FROM orders WHERE public_id = $1")
        .bind(&public_id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let paid = granary_tests::stripe::checkout_completed("evt_traced_1", &public_id, 500);
    assert_eq!(app.deliver_stripe(&paid).await.status, 200);
    // The receipt's job is done (no Resend key here: it goes to the outbox).
    wait_for_count(
        &app.db_pool,
        &format!(
            "SELECT count(*) FROM jobs j JOIN job_refs r ON r.job_id = j.id \
             WHERE r.queue = 'send_email' AND r.order_id = '{order}' AND j.state = 'completed'"
        ),
        1,
        Duration::from_secs(25),
    )
    .await;

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let about_order: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("order_id={order}")))
        .collect();
    for queue in ["process_webhook_event", "fulfill_order", "send_email"] {
        assert!(
            about_order
                .iter()
                .any(|l| l.contains(&format!("queue=\"{queue}\"")) && l.contains("job succeeded")),
            "no `job succeeded` line of {queue} names order_id={order}:\n{}",
            about_order.join("\n")
        );
    }
    let webhook_line = about_order
        .iter()
        .find(|l| l.contains("queue=\"process_webhook_event\""))
        .unwrap();
    assert!(
        webhook_line.contains("provider_event_id=\"evt_traced_1\"")
            && webhook_line.contains("event_id="),
        "{webhook_line}"
    );
    assert!(
        about_order
            .iter()
            .any(|l| l.contains("queue=\"send_email\"") && l.contains("email_id=")),
        "{}",
        about_order.join("\n")
    );
}
