//! Seller management: products, prices, assets, service offers and work orders. A seller sees
//! and changes only their own rows (another seller's are 404); an admin sees all. Who may sell
//! is `SELLER_ACCESS` (the [`Seller`] extractor).

pub mod assets;
pub mod offers;
pub mod prices;
pub mod products;
pub mod refunds;
pub mod work_orders;

use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::{ApiError, ApiResult, AppState, auth::Seller};

/// The seller's routes.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(products::router())
        .merge(prices::router())
        .merge(assets::router())
        .merge(offers::router())
        .merge(work_orders::router())
        .merge(refunds::router())
}

/// The product, if the caller may manage it: their own (any, for an admin), not deleted.
/// Prices and assets are owned through their product.
pub(crate) async fn owned_product(state: &AppState, user: &Seller, id: Uuid) -> ApiResult<Uuid> {
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

/// The price, if the caller may manage its product.
pub(crate) async fn owned_price(state: &AppState, user: &Seller, id: Uuid) -> ApiResult<Uuid> {
    let product = sqlx::query_scalar!(
        "SELECT product_id FROM prices WHERE id = $1 AND deleted_at IS NULL",
        id
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    owned_product(state, user, product).await?;
    Ok(id)
}

/// The asset, if the caller may manage its product.
pub(crate) async fn owned_asset(state: &AppState, user: &Seller, id: Uuid) -> ApiResult<Uuid> {
    let product = sqlx::query_scalar!(
        "SELECT product_id FROM digital_assets WHERE id = $1 AND deleted_at IS NULL",
        id
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    owned_product(state, user, product).await?;
    Ok(id)
}
