//! Features, entitlements, subscriptions and their sync status, in the starter's shapes
//! (docs/storefront.md §4.7, §4.11–4.13).

pub mod credits;
pub mod subscriptions;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    Config,
    billing::subscriptions::SyncEntitlements,
    model::{EntitlementSource, SubscriptionStatus},
    providers::clerk,
    queue,
};

/// Features from a billing claim: a list, Clerk's comma-separated `fea` form (`u:pro,o:reports`,
/// scope prefixes dropped) or a `{feature: bool}` map; trimmed and lower-cased.
pub fn claim_features(v: Option<&Value>) -> Vec<String> {
    let clean = |s: &str| {
        let s = s.trim();
        s.split_once(':')
            .map(|(_, f)| f)
            .unwrap_or(s)
            .trim()
            .to_lowercase()
    };
    let mut out: Vec<String> = match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(clean).collect(),
        Some(Value::String(s)) => s.split(',').map(clean).collect(),
        Some(Value::Object(m)) => m
            .iter()
            .filter(|(_, on)| on.as_bool().unwrap_or(false))
            .map(|(k, _)| clean(k))
            .collect(),
        _ => Vec::new(),
    };
    out.retain(|f| !f.is_empty());
    out
}

/// The caller's enabled features: current entitlements plus the billing claim, sorted, lower
/// case, deduplicated.
pub async fn enabled_features(
    db: impl PgExecutor<'_>,
    profile_id: Uuid,
    claim: Option<&Value>,
) -> sqlx::Result<Vec<String>> {
    let mut features: Vec<String> = sqlx::query_scalar!(
        r#"SELECT DISTINCT lower(feature_key) AS "f!" FROM entitlements
           WHERE profile_id = $1 AND revoked_at IS NULL AND granted_at <= now() AND (expires_at IS NULL OR expires_at > now())"#,
        profile_id
    )
    .fetch_all(db)
    .await?;
    features.extend(claim_features(claim));
    features.sort();
    features.dedup();
    Ok(features)
}

/// An entitlement as the starter shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntitlementOut {
    /// Id.
    pub id: Uuid,
    /// Feature.
    pub feature_key: String,
    /// `purchase`, `plan` or `manual`.
    pub source_type: EntitlementSource,
    /// The order item, subscription item or operator reference.
    pub source_reference: String,
    /// Granary's name for `source_reference`.
    pub source_id: String,
    /// Granted.
    pub starts_at: DateTime<Utc>,
    /// Ends (subscription period end for a canceled plan), if ever.
    pub ends_at: Option<DateTime<Utc>>,
    /// Not revoked.
    pub is_active: bool,
    /// Active, started and not ended: usable now.
    pub is_current: bool,
    /// Why it was revoked, if it was.
    pub revoke_reason: Option<String>,
    /// Free-form.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated (revocation time, else grant time).
    pub updated_at: DateTime<Utc>,
}

/// The caller's entitlements by feature key: current ones only unless `all`.
pub async fn entitlements(
    db: impl PgExecutor<'_>,
    profile_id: Uuid,
    all: bool,
) -> sqlx::Result<Vec<EntitlementOut>> {
    let rows = sqlx::query!(
        r#"SELECT id, feature_key, source_type AS "source_type: EntitlementSource", source_id, granted_at, expires_at,
                  revoked_at, revoke_reason,
                  (revoked_at IS NULL AND granted_at <= now() AND (expires_at IS NULL OR expires_at > now())) AS "is_current!"
           FROM entitlements WHERE profile_id = $1
             AND ($2 OR (revoked_at IS NULL AND granted_at <= now() AND (expires_at IS NULL OR expires_at > now())))
           ORDER BY feature_key, granted_at"#,
        profile_id,
        all
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|e| EntitlementOut {
            id: e.id,
            feature_key: e.feature_key,
            source_type: e.source_type,
            source_reference: e.source_id.clone(),
            source_id: e.source_id,
            starts_at: e.granted_at,
            ends_at: e.expires_at,
            is_active: e.revoked_at.is_none(),
            is_current: e.is_current,
            revoke_reason: e.revoke_reason,
            metadata: json!({}),
            created_at: e.granted_at,
            updated_at: e.revoked_at.unwrap_or(e.granted_at),
        })
        .collect())
}

