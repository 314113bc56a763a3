//! The public catalog: products that are published and have an active price.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{ApiError, ApiResult, AppState};

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
    /// Description.
    pub description: String,
    /// digital, service, subscription.
    pub product_type: String,
    /// draft, published, archived.
    pub visibility: String,
    /// Features granted to buyers.
    pub feature_keys: Vec<String>,
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
    /// Prices (active ones on the public catalog).
    pub prices: Vec<PriceOut>,
    /// The default active price, else the first active one.
    pub active_price_id: Option<Uuid>,
}

struct ProductRow {
    id: Uuid,
    seller_profile_id: Uuid,
    name: String,
    slug: String,
    description: String,
    product_type: String,
    visibility: String,
    feature_keys: Vec<String>,
    download_expiry_days: Option<i32>,
    download_max: Option<i32>,
    metadata: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Loads products by id with their prices (only active ones when `active_only`), in `ids` order.
pub async fn load_products(
    db: impl PgExecutor<'_> + Copy,
    ids: &[Uuid],
    active_only: bool,
) -> sqlx::Result<Vec<ProductOut>> {
    let rows = sqlx::query_as!(
        ProductRow,
        r#"SELECT id, seller_profile_id, name, slug, description, product_type, visibility, feature_keys,
                  download_expiry_days, download_max, metadata, created_at, updated_at
           FROM products WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(db)
    .await?;
    let prices = sqlx::query_as!(
        PriceOut,
        r#"SELECT id, product_id, name, amount_cents, currency, billing_period, is_default, is_active,
                  clerk_plan_id, clerk_price_id, metadata, created_at
           FROM prices WHERE product_id = ANY($1) AND deleted_at IS NULL AND (is_active OR NOT $2)
           ORDER BY is_default DESC, created_at"#,
        ids,
        active_only
    )
    .fetch_all(db)
    .await?;
    let mut out: Vec<ProductOut> = rows
        .into_iter()
        .map(|r| {
            let prices: Vec<PriceOut> = prices
                .iter()
                .filter(|p| p.product_id == r.id)
                .cloned()
                .collect();
            let active_price_id = prices.iter().find(|p| p.is_active).map(|p| p.id);
            ProductOut {
                id: r.id,
                seller_profile_id: r.seller_profile_id,
                name: r.name,
                slug: r.slug,
                description: r.description,
                product_type: r.product_type,
                visibility: r.visibility,
                feature_keys: r.feature_keys,
                download_expiry_days: r.download_expiry_days,
                download_max: r.download_max,
                metadata: r.metadata,
                created_at: r.created_at,
                updated_at: r.updated_at,
                prices,
                active_price_id,
            }
        })
        .collect();
    out.sort_by_key(|p| ids.iter().position(|i| *i == p.id));
    Ok(out)
}

/// `GET /api/products/`: published products with at least one active price.
#[utoipa::path(get, path = "/api/products/", tag = "catalog", responses((status = 200, body = [ProductOut])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ProductOut>>> {
    let ids = sqlx::query_scalar!(
        r#"SELECT p.id FROM products p
           WHERE p.visibility = 'published' AND p.deleted_at IS NULL
             AND EXISTS (SELECT 1 FROM prices pr WHERE pr.product_id = p.id AND pr.is_active AND pr.deleted_at IS NULL)
           ORDER BY p.created_at DESC LIMIT 500"#
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(load_products(&state.pool, &ids, true).await?))
}

/// `GET /api/products/<slug>/`.
#[utoipa::path(get, path = "/api/products/{slug}/", tag = "catalog", params(("slug" = String, Path)), responses((status = 200, body = ProductOut), (status = 404, description = "not_found")))]
pub async fn detail(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<ProductOut>> {
    let id = sqlx::query_scalar!(
        r#"SELECT p.id FROM products p
           WHERE p.slug = $1 AND p.visibility = 'published' AND p.deleted_at IS NULL
             AND EXISTS (SELECT 1 FROM prices pr WHERE pr.product_id = p.id AND pr.is_active AND pr.deleted_at IS NULL)"#,
        slug
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    load_products(&state.pool, &[id], true)
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}
