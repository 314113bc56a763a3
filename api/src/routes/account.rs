//! The buyer's account: customer details, orders (create, confirm), subscriptions,
//! entitlements, downloads, bookings. Another user's rows are 404, never 403.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use granary_jobs::orders::{self, Payment};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    ApiError, ApiResult, AppState,
    auth::AuthUser,
    extract::ApiJson,
    validate::{Fields, is_currency},
};

/// The caller's customer account, created on first use with the profile's email as the billing
/// email.
async fn customer_json(state: &AppState, user: &AuthUser) -> ApiResult<Value> {
    sqlx::query!(
        r#"INSERT INTO customer_accounts (profile_id, billing_email)
           SELECT id, email FROM profiles WHERE id = $1
           ON CONFLICT (profile_id) DO NOTHING"#,
        user.profile_id
    )
    .execute(&state.pool)
    .await?;
    let c = sqlx::query!(
        "SELECT id, billing_email, full_name, company_name, phone, country, metadata, updated_at FROM customer_accounts WHERE profile_id = $1",
        user.profile_id
    )
    .fetch_one(&state.pool)
    .await?;
    Ok(json!({
        "id": c.id, "billing_email": c.billing_email, "full_name": c.full_name, "company_name": c.company_name,
        "phone": c.phone, "country": c.country, "metadata": c.metadata, "updated_at": c.updated_at,
    }))
}

/// `GET /api/account/customer/`.
#[utoipa::path(get, path = "/api/account/customer/", tag = "account", responses((status = 200, description = "Customer account")))]
pub async fn get_customer(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    Ok(Json(customer_json(&state, &user).await?))
}

/// Customer update body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CustomerIn {
    billing_email: Option<String>,
    full_name: Option<String>,
    company_name: Option<String>,
    phone: Option<String>,
    country: Option<String>,
    #[schema(value_type = Object)]
    metadata: Option<Value>,
}

/// `PATCH /api/account/customer/`.
#[utoipa::path(patch, path = "/api/account/customer/", tag = "account", request_body = CustomerIn, responses((status = 200, description = "Customer account")))]
pub async fn patch_customer(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(b): ApiJson<CustomerIn>,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new();
    f.check(
        b.billing_email.as_deref().is_none_or(|e| {
            e.len() <= 254
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        }),
        "billing_email",
        "must be an email address",
    );
    f.check(
        b.country
            .as_deref()
            .is_none_or(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())),
        "country",
        "an ISO 3166 alpha-2 code, e.g. DE",
    );
    f.check(
        b.metadata.as_ref().is_none_or(Value::is_object),
        "metadata",
        "must be an object",
    );
    f.finish()?;
    customer_json(&state, &user).await?;
    sqlx::query!(
        r#"UPDATE customer_accounts SET billing_email = coalesce($2, billing_email), full_name = coalesce($3, full_name),
               company_name = coalesce($4, company_name), phone = coalesce($5, phone), country = coalesce($6, country),
               metadata = metadata || coalesce($7, '{}'::jsonb)
           WHERE profile_id = $1"#,
        user.profile_id,
        b.billing_email,
        b.full_name,
        b.company_name,
        b.phone,
        b.country,
        b.metadata
    )
    .execute(&state.pool)
    .await?;
    Ok(Json(customer_json(&state, &user).await?))
}

