//! Service offers: the starter's fields (`session_minutes`, `delivery_days`, `revision_count`,
//! `onboarding_instructions`, `metadata`) beside Granary's booking fields. Only a service
//! product has one.

use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::ServiceOfferOut;
use crate::{
    error::{DomainError, DomainResult, Fields},
    platform::bounds,
};

/// Offer body. PUT gives defaults to absent fields; PATCH changes only those given.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct OfferInput {
    /// The starter's name for `duration_minutes`.
    pub session_minutes: Option<i32>,
    /// Session length, 5 to 1440.
    pub duration_minutes: Option<i32>,
    /// Days until delivery.
    pub delivery_days: Option<i32>,
    /// Revisions included.
    pub revision_count: Option<i32>,
    /// What the buyer should prepare.
    pub onboarding_instructions: Option<String>,
    /// Bookings per start time.
    pub capacity: Option<i32>,
    /// How far ahead.
    pub booking_window_days: Option<i32>,
    /// How soon at the earliest.
    pub min_notice_hours: Option<i32>,
    /// IANA time zone.
    pub timezone: Option<String>,
    /// Where.
    pub location: Option<String>,
    /// Booking instructions.
    pub instructions: Option<String>,
    /// Bookable.
    pub is_active: Option<bool>,
    /// Free-form object.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

impl OfferInput {
    fn duration(&self) -> Option<i32> {
        self.duration_minutes.or(self.session_minutes)
    }

    fn check(&self) -> DomainResult<()> {
        let mut f = Fields::new();
        f.check(
            self.duration().is_none_or(|d| (5..=1440).contains(&d)),
            "session_minutes",
            "5 to 1440",
        );
        f.check(
            self.delivery_days.is_none_or(|d| (0..=3650).contains(&d)),
            "delivery_days",
            "0 to 3650",
        );
        f.check(
            self.revision_count.is_none_or(|d| (0..=1000).contains(&d)),
            "revision_count",
            "0 to 1000",
        );
        f.check(
            self.capacity.is_none_or(|c| (1..=10_000).contains(&c)),
            "capacity",
            "1 to 10000",
        );
        f.check(
            self.booking_window_days
                .is_none_or(|d| (1..=730).contains(&d)),
            "booking_window_days",
            "1 to 730",
        );
        f.check(
            self.min_notice_hours
                .is_none_or(|d| (0..=8760).contains(&d)),
            "min_notice_hours",
            "0 to 8760",
        );
        f.check(
            self.timezone.as_deref().is_none_or(bounds::is_timezone),
            "timezone",
            "an IANA time zone name, e.g. Europe/Berlin",
        );
        f.text(self.location.as_deref(), "location", bounds::NAME_CHARS);
        f.text(
            self.instructions.as_deref(),
            "instructions",
            bounds::PROSE_CHARS,
        );
        f.text(
            self.onboarding_instructions.as_deref(),
            "onboarding_instructions",
            bounds::PROSE_CHARS,
        );
        f.metadata(self.metadata.as_ref(), "metadata");
        f.finish()
    }
}

/// The offers of these products.
pub async fn load(
    db: impl PgExecutor<'_>,
    product_ids: &[Uuid],
) -> sqlx::Result<Vec<ServiceOfferOut>> {
    sqlx::query_as!(
        ServiceOfferOut,
        r#"SELECT id, product_id, duration_minutes AS session_minutes, duration_minutes, delivery_days, revision_count,
                  onboarding_instructions, capacity, booking_window_days, min_notice_hours, timezone, location,
                  instructions, is_active, metadata, updated_at
           FROM service_offers WHERE product_id = ANY($1)"#,
        product_ids
    )
    .fetch_all(db)
    .await
}

/// The offer of one product, or 404 with the starter's sentence.
pub async fn get(db: impl PgExecutor<'_>, product_id: Uuid) -> DomainResult<ServiceOfferOut> {
    load(db, &[product_id])
        .await?
        .pop()
        .ok_or(DomainError::NotFound)
}

async fn require_service(conn: &mut PgConnection, product_id: Uuid) -> DomainResult<()> {
    let t = sqlx::query_scalar!(
        "SELECT product_type FROM products WHERE id = $1",
        product_id
    )
    .fetch_one(&mut *conn)
    .await?;
    if t != "service" {
        return Err(DomainError::BadRequest(
            "Product is not a service product.".into(),
        ));
    }
    Ok(())
}

/// PUT: creates or replaces the offer (absent fields take their defaults).
pub async fn put(
    conn: &mut PgConnection,
    product_id: Uuid,
    b: &OfferInput,
) -> DomainResult<ServiceOfferOut> {
    require_service(conn, product_id).await?;
    b.check()?;
    sqlx::query!(
        r#"INSERT INTO service_offers (product_id, duration_minutes, capacity, booking_window_days, min_notice_hours, timezone,
                                       location, instructions, is_active, delivery_days, revision_count, onboarding_instructions, metadata)
           VALUES ($1, coalesce($2, 60), coalesce($3, 1), coalesce($4, 60), coalesce($5, 0), coalesce($6, 'UTC'), coalesce($7, ''),
                   coalesce($8, ''), coalesce($9, true), coalesce($10, 7), coalesce($11, 0), coalesce($12, ''), coalesce($13, '{}'::jsonb))
           ON CONFLICT (product_id) DO UPDATE SET duration_minutes = EXCLUDED.duration_minutes, capacity = EXCLUDED.capacity,
               booking_window_days = EXCLUDED.booking_window_days, min_notice_hours = EXCLUDED.min_notice_hours,
               timezone = EXCLUDED.timezone, location = EXCLUDED.location, instructions = EXCLUDED.instructions,
               is_active = EXCLUDED.is_active, delivery_days = EXCLUDED.delivery_days, revision_count = EXCLUDED.revision_count,
               onboarding_instructions = EXCLUDED.onboarding_instructions, metadata = EXCLUDED.metadata"#,
        product_id,
        b.duration(),
        b.capacity,
        b.booking_window_days,
        b.min_notice_hours,
        b.timezone,
        b.location,
        b.instructions,
        b.is_active,
        b.delivery_days,
        b.revision_count,
        b.onboarding_instructions,
        b.metadata,
    )
    .execute(&mut *conn)
    .await?;
    get(&mut *conn, product_id).await
}

/// PATCH: changes the fields given; 404 when there is no offer yet.
pub async fn patch(
    conn: &mut PgConnection,
    product_id: Uuid,
    b: &OfferInput,
) -> DomainResult<ServiceOfferOut> {
    require_service(conn, product_id).await?;
    b.check()?;
    let updated = sqlx::query!(
        r#"UPDATE service_offers SET duration_minutes = coalesce($2, duration_minutes), capacity = coalesce($3, capacity),
               booking_window_days = coalesce($4, booking_window_days), min_notice_hours = coalesce($5, min_notice_hours),
               timezone = coalesce($6, timezone), location = coalesce($7, location), instructions = coalesce($8, instructions),
               is_active = coalesce($9, is_active), delivery_days = coalesce($10, delivery_days),
               revision_count = coalesce($11, revision_count),
               onboarding_instructions = coalesce($12, onboarding_instructions), metadata = coalesce($13, metadata)
           WHERE product_id = $1"#,
        product_id,
        b.duration(),
        b.capacity,
        b.booking_window_days,
        b.min_notice_hours,
        b.timezone,
        b.location,
        b.instructions,
        b.is_active,
        b.delivery_days,
        b.revision_count,
        b.onboarding_instructions,
        b.metadata,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(DomainError::NotFound);
    }
    get(&mut *conn, product_id).await
}
