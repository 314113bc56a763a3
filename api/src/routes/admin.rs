//! The operator surface over HTTP (admin role): the same functions as `granary-worker`'s
//! commands, so both give the same answers.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use granary_jobs::{
    account::downloads,
    admin::{self, JobFilter, WebhookFilter},
    queue::ops::{self, Actor, OpError},
    refunds::{self, RefundInput, RefundOut, Scope},
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
    Ok(action::<ActionIn>(user, body)?.0)
}

/// The admin's actor (with the body's `reason`) and the action's own fields from the same body
/// (an empty body is every field's default).
fn action<T: serde::de::DeserializeOwned + Default>(
    user: &AuthUser,
    body: &Bytes,
) -> ApiResult<(Actor, T)> {
    user.require_admin()?;
    let why: ActionIn = crate::extract::optional_json(body)?;
    let input: T = crate::extract::optional_json(body)?;
    Ok((
        Actor {
            name: format!("admin:{}", user.clerk_user_id),
            reason: why.reason,
        },
        input,
    ))
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

/// `POST /api/admin/orders/<public_id>/refund/` `{amount_cents?, reason}`: queues a refund
/// through Stripe (no amount: the rest of the order), audited with its reason.
#[utoipa::path(post, path = "/api/admin/orders/{public_id}/refund/", tag = "admin", params(("public_id" = String, Path)), request_body = RefundInput, responses((status = 202, body = RefundOut, description = "Queued: the refund_payment job asks Stripe"), (status = 404, description = "not_found"), (status = 409, description = "not_refundable, refund_exceeds_payment"), (status = 422, description = "validation_failed: reason, amount_cents")))]
pub async fn refund_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(public_id): Path<String>,
    body: Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<RefundOut>)> {
    let (actor, input) = action::<RefundInput>(&user, &body)?;
    let out = refunds::request(&state.pool, &public_id, Scope::Operator, input, &actor).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(out)))
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

/// `{"role": "seller", "reason": "..."}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RoleIn {
    /// `buyer`, `seller` or `admin`.
    role: String,
    /// Why (kept in the audit; read with the actor, declared here for the schema).
    #[allow(dead_code)]
    reason: Option<String>,
}

/// `POST /api/admin/users/<clerk user id>/role/`: the twin of `granary-worker users set-role`.
#[utoipa::path(post, path = "/api/admin/users/{clerk_user_id}/role/", tag = "admin", params(("clerk_user_id" = String, Path)), request_body = RoleIn, responses((status = 200, description = "The role is set; the previous one is returned"), (status = 400, description = "not a role")))]
pub async fn set_role(
    State(state): State<AppState>,
    user: AuthUser,
    Path(clerk_user_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (actor, input) = action::<RoleIn>(&user, &body)?;
    let previous =
        granary_jobs::account::profile::set_role(&state.pool, &clerk_user_id, &input.role, &actor)
            .await?;
    Ok(Json(
        json!({ "user": clerk_user_id, "role": input.role, "previous_role": previous }),
    ))
}

/// `{"add": 3, "extend_seconds": 604800, "reason": "..."}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ResetIn {
    /// Downloads added to the limit.
    add: Option<i32>,
    /// Extend the expiry by this many seconds (from now, or from the expiry if later).
    extend_seconds: Option<u64>,
    /// Why (kept in the audit; read with the actor, declared here for the schema).
    #[allow(dead_code)]
    reason: Option<String>,
}

/// `POST /api/admin/grants/<id>/reset/`: the twin of `granary-worker grants reset`.
#[utoipa::path(post, path = "/api/admin/grants/{id}/reset/", tag = "admin", params(("id" = Uuid, Path)), request_body = ResetIn, responses((status = 200, description = "The grant after the reset", body = downloads::GrantState), (status = 404, description = "no such grant"), (status = 409, description = "the grant is revoked")))]
pub async fn reset_grant(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<downloads::GrantState>> {
    let (actor, input) = action::<ResetIn>(&user, &body)?;
    let reset = downloads::Reset {
        add: input.add,
        extend: input.extend_seconds.map(std::time::Duration::from_secs),
    };
    Ok(Json(
        downloads::reset_grant(&state.pool, id, reset, &actor).await?,
    ))
}

/// `POST /api/admin/grants/<id>/revoke/`: the twin of `granary-worker grants revoke`.
#[utoipa::path(post, path = "/api/admin/grants/{id}/revoke/", tag = "admin", params(("id" = Uuid, Path)), request_body = ActionIn, responses((status = 200, description = "The grant, revoked", body = downloads::GrantState), (status = 404, description = "no such grant"), (status = 409, description = "already revoked")))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<downloads::GrantState>> {
    let actor = actor(&user, &body)?;
    Ok(Json(
        downloads::revoke_grant(&state.pool, id, &actor).await?,
    ))
}

/// `{"provider": "stripe", "since": "2026-11-24T00:00:00Z"}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ReconcileIn {
    /// `stripe`, `clerk`, or `all` configured (the default).
    provider: Option<String>,
    /// Stripe events created at or after this (default: 24 hours ago).
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /api/admin/reconcile/`: queues sweeps now (the twin of `granary-worker reconcile`);
/// read each with `GET /api/admin/reconcile/<run id>/`.
#[utoipa::path(post, path = "/api/admin/reconcile/", tag = "admin", request_body = ReconcileIn, responses((status = 202, description = "The queued sweeps"), (status = 400, description = "unknown provider, or none configured")))]
pub async fn reconcile(
    State(state): State<AppState>,
    user: AuthUser,
    body: Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    use granary_jobs::reconcile::{self, Provider, Trigger};
    let (_, input) = action::<ReconcileIn>(&user, &body)?;
    let providers = match input.provider.as_deref().unwrap_or("all") {
        "all" => reconcile::configured(&state.config),
        "stripe" => vec![Provider::Stripe],
        "clerk" => vec![Provider::Clerk],
        other => {
            return Err(ApiError::BadRequest {
                code: "invalid_request",
                message: format!("`{other}` is not a provider: use stripe, clerk or all"),
            });
        }
    };
    if providers.is_empty() {
        return Err(ApiError::BadRequest {
            code: "invalid_request",
            message: "Nothing to reconcile: set STRIPE_SECRET_KEY (and/or CLERK_SECRET_KEY)."
                .into(),
        });
    }
    let since = input
        .since
        .unwrap_or_else(|| chrono::Utc::now() - chrono::Duration::hours(24));
    let mut runs = Vec::new();
    for p in providers {
        runs.push(reconcile::enqueue(&state.pool, p, Trigger::Operator, Some(since)).await?);
    }
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({ "runs": runs })),
    ))
}

/// `GET /api/admin/reconcile/<run id>/`: a sweep, with what it found and what applying it did.
#[utoipa::path(get, path = "/api/admin/reconcile/{id}/", tag = "admin", params(("id" = Uuid, Path)), responses((status = 200, description = "The sweep"), (status = 404, description = "no such sweep")))]
pub async fn reconcile_run(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<granary_jobs::reconcile::Run>> {
    user.require_admin()?;
    granary_jobs::reconcile::run(&state.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}
