//! A real browser for the console's tests: Debian's `chromium`, headless, driven over WebDriver
//! by fantoccini through `chromedriver` (both installed by `scripts/test`).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use tokio::process::{Child, Command};

/// How long a page may take to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium session with its chromedriver.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Child,
}

async fn driver_ready(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/status");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Ok(res)) =
            tokio::time::timeout(Duration::from_secs(2), client.get(&url).send()).await
            && let Ok(Ok(v)) =
                tokio::time::timeout(Duration::from_secs(2), res.json::<serde_json::Value>()).await
            && v["value"]["ready"] == true
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub async fn start() -> Self {
        // fantoccini's TLS stack and sqlx's both compile rustls backends in: name one.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = crate::free_port();
        let driver = Command::new(
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
        )
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver (apt-get install chromium chromium-driver)");
        assert!(
            driver_ready(port).await,
            "chromedriver did not become ready"
        );
        let caps: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(serde_json::json!({
                "goog:chromeOptions": {
                    "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1360,1000"]
                }
            }))
            .expect("capabilities");
        let client = ClientBuilder::rustls()
            .expect("rustls client")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("open a Chromium session");
        Self { client, driver }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The element `css` matches, once it is there.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element matches `{css}`: {e}"))
    }

    /// Types `text` into the field `css` matches (clearing it first).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear field");
        field.send_keys(text).await.expect("type");
    }

    /// Clicks the button labelled `label` (inside `scope`, a CSS selector of its container).
    pub async fn click_button(&self, scope: &str, label: &str) {
        let container = self.find(scope).await;
        let button = container
            .find(Locator::XPath(&format!(
                ".//button[normalize-space()='{label}']"
            )))
            .await
            .unwrap_or_else(|e| panic!("no `{label}` button in `{scope}`: {e}"));
        button.click().await.expect("click");
    }

    /// Waits until the page's heading reads `heading` (or starts with it).
    pub async fn wait_heading(&self, heading: &str) {
        let started = Instant::now();
        loop {
            if let Ok(h) = self.client.find(Locator::Css("main h1")).await
                && let Ok(text) = h.text().await
                && text.starts_with(heading)
            {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "the page never showed `{heading}`: at {} it reads {:?}",
                self.url().await,
                self.client
                    .source()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(2000)
                    .collect::<String>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's text.
    pub async fn text(&self) -> String {
        self.find("body").await.text().await.expect("page text")
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Saves a PNG of the viewport under `docs/screenshots/` (shown in docs/operations.md).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
