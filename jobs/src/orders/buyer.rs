//! A buyer's orders: read, create (`{order, checkout}`), confirm (`{order, already_confirmed}`),
//! in the starter's shapes (docs/storefront.md §4.8–4.10). Totals come from the stored
//! prices, never from the client.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    Config,
    error::{DomainError, DomainResult, Fields},
    model::OrderStatus,
    orders::{self, Payment},
};

/// One line of an order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderItemOut {
    /// Id.
    pub id: Uuid,
    /// Product (the starter's name).
    pub product: Uuid,
    /// Product.
    pub product_id: Uuid,
    /// Product slug now.
    pub product_slug: String,
    /// digital, service, subscription.
    pub product_type: String,
    /// Price (the starter's name).
    pub price: Uuid,
    /// Price.
    pub price_id: Uuid,
    /// Quantity.
    pub quantity: i32,
    /// Minor units.
    pub unit_amount_cents: i64,
    /// Minor units (the starter's name).
    pub total_amount_cents: i64,
    /// Minor units.
    pub total_cents: i64,
    /// ISO currency.
    pub currency: String,
    /// The product name when bought.
    pub product_name_snapshot: String,
    /// The product name when bought.
    pub product_name: String,
    /// The price name now.
    pub price_name_snapshot: String,
    /// Free-form.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An order as its buyer sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderOut {
    /// Internal id.
    pub id: Uuid,
    /// Public id (`ord_…`), used in URLs and by providers.
    pub public_id: String,
    /// `pending_payment`, `paid`, `fulfilled`, `canceled`, `refunded`, `disputed`, `failed`.
    pub status: OrderStatus,
    /// ISO currency.
    pub currency: String,
    /// Minor units.
    pub subtotal_cents: i64,
    /// Always 0: tax is the payment provider's.
    pub tax_cents: i64,
    /// Minor units.
    pub total_cents: i64,
    /// The buyer's note.
    pub notes: String,
    /// Reported by a client-side Clerk confirm.
    pub clerk_checkout_id: Option<String>,
    /// The provider's reference reported by a confirm.
    pub external_reference: Option<String>,
    /// Where the buyer pays.
    pub checkout_url: Option<String>,
    /// Paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// Fulfilled.
    pub fulfilled_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Lines.
    pub items: Vec<OrderItemOut>,
}

/// The buyer's orders (or one of them), newest first, at most 200.
pub async fn list(
    conn: &mut PgConnection,
    profile_id: Uuid,
    only: Option<Uuid>,
) -> sqlx::Result<Vec<OrderOut>> {
    let orders = sqlx::query!(
        r#"SELECT id, public_id, status AS "status: OrderStatus", currency, subtotal_cents, total_cents, notes,
                  clerk_checkout_id, external_reference, checkout_url, paid_at, fulfilled_at, created_at, updated_at
           FROM orders WHERE customer_profile_id = $1 AND ($2::uuid IS NULL OR id = $2)
           ORDER BY created_at DESC LIMIT 200"#,
        profile_id,
        only
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let items = sqlx::query!(
        r#"SELECT oi.id, oi.order_id, oi.product_id, oi.price_id, oi.product_name, oi.quantity, oi.unit_amount_cents,
                  oi.total_cents, oi.currency, oi.created_at, p.slug, p.product_type, pr.name AS price_name
           FROM order_items oi JOIN products p ON p.id = oi.product_id JOIN prices pr ON pr.id = oi.price_id
           WHERE oi.order_id = ANY($1) ORDER BY oi.created_at, oi.id"#,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(orders
        .into_iter()
        .map(|o| OrderOut {
            items: items
                .iter()
                .filter(|i| i.order_id == o.id)
                .map(|i| OrderItemOut {
                    id: i.id,
                    product: i.product_id,
                    product_id: i.product_id,
                    product_slug: i.slug.clone(),
                    product_type: i.product_type.clone(),
                    price: i.price_id,
                    price_id: i.price_id,
                    quantity: i.quantity,
                    unit_amount_cents: i.unit_amount_cents,
                    total_amount_cents: i.total_cents,
                    total_cents: i.total_cents,
                    currency: i.currency.clone(),
                    product_name_snapshot: i.product_name.clone(),
                    product_name: i.product_name.clone(),
                    price_name_snapshot: i.price_name.clone(),
                    metadata: json!({}),
                    created_at: i.created_at,
                })
                .collect(),
            id: o.id,
            public_id: o.public_id,
            status: o.status,
            currency: o.currency,
            subtotal_cents: o.subtotal_cents,
            tax_cents: 0,
            total_cents: o.total_cents,
            notes: o.notes,
            clerk_checkout_id: o.clerk_checkout_id,
            external_reference: o.external_reference,
            checkout_url: o.checkout_url,
            paid_at: o.paid_at,
            fulfilled_at: o.fulfilled_at,
            created_at: o.created_at,
            updated_at: o.updated_at,
        })
        .collect())
}

async fn one(conn: &mut PgConnection, profile_id: Uuid, id: Uuid) -> DomainResult<OrderOut> {
    list(&mut *conn, profile_id, Some(id))
        .await?
        .pop()
        .ok_or(DomainError::NotFound)
}

/// Where the buyer pays.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Checkout {
    /// The price's `metadata.checkout_url`, or `""` when it has none (the storefront then
    /// shows the pending order; `granary-worker doctor` lists such prices).
    pub checkout_url: String,
    /// `clerk`, `stripe` (a Stripe-hosted URL) or `manual` (none, with DEV_MANUAL_CHECKOUT).
    pub provider: String,
}

