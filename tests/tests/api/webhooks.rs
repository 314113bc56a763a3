//! Webhook ingestion and application, over real HTTP with signatures computed exactly as Svix
//! and Stripe compute them.

use std::time::Duration;

use granary_jobs::platform::audit::Actor;
use granary_tests::{
    TestApp, count,
    sign::{self, CLERK_SECRET, STRIPE_SECRET},
    wait_for_count,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// A bad delivery: name, headers, body, expected status, expected code.
type BadCase = (
    &'static str,
    Vec<(&'static str, String)>,
    Vec<u8>,
    u16,
    &'static str,
);

fn user_event(ty: &str, user: &str, ts_ms: i64, email: &str, role: Option<&str>) -> Value {
    json!({
        "type": ty, "object": "event", "timestamp": ts_ms,
        "data": {
            "id": user, "first_name": "Ada", "last_name": "L",
            "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_0", "email_address": "old@example.com"}, {"id": "idn_1", "email_address": email}],
            "public_metadata": role.map(|r| json!({"role": r})).unwrap_or(json!({})),
        }
    })
}

fn item_event(
    ty: &str,
    user: &str,
    item: &str,
    status: &str,
    ts_ms: i64,
    period_end_ms: i64,
) -> Value {
    json!({
        "type": ty, "object": "event", "timestamp": ts_ms,
        "data": {
            "id": item, "status": status, "payer": {"user_id": user},
            "plan": {"id": "cplan_pro", "slug": "pro", "features": [{"slug": "ai_coach"}, {"slug": "priority_support"}]},
            "period_start": ts_ms, "period_end": period_end_ms,
        }
    })
}

