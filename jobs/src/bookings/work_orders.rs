//! Work orders: a paid service item opens one; the seller moves it along
//! (`requested` → `in_progress` → `ready_for_delivery` → `completed`, or `canceled`), each move
//! audited in `work_order_events` and emailed to the buyer through the email job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    emails::{self, Draft},
    error::{DomainError, DomainResult, Fields},
    model::{DeliveryMode, WorkOrderStatus},
};

/// A work order, for its buyer and its seller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkOrderOut {
    /// Id.
    pub id: Uuid,
    /// The paid order item.
    pub order_item: Uuid,
    /// The order's public id.
    pub order_public_id: String,
    /// Product.
    pub product: Uuid,
    /// Product name.
    pub product_name: String,
    /// `requested`, `in_progress`, `ready_for_delivery`, `completed`, `canceled`.
    pub status: WorkOrderStatus,
    /// `downloadable` or `physical_shipped`.
    pub delivery_mode: DeliveryMode,
    /// What the buyer asked for (the order's notes).
    pub customer_request: String,
    /// The seller's notes for the buyer.
    pub delivery_notes: String,
    /// Due (payment + the offer's delivery days).
    pub due_at: Option<DateTime<Utc>>,
    /// Completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Shipped.
    pub shipped_at: Option<DateTime<Utc>>,
    /// Carrier.
    pub shipping_carrier: String,
    /// Tracking number.
    pub shipping_tracking_number: String,
    /// Tracking URL.
    pub shipping_tracking_url: String,
    /// The download grant attached for delivery.
    pub download_grant: Option<Uuid>,
    /// Its token (for the buyer's access route).
    pub download_token: Option<String>,
    /// The attached download can be used now.
    pub download_ready: bool,
    /// The buyer's profile.
    pub customer_profile: Uuid,
    /// Free-form.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// Opens the work orders of a paid order's service items, in the fulfillment transaction.
/// Unique by order item: a retried fulfillment opens none twice. Returns how many were opened.
pub async fn open_for_order(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        r#"
        INSERT INTO work_orders (order_item_id, profile_id, product_id, delivery_mode, customer_request, due_at)
        SELECT oi.id, o.customer_profile_id, oi.product_id,
               CASE WHEN lower(coalesce(s.metadata->>'delivery_mode', '')) IN ('physical', 'shipped', 'physical_shipped')
                    THEN 'physical_shipped' ELSE 'downloadable' END,
               left(o.notes, 4000),
               coalesce(o.paid_at, now()) + make_interval(days => coalesce(s.delivery_days, 7))
        FROM orders o
        JOIN order_items oi ON oi.order_id = o.id
        JOIN products p ON p.id = oi.product_id
        LEFT JOIN service_offers s ON s.product_id = p.id
        WHERE o.id = $1 AND p.product_type = 'service'
        ON CONFLICT (order_item_id) DO NOTHING
        "#,
        order_id
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// Work orders visible to a buyer (`buyer`), or to a seller (`seller`: their products; `None`
/// with `admin`: all), optionally one of them or those in one status, newest first.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The buyer's profile.
    pub buyer: Option<Uuid>,
    /// The seller's profile.
    pub seller: Option<Uuid>,
    /// Every seller's (operator).
    pub admin: bool,
    /// One work order.
    pub id: Option<Uuid>,
    /// One status.
    pub status: Option<WorkOrderStatus>,
}

