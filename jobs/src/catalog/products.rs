//! A seller's products: create (slug optional, derived from the name and made unique),
//! update, delete (soft when orders refer to it).

use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{is_feature_key, is_slug, normalize_feature_keys, slugify};
use crate::{
    error::{ConstraintExt, DomainError, DomainResult, Fields},
    platform::bounds,
};

/// Product create/update body: the starter's fields plus Granary's download policy.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ProductInput {
    /// Required on create.
    pub name: Option<String>,
    /// Optional: derived from the name (and made unique) when absent.
    pub slug: Option<String>,
    /// One-line pitch.
    pub tagline: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// digital (default), service, subscription.
    pub product_type: Option<String>,
    /// draft (default), published, archived.
    pub visibility: Option<String>,
    /// Normalised as the starter does: lower case, spaces to `_`, deduplicated.
    pub feature_keys: Option<Vec<String>>,
    /// Credits granted per unit bought, or per billing period for a subscription plan:
    /// `[{"unit": "tokens", "amount": 100000}]`.
    pub credit_grants: Option<Vec<crate::billing::credits::CreditGrant>>,
    /// The price storefronts sell; must be one of this product's.
    pub active_price: Option<Uuid>,
    /// Days a download grant lasts.
    pub download_expiry_days: Option<i32>,
    /// Downloads a grant allows.
    pub download_max: Option<i32>,
    /// Free-form object.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

impl ProductInput {
    fn check(&mut self, creating: bool) -> DomainResult<()> {
        if let Some(keys) = &self.feature_keys {
            self.feature_keys = Some(normalize_feature_keys(keys));
        }
        if let Some(s) = &self.slug {
            let s = s.trim();
            self.slug = Some(if is_slug(s) {
                s.to_string()
            } else {
                slugify(s)
            });
        }
        let mut f = Fields::new();
        if creating {
            f.check(self.name.is_some(), "name", "This field is required.");
        }
        if let Some(n) = &self.name {
            f.check(
                !n.trim().is_empty() && n.len() <= 200,
                "name",
                "must be 1 to 200 characters",
            );
        }
        f.check(
            self.tagline.as_deref().is_none_or(|t| t.len() <= 255),
            "tagline",
            "at most 255 characters",
        );
        if let Some(t) = &self.product_type {
            f.check(
                ["digital", "service", "subscription"].contains(&t.as_str()),
                "product_type",
                "one of digital, service, subscription",
            );
        }
        if let Some(v) = &self.visibility {
            f.check(
                ["draft", "published", "archived"].contains(&v.as_str()),
                "visibility",
                "one of draft, published, archived",
            );
        }
        if let Some(keys) = &self.feature_keys {
            f.check(
                keys.iter().all(|k| is_feature_key(k)),
                "feature_keys",
                "letters, digits and _ . : - only, 1 to 100 characters",
            );
        }
        if let Some(grants) = self.credit_grants.as_mut() {
            crate::billing::credits::check_grants(grants, &mut f);
        }
        f.text(
            self.description.as_deref(),
            "description",
            bounds::PROSE_CHARS,
        );
        f.check(
            self.download_expiry_days
                .is_none_or(|d| (1..=bounds::MAX_DAYS).contains(&i64::from(d))),
            "download_expiry_days",
            "1 to 3650 days",
        );
        f.check(
            self.download_max
                .is_none_or(|d| (1..=bounds::MAX_DOWNLOADS).contains(&d)),
            "download_max",
            "1 to 1000000",
        );
        f.metadata(self.metadata.as_ref(), "metadata");
        f.finish()
    }
}

fn grants_json(b: &ProductInput) -> Option<serde_json::Value> {
    b.credit_grants
        .as_ref()
        .map(|g| serde_json::to_value(g).expect("credit grants serialize"))
}

fn slug_taken() -> DomainError {
    DomainError::conflict("This slug is already taken.")
}