async fn rejected_reasons(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT rejection_reason FROM webhook_events WHERE status = 'rejected' ORDER BY received_at")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_valid_clerk_delivery_is_stored_with_one_job_and_duplicates_store_nothing() {
    let app = TestApp::webhooks().spawn().await;
    let body = user_event(
        "user.created",
        "user_1",
        1_700_000_000_000,
        "ada@example.com",
        None,
    );
    let res = app.deliver_clerk("msg_1", &body).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.json["duplicate"], false);
    // The exact bytes are kept.
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM webhook_events WHERE event_id = 'msg_1'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(stored, serde_json::to_vec(&body).unwrap());

    // The same delivery ten times at once: one row, one job, every answer 2xx.
    let raw = serde_json::to_vec(
        &json!({"type": "user.updated", "timestamp": 1, "data": {"id": "user_2"}}),
    )
    .unwrap();
    let headers = sign::svix_headers(CLERK_SECRET, "msg_dup", sign::now(), &raw);
    let sends = (0..10).map(|_| {
        let mut req = app.client.post(app.url("/api/webhooks/clerk/"));
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        app.send(req.body(raw.clone()))
    });
    let answers = futures::future::join_all(sends).await;
    assert!(
        answers.iter().all(|r| r.status == 200),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        answers
            .iter()
            .filter(|r| r.json["duplicate"] == false)
            .count(),
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM webhook_events WHERE event_id = 'msg_dup'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM jobs WHERE queue = 'process_webhook_event'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn every_bad_delivery_gets_the_right_status_and_a_rejected_row_with_its_reason() {
    let app = TestApp::webhooks().spawn().await;
    let body = br#"{"type":"user.created","timestamp":1,"data":{"id":"user_x"}}"#.to_vec();
    let now = sign::now();
    let good = sign::svix_headers(CLERK_SECRET, "msg_bad", now, &body);
    let good_sig = good[2].1.clone();
    let clerk = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = app.client.post(app.url("/api/webhooks/clerk/"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        app.send(req.body(body))
    };
    let wrong_secret = sign::svix_headers(
        "whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IHNlY3JldA==",
        "msg_bad",
        now,
        &body,
    );
    let mut altered = body.clone();
    altered[10] ^= 1;
    let stale = sign::svix_headers(CLERK_SECRET, "msg_bad", now - 400, &body);
    let future = sign::svix_headers(CLERK_SECRET, "msg_bad", now + 400, &body);
    let truncated = vec![
        good[0].clone(),
        good[1].clone(),
        ("svix-signature", good_sig[..good_sig.len() - 4].to_string()),
    ];
    let cases: Vec<BadCase> = vec![
        (
            "wrong secret",
            wrong_secret,
            body.clone(),
            401,
            "signature_mismatch",
        ),
        (
            "one changed body byte",
            good.clone(),
            altered,
            401,
            "signature_mismatch",
        ),
        (
            "stale timestamp",
            stale,
            body.clone(),
            401,
            "stale_timestamp",
        ),
        (
            "future timestamp",
            future,
            body.clone(),
            401,
            "future_timestamp",
        ),
        (
            "missing headers",
            vec![],
            body.clone(),
            400,
            "missing_signature_headers",
        ),
        (
            "truncated signature",
            truncated,
            body.clone(),
            401,
            "signature_mismatch",
        ),
        (
            "malformed JSON",
            sign::svix_headers(CLERK_SECRET, "msg_json", now, b"{not json"),
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
    ];
    for (name, headers, body, status, code) in &cases {
        let res = clerk(headers.clone(), body.clone()).await;
        assert_eq!(res.status, *status, "{name}: {}", res.text);
        assert_eq!(res.error_code(), Some(*code), "{name}");
    }
    let reasons = rejected_reasons(&app.db_pool).await;
    assert_eq!(
        reasons,
        cases.iter().map(|c| c.4.to_string()).collect::<Vec<_>>()
    );
    let headers: Value = sqlx::query_scalar(
        "SELECT headers FROM webhook_events WHERE status = 'rejected' ORDER BY received_at LIMIT 1",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(
        headers["svix-id"], "msg_bad",
        "headers are kept for the audit"
    );

    // Secret rotation: several signatures, one of them good → accepted.
    let rotated = vec![
        good[0].clone(),
        good[1].clone(),
        (
            "svix-signature",
            format!("v1,bm90IHRoZSByaWdodCBvbmU= {good_sig}"),
        ),
    ];
    let res = clerk(rotated, body.clone()).await;
    assert_eq!(res.status, 200, "{}", res.text);
    // The webhook-* header names work too.
    let unbranded = sign::svix_headers(CLERK_SECRET, "msg_unbranded", now, &body)
        .into_iter()
        .map(|(k, v)| (k.replace("svix-", "webhook-"), v))
        .collect::<Vec<_>>();
    let mut req = app.client.post(app.url("/api/webhooks/clerk/"));
    for (k, v) in unbranded {
        req = req.header(k, v);
    }
    assert_eq!(app.send(req.body(body.clone())).await.status, 200);

    // Stripe without a v1 signature, and with a bad one.
    let sbody =
        br#"{"id":"evt_1","type":"checkout.session.completed","created":1,"data":{"object":{}}}"#
            .to_vec();
    let res = app
        .send(
            app.client
                .post(app.url("/api/webhooks/stripe/"))
                .header("stripe-signature", format!("t={now}"))
                .body(sbody.clone()),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (400, Some("invalid_signature_header"))
    );
    let res = app
        .send(
            app.client
                .post(app.url("/api/webhooks/stripe/"))
                .header(
                    "stripe-signature",
                    sign::stripe_header("whsec_other_secret_123456", now, &sbody),
                )
                .body(sbody.clone()),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (401, Some("signature_mismatch"))
    );
    let res = app
        .send(
            app.client
                .post(app.url("/api/webhooks/stripe/"))
                .header(
                    "stripe-signature",
                    sign::stripe_header(STRIPE_SECRET, now, &sbody),
                )
                .body(sbody),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM webhook_events WHERE status = 'rejected' AND provider = 'stripe'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn the_official_svix_vector_is_recognised_and_rejected_only_for_its_age() {
    let app = TestApp::webhooks().spawn().await;
    let body = br#"{"test": 2432232314}"#.to_vec();
    let res = app
        .send(
            app.client
                .post(app.url("/api/webhooks/clerk/"))
                .header("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
                .header("svix-timestamp", "1614265330")
                .header(
                    "svix-signature",
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                )
                .body(body),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (401, Some("stale_timestamp"))
    );
}

#[tokio::test]
async fn no_secret_configured_is_a_recorded_rejection_not_a_silent_drop() {
    let app = TestApp::spawn().await;
    let res = app
        .deliver_clerk("msg_1", &json!({"type": "user.created", "data": {}}))
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (503, Some("webhook_secret_not_configured"))
    );
    assert_eq!(
        rejected_reasons(&app.db_pool).await,
        ["webhook_secret_not_configured"]
    );
}

#[tokio::test]
async fn an_oversized_delivery_is_refused_before_any_work_and_recorded_with_its_size() {
    let app = TestApp::webhooks()
        .env("MAX_BODY_BYTES", "2048")
        .spawn()
        .await;
    let body = json!({"type": "user.created", "data": {"pad": "x".repeat(4000)}});
    let size = serde_json::to_vec(&body).unwrap().len();
    let res = app.deliver_clerk("msg_big", &body).await;
    assert_eq!(
        (res.status, res.error_code()),
        (413, Some("payload_too_large"))
    );
    // Recorded as a rejected delivery: its size and headers, never its bytes.
    let (reason, detail, stored, event_id): (String, String, i32, Option<String>) = sqlx::query_as(
        "SELECT rejection_reason, last_error, octet_length(body), event_id FROM webhook_events WHERE status = 'rejected'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(reason, "payload_too_large");
    assert!(detail.contains(&format!("{size} bytes")), "{detail}");
    assert_eq!((stored, event_id.as_deref()), (0, Some("msg_big")));
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM webhook_events").await,
        1
    );
    // Chunked, with no Content-Length: read up to the limit, then refused the same way.
    let raw = serde_json::to_vec(&body).unwrap();
    let header = sign::stripe_header(STRIPE_SECRET, sign::now(), &raw);
    let mut request = format!(
        "POST /api/webhooks/stripe/ HTTP/1.1\r\nhost: x\r\nstripe-signature: {header}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in raw.chunks(512) {
        request.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    let answer = raw_http(app.addr, &request, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM webhook_events WHERE provider = 'stripe' AND rejection_reason = 'payload_too_large' AND last_error LIKE '%more than 2048 bytes%'").await,
        1
    );
}

#[tokio::test]
async fn a_signed_body_nested_too_deep_is_refused_and_recorded() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let depth = 10_000;
    let raw = format!(
        r#"{{"id":"evt_deep","type":"checkout.session.completed","created":1700000000,"data":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes();
    let header = sign::stripe_header(STRIPE_SECRET, sign::now(), &raw);
    let res = app
        .send(
            app.client
                .post(app.url("/api/webhooks/stripe/"))
                .header("stripe-signature", header)
                .body(raw),
        )
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (400, Some("invalid_json")),
        "{}",
        res.text
    );
    assert_eq!(
        rejected_reasons(&app.db_pool).await,
        vec!["invalid_json".to_string()]
    );
    // Sixty levels is deep for an event, but within the bound: accepted.
    let ok = format!(
        r#"{{"id":"evt_ok","type":"x.y","created":1700000000,"data":{}1{}}}"#,
        "[".repeat(60),
        "]".repeat(60)
    )
    .into_bytes();
    let header = sign::stripe_header(STRIPE_SECRET, sign::now(), &ok);
    let res = app
        .send(
            app.client
                .post(app.url("/api/webhooks/stripe/"))
                .header("stripe-signature", header)
                .body(ok),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
}

#[tokio::test]
async fn an_event_whose_job_fails_for_good_is_failed_on_the_event_and_replay_moves_it() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    // An event stored as received whose body the worker cannot read (as an older ingest could
    // store): its job fails for good, and the event says so.
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO webhook_events (provider, event_id, event_type, status, headers, body) VALUES ('stripe', 'evt_bad', 'checkout.session.completed', 'received', '{}', $1) RETURNING id",
    )
    .bind(format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes())
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    app.enqueue(&granary_jobs::webhooks::ingest::ProcessWebhookEvent {
        webhook_event_id: id,
    })
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_bad' AND status = 'failed' AND last_error LIKE '%not readable JSON%'",
        1,
        WAIT,
    )
    .await;
    // Listed with the failed ones, and a replay runs it again (and it fails again, visibly).
    let actor = Actor {
        name: "cli:ops".into(),
        reason: None,
    };
    granary_jobs::webhooks::ingest::replay(&app.db_pool, id, &actor)
        .await
        .unwrap();
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_bad' AND status = 'failed' AND process_attempts = 2",
        1,
        WAIT,
    )
    .await;
}

#[tokio::test]
async fn a_database_outage_at_ingest_is_answered_5xx_never_2xx() {
    let app = TestApp::webhooks()
        .database_url("postgres://postgres@127.0.0.1:1/none")
        .spawn()
        .await;
    let res = app
        .deliver_clerk(
            "msg_down",
            &user_event("user.created", "user_1", 1, "a@b.c", None),
        )
        .await;
    assert!(res.status >= 500, "{} {}", res.status, res.text);
}

#[tokio::test]
async fn user_events_upsert_profiles_and_a_late_older_event_changes_nothing() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    app.deliver_clerk(
        "msg_u2",
        &user_event(
            "user.updated",
            "user_7",
            2_000,
            "new@example.com",
            Some("seller"),
        ),
    )
    .await;
    app.deliver_clerk(
        "msg_u1",
        &user_event("user.created", "user_7", 1_000, "first@example.com", None),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status IN ('processed', 'ignored')",
        2,
        WAIT,
    )
    .await;
    let (email, role): (String, String) =
        sqlx::query_as("SELECT email, role FROM profiles WHERE clerk_user_id = 'user_7'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        (email.as_str(), role.as_str()),
        ("new@example.com", "seller")
    );
    app.deliver_clerk("msg_u3", &json!({"type": "user.deleted", "timestamp": 3_000, "data": {"id": "user_7", "deleted": true}})).await;
    app.wait_for_count(
        "SELECT count(*) FROM profiles WHERE deleted_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    // An unknown type is stored, answered 2xx and marked ignored.
    let res = app
        .deliver_clerk(
            "msg_x",
            &json!({"type": "organization.created", "data": {}}),
        )
        .await;
    assert_eq!(res.status, 200);
    app.wait_for_count("SELECT count(*) FROM webhook_events WHERE event_type = 'organization.created' AND status = 'ignored'", 1, WAIT).await;
}

async fn subscription_state(pool: &PgPool, user: &str) -> (Vec<(String, String)>, Vec<String>) {
    let subs: Vec<(String, String)> = sqlx::query_as("SELECT status, coalesce(plan_id, '') FROM subscriptions WHERE clerk_user_id = $1 ORDER BY provider_subscription_id")
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap();
    let ents: Vec<String> = sqlx::query_scalar(
        "SELECT e.feature_key FROM entitlements e JOIN profiles p ON p.id = e.profile_id WHERE p.clerk_user_id = $1 AND e.revoked_at IS NULL ORDER BY 1",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap();
    (subs, ents)
}

#[tokio::test]
async fn subscription_events_out_of_order_converge_to_the_in_order_result() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let future_end = (chrono::Utc::now() + chrono::Duration::days(30)).timestamp_millis();
    let past_end = (chrono::Utc::now() - chrono::Duration::days(1)).timestamp_millis();
    // Scenario A: created → updated → active (features granted).
    // Scenario B: created → active → canceled, period already over (features revoked).
    let a = |u: &str| {
        vec![
            item_event(
                "subscriptionItem.created",
                u,
                &format!("csubi_{u}"),
                "upcoming",
                1_000,
                future_end,
            ),
            item_event(
                "subscriptionItem.updated",
                u,
                &format!("csubi_{u}"),
                "upcoming",
                2_000,
                future_end,
            ),
            item_event(
                "subscriptionItem.active",
                u,
                &format!("csubi_{u}"),
                "active",
                3_000,
                future_end,
            ),
        ]
    };
    let b = |u: &str| {
        vec![
            item_event(
                "subscriptionItem.created",
                u,
                &format!("csubi_{u}"),
                "active",
                1_000,
                past_end,
            ),
            item_event(
                "subscriptionItem.active",
                u,
                &format!("csubi_{u}"),
                "active",
                2_000,
                past_end,
            ),
            item_event(
                "subscriptionItem.canceled",
                u,
                &format!("csubi_{u}"),
                "canceled",
                3_000,
                past_end,
            ),
        ]
    };
    let mut n = 0;
    let mut deliver = |events: Vec<Value>, order: &[usize]| {
        let batch: Vec<(String, Value)> = order
            .iter()
            .map(|i| {
                n += 1;
                (format!("msg_{n}"), events[*i].clone())
            })
            .collect();
        batch
    };
    let runs = [
        ("a_in", deliver(a("a_in"), &[0, 1, 2])),
        ("a_out", deliver(a("a_out"), &[1, 0, 2])), // updated before created
        ("b_in", deliver(b("b_in"), &[0, 1, 2])),
        ("b_out", deliver(b("b_out"), &[2, 1, 0])), // canceled before active before created
    ];
    for (_, batch) in &runs {
        for (id, ev) in batch {
            // Each delivered twice, as providers do.
            assert_eq!(app.deliver_clerk(id, ev).await.status, 200);
            assert_eq!(app.deliver_clerk(id, ev).await.status, 200);
        }
    }
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status IN ('processed', 'ignored')",
        12,
        WAIT,
    )
    .await;
    app.wait_for_count("SELECT count(*) FROM jobs WHERE queue = 'sync_entitlements' AND state <> 'completed' AND run_at <= now()", 0, WAIT).await;
    let a_in = subscription_state(&app.db_pool, "a_in").await;
    let a_out = subscription_state(&app.db_pool, "a_out").await;
    assert_eq!(a_in, a_out);
    // One "started" email per subscription item, however many deliveries.
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM emails e JOIN profiles p ON p.id = e.profile_id WHERE p.clerk_user_id = 'a_in' AND e.kind = 'subscription_started'").await,
        1
    );
    assert_eq!(count(&app.db_pool, "SELECT count(*) FROM emails e JOIN profiles p ON p.id = e.profile_id WHERE p.clerk_user_id = 'b_out' AND e.kind = 'subscription_ended'").await, 1);
    assert_eq!(a_in.0, [("active".to_string(), "cplan_pro".to_string())]);
    assert_eq!(a_in.1, ["ai_coach", "priority_support"]);
    let b_in = subscription_state(&app.db_pool, "b_in").await;
    let b_out = subscription_state(&app.db_pool, "b_out").await;
    assert_eq!(b_in, b_out);
    assert_eq!(b_in.0, [("canceled".to_string(), "cplan_pro".to_string())]);
    assert!(
        b_in.1.is_empty(),
        "a canceled item past its period grants nothing: {:?}",
        b_in.1
    );
}

#[tokio::test]
async fn a_canceled_item_keeps_its_features_until_its_period_ends() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let end = (chrono::Utc::now() + chrono::Duration::seconds(3)).timestamp_millis();
    app.deliver_clerk(
        "m1",
        &item_event(
            "subscriptionItem.active",
            "u1",
            "csubi_1",
            "active",
            1_000,
            end,
        ),
    )
    .await;
    app.deliver_clerk(
        "m2",
        &item_event(
            "subscriptionItem.canceled",
            "u1",
            "csubi_1",
            "canceled",
            2_000,
            end,
        ),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status IN ('processed', 'ignored')",
        2,
        WAIT,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE revoked_at IS NULL AND expires_at IS NOT NULL",
        2,
        WAIT,
    )
    .await;
    // The sync scheduled for the period end revokes them.
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE revoked_at IS NULL",
        0,
        WAIT,
    )
    .await;
}