/// The plan's local price, as the starter summarises it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceSummary {
    /// Price id.
    pub id: Uuid,
    /// Label.
    pub name: String,
    /// Minor units.
    pub amount_cents: i64,
    /// ISO currency.
    pub currency: String,
    /// Billing period.
    pub billing_period: String,
}

/// A subscription (one Clerk subscription item: a plan) as the starter shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionOut {
    /// Clerk's subscription item id.
    pub id: String,
    /// Same as `id` (the starter's name).
    pub clerk_subscription_id: String,
    /// The local product whose price carries the plan id.
    pub product: Option<Uuid>,
    /// Its name, else the plan slug.
    pub product_name: Option<String>,
    /// The local price.
    pub price: Option<Uuid>,
    /// The local price, summarised.
    pub price_summary: Option<PriceSummary>,
    /// Clerk plan id.
    pub plan_id: Option<String>,
    /// Clerk plan slug.
    pub plan_slug: Option<String>,
    /// `trialing`, `active`, `past_due`, `canceled`, ... (Granary adds `upcoming`, `ended`,
    /// `abandoned`).
    pub status: SubscriptionStatus,
    /// Features the plan grants.
    pub feature_keys: Vec<String>,
    /// Current period.
    pub current_period_start: Option<DateTime<Utc>>,
    /// Current period end.
    pub current_period_end: Option<DateTime<Utc>>,
    /// Canceled, but access runs to the period end.
    pub cancel_at_period_end: bool,
    /// Canceled.
    pub canceled_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Free-form.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// The caller's subscription items, most recently changed first.
pub async fn list_subscriptions(
    db: impl PgExecutor<'_>,
    clerk_user_id: &str,
) -> sqlx::Result<Vec<SubscriptionOut>> {
    let rows = sqlx::query!(
        r#"SELECT s.provider_subscription_id, s.plan_id, s.plan_slug, s.status AS "status: SubscriptionStatus", s.feature_keys,
                  s.current_period_start, s.current_period_end, s.canceled_at, s.ended_at, s.created_at, s.updated_at,
                  pr.id AS "price_id?", pr.name AS "price_name?", pr.amount_cents AS "amount_cents?", pr.currency AS "currency?",
                  pr.billing_period AS "billing_period?", p.id AS "product_id?", p.name AS "product_name?"
           FROM subscriptions s
           LEFT JOIN prices pr ON pr.id = s.price_id
           LEFT JOIN products p ON p.id = pr.product_id
           WHERE s.clerk_user_id = $1 AND s.kind = 'item' ORDER BY s.updated_at DESC"#,
        clerk_user_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|s| {
            let price_summary = match (
                s.price_id,
                s.price_name,
                s.amount_cents,
                s.currency,
                s.billing_period,
            ) {
                (
                    Some(id),
                    Some(name),
                    Some(amount_cents),
                    Some(currency),
                    Some(billing_period),
                ) => Some(PriceSummary {
                    id,
                    name,
                    amount_cents,
                    currency,
                    billing_period,
                }),
                _ => None,
            };
            SubscriptionOut {
                id: s.provider_subscription_id.clone(),
                clerk_subscription_id: s.provider_subscription_id,
                product: s.product_id,
                product_name: s.product_name.or_else(|| s.plan_slug.clone()),
                price: price_summary.as_ref().map(|p| p.id),
                price_summary,
                plan_id: s.plan_id,
                plan_slug: s.plan_slug,
                cancel_at_period_end: s.status == SubscriptionStatus::Canceled
                    && s.current_period_end.is_some_and(|e| e > Utc::now()),
                status: s.status,
                feature_keys: s.feature_keys,
                current_period_start: s.current_period_start,
                current_period_end: s.current_period_end,
                canceled_at: s.canceled_at,
                ended_at: s.ended_at,
                metadata: json!({}),
                created_at: s.created_at,
                updated_at: s.updated_at,
            }
        })
        .collect())
}

/// The end of the caller's current billing period (their live subscription items'), if any.
pub async fn current_period_end(
    db: impl PgExecutor<'_>,
    clerk_user_id: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        r#"SELECT max(current_period_end) FROM subscriptions
           WHERE clerk_user_id = $1 AND kind = 'item' AND status IN ('active', 'past_due', 'free_trial')"#,
        clerk_user_id
    )
    .fetch_one(db)
    .await
}

