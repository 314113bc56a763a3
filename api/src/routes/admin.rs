//! The operator surface over HTTP (admin role): the same functions as `granary-worker`'s
//! commands, so both give the same answers.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use granary_jobs::{
    admin::{self, JobFilter, WebhookFilter},
    queue::ops::{self, Actor, OpError},
    webhooks::ingest::{self, ReplayError},
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{ApiError, ApiResult, AppState, auth::AuthUser};

/// Optional `{"reason": "..."}` body of an action.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ActionIn {
    /// Why (kept in the audit).
    reason: Option<String>,
}

fn actor(user: &AuthUser, body: &Bytes) -> ApiResult<Actor> {
    user.require_admin()?;
    let input: ActionIn = if body.iter().all(u8::is_ascii_whitespace) {
        ActionIn::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
            code: "invalid_json",
            message: format!("The body is not valid JSON: {e}"),
        })?
    };
    Ok(Actor {
        name: format!("admin:{}", user.clerk_user_id),
        reason: input.reason,
    })
}

fn op_error(e: OpError) -> ApiError {
    match e {
        OpError::NotFound(_) => ApiError::NotFound,
        e @ OpError::WrongState { .. } => ApiError::conflict(e.to_string()),
        OpError::Db(e) => e.into(),
    }
}

/// `GET /api/admin/jobs/?state=&kind=&order=&since=&limit=&offset=`.
#[utoipa::path(get, path = "/api/admin/jobs/", tag = "admin", responses((status = 200, description = "Jobs and counts per state and queue")))]
pub async fn jobs(
    State(state): State<AppState>,
    user: AuthUser,
    Query(f): Query<JobFilter>,
) -> ApiResult<Json<Value>> {
    user.require_admin()?;
    Ok(Json(admin::list_jobs(&state.pool, &f).await?))
}

/// `GET /api/admin/jobs/<id>/`.
#[utoipa::path(get, path = "/api/admin/jobs/{id}/", tag = "admin", params(("id" = String, Path)), responses((status = 200, description = "A job with its attempts")))]
pub async fn job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    user.require_admin()?;
    admin::show_job(&state.pool, &id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /api/admin/jobs/<id>/requeue/`.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/requeue/", tag = "admin", params(("id" = String, Path)), request_body = ActionIn, responses((status = 200, description = "Requeued"), (status = 409, description = "not failed or cancelled")))]
pub async fn requeue_job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let actor = actor(&user, &body)?;
    ops::requeue(&state.pool, &id, &actor)
        .await
        .map_err(op_error)?;
    Ok(Json(json!({ "requeued": [id] })))
}

/// `POST /api/admin/jobs/<id>/cancel/`.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/cancel/", tag = "admin", params(("id" = String, Path)), request_body = ActionIn, responses((status = 200, description = "Cancelled"), (status = 409, description = "running or finished")))]
pub async fn cancel_job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let actor = actor(&user, &body)?;
    ops::cancel(&state.pool, &id, &actor)
        .await
        .map_err(op_error)?;
    Ok(Json(json!({ "cancelled": id })))
}

/// `POST /api/admin/orders/<public_id>/requeue/`: every failed job of the order.
#[utoipa::path(post, path = "/api/admin/orders/{public_id}/requeue/", tag = "admin", params(("public_id" = String, Path)), request_body = ActionIn, responses((status = 200, description = "Requeued job ids")))]
pub async fn requeue_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(public_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let actor = actor(&user, &body)?;
    let order = admin::order_id(&state.pool, &public_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let ids = ops::requeue_order(&state.pool, order, &actor)
        .await
        .map_err(op_error)?;
    Ok(Json(json!({ "order": public_id, "requeued": ids })))
}

/// `GET /api/admin/orders/<public_id>/timeline/`.
#[utoipa::path(get, path = "/api/admin/orders/{public_id}/timeline/", tag = "admin", params(("public_id" = String, Path)), responses((status = 200, description = "Everything that happened to the order, in time order")))]
pub async fn timeline(
    State(state): State<AppState>,
    user: AuthUser,
    Path(public_id): Path<String>,
) -> ApiResult<Json<Value>> {
    user.require_admin()?;
    admin::timeline(&state.pool, &public_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `GET /api/admin/webhooks/?provider=&status=&type=&since=`.
#[utoipa::path(get, path = "/api/admin/webhooks/", tag = "admin", responses((status = 200, description = "Stored deliveries, rejected ones included")))]
pub async fn webhooks(
    State(state): State<AppState>,
    user: AuthUser,
    Query(f): Query<WebhookFilter>,
) -> ApiResult<Json<Value>> {
    user.require_admin()?;
    Ok(Json(admin::list_webhooks(&state.pool, &f).await?))
}

/// `GET /api/admin/webhooks/<id>/`.
#[utoipa::path(get, path = "/api/admin/webhooks/{id}/", tag = "admin", params(("id" = Uuid, Path)), responses((status = 200, description = "A delivery with headers (signatures redacted) and its exact body")))]
pub async fn webhook(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    user.require_admin()?;
    admin::show_webhook(&state.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /api/admin/webhooks/<id>/replay/`.
#[utoipa::path(post, path = "/api/admin/webhooks/{id}/replay/", tag = "admin", params(("id" = Uuid, Path)), request_body = ActionIn, responses((status = 200, description = "Replay enqueued"), (status = 409, description = "a rejected delivery")))]
pub async fn replay(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let actor = actor(&user, &body)?;
    match ingest::replay(&state.pool, id, &actor).await {
        Ok(job) => Ok(Json(json!({ "replayed": id, "job_id": job }))),
        Err(ReplayError::NotFound(_)) => Err(ApiError::NotFound),
        Err(e @ ReplayError::Rejected(..)) => Err(ApiError::conflict(e.to_string())),
        Err(ReplayError::Db(e)) => Err(e.into()),
    }
}