/// A seller's product with a price, and a buyer's pending order for it.
async fn seed_order(
    pool: &PgPool,
    buyer: &str,
    plan: Option<&str>,
    total: i64,
) -> (Uuid, String, Uuid) {
    let seller: Uuid = sqlx::query_scalar(
        "INSERT INTO profiles (clerk_user_id, role) VALUES ($1, 'seller') RETURNING id",
    )
    .bind(format!("seller_{buyer}"))
    .fetch_one(pool)
    .await
    .unwrap();
    let customer: Uuid = sqlx::query_scalar("INSERT INTO profiles (clerk_user_id) VALUES ($1) ON CONFLICT (clerk_user_id) DO UPDATE SET email = profiles.email RETURNING id")
        .bind(buyer)
        .fetch_one(pool)
        .await
        .unwrap();
    let product: Uuid = sqlx::query_scalar("INSERT INTO products (seller_profile_id, name, slug, visibility, feature_keys) VALUES ($1, 'Bundle', $2, 'published', '{templates}') RETURNING id")
        .bind(seller)
        .bind(format!("bundle-{}", Uuid::new_v4().simple()))
        .fetch_one(pool)
        .await
        .unwrap();
    // A Clerk plan is billed by the month here.
    let price: Uuid = sqlx::query_scalar("INSERT INTO prices (product_id, amount_cents, currency, clerk_plan_id, billing_period) VALUES ($1, $2, 'USD', $3, CASE WHEN $3 IS NULL THEN 'one_time' ELSE 'monthly' END) RETURNING id")
        .bind(product)
        .bind(total)
        .bind(plan)
        .fetch_one(pool)
        .await
        .unwrap();
    let public_id = format!("ord_{}", Uuid::new_v4().simple());
    let order: Uuid = sqlx::query_scalar("INSERT INTO orders (public_id, customer_profile_id, currency, subtotal_cents, total_cents) VALUES ($1, $2, 'USD', $3, $3) RETURNING id")
        .bind(&public_id)
        .bind(customer)
        .bind(total)
        .fetch_one(pool)
        .await
        .unwrap();
    let item: Uuid = sqlx::query_scalar("INSERT INTO order_items (order_id, product_id, price_id, product_name, unit_amount_cents, total_cents, currency) VALUES ($1, $2, $3, 'Bundle', $4, $4, 'USD') RETURNING id")
        .bind(order)
        .bind(product)
        .bind(price)
        .bind(total)
        .fetch_one(pool)
        .await
        .unwrap();
    (order, public_id, item)
}