/// Orders with their items, newest first.
async fn orders_json(
    state: &AppState,
    user: &AuthUser,
    only: Option<Uuid>,
) -> ApiResult<Vec<Value>> {
    let orders = sqlx::query!(
        r#"SELECT id, public_id, status, currency, subtotal_cents, total_cents, checkout_url, paid_at, fulfilled_at, created_at
           FROM orders WHERE customer_profile_id = $1 AND ($2::uuid IS NULL OR id = $2) ORDER BY created_at DESC LIMIT 200"#,
        user.profile_id,
        only
    )
    .fetch_all(&state.pool)
    .await?;
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let items = sqlx::query!(
        "SELECT id, order_id, product_id, price_id, product_name, quantity, unit_amount_cents, total_cents, currency FROM order_items WHERE order_id = ANY($1) ORDER BY created_at, id",
        &ids
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(orders
        .into_iter()
        .map(|o| {
            let its: Vec<Value> = items
                .iter()
                .filter(|i| i.order_id == o.id)
                .map(|i| json!({"id": i.id, "product_id": i.product_id, "price_id": i.price_id, "product_name": i.product_name, "quantity": i.quantity, "unit_amount_cents": i.unit_amount_cents, "total_cents": i.total_cents, "currency": i.currency}))
                .collect();
            json!({
                "public_id": o.public_id, "status": o.status, "currency": o.currency, "subtotal_cents": o.subtotal_cents,
                "total_cents": o.total_cents, "checkout_url": o.checkout_url, "paid_at": o.paid_at, "fulfilled_at": o.fulfilled_at,
                "created_at": o.created_at, "items": its,
            })
        })
        .collect())
}

/// `GET /api/account/orders/`.
#[utoipa::path(get, path = "/api/account/orders/", tag = "account", responses((status = 200, description = "Orders")))]
pub async fn list_orders(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(orders_json(&state, &user, None).await?))
}

/// One line of an order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ItemIn {
    price_id: Uuid,
    quantity: Option<i32>,
}

/// `{"price_id", "quantity"?}` or `{"items": [...]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OrderIn {
    price_id: Option<Uuid>,
    quantity: Option<i32>,
    items: Option<Vec<ItemIn>>,
}

