//! `/api/seller/products/<product_id>/prices/` and `/api/seller/prices/<id>/`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use granary_jobs::catalog::{
    self, PriceOut,
    prices::{self, PriceInput},
};
use uuid::Uuid;

use super::{owned_price, owned_product};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState, auth::Seller, extract::ApiJson};

async fn one(state: &AppState, id: Uuid) -> ApiResult<Json<PriceOut>> {
    catalog::price(&state.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `GET /api/seller/products/<product_id>/prices/`.
#[utoipa::path(get, path = "/api/seller/products/{product_id}/prices/", tag = "seller", params(("product_id" = Uuid, Path)), responses((status = 200, body = [PriceOut])))]
pub async fn list(
    State(state): State<AppState>,
    user: Seller,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<Vec<PriceOut>>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    Ok(Json(
        catalog::load_products(&state.pool, &[product_id], false)
            .await?
            .pop()
            .map(|p| p.prices)
            .unwrap_or_default(),
    ))
}

/// `POST /api/seller/products/<product_id>/prices/`: a new default price demotes the old one.
#[utoipa::path(post, path = "/api/seller/products/{product_id}/prices/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = PriceInput, responses((status = 201, body = PriceOut), (status = 422, description = "validation_failed")))]
pub async fn create(
    State(state): State<AppState>,
    user: Seller,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<PriceInput>,
) -> ApiResult<(StatusCode, Json<PriceOut>)> {
    let product_id = owned_product(&state, &user, product_id).await?;
    let mut tx = state.pool.begin().await?;
    let id = prices::create(&mut tx, product_id, b).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, one(&state, id).await?))
}

/// `GET /api/seller/prices/<id>/`.
#[utoipa::path(get, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = PriceOut)))]
pub async fn get(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<PriceOut>> {
    let id = owned_price(&state, &user, id).await?;
    one(&state, id).await
}

/// `PATCH /api/seller/prices/<id>/`: `metadata` is merged key by key.
#[utoipa::path(patch, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = PriceInput, responses((status = 200, body = PriceOut)))]
pub async fn update(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
    ApiJson(b): ApiJson<PriceInput>,
) -> ApiResult<Json<PriceOut>> {
    let id = owned_price(&state, &user, id).await?;
    let mut tx = state.pool.begin().await?;
    prices::update(&mut tx, id, b).await?;
    tx.commit().await?;
    one(&state, id).await
}

/// `DELETE /api/seller/prices/<id>/`: soft when orders refer to it.
#[utoipa::path(delete, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 204)))]
pub async fn delete(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let id = owned_price(&state, &user, id).await?;
    let mut tx = state.pool.begin().await?;
    prices::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}