/// `POST /api/account/orders/create/`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Created {
    /// The order, `pending_payment`.
    pub order: OrderOut,
    /// Where to send the buyer.
    pub checkout: Checkout,
}

/// One line of a new order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct LineInput {
    /// An active price of a published product.
    pub price_id: Uuid,
    /// 1 to 1000 (default 1).
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: Option<i32>,
}

/// `{"price_id", "quantity"?, "notes"?}` or `{"items": [...], "notes"?}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct CreateInput {
    /// One price.
    pub price_id: Option<Uuid>,
    /// Its quantity: 1 to 1000 (default 1).
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: Option<i32>,
    /// Several lines instead.
    pub items: Option<Vec<LineInput>>,
    /// The buyer's note, at most 4000 characters.
    pub notes: Option<String>,
}

fn new_public_id() -> String {
    format!("ord_{}", hex::encode(rand::random::<[u8; 16]>()))
}

fn provider_for(url: &str, config: &Config) -> &'static str {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    {
        Some(h) if h == "checkout.stripe.com" || h == "buy.stripe.com" => "stripe",
        Some(_) => "clerk",
        None if config.dev_manual_checkout => "manual",
        None => "clerk",
    }
}

/// Where the buyer pays: Stripe for an order sold through a Checkout Session Granary creates,
/// else the provider the checkout URL belongs to.
fn checkout_for(url: String, stripe_checkout: bool, config: &Config) -> Checkout {
    Checkout {
        provider: if stripe_checkout {
            "stripe"
        } else {
            provider_for(&url, config)
        }
        .into(),
        checkout_url: url,
    }
}

/// A purchasable price, as an order line is priced from it.
struct LinePrice {
    id: Uuid,
    product_id: Uuid,
    amount_cents: i64,
    currency: String,
    metadata: Value,
    billing_period: String,
    product_name: String,
}

/// Creates a `pending_payment` order. With an idempotency key, a retry returns the first order
/// (`created` false). An unknown, inactive or unpublished price is 404, as the starter answers.
pub async fn create(
    conn: &mut PgConnection,
    config: &Config,
    profile_id: Uuid,
    key: Option<&str>,
    b: CreateInput,
) -> DomainResult<(Created, bool)> {
    let lines = requested_lines(b.price_id, b.quantity, b.items)?;
    check_create(key, &lines, b.notes.as_deref())?;
    if let Some(k) = key
        && let Some(first) = replay(conn, config, profile_id, k, &lines, &b.notes).await?
    {
        return Ok((first, false));
    }
    let prices = purchasable_prices(conn, &lines).await?;
    let price_of = |id: Uuid| prices.iter().find(|x| x.id == id);
    let currency = prices[0].currency.clone();
    // Sold through a Checkout Session Granary creates, when every line can be.
    let stripe_checkout = config.stripe.secret_key.is_some()
        && lines.iter().all(|(p, _)| {
            price_of(*p).is_some_and(|x| sells_through_stripe(&x.metadata, &x.billing_period))
        });
    let checkout_url = (!stripe_checkout)
        .then(|| {
            lines.iter().find_map(|(p, _)| {
                price_of(*p)
                    .and_then(|x| x.metadata.get("checkout_url"))
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
            })
        })
        .flatten();
    let total: i64 = lines
        .iter()
        .filter_map(|(p, q)| price_of(*p).map(|x| x.amount_cents * i64::from(*q)))
        .sum();
    let order_id = sqlx::query_scalar!(
        r#"INSERT INTO orders (public_id, customer_profile_id, currency, subtotal_cents, total_cents, idempotency_key, checkout_url, notes, stripe_checkout)
           VALUES ($1, $2, $3, $4, $4, $5, $6, coalesce($7, ''), $8) RETURNING id"#,
        new_public_id(),
        profile_id,
        currency,
        total,
        key,
        checkout_url,
        b.notes,
        stripe_checkout,
    )
    .fetch_one(&mut *conn)
    .await?;
    insert_items(conn, order_id, &lines, &prices).await?;
    tracing::info!(order_id = %order_id, total, "order created");
    let order = one(conn, profile_id, order_id).await?;
    let checkout = checkout_for(checkout_url.unwrap_or_default(), stripe_checkout, config);
    Ok((Created { order, checkout }, true))
}