fn checkout(evt: &str, ty: &str, public_id: &str, amount: i64) -> Value {
    json!({
        "id": evt, "type": ty, "created": 1_700_000_000,
        "data": {"object": {
            "id": "cs_test_1", "object": "checkout.session", "client_reference_id": public_id,
            "payment_status": "paid", "mode": "payment", "amount_total": amount, "currency": "usd", "payment_intent": "pi_1"
        }}
    })
}

#[tokio::test]
async fn a_stripe_payment_marks_the_order_paid_and_enqueues_fulfillment_once_and_a_refund_revokes()
{
    let app = TestApp::webhooks().with_worker().spawn().await;
    let (order, public_id, item) = seed_order(&app.db_pool, "buyer_1", None, 2900).await;
    // completed, then async_payment_succeeded for the same session, each delivered twice.
    for ev in [
        checkout("evt_1", "checkout.session.completed", &public_id, 2900),
        checkout(
            "evt_2",
            "checkout.session.async_payment_succeeded",
            &public_id,
            2900,
        ),
    ] {
        assert_eq!(app.deliver_stripe(&ev).await.status, 200);
        assert_eq!(app.deliver_stripe(&ev).await.status, 200);
    }
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'processed'",
        2,
        WAIT,
    )
    .await;
    // Paid, then fulfilled by the one fulfill_order job.
    app.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order}' AND status = 'fulfilled'"),
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM payment_transactions WHERE kind = 'payment'"
        )
        .await,
        1
    );
    assert_eq!(count(&app.db_pool, &format!("SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order' AND order_id = '{order}'")).await, 1);
    // The event links to the order it changed.
    assert_eq!(count(&app.db_pool, &format!("SELECT count(*) FROM webhook_event_effects WHERE entity = 'order' AND entity_id = '{order}'")).await, 2);

    // Fulfillment granted the product's feature, sourced from the order item; then a full refund.
    assert_eq!(
        count(&app.db_pool, &format!("SELECT count(*) FROM entitlements WHERE feature_key = 'templates' AND source_id = '{item}' AND revoked_at IS NULL")).await,
        1
    );
    let refund = json!({"id": "evt_r1", "type": "charge.refunded", "created": 1_700_000_100, "data": {"object": {
        "id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 2900, "amount_refunded": 2900, "refunded": true, "currency": "usd"
    }}});
    assert_eq!(app.deliver_stripe(&refund).await.status, 200);
    app.wait_for_count(
        "SELECT count(*) FROM entitlements WHERE revoked_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(status, "refunded");
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM payment_transactions WHERE kind = 'refund'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'revoke_source'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_payment_for_the_wrong_amount_is_not_fulfilled_and_fails_visibly() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let (order, public_id, _) = seed_order(&app.db_pool, "buyer_2", None, 2900).await;
    app.deliver_stripe(&checkout(
        "evt_w",
        "checkout.session.completed",
        &public_id,
        100,
    ))
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'failed'",
        1,
        WAIT,
    )
    .await;
    let err: String =
        sqlx::query_scalar("SELECT last_error FROM webhook_events WHERE event_id = 'evt_w'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert!(
        err.contains("paid 100 USD for an order of 2900 USD"),
        "{err}"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(status, "pending");
}

