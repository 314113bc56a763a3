//! Seller management: products, prices, assets, service offers. A seller sees and changes only
//! their own products (another seller's are 404); an admin sees all.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use granary_jobs::{fulfillment::FinalizeAsset, queue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::catalog::{PriceOut, ProductOut, load_products};
use crate::{
    ApiError, ApiResult, AppState,
    auth::AuthUser,
    error::ResultExt,
    extract::ApiJson,
    validate::{BILLING_PERIODS, Fields, is_currency, is_feature_key, is_slug},
};

/// The product, if the caller may manage it.
async fn owned_product(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<Uuid> {
    user.require_seller()?;
    sqlx::query_scalar!(
        "SELECT id FROM products WHERE id = $1 AND deleted_at IS NULL AND (seller_profile_id = $2 OR $3)",
        id,
        user.profile_id,
        user.is_admin()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)
}

/// Product create/update body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ProductIn {
    name: Option<String>,
    slug: Option<String>,
    description: Option<String>,
    product_type: Option<String>,
    visibility: Option<String>,
    feature_keys: Option<Vec<String>>,
    download_expiry_days: Option<i32>,
    download_max: Option<i32>,
    #[schema(value_type = Object)]
    metadata: Option<Value>,
}

fn check_product(b: &ProductIn, creating: bool) -> ApiResult<()> {
    let mut f = Fields::new();
    if creating {
        f.check(b.name.is_some(), "name", "required");
        f.check(b.slug.is_some(), "slug", "required");
    }
    if let Some(n) = &b.name {
        f.check(
            !n.trim().is_empty() && n.len() <= 200,
            "name",
            "must be 1 to 200 characters",
        );
    }
    if let Some(s) = &b.slug {
        f.check(
            is_slug(s),
            "slug",
            "lowercase letters, digits and single hyphens, at most 100 characters",
        );
    }
    if let Some(t) = &b.product_type {
        f.check(
            ["digital", "service", "subscription"].contains(&t.as_str()),
            "product_type",
            "one of digital, service, subscription",
        );
    }
    if let Some(v) = &b.visibility {
        f.check(
            ["draft", "published", "archived"].contains(&v.as_str()),
            "visibility",
            "one of draft, published, archived",
        );
    }
    if let Some(keys) = &b.feature_keys {
        f.check(
            keys.iter().all(|k| is_feature_key(k)),
            "feature_keys",
            "letters, digits and _ . : - only, 1 to 100 characters",
        );
    }
    f.check(
        b.download_expiry_days.is_none_or(|d| d > 0),
        "download_expiry_days",
        "must be positive",
    );
    f.check(
        b.download_max.is_none_or(|d| d > 0),
        "download_max",
        "must be positive",
    );
    f.check(
        b.metadata.as_ref().is_none_or(Value::is_object),
        "metadata",
        "must be an object",
    );
    f.finish()
}

