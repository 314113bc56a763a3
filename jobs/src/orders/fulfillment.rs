//! What happens between "paid" and "the customer has what they bought": entitlements, download
//! grants, booking requests and the receipt (`fulfill_order`); grants for orders paid before
//! their asset was ready (`issue_grants`, queued when an asset is finalized). Every step is
//! idempotent by a unique key, so running any job twice changes nothing.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    Config,
    emails::{self, Draft},
    model::OrderStatus,
    orders::FulfillOrder,
    queue::{self, Job, JobContext, JobError, JobRefs},
};

/// `issue_grants`: grants of a newly ready asset for paid orders that lack one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueGrants {
    /// `digital_assets.id`.
    pub asset_id: Uuid,
}

impl Job for IssueGrants {
    const QUEUE: &'static str = "issue_grants";

    fn dedupe_key(&self) -> Option<String> {
        Some(self.asset_id.to_string())
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            asset_id: Some(self.asset_id),
            ..Default::default()
        }
    }
}

/// An order as [`write_grants`] found it, and what it wrote.
struct Granted {
    id: Uuid,
    public_id: String,
    status: OrderStatus,
    customer_profile_id: Uuid,
    total_cents: i64,
    currency: String,
    /// Receipt lines: "name × quantity".
    items: Vec<String>,
    /// Whether it sold a service (bookings and work orders follow).
    services: bool,
    /// Whether it sold a credit pack.
    packs: bool,
    /// Entitlements created now.
    entitlements: i64,
    /// Download grants created now.
    grants: i64,
    /// Whether it had download grants before (an earlier attempt, or another asset).
    had_grants: bool,
    /// Whether an item waits for its file (a placeholder grant).
    files_coming: bool,
}

/// The digital half of fulfilling `order_id`, in one statement (one round trip): the order is
/// locked and read with its receipt lines; if it is paid (or fulfilled), its items get their
/// download grants (only for `only_asset`, when given) and, for the `whole` order, their
/// entitlements, and a paid order becomes `fulfilled`. An order in any other state (refunded or
/// disputed before this ran) gets nothing. `None`: no such order.
///
/// Grants: one per order item and ready, active asset of its product. An item of a digital
/// product with no ready file yet gets a placeholder grant (no asset, never downloadable), which
/// becomes the real grant when an asset is finalized (`issue_grants`). Tokens are 160 bits from
/// PostgreSQL's CSPRNG (`gen_random_bytes`). The order's items are read first (a materialized
/// CTE, so by `order_items_order_idx`), then their products and assets. Left to itself, the
/// planner started from the product's assets and walked every order item of that product,
/// filtering by order: measured on a burst of orders for one product on a fresh database
/// (statistics not yet gathered), 1.2 ms per fulfillment and growing with each sale, the
/// costliest statement of the burst.
async fn write_grants(
    conn: &mut PgConnection,
    config: &Config,
    order_id: Uuid,
    only_asset: Option<Uuid>,
    whole: bool,
) -> sqlx::Result<Option<Granted>> {
    sqlx::query_file_as!(
        Granted,
        "queries/write_grants.sql",
        order_id,
        only_asset,
        config.download_default_expiry_days,
        config.download_default_max,
        whole,
    )
    .fetch_optional(conn)
    .await
}

fn money(cents: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", cents / 100, cents % 100)
}

/// Runs `fulfill_order`. Only a paid (or already fulfilled) order is fulfilled: one refunded or
/// disputed before this job ran gets nothing.
pub async fn fulfill_order(ctx: JobContext, job: FulfillOrder) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    // Entitlements, download grants and the order's new status, with the order locked and read
    // for the receipt: one statement. A digital order's fulfillment is then only its receipt.
    let Some(order) = write_grants(&mut tx, &ctx.config, job.order_id, None, true).await? else {
        return Err(JobError::permanent(anyhow::anyhow!(
            "order {} does not exist",
            job.order_id
        )));
    };
    if !matches!(order.status, OrderStatus::Paid | OrderStatus::Fulfilled) {
        tracing::warn!(order_id = %order.id, status = order.status.as_db(), "not fulfilling an order that is not paid");
        return Ok(());
    }
    let mut bookings = 0;
    if order.services {
        bookings = open_services(&mut tx, &order).await?;
    }
    queue_receipt(&mut tx, &ctx.config, &order).await?;
    if bookings > 0 {
        queue_booking_email(&mut tx, &order).await?;
    }
    // Grants, bookings, the receipt's job and this job's completion: one commit.
    queue::commit_completing(tx).await?;
    tracing::info!(order_id = %order.id, entitlements = order.entitlements, grants = order.grants, bookings, "order fulfilled");
    Ok(())
}

