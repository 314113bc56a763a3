//! Bookings of service offers: the seed-era request (`{service_offer, customer_notes}`, no time
//! yet) and Granary's timed booking (`starts_at`, inside the offer's window and capacity).

pub mod work_orders;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::{DomainError, DomainResult, Fields};

/// A booking as its customer sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BookingOut {
    /// Id.
    pub id: Uuid,
    /// The offer (the starter's name).
    pub service_offer: Uuid,
    /// The offer.
    pub service_offer_id: Uuid,
    /// Product name.
    pub product_name: String,
    /// The paid order item, when fulfillment opened it.
    pub order_item: Option<Uuid>,
    /// `requested`, `confirmed`, `completed`, `canceled`.
    pub status: String,
    /// Start, once agreed.
    pub scheduled_start: Option<DateTime<Utc>>,
    /// End (start + session length).
    pub scheduled_end: Option<DateTime<Utc>>,
    /// Granary's name for `scheduled_start`.
    pub starts_at: Option<DateTime<Utc>>,
    /// Session length.
    pub duration_minutes: i32,
    /// Where (the offer's location).
    pub meeting_url: String,
    /// The customer's notes.
    pub customer_notes: String,
    /// Granary's name for `customer_notes`.
    pub notes: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// The customer's bookings (or one), newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    profile_id: Uuid,
    only: Option<Uuid>,
) -> sqlx::Result<Vec<BookingOut>> {
    let rows = sqlx::query!(
        r#"SELECT b.id, b.service_offer_id, b.order_item_id, b.status, b.starts_at, b.ends_at, b.notes, b.created_at, b.updated_at,
                  p.name AS product_name, s.duration_minutes, s.location
           FROM bookings b JOIN service_offers s ON s.id = b.service_offer_id JOIN products p ON p.id = s.product_id
           WHERE b.profile_id = $1 AND ($2::uuid IS NULL OR b.id = $2) ORDER BY b.created_at DESC"#,
        profile_id,
        only
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|b| BookingOut {
            id: b.id,
            service_offer: b.service_offer_id,
            service_offer_id: b.service_offer_id,
            product_name: b.product_name,
            order_item: b.order_item_id,
            status: b.status,
            scheduled_start: b.starts_at,
            scheduled_end: b.ends_at,
            starts_at: b.starts_at,
            duration_minutes: b.duration_minutes,
            meeting_url: b.location,
            customer_notes: b.notes.clone(),
            notes: b.notes,
            created_at: b.created_at,
            updated_at: b.updated_at,
        })
        .collect())
}

/// Booking body: the seed-era `{service_offer, customer_notes}` or Granary's
/// `{service_offer_id | product_id, starts_at, notes}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct BookingInput {
    /// The offer (the starter's name).
    pub service_offer: Option<Uuid>,
    /// The offer.
    pub service_offer_id: Option<Uuid>,
    /// Or the service product.
    pub product_id: Option<Uuid>,
    /// A start time; without one the booking is a request for the seller to schedule.
    pub starts_at: Option<DateTime<Utc>>,
    /// The customer's notes (the starter's name).
    pub customer_notes: Option<String>,
    /// The customer's notes.
    pub notes: Option<String>,
    /// The paid order item this session is booked on (the starter's name); by default the
    /// buyer's oldest paid item of the service that has no session booked yet.
    pub order_item: Option<Uuid>,
}

