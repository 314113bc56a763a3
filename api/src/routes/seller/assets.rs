//! `/api/seller/products/<product_id>/assets/` and `/api/seller/assets/<id>/`: an asset
//! points at an uploaded object and is `pending` until `finalize_asset` copies it to permanent
//! storage; a new `file_path` makes it pending again.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use granary_jobs::{error::Fields, fulfillment::FinalizeAsset, queue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::owned_product;
use crate::{ApiError, ApiResult, AppState, auth::AuthUser, extract::ApiJson};

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
    Ok(f.finish()?)
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
pub async fn list(
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
pub async fn create(
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
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<AssetOut>> {
    let id = owned_asset(&state, &user, id).await?;
    Ok(Json(asset_out(&state, id).await?))
}

/// `PATCH /api/seller/assets/<id>/`: a new `file_path` makes the asset pending again.
#[utoipa::path(patch, path = "/api/seller/assets/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = AssetIn, responses((status = 200, body = AssetOut)))]
pub async fn update(
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
pub async fn delete(
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