/// Services: one booking request per paid service item, and a work order each (the seller
/// moves it along). Returns the booking requests made now.
async fn open_services(conn: &mut PgConnection, order: &Granted) -> sqlx::Result<u64> {
    let bookings = sqlx::query!(
        r#"
            INSERT INTO bookings (profile_id, service_offer_id, order_item_id, status)
            SELECT $2, s.id, oi.id, 'requested'
            FROM order_items oi JOIN service_offers s ON s.product_id = oi.product_id
            WHERE oi.order_id = $1
            ON CONFLICT (order_item_id) WHERE order_item_id IS NOT NULL DO NOTHING
            "#,
        order.id,
        order.customer_profile_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // Service items also open a work order the seller moves along.
    let work_orders = crate::bookings::work_orders::open_for_order(conn, order.id).await?;
    tracing::debug!(order_id = %order.id, work_orders, "work orders opened");
    Ok(bookings)
}

/// Queues the order's receipt: its lines and total, credits added, downloads ready or coming.
async fn queue_receipt(
    conn: &mut PgConnection,
    config: &Config,
    order: &Granted,
) -> sqlx::Result<()> {
    let downloads = format!(
        "{}/account/downloads",
        config.frontend_app_url.as_str().trim_end_matches('/')
    );
    // Grants made now, or by an earlier attempt.
    let has_downloads = order.grants > 0 || order.had_grants;
    let mut lines = vec![format!("Thank you for your order {}.", order.public_id)];
    lines.extend(order.items.iter().cloned());
    lines.push(format!(
        "Total paid: {}",
        money(order.total_cents, &order.currency)
    ));
    // Credit packs: added once per item and unit, and said in the receipt.
    if order.packs {
        for (unit, amount) in
            crate::billing::credits::grant_order_packs(&mut *conn, order.id).await?
        {
            lines.push(format!(
                "{} {unit} added",
                crate::billing::credits::thousands(amount)
            ));
        }
    }
    if has_downloads {
        lines.push("Your downloads are ready in your account (sign in to download).".into());
    }
    if order.files_coming {
        lines.push(
            "A file you bought is not uploaded yet: it appears in your downloads when the seller \
             adds it, and we will email you then."
                .into(),
        );
    }
    let link =
        (has_downloads || order.files_coming).then_some(("Your downloads", downloads.as_str()));
    let subject = format!("Your receipt for order {}", order.public_id);
    emails::queue_email(
        conn,
        &Draft {
            dedupe_key: format!("receipt:{}", order.id),
            kind: "receipt",
            html: emails::html(&subject, &lines, link),
            text: emails::text(&subject, &lines, link),
            subject,
            order_id: Some(order.id),
            profile_id: order.customer_profile_id,
        },
    )
    .await?;
    Ok(())
}

/// Queues the buyer's "booking request received" email for the order.
async fn queue_booking_email(conn: &mut PgConnection, order: &Granted) -> sqlx::Result<()> {
    let subject = format!("We received your booking request ({})", order.public_id);
    let lines = vec!["Thank you! We will confirm a time with you shortly.".to_string()];
    emails::queue_email(
        conn,
        &Draft {
            dedupe_key: format!("booking_request:{}", order.id),
            kind: "booking_request",
            html: emails::html(&subject, &lines, None),
            text: emails::text(&subject, &lines, None),
            subject,
            order_id: Some(order.id),
            profile_id: order.customer_profile_id,
        },
    )
    .await?;
    Ok(())
}
/// Runs `issue_grants`: every paid order of the asset's product that lacks a grant for it gets
/// one, and its buyer an email.
pub async fn issue_grants(ctx: JobContext, job: IssueGrants) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    let orders = sqlx::query!(
        r#"SELECT DISTINCT o.id, o.public_id, o.customer_profile_id FROM orders o
           JOIN order_items oi ON oi.order_id = o.id JOIN digital_assets a ON a.product_id = oi.product_id
           WHERE a.id = $1 AND o.status IN ('paid', 'fulfilled')"#,
        job.asset_id
    )
    .fetch_all(&mut *tx)
    .await?;
    let downloads = format!(
        "{}/account/downloads",
        ctx.config.frontend_app_url.as_str().trim_end_matches('/')
    );
    for o in orders {
        let granted = write_grants(&mut tx, &ctx.config, o.id, Some(job.asset_id), false).await?;
        if granted.is_some_and(|g| g.grants > 0) {
            let subject = format!("A download for order {} is ready", o.public_id);
            let lines =
                vec!["A file you bought is now ready to download from your account.".to_string()];
            let link = Some(("Your downloads", downloads.as_str()));
            emails::queue_email(
                &mut tx,
                &Draft {
                    dedupe_key: format!("grant_issued:{}:{}", o.id, job.asset_id),
                    kind: "grant_issued",
                    html: emails::html(&subject, &lines, link),
                    text: emails::text(&subject, &lines, link),
                    subject,
                    order_id: Some(o.id),
                    profile_id: o.customer_profile_id,
                },
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
