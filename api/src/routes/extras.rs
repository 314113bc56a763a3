//! The starter's dashboard probes that Granary answers honestly: the profile probe (Granary
//! keeps profiles in its own database, and reads the caller's from there) and the AI
//! placeholders (none configured; no invented usage).

use axum::{Json, extract::State};
use granary_jobs::{
    billing::{self, credits},
    profiles,
};
use serde::Serialize;
use serde_json::{Value, json};

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState, auth::AuthUser};

/// `GET /api/supabase/profile/`, the dashboard's "can the backend read my profile from its
/// database" probe. Granary's profiles live in its own PostgreSQL (there is no Supabase), so
/// the probe reads the caller's profile from there: 200 `{ok: true, detail, profile,
/// source_table: "profiles"}`. When the database cannot be read, 200 `{ok: false, detail,
/// profile: null}` with the reason, as the starter answers a failed probe.
#[utoipa::path(get, path = "/api/supabase/profile/", tag = "account", responses((status = 200, body = ProfileProbe, description = "ok: true with the caller's profile, or ok: false with the reason the database could not be read")))]
pub async fn supabase_profile(
    State(state): State<AppState>,
    user: Result<AuthUser, ApiError>,
) -> ApiResult<Json<ProfileProbe>> {
    let unreadable = |why: String| ProfileProbe {
        ok: false,
        detail: format!("Granary could not read your profile from its PostgreSQL database: {why}"),
        profile: None,
        source_table: "profiles",
    };
    // Signing in writes the profile row, so an unreachable database shows here first.
    let user = match user {
        Ok(user) => user,
        Err(e @ ApiError::Unavailable { .. }) => return Ok(Json(unreadable(e.to_string()))),
        Err(e) => return Err(e),
    };
    let read = async {
        let features = billing::enabled_features(
            &state.pool,
            user.profile_id,
            user.claims.extra.get(&state.config.clerk.billing_claim),
        )
        .await?;
        profiles::profile(&state.pool, user.profile_id, &features).await
    };
    Ok(Json(match read.await {
        Ok(p) => ProfileProbe {
            ok: true,
            detail: "Read your profile from Granary's own PostgreSQL database (table profiles); \
                     Granary keeps profiles there, not in Supabase."
                .into(),
            profile: Some(p),
            source_table: "profiles",
        },
        Err(e) => match ApiError::from(e) {
            e @ ApiError::Unavailable { .. } => unreadable(e.to_string()),
            e => return Err(e),
        },
    }))
}

/// `GET /api/supabase/profile/`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileProbe {
    /// The caller's profile was read from the database.
    pub ok: bool,
    /// What was read, and from where, or why it could not be.
    pub detail: String,
    /// The caller's profile, as `GET /api/me/` shows it.
    pub profile: Option<profiles::ProfileOut>,
    /// The table it was read from.
    pub source_table: &'static str,
}

/// `GET /api/ai/providers/`: `[]` — no AI provider is configured.
#[utoipa::path(get, path = "/api/ai/providers/", tag = "account", responses((status = 200, description = "[]")))]
pub async fn ai_providers(_user: AuthUser) -> Json<Vec<Value>> {
    Json(Vec::new())
}

/// `GET /api/ai/usage/summary/`: one bucket per credit unit the caller holds, from the ledger
/// (`used`, `limit`, `percent_used`, `near_limit`, `reset_window`); empty, with a note, where
/// the shop sells no credits. Usage is never invented.
#[utoipa::path(get, path = "/api/ai/usage/summary/", tag = "account", responses((status = 200, description = "{buckets, notes, plan_tier, period_end}")))]
pub async fn ai_usage(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let features = billing::enabled_features(
        &state.pool,
        user.profile_id,
        user.claims.extra.get(&state.config.clerk.billing_claim),
    )
    .await?;
    let buckets = credits::usage_buckets(&state.pool, user.profile_id).await?;
    let period_end = billing::current_period_end(&state.pool, &user.clerk_user_id).await?;
    let notes: Vec<&str> = if buckets.is_empty() {
        vec![
            "No credits are sold or granted to this account, and no AI provider is configured, so there is no usage to report.",
        ]
    } else {
        vec![
            "Usage comes from the credit ledger: used in the current billing period against the plan's allowance, or against everything bought.",
        ]
    };
    Ok(Json(json!({
        "period": "current_billing_cycle",
        "period_start": null,
        "period_end": period_end,
        "period_source": if period_end.is_some() { "subscription" } else { "none" },
        "plan_tier": profiles::plan_tier(&features),
        "buckets": buckets,
        "billing_sync": null,
        "notes": notes,
    })))
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(supabase_profile))
        .routes(routes!(ai_providers))
        .routes(routes!(ai_usage))
}