/// The requested lines as `(price, quantity)`: one price, or a non-empty items list.
fn requested_lines(
    price_id: Option<Uuid>,
    quantity: Option<i32>,
    items: Option<Vec<LineInput>>,
) -> DomainResult<Vec<(Uuid, i32)>> {
    let lines: Vec<(Uuid, i32)> = match (price_id, items) {
        (Some(p), None) => vec![(p, quantity.unwrap_or(1))],
        (None, Some(items)) if !items.is_empty() => items
            .into_iter()
            .map(|i| (i.price_id, i.quantity.unwrap_or(1)))
            .collect(),
        _ => {
            return Err(DomainError::field(
                "price_id",
                "give either price_id (and quantity) or a non-empty items list",
            ));
        }
    };
    Ok(lines)
}

/// The bounds of a new order: the key's length, the number of lines, quantities, the note.
fn check_create(key: Option<&str>, lines: &[(Uuid, i32)], notes: Option<&str>) -> DomainResult<()> {
    let mut f = Fields::new();
    f.check(
        key.is_none_or(|k| k.len() <= 200),
        "Idempotency-Key",
        "at most 200 characters",
    );
    f.check(lines.len() <= 50, "items", "at most 50 lines");
    f.check(
        lines.iter().all(|(_, q)| (1..=1000).contains(q)),
        "quantity",
        "Ensure this value is between 1 and 1000.",
    );
    f.check(
        notes.is_none_or(|n| n.len() <= 4000),
        "notes",
        "at most 4000 characters",
    );
    f.finish()?;
    Ok(())
}

/// Serialises retries of the same Idempotency-Key and answers the first order made with it, if
/// any (a different order under the same key is a conflict).
async fn replay(
    conn: &mut PgConnection,
    config: &Config,
    profile_id: Uuid,
    k: &str,
    lines: &[(Uuid, i32)],
    notes: &Option<String>,
) -> DomainResult<Option<Created>> {
    // Serialise retries of the same key, then return the first order if there is one.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        format!("order-create:{profile_id}:{k}")
    )
    .execute(&mut *conn)
    .await?;
    if let Some(existing) = sqlx::query!(
        "SELECT id, stripe_checkout FROM orders WHERE customer_profile_id = $1 AND idempotency_key = $2",
        profile_id,
        k
    )
    .fetch_optional(&mut *conn)
    .await?
    {
        let id = existing.id;
        // The same key for a different order is a client bug, not a retry: answering the
        // first order would make the buyer pay for what they did not ask for.
        let mut asked: Vec<(Uuid, i32)> = lines.to_vec();
        asked.sort();
        let first = sqlx::query!(
            r#"SELECT array_agg(price_id ORDER BY price_id, quantity) AS "prices!", array_agg(quantity ORDER BY price_id, quantity) AS "quantities!",
                          (SELECT coalesce(notes, '') FROM orders WHERE id = $1) AS "notes!"
                   FROM order_items WHERE order_id = $1"#,
            id
        )
        .fetch_one(&mut *conn)
        .await?;
        let had: Vec<(Uuid, i32)> = first.prices.into_iter().zip(first.quantities).collect();
        if had != asked || first.notes != notes.clone().unwrap_or_default() {
            return Err(DomainError::Conflict {
                code: "idempotency_key_reused",
                message: "This Idempotency-Key was already used for a different order; send a new key for a new order.".into(),
            });
        }
        let order = one(conn, profile_id, id).await?;
        let url = order.checkout_url.clone().unwrap_or_default();
        let checkout = checkout_for(url, existing.stripe_checkout, config);
        return Ok(Some(Created { order, checkout }));
    }
    Ok(None)
}