#[tokio::test]
async fn a_clerk_paid_payment_attempt_pays_the_matching_pending_order() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let (order, _, _) = seed_order(&app.db_pool, "buyer_3", Some("cplan_bundle"), 2900).await;
    let attempt = |status: &str| {
        json!({"type": "paymentAttempt.updated", "timestamp": 5_000, "data": {
            "id": "cpa_1", "status": status, "payer": {"user_id": "buyer_3"},
            "subscription_items": [{"plan": {"id": "cplan_bundle"}, "plan_period": "month"}],
            "totals": {"grand_total": {"amount": 2900, "currency": "USD"}}
        }})
    };
    app.deliver_clerk("msg_pa0", &attempt("pending")).await;
    app.deliver_clerk("msg_pa1", &attempt("paid")).await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status IN ('processed', 'ignored')",
        2,
        WAIT,
    )
    .await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order}' AND status = 'fulfilled'"),
        1,
        WAIT,
    )
    .await;

    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn replaying_a_processed_event_applies_it_once_and_is_audited() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let (_, public_id, _) = seed_order(&app.db_pool, "buyer_4", None, 500).await;
    app.deliver_stripe(&checkout(
        "evt_p",
        "checkout.session.completed",
        &public_id,
        500,
    ))
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'processed'",
        1,
        WAIT,
    )
    .await;
    let id: Uuid = sqlx::query_scalar("SELECT id FROM webhook_events WHERE event_id = 'evt_p'")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let actor = Actor {
        name: "cli:ops".into(),
        reason: Some("customer says nothing happened".into()),
    };
    granary_jobs::webhooks::ingest::replay(&app.db_pool, id, &actor)
        .await
        .unwrap();
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'processed' AND process_attempts = 2",
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM payment_transactions").await,
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order'"
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
    // A rejected delivery cannot be replayed.
    app.send(app.client.post(app.url("/api/webhooks/stripe/")).body("{}"))
        .await;
    let rejected: Uuid =
        sqlx::query_scalar("SELECT id FROM webhook_events WHERE status = 'rejected'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert!(
        granary_jobs::webhooks::ingest::replay(&app.db_pool, rejected, &actor)
            .await
            .is_err()
    );
    wait_for_count(&app.db_pool, "SELECT count(*) FROM webhook_events", 2, WAIT).await;
}

