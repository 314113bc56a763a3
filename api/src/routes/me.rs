//! Who am I: profile, verified claims, billing features.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    ApiResult, AppState,
    auth::{AuthUser, public_claims},
};

/// The caller's profile.
pub async fn profile_json(state: &AppState, user: &AuthUser) -> ApiResult<Value> {
    let p = sqlx::query!(
        "SELECT id, clerk_user_id, email, first_name, last_name, role, created_at FROM profiles WHERE id = $1",
        user.profile_id
    )
    .fetch_one(&state.pool)
    .await?;
    Ok(json!({
        "id": p.id, "clerk_user_id": p.clerk_user_id, "email": p.email, "first_name": p.first_name,
        "last_name": p.last_name, "role": p.role, "created_at": p.created_at,
    }))
}

/// `GET /api/me/` and `GET /api/profile/`.
#[utoipa::path(get, path = "/api/me/", tag = "auth", responses((status = 200, description = "The caller's profile"), (status = 401, description = "unauthenticated")))]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    Ok(Json(profile_json(&state, &user).await?))
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

/// Features from a billing claim: an array of strings, or Clerk's comma-separated `fea` form
/// (`u:pro,o:reports`, scope prefixes dropped).
fn claim_features(v: Option<&Value>) -> Vec<String> {
    let strip = |s: &str| {
        s.trim()
            .split_once(':')
            .map(|(_, f)| f)
            .unwrap_or(s.trim())
            .to_string()
    };
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(strip).collect(),
        Some(Value::String(s)) => s
            .split(',')
            .filter(|f| !f.trim().is_empty())
            .map(strip)
            .collect(),
        _ => Vec::new(),
    }
}

/// `GET /api/billing/features/`: the caller's entitlements (database, plus the billing claim),
/// or `{"feature", "enabled"}` with `?feature=`.
#[utoipa::path(get, path = "/api/billing/features/", tag = "auth", params(FeatureQuery), responses((status = 200, description = "Features")))]
pub async fn features(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<FeatureQuery>,
) -> ApiResult<Json<Value>> {
    let mut features: Vec<String> = sqlx::query_scalar!(
        r#"SELECT DISTINCT feature_key AS "f!" FROM entitlements
           WHERE profile_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"#,
        user.profile_id
    )
    .fetch_all(&state.pool)
    .await?;
    features.extend(claim_features(
        user.claims.extra.get(&state.config.clerk.billing_claim),
    ));
    features.sort();
    features.dedup();
    Ok(Json(match q.feature {
        Some(f) => json!({ "feature": f, "enabled": features.contains(&f) }),
        None => json!({ "features": features }),
    }))
}
