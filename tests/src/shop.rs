//! A small shop seeded straight into the database, for the fault tests and the benchmarks: one
//! published product granting feature `kit` with one ready asset, and as many orders of it as
//! asked for, each for a buyer of its own with an email address.

use granary_jobs::orders::FulfillOrder;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The seeded product and its price (500 USD cents).
pub struct Shop {
    /// The product.
    pub product: Uuid,
    /// Its price.
    pub price: Uuid,
}

impl Shop {
    /// Seeds the seller, the product, its price and its ready asset.
    pub async fn seed(pool: &PgPool) -> Self {
        let seller: Uuid = sqlx::query_scalar(
            "INSERT INTO profiles (clerk_user_id, role) VALUES ('seller', 'seller') RETURNING id",
        )
        .fetch_one(pool)
        .await
        .expect("seller");
        let product: Uuid = sqlx::query_scalar("INSERT INTO products (seller_profile_id, name, slug, visibility, feature_keys) VALUES ($1, 'Kit', 'kit', 'published', '{kit}') RETURNING id")
            .bind(seller)
            .fetch_one(pool)
            .await
            .expect("product");
        let price: Uuid = sqlx::query_scalar("INSERT INTO prices (product_id, amount_cents, currency) VALUES ($1, 500, 'USD') RETURNING id")
            .bind(product)
            .fetch_one(pool)
            .await
            .expect("price");
        sqlx::query("INSERT INTO digital_assets (product_id, title, file_path, storage_key, status, size_bytes, sha256) VALUES ($1, 'Kit', 'u/kit.zip', 'assets/ab/kit.zip', 'ready', 1, 'ab')")
            .bind(product)
            .execute(pool)
            .await
            .expect("asset");
        Self { product, price }
    }

    /// `n` orders of one Kit each, for buyers `<prefix>_1..n`, public ids `ord_<prefix>_<i>`.
    /// Pending orders wait for a payment webhook; paid ones have their `fulfill_order` job
    /// enqueued in the same transaction, as the payment webhook's application leaves them.
    /// Returns the public ids in order.
    pub async fn orders(&self, pool: &PgPool, prefix: &str, n: usize, paid: bool) -> Vec<String> {
        let mut tx = pool.begin().await.expect("begin");
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "WITH buyers AS ( \
                 INSERT INTO profiles (clerk_user_id, email) \
                 SELECT $1 || '_' || g, $1 || '_' || g || '@example.com' FROM generate_series(1, $2) g \
                 RETURNING id, clerk_user_id), \
             made AS ( \
                 INSERT INTO orders (public_id, customer_profile_id, status, currency, subtotal_cents, total_cents, paid_at) \
                 SELECT 'ord_' || clerk_user_id, id, CASE WHEN $3 THEN 'paid' ELSE 'pending' END, 'USD', 500, 500, \
                        CASE WHEN $3 THEN now() END \
                 FROM buyers RETURNING id, public_id), \
             items AS ( \
                 INSERT INTO order_items (order_id, product_id, price_id, product_name, unit_amount_cents, total_cents, currency) \
                 SELECT id, $4, $5, 'Kit', 500, 500, 'USD' FROM made) \
             SELECT id, public_id FROM made",
        )
        .bind(prefix)
        .bind(n as i32)
        .bind(paid)
        .bind(self.product)
        .bind(self.price)
        .fetch_all(&mut *tx)
        .await
        .expect("orders");
        if paid {
            for (id, _) in &rows {
                granary_jobs::queue::enqueue(&mut tx, &FulfillOrder { order_id: *id })
                    .await
                    .expect("enqueue fulfill_order");
            }
        }
        tx.commit().await.expect("commit");
        let mut ids: Vec<(usize, String)> = rows
            .into_iter()
            .map(|(_, p)| {
                let i = p
                    .rsplit('_')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0);
                (i, p)
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, p)| p).collect()
    }
}

/// A seller lists a product with a price through the API and `buyer` orders it; returns the
/// order's public id (pending payment).
pub async fn sell_and_buy(app: &crate::TestApp, buyer: &str) -> String {
    let seller = app.token("seller", "seller").await;
    let p = app.post_as(&seller, "/api/seller/products/", &json!({"name": "Kit", "slug": format!("kit-{buyer}"), "visibility": "published", "feature_keys": ["kit"]})).await;
    let pid = p.json["id"].as_str().unwrap();
    let price = app.post_as(&seller, &format!("/api/seller/products/{pid}/prices/"), &json!({"amount_cents": 900, "currency": "EUR", "metadata": {"checkout_url": "https://pay.example/k"}})).await;
    let token = app.token(buyer, "buyer").await;
    let order = app
        .post_as(
            &token,
            "/api/account/orders/create/",
            &json!({"price_id": price.json["id"]}),
        )
        .await;
    order.json["order"]["public_id"]
        .as_str()
        .unwrap()
        .to_string()
}
