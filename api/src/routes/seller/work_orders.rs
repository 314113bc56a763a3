//! `/api/seller/work-orders/`: the seller's work orders, and moving them along.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use granary_jobs::{
    bookings::work_orders::{self, Scope, WorkOrderOut, WorkOrderUpdate},
    model::WorkOrderStatus,
};
use serde::Deserialize;
use uuid::Uuid;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState, auth::Seller, extract::ApiJson};

fn scope(user: &Seller) -> Scope {
    Scope {
        seller: Some(user.profile_id),
        admin: user.is_admin(),
        ..Default::default()
    }
}

/// `?status=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct WorkOrderQuery {
    /// Only this status.
    pub status: Option<WorkOrderStatus>,
}

/// `GET /api/seller/work-orders/`.
#[utoipa::path(get, path = "/api/seller/work-orders/", tag = "seller", params(WorkOrderQuery), responses((status = 200, body = [WorkOrderOut])))]
pub async fn list(
    State(state): State<AppState>,
    user: Seller,
    Query(q): Query<WorkOrderQuery>,
) -> ApiResult<Json<Vec<WorkOrderOut>>> {
    let s = Scope {
        status: q.status,
        ..scope(&user)
    };
    Ok(Json(work_orders::list(&state.pool, &s).await?))
}

/// `GET /api/seller/work-orders/<id>/`.
#[utoipa::path(get, path = "/api/seller/work-orders/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = WorkOrderOut), (status = 404, description = "not_found")))]
pub async fn get(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WorkOrderOut>> {
    let s = Scope {
        id: Some(id),
        ..scope(&user)
    };
    work_orders::list(&state.pool, &s)
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `PATCH /api/seller/work-orders/<id>/`: move it (`status`) and/or set delivery details; each
/// move is audited and emailed to the buyer.
#[utoipa::path(patch, path = "/api/seller/work-orders/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = WorkOrderUpdate, responses((status = 200, body = WorkOrderOut), (status = 409, description = "illegal move"), (status = 422, description = "validation_failed")))]
pub async fn update(
    State(state): State<AppState>,
    user: Seller,
    Path(id): Path<Uuid>,
    ApiJson(b): ApiJson<WorkOrderUpdate>,
) -> ApiResult<Json<WorkOrderOut>> {
    let s = Scope {
        id: Some(id),
        ..scope(&user)
    };
    let mut tx = state.pool.begin().await?;
    let out = work_orders::update(
        &mut tx,
        &s,
        &user.clerk_user_id,
        state.config.frontend_app_url.as_str(),
        b,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, update))
}
