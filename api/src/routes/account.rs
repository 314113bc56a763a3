//! The buyer's account (docs/storefront.md §1.1): customer details, orders (create,
//! confirm), subscriptions and their sync status, entitlements, downloads, work orders,
//! bookings, the preflight email test. Another user's rows are 404, never 403.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
};
use granary_jobs::{
    billing::{self, EntitlementOut, SubscriptionOut, SyncStatus},
    bookings::{
        self, BookingInput, BookingOut,
        work_orders::{self, Scope, WorkOrderOut},
    },
    downloads::{self, GrantOut},
    orders::buyer::{self, ConfirmInput, Confirmed, CreateInput, Created, OrderOut},
    profiles::{self, CustomerInput, CustomerOut, EmailTestOut},
};
use serde::Deserialize;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiResult, AppState, auth::AuthUser, extract::ApiJson};

/// `GET /api/account/customer/`.
#[utoipa::path(get, path = "/api/account/customer/", tag = "account", responses((status = 200, body = CustomerOut)))]
pub async fn get_customer(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<CustomerOut>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(profiles::customer(&mut conn, user.profile_id).await?))
}

/// `PATCH /api/account/customer/`.
#[utoipa::path(patch, path = "/api/account/customer/", tag = "account", request_body = CustomerInput, responses((status = 200, body = CustomerOut)))]
pub async fn patch_customer(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(b): ApiJson<CustomerInput>,
) -> ApiResult<Json<CustomerOut>> {
    let mut tx = state.pool.begin().await?;
    let out = profiles::update_customer(&mut tx, user.profile_id, b).await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// `GET /api/account/orders/`: newest first.
#[utoipa::path(get, path = "/api/account/orders/", tag = "account", responses((status = 200, body = [OrderOut])))]
pub async fn list_orders(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<OrderOut>>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(buyer::list(&mut conn, user.profile_id, None).await?))
}

/// `POST /api/account/orders/create/`: 201 `{order, checkout: {checkout_url, provider}}`
/// (`checkout_url` is a Stripe Checkout Session's for an order sold through Stripe, else the
/// price's static URL, `""` when it has none). A retried create with the same
/// `Idempotency-Key` answers the first order with 200 (and the same session).
#[utoipa::path(post, path = "/api/account/orders/create/", tag = "account", request_body = CreateInput, params(("Idempotency-Key" = Option<String>, Header)), responses((status = 201, body = Created), (status = 200, body = Created, description = "Idempotent replay"), (status = 404, description = "unknown or inactive price"), (status = 422, description = "validation_failed"), (status = 502, description = "payment_provider_error, payment_provider_misconfigured, checkout_total_mismatch: the order is saved, pending, without a URL"), (status = 503, description = "payment_provider_unavailable, payment_provider_rate_limited (with Retry-After): retry with the same Idempotency-Key")))]
pub async fn create_order(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(b): ApiJson<CreateInput>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let (out, created) =
        buyer::create_and_check_out(&state.pool, &state.config, user.profile_id, key, b).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)))
}

