//! The starter's dashboard probes that Granary answers honestly: the Supabase profile bridge
//! (Granary keeps profiles in its own database) and the AI placeholders (none configured; no
//! invented usage).

use axum::{Json, extract::State};
use granary_jobs::account::{billing, profile};
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

/// `GET /api/ai/usage/summary/`: empty `buckets`, with a note saying why.
#[utoipa::path(get, path = "/api/ai/usage/summary/", tag = "account", responses((status = 200, description = "{buckets: [], notes: [...]}")))]
pub async fn ai_usage(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let features = billing::enabled_features(
        &state.pool,
        user.profile_id,
        user.claims.extra.get(&state.config.clerk.billing_claim),
    )
    .await?;
    Ok(Json(json!({
        "period": "current_billing_cycle",
        "period_start": null,
        "period_end": null,
        "period_source": "none",
        "plan_tier": profile::plan_tier(&features),
        "buckets": [],
        "billing_sync": null,
        "notes": ["No AI provider or usage metering is configured, so there is no usage to report."],
    })))
}
