//! The test harness: a fresh PostgreSQL database per test (cloned from a migrated template),
//! the real api on an ephemeral port, the real job runtime in-process or the real
//! `granary-worker` binary as a child process, and typed helpers around them.
#![forbid(unsafe_code)]

pub mod browser;
pub mod clerk;
pub mod db;
pub mod peers;
pub mod pgcluster;
pub mod resend;
pub mod shop;
pub mod stripe;
pub mod worker;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use granary_api::AppState;
use granary_jobs::Config;
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use db::TestDb;

/// Settings every test app starts from: development, fast worker timings, no secrets.
pub fn base_env(database_url: &str) -> HashMap<String, String> {
    [
        ("APP_ENV", "development"),
        ("DATABASE_URL", database_url),
        // A dead worker's jobs are rescued after 4 s (heartbeat x (missed + 1)).
        ("WORKER_HEARTBEAT_MS", "1000"),
        ("WORKER_MISSED_HEARTBEATS", "3"),
        ("WORKER_POLL_INTERVAL_MS", "100"),
        ("JOB_BACKOFF_BASE_MS", "500"),
        ("SHUTDOWN_TIMEOUT_SECONDS", "5"),
        // Sweeps run when a test asks (a test of the schedule sets its own interval).
        ("RECONCILE_INTERVAL_SECONDS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Builds a [`TestApp`].
#[derive(Default)]
pub struct TestAppBuilder {
    env: HashMap<String, String>,
    with_worker: bool,
    as_process: bool,
    with_clerk: bool,
    with_resend: bool,
    with_stripe: bool,
    database_url: Option<String>,
}

impl TestAppBuilder {
    /// Sets (or overrides) one configuration variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Also runs the job runtime in-process.
    pub fn with_worker(mut self) -> Self {
        self.with_worker = true;
        self
    }

    /// Runs the real `granary-api` binary as a child process (`serve`, plus `--with-worker`
    /// with [`Self::with_worker`]) instead of the in-process router: the contract is then proved
    /// on the binary that ships, with its own `main`, configuration reading and signal handling.
    /// It is the workspace's debug build (built once; `scripts/test` builds it before the
    /// suite): the same code as the release build, with overflow checks on.
    pub fn as_process(mut self) -> Self {
        self.as_process = true;
        self
    }

    /// Starts a Clerk stand-in (JWKS on loopback) and configures the app to trust it.
    pub fn with_clerk(mut self) -> Self {
        self.with_clerk = true;
        self
    }

    /// Starts a Resend stand-in and points the real resend-rs client at it.
    pub fn with_resend(mut self) -> Self {
        self.with_resend = true;
        self
    }

    /// Starts a Stripe API stand-in and points the reconciliation sweep at it.
    pub fn with_stripe(mut self) -> Self {
        self.with_stripe = true;
        self
    }

    /// Points the app at this URL instead of a fresh database (for "database down" tests).
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Starts the app. `GRANARY_TEST_LOG=1` prints the app's logs (filtered by `RUST_LOG`).
    pub async fn spawn(self) -> TestApp {
        if std::env::var_os("GRANARY_TEST_LOG").is_some() {
            // Logs filtered by RUST_LOG, as in the binaries.
            granary_jobs::platform::telemetry::init(false);
        }
        let db = TestDb::new().await;
        let url = self.database_url.clone().unwrap_or_else(|| db.url.clone());
        let mut env = base_env(&url);
        let clerk = if self.with_clerk {
            let c = clerk::ClerkStandIn::start().await;
            env.insert("CLERK_JWKS_URL".into(), c.jwks_url.clone());
            env.insert("CLERK_JWT_ISSUER".into(), clerk::ISSUER.into());
            env.insert("CLERK_AUTHORIZED_PARTIES".into(), clerk::AZP.into());
            env.insert("CORS_ALLOWED_ORIGINS".into(), clerk::AZP.into());
            // The storefront is the authorized party (doctor checks that the three agree).
            env.insert("FRONTEND_APP_URL".into(), clerk::AZP.into());
            env.insert("CLERK_API_URL".into(), c.api_url.clone());
            env.insert("CLERK_SECRET_KEY".into(), clerk::SECRET_KEY.into());
            Some(c)
        } else {
            None
        };
        let resend = if self.with_resend {
            let r = resend::ResendStandIn::start().await;
            env.extend(r.env().map(|(k, v)| (k.to_string(), v)));
            Some(r)
        } else {
            None
        };
        let stripe = if self.with_stripe {
            let s = stripe::StripeStandIn::start().await;
            env.insert("STRIPE_SECRET_KEY".into(), stripe::SECRET_KEY.into());
            env.insert("STRIPE_API_BASE".into(), s.url.clone());
            Some(s)
        } else {
            None
        };
        // Each app stores assets in a folder of its own.
        let storage_root =
            std::env::temp_dir().join(format!("granary-test-{}", uuid::Uuid::new_v4().simple()));
        env.insert(
            "ASSET_STORAGE_FS_ROOT".into(),
            storage_root.to_string_lossy().into_owned(),
        );
        env.extend(self.env);
        let port = free_port();
        if self.as_process {
            env.insert("PORT".into(), port.to_string());
            env.insert("BIND_HOST".into(), "127.0.0.1".into());
        }
        let final_env = env.clone();
        let config =
            Config::from_map(&env).unwrap_or_else(|e| panic!("test configuration is invalid: {e}"));
        let config = Arc::new(config);
        let pool = granary_jobs::platform::db::pool(
            &config,
            10 + granary_jobs::registry::registry().held_connections(),
        )
        .expect("pool");
        let shutdown = CancellationToken::new();
        let (addr, server, worker, process) = if self.as_process {
            let exe = worker::binary_named("granary-api");
            let args: &[&str] = if self.with_worker {
                &["serve", "--with-worker"]
            } else {
                &["serve"]
            };
            let vars: Vec<(String, String)> = env.clone().into_iter().collect();
            let child = worker::WorkerProcess::spawn(&exe, args, &vars);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_healthy(&format!("http://{addr}"), Duration::from_secs(60)).await;
            (addr, None, None, Some(child))
        } else {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind an ephemeral port");
            let addr = listener.local_addr().expect("local addr");
            let state = AppState::new((*config).clone(), pool.clone());
            let server = tokio::spawn(granary_api::serve(listener, state, shutdown.clone()));
            let worker = self.with_worker.then(|| {
                tokio::spawn(granary_jobs::registry::run(
                    pool.clone(),
                    config.clone(),
                    granary_jobs::registry::registry(),
                    shutdown.clone(),
                ))
            });
            (addr, Some(server), worker, None)
        };
        TestApp {
            addr,
            base: format!("http://{addr}"),
            pool,
            db_pool: db.pool.clone(),
            config,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            shutdown,
            server,
            worker,
            process,
            clerk,
            resend,
            stripe,
            storage_root,
            env: final_env,
            db,
        }
    }
}

/// A running api (and optionally worker) on its own database.
pub struct TestApp {
    /// Where the api listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
    /// The app's pool.
    pub pool: PgPool,
    /// A pool on the test database that stays up whatever the app's configuration.
    pub db_pool: PgPool,
    /// The app's configuration.
    pub config: Arc<Config>,
    /// An HTTP client.
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
    /// The `granary-api` child process, with [`TestAppBuilder::as_process`].
    process: Option<worker::WorkerProcess>,
    /// The Clerk stand-in, when started.
    pub clerk: Option<clerk::ClerkStandIn>,
    /// The Resend stand-in, when started.
    pub resend: Option<resend::ResendStandIn>,
    /// The Stripe stand-in, when started.
    pub stripe: Option<stripe::StripeStandIn>,
    /// The `fs` storage root.
    pub storage_root: std::path::PathBuf,
    /// The configuration variables the app was started with (for child processes).
    pub env: HashMap<String, String>,
    /// The test database (dropped with the app).
    pub db: TestDb,
}

/// A response, read whole.
#[derive(Debug)]
pub struct TestResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as JSON (Null when the body is not JSON).
    pub json: Value,
    /// Raw body.
    pub text: String,
}

impl TestResponse {
    async fn read(res: reqwest::Response) -> Self {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("read body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            json,
            text,
        }
    }

    /// The contract error code, if this is an error body.
    pub fn error_code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }

    /// Header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl TestApp {
    /// A builder.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// An app with defaults and no worker.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// `url` for a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request built by `f` and reads the response.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> TestResponse {
        TestResponse::read(req.send().await.expect("request sent")).await
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.client.get(self.url(path))).await
    }

    /// POST JSON to `path`.
    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    /// Stops the api and the worker gracefully and waits for both.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(p) = self.process.take() {
            let _ = tokio::task::spawn_blocking(move || p.terminate()).await;
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
        }
        if let Some(w) = self.worker.take() {
            let r = tokio::time::timeout(Duration::from_secs(15), w).await;
            if let Ok(Ok(Err(e))) = r {
                panic!("worker ended with an error: {e:#}");
            }
        }
    }

    /// A session token for `user` with `role` (set on the profile, where roles live).
    pub async fn token(&self, user: &str, role: &str) -> String {
        sqlx::query("INSERT INTO profiles (clerk_user_id, role, email) VALUES ($1, $2, $3) ON CONFLICT (clerk_user_id) DO UPDATE SET role = EXCLUDED.role")
            .bind(user)
            .bind(role)
            .bind(format!("{user}@example.com"))
            .execute(&self.db_pool)
            .await
            .expect("profile");
        clerk::sign(&clerk::claims(user))
    }

    /// The configuration variables the app was started with, for a child process
    /// ([`worker::cli`]).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `granary-worker console login-link --json`, as an operator runs it: the one-time URL.
    pub async fn console_login_link(&self) -> String {
        let (code, out) = worker::cli(&self.env_vars(), &["console", "login-link", "--json"]).await;
        assert_eq!(code, 0, "{out}");
        let v: Value = serde_json::from_str(&out).expect("login-link --json prints JSON");
        v["url"].as_str().expect("a url").to_string()
    }

    /// GET with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> TestResponse {
        self.send(self.client.get(self.url(path)).bearer_auth(token))
            .await
    }

    /// POST JSON with a bearer token.
    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> TestResponse {
        self.send(
            self.client
                .post(self.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// PATCH JSON with a bearer token.
    pub async fn patch_as(&self, token: &str, path: &str, body: &Value) -> TestResponse {
        self.send(
            self.client
                .patch(self.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// The seller (`seller` is their token) lists `product` with one `price` through the API;
    /// both must be created. Returns (product id, price id).
    pub async fn listed_product(
        &self,
        seller: &str,
        product: &Value,
        price: &Value,
    ) -> (String, String) {
        let p = self.post_as(seller, "/api/seller/products/", product).await;
        assert_eq!(p.status, 201, "{}", p.text);
        let pid = p.json["id"].as_str().expect("product id").to_string();
        let path = format!("/api/seller/products/{pid}/prices/");
        let pr = self.post_as(seller, &path, price).await;
        assert_eq!(pr.status, 201, "{}", pr.text);
        (pid, pr.json["id"].as_str().expect("price id").to_string())
    }

    /// Enqueues `job` in its own committed transaction; returns its id.
    pub async fn enqueue<J: granary_jobs::queue::Job>(&self, job: &J) -> String {
        enqueue(&self.db_pool, job).await
    }

    /// Waits until `sql` (a scalar i64 query) returns `want`, or panics after `timeout`.
    pub async fn wait_for_count(&self, sql: &str, want: i64, timeout: Duration) {
        wait_for_count(&self.db_pool, sql, want, timeout).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.storage_root);
    }
}

/// Waits until the scalar query `sql` returns `want`; panics with the last value after `timeout`.
pub async fn wait_for_count(pool: &PgPool, sql: &str, want: i64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(pool)
            .await
            .ok();
        if last == Some(want) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {timeout:?} for `{sql}` to be {want}; last value {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scalar i64 query.
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Enqueues `job` in its own committed transaction; returns its id.
pub async fn enqueue<J: granary_jobs::queue::Job>(pool: &PgPool, job: &J) -> String {
    let mut tx = pool.begin().await.expect("begin");
    let id = granary_jobs::queue::enqueue(&mut tx, job)
        .await
        .expect("enqueue")
        .id()
        .to_string();
    tx.commit().await.expect("commit");
    id
}

/// Webhook signing exactly as the providers do it.
pub mod sign {
    /// The Clerk (Svix) secret the tests configure.
    pub const CLERK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// The Stripe secret the tests configure.
    pub const STRIPE_SECRET: &str = "whsec_test_granary_stripe_0123456789";

    /// Svix headers for `body`: `svix-id`, `svix-timestamp`, `svix-signature` (`v1,<base64>`).
    pub fn svix_headers(
        secret: &str,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let sig = svix::webhooks::Webhook::new(secret)
            .expect("secret")
            .sign(msg_id, timestamp, body)
            .expect("sign");
        vec![
            ("svix-id", msg_id.to_string()),
            ("svix-timestamp", timestamp.to_string()),
            ("svix-signature", sig),
        ]
    }

    /// `Stripe-Signature: t=<t>,v1=<hex>`.
    pub fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
        granary_jobs::providers::verify::stripe_signature_header(secret, t, body)
    }

    /// Now, in seconds.
    pub fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }
}

impl TestApp {
    /// An app configured with both webhook secrets (and a worker when asked).
    pub fn webhooks() -> TestAppBuilder {
        Self::builder()
            .env("CLERK_WEBHOOK_SIGNING_SECRET", sign::CLERK_SECRET)
            .env("STRIPE_WEBHOOK_SECRET", sign::STRIPE_SECRET)
    }

    /// A whole shop: both webhook secrets, the Clerk and Resend stand-ins, the worker
    /// in-process, and manual order confirmation (a buyer pays without a provider).
    pub fn shop() -> TestAppBuilder {
        Self::webhooks()
            .with_clerk()
            .with_resend()
            .with_worker()
            .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
    }

    /// Delivers a Clerk event signed now, with Svix message id `msg_id`.
    pub async fn deliver_clerk(&self, msg_id: &str, body: &Value) -> TestResponse {
        let raw = serde_json::to_vec(body).expect("json");
        let mut req = self
            .client
            .post(self.url("/api/webhooks/clerk/"))
            .header("content-type", "application/json");
        for (k, v) in sign::svix_headers(sign::CLERK_SECRET, msg_id, sign::now(), &raw) {
            req = req.header(k, v);
        }
        self.send(req.body(raw)).await
    }

    /// Delivers a Stripe event signed now.
    pub async fn deliver_stripe(&self, body: &Value) -> TestResponse {
        let raw = serde_json::to_vec(body).expect("json");
        let header = sign::stripe_header(sign::STRIPE_SECRET, sign::now(), &raw);
        self.send(
            self.client
                .post(self.url("/api/webhooks/stripe/"))
                .header("stripe-signature", header)
                .body(raw),
        )
        .await
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a child process to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until the api at `base` answers `/api/health/` with 200; panics after `timeout`.
pub async fn wait_healthy(base: &str, timeout: Duration) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !client
        .get(format!("{base}/api/health/"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the api at {base} never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves `app` on an ephemeral loopback port for the rest of the test; returns its address.
pub async fn serve_loopback(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
