//! The operator console over HTTP: who may enter (login links, sessions, an admin's Clerk
//! session), CSRF, the audit, and `/metrics`. The browser tests are in `console_browser.rs`.

use std::time::Duration;

use granary_tests::{TestApp, count, worker::cli};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The link's path and query on this app (the link names the configured PUBLIC_URL).
fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}?{}", u.path(), u.query().unwrap_or_default())
}

fn set_cookie(res: &granary_tests::TestResponse) -> String {
    res.headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Opens a session through a login link; the `Cookie` header value to send.
async fn log_in(app: &TestApp) -> String {
    let res = app.get(&path_of(&app.console_login_link().await)).await;
    assert_eq!(res.status, 303, "{}", res.text);
    let cookie = set_cookie(&res);
    cookie.split(';').next().unwrap().to_string()
}

async fn get_with(app: &TestApp, cookie: &str, path: &str) -> granary_tests::TestResponse {
    app.send(app.client.get(app.url(path)).header("cookie", cookie))
        .await
}

async fn post_form(
    app: &TestApp,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> granary_tests::TestResponse {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    app.send(
        app.client
            .post(app.url(path))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF field")
        + 19;
    html[at..at + 64].to_string()
}

fn location(res: &granary_tests::TestResponse) -> &str {
    res.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_console_page_and_action_sends_a_visitor_without_a_session_to_the_login_help() {
    let app = TestApp::spawn().await;
    let job =
        granary_tests::enqueue(&app.db_pool, &granary_jobs::queue::probe::Probe::default()).await;
    let pages = [
        "/console/",
        "/console",
        "/console/overview/live",
        "/console/jobs",
        "/console/jobs?state=failed&q=x",
        &format!("/console/jobs/{job}"),
        "/console/orders?public_id=ord_x",
        "/console/orders/ord_x",
        "/console/webhooks",
        "/console/webhooks/00000000-0000-0000-0000-000000000000",
        "/console/doctor",
    ];
    let actions = [
        format!("/console/jobs/{job}/requeue"),
        format!("/console/jobs/{job}/cancel"),
        "/console/jobs-requeue-failed".to_string(),
        "/console/orders/ord_x/requeue".to_string(),
        "/console/webhooks/00000000-0000-0000-0000-000000000000/replay".to_string(),
        "/console/webhooks-replay-failed".to_string(),
        "/console/logout".to_string(),
    ];
    for cookie in ["", "granary_console=0123456789abcdef"] {
        for p in pages {
            let res = get_with(&app, cookie, p).await;
            assert_eq!(
                (res.status, location(&res)),
                (303, "/console/login-help"),
                "GET {p} with cookie {cookie:?}"
            );
        }
        for p in &actions {
            let res = post_form(&app, cookie, p, &[("csrf", "x"), ("reason", "because")]).await;
            assert_eq!(
                (res.status, location(&res)),
                (303, "/console/login-help"),
                "POST {p} with cookie {cookie:?}"
            );
        }
    }
    // Nothing was done: the job still waits.
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM operator_actions").await,
        0
    );
    let help = app.get("/console/login-help").await;
    assert_eq!(help.status, 200);
    assert!(help.text.contains("granary-worker console login-link"));
}

#[tokio::test]
async fn a_login_link_opens_one_audited_session_once() {
    let app = TestApp::spawn().await;
    let link = app.console_login_link().await;
    assert!(
        link.starts_with(&format!(
            "{}/console/login?token=",
            app.config.public_url.as_str().trim_end_matches('/')
        )),
        "{link}"
    );
    let res = app.get(&path_of(&link)).await;
    assert_eq!((res.status, location(&res)), (303, "/console/"));
    let cookie = set_cookie(&res);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "development serves plain HTTP: {cookie}"
    );
    let session = cookie.split(';').next().unwrap();
    let page = get_with(&app, session, "/console/jobs").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("console:cli:night-operator"));

    // The same link again: refused, and no second session.
    let again = app.get(&path_of(&link)).await;
    assert_eq!(again.status, 401);
    assert!(again.text.contains("cannot be used"));
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM console_sessions").await,
        1
    );
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM operator_actions WHERE action = 'console.login' AND actor = 'console:cli:night-operator'"
        )
        .await,
        1
    );
    // Only hashes are stored.
    let token = link.split("token=").nth(1).unwrap();
    assert_eq!(
        count(
            &app.db_pool,
            &format!("SELECT count(*) FROM console_login_links WHERE token_hash = convert_to('{token}', 'UTF8')")
        )
        .await,
        0
    );
}

