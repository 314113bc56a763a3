//! `/api/seller/products/`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use granary_jobs::catalog::{
    self, ProductOut,
    products::{self, ProductInput},
};
use uuid::Uuid;

use super::owned_product;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState, auth::Seller, extract::ApiJson};

async fn one(state: &AppState, id: Uuid) -> ApiResult<Json<ProductOut>> {
    catalog::load_products(&state.pool, &[id], false)
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `GET /api/seller/products/`.
#[utoipa::path(get, path = "/api/seller/products/", tag = "seller", responses((status = 200, body = [ProductOut])))]
pub async fn list(State(state): State<AppState>, user: Seller) -> ApiResult<Json<Vec<ProductOut>>> {
    let ids = sqlx::query_scalar!(
        "SELECT id FROM products WHERE deleted_at IS NULL AND (seller_profile_id = $1 OR $2) ORDER BY created_at DESC",
        user.profile_id,
        user.is_admin()
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(
        catalog::load_products(&state.pool, &ids, false).await?,
    ))
}

/// `POST /api/seller/products/`: `slug` is optional (derived from the name, made unique).
#[utoipa::path(post, path = "/api/seller/products/", tag = "seller", request_body = ProductInput, responses((status = 201, body = ProductOut), (status = 409, description = "slug taken"), (status = 422, description = "validation_failed")))]
pub async fn create(
    State(state): State<AppState>,
    user: Seller,
    ApiJson(b): ApiJson<ProductInput>,
) -> ApiResult<(StatusCode, Json<ProductOut>)> {
    let mut tx = state.pool.begin().await?;
    let id = products::create(&mut tx, user.profile_id, b).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, one(&state, id).await?))
}

/// `GET /api/seller/products/<id>/`.
#[utoipa::path(get, path = "/api/seller/products/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = ProductOut), (status = 404, description = "not_found")))]
pub async fn get(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProductOut>> {
    let id = owned_product(&state, &user, id).await?;
    one(&state, id).await
}

/// `PATCH /api/seller/products/<id>/`.
#[utoipa::path(patch, path = "/api/seller/products/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = ProductInput, responses((status = 200, body = ProductOut)))]
pub async fn update(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
    ApiJson(b): ApiJson<ProductInput>,
) -> ApiResult<Json<ProductOut>> {
    let id = owned_product(&state, &user, id).await?;
    let mut tx = state.pool.begin().await?;
    products::update(&mut tx, id, b).await?;
    tx.commit().await?;
    one(&state, id).await
}

/// `DELETE /api/seller/products/<id>/`: soft when orders refer to it.
#[utoipa::path(delete, path = "/api/seller/products/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 204)))]
pub async fn delete(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let id = owned_product(&state, &user, id).await?;
    let mut tx = state.pool.begin().await?;
    products::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}
