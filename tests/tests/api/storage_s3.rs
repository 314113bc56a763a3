//! The `s3` storage backend against a real S3-compatible server on loopback (moto, from PyPI;
//! `scripts/test` installs it): finalization copies to the permanent key, and the OpenDAL presigned
//! URL serves the exact bytes.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use granary_jobs::platform::storage::Storage;
use granary_tests::TestApp;
use serde_json::json;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Owned by the guard at once: killed and reaped whatever happens next.
    let moto = Moto {
        child: Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("moto_server is needed for the s3 test ({e}): pip install 'moto[server]' (scripts/test installs it)")),
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not start on port {port}");
}

#[tokio::test]
async fn assets_finalize_to_s3_and_presigned_urls_serve_the_exact_bytes() {
    let moto = start_moto().await;
    // Create the bucket (moto accepts an unsigned CreateBucket).
    let res = reqwest::Client::new()
        .put(format!("{}/granary-assets", moto.url))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let app = TestApp::builder()
        .with_clerk()
        .with_worker()
        .env("ORDER_CONFIRM_ALLOW_MANUAL", "true")
        .env("ASSET_STORAGE_BACKEND", "s3")
        .env("ASSET_STORAGE_BUCKET", "granary-assets")
        .env("ASSET_STORAGE_S3_ENDPOINT_URL", &moto.url)
        .env("ASSET_STORAGE_S3_REGION", "us-east-1")
        .env("ASSET_STORAGE_S3_ACCESS_KEY_ID", "testing")
        .env("ASSET_STORAGE_S3_SECRET_ACCESS_KEY", "testing")
        .spawn()
        .await;
    let storage = Storage::from_config(&app.config).expect("s3 storage");
    assert_eq!(storage.backend, "s3");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    storage
        .operator()
        .write("uploads/course.zip", bytes.clone())
        .await
        .unwrap();

    let seller = app.token("seller", "seller").await;
    let buyer = app.token("buyer", "buyer").await;
    let p = app
        .post_as(
            &seller,
            "/api/seller/products/",
            &json!({"name": "Course", "slug": "course", "visibility": "published"}),
        )
        .await;
    let pid = p.json["id"].as_str().unwrap();
    let price = app.post_as(&seller, &format!("/api/seller/products/{pid}/prices/"), &json!({"amount_cents": 100, "currency": "USD", "metadata": {"checkout_url": "https://pay.example/c"}})).await;
    app.post_as(
        &seller,
        &format!("/api/seller/products/{pid}/assets/"),
        &json!({"title": "Course", "file_path": "uploads/course.zip"}),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM digital_assets WHERE status = 'ready'",
        1,
        WAIT,
    )
    .await;
    let key: String = sqlx::query_scalar("SELECT storage_key FROM digital_assets")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert!(
        storage.exists(&key).await.unwrap(),
        "copied to {key} in the bucket"
    );

    let order = app
        .post_as(
            &buyer,
            "/api/account/orders/create/",
            &json!({"price_id": price.json["id"]}),
        )
        .await;
    app.post_as(
        &buyer,
        &format!(
            "/api/account/orders/{}/confirm/",
            order.json["order"]["public_id"].as_str().unwrap()
        ),
        &json!({"provider": "manual"}),
    )
    .await;
    app.wait_for_count("SELECT count(*) FROM download_grants", 1, WAIT)
        .await;
    let token = app.get_as(&buyer, "/api/account/downloads/").await.json[0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let access = app
        .post_as(
            &buyer,
            &format!("/api/account/downloads/{token}/access/"),
            &json!({}),
        )
        .await;
    assert_eq!(access.status, 200, "{}", access.text);
    let url = access.json["url"].as_str().unwrap();
    assert!(
        url.starts_with(&moto.url) && url.contains("X-Amz-Signature"),
        "a presigned S3 URL: {url}"
    );
    let got = reqwest::get(url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        hex::encode(Sha256::digest(got.bytes().await.unwrap())),
        hex::encode(Sha256::digest(&bytes))
    );
}