/// The first of `base`, `base-2`, `base-3`, ... that no product uses.
async fn free_slug(conn: &mut PgConnection, base: &str) -> sqlx::Result<String> {
    let taken: Vec<String> = sqlx::query_scalar!(
        r#"SELECT slug FROM products WHERE slug = $1 OR slug LIKE $1 || '-%'"#,
        base
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((1..)
        .map(|n| {
            if n == 1 {
                base.to_string()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|s| !taken.contains(s))
        .expect("an unbounded range has a free slug"))
}

async fn check_active_price(
    conn: &mut PgConnection,
    product_id: Uuid,
    price: Option<Uuid>,
) -> DomainResult<()> {
    let Some(price) = price else { return Ok(()) };
    let ok = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM prices WHERE id = $1 AND product_id = $2 AND deleted_at IS NULL) AS "e!""#,
        price,
        product_id
    )
    .fetch_one(&mut *conn)
    .await?;
    if ok {
        Ok(())
    } else {
        Err(DomainError::field(
            "active_price",
            "must be one of this product's prices",
        ))
    }
}

/// Creates a product for `seller`. A given slug that is taken is 409; a derived one is made
/// unique. Returns the new id.
pub async fn create(
    conn: &mut PgConnection,
    seller: Uuid,
    mut b: ProductInput,
) -> DomainResult<Uuid> {
    b.check(true)?;
    if b.active_price.is_some() {
        return Err(DomainError::field(
            "active_price",
            "a new product has no prices yet: set it after adding one",
        ));
    }
    let name = b.name.as_deref().map(str::trim).unwrap_or_default();
    let explicit = b.slug.is_some();
    // A derived slug can lose a race to a concurrent create: try the next free one.
    for _ in 0..5 {
        let slug = match &b.slug {
            Some(s) => s.clone(),
            None => free_slug(conn, &slugify(name)).await?,
        };
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO products (seller_profile_id, name, slug, tagline, description, product_type, visibility, feature_keys,
                                     download_expiry_days, download_max, metadata, credit_grants)
               VALUES ($1, $2, $3, coalesce($4, ''), coalesce($5, ''), coalesce($6, 'digital'), coalesce($7, 'draft'),
                       coalesce($8::text[], '{}'), $9, $10, coalesce($11, '{}'::jsonb), coalesce($12, '[]'::jsonb))
               ON CONFLICT (slug) DO NOTHING
               RETURNING id"#,
            seller,
            name,
            slug,
            b.tagline.as_deref().map(str::trim),
            b.description,
            b.product_type,
            b.visibility,
            b.feature_keys.as_deref(),
            b.download_expiry_days,
            b.download_max,
            b.metadata,
            grants_json(&b),
        )
        .fetch_optional(&mut *conn)
        .await?;
        match inserted {
            Some(id) => return Ok(id),
            None if explicit => return Err(slug_taken()),
            None => continue,
        }
    }
    Err(slug_taken())
}

/// Changes the fields given.
pub async fn update(conn: &mut PgConnection, id: Uuid, mut b: ProductInput) -> DomainResult<()> {
    b.check(false)?;
    check_active_price(conn, id, b.active_price).await?;
    sqlx::query!(
        r#"UPDATE products SET name = coalesce($2, name), slug = coalesce($3, slug), description = coalesce($4, description),
               product_type = coalesce($5, product_type), visibility = coalesce($6, visibility),
               feature_keys = coalesce($7, feature_keys), download_expiry_days = coalesce($8, download_expiry_days),
               download_max = coalesce($9, download_max), metadata = coalesce($10, metadata),
               tagline = coalesce($11, tagline), active_price_id = coalesce($12, active_price_id),
               credit_grants = coalesce($13, credit_grants)
           WHERE id = $1"#,
        id,
        b.name.as_deref().map(str::trim),
        b.slug,
        b.description,
        b.product_type,
        b.visibility,
        b.feature_keys.as_deref(),
        b.download_expiry_days,
        b.download_max,
        b.metadata,
        b.tagline.as_deref().map(str::trim),
        b.active_price,
        grants_json(&b),
    )
    .execute(&mut *conn)
    .await
    .on_constraint("products_slug_key", slug_taken)?;
    Ok(())
}

/// Deletes a product: one that orders refer to is archived and hidden (soft), with its prices;
/// one that no order refers to is deleted with its prices, assets and offer.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> DomainResult<()> {
    let referenced = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM order_items WHERE product_id = $1) AS "e!""#,
        id
    )
    .fetch_one(&mut *conn)
    .await?;
    if referenced {
        sqlx::query!(
            "UPDATE products SET deleted_at = now(), visibility = 'archived' WHERE id = $1",
            id
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!("UPDATE prices SET deleted_at = coalesce(deleted_at, now()), is_active = false WHERE product_id = $1", id)
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query!(
            "UPDATE products SET active_price_id = NULL WHERE id = $1",
            id
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!("DELETE FROM service_offers WHERE product_id = $1", id)
            .execute(&mut *conn)
            .await?;
        sqlx::query!("DELETE FROM digital_assets WHERE product_id = $1", id)
            .execute(&mut *conn)
            .await?;
        sqlx::query!("DELETE FROM prices WHERE product_id = $1", id)
            .execute(&mut *conn)
            .await?;
        sqlx::query!("DELETE FROM products WHERE id = $1", id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