/// The lines' prices, each purchasable (else 404), all in one currency.
async fn purchasable_prices(
    conn: &mut PgConnection,
    lines: &[(Uuid, i32)],
) -> DomainResult<Vec<LinePrice>> {
    let price_ids: Vec<Uuid> = lines.iter().map(|(p, _)| *p).collect();
    let prices = sqlx::query_as!(
        LinePrice,
        r#"SELECT pr.id, pr.product_id, pr.amount_cents, pr.currency, pr.metadata, pr.billing_period, p.name AS product_name
           FROM prices pr JOIN products p ON p.id = pr.product_id
           WHERE pr.id = ANY($1) AND granary_purchasable(p, pr)"#,
        &price_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let price_of = |id: Uuid| prices.iter().find(|x| x.id == id);
    if lines.iter().any(|(p, _)| price_of(*p).is_none()) {
        return Err(DomainError::NotFound);
    }
    let currency = prices[0].currency.clone();
    if prices.iter().any(|p| p.currency != currency) {
        return Err(DomainError::field(
            "items",
            "all prices must be in the same currency",
        ));
    }
    Ok(prices)
}

/// The order's lines, in the order the buyer listed them.
async fn insert_items(
    conn: &mut PgConnection,
    order_id: Uuid,
    lines: &[(Uuid, i32)],
    prices: &[LinePrice],
) -> DomainResult<()> {
    let price_of = |id: Uuid| prices.iter().find(|x| x.id == id);
    for (p, q) in lines {
        let price = price_of(*p).expect("checked above");
        sqlx::query!(
            // `clock_timestamp()`, not the transaction's `now()`: the lines keep the order the
            // buyer listed them in (receipts and the Checkout Session list them by it).
            r#"INSERT INTO order_items (order_id, product_id, price_id, product_name, quantity, unit_amount_cents, total_cents, currency, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp())"#,
            order_id,
            price.product_id,
            price.id,
            price.product_name,
            q,
            price.amount_cents,
            price.amount_cents * i64::from(*q),
            price.currency
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Whether a price is sold through a Checkout Session that Granary creates (given a Stripe
/// key): a one-time price with `metadata.checkout = "stripe"`, or without a static
/// `metadata.checkout_url` unless `metadata.checkout = "static"`.
pub fn sells_through_stripe(metadata: &Value, billing_period: &str) -> bool {
    billing_period == "one_time"
        && match metadata.get("checkout").and_then(Value::as_str) {
            Some("stripe") => true,
            Some("static") => false,
            _ => metadata
                .get("checkout_url")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty),
        }
}

/// `POST /api/account/orders/create/` whole: the order is created and committed (see
/// [`create`]); then, for an order sold through Stripe that has no session yet, its Checkout
/// Session is created and stored ([`stripe_checkout::open_session`]). If Stripe fails, the
/// order stays pending without a URL and the error says so (502/503); a retry with the same
/// `Idempotency-Key` finds the order and asks Stripe again, under the same Stripe idempotency
/// key, so no second session is made.
pub async fn create_and_check_out(
    pool: &sqlx::PgPool,
    config: &Config,
    profile_id: Uuid,
    key: Option<&str>,
    b: CreateInput,
) -> DomainResult<(Created, bool)> {
    let mut tx = pool.begin().await?;
    let (mut out, created) = create(&mut tx, config, profile_id, key, b).await?;
    tx.commit().await?;
    if out.checkout.provider == "stripe"
        && out.checkout.checkout_url.is_empty()
        && out.order.status == OrderStatus::Pending
    {
        let url = crate::orders::stripe_checkout::open_session(pool, config, out.order.id).await?;
        out.order.checkout_url = Some(url.clone());
        out.checkout.checkout_url = url;
    }
    Ok((out, created))
}

/// Confirm body, as the starter sends it: `{"provider": "manual"|"clerk", "external_id"?,
/// "clerk_checkout_id"?, "raw_payload"?}` (`method` is accepted for `provider`; the default is
/// `clerk`).
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
pub struct ConfirmInput {
    /// `manual` or `clerk` (default).
    pub provider: Option<String>,
    /// Granary's earlier name for `provider`.
    pub method: Option<String>,
    /// The provider's reference.
    pub external_id: Option<String>,
    /// Clerk's checkout id.
    pub clerk_checkout_id: Option<String>,
    /// What the client saw, kept for the audit.
    #[schema(value_type = Option<Object>)]
    pub raw_payload: Option<Value>,
}

/// `POST /api/account/orders/<public_id>/confirm/`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Confirmed {
    /// The order: `paid` (fulfillment is a job) or later.
    pub order: OrderOut,
    /// It was paid before this call.
    pub already_confirmed: bool,
}

/// Confirms a pending order from the client: a manual confirm (development) or a client-side
/// Clerk confirm, each behind its switch. An already paid order answers as it is, without the
/// switches. Marks the order paid and enqueues fulfillment in the caller's transaction.
pub async fn confirm(
    conn: &mut PgConnection,
    config: &Config,
    profile_id: Uuid,
    clerk_user_id: &str,
    public_id: &str,
    b: ConfirmInput,
) -> DomainResult<Confirmed> {
    let provider = b
        .provider
        .or(b.method)
        .unwrap_or_else(|| "clerk".into())
        .to_lowercase();
    check_confirm(
        &provider,
        b.clerk_checkout_id.as_deref(),
        b.external_id.as_deref(),
    )?;
    let order = sqlx::query!(
        r#"SELECT id, status AS "status: OrderStatus", total_cents, currency FROM orders
           WHERE public_id = $1 AND customer_profile_id = $2 FOR UPDATE"#,
        public_id,
        profile_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(DomainError::NotFound)?;
    match order.status {
        OrderStatus::Paid | OrderStatus::Fulfilled => {
            return Ok(Confirmed {
                order: one(conn, profile_id, order.id).await?,
                already_confirmed: true,
            });
        }
        OrderStatus::Pending => {}
        other => {
            return Err(DomainError::conflict(format!(
                "Cannot confirm a {} order.",
                other.as_db()
            )));
        }
    }
    check_switches(config, &provider)?;
    sqlx::query!(
        "UPDATE orders SET external_reference = coalesce($2, external_reference), clerk_checkout_id = coalesce($3, clerk_checkout_id) WHERE id = $1",
        order.id,
        b.external_id,
        b.clerk_checkout_id
    )
    .execute(&mut *conn)
    .await?;
    let payment_id = format!("{provider}:{public_id}");
    orders::record_payment(
        conn,
        order.id,
        &Payment {
            provider: "manual",
            provider_payment_id: &payment_id,
            kind: "payment",
            amount_cents: order.total_cents,
            currency: &order.currency,
            webhook_event_id: None,
            raw: json!({ "confirmed_by": clerk_user_id, "provider": provider,
                         "external_id": b.external_id, "raw_payload": b.raw_payload }),
        },
        false,
    )
    .await?;
    Ok(Confirmed {
        order: one(conn, profile_id, order.id).await?,
        already_confirmed: false,
    })
}

/// The bounds of a confirm: a known provider, the references' lengths.
fn check_confirm(
    provider: &str,
    clerk_checkout_id: Option<&str>,
    external_id: Option<&str>,
) -> DomainResult<()> {
    let mut f = Fields::new();
    f.check(
        matches!(provider, "manual" | "clerk"),
        "provider",
        "manual or clerk",
    );
    f.check(
        clerk_checkout_id.is_none_or(|c| c.len() <= 128),
        "clerk_checkout_id",
        "at most 128 characters",
    );
    f.check(
        external_id.is_none_or(|c| c.len() <= 255),
        "external_id",
        "at most 255 characters",
    );
    f.finish()?;
    Ok(())
}

/// The switches that allow a client-side confirm: manual (`ORDER_CONFIRM_ALLOW_MANUAL`) and
/// Clerk (`ORDER_CONFIRM_ALLOW_CLIENT_SIDE_CLERK_CONFIRM`).
fn check_switches(config: &Config, provider: &str) -> DomainResult<()> {
    if provider == "manual" && !config.order_confirm_allow_manual {
        return Err(DomainError::Forbidden {
            code: "manual_confirm_disabled",
            message: "Manual order confirmation is disabled (ORDER_CONFIRM_ALLOW_MANUAL).".into(),
        });
    }
    if provider == "clerk" && !config.order_confirm_allow_client_side_clerk_confirm {
        return Err(DomainError::Conflict {
            code: "pending_verification",
            message: "Direct client-side Clerk confirmation is disabled: the payment is confirmed by Clerk's verified webhook.".into(),
        });
    }
    Ok(())
}
