//! The operator surface over HTTP (admin role): the same functions as `granary-worker`'s
//! commands, so both give the same answers.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use granary_jobs::{
    downloads,
    operator::reads::{
        self, JobDetail, JobFilter, JobList, OrderTimeline, WebhookDetail, WebhookFilter,
        WebhookList,
    },
    orders::refunds::{self, RefundInput, RefundOut, Scope},
    platform::audit::{self, Actor},
    queue::ops::OpError,
    webhooks::ingest::{self, ReplayError},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState, auth::Admin};

/// Optional `{"reason": "..."}` body of an action.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ActionIn {
    /// Why (kept in the audit).
    reason: Option<String>,
}

fn actor(user: &Admin, body: &Bytes) -> ApiResult<Actor> {
    Ok(action::<ActionIn>(user, body)?.0)
}

/// The admin's actor (with the body's `reason`) and the action's own fields from the same body
/// (an empty body is every field's default).
fn action<T: serde::de::DeserializeOwned + Default>(
    user: &Admin,
    body: &Bytes,
) -> ApiResult<(Actor, T)> {
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
#[utoipa::path(get, path = "/api/admin/jobs/", tag = "admin", params(JobFilter), responses((status = 200, body = JobList, description = "Jobs and counts per state and queue")))]
pub async fn jobs(
    State(state): State<AppState>,
    _: Admin,
    Query(f): Query<JobFilter>,
) -> ApiResult<Json<JobList>> {
    Ok(Json(reads::list_jobs(&state.pool, &f).await?))
}

/// `GET /api/admin/jobs/<id>/`.
#[utoipa::path(get, path = "/api/admin/jobs/{id}/", tag = "admin", params(("id" = String, Path)), responses((status = 200, body = JobDetail, description = "A job with its attempts")))]
pub async fn job(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<JobDetail>> {
    reads::show_job(&state.pool, &id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `{"requeued": [job id]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequeuedOut {
    /// The job requeued.
    requeued: Vec<String>,
}

/// `POST /api/admin/jobs/<id>/requeue/`.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/requeue/", tag = "admin", params(("id" = String, Path)), request_body = ActionIn, responses((status = 200, body = RequeuedOut, description = "Requeued"), (status = 409, description = "not failed or cancelled")))]
pub async fn requeue_job(
    State(state): State<AppState>,
    user: Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RequeuedOut>> {
    let actor = actor(&user, &body)?;
    audit::requeue_job(&state.pool, &id, &actor)
        .await
        .map_err(op_error)?;
    Ok(Json(RequeuedOut { requeued: vec![id] }))
}

/// `{"cancelled": job id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelledOut {
    /// The job cancelled.
    cancelled: String,
}

/// `POST /api/admin/jobs/<id>/cancel/`.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/cancel/", tag = "admin", params(("id" = String, Path)), request_body = ActionIn, responses((status = 200, body = CancelledOut, description = "Cancelled"), (status = 409, description = "running or finished")))]
pub async fn cancel_job(
    State(state): State<AppState>,
    user: Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<CancelledOut>> {
    let actor = actor(&user, &body)?;
    audit::cancel_job(&state.pool, &id, &actor)
        .await
        .map_err(op_error)?;
    Ok(Json(CancelledOut { cancelled: id }))
}

/// `{"order": public id, "requeued": [job id, ...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderRequeuedOut {
    /// The order's public id.
    order: String,
    /// The jobs requeued (none if none had failed).
    requeued: Vec<String>,
}

/// `POST /api/admin/orders/<public_id>/requeue/`: every failed job of the order.
#[utoipa::path(post, path = "/api/admin/orders/{public_id}/requeue/", tag = "admin", params(("public_id" = String, Path)), request_body = ActionIn, responses((status = 200, body = OrderRequeuedOut, description = "Requeued job ids")))]
pub async fn requeue_order(
    State(state): State<AppState>,
    user: Admin,
    Path(public_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<OrderRequeuedOut>> {
    let actor = actor(&user, &body)?;
    let order = reads::order_id(&state.pool, &public_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let ids = audit::requeue_order_jobs(&state.pool, order, &actor)
        .await
        .map_err(op_error)?;
    Ok(Json(OrderRequeuedOut {
        order: public_id,
        requeued: ids,
    }))
}

/// `POST /api/admin/orders/<public_id>/refund/` `{amount_cents?, reason}`: queues a refund
/// through Stripe (no amount: the rest of the order), audited with its reason.
#[utoipa::path(post, path = "/api/admin/orders/{public_id}/refund/", tag = "admin", params(("public_id" = String, Path)), request_body = RefundInput, responses((status = 202, body = RefundOut, description = "Queued: the refund_payment job asks Stripe"), (status = 404, description = "not_found"), (status = 409, description = "not_refundable, refund_exceeds_payment"), (status = 422, description = "validation_failed: reason, amount_cents")))]
pub async fn refund_order(
    State(state): State<AppState>,
    user: Admin,
    Path(public_id): Path<String>,
    body: Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<RefundOut>)> {
    let (actor, input) = action::<RefundInput>(&user, &body)?;
    let out = refunds::request(&state.pool, &public_id, Scope::Operator, input, &actor).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(out)))
}

/// `GET /api/admin/orders/<public_id>/timeline/`.
#[utoipa::path(get, path = "/api/admin/orders/{public_id}/timeline/", tag = "admin", params(("public_id" = String, Path)), responses((status = 200, body = OrderTimeline, description = "Everything that happened to the order, in time order")))]
pub async fn timeline(
    State(state): State<AppState>,
    _: Admin,
    Path(public_id): Path<String>,
) -> ApiResult<Json<OrderTimeline>> {
    reads::timeline(&state.pool, &public_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `GET /api/admin/webhooks/?provider=&status=&type=&since=`.
#[utoipa::path(get, path = "/api/admin/webhooks/", tag = "admin", params(WebhookFilter), responses((status = 200, body = WebhookList, description = "Stored deliveries, rejected ones included")))]
pub async fn webhooks(
    State(state): State<AppState>,
    _: Admin,
    Query(f): Query<WebhookFilter>,
) -> ApiResult<Json<WebhookList>> {
    Ok(Json(reads::list_webhooks(&state.pool, &f).await?))
}

/// `GET /api/admin/webhooks/<id>/`.
#[utoipa::path(get, path = "/api/admin/webhooks/{id}/", tag = "admin", params(("id" = Uuid, Path)), responses((status = 200, body = WebhookDetail, description = "A delivery with headers (signatures redacted) and its exact body")))]
pub async fn webhook(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WebhookDetail>> {
    reads::show_webhook(&state.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `{"job_id": ..., "replayed": stored event id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayedOut {
    /// The job that processes the event again.
    job_id: String,
    /// The stored event.
    replayed: Uuid,
}

/// `POST /api/admin/webhooks/<id>/replay/`.
#[utoipa::path(post, path = "/api/admin/webhooks/{id}/replay/", tag = "admin", params(("id" = Uuid, Path)), request_body = ActionIn, responses((status = 200, body = ReplayedOut, description = "Replay enqueued"), (status = 409, description = "a rejected delivery")))]
pub async fn replay(
    State(state): State<AppState>,
    user: Admin,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<ReplayedOut>> {
    let actor = actor(&user, &body)?;
    match ingest::replay(&state.pool, id, &actor).await {
        Ok(job) => Ok(Json(ReplayedOut {
            job_id: job,
            replayed: id,
        })),
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

/// `{"previous_role": ..., "role": ..., "user": clerk user id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleOut {
    /// The role before (null for a user without a profile yet).
    previous_role: Option<String>,
    /// The role now.
    role: String,
    /// The Clerk user id.
    user: String,
}

/// `POST /api/admin/users/<clerk user id>/role/`: the twin of `granary-worker users set-role`.
#[utoipa::path(post, path = "/api/admin/users/{clerk_user_id}/role/", tag = "admin", params(("clerk_user_id" = String, Path)), request_body = RoleIn, responses((status = 200, body = RoleOut, description = "The role is set; the previous one is returned"), (status = 400, description = "not a role")))]
pub async fn set_role(
    State(state): State<AppState>,
    user: Admin,
    Path(clerk_user_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RoleOut>> {
    let (actor, input) = action::<RoleIn>(&user, &body)?;
    let previous =
        granary_jobs::profiles::set_role(&state.pool, &clerk_user_id, &input.role, &actor).await?;
    Ok(Json(RoleOut {
        previous_role: previous,
        role: input.role,
        user: clerk_user_id,
    }))
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
    user: Admin,
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
    user: Admin,
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

/// `{"runs": [queued sweep, ...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SweepsOut {
    /// The queued sweeps, one per provider.
    #[schema(value_type = Vec<Object>)]
    runs: Vec<granary_jobs::operator::reconcile::Queued>,
}

/// `POST /api/admin/reconcile/`: queues sweeps now (the twin of `granary-worker reconcile`);
/// read each with `GET /api/admin/reconcile/<run id>/`.
#[utoipa::path(post, path = "/api/admin/reconcile/", tag = "admin", request_body = ReconcileIn, responses((status = 202, body = SweepsOut, description = "The queued sweeps"), (status = 400, description = "unknown provider, or none configured")))]
pub async fn reconcile(
    State(state): State<AppState>,
    user: Admin,
    body: Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<SweepsOut>)> {
    use granary_jobs::operator::reconcile::{self, Provider, Trigger};
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
    Ok((axum::http::StatusCode::ACCEPTED, Json(SweepsOut { runs })))
}

/// `GET /api/admin/reconcile/<run id>/`: a sweep, with what it found and what applying it did.
#[utoipa::path(get, path = "/api/admin/reconcile/{id}/", tag = "admin", params(("id" = Uuid, Path)), responses((status = 200, description = "The sweep", body = granary_jobs::operator::reconcile::Run), (status = 404, description = "no such sweep")))]
pub async fn reconcile_run(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<granary_jobs::operator::reconcile::Run>> {
    granary_jobs::operator::reconcile::run(&state.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jobs))
        .routes(routes!(job))
        .routes(routes!(requeue_job))
        .routes(routes!(cancel_job))
        .routes(routes!(requeue_order))
        .routes(routes!(refund_order))
        .routes(routes!(timeline))
        .routes(routes!(webhooks))
        .routes(routes!(webhook))
        .routes(routes!(replay))
        .routes(routes!(set_role))
        .routes(routes!(reset_grant))
        .routes(routes!(revoke_grant))
        .routes(routes!(reconcile))
        .routes(routes!(reconcile_run))
}
