//! A seller's prices. A product has one default price: a new default demotes the old one.
//! Deleting a price that orders refer to is soft.

use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::BILLING_PERIODS;
use crate::error::{ConstraintExt, DomainError, DomainResult, Fields};
use crate::platform::bounds::{self, is_currency};

/// Price create/update body, as the starter's frontend sends it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct PriceInput {
    /// Label.
    pub name: Option<String>,
    /// Minor units, 0 or more (required on create).
    pub amount_cents: Option<i64>,
    /// ISO 4217 (upper-cased; required on create).
    pub currency: Option<String>,
    /// one_time (default), weekly, monthly, quarterly, yearly.
    pub billing_period: Option<String>,
    /// Make it the default (demotes the old default).
    pub is_default: Option<bool>,
    /// Purchasable.
    pub is_active: Option<bool>,
    /// Clerk plan mapping (`""`: none).
    pub clerk_plan_id: Option<String>,
    /// Clerk price mapping (`""`: none).
    pub clerk_price_id: Option<String>,
    /// Object; `checkout_url` (http or https) lives here. PATCH merges it key by key.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

impl PriceInput {
    fn check(&mut self, creating: bool) -> DomainResult<()> {
        // The starter upper-cases the currency; blank Clerk mappings mean none.
        self.currency = self
            .currency
            .as_deref()
            .map(|c| c.trim().to_ascii_uppercase());
        for id in [&mut self.clerk_plan_id, &mut self.clerk_price_id] {
            if id.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *id = None;
            }
        }
        let mut f = Fields::new();
        if creating {
            f.check(self.amount_cents.is_some(), "amount_cents", "required");
            f.check(self.currency.is_some(), "currency", "required");
        }
        f.check(
            self.amount_cents
                .is_none_or(|a| (0..=100_000_000_000).contains(&a)),
            "amount_cents",
            "must be 0 to 100000000000 (minor units)",
        );
        let code = self.currency.as_deref();
        if code.is_some_and(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase())) {
            f.check(false, "currency", "Currency must be a 3-letter code.");
        } else {
            f.check(
                code.is_none_or(is_currency),
                "currency",
                "Currency must be an active ISO 4217 code of money, e.g. USD (not XXX or XTS).",
            );
        }
        f.check(
            self.billing_period
                .as_deref()
                .is_none_or(|p| BILLING_PERIODS.contains(&p)),
            "billing_period",
            "one of one_time, weekly, monthly, quarterly, yearly",
        );
        f.text(self.name.as_deref(), "name", bounds::NAME_CHARS);
        f.text(
            self.clerk_plan_id.as_deref(),
            "clerk_plan_id",
            bounds::SHORT_CHARS,
        );
        f.text(
            self.clerk_price_id.as_deref(),
            "clerk_price_id",
            bounds::SHORT_CHARS,
        );
        f.metadata(self.metadata.as_ref(), "metadata");
        if let Some(url) = self.metadata.as_ref().and_then(|m| m.get("checkout_url")) {
            f.check(
                url.as_str().is_some_and(|u| {
                    u.is_empty()
                        || url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                }),
                "metadata.checkout_url",
                "must be an http(s) URL",
            );
        }
        f.finish()
    }
}

fn default_taken() -> DomainError {
    DomainError::conflict("This product already has a default price.")
}

/// Adds a price to a product; returns its id.
pub async fn create(
    conn: &mut PgConnection,
    product_id: Uuid,
    mut b: PriceInput,
) -> DomainResult<Uuid> {
    b.check(true)?;
    if b.is_default == Some(true) {
        sqlx::query!(
            "UPDATE prices SET is_default = false WHERE product_id = $1 AND is_default",
            product_id
        )
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query_scalar!(
        r#"INSERT INTO prices (product_id, name, amount_cents, currency, billing_period, is_default, is_active, clerk_plan_id, clerk_price_id, metadata)
           VALUES ($1, coalesce($2, ''), $3, $4, coalesce($5, 'one_time'), coalesce($6, false), coalesce($7, true), $8, $9, coalesce($10, '{}'::jsonb))
           RETURNING id"#,
        product_id,
        b.name,
        b.amount_cents,
        b.currency,
        b.billing_period,
        b.is_default,
        b.is_active,
        b.clerk_plan_id,
        b.clerk_price_id,
        b.metadata,
    )
    .fetch_one(&mut *conn)
    .await
    .on_constraint("prices_one_default_per_product", default_taken)
}

/// Changes the fields given; `metadata` is merged key by key (so a storefront can set just
/// `checkout_url`).
pub async fn update(conn: &mut PgConnection, id: Uuid, mut b: PriceInput) -> DomainResult<()> {
    b.check(false)?;
    if b.is_default == Some(true) {
        sqlx::query!(
            "UPDATE prices SET is_default = false WHERE product_id = (SELECT product_id FROM prices WHERE id = $1) AND is_default AND id <> $1",
            id
        )
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query!(
        r#"UPDATE prices SET name = coalesce($2, name), amount_cents = coalesce($3, amount_cents), currency = coalesce($4, currency),
               billing_period = coalesce($5, billing_period), is_default = coalesce($6, is_default), is_active = coalesce($7, is_active),
               clerk_plan_id = coalesce($8, clerk_plan_id), clerk_price_id = coalesce($9, clerk_price_id),
               metadata = metadata || coalesce($10, '{}'::jsonb)
           WHERE id = $1"#,
        id,
        b.name,
        b.amount_cents,
        b.currency,
        b.billing_period,
        b.is_default,
        b.is_active,
        b.clerk_plan_id,
        b.clerk_price_id,
        b.metadata,
    )
    .execute(&mut *conn)
    .await
    .on_constraint("prices_one_default_per_product", default_taken)?;
    Ok(())
}

/// Deletes a price: soft (inactive, hidden) when orders refer to it.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> DomainResult<()> {
    let referenced = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM order_items WHERE price_id = $1) AS "e!""#,
        id
    )
    .fetch_one(&mut *conn)
    .await?;
    if referenced {
        sqlx::query!(
            "UPDATE prices SET deleted_at = now(), is_active = false, is_default = false WHERE id = $1",
            id
        )
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query!("DELETE FROM prices WHERE id = $1", id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
