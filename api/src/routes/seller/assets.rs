//! `/api/seller/products/<product_id>/assets/` and `/api/seller/assets/<id>/` over the asset
//! state machine in `granary_jobs::catalog::assets`. Storage must be configured to register
//! an object (503 `storage_unavailable` otherwise).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use granary_jobs::catalog::assets::{self, AssetInput, AssetOut};
use uuid::Uuid;

use super::{owned_asset, owned_product};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState, auth::Seller, extract::ApiJson};

async fn one(state: &AppState, id: Uuid) -> ApiResult<Json<AssetOut>> {
    assets::list(&state.pool, None, Some(id))
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `GET /api/seller/products/<product_id>/assets/`.
#[utoipa::path(get, path = "/api/seller/products/{product_id}/assets/", tag = "seller", params(("product_id" = Uuid, Path)), responses((status = 200, body = [AssetOut])))]
pub async fn list(
    State(state): State<AppState>,
    user: Seller,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<Vec<AssetOut>>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    Ok(Json(
        assets::list(&state.pool, Some(product_id), None).await?,
    ))
}

/// `POST /api/seller/products/<product_id>/assets/`: `pending` until finalized.
#[utoipa::path(post, path = "/api/seller/products/{product_id}/assets/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = AssetInput, responses((status = 201, body = AssetOut), (status = 503, description = "storage_unavailable")))]
pub async fn create(
    State(state): State<AppState>,
    user: Seller,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<AssetInput>,
) -> ApiResult<(StatusCode, Json<AssetOut>)> {
    let product_id = owned_product(&state, &user, product_id).await?;
    state.storage()?;
    let mut tx = state.pool.begin().await?;
    let id = assets::create(&mut tx, product_id, b).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, one(&state, id).await?))
}

/// `GET /api/seller/assets/<id>/`.
#[utoipa::path(get, path = "/api/seller/assets/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = AssetOut)))]
pub async fn get(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<AssetOut>> {
    let id = owned_asset(&state, &user, id).await?;
    one(&state, id).await
}

/// `PATCH /api/seller/assets/<id>/`: a new `file_path` makes the asset pending again.
#[utoipa::path(patch, path = "/api/seller/assets/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = AssetInput, responses((status = 200, body = AssetOut)))]
pub async fn update(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
    ApiJson(b): ApiJson<AssetInput>,
) -> ApiResult<Json<AssetOut>> {
    let id = owned_asset(&state, &user, id).await?;
    if b.file_path.is_some() {
        state.storage()?;
    }
    let mut tx = state.pool.begin().await?;
    assets::update(&mut tx, id, b).await?;
    tx.commit().await?;
    one(&state, id).await
}

/// `DELETE /api/seller/assets/<id>/`: soft (grants may refer to it).
#[utoipa::path(delete, path = "/api/seller/assets/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 204)))]
pub async fn delete(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let id = owned_asset(&state, &user, id).await?;
    assets::delete(&state.pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}