/// Fresh while the newest sync is younger than this.
pub const SOFT_WINDOW_SECONDS: i64 = 900;
/// Hard-stale after this.
pub const HARD_TTL_SECONDS: i64 = 10_800;

/// `GET /api/account/subscriptions/status/`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// `fresh`, `soft_stale` or `hard_stale` (an account that never synced is `hard_stale`).
    pub state: &'static str,
    /// True only when the shop uses Clerk Billing, the data is hard-stale (or was never
    /// synced), and the last pull from Clerk failed after the last success: Granary cannot
    /// vouch for the subscription state.
    pub blocking: bool,
    /// `synced`, `no_subscription_payload` (nothing reported yet, including never synced),
    /// `no_active_subscription`, `synced_with_partial_errors`, `stale` or `sync_failed`.
    pub reason_code: &'static str,
    /// The last pull's error code, while that failure is the newest news.
    pub error_code: Option<String>,
    /// A sentence for people.
    pub detail: String,
    /// The last pull from Clerk.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The later of the newest Clerk billing event applied and the last successful pull; null
    /// when the account never synced.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Seconds since `last_success_at`.
    pub age_seconds: Option<i64>,
    /// Fresh window.
    pub soft_window_seconds: i64,
    /// Hard-stale bound.
    pub hard_ttl_seconds: i64,
}

/// Computed from when Clerk billing events for the user last arrived and from the pulls.
///
/// - Freshness is the age of the newest success (an event applied, or a pull that answered).
///   An account that never synced is `hard_stale`: Granary has no news of it at all.
/// - A failed pull counts only while it is newer than that success: a later event or pull
///   clears it.
/// - Webhooks are the source of truth, so a quiet subscription is not a broken one: staleness
///   alone never blocks. A failed pull on top of hard-stale data blocks, but only where the
///   shop uses Clerk Billing (`CLERK_SECRET_KEY` set, or the account has subscriptions): a shop
///   without it is never blocked by it.
pub async fn sync_status(
    pool: &PgPool,
    config: &Config,
    clerk_user_id: &str,
) -> sqlx::Result<SyncStatus> {
    let r = sqlx::query!(
        r#"SELECT (SELECT max(last_event_at) FROM subscriptions WHERE clerk_user_id = $1) AS last_event_at,
                  (SELECT count(*) FROM subscriptions WHERE clerk_user_id = $1 AND kind = 'item') AS "items!",
                  (SELECT count(*) FROM subscriptions WHERE clerk_user_id = $1 AND kind = 'item'
                      AND status IN ('active', 'past_due', 'free_trial')) AS "live!",
                  b.last_attempt_at AS "last_attempt_at?", b.last_success_at, b.last_error_code, b.last_error,
                  b.partial_errors AS "partial_errors?"
           FROM (SELECT 1) one LEFT JOIN billing_sync b ON b.clerk_user_id = $1"#,
        clerk_user_id
    )
    .fetch_one(pool)
    .await?;
    let billing_in_use = config.clerk.secret_key.is_some() || r.items > 0;
    let last_success_at = r.last_event_at.max(r.last_success_at);
    let age = last_success_at.map(|t| (Utc::now() - t).num_seconds().max(0));
    // A failure is news only until something newer succeeds.
    let failed = r.last_error_code.is_some()
        && match (r.last_attempt_at, last_success_at) {
            (Some(attempt), Some(success)) => attempt > success,
            (Some(_), None) => true,
            (None, _) => false,
        };
    let state = match age {
        Some(a) if a <= SOFT_WINDOW_SECONDS => "fresh",
        Some(a) if a <= HARD_TTL_SECONDS => "soft_stale",
        // Stale, or never synced.
        _ => "hard_stale",
    };
    let (reason_code, detail) = if failed {
        (
            "sync_failed",
            format!(
                "The last pull from Clerk failed: {}",
                r.last_error.clone().unwrap_or_default()
            ),
        )
    } else if last_success_at.is_none() {
        (
            "no_subscription_payload",
            never_synced_detail(billing_in_use),
        )
    } else {
        synced_reason(r.items, r.partial_errors.unwrap_or(0), r.live, state)
    };
    Ok(SyncStatus {
        state,
        blocking: billing_in_use && state == "hard_stale" && failed,
        reason_code,
        error_code: r.last_error_code.filter(|_| failed),
        detail,
        last_attempt_at: r.last_attempt_at,
        last_success_at,
        age_seconds: age,
        soft_window_seconds: SOFT_WINDOW_SECONDS,
        hard_ttl_seconds: HARD_TTL_SECONDS,
    })
}