fn new_public_id() -> String {
    format!("ord_{}", hex_lower(&rand::random::<[u8; 16]>()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /api/account/orders/create/`: totals are computed here from the stored prices; the
/// client's amounts are never trusted. A retried create with the same `Idempotency-Key`
/// returns the first order (200 instead of 201).
#[utoipa::path(post, path = "/api/account/orders/create/", tag = "account", request_body = OrderIn, params(("Idempotency-Key" = Option<String>, Header)), responses((status = 201, description = "Order created"), (status = 200, description = "Idempotent replay"), (status = 422, description = "validation_failed / checkout_url_missing")))]
pub async fn create_order(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(b): ApiJson<OrderIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    if key.as_ref().is_some_and(|k| k.len() > 200) {
        return Err(ApiError::field("Idempotency-Key", "at most 200 characters"));
    }
    let lines: Vec<(Uuid, i32)> = match (b.price_id, b.items) {
        (Some(p), None) => vec![(p, b.quantity.unwrap_or(1))],
        (None, Some(items)) if !items.is_empty() => items
            .into_iter()
            .map(|i| (i.price_id, i.quantity.unwrap_or(1)))
            .collect(),
        _ => {
            return Err(ApiError::field(
                "items",
                "give either price_id (and quantity) or a non-empty items list",
            ));
        }
    };
    let mut f = Fields::new();
    f.check(lines.len() <= 50, "items", "at most 50 lines");
    f.check(
        lines.iter().all(|(_, q)| (1..=1000).contains(q)),
        "quantity",
        "1 to 1000",
    );
    f.finish()?;

    let mut tx = state.pool.begin().await?;
    if let Some(k) = &key {
        // Serialise retries of the same key, then return the first order if there is one.
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            format!("order-create:{}:{k}", user.profile_id)
        )
        .execute(&mut *tx)
        .await?;
        if let Some(id) = sqlx::query_scalar!(
            "SELECT id FROM orders WHERE customer_profile_id = $1 AND idempotency_key = $2",
            user.profile_id,
            k
        )
        .fetch_optional(&mut *tx)
        .await?
        {
            tx.commit().await?;
            let order = orders_json(&state, &user, Some(id))
                .await?
                .pop()
                .ok_or(ApiError::NotFound)?;
            return Ok((StatusCode::OK, Json(order)));
        }
    }
    let price_ids: Vec<Uuid> = lines.iter().map(|(p, _)| *p).collect();
    let prices = sqlx::query!(
        r#"SELECT pr.id, pr.product_id, pr.amount_cents, pr.currency, pr.metadata, p.name AS product_name
           FROM prices pr JOIN products p ON p.id = pr.product_id
           WHERE pr.id = ANY($1) AND pr.is_active AND pr.deleted_at IS NULL AND p.deleted_at IS NULL AND p.visibility = 'published'"#,
        &price_ids
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut f = Fields::new();
    for (p, _) in &lines {
        f.check(
            prices.iter().any(|x| x.id == *p),
            "price_id",
            &format!("{p} is not an active price of a published product"),
        );
    }
    let currency = prices
        .first()
        .map(|p| p.currency.clone())
        .unwrap_or_default();
    f.check(
        prices.iter().all(|p| p.currency == currency),
        "items",
        "all prices must be in the same currency",
    );
    f.finish()?;
    debug_assert!(is_currency(&currency));

    let checkout_url = lines.iter().find_map(|(p, _)| {
        prices
            .iter()
            .find(|x| x.id == *p)
            .and_then(|x| x.metadata.get("checkout_url"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if checkout_url.is_none() && !state.config.dev_manual_checkout {
        return Err(ApiError::Unprocessable {
            code: "checkout_url_missing",
            message: "This price has no metadata.checkout_url; add one (or enable DEV_MANUAL_CHECKOUT for local development).".into(),
        });
    }
    let total: i64 = lines
        .iter()
        .map(|(p, q)| {
            prices
                .iter()
                .find(|x| x.id == *p)
                .map_or(0, |x| x.amount_cents)
                * i64::from(*q)
        })
        .sum();
    let order_id = sqlx::query_scalar!(
        r#"INSERT INTO orders (public_id, customer_profile_id, currency, subtotal_cents, total_cents, idempotency_key, checkout_url)
           VALUES ($1, $2, $3, $4, $4, $5, $6) RETURNING id"#,
        new_public_id(),
        user.profile_id,
        currency,
        total,
        key,
        checkout_url
    )
    .fetch_one(&mut *tx)
    .await?;
    for (p, q) in &lines {
        let price = prices.iter().find(|x| x.id == *p).expect("validated above");
        sqlx::query!(
            r#"INSERT INTO order_items (order_id, product_id, price_id, product_name, quantity, unit_amount_cents, total_cents, currency)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
            order_id,
            price.product_id,
            price.id,
            price.product_name,
            q,
            price.amount_cents,
            price.amount_cents * i64::from(*q),
            price.currency
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let order = orders_json(&state, &user, Some(order_id))
        .await?
        .pop()
        .ok_or(ApiError::NotFound)?;
    tracing::info!(order_id = %order_id, total, "order created");
    Ok((StatusCode::CREATED, Json(order)))
}

/// Confirm body: `{"method": "manual"}` (default) or `{"method": "clerk"}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ConfirmIn {
    method: Option<String>,
}

/// `POST /api/account/orders/<public_id>/confirm/`. Paid orders come from verified webhooks;
/// this exists for local development (manual) and is guarded as API.md says. A confirm marks
/// the order paid and enqueues fulfillment in one transaction.
#[utoipa::path(post, path = "/api/account/orders/{public_id}/confirm/", tag = "account", params(("public_id" = String, Path)), request_body = ConfirmIn, responses((status = 200, description = "Order (paid)"), (status = 403, description = "manual_confirm_disabled"), (status = 409, description = "pending_verification")))]
pub async fn confirm_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(public_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    // The body is optional: an empty one means a manual confirm.
    let body: ConfirmIn = if body.iter().all(u8::is_ascii_whitespace) {
        ConfirmIn::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
            code: "invalid_json",
            message: format!("The body is not valid JSON: {e}"),
        })?
    };
    let method = body.method.unwrap_or_else(|| "manual".into());
    let order = sqlx::query!("SELECT id, status, total_cents, currency FROM orders WHERE public_id = $1 AND customer_profile_id = $2", public_id, user.profile_id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound)?;
    match method.as_str() {
        "manual" if !state.config.order_confirm_allow_manual => {
            return Err(ApiError::Forbidden {
                code: "manual_confirm_disabled",
                message: "Manual order confirmation is disabled (ORDER_CONFIRM_ALLOW_MANUAL)."
                    .into(),
            });
        }
        "clerk" if !state.config.order_confirm_allow_client_side_clerk_confirm => {
            return Err(ApiError::Conflict {
                code: "pending_verification",
                message: "Payment is confirmed by verified Clerk webhooks, not by the client."
                    .into(),
            });
        }
        "manual" | "clerk" => {}
        _ => return Err(ApiError::field("method", "manual or clerk")),
    }
    if !matches!(order.status.as_str(), "pending" | "paid" | "fulfilled") {
        return Err(ApiError::conflict(format!(
            "The order is {}.",
            order.status
        )));
    }
    let mut tx = state.pool.begin().await?;
    let payment_id = format!("{method}:{public_id}");
    orders::record_payment(
        &mut tx,
        order.id,
        &Payment {
            provider: "manual",
            provider_payment_id: &payment_id,
            kind: "payment",
            amount_cents: order.total_cents,
            currency: &order.currency,
            webhook_event_id: None,
            raw: json!({ "confirmed_by": user.clerk_user_id, "method": method }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(
        orders_json(&state, &user, Some(order.id))
            .await?
            .pop()
            .ok_or(ApiError::NotFound)?,
    ))
}

/// `GET /api/account/subscriptions/`.
#[utoipa::path(get, path = "/api/account/subscriptions/", tag = "account", responses((status = 200, description = "Subscriptions")))]
pub async fn subscriptions(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<Value>>> {
    let rows = sqlx::query!(
        r#"SELECT provider_subscription_id, plan_id, plan_slug, status, feature_keys, current_period_start, current_period_end, canceled_at, ended_at, updated_at
           FROM subscriptions WHERE clerk_user_id = $1 AND kind = 'item' ORDER BY updated_at DESC"#,
        user.clerk_user_id
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|s| json!({"id": s.provider_subscription_id, "plan_id": s.plan_id, "plan_slug": s.plan_slug, "status": s.status, "feature_keys": s.feature_keys, "current_period_start": s.current_period_start, "current_period_end": s.current_period_end, "canceled_at": s.canceled_at, "ended_at": s.ended_at, "updated_at": s.updated_at}))
            .collect(),
    ))
}

/// `GET /api/account/entitlements/`: what the caller may use now.
#[utoipa::path(get, path = "/api/account/entitlements/", tag = "account", responses((status = 200, description = "Entitlements")))]
pub async fn entitlements(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<Value>>> {
    let rows = sqlx::query!(
        r#"SELECT feature_key, source_type, source_id, granted_at, expires_at FROM entitlements
           WHERE profile_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) ORDER BY feature_key, granted_at"#,
        user.profile_id
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows.into_iter().map(|e| json!({"feature_key": e.feature_key, "source_type": e.source_type, "source_id": e.source_id, "granted_at": e.granted_at, "expires_at": e.expires_at})).collect()))
}

/// `GET /api/account/downloads/`: the caller's grants (tokens are shown only here, to their
/// owner).
#[utoipa::path(get, path = "/api/account/downloads/", tag = "account", responses((status = 200, description = "Download grants")))]
pub async fn downloads(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<(HeaderMap, Json<Vec<Value>>)> {
    let rows = sqlx::query!(
        r#"SELECT g.token, g.expires_at, g.download_count, g.max_downloads, g.revoked_at, g.created_at,
                  a.title, a.status AS asset_status, a.is_active, a.deleted_at AS asset_deleted_at, o.public_id
           FROM download_grants g
           JOIN digital_assets a ON a.id = g.asset_id
           JOIN order_items oi ON oi.id = g.order_item_id JOIN orders o ON o.id = oi.order_id
           WHERE g.profile_id = $1 ORDER BY g.created_at DESC"#,
        user.profile_id
    )
    .fetch_all(&state.pool)
    .await?;
    let now = Utc::now();
    let out = rows
        .into_iter()
        .map(|g| {
            let can = g.revoked_at.is_none()
                && g.expires_at.is_none_or(|e| e > now)
                && g.max_downloads.is_none_or(|m| g.download_count < m)
                && g.asset_status == "ready"
                && g.is_active
                && g.asset_deleted_at.is_none();
            json!({"token": g.token, "asset_title": g.title, "order_public_id": g.public_id, "can_download": can, "expires_at": g.expires_at, "download_count": g.download_count, "max_downloads": g.max_downloads, "revoked": g.revoked_at.is_some(), "created_at": g.created_at})
        })
        .collect();
    let mut h = HeaderMap::new();
    h.insert(
        axum::http::header::CACHE_CONTROL,
        "no-store".parse().expect("static header"),
    );
    Ok((h, Json(out)))
}

/// `GET /api/account/bookings/`.
#[utoipa::path(get, path = "/api/account/bookings/", tag = "account", responses((status = 200, description = "Bookings")))]
pub async fn list_bookings(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<Value>>> {
    let rows = sqlx::query!(
        r#"SELECT b.id, b.service_offer_id, b.status, b.starts_at, b.notes, b.created_at, p.name AS product_name, s.duration_minutes
           FROM bookings b JOIN service_offers s ON s.id = b.service_offer_id JOIN products p ON p.id = s.product_id
           WHERE b.profile_id = $1 ORDER BY b.created_at DESC"#,
        user.profile_id
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows.into_iter().map(|b| json!({"id": b.id, "service_offer_id": b.service_offer_id, "product_name": b.product_name, "status": b.status, "starts_at": b.starts_at, "duration_minutes": b.duration_minutes, "notes": b.notes, "created_at": b.created_at})).collect()))
}

/// Booking request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BookingIn {
    service_offer_id: Option<Uuid>,
    product_id: Option<Uuid>,
    starts_at: DateTime<Utc>,
    notes: Option<String>,
}

/// `POST /api/account/bookings/`: inside the offer's booking window (after its minimum notice)
/// and under its capacity for that start time. The offer row is locked while counting, so two
/// requests for the last seat cannot both get it.
#[utoipa::path(post, path = "/api/account/bookings/", tag = "account", request_body = BookingIn, responses((status = 201, description = "Booking requested"), (status = 409, description = "slot full"), (status = 422, description = "outside the window")))]
pub async fn create_booking(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(b): ApiJson<BookingIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut f = Fields::new();
    f.check(
        b.service_offer_id.is_some() || b.product_id.is_some(),
        "service_offer_id",
        "give service_offer_id or product_id",
    );
    f.check(
        b.notes.as_deref().is_none_or(|n| n.len() <= 4000),
        "notes",
        "at most 4000 characters",
    );
    f.finish()?;
    let mut tx = state.pool.begin().await?;
    let offer = sqlx::query!(
        r#"SELECT s.id, s.capacity, s.booking_window_days, s.min_notice_hours FROM service_offers s JOIN products p ON p.id = s.product_id
           WHERE (s.id = $1 OR s.product_id = $2) AND s.is_active AND p.deleted_at IS NULL AND p.visibility = 'published'
           FOR UPDATE OF s"#,
        b.service_offer_id,
        b.product_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    let now = Utc::now();
    let earliest = now + chrono::Duration::hours(i64::from(offer.min_notice_hours));
    let latest = now + chrono::Duration::days(i64::from(offer.booking_window_days));
    if b.starts_at < earliest || b.starts_at > latest {
        return Err(ApiError::field(
            "starts_at",
            format!("must be between {earliest} and {latest}"),
        ));
    }
    let taken = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM bookings WHERE service_offer_id = $1 AND starts_at = $2 AND status <> 'canceled'"#,
        offer.id,
        b.starts_at
    )
    .fetch_one(&mut *tx)
    .await?;
    if taken >= i64::from(offer.capacity) {
        return Err(ApiError::conflict("This time slot is fully booked."));
    }
    let id = sqlx::query_scalar!(
        "INSERT INTO bookings (profile_id, service_offer_id, starts_at, notes) VALUES ($1, $2, $3, coalesce($4, '')) RETURNING id",
        user.profile_id,
        offer.id,
        b.starts_at,
        b.notes
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": id, "service_offer_id": offer.id, "status": "requested", "starts_at": b.starts_at, "notes": b.notes.unwrap_or_default()}),
        ),
    ))
}
