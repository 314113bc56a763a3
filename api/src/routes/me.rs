//! Who am I: `/me/` nested as the starter nests it, the flat profile, verified claims, billing
//! features.

use axum::{
    Json,
    extract::{Query, State},
};
use granary_jobs::{
    billing,
    profiles::{self, MeOut, ProfileOut},
};
use serde::Deserialize;
use serde_json::{Value, json};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    ApiResult, AppState,
    auth::{AuthUser, public_claims},
};

async fn features(state: &AppState, user: &AuthUser) -> ApiResult<Vec<String>> {
    Ok(billing::enabled_features(
        &state.pool,
        user.profile_id,
        user.claims.extra.get(&state.config.clerk.billing_claim),
    )
    .await?)
}

/// `GET /api/me/`: `{clerk_user_id, email, org_id, billing_features, profile, customer_account}`.
#[utoipa::path(get, path = "/api/me/", tag = "auth", responses((status = 200, body = MeOut), (status = 401, description = "unauthenticated")))]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<MeOut>> {
    let features = features(&state, &user).await?;
    let org_id = user
        .claims
        .extra
        .get("org_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut conn = state.pool.acquire().await?;
    Ok(Json(
        profiles::me(&mut conn, user.profile_id, org_id, features).await?,
    ))
}

/// `GET /api/profile/`: the profile alone.
#[utoipa::path(get, path = "/api/profile/", tag = "auth", responses((status = 200, body = ProfileOut)))]
pub async fn profile(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<ProfileOut>> {
    let features = features(&state, &user).await?;
    Ok(Json(
        profiles::profile(&state.pool, user.profile_id, &features).await?,
    ))
}

/// `GET /api/me/clerk/`: the verified token claims.
#[utoipa::path(get, path = "/api/me/clerk/", tag = "auth", responses((status = 200, description = "Verified Clerk claims")))]
pub async fn me_clerk(user: AuthUser) -> Json<Value> {
    Json(json!({ "user_id": user.clerk_user_id, "claims": public_claims(&user.claims) }))
}

/// `?feature=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FeatureQuery {
    /// One feature to check.
    pub feature: Option<String>,
}

/// `GET /api/billing/features/`: `{"enabled_features": [...]}` (entitlements and the billing
/// claim, sorted, lower case), or `{"feature", "enabled"}` with `?feature=`.
#[utoipa::path(get, path = "/api/billing/features/", tag = "auth", params(FeatureQuery), responses((status = 200, description = "{enabled_features} or {feature, enabled}")))]
pub async fn billing_features(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<FeatureQuery>,
) -> ApiResult<Json<Value>> {
    let features = features(&state, &user).await?;
    Ok(Json(match q.feature {
        Some(f) => {
            let f = f.trim().to_lowercase();
            json!({ "enabled": features.contains(&f), "feature": f })
        }
        None => json!({ "enabled_features": features }),
    }))
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(profile))
        .routes(routes!(me_clerk))
        .routes(routes!(billing_features))
}