#[tokio::test]
async fn a_concurrent_burst_each_delivered_twice_is_stored_once_with_its_job_and_link() {
    // Invariant (the group-commit path): 60 events, each delivered twice, all at once → 60
    // events, 60 jobs, each job linked to its event, exactly one "new" answer per event.
    let app = TestApp::webhooks().spawn().await;
    let app = &app;
    let mut sends = Vec::new();
    for copy in 0..2 {
        for i in 0..60 {
            let raw = serde_json::to_vec(
                &json!({"type": "user.updated", "timestamp": 1, "data": {"id": format!("user_b{i}")}}),
            )
            .unwrap();
            let mut req = app.client.post(app.url("/api/webhooks/clerk/"));
            for (k, v) in sign::svix_headers(CLERK_SECRET, &format!("msg_b{i}"), sign::now(), &raw)
            {
                req = req.header(k, v);
            }
            sends.push(async move { (i, copy, app.send(req.body(raw)).await) });
        }
    }
    let answers = futures::future::join_all(sends).await;
    for i in 0..60 {
        let mine: Vec<_> = answers.iter().filter(|(j, _, _)| *j == i).collect();
        assert!(mine.iter().all(|(_, _, r)| r.status == 200));
        assert_eq!(
            mine.iter()
                .filter(|(_, _, r)| r.json["duplicate"] == false)
                .count(),
            1,
            "msg_b{i}: exactly one delivery is new"
        );
    }
    let p = &app.db_pool;
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM webhook_events WHERE event_id LIKE 'msg_b%'"
        )
        .await,
        60
    );
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM jobs j JOIN job_refs r ON r.job_id = j.id \
             JOIN webhook_events e ON e.id = r.webhook_event_id \
             WHERE j.queue = 'process_webhook_event' AND j.state = 'pending' \
               AND j.args ->> 'webhook_event_id' = e.id::text"
        )
        .await,
        60
    );
    assert_eq!(count(p, "SELECT count(*) FROM jobs").await, 60);
}

/// The event's status and error, and whether the event is linked to `order` as a refused
/// payment (what the order's timeline shows).
async fn refusal(pool: &PgPool, event_id: &str, order: Uuid) -> (String, String, bool) {
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, last_error FROM webhook_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(pool)
            .await
            .unwrap();
    let linked = count(pool, &format!("SELECT count(*) FROM webhook_event_effects e JOIN webhook_events w ON w.id = e.webhook_event_id WHERE w.event_id = '{event_id}' AND e.entity = 'order' AND e.entity_id = '{order}' AND e.action = 'payment_refused'")).await;
    (status, error.unwrap_or_default(), linked == 1)
}

async fn order_status(pool: &PgPool, order: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How a test event differs from a good one.
type Change = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn a_stripe_session_that_proves_no_payment_is_refused_visibly_and_never_fulfilled() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    // (case, how the session differs from a paid one, what the error names)
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "no amount",
            Box::new(|o| {
                o.as_object_mut().unwrap().remove("amount_total");
            }),
            "`amount_total` is missing",
        ),
        (
            "null amount",
            Box::new(|o| o["amount_total"] = Value::Null),
            "`amount_total` is null",
        ),
        (
            "string amount",
            Box::new(|o| o["amount_total"] = json!("2900")),
            "`amount_total` is the string",
        ),
        (
            "float amount",
            Box::new(|o| o["amount_total"] = json!(2900.5)),
            "`amount_total` is the number 2900.5",
        ),
        (
            "no currency",
            Box::new(|o| {
                o.as_object_mut().unwrap().remove("currency");
            }),
            "`currency` is missing",
        ),
        (
            "not a currency",
            Box::new(|o| o["currency"] = json!("xxx")),
            "not an active ISO 4217 currency",
        ),
        (
            "setup session",
            Box::new(|o| {
                o["mode"] = json!("setup");
                o["payment_status"] = json!("no_payment_required");
            }),
            "not a payment (payment_status",
        ),
        (
            "nothing to pay",
            Box::new(|o| o["payment_status"] = json!("no_payment_required")),
            "not a payment (payment_status",
        ),
        (
            "no payment status",
            Box::new(|o| {
                o.as_object_mut().unwrap().remove("payment_status");
            }),
            "payment_status missing",
        ),
        (
            "no mode",
            Box::new(|o| {
                o.as_object_mut().unwrap().remove("mode");
            }),
            "mode missing",
        ),
        (
            "one cent",
            Box::new(|o| o["amount_total"] = json!(1)),
            "paid 1 USD for an order of 2900 USD",
        ),
    ];
    let mut orders = Vec::new();
    for (n, (case, change, _)) in cases.iter().enumerate() {
        let (order, public_id, _) =
            seed_order(&app.db_pool, &format!("buyer_r{n}"), None, 2900).await;
        let mut event = checkout(
            &format!("evt_r{n}"),
            "checkout.session.completed",
            &public_id,
            2900,
        );
        event["data"]["object"]["id"] = json!(format!("cs_r{n}"));
        event["data"]["object"]["payment_intent"] = json!(format!("pi_r{n}"));
        change(&mut event["data"]["object"]);
        assert_eq!(app.deliver_stripe(&event).await.status, 200, "{case}");
        orders.push(order);
    }
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'failed'",
        cases.len() as i64,
        WAIT,
    )
    .await;
    for (n, ((case, _, names), order)) in cases.iter().zip(&orders).enumerate() {
        let (status, error, linked) = refusal(&app.db_pool, &format!("evt_r{n}"), *order).await;
        assert_eq!(status, "failed", "{case}");
        assert!(error.contains(names), "{case}: {error}");
        assert!(linked, "{case}: the refusal is on the order's timeline");
        assert_eq!(
            order_status(&app.db_pool, *order).await,
            "pending",
            "{case}"
        );
    }
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM payment_transactions").await,
        0
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order'"
        )
        .await,
        0
    );
    // The job failed for good (no retry can make the report prove a payment), with the reason.
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM jobs WHERE queue = 'process_webhook_event' AND state = 'failed' AND last_error LIKE '%payment refused%'").await,
        cases.len() as i64
    );
    // The timeline shows it, and doctor names every one.
    let public_id: String = sqlx::query_scalar("SELECT public_id FROM orders WHERE id = $1")
        .bind(orders[0])
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let timeline = serde_json::to_value(
        granary_jobs::operator::reads::timeline(&app.db_pool, &public_id)
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
            .any(|e| e["kind"] == "webhook.received"
                && e["detail"]["action"] == "payment_refused"
                && e["detail"]["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("amount_total")),
        "{timeline}"
    );
    let report = doctor(&app).await;
    for order in &orders {
        let public_id: String = sqlx::query_scalar("SELECT public_id FROM orders WHERE id = $1")
            .bind(order)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.name == format!("refused payment for order {public_id}")),
            "doctor names {public_id}"
        );
    }
}

