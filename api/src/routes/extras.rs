//! The starter's dashboard probes that Granary answers honestly: the Supabase profile bridge
//! (Granary keeps profiles in its own database) and the AI placeholders (none configured; no
//! invented usage).

use axum::{Json, extract::State};
use granary_jobs::{
    account::{billing, profile},
    credits,
};
use serde_json::{Value, json};

use crate::{ApiResult, AppState, auth::AuthUser};

/// `GET /api/supabase/profile/`: 200 `{ok: false, detail}` — there is no Supabase profile
/// table to bridge to.
#[utoipa::path(get, path = "/api/supabase/profile/", tag = "account", responses((status = 200, description = "{ok: false, detail, profile: null}")))]
pub async fn supabase_profile(_user: AuthUser) -> Json<Value> {
    Json(json!({
        "ok": false,
        "detail": "Granary keeps profiles in its own PostgreSQL database (GET /api/me/); there is no Supabase profile table to bridge to.",
        "profile": null,
    }))
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
        "plan_tier": profile::plan_tier(&features),
        "buckets": buckets,
        "billing_sync": null,
        "notes": notes,
    })))
}
