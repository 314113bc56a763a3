//! Credits: the caller's balances and ledger, consumption (by the user, or by the shop's own
//! service with `CREDITS_SERVICE_TOKEN` naming the user), and the operator's adjustments.

use axum::{
    Json,
    extract::{FromRequestParts, State},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use granary_jobs::{
    billing::credits::{self, ConsumeError, ConsumeInput, Consumed, CreditsOut},
    platform::audit::Actor,
};
use serde::Deserialize;
use serde_json::{Value, json};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    ApiError, ApiResult, AppState,
    auth::{Admin, AuthUser},
    extract::ApiJson,
    request_id::current_request_id,
};

/// Who is debiting: a signed-in user (their own credits), or the shop's service naming a user.
pub enum Caller {
    /// A Clerk session.
    User(Box<AuthUser>),
    /// `Authorization: Bearer <CREDITS_SERVICE_TOKEN>`, compared in constant time.
    Service,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if crate::auth::is_service_token(parts, &state.config) {
            return Ok(Self::Service);
        }
        AuthUser::from_request_parts(parts, state)
            .await
            .map(|u| Self::User(Box::new(u)))
    }
}

/// `GET /api/account/credits/`: `{balances: [{unit, balance, ...}], entries: [...]}`.
#[utoipa::path(get, path = "/api/account/credits/", tag = "account", responses((status = 200, body = CreditsOut)))]
pub async fn summary(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<CreditsOut>> {
    Ok(Json(credits::summary(&state.pool, user.profile_id).await?))
}

/// `POST /api/account/credits/consume/`: `{unit, amount, idempotency_key}` (and `user` with the
/// service token). Answers the new balance; 402 `insufficient_credits` with the balance, and
/// nothing changed; a repeated key answers the first result.
#[utoipa::path(post, path = "/api/account/credits/consume/", tag = "account", request_body = ConsumeInput, responses((status = 200, body = Consumed), (status = 402, description = "insufficient_credits, with the balance"), (status = 404, description = "unknown user (service token)"), (status = 422, description = "validation_failed")))]
pub async fn consume(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<ConsumeInput>,
) -> ApiResult<Response> {
    let profile_id = match caller {
        Caller::User(user) => user.profile_id,
        Caller::Service => {
            let user = b.user.as_deref().ok_or_else(|| {
                ApiError::field(
                    "user",
                    "the Clerk user id to debit is required with the service token",
                )
            })?;
            credits::profile_of(&state.pool, user).await?
        }
    };
    match credits::consume(&state.pool, profile_id, &b).await {
        Ok(done) => Ok(Json(done).into_response()),
        Err(ConsumeError::Insufficient { balance }) => {
            let message = format!(
                "Not enough {}: {} needed, {balance} left.",
                b.unit, b.amount
            );
            let mut error = json!({"code": "insufficient_credits", "message": message});
            if let Some(id) = current_request_id() {
                error["request_id"] = json!(id);
            }
            Ok((
                StatusCode::PAYMENT_REQUIRED,
                Json(
                    json!({"error": error, "detail": message, "unit": b.unit.trim().to_lowercase(),
                            "balance": balance, "requested": b.amount}),
                ),
            )
                .into_response())
        }
        Err(ConsumeError::Domain(e)) => Err(e.into()),
    }
}

/// `POST /api/admin/credits/adjust/` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AdjustIn {
    /// Whose credits.
    clerk_user_id: String,
    /// Unit.
    unit: String,
    /// Positive adds, negative removes (at most the balance).
    amount: i64,
    /// Why (required; kept in the ledger and the audit log).
    reason: Option<String>,
}

/// `POST /api/admin/credits/adjust/`: the operator adds or removes credits, with a reason.
#[utoipa::path(post, path = "/api/admin/credits/adjust/", tag = "admin", request_body = AdjustIn, responses((status = 200, description = "{clerk_user_id, unit, balance}"), (status = 404, description = "no such user"), (status = 409, description = "more than the balance")))]
pub async fn adjust(
    State(state): State<AppState>,
    user: Admin,
    ApiJson(b): ApiJson<AdjustIn>,
) -> ApiResult<Json<Value>> {
    let actor = Actor {
        name: format!("admin:{}", user.clerk_user_id),
        reason: b.reason,
    };
    let balance = credits::adjust(&state.pool, &b.clerk_user_id, &b.unit, b.amount, &actor).await?;
    Ok(Json(
        json!({"clerk_user_id": b.clerk_user_id, "unit": b.unit.trim().to_lowercase(), "balance": balance}),
    ))
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(consume))
        .routes(routes!(adjust))
}