async fn doctor(app: &TestApp) -> granary_jobs::operator::doctor::Report {
    granary_jobs::operator::doctor::run(
        &app.config,
        &app.db_pool,
        granary_jobs::operator::doctor::Options {
            live: false,
            unfulfilled_after: Duration::from_secs(3600),
            pending_after: Duration::from_secs(3600),
        },
    )
    .await
}

#[tokio::test]
async fn a_clerk_attempt_pays_only_the_amount_currency_and_period_of_its_order() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let (order, _, _) = seed_order(&app.db_pool, "buyer_c", Some("cplan_pro"), 1500).await;
    let attempt = |id: &str, period: Option<&str>, totals: Value| {
        let mut item = json!({"plan": {"id": "cplan_pro"}});
        if let Some(p) = period {
            item["plan_period"] = json!(p);
        }
        json!({"type": "paymentAttempt.updated", "timestamp": 5_000, "data": {
            "id": id, "status": "paid", "charge_type": "checkout", "payer": {"user_id": "buyer_c"},
            "subscription_items": [item], "totals": totals
        }})
    };
    let usd = |amount: Value| json!({"grand_total": {"amount": amount, "currency": "USD"}});
    let bad = [
        (
            "cpa_cent",
            attempt("cpa_cent", Some("month"), usd(json!(1))),
            "paid 1 USD for an order of 1500 USD",
        ),
        (
            "cpa_eur",
            attempt(
                "cpa_eur",
                Some("month"),
                json!({"grand_total": {"amount": 1500, "currency": "EUR"}}),
            ),
            "paid 1500 EUR",
        ),
        (
            "cpa_none",
            attempt("cpa_none", Some("month"), json!({})),
            "`amount.amount` is missing",
        ),
        (
            "cpa_str",
            attempt("cpa_str", Some("month"), usd(json!("1500"))),
            "`totals.grand_total.amount` is the string",
        ),
        (
            "cpa_year",
            attempt("cpa_year", Some("annual"), usd(json!(1500))),
            "period \"annual\", but the order's price is monthly",
        ),
        (
            "cpa_noperiod",
            attempt("cpa_noperiod", None, usd(json!(1500))),
            "`plan_period` of plan \"cplan_pro\" is missing",
        ),
    ];
    for (id, body, _) in &bad {
        assert_eq!(
            app.deliver_clerk(&format!("msg_{id}"), body).await.status,
            200
        );
    }
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'failed'",
        bad.len() as i64,
        WAIT,
    )
    .await;
    for (id, _, names) in &bad {
        let (status, error, linked) = refusal(&app.db_pool, &format!("msg_{id}"), order).await;
        assert_eq!(status, "failed", "{id}");
        assert!(error.contains(names), "{id}: {error}");
        assert!(linked, "{id}");
    }
    assert_eq!(order_status(&app.db_pool, order).await, "pending");
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM entitlements").await,
        0
    );
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM payment_transactions").await,
        0
    );

    // The attempt that is the order's amount, currency and period pays it.
    app.deliver_clerk(
        "msg_cpa_ok",
        &attempt("cpa_ok", Some("month"), usd(json!(1500))),
    )
    .await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order}' AND status = 'fulfilled'"),
        1,
        WAIT,
    )
    .await;
    // Next month's renewal is recorded, not flagged as a duplicate and not fulfilled again.
    let mut renewal = attempt("cpa_renew", Some("month"), usd(json!(1500)));
    renewal["data"]["charge_type"] = json!("recurring");
    app.deliver_clerk("msg_cpa_renew", &renewal).await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'processed'",
        2,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM payment_transactions WHERE status = 'succeeded'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order'"
        )
        .await,
        1
    );
}

/// A pending order of `total` for `buyer`, paid through `pi_1` and fulfilled.
async fn fulfilled_order(app: &TestApp, buyer: &str, total: i64) -> Uuid {
    let (order, public_id, _) = seed_order(&app.db_pool, buyer, None, total).await;
    let paid = checkout("evt_pay", "checkout.session.completed", &public_id, total);
    app.deliver_stripe(&paid).await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order}' AND status = 'fulfilled'"),
        1,
        WAIT,
    )
    .await;
    order
}

fn refunded(evt: &str, cumulative: i64, whole: bool) -> Value {
    json!({"id": evt, "type": "charge.refunded", "created": 1_700_000_100, "data": {"object": {
        "id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 5000,
        "amount_refunded": cumulative, "refunded": whole, "currency": "usd"
    }}})
}