/// Why an account that never synced has no news: it depends on whether the shop uses Clerk
/// Billing.
fn never_synced_detail(billing_in_use: bool) -> String {
    if billing_in_use {
        "Never synced: no Clerk billing event has arrived for this account and no pull \
         from Clerk has succeeded yet. Refresh to pull from Clerk."
    } else {
        "Never synced: this shop does not use Clerk Billing (CLERK_SECRET_KEY is unset) \
         and no Clerk billing event has arrived for this account."
    }
    .to_string()
}

/// The reason and sentence for an account that has synced: no subscription, partial errors,
/// none active, fresh or stale.
fn synced_reason(
    items: i64,
    partial_errors: i32,
    live: i64,
    state: &str,
) -> (&'static str, String) {
    if items == 0 {
        (
            "no_subscription_payload",
            "No subscription has been reported for this account.".to_string(),
        )
    } else if partial_errors > 0 {
        (
            "synced_with_partial_errors",
            "Synced, but some subscription items could not be applied.".to_string(),
        )
    } else if live == 0 {
        (
            "no_active_subscription",
            "No active subscription.".to_string(),
        )
    } else if state == "fresh" {
        ("synced", "Subscriptions are up to date.".to_string())
    } else {
        (
            "stale",
            "No billing event arrived recently; refresh to pull from Clerk.".to_string(),
        )
    }
}

/// `?refresh=1`: pulls the user's subscription from Clerk's Backend API and applies it through
/// the same upsert as a webhook (as of now: a later-delivered older event changes nothing),
/// then recomputes entitlements. The pull is recorded either way; a failure is shown in the
/// status, never thrown at the dashboard.
pub async fn refresh(pool: &PgPool, config: &Config, clerk_user_id: &str) -> sqlx::Result<()> {
    let now = Utc::now();
    let pulled = clerk::user_subscription(config, clerk_user_id).await;
    let mut tx = pool.begin().await?;
    let (ok, code, error, partial) = match pulled {
        Err(e) => {
            tracing::warn!(error = %e, clerk_user_id, "billing pull failed");
            (false, Some(e.code()), Some(e.to_string()), 0)
        }
        Ok(None) => (true, None, None, 0),
        Ok(Some(mut sub)) => {
            if sub.get("payer_id").is_none() && sub.get("payer").is_none() {
                sub["payer_id"] = json!(clerk_user_id);
            }
            let mut partial = 0;
            match subscriptions::updates_from_event("subscription.updated", &sub) {
                Ok(updates) => {
                    for u in &updates {
                        if u.clerk_user_id != clerk_user_id {
                            partial += 1;
                            continue;
                        }
                        subscriptions::upsert(&mut tx, u, now).await?;
                    }
                    queue::enqueue(&mut tx, &SyncEntitlements::now(clerk_user_id)).await?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, clerk_user_id, "Clerk's subscription could not be read");
                    partial += 1;
                }
            }
            (true, None, None, partial)
        }
    };
    sqlx::query!(
        r#"INSERT INTO billing_sync (clerk_user_id, last_attempt_at, last_success_at, last_error_code, last_error, partial_errors)
           VALUES ($1, $2::timestamptz, CASE WHEN $3 THEN $2::timestamptz END, $4, $5, $6)
           ON CONFLICT (clerk_user_id) DO UPDATE SET last_attempt_at = EXCLUDED.last_attempt_at,
               last_success_at = coalesce(EXCLUDED.last_success_at, billing_sync.last_success_at),
               last_error_code = EXCLUDED.last_error_code, last_error = EXCLUDED.last_error,
               partial_errors = EXCLUDED.partial_errors"#,
        clerk_user_id,
        now,
        ok,
        code,
        error,
        partial
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_in_every_form_the_starter_accepts() {
        assert_eq!(
            claim_features(Some(&json!(["Pro", " reports "]))),
            ["pro", "reports"]
        );
        assert_eq!(
            claim_features(Some(&json!("u:pro,o:Reports,"))),
            ["pro", "reports"]
        );
        let mut m = claim_features(Some(&json!({"pro": true, "beta": false, "API": true})));
        m.sort();
        assert_eq!(m, ["api", "pro"]);
    }
}
