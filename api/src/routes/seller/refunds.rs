//! `/api/seller/orders/<public_id>/refund/`: a seller refunds an order of their own products.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use granary_jobs::{
    orders::refunds::{self, RefundInput, RefundOut, Scope},
    platform::audit::Actor,
};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiResult, AppState, auth::Seller, extract::ApiJson};

/// `POST /api/seller/orders/<public_id>/refund/` `{amount_cents?, reason}`: as the admin route,
/// limited to orders whose every line is one of the caller's products (another seller's order
/// is 404); an admin may refund any.
#[utoipa::path(post, path = "/api/seller/orders/{public_id}/refund/", tag = "seller", params(("public_id" = String, Path)), request_body = RefundInput, responses((status = 202, body = RefundOut, description = "Queued: the refund_payment job asks Stripe"), (status = 404, description = "not_found: no such order of the caller's products"), (status = 409, description = "not_refundable, refund_exceeds_payment"), (status = 422, description = "validation_failed: reason, amount_cents")))]
pub async fn refund(
    State(state): State<AppState>,
    user: Seller,
    Path(public_id): Path<String>,
    ApiJson(input): ApiJson<RefundInput>,
) -> ApiResult<(StatusCode, Json<RefundOut>)> {
    let scope = if user.is_admin() {
        Scope::Operator
    } else {
        Scope::Seller(user.profile_id)
    };
    let actor = Actor {
        name: format!("seller:{}", user.clerk_user_id),
        reason: input.reason.clone(),
    };
    let out = refunds::request(&state.pool, &public_id, scope, input, &actor).await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(refund))
}
