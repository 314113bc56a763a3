//! The catalog: products, prices, assets and service offers as storefronts and sellers read
//! them (docs/storefront.md §4.2, §4.3, §4.18), and the seller's changes to them.
//! "Published and purchasable" is the SQL function `granary_purchasable` (one rule for the
//! catalog, order creation and the doctor).

pub mod assets;
pub mod offers;
pub mod prices;
pub mod products;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A price as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceOut {
    /// Id.
    pub id: Uuid,
    /// Product.
    pub product_id: Uuid,
    /// Label.
    pub name: String,
    /// Minor units.
    pub amount_cents: i64,
    /// The amount as a decimal string in the currency's own minor unit: `"29.00"`, `"500"` for
    /// JPY.
    pub amount: String,
    /// ISO currency.
    pub currency: String,
    /// one_time, weekly, monthly, quarterly, yearly.
    pub billing_period: String,
    /// The product's default price.
    pub is_default: bool,
    /// Can be bought.
    pub is_active: bool,
    /// Clerk plan mapping.
    pub clerk_plan_id: Option<String>,
    /// Clerk price mapping.
    pub clerk_price_id: Option<String>,
    /// Free-form; `checkout_url` lives here.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// An asset as the public product page lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AssetSummary {
    /// Id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Version label (Granary versions by content; always null).
    pub version_label: Option<String>,
    /// Size once finalized.
    pub file_size_bytes: Option<i64>,
}

/// A service offer: the starter's fields and Granary's booking fields.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceOfferOut {
    /// Id.
    pub id: Uuid,
    /// Product.
    pub product_id: Uuid,
    /// Session length (the starter's name for `duration_minutes`).
    pub session_minutes: i32,
    /// Session length.
    pub duration_minutes: i32,
    /// Days until delivery.
    pub delivery_days: i32,
    /// Revisions included.
    pub revision_count: i32,
    /// What the buyer should prepare.
    pub onboarding_instructions: String,
    /// Bookings per start time.
    pub capacity: i32,
    /// How far ahead a slot may be booked.
    pub booking_window_days: i32,
    /// How soon at the earliest.
    pub min_notice_hours: i32,
    /// IANA time zone.
    pub timezone: String,
    /// Where.
    pub location: String,
    /// Booking instructions.
    pub instructions: String,
    /// Bookable.
    pub is_active: bool,
    /// Free-form; `delivery_mode` = physical/shipped makes work orders `physical_shipped`.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// A product as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProductOut {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub seller_profile_id: Uuid,
    /// Name.
    pub name: String,
    /// URL slug.
    pub slug: String,
    /// One-line pitch.
    pub tagline: String,
    /// Description.
    pub description: String,
    /// digital, service, subscription.
    pub product_type: String,
    /// draft, published, archived.
    pub visibility: String,
    /// Features granted to buyers.
    pub feature_keys: Vec<String>,
    /// Credits granted per unit bought (a pack) or, for a subscription plan, per billing period.
    pub credit_grants: Vec<crate::billing::credits::CreditGrant>,
    /// Download grant expiry (days), when set.
    pub download_expiry_days: Option<i32>,
    /// Download limit, when set.
    pub download_max: Option<i32>,
    /// Free-form.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Prices (active ones on the public list; all on the detail page and for the seller).
    pub prices: Vec<PriceOut>,
    /// The price a storefront shows and sells: the seller's chosen one, else the active
    /// default, else the cheapest active one.
    pub active_price: Option<PriceOut>,
    /// `active_price.id`.
    pub active_price_id: Option<Uuid>,
    /// Active assets.
    pub assets: Vec<AssetSummary>,
    /// The service offer, for service products that have one.
    pub service_offer: Option<ServiceOfferOut>,
}

/// `cents` as a decimal string in `currency`'s minor unit (ISO 4217 exponent; 2 when unknown).
pub fn format_amount(cents: i64, currency: &str) -> String {
    let exp = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2) as u32;
    if exp == 0 {
        return cents.to_string();
    }
    let div = 10i64.pow(exp);
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        a / div as u64,
        a % div as u64,
        width = exp as usize
    )
}

