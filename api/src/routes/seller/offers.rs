//! `/api/seller/products/<product_id>/service-offer/`: the starter's fields beside Granary's
//! booking fields; 400 on a product that is not a service.

use axum::{
    Json,
    extract::{Path, State},
};
use granary_jobs::catalog::{
    ServiceOfferOut,
    offers::{self, OfferInput},
};
use uuid::Uuid;

use super::owned_product;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiResult, AppState, auth::Seller, extract::ApiJson};

/// `GET /api/seller/products/<product_id>/service-offer/`.
#[utoipa::path(get, path = "/api/seller/products/{product_id}/service-offer/", tag = "seller", params(("product_id" = Uuid, Path)), responses((status = 200, body = ServiceOfferOut), (status = 404, description = "none yet")))]
pub async fn get(
    State(state): State<AppState>,
    user: Seller,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<ServiceOfferOut>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    Ok(Json(offers::get(&state.pool, product_id).await?))
}

/// `PUT /api/seller/products/<product_id>/service-offer/`: create or replace.
#[utoipa::path(put, path = "/api/seller/products/{product_id}/service-offer/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = OfferInput, responses((status = 200, body = ServiceOfferOut), (status = 400, description = "not a service product")))]
pub async fn put(
    State(state): State<AppState>,
    user: Seller,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<OfferInput>,
) -> ApiResult<Json<ServiceOfferOut>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    let mut tx = state.pool.begin().await?;
    let out = offers::put(&mut tx, product_id, &b).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// `PATCH /api/seller/products/<product_id>/service-offer/`.
#[utoipa::path(patch, path = "/api/seller/products/{product_id}/service-offer/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = OfferInput, responses((status = 200, body = ServiceOfferOut), (status = 400, description = "not a service product")))]
pub async fn patch(
    State(state): State<AppState>,
    user: Seller,
    Path(product_id): Path<Uuid>,
    ApiJson(b): ApiJson<OfferInput>,
) -> ApiResult<Json<ServiceOfferOut>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    let mut tx = state.pool.begin().await?;
    let out = offers::patch(&mut tx, product_id, &b).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get, put, patch))
}
