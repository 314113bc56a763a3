//! `/api/seller/products/<product_id>/prices/` and `/api/seller/prices/<id>/`. A new default
//! price demotes the old one: a product has one default price.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use granary_jobs::{
    catalog::{self, BILLING_PERIODS, PriceOut, is_currency},
    error::Fields,
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::owned_product;
use crate::{ApiError, ApiResult, AppState, auth::AuthUser, error::ResultExt, extract::ApiJson};

/// Price create/update body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PriceIn {
    name: Option<String>,
    amount_cents: Option<i64>,
    currency: Option<String>,
    billing_period: Option<String>,
    is_default: Option<bool>,
    is_active: Option<bool>,
    clerk_plan_id: Option<String>,
    clerk_price_id: Option<String>,
    #[schema(value_type = Object)]
    metadata: Option<Value>,
}

fn check_price(b: &mut PriceIn, creating: bool) -> ApiResult<()> {
    // The starter upper-cases the currency; blank Clerk mappings mean none.
    b.currency = b.currency.as_deref().map(|c| c.trim().to_ascii_uppercase());
    for id in [&mut b.clerk_plan_id, &mut b.clerk_price_id] {
        if id.as_deref().is_some_and(|s| s.trim().is_empty()) {
            *id = None;
        }
    }
    let mut f = Fields::new();
    if creating {
        f.check(b.amount_cents.is_some(), "amount_cents", "required");
        f.check(b.currency.is_some(), "currency", "required");
    }
    f.check(
        b.amount_cents
            .is_none_or(|a| (0..=100_000_000_000).contains(&a)),
        "amount_cents",
        "must be 0 or more (minor units)",
    );
    f.check(
        b.currency.as_deref().is_none_or(is_currency),
        "currency",
        "an ISO 4217 code in upper case, e.g. USD",
    );
    f.check(
        b.billing_period
            .as_deref()
            .is_none_or(|p| BILLING_PERIODS.contains(&p)),
        "billing_period",
        "one of one_time, weekly, monthly, quarterly, yearly",
    );
    f.check(
        b.metadata.as_ref().is_none_or(Value::is_object),
        "metadata",
        "must be an object",
    );
    if let Some(url) = b.metadata.as_ref().and_then(|m| m.get("checkout_url")) {
        f.check(
            url.as_str().is_some_and(|u| {
                url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            }),
            "metadata.checkout_url",
            "must be an http(s) URL",
        );
    }
    Ok(f.finish()?)
}

async fn price_out(state: &AppState, id: Uuid) -> ApiResult<PriceOut> {
    catalog::price(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The price, if the caller may manage it.
async fn owned_price(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<(Uuid, Uuid)> {
    user.require_seller()?;
    let row = sqlx::query!(
        r#"SELECT pr.id, pr.product_id FROM prices pr JOIN products p ON p.id = pr.product_id
           WHERE pr.id = $1 AND pr.deleted_at IS NULL AND p.deleted_at IS NULL AND (p.seller_profile_id = $2 OR $3)"#,
        id,
        user.profile_id,
        user.is_admin()
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok((row.id, row.product_id))
}

/// `GET /api/seller/products/<product_id>/prices/`.
#[utoipa::path(get, path = "/api/seller/products/{product_id}/prices/", tag = "seller", params(("product_id" = Uuid, Path)), responses((status = 200, body = [PriceOut])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<Vec<PriceOut>>> {
    let product_id = owned_product(&state, &user, product_id).await?;
    Ok(Json(
        catalog::load_products(&state.pool, &[product_id], false)
            .await?
            .pop()
            .map(|p| p.prices)
            .unwrap_or_default(),
    ))
}

/// `POST /api/seller/products/<product_id>/prices/`. A new default price demotes the old one:
/// a product has one default price.
#[utoipa::path(post, path = "/api/seller/products/{product_id}/prices/", tag = "seller", params(("product_id" = Uuid, Path)), request_body = PriceIn, responses((status = 201, body = PriceOut)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<Uuid>,
    ApiJson(mut b): ApiJson<PriceIn>,
) -> ApiResult<(StatusCode, Json<PriceOut>)> {
    let product_id = owned_product(&state, &user, product_id).await?;
    check_price(&mut b, true)?;
    let mut tx = state.pool.begin().await?;
    if b.is_default == Some(true) {
        sqlx::query!(
            "UPDATE prices SET is_default = false WHERE product_id = $1 AND is_default",
            product_id
        )
        .execute(&mut *tx)
        .await?;
    }
    let id = sqlx::query_scalar!(
        r#"INSERT INTO prices (product_id, name, amount_cents, currency, billing_period, is_default, is_active, clerk_plan_id, clerk_price_id, metadata)
           VALUES ($1, coalesce($2, ''), $3, $4, coalesce($5, 'one_time'), coalesce($6, false), coalesce($7, true), $8, $9, coalesce($10, '{}'::jsonb))
           RETURNING id"#,
        product_id,
        b.name,
        b.amount_cents,
        b.currency,
        b.billing_period,
        b.is_default,
        b.is_active,
        b.clerk_plan_id,
        b.clerk_price_id,
        b.metadata,
    )
    .fetch_one(&mut *tx)
    .await
    .on_constraint("prices_one_default_per_product", || ApiError::conflict("This product already has a default price."))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(price_out(&state, id).await?)))
}