/// Django's `slugify`: ASCII letters and digits, lower case, runs of anything else as one
/// hyphen, at most 100 characters; `product` when nothing is left.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut s: String = out.trim_matches('-').chars().take(90).collect();
    s = s.trim_end_matches('-').to_string();
    if s.is_empty() { "product".into() } else { s }
}

/// `a-z0-9` words joined by single hyphens, at most 100 characters.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The starter's feature-key normalisation: trimmed, lower case, spaces to `_`, empty ones
/// dropped, duplicates removed (first one kept).
pub fn normalize_feature_keys(keys: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        let k = k
            .trim()
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("_");
        if !k.is_empty() && !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Entitlement keys: letters, digits and `_ . : -`, 1 to 100 characters.
pub fn is_feature_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// Billing periods a price may have.
pub const BILLING_PERIODS: [&str; 5] = ["one_time", "weekly", "monthly", "quarterly", "yearly"];

struct ProductRow {
    id: Uuid,
    seller_profile_id: Uuid,
    name: String,
    slug: String,
    tagline: String,
    description: String,
    product_type: String,
    visibility: String,
    feature_keys: Vec<String>,
    credit_grants: Value,
    download_expiry_days: Option<i32>,
    download_max: Option<i32>,
    metadata: Value,
    active_price_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct PriceRow {
    id: Uuid,
    product_id: Uuid,
    name: String,
    amount_cents: i64,
    currency: String,
    billing_period: String,
    is_default: bool,
    is_active: bool,
    clerk_plan_id: Option<String>,
    clerk_price_id: Option<String>,
    metadata: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<PriceRow> for PriceOut {
    fn from(r: PriceRow) -> Self {
        Self {
            amount: format_amount(r.amount_cents, &r.currency),
            id: r.id,
            product_id: r.product_id,
            name: r.name,
            amount_cents: r.amount_cents,
            currency: r.currency,
            billing_period: r.billing_period,
            is_default: r.is_default,
            is_active: r.is_active,
            clerk_plan_id: r.clerk_plan_id,
            clerk_price_id: r.clerk_price_id,
            metadata: r.metadata,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Django's rule for the price a storefront sells: the chosen one if it is active, else the
/// active default, else the cheapest active one.
fn choose_active(prices: &[PriceOut], chosen: Option<Uuid>) -> Option<PriceOut> {
    let active = || prices.iter().filter(|p| p.is_active);
    chosen
        .and_then(|c| active().find(|p| p.id == c))
        .or_else(|| active().find(|p| p.is_default))
        .or_else(|| active().min_by_key(|p| (p.amount_cents, p.created_at)))
        .cloned()
}

/// One price by id (any state), for the seller.
pub async fn price(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<PriceOut>> {
    Ok(sqlx::query_as!(
        PriceRow,
        r#"SELECT id, product_id, name, amount_cents, currency, billing_period, is_default, is_active,
                  clerk_plan_id, clerk_price_id, metadata, created_at, updated_at
           FROM prices WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?
    .map(PriceOut::from))
}

/// Loads products by id with their prices (only active ones when `active_only`), active assets
/// and service offer, in `ids` order.
pub async fn load_products(
    db: impl PgExecutor<'_> + Copy,
    ids: &[Uuid],
    active_only: bool,
) -> sqlx::Result<Vec<ProductOut>> {
    let rows = sqlx::query_as!(
        ProductRow,
        r#"SELECT id, seller_profile_id, name, slug, tagline, description, product_type, visibility, feature_keys,
                  credit_grants, download_expiry_days, download_max, metadata, active_price_id, created_at, updated_at
           FROM products WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(db)
    .await?;
    let prices = load_prices(db, ids, active_only).await?;
    let assets = sqlx::query!(
        r#"SELECT id, product_id, title, size_bytes FROM digital_assets
           WHERE product_id = ANY($1) AND is_active AND deleted_at IS NULL ORDER BY created_at"#,
        ids
    )
    .fetch_all(db)
    .await?;
    let offers = offers::load(db, ids).await?;
    let mut out: Vec<ProductOut> = rows
        .into_iter()
        .map(|r| {
            let prices: Vec<PriceOut> = prices
                .iter()
                .filter(|p| p.product_id == r.id)
                .cloned()
                .collect();
            let active_price = choose_active(&prices, r.active_price_id);
            ProductOut {
                active_price_id: active_price.as_ref().map(|p| p.id),
                active_price,
                assets: assets
                    .iter()
                    .filter(|a| a.product_id == r.id)
                    .map(|a| AssetSummary {
                        id: a.id,
                        title: a.title.clone(),
                        version_label: None,
                        file_size_bytes: a.size_bytes,
                    })
                    .collect(),
                service_offer: offers.iter().find(|o| o.product_id == r.id).cloned(),
                id: r.id,
                seller_profile_id: r.seller_profile_id,
                name: r.name,
                slug: r.slug,
                tagline: r.tagline,
                description: r.description,
                product_type: r.product_type,
                visibility: r.visibility,
                feature_keys: r.feature_keys,
                credit_grants: serde_json::from_value(r.credit_grants).unwrap_or_default(),
                download_expiry_days: r.download_expiry_days,
                download_max: r.download_max,
                metadata: r.metadata,
                created_at: r.created_at,
                updated_at: r.updated_at,
                prices,
            }
        })
        .collect();
    out.sort_by_key(|p| ids.iter().position(|i| *i == p.id));
    Ok(out)
}

/// The prices of products `ids` that are not deleted (only active ones when `active_only`),
/// default first, then oldest first.
async fn load_prices(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    active_only: bool,
) -> sqlx::Result<Vec<PriceOut>> {
    let prices: Vec<PriceOut> = sqlx::query_as!(
        PriceRow,
        r#"SELECT id, product_id, name, amount_cents, currency, billing_period, is_default, is_active,
                  clerk_plan_id, clerk_price_id, metadata, created_at, updated_at
           FROM prices WHERE product_id = ANY($1) AND deleted_at IS NULL AND (is_active OR NOT $2)
           ORDER BY is_default DESC, created_at"#,
        ids,
        active_only
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(PriceOut::from)
    .collect();
    Ok(prices)
}
/// The public catalog: published products with at least one purchasable price, by name (as the
/// starter orders them), at most 500.
pub async fn list_public(db: impl PgExecutor<'_> + Copy) -> sqlx::Result<Vec<ProductOut>> {
    let ids = sqlx::query_scalar!(
        r#"SELECT p.id FROM products p
           WHERE EXISTS (SELECT 1 FROM prices pr WHERE pr.product_id = p.id AND granary_purchasable(p, pr))
           ORDER BY p.name, p.created_at LIMIT 500"#
    )
    .fetch_all(db)
    .await?;
    load_products(db, &ids, true).await
}

/// One published product with a purchasable price, by slug, with all its prices (inactive ones
/// too, as the starter shows them).
pub async fn public_detail(
    db: impl PgExecutor<'_> + Copy,
    slug: &str,
) -> sqlx::Result<Option<ProductOut>> {
    let Some(id) = sqlx::query_scalar!(
        r#"SELECT p.id FROM products p
           WHERE p.slug = $1
             AND EXISTS (SELECT 1 FROM prices pr WHERE pr.product_id = p.id AND granary_purchasable(p, pr))"#,
        slug
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    Ok(load_products(db, &[id], false).await?.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_use_the_currency_minor_unit() {
        assert_eq!(format_amount(2900, "USD"), "29.00");
        assert_eq!(format_amount(5, "EUR"), "0.05");
        assert_eq!(format_amount(500, "JPY"), "500");
        assert_eq!(format_amount(1234, "KWD"), "1.234");
    }

    #[test]
    fn slugs_come_from_names() {
        assert_eq!(slugify("Creator Bundle!"), "creator-bundle");
        assert_eq!(slugify("  Ünïcode -- Kit 2 "), "n-code-kit-2");
        assert_eq!(slugify("!!!"), "product");
        assert!(is_slug(&slugify(&"x".repeat(300))));
        for bad in ["", "Bad", "a--b", "-a", "a-", "a b", "ä"] {
            assert!(!is_slug(bad), "{bad}");
        }
    }

    #[test]
    fn feature_keys_are_normalised_like_the_starter() {
        let keys = ["Templates Pack", " PRO ", "pro", ""].map(String::from);
        assert_eq!(normalize_feature_keys(&keys), ["templates_pack", "pro"]);
    }
}
