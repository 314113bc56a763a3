//! The public catalog: published products that have a purchasable price.

use axum::{
    Json,
    extract::{Path, State},
};
use granary_jobs::catalog::{self, ProductOut};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState};

/// `GET /api/products/`: published products with a purchasable price, by name.
#[utoipa::path(get, path = "/api/products/", tag = "catalog", responses((status = 200, body = [ProductOut])))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ProductOut>>> {
    Ok(Json(catalog::list_public(&state.pool).await?))
}

/// `GET /api/products/<slug>/`: with every price, the active assets and the service offer.
#[utoipa::path(get, path = "/api/products/{slug}/", tag = "catalog", params(("slug" = String, Path)), responses((status = 200, body = ProductOut), (status = 404, description = "not_found")))]
pub async fn detail(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<ProductOut>> {
    catalog::public_detail(&state.pool, &slug)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(detail))
}