#[tokio::test]
async fn expired_links_and_sessions_are_refused_and_the_cli_ends_sessions() {
    let app = TestApp::spawn().await;
    let env = app.env_vars();

    let stale = app.console_login_link().await;
    sqlx::query("UPDATE console_login_links SET expires_at = now() - interval '1 second'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(app.get(&path_of(&stale)).await.status, 401);

    let first = log_in(&app).await;
    let second = log_in(&app).await;
    assert_eq!(get_with(&app, &first, "/console/").await.status, 200);

    // A session past its expiry is refused.
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second' WHERE id = (SELECT id FROM console_sessions ORDER BY created_at LIMIT 1)")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let res = get_with(&app, &first, "/console/").await;
    assert_eq!((res.status, location(&res)), (303, "/console/login-help"));

    // The CLI lists and ends the live ones.
    let (code, out) = cli(&env, &["console", "sessions", "--json"]).await;
    assert_eq!(code, 0);
    let live: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(live.as_array().unwrap().len(), 1, "{live}");
    assert_eq!(get_with(&app, &second, "/console/").await.status, 200);
    let (code, out) = cli(&env, &["console", "logout", "--all"]).await;
    assert_eq!((code, out.trim()), (0, "1 session(s) ended"));
    let res = get_with(&app, &second, "/console/jobs").await;
    assert_eq!((res.status, location(&res)), (303, "/console/login-help"));
    assert_eq!(
        count(
            &app.db_pool,
            "SELECT count(*) FROM operator_actions WHERE action = 'console.logout'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn an_action_without_the_sessions_csrf_token_or_a_reason_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let job =
        granary_tests::enqueue(&app.db_pool, &granary_jobs::queue::probe::Probe::default()).await;
    let session = log_in(&app).await;
    let page = get_with(&app, &session, &format!("/console/jobs/{job}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains(">Cancel</button>"),
        "a waiting job can be cancelled"
    );
    let csrf = csrf_of(&page.text);
    let cancel = format!("/console/jobs/{job}/cancel");

    let forged = post_form(
        &app,
        &session,
        &cancel,
        &[("csrf", &"0".repeat(64)), ("reason", "no longer needed")],
    )
    .await;
    assert_eq!(forged.status, 403);
    let missing = post_form(&app, &session, &cancel, &[("reason", "no longer needed")]).await;
    assert!(missing.status >= 400, "{}", missing.status);
    let reasonless = post_form(&app, &session, &cancel, &[("csrf", &csrf), ("reason", " ")]).await;
    assert_eq!(reasonless.status, 422);
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(&job)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(state, "pending");

    let done = post_form(
        &app,
        &session,
        &cancel,
        &[("csrf", &csrf), ("reason", "no longer needed")],
    )
    .await;
    assert_eq!(
        (done.status, location(&done)),
        (303, format!("/console/jobs/{job}").as_str())
    );
    let row: (String, String, Option<String>) =
        sqlx::query_as("SELECT action, actor, reason FROM operator_actions WHERE target_id = $1")
            .bind(&job)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        (
            "job.cancel".into(),
            "console:cli:night-operator".into(),
            Some("no longer needed".into())
        )
    );
}

#[tokio::test]
async fn an_admins_clerk_session_enters_the_console_and_a_buyers_does_not() {
    let app = TestApp::builder().with_clerk().spawn().await;
    let admin = app.token("admin_1", "admin").await;
    let res = get_with(
        &app,
        &format!("__session={admin}"),
        "/console/jobs?state=failed",
    )
    .await;
    assert_eq!(res.status, 303);
    let to = location(&res).to_string();
    assert!(to.starts_with("/console/login/clerk?next="), "{to}");
    let entered = get_with(&app, &format!("__session={admin}"), &to).await;
    assert_eq!(
        (entered.status, location(&entered)),
        (303, "/console/jobs?state=failed")
    );
    let session = set_cookie(&entered);
    let page = get_with(&app, session.split(';').next().unwrap(), "/console/jobs").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("admin:admin_1"));
    assert_eq!(
        count(&app.db_pool, "SELECT count(*) FROM operator_actions WHERE action = 'console.login' AND actor = 'admin:admin_1'").await,
        1
    );

    let buyer = app.token("buyer_1", "buyer").await;
    let res = get_with(&app, &format!("__session={buyer}"), "/console/").await;
    assert_eq!((res.status, location(&res)), (303, "/console/login-help"));
    let res = get_with(&app, &format!("__session={buyer}"), "/console/login/clerk").await;
    assert_eq!((res.status, location(&res)), (303, "/console/login-help"));
    // A `next` outside the console is not followed.
    let res = get_with(
        &app,
        &format!("__session={admin}"),
        "/console/login/clerk?next=https://evil.example/",
    )
    .await;
    assert_eq!(location(&res), "/console/");
    // Nor one that would split the redirect's header (it was a 500, after opening a session).
    let res = get_with(
        &app,
        &format!("__session={admin}"),
        "/console/login/clerk?next=%2Fconsole%2F%0d%0aSet-Cookie:%20x=1",
    )
    .await;
    assert_eq!((res.status, location(&res)), (303, "/console/"));
}

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef0123456789";

#[tokio::test]
async fn metrics_refuse_a_missing_or_wrong_token_and_export_every_series() {
    let app = TestApp::webhooks()
        .with_worker()
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .spawn()
        .await;
    // A job that runs, a webhook that is rejected, a request.
    granary_tests::enqueue(&app.db_pool, &granary_jobs::queue::probe::Probe::default()).await;
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        1,
        WAIT,
    )
    .await;
    let rejected = app
        .send(app.client.post(app.url("/api/webhooks/stripe/")).body("{}"))
        .await;
    assert!(rejected.status >= 400, "an unsigned delivery is rejected");
    assert_eq!(app.get("/api/health/").await.status, 200);

    assert_eq!(app.get("/metrics").await.status, 401);
    let wrong = app
        .send(
            app.client
                .get(app.url("/metrics"))
                .bearer_auth("not-the-token-0123456789abcdef0123"),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error_code(), Some("unauthenticated"));
    // It names the metrics token, not a Clerk session.
    let said = wrong.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("METRICS_TOKEN") && !said.contains("Clerk"),
        "{said}"
    );

    // The completer writes the outcome after the metric is recorded: wait for the scrape to
    // show it rather than assume an order.
    let mut text = String::new();
    for _ in 0..100 {
        let res = app
            .send(
                app.client
                    .get(app.url("/metrics"))
                    .bearer_auth(METRICS_TOKEN),
            )
            .await;
        assert_eq!(res.status, 200);
        text = res.text;
        if text.contains(r#"granary_jobs_total{queue="probe",kind="probe",outcome="succeeded"}"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for series in [
        r#"granary_jobs_total{queue="probe",kind="probe",outcome="succeeded"}"#,
        r#"granary_job_duration_seconds_bucket{queue="probe",le="0.005"}"#,
        r#"granary_job_queue_latency_seconds_count{queue="probe"}"#,
        r#"granary_queue_depth{queue="send_email",state="failed"} 0"#,
        r#"granary_webhooks_total{provider="stripe",status="rejected"}"#,
        r#"granary_http_requests_total{method="GET",route="/api/health/",status="200"}"#,
        r#"granary_http_request_duration_seconds_bucket{method="GET",route="/api/health/",le="0.1"}"#,
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
}

#[tokio::test]
async fn with_metrics_bind_metrics_leave_the_public_port() {
    let port = granary_tests::free_port();
    let app = TestApp::builder()
        .env("METRICS_BIND", &format!("127.0.0.1:{port}"))
        .spawn()
        .await;
    assert_eq!(app.get("/metrics").await.status, 404);
    let client = reqwest::Client::new();
    let mut status = 0;
    for _ in 0..50 {
        if let Ok(res) = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            status = res.status().as_u16();
            let text = res.text().await.unwrap();
            assert!(text.contains("granary_queue_depth"), "{text}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}