/// `GET /api/seller/products/`.
#[utoipa::path(get, path = "/api/seller/products/", tag = "seller", responses((status = 200, body = [ProductOut])))]
pub async fn list_products(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<ProductOut>>> {
    user.require_seller()?;
    let ids = sqlx::query_scalar!(
        "SELECT id FROM products WHERE deleted_at IS NULL AND (seller_profile_id = $1 OR $2) ORDER BY created_at DESC",
        user.profile_id,
        user.is_admin()
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(load_products(&state.pool, &ids, false).await?))
}

/// `POST /api/seller/products/`.
#[utoipa::path(post, path = "/api/seller/products/", tag = "seller", request_body = ProductIn, responses((status = 201, body = ProductOut), (status = 409, description = "slug taken"), (status = 422, description = "validation_failed")))]
pub async fn create_product(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(b): ApiJson<ProductIn>,
) -> ApiResult<(StatusCode, Json<ProductOut>)> {
    user.require_seller()?;
    check_product(&b, true)?;
    let id = sqlx::query_scalar!(
        r#"INSERT INTO products (seller_profile_id, name, slug, description, product_type, visibility, feature_keys,
                                 download_expiry_days, download_max, metadata)
           VALUES ($1, $2, $3, coalesce($4, ''), coalesce($5, 'digital'), coalesce($6, 'draft'), coalesce($7::text[], '{}'),
                   $8, $9, coalesce($10, '{}'::jsonb))
           RETURNING id"#,
        user.profile_id,
        b.name.as_deref().map(str::trim),
        b.slug,
        b.description,
        b.product_type,
        b.visibility,
        b.feature_keys.as_deref(),
        b.download_expiry_days,
        b.download_max,
        b.metadata,
    )
    .fetch_one(&state.pool)
    .await
    .on_constraint("products_slug_key", || ApiError::conflict("This slug is already taken."))?;
    let p = load_products(&state.pool, &[id], false)
        .await?
        .pop()
        .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// `GET /api/seller/products/<id>/`.
#[utoipa::path(get, path = "/api/seller/products/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = ProductOut), (status = 404, description = "not_found")))]
pub async fn get_product(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProductOut>> {
    let id = owned_product(&state, &user, id).await?;
    load_products(&state.pool, &[id], false)
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `PATCH /api/seller/products/<id>/`.
#[utoipa::path(patch, path = "/api/seller/products/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = ProductIn, responses((status = 200, body = ProductOut)))]
pub async fn update_product(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    ApiJson(b): ApiJson<ProductIn>,
) -> ApiResult<Json<ProductOut>> {
    let id = owned_product(&state, &user, id).await?;
    check_product(&b, false)?;
    sqlx::query!(
        r#"UPDATE products SET name = coalesce($2, name), slug = coalesce($3, slug), description = coalesce($4, description),
               product_type = coalesce($5, product_type), visibility = coalesce($6, visibility),
               feature_keys = coalesce($7, feature_keys), download_expiry_days = coalesce($8, download_expiry_days),
               download_max = coalesce($9, download_max), metadata = coalesce($10, metadata)
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
    )
    .execute(&state.pool)
    .await
    .on_constraint("products_slug_key", || ApiError::conflict("This slug is already taken."))?;
    load_products(&state.pool, &[id], false)
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `DELETE /api/seller/products/<id>/`: a product that orders refer to is archived and hidden
/// (soft delete); one that no order refers to is deleted with its prices, assets and offer.
#[utoipa::path(delete, path = "/api/seller/products/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 204)))]
pub async fn delete_product(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let id = owned_product(&state, &user, id).await?;
    let mut tx = state.pool.begin().await?;
    let referenced = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM order_items WHERE product_id = $1) AS "e!""#,
        id
    )
    .fetch_one(&mut *tx)
    .await?;
    if referenced {
        sqlx::query!(
            "UPDATE products SET deleted_at = now(), visibility = 'archived' WHERE id = $1",
            id
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("UPDATE prices SET deleted_at = coalesce(deleted_at, now()), is_active = false WHERE product_id = $1", id).execute(&mut *tx).await?;
    } else {
        sqlx::query!("DELETE FROM service_offers WHERE product_id = $1", id)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM digital_assets WHERE product_id = $1", id)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM prices WHERE product_id = $1", id)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM products WHERE id = $1", id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Price create/update body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PriceIn {
    name: Option<String>,
    amount_cents: Option<i64>,
    currency: Option<String>,
    billing_period: Option<String>,
    is_default: Option<bool>,
    is_active: Option<bool>,
    clerk_plan_id: Option<String>,
    clerk_price_id: Option<String>,
    #[schema(value_type = Object)]
    metadata: Option<Value>,
}

fn check_price(b: &PriceIn, creating: bool) -> ApiResult<()> {
    let mut f = Fields::new();
    if creating {
        f.check(b.amount_cents.is_some(), "amount_cents", "required");
        f.check(b.currency.is_some(), "currency", "required");
    }
    f.check(
        b.amount_cents
            .is_none_or(|a| (0..=100_000_000_000).contains(&a)),
        "amount_cents",
        "must be 0 or more (minor units)",
    );
    f.check(
        b.currency.as_deref().is_none_or(is_currency),
        "currency",
        "an ISO 4217 code in upper case, e.g. USD",
    );
    f.check(
        b.billing_period
            .as_deref()
            .is_none_or(|p| BILLING_PERIODS.contains(&p)),
        "billing_period",
        "one of one_time, weekly, monthly, quarterly, yearly",
    );
    f.check(
        b.metadata.as_ref().is_none_or(Value::is_object),
        "metadata",
        "must be an object",
    );
    if let Some(url) = b.metadata.as_ref().and_then(|m| m.get("checkout_url")) {
        f.check(
            url.as_str().is_some_and(|u| {
                url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            }),
            "metadata.checkout_url",
            "must be an http(s) URL",
        );
    }
    f.finish()
}

async fn price_out(state: &AppState, id: Uuid) -> ApiResult<PriceOut> {
    Ok(sqlx::query_as!(
        PriceOut,
        "SELECT id, product_id, name, amount_cents, currency, billing_period, is_default, is_active, clerk_plan_id, clerk_price_id, metadata, created_at FROM prices WHERE id = $1",
        id
    )
    .fetch_one(&state.pool)
    .await?)
}

/// The price, if the caller may manage it.
async fn owned_price(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<(Uuid, Uuid)> {
    user.require_seller()?;
    let row = sqlx::query!(
        r#"SELECT pr.id, pr.product_id FROM prices pr JOIN products p ON p.id = pr.product_id
           WHERE pr.id = $1 AND pr.deleted_at IS NULL AND p.deleted_at IS NULL AND (p.seller_profile_id = $2 OR $3)"#,
        id,
        user.profile_id,
        user.is_admin()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok((row.id, row.product_id))
}

/// `GET /api/seller/products/<product_id>/prices/`.
#[utoipa::path(get, path = "/api/seller/products/{product_id}/prices/", tag = "seller", params(("product_id" = Uuid, Path)), responses((status = 200, body = [PriceOut])))]
pub async fn list_prices(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<Vec<PriceOut>>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    Ok(Json(
        sqlx::query_as!(
            PriceOut,
            "SELECT id, product_id, name, amount_cents, currency, billing_period, is_default, is_active, clerk_plan_id, clerk_price_id, metadata, created_at FROM prices WHERE product_id = $1 AND deleted_at IS NULL ORDER BY is_default DESC, created_at",
            product_id
        )
        .fetch_all(&state.pool)
        .await?,
    ))
}

/// `POST /api/seller/products/<product_id>/prices/`. A new default price demotes the old one:
/// a product has one default price.
#[utoipa::path(post, path = "/api/seller/products/{product_id}/prices/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = PriceIn, responses((status = 201, body = PriceOut)))]
pub async fn create_price(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<PriceIn>,
) -> ApiResult<(StatusCode, Json<PriceOut>)> {
    let product_id = owned_product(&state, &user, product_id).await?;
    check_price(&b, true)?;
    let mut tx = state.pool.begin().await?;
    if b.is_default == Some(true) {
        sqlx::query!(
            "UPDATE prices SET is_default = false WHERE product_id = $1 AND is_default",
            product_id
        )
        .execute(&mut *tx)
        .await?;
    }
    let id = sqlx::query_scalar!(
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
    .fetch_one(&mut *tx)
    .await
    .on_constraint("prices_one_default_per_product", || ApiError::conflict("This product already has a default price."))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(price_out(&state, id).await?)))
}

/// `GET /api/seller/prices/<id>/`.
#[utoipa::path(get, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = PriceOut)))]
pub async fn get_price(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<PriceOut>> {
    let (id, _) = owned_price(&state, &user, id).await?;
    Ok(Json(price_out(&state, id).await?))
}

/// `PATCH /api/seller/prices/<id>/`. `metadata` is merged key by key (so a storefront can set
/// just `checkout_url`).
#[utoipa::path(patch, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = PriceIn, responses((status = 200, body = PriceOut)))]
pub async fn update_price(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    ApiJson(b): ApiJson<PriceIn>,
) -> ApiResult<Json<PriceOut>> {
    let (id, product_id) = owned_price(&state, &user, id).await?;
    check_price(&b, false)?;
    let mut tx = state.pool.begin().await?;
    if b.is_default == Some(true) {
        sqlx::query!("UPDATE prices SET is_default = false WHERE product_id = $1 AND is_default AND id <> $2", product_id, id).execute(&mut *tx).await?;
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
    .execute(&mut *tx)
    .await
    .on_constraint("prices_one_default_per_product", || ApiError::conflict("This product already has a default price."))?;
    tx.commit().await?;
    Ok(Json(price_out(&state, id).await?))
}

/// `DELETE /api/seller/prices/<id>/`: soft when orders refer to it.
#[utoipa::path(delete, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 204)))]
pub async fn delete_price(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let (id, _) = owned_price(&state, &user, id).await?;
    let referenced = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM order_items WHERE price_id = $1) AS "e!""#,
        id
    )
    .fetch_one(&state.pool)
    .await?;
    if referenced {
        sqlx::query!("UPDATE prices SET deleted_at = now(), is_active = false, is_default = false WHERE id = $1", id).execute(&state.pool).await?;
    } else {
        sqlx::query!("DELETE FROM prices WHERE id = $1", id)
            .execute(&state.pool)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A digital asset as sellers see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssetOut {
    id: Uuid,
    product_id: Uuid,
    title: String,
    file_path: String,
    storage_key: Option<String>,
    status: String,
    size_bytes: Option<i64>,
    content_type: Option<String>,
    sha256: Option<String>,
    is_active: bool,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Asset create/update body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AssetIn {
    title: Option<String>,
    file_path: Option<String>,
    is_active: Option<bool>,
}

fn check_asset(b: &AssetIn, creating: bool) -> ApiResult<()> {
    let mut f = Fields::new();
    if creating {
        f.check(b.title.is_some(), "title", "required");
        f.check(b.file_path.is_some(), "file_path", "required");
    }
    f.check(
        b.title
            .as_deref()
            .is_none_or(|t| !t.trim().is_empty() && t.len() <= 200),
        "title",
        "must be 1 to 200 characters",
    );
    f.check(
        b.file_path.as_deref().is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 1024
                && !p.starts_with('/')
                && !p.split('/').any(|s| s == ".." || s.is_empty())
        }),
        "file_path",
        "a relative object key such as files/bundle-v1.zip (no leading /, no .. or empty segments)",
    );
    f.finish()
}

async fn asset_out(state: &AppState, id: Uuid) -> ApiResult<AssetOut> {
    Ok(sqlx::query_as!(
        AssetOut,
        "SELECT id, product_id, title, file_path, storage_key, status, size_bytes, content_type, sha256, is_active, last_error, created_at, updated_at FROM digital_assets WHERE id = $1",
        id
    )
    .fetch_one(&state.pool)
    .await?)
}

async fn owned_asset(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<Uuid> {
    user.require_seller()?;
    sqlx::query_scalar!(
        r#"SELECT a.id FROM digital_assets a JOIN products p ON p.id = a.product_id
           WHERE a.id = $1 AND a.deleted_at IS NULL AND p.deleted_at IS NULL AND (p.seller_profile_id = $2 OR $3)"#,
        id,
        user.profile_id,
        user.is_admin()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)
}

/// `GET /api/seller/products/<product_id>/assets/`.
#[utoipa::path(get, path = "/api/seller/products/{product_id}/assets/", tag = "seller", params(("product_id" = Uuid, Path)), responses((status = 200, body = [AssetOut])))]
pub async fn list_assets(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<Vec<AssetOut>>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    Ok(Json(
        sqlx::query_as!(
            AssetOut,
            "SELECT id, product_id, title, file_path, storage_key, status, size_bytes, content_type, sha256, is_active, last_error, created_at, updated_at FROM digital_assets WHERE product_id = $1 AND deleted_at IS NULL ORDER BY created_at",
            product_id
        )
        .fetch_all(&state.pool)
        .await?,
    ))
}

/// `POST /api/seller/products/<product_id>/assets/`: registers an uploaded object; it is
/// `pending` until finalized to permanent storage.
#[utoipa::path(post, path = "/api/seller/products/{product_id}/assets/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = AssetIn, responses((status = 201, body = AssetOut)))]
pub async fn create_asset(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<AssetIn>,
) -> ApiResult<(StatusCode, Json<AssetOut>)> {
    let product_id = owned_product(&state, &user, product_id).await?;
    check_asset(&b, true)?;
    state.storage()?;
    let mut tx = state.pool.begin().await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO digital_assets (product_id, title, file_path, is_active) VALUES ($1, $2, $3, coalesce($4, true)) RETURNING id",
        product_id,
        b.title.as_deref().map(str::trim),
        b.file_path,
        b.is_active
    )
    .fetch_one(&mut *tx)
    .await?;
    let file_path = b.file_path.clone().unwrap_or_default();
    queue::enqueue(
        &mut tx,
        &FinalizeAsset {
            asset_id: id,
            file_path,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(asset_out(&state, id).await?)))
}

/// `GET /api/seller/assets/<id>/`.
#[utoipa::path(get, path = "/api/seller/assets/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = AssetOut)))]
pub async fn get_asset(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<AssetOut>> {
    let id = owned_asset(&state, &user, id).await?;
    Ok(Json(asset_out(&state, id).await?))
}

/// `PATCH /api/seller/assets/<id>/`: a new `file_path` makes the asset pending again.
#[utoipa::path(patch, path = "/api/seller/assets/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = AssetIn, responses((status = 200, body = AssetOut)))]
pub async fn update_asset(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    ApiJson(b): ApiJson<AssetIn>,
) -> ApiResult<Json<AssetOut>> {
    let id = owned_asset(&state, &user, id).await?;
    check_asset(&b, false)?;
    if b.file_path.is_some() {
        state.storage()?;
    }
    let mut tx = state.pool.begin().await?;
    let replaced = sqlx::query_scalar!(
        r#"SELECT file_path <> $2 AS "r!" FROM digital_assets WHERE id = $1"#,
        id,
        b.file_path.as_deref().unwrap_or_default()
    )
    .fetch_one(&mut *tx)
    .await?
        && b.file_path.is_some();
    sqlx::query!(
        r#"UPDATE digital_assets SET title = coalesce($2, title), is_active = coalesce($4, is_active),
               file_path = coalesce($3, file_path),
               status = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN 'pending' ELSE status END,
               storage_key = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN NULL ELSE storage_key END,
               sha256 = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN NULL ELSE sha256 END,
               size_bytes = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN NULL ELSE size_bytes END
           WHERE id = $1"#,
        id,
        b.title.as_deref().map(str::trim),
        b.file_path,
        b.is_active
    )
    .execute(&mut *tx)
    .await?;
    if let (true, Some(file_path)) = (replaced, b.file_path.clone()) {
        queue::enqueue(
            &mut tx,
            &FinalizeAsset {
                asset_id: id,
                file_path,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(asset_out(&state, id).await?))
}

/// `DELETE /api/seller/assets/<id>/`: soft (grants may refer to it).
#[utoipa::path(delete, path = "/api/seller/assets/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 204)))]
pub async fn delete_asset(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let id = owned_asset(&state, &user, id).await?;
    sqlx::query!(
        "UPDATE digital_assets SET deleted_at = now(), is_active = false WHERE id = $1",
        id
    )
    .execute(&state.pool)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Service offer body (PUT: all fields, defaults for absent ones; PATCH: only those given).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OfferIn {
    duration_minutes: Option<i32>,
    capacity: Option<i32>,
    booking_window_days: Option<i32>,
    min_notice_hours: Option<i32>,
    timezone: Option<String>,
    location: Option<String>,
    instructions: Option<String>,
    is_active: Option<bool>,
}

fn check_offer(b: &OfferIn) -> ApiResult<()> {
    let mut f = Fields::new();
    f.check(
        b.duration_minutes.is_none_or(|d| (5..=1440).contains(&d)),
        "duration_minutes",
        "5 to 1440",
    );
    f.check(
        b.capacity.is_none_or(|c| (1..=10_000).contains(&c)),
        "capacity",
        "1 to 10000",
    );
    f.check(
        b.booking_window_days.is_none_or(|d| (1..=730).contains(&d)),
        "booking_window_days",
        "1 to 730",
    );
    f.check(
        b.min_notice_hours.is_none_or(|d| (0..=8760).contains(&d)),
        "min_notice_hours",
        "0 to 8760",
    );
    f.finish()
}

async fn offer_json(state: &AppState, product_id: Uuid) -> ApiResult<Value> {
    let o = sqlx::query!(
        "SELECT id, product_id, duration_minutes, capacity, booking_window_days, min_notice_hours, timezone, location, instructions, is_active, updated_at FROM service_offers WHERE product_id = $1",
        product_id
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(json!({
        "id": o.id, "product_id": o.product_id, "duration_minutes": o.duration_minutes, "capacity": o.capacity,
        "booking_window_days": o.booking_window_days, "min_notice_hours": o.min_notice_hours, "timezone": o.timezone,
        "location": o.location, "instructions": o.instructions, "is_active": o.is_active, "updated_at": o.updated_at,
    }))
}

/// `GET /api/seller/products/<product_id>/service-offer/`.
#[utoipa::path(get, path = "/api/seller/products/{product_id}/service-offer/", tag = "seller", params(("product_id" = Uuid, Path)), responses((status = 200, description = "The offer"), (status = 404, description = "none yet")))]
pub async fn get_offer(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    Ok(Json(offer_json(&state, product_id).await?))
}

/// `PUT /api/seller/products/<product_id>/service-offer/`: create or replace.
#[utoipa::path(put, path = "/api/seller/products/{product_id}/service-offer/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = OfferIn, responses((status = 200, description = "The offer")))]
pub async fn put_offer(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<OfferIn>,
) -> ApiResult<Json<Value>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    check_offer(&b)?;
    sqlx::query!(
        r#"INSERT INTO service_offers (product_id, duration_minutes, capacity, booking_window_days, min_notice_hours, timezone, location, instructions, is_active)
           VALUES ($1, coalesce($2, 60), coalesce($3, 1), coalesce($4, 60), coalesce($5, 0), coalesce($6, 'UTC'), coalesce($7, ''), coalesce($8, ''), coalesce($9, true))
           ON CONFLICT (product_id) DO UPDATE SET duration_minutes = EXCLUDED.duration_minutes, capacity = EXCLUDED.capacity,
               booking_window_days = EXCLUDED.booking_window_days, min_notice_hours = EXCLUDED.min_notice_hours,
               timezone = EXCLUDED.timezone, location = EXCLUDED.location, instructions = EXCLUDED.instructions, is_active = EXCLUDED.is_active"#,
        product_id,
        b.duration_minutes,
        b.capacity,
        b.booking_window_days,
        b.min_notice_hours,
        b.timezone,
        b.location,
        b.instructions,
        b.is_active
    )
    .execute(&state.pool)
    .await?;
    Ok(Json(offer_json(&state, product_id).await?))
}

/// `PATCH /api/seller/products/<product_id>/service-offer/`.
#[utoipa::path(patch, path = "/api/seller/products/{product_id}/service-offer/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = OfferIn, responses((status = 200, description = "The offer")))]
pub async fn patch_offer(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<OfferIn>,
) -> ApiResult<Json<Value>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    check_offer(&b)?;
    let updated = sqlx::query!(
        r#"UPDATE service_offers SET duration_minutes = coalesce($2, duration_minutes), capacity = coalesce($3, capacity),
               booking_window_days = coalesce($4, booking_window_days), min_notice_hours = coalesce($5, min_notice_hours),
               timezone = coalesce($6, timezone), location = coalesce($7, location), instructions = coalesce($8, instructions),
               is_active = coalesce($9, is_active)
           WHERE product_id = $1"#,
        product_id,
        b.duration_minutes,
        b.capacity,
        b.booking_window_days,
        b.min_notice_hours,
        b.timezone,
        b.location,
        b.instructions,
        b.is_active
    )
    .execute(&state.pool)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(Json(offer_json(&state, product_id).await?))
}