/// `POST /api/account/orders/<public_id>/confirm/`: `{provider: manual|clerk (default),
/// external_id?, clerk_checkout_id?, raw_payload?}` (an empty body is a Clerk confirm). Paid
/// orders come from verified webhooks; this is guarded as docs/payments.md says.
#[utoipa::path(post, path = "/api/account/orders/{public_id}/confirm/", tag = "account", params(("public_id" = String, Path)), request_body = ConfirmInput, responses((status = 200, body = Confirmed), (status = 403, description = "manual_confirm_disabled"), (status = 404, description = "not_found"), (status = 409, description = "pending_verification / conflict")))]
pub async fn confirm_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(public_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Confirmed>> {
    let body: ConfirmInput = crate::extract::optional_json(&body)?;
    let mut tx = state.pool.begin().await?;
    let out = buyer::confirm(
        &mut tx,
        &state.config,
        user.profile_id,
        &user.clerk_user_id,
        &public_id,
        body,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(out))
}

/// `GET /api/account/subscriptions/`.
#[utoipa::path(get, path = "/api/account/subscriptions/", tag = "account", responses((status = 200, body = [SubscriptionOut])))]
pub async fn subscriptions(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<SubscriptionOut>>> {
    Ok(Json(
        billing::list_subscriptions(&state.pool, &user.clerk_user_id).await?,
    ))
}

/// `?refresh=1`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatusQuery {
    /// `1`, `true`, `yes` or `on`: pull from Clerk's Backend API first.
    pub refresh: Option<String>,
}

/// `GET /api/account/subscriptions/status/`: freshness of the subscription data.
#[utoipa::path(get, path = "/api/account/subscriptions/status/", tag = "account", params(StatusQuery), responses((status = 200, body = SyncStatus)))]
pub async fn subscription_status(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Json<SyncStatus>> {
    let refresh = q
        .refresh
        .as_deref()
        .is_some_and(|r| matches!(r.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
    if refresh {
        billing::refresh(&state.pool, &state.config, &user.clerk_user_id).await?;
    }
    Ok(Json(
        billing::sync_status(&state.pool, &state.config, &user.clerk_user_id).await?,
    ))
}

/// `?current=false`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CurrentQuery {
    /// `false`: every entitlement, revoked and expired ones too (default: current only).
    pub current: Option<String>,
}

/// `GET /api/account/entitlements/`.
#[utoipa::path(get, path = "/api/account/entitlements/", tag = "account", params(CurrentQuery), responses((status = 200, body = [EntitlementOut])))]
pub async fn entitlements(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<CurrentQuery>,
) -> ApiResult<Json<Vec<EntitlementOut>>> {
    let all = q.current.as_deref().is_some_and(|c| {
        matches!(
            c.to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    });
    Ok(Json(
        billing::entitlements(&state.pool, user.profile_id, all).await?,
    ))
}

/// `GET /api/account/downloads/`: the caller's grants (tokens are shown only here, to their
/// owner).
#[utoipa::path(get, path = "/api/account/downloads/", tag = "account", responses((status = 200, body = [GrantOut])))]
pub async fn downloads(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<([(header::HeaderName, HeaderValue); 1], Json<Vec<GrantOut>>)> {
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(downloads::list(&state.pool, user.profile_id, None).await?),
    ))
}

/// `GET /api/account/orders/work/`: the caller's work orders (paid service items).
#[utoipa::path(get, path = "/api/account/orders/work/", tag = "account", responses((status = 200, body = [WorkOrderOut])))]
pub async fn work_orders(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<WorkOrderOut>>> {
    let scope = Scope {
        buyer: Some(user.profile_id),
        ..Default::default()
    };
    Ok(Json(work_orders::list(&state.pool, &scope).await?))
}

/// `GET /api/account/bookings/`.
#[utoipa::path(get, path = "/api/account/bookings/", tag = "account", responses((status = 200, body = [BookingOut])))]
pub async fn list_bookings(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<BookingOut>>> {
    Ok(Json(
        bookings::list(&state.pool, user.profile_id, None).await?,
    ))
}

/// `POST /api/account/bookings/`: the seed-era request `{service_offer, customer_notes}` or a
/// timed booking `{service_offer_id | product_id, starts_at, notes}`.
#[utoipa::path(post, path = "/api/account/bookings/", tag = "account", request_body = BookingInput, responses((status = 201, body = BookingOut), (status = 404, description = "no such offer"), (status = 409, description = "slot full"), (status = 422, description = "outside the window")))]
pub async fn create_booking(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(b): ApiJson<BookingInput>,
) -> ApiResult<(StatusCode, Json<BookingOut>)> {
    let mut tx = state.pool.begin().await?;
    let out = bookings::create(&mut tx, user.profile_id, b).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// `POST /api/account/preflight/email-test/`: queues a real test email through the email job;
/// 400 `{sent: false, detail}` when Resend is not configured or the caller has no address.
#[utoipa::path(post, path = "/api/account/preflight/email-test/", tag = "account", responses((status = 200, body = EmailTestOut), (status = 400, description = "Resend not configured, or no address: {sent: false, detail, error}")))]
pub async fn email_test(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let mut tx = state.pool.begin().await?;
    match profiles::send_test_email(&mut tx, &state.config.resend, user.profile_id).await {
        Ok(out) => {
            tx.commit().await?;
            Ok(Json(out).into_response())
        }
        Err(granary_jobs::error::DomainError::BadRequest(why)) => {
            // The starter's frontend reads `sent` and `detail` on failure too.
            let mut error = serde_json::json!({"code": "invalid_request", "message": why});
            if let Some(id) = crate::request_id::current_request_id() {
                error["request_id"] = serde_json::json!(id);
            }
            Ok((
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"sent": false, "detail": why, "error": error})),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_customer, patch_customer))
        .routes(routes!(list_orders))
        .routes(routes!(create_order))
        .routes(routes!(confirm_order))
        .routes(routes!(subscriptions))
        .routes(routes!(subscription_status))
        .routes(routes!(entitlements))
        .routes(routes!(downloads))
        .routes(routes!(work_orders))
        .routes(routes!(list_bookings, create_booking))
        .routes(routes!(email_test))
}