/// Lists work orders in a scope (at most 500).
pub async fn list(db: impl PgExecutor<'_>, s: &Scope) -> sqlx::Result<Vec<WorkOrderOut>> {
    let rows = sqlx::query!(
        r#"SELECT w.id, w.order_item_id, o.public_id, w.product_id, p.name AS product_name,
                  w.status AS "status: WorkOrderStatus", w.delivery_mode AS "delivery_mode: DeliveryMode",
                  w.customer_request, w.delivery_notes, w.due_at, w.completed_at, w.shipped_at, w.shipping_carrier,
                  w.shipping_tracking_number, w.shipping_tracking_url, w.download_grant_id, g.token AS "token?",
                  coalesce(granary_can_download(g, a), false) AS "download_ready!", w.profile_id, w.metadata,
                  w.created_at, w.updated_at
           FROM work_orders w
           JOIN order_items oi ON oi.id = w.order_item_id JOIN orders o ON o.id = oi.order_id
           JOIN products p ON p.id = w.product_id
           LEFT JOIN download_grants g ON g.id = w.download_grant_id
           LEFT JOIN digital_assets a ON a.id = g.asset_id
           WHERE ($1::uuid IS NULL OR w.profile_id = $1)
             AND ($2::uuid IS NULL OR p.seller_profile_id = $2 OR $3)
             AND ($1::uuid IS NOT NULL OR $2::uuid IS NOT NULL OR $3)
             AND ($4::uuid IS NULL OR w.id = $4)
             AND ($5::text IS NULL OR w.status = $5)
           ORDER BY w.created_at DESC LIMIT 500"#,
        s.buyer,
        s.seller,
        s.admin,
        s.id,
        s.status.map(WorkOrderStatus::as_db),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|w| WorkOrderOut {
            id: w.id,
            order_item: w.order_item_id,
            order_public_id: w.public_id,
            product: w.product_id,
            product_name: w.product_name,
            status: w.status,
            delivery_mode: w.delivery_mode,
            customer_request: w.customer_request,
            delivery_notes: w.delivery_notes,
            due_at: w.due_at,
            completed_at: w.completed_at,
            shipped_at: w.shipped_at,
            shipping_carrier: w.shipping_carrier,
            shipping_tracking_number: w.shipping_tracking_number,
            shipping_tracking_url: w.shipping_tracking_url,
            download_grant: w.download_grant_id,
            download_token: w.token,
            download_ready: w.download_ready,
            customer_profile: w.profile_id,
            metadata: w.metadata,
            created_at: w.created_at,
            updated_at: w.updated_at,
        })
        .collect())
}

/// A seller's change to a work order: a status move and/or delivery details.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
pub struct WorkOrderUpdate {
    /// The new status.
    pub status: Option<WorkOrderStatus>,
    /// Notes for the buyer.
    pub delivery_notes: Option<String>,
    /// `downloadable` or `physical_shipped`.
    pub delivery_mode: Option<DeliveryMode>,
    /// Carrier.
    pub shipping_carrier: Option<String>,
    /// Tracking number (setting one marks the order shipped).
    pub shipping_tracking_number: Option<String>,
    /// Tracking URL (http or https).
    pub shipping_tracking_url: Option<String>,
    /// A download grant of the same buyer to deliver with it.
    pub download_grant: Option<Uuid>,
    /// Why (kept on the audit row).
    pub note: Option<String>,
}

/// Applies a seller's change. The status move must be legal (409 otherwise); the move is
/// audited and the buyer is emailed, in the same transaction.
pub async fn update(
    conn: &mut PgConnection,
    scope: &Scope,
    actor: &str,
    frontend: &str,
    b: WorkOrderUpdate,
) -> DomainResult<WorkOrderOut> {
    check_update(&b)?;
    let current = list(&mut *conn, scope)
        .await?
        .pop()
        .ok_or(DomainError::NotFound)?;
    // Lock the row: two moves at once must see each other.
    let status = sqlx::query_scalar!(
        r#"SELECT status AS "status: WorkOrderStatus" FROM work_orders WHERE id = $1 FOR UPDATE"#,
        current.id
    )
    .fetch_one(&mut *conn)
    .await?;
    if let Some(to) = b.status
        && !status.can_move_to(to)
    {
        return Err(DomainError::conflict(format!(
            "A work order cannot move from {} to {}.",
            status.as_db(),
            to.as_db()
        )));
    }
    if let Some(g) = b.download_grant {
        check_grant(&mut *conn, g, current.customer_profile).await?;
    }
    sqlx::query!(
        r#"UPDATE work_orders SET status = coalesce($2, status), delivery_notes = coalesce($3, delivery_notes),
               delivery_mode = coalesce($4, delivery_mode), shipping_carrier = coalesce($5, shipping_carrier),
               shipping_tracking_number = coalesce($6, shipping_tracking_number),
               shipping_tracking_url = coalesce($7, shipping_tracking_url),
               download_grant_id = coalesce($8, download_grant_id),
               completed_at = CASE WHEN $2 = 'completed' THEN now() ELSE completed_at END,
               shipped_at = CASE WHEN coalesce($6, '') <> '' THEN coalesce(shipped_at, now()) ELSE shipped_at END
           WHERE id = $1"#,
        current.id,
        b.status.map(WorkOrderStatus::as_db),
        b.delivery_notes,
        b.delivery_mode.map(|m| match m {
            DeliveryMode::Downloadable => "downloadable",
            DeliveryMode::PhysicalShipped => "physical_shipped",
        }),
        b.shipping_carrier,
        b.shipping_tracking_number,
        b.shipping_tracking_url,
        b.download_grant,
    )
    .execute(&mut *conn)
    .await?;
    if let Some(to) = b.status {
        let event_id =
            audit_move(&mut *conn, current.id, actor, status, to, b.note.as_deref()).await?;
        let notes = b.delivery_notes.as_deref();
        email_move(conn, &current, frontend, to, event_id, notes).await?;
    }
    list(&mut *conn, scope)
        .await?
        .pop()
        .ok_or(DomainError::NotFound)
}