#[tokio::test]
async fn partial_refunds_of_one_charge_are_recorded_each_and_add_up_to_what_stripe_says() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let order = fulfilled_order(&app, "buyer_pr", 5000).await;
    // 1000 refunded, then 3000 in all; the second report delivered twice.
    app.deliver_stripe(&refunded("evt_rf1", 1000, false)).await;
    app.wait_for_count(
        "SELECT count(*) FROM payment_transactions WHERE kind = 'refund'",
        1,
        WAIT,
    )
    .await;
    app.deliver_stripe(&refunded("evt_rf2", 3000, false)).await;
    app.deliver_stripe(&refunded("evt_rf2", 3000, false)).await;
    app.wait_for_count(
        "SELECT count(*) FROM payment_transactions WHERE kind = 'refund'",
        2,
        WAIT,
    )
    .await;
    let refunds: Vec<i64> = sqlx::query_scalar("SELECT amount_cents FROM payment_transactions WHERE kind = 'refund' ORDER BY created_at, amount_cents")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(refunds, vec![1000, 2000]);
    // A late copy of the first report records nothing more; the order keeps what it got.
    app.deliver_stripe(&refunded("evt_rf1_late", 1000, false))
        .await;
    app.wait_for_count("SELECT count(*) FROM webhook_events WHERE event_id = 'evt_rf1_late' AND status = 'ignored'", 1, WAIT).await;
    assert_eq!(order_status(&app.db_pool, order).await, "fulfilled");
    // The rest, all at once: the order is refunded and its rows add up to the charge.
    app.deliver_stripe(&refunded("evt_rf3", 5000, true)).await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order}' AND status = 'refunded'"),
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT sum(amount_cents)::bigint FROM payment_transactions WHERE kind = 'refund'"
        )
        .await,
        5000
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM payment_transactions WHERE kind = 'refund'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn refund_reports_applied_at_once_count_each_part_once() {
    // Three reports of one charge (1000, 2500, 4000 in all) applied concurrently, out of order.
    let app = TestApp::webhooks().with_worker().spawn().await;
    fulfilled_order(&app, "buyer_cc", 5000).await;
    let (a, b, c) = (
        refunded("evt_c3", 4000, false),
        refunded("evt_c1", 1000, false),
        refunded("evt_c2", 2500, false),
    );
    let (ra, rb, rc) = tokio::join!(
        app.deliver_stripe(&a),
        app.deliver_stripe(&b),
        app.deliver_stripe(&c)
    );
    assert_eq!((ra.status, rb.status, rc.status), (200, 200, 200));
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE event_id LIKE 'evt_c%' AND status IN ('processed', 'ignored')",
        3,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT sum(amount_cents)::bigint FROM payment_transactions WHERE kind = 'refund'"
        )
        .await,
        4000
    );
}

#[tokio::test]
async fn a_second_distinct_payment_for_a_paid_order_is_a_duplicate_to_refund() {
    let app = TestApp::webhooks().with_worker().spawn().await;
    let (order, public_id, _) = seed_order(&app.db_pool, "buyer_dup", None, 2900).await;
    app.deliver_stripe(&checkout(
        "evt_d1",
        "checkout.session.completed",
        &public_id,
        2900,
    ))
    .await;
    app.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order}' AND status = 'fulfilled'"),
        1,
        WAIT,
    )
    .await;
    // The buyer paid again in a second tab: another session, another payment intent.
    let mut again = checkout("evt_d2", "checkout.session.completed", &public_id, 2900);
    again["data"]["object"]["id"] = json!("cs_test_2");
    again["data"]["object"]["payment_intent"] = json!("pi_2");
    app.deliver_stripe(&again).await;
    app.wait_for_count(
        "SELECT count(*) FROM webhook_events WHERE status = 'processed'",
        2,
        WAIT,
    )
    .await;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT provider_payment_id, status FROM payment_transactions WHERE kind = 'payment' ORDER BY created_at")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("pi_1".into(), "succeeded".into()),
            ("pi_2".into(), "duplicate".into())
        ]
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM job_refs WHERE queue = 'fulfill_order'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM webhook_event_effects WHERE action = 'duplicate_payment'"
        )
        .await,
        1
    );
    // A repeat of the second delivery changes nothing; doctor lists the duplicate to refund.
    app.deliver_stripe(&again).await;
    let report = doctor(&app).await;
    let dup = report
        .checks
        .iter()
        .find(|c| c.name == format!("duplicate payment for order {public_id}"))
        .expect("doctor lists the duplicate payment");
    assert!(dup.detail.contains("pi_2"), "{}", dup.detail);
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM payment_transactions WHERE kind = 'payment'"
        )
        .await,
        2
    );
}

/// Writes `request` to the api over a raw TCP connection, then reads until the server closes it
/// or `within` passes; returns what came back (empty when nothing did).
async fn raw_http(addr: std::net::SocketAddr, request: &[u8], within: Duration) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off_on_every_route() {
    let app = TestApp::webhooks()
        .env("HTTP_HEADER_TIMEOUT_SECONDS", "1")
        .env("HTTP_BODY_TIMEOUT_SECONDS", "2")
        .spawn()
        .await;
    // Part of the headers, then nothing: the connection is closed after the header timeout,
    // not held open (a slowloris holds thousands of these).
    for path in ["/api/webhooks/stripe/", "/api/products/", "/api/health/"] {
        let started = std::time::Instant::now();
        let answer = raw_http(
            app.addr,
            format!("POST {path} HTTP/1.1\r\nhost: x\r\nx-slow: ").as_bytes(),
            Duration::from_secs(20),
        )
        .await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(15),
            "{path}: held {took:?}; got {answer:?}"
        );
    }
    // Less body than the Content-Length, then nothing: 408 with the contract's body.
    for path in [
        "/api/webhooks/stripe/",
        "/api/webhooks/clerk/",
        "/api/account/orders/create/",
    ] {
        let answer = raw_http(
            app.addr,
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"id\":").as_bytes(),
            Duration::from_secs(20),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer:?}");
        assert!(answer.contains("\"request_timeout\""), "{path}: {answer:?}");
    }
    // A whole request on a fresh connection still works.
    assert_eq!(app.get("/api/health/").await.status, 200);
    // A URL too long is 414 in the contract's shape (it had no body).
    let res = app
        .get(&format!("/api/products/?search={}", "a".repeat(20_000)))
        .await;
    assert_eq!(
        (res.status, res.error_code()),
        (414, Some("uri_too_long")),
        "{}",
        res.text
    );
}