/// `GET /api/seller/prices/<id>/`.
#[utoipa::path(get, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 200, body = PriceOut)))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<PriceOut>> {
    let (id, _) = owned_price(&state, &user, id).await?;
    Ok(Json(price_out(&state, id).await?))
}

/// `PATCH /api/seller/prices/<id>/`. `metadata` is merged key by key (so a storefront can set
/// just `checkout_url`).
#[utoipa::path(patch, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), request_body = PriceIn, responses((status = 200, body = PriceOut)))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    ApiJson(mut b): ApiJson<PriceIn>,
) -> ApiResult<Json<PriceOut>> {
    let (id, product_id) = owned_price(&state, &user, id).await?;
    check_price(&mut b, false)?;
    let mut tx = state.pool.begin().await?;
    if b.is_default == Some(true) {
        sqlx::query!("UPDATE prices SET is_default = false WHERE product_id = $1 AND is_default AND id <> $2", product_id, id).execute(&mut *tx).await?;
    }
    sqlx::query!(
        r#"UPDATE prices SET name = coalesce($2, name), amount_cents = coalesce($3, amount_cents), currency = coalesce($4, currency),
               billing_period = coalesce($5, billing_period), is_default = coalesce($6, is_default), is_active = coalesce($7, is_active),
               clerk_plan_id = coalesce($8, clerk_plan_id), clerk_price_id = coalesce($9, clerk_price_id),
               metadata = metadata || coalesce($10, '{}'::jsonb)
           WHERE id = $1"#,
        id,
        b.name,
        b.amount_cents,
        b.currency,
        b.billing_period,
        b.is_default,
        b.is_active,
        b.clerk_plan_id,
        b.clerk_price_id,
        b.metadata,
    )
    .execute(&mut *tx)
    .await
    .on_constraint("prices_one_default_per_product", || ApiError::conflict("This product already has a default price."))?;
    tx.commit().await?;
    Ok(Json(price_out(&state, id).await?))
}

/// `DELETE /api/seller/prices/<id>/`: soft when orders refer to it.
#[utoipa::path(delete, path = "/api/seller/prices/{id}/", tag = "seller", params(("id" = Uuid, Path)), responses((status = 204)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let (id, _) = owned_price(&state, &user, id).await?;
    let referenced = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM order_items WHERE price_id = $1) AS "e!""#,
        id
    )
    .fetch_one(&state.pool)
    .await?;
    if referenced {
        sqlx::query!("UPDATE prices SET deleted_at = now(), is_active = false, is_default = false WHERE id = $1", id).execute(&state.pool).await?;
    } else {
        sqlx::query!("DELETE FROM prices WHERE id = $1", id)
            .execute(&state.pool)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