/// The change's bounds: text lengths and an http(s) tracking URL.
fn check_update(b: &WorkOrderUpdate) -> DomainResult<()> {
    let mut f = Fields::new();
    f.check(
        b.delivery_notes.as_deref().is_none_or(|n| n.len() <= 4000),
        "delivery_notes",
        "at most 4000 characters",
    );
    f.check(
        b.shipping_carrier.as_deref().is_none_or(|n| n.len() <= 100),
        "shipping_carrier",
        "at most 100 characters",
    );
    f.check(
        b.shipping_tracking_number
            .as_deref()
            .is_none_or(|n| n.len() <= 200),
        "shipping_tracking_number",
        "at most 200 characters",
    );
    f.check(
        b.shipping_tracking_url.as_deref().is_none_or(|u| {
            u.is_empty() || url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        }),
        "shipping_tracking_url",
        "must be an http(s) URL",
    );
    f.finish()?;
    Ok(())
}

/// Refuses a download grant that is not the buyer's.
async fn check_grant(conn: &mut PgConnection, g: Uuid, customer_profile: Uuid) -> DomainResult<()> {
    let ok = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM download_grants WHERE id = $1 AND profile_id = $2) AS "e!""#,
        g,
        customer_profile
    )
    .fetch_one(&mut *conn)
    .await?;
    if !ok {
        return Err(DomainError::field(
            "download_grant",
            "must be a download grant of this buyer",
        ));
    }
    Ok(())
}

/// Audits a status move in `work_order_events`; returns the event's id.
async fn audit_move(
    conn: &mut PgConnection,
    work_order_id: Uuid,
    actor: &str,
    from: WorkOrderStatus,
    to: WorkOrderStatus,
    note: Option<&str>,
) -> DomainResult<i64> {
    let event_id = sqlx::query_scalar!(
        "INSERT INTO work_order_events (work_order_id, actor, from_status, to_status, note) VALUES ($1, $2, $3, $4, coalesce($5, '')) RETURNING id",
        work_order_id,
        actor,
        from.as_db(),
        to.as_db(),
        note
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(event_id)
}

/// Queues the buyer's email about a status move (with the seller's delivery notes, if any).
async fn email_move(
    conn: &mut PgConnection,
    current: &WorkOrderOut,
    frontend: &str,
    to: WorkOrderStatus,
    event_id: i64,
    delivery_notes: Option<&str>,
) -> DomainResult<()> {
    let subject = format!("Your order of {}: {}", current.product_name, label(to));
    let mut lines = vec![format!(
        "Your work order for {} is now {}.",
        current.product_name,
        label(to)
    )];
    if let Some(n) = delivery_notes.filter(|n| !n.is_empty()) {
        lines.push(n.to_string());
    }
    let link = format!("{}/account/orders/work", frontend.trim_end_matches('/'));
    emails::queue_email(
        conn,
        &Draft {
            dedupe_key: format!("work_order:{}:{event_id}", current.id),
            kind: "work_order_status",
            html: emails::html(&subject, &lines, Some(("Your orders", &link))),
            text: emails::text(&subject, &lines, Some(("Your orders", &link))),
            subject,
            order_id: None,
            profile_id: current.customer_profile,
        },
    )
    .await?;
    Ok(())
}
fn label(s: WorkOrderStatus) -> &'static str {
    match s {
        WorkOrderStatus::Requested => "requested",
        WorkOrderStatus::InProgress => "in progress",
        WorkOrderStatus::ReadyForDelivery => "ready for delivery",
        WorkOrderStatus::Completed => "completed",
        WorkOrderStatus::Canceled => "canceled",
    }
}

/// Cancels the open work orders of a refunded or disputed order (in `revoke_source`).
pub async fn cancel_for_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    reason: &str,
) -> sqlx::Result<u64> {
    let rows = sqlx::query_scalar!(
        r#"UPDATE work_orders w SET status = 'canceled' FROM order_items oi
           WHERE oi.id = w.order_item_id AND oi.order_id = $1
             AND w.status IN ('requested', 'in_progress', 'ready_for_delivery')
           RETURNING w.id"#,
        order_id
    )
    .fetch_all(&mut *conn)
    .await?;
    for id in &rows {
        sqlx::query!(
            "INSERT INTO work_order_events (work_order_id, actor, to_status, note) VALUES ($1, 'system', 'canceled', $2)",
            id,
            reason
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(rows.len() as u64)
}