/// Books an offer. A request without a time asks the seller to schedule one and takes no
/// capacity. A timed booking must fall inside the offer's window (after its minimum notice),
/// and the sessions it overlaps (intervals of the offer's length, not only equal start times)
/// must leave a seat at every instant of it; the offer row is locked while counting, so two
/// requests for the last seat cannot both get it. A timed session is booked on a paid order
/// item of the service (the request fulfillment opened for it is scheduled, else a new booking
/// names the item), one session per item; the seller of the service (or an admin) books their
/// own calendar without one.
pub async fn create(
    conn: &mut PgConnection,
    profile_id: Uuid,
    b: BookingInput,
) -> DomainResult<BookingOut> {
    let offer_id = b.service_offer.or(b.service_offer_id);
    let notes = b.customer_notes.or(b.notes).unwrap_or_default();
    check_booking(offer_id, b.product_id, &notes)?;
    let offer = sqlx::query!(
        r#"SELECT s.id, s.capacity, s.booking_window_days, s.min_notice_hours, s.duration_minutes, s.product_id,
                  (p.seller_profile_id = $3 OR EXISTS (SELECT 1 FROM profiles me WHERE me.id = $3 AND me.role = 'admin')) AS "own!"
           FROM service_offers s JOIN products p ON p.id = s.product_id
           WHERE (s.id = $1 OR s.product_id = $2) AND s.is_active AND p.deleted_at IS NULL AND p.visibility = 'published'
           FOR UPDATE OF s"#,
        offer_id,
        b.product_id,
        profile_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(DomainError::NotFound)?;
    let mut slot = None;
    let mut item = None;
    if let Some(starts_at) = b.starts_at {
        let now = Utc::now();
        let earliest = now + chrono::Duration::hours(i64::from(offer.min_notice_hours));
        let latest = now + chrono::Duration::days(i64::from(offer.booking_window_days));
        if starts_at < earliest || starts_at > latest {
            return Err(DomainError::field(
                "starts_at",
                format!("must be between {earliest} and {latest}"),
            ));
        }
        let ends_at = starts_at + chrono::Duration::minutes(i64::from(offer.duration_minutes));
        if !offer.own {
            item = Some(paid_item(&mut *conn, profile_id, offer.product_id, b.order_item).await?);
        }
        check_capacity(&mut *conn, offer.id, offer.capacity, starts_at, ends_at).await?;
        slot = Some((starts_at, ends_at));
    }
    let id = schedule(&mut *conn, profile_id, offer.id, item, slot, &notes).await?;
    let booking = list(&mut *conn, profile_id, Some(id))
        .await?
        .pop()
        .ok_or(DomainError::NotFound)?;
    queue_request_email(&mut *conn, profile_id, id, &booking).await?;
    Ok(booking)
}

/// The booking body's bounds: an offer (or its product) is named, the notes are not too long.
fn check_booking(
    offer_id: Option<Uuid>,
    product_id: Option<Uuid>,
    notes: &str,
) -> DomainResult<()> {
    let mut f = Fields::new();
    f.check(
        offer_id.is_some() || product_id.is_some(),
        "service_offer",
        "service_offer is required.",
    );
    f.check(
        notes.len() <= 4000,
        "customer_notes",
        "at most 4000 characters",
    );
    f.finish()?;
    Ok(())
}

/// Refuses a session that would leave no seat at some instant of `[starts_at, ends_at)`.
async fn check_capacity(
    conn: &mut PgConnection,
    offer_id: Uuid,
    capacity: i32,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
) -> DomainResult<()> {
    // The most sessions running at once inside [starts_at, ends_at): the count peaks at a
    // start, so it is enough to count at this one's start and at every overlapping start.
    let busiest = sqlx::query_scalar!(
        r#"
            WITH overlapping AS (
                SELECT starts_at, ends_at FROM bookings
                WHERE service_offer_id = $1 AND status <> 'canceled' AND starts_at < $3 AND ends_at > $2
            )
            SELECT coalesce(max((SELECT count(*) FROM overlapping o WHERE o.starts_at <= p.at AND o.ends_at > p.at)), 0) AS "n!"
            FROM (SELECT $2::timestamptz AS at UNION SELECT starts_at FROM overlapping WHERE starts_at > $2) p
            "#,
        offer_id,
        starts_at,
        ends_at
    )
    .fetch_one(&mut *conn)
    .await?;
    if busiest >= i64::from(capacity) {
        return Err(DomainError::conflict(
            "This time slot is fully booked (it overlaps sessions that fill the offer's capacity).",
        ));
    }
    Ok(())
}

/// Writes the booking: schedules the request fulfillment opened for `item`, else inserts a new
/// row. Returns its id.
async fn schedule(
    conn: &mut PgConnection,
    profile_id: Uuid,
    offer_id: Uuid,
    item: Option<Uuid>,
    slot: Option<(DateTime<Utc>, DateTime<Utc>)>,
    notes: &str,
) -> DomainResult<Uuid> {
    let (starts_at, ends_at) = slot.unzip();
    // The request fulfillment opened for this item is the one scheduled; otherwise a new row.
    let scheduled = match item {
        Some(item) => {
            sqlx::query_scalar!(
                r#"UPDATE bookings SET starts_at = $2, ends_at = $3, status = 'requested',
                       notes = CASE WHEN $4 = '' THEN notes ELSE $4 END
                   WHERE order_item_id = $1 AND (starts_at IS NULL OR status = 'canceled') RETURNING id"#,
                item,
                starts_at,
                ends_at,
                notes
            )
            .fetch_optional(&mut *conn)
            .await?
        }
        None => None,
    };
    let id = match scheduled {
        Some(id) => id,
        None => {
            sqlx::query_scalar!(
                "INSERT INTO bookings (profile_id, service_offer_id, order_item_id, starts_at, ends_at, notes) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                profile_id,
                offer_id,
                item,
                starts_at,
                ends_at,
                notes
            )
            .fetch_one(&mut *conn)
            .await?
        }
    };
    Ok(id)
}

/// Queues the customer's "booking request received" email.
async fn queue_request_email(
    conn: &mut PgConnection,
    profile_id: Uuid,
    id: Uuid,
    booking: &BookingOut,
) -> DomainResult<()> {
    // The customer hears that the request arrived (seed: "booked customer got no email"), in
    // the same transaction: no booking without its email, no email without its booking.
    let subject = format!("We received your booking request: {}", booking.product_name);
    let mut lines = vec![match booking.starts_at {
        Some(t) => format!(
            "You asked for {} on {} (UTC), for {} minutes.",
            booking.product_name,
            t.format("%A %e %B %Y at %H:%M"),
            booking.duration_minutes
        ),
        None => format!(
            "You asked for {}. We will propose a time shortly.",
            booking.product_name
        ),
    }];
    lines.push("We will confirm it by email. Thank you!".to_string());
    crate::emails::queue_email(
        &mut *conn,
        &crate::emails::Draft {
            dedupe_key: format!("booking_request:booking:{id}"),
            kind: "booking_request",
            html: crate::emails::html(&subject, &lines, None),
            text: crate::emails::text(&subject, &lines, None),
            subject,
            order_id: None,
            profile_id,
        },
    )
    .await?;
    Ok(())
}

/// The buyer's paid order item of `product_id` that a timed session may be booked on: `wanted`,
/// or the oldest one with no session booked yet. 403 `booking_not_paid` when there is none.
async fn paid_item(
    conn: &mut PgConnection,
    profile_id: Uuid,
    product_id: Uuid,
    wanted: Option<Uuid>,
) -> DomainResult<Uuid> {
    let item = sqlx::query_scalar!(
        r#"SELECT oi.id FROM order_items oi JOIN orders o ON o.id = oi.order_id
           WHERE o.customer_profile_id = $1 AND oi.product_id = $2 AND o.status IN ('paid', 'fulfilled')
             AND ($3::uuid IS NULL OR oi.id = $3)
             AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.order_item_id = oi.id AND b.starts_at IS NOT NULL AND b.status <> 'canceled')
           ORDER BY o.paid_at, oi.id LIMIT 1"#,
        profile_id,
        product_id,
        wanted
    )
    .fetch_optional(&mut *conn)
    .await?;
    item.ok_or_else(|| DomainError::Forbidden {
        code: "booking_not_paid",
        message: "A timed session is booked on a paid order of this service: buy it first (or every session you paid for is already booked).".into(),
    })
}
