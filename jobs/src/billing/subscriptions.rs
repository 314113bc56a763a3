//! Subscriptions from Clerk Billing, and the entitlements they imply.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

use crate::queue::{self, Job, JobContext, JobError, JobRefs};

/// `sync_entitlements`: make a user's subscription-sourced entitlements exactly the features
/// of the plans active now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncEntitlements {
    /// The payer.
    pub clerk_user_id: String,
    /// Set on the sync scheduled for a canceled item's period end; it dedupes separately, so a
    /// sync due now is never folded into one due later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl SyncEntitlements {
    /// A sync to run now.
    pub fn now(clerk_user_id: impl Into<String>) -> Self {
        Self {
            clerk_user_id: clerk_user_id.into(),
            scheduled_for: None,
        }
    }
}

impl Job for SyncEntitlements {
    const QUEUE: &'static str = "sync_entitlements";

    fn dedupe_key(&self) -> Option<String> {
        Some(match self.scheduled_for {
            None => self.clerk_user_id.clone(),
            Some(at) => format!("{}@{}", self.clerk_user_id, at.timestamp()),
        })
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            clerk_user_id: Some(self.clerk_user_id.clone()),
            ..Default::default()
        }
    }
}

/// One subscription (or subscription item) as reported by an event.
#[derive(Debug, Clone)]
pub struct SubscriptionUpdate {
    /// Clerk's id (`csub_...` or `csubi_...`).
    pub provider_id: String,
    /// `subscription` or `item`.
    pub kind: &'static str,
    /// The parent subscription id, for items.
    pub parent: Option<String>,
    /// The payer.
    pub clerk_user_id: String,
    /// Plan id and slug.
    pub plan_id: Option<String>,
    /// Plan slug.
    pub plan_slug: Option<String>,
    /// Features the event says the plan grants.
    pub features: Vec<String>,
    /// Normalised status.
    pub status: &'static str,
    /// Current period.
    pub period_start: Option<DateTime<Utc>>,
    /// End of the current period: a canceled item keeps its features until then.
    pub period_end: Option<DateTime<Utc>>,
    /// When it was canceled.
    pub canceled_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The event's data object.
    pub raw: Value,
}

/// Maps Clerk's status spellings (`pastDue`, `past_due`, `cancelled`, ...) to ours.
pub fn normalize_status(s: &str) -> Option<&'static str> {
    let flat: String = s
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    Some(match flat.as_str() {
        "active" => "active",
        "pastdue" => "past_due",
        "canceled" | "cancelled" => "canceled",
        "ended" | "expired" => "ended",
        "upcoming" => "upcoming",
        "abandoned" => "abandoned",
        "incomplete" => "incomplete",
        "paused" => "paused",
        "freetrial" | "trialing" => "free_trial",
        _ => return None,
    })
}

/// A Clerk timestamp: milliseconds since the epoch (seconds accepted too).
pub fn clerk_time(v: &Value) -> Option<DateTime<Utc>> {
    let n = v.as_i64()?;
    if n > 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn features_of(plan: &Value) -> Vec<String> {
    plan["features"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| {
                    str_of(f)
                        .or_else(|| str_of(&f["slug"]))
                        .or_else(|| str_of(&f["key"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn payer_of(data: &Value) -> Option<String> {
    str_of(&data["payer"]["user_id"])
        .or_else(|| str_of(&data["payer_id"]))
        .or_else(|| str_of(&data["user_id"]))
}

/// Reads the subscription rows an event reports. `subscription.*` reports the subscription and
/// its items, `subscriptionItem.*` and the older `billing.subscription.*` one item each.
pub fn updates_from_event(
    event_type: &str,
    data: &Value,
) -> Result<Vec<SubscriptionUpdate>, String> {
    let suffix = event_type.rsplit('.').next().unwrap_or_default();
    let implied = normalize_status(suffix);
    let status_of = |d: &Value| {
        d["status"]
            .as_str()
            .and_then(normalize_status)
            .or(implied)
            .unwrap_or("active")
    };
    let user = payer_of(data).ok_or("the event names no payer (payer.user_id / user_id)")?;
    let item = |d: &Value,
                kind: &'static str,
                parent: Option<String>|
     -> Result<SubscriptionUpdate, String> {
        let plan = &d["plan"];
        Ok(SubscriptionUpdate {
            provider_id: str_of(&d["id"]).ok_or("a subscription without an id")?,
            kind,
            parent,
            clerk_user_id: payer_of(d).unwrap_or_else(|| user.clone()),
            plan_id: str_of(&plan["id"]).or_else(|| str_of(&d["plan_id"])),
            plan_slug: str_of(&plan["slug"]),
            features: features_of(plan),
            status: status_of(d),
            period_start: clerk_time(&d["period_start"])
                .or_else(|| clerk_time(&d["current_period_start"])),
            period_end: clerk_time(&d["period_end"])
                .or_else(|| clerk_time(&d["current_period_end"])),
            canceled_at: clerk_time(&d["canceled_at"]),
            ended_at: clerk_time(&d["ended_at"]),
            raw: d.clone(),
        })
    };
    if event_type.starts_with("subscription.") {
        let parent = item(data, "subscription", None)?;
        let mut out = Vec::new();
        // Webhooks name the items `items`; the Backend API names them `subscription_items`.
        let items = data["items"]
            .as_array()
            .or_else(|| data["subscription_items"].as_array());
        for it in items.into_iter().flatten() {
            out.push(item(it, "item", Some(parent.provider_id.clone()))?);
        }
        out.insert(0, parent);
        Ok(out)
    } else {
        Ok(vec![item(data, "item", None)?])
    }
}

/// Upserts one subscription row unless the stored row was changed by a newer event. Returns
/// whether it applied.
pub async fn upsert(
    conn: &mut PgConnection,
    u: &SubscriptionUpdate,
    event_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let applied = sqlx::query_scalar!(
        r#"
        INSERT INTO subscriptions (provider, provider_subscription_id, kind, parent_provider_id, clerk_user_id,
            profile_id, plan_id, plan_slug, price_id, status, feature_keys, current_period_start,
            current_period_end, canceled_at, ended_at, last_event_at, raw)
        VALUES ('clerk', $1, $2, $3, $4,
            (SELECT id FROM profiles WHERE clerk_user_id = $4), $5, $6,
            (SELECT id FROM prices WHERE clerk_plan_id = $5 AND deleted_at IS NULL ORDER BY is_default DESC, created_at LIMIT 1),
            $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (provider, provider_subscription_id) DO UPDATE SET
            parent_provider_id = coalesce(EXCLUDED.parent_provider_id, subscriptions.parent_provider_id),
            clerk_user_id = EXCLUDED.clerk_user_id,
            profile_id = coalesce(EXCLUDED.profile_id, subscriptions.profile_id),
            plan_id = coalesce(EXCLUDED.plan_id, subscriptions.plan_id),
            plan_slug = coalesce(EXCLUDED.plan_slug, subscriptions.plan_slug),
            price_id = coalesce(EXCLUDED.price_id, subscriptions.price_id),
            status = EXCLUDED.status,
            feature_keys = CASE WHEN cardinality(EXCLUDED.feature_keys) > 0 THEN EXCLUDED.feature_keys ELSE subscriptions.feature_keys END,
            current_period_start = coalesce(EXCLUDED.current_period_start, subscriptions.current_period_start),
            current_period_end = coalesce(EXCLUDED.current_period_end, subscriptions.current_period_end),
            canceled_at = coalesce(EXCLUDED.canceled_at, subscriptions.canceled_at),
            ended_at = coalesce(EXCLUDED.ended_at, subscriptions.ended_at),
            last_event_at = EXCLUDED.last_event_at,
            raw = EXCLUDED.raw
        -- Out of order: an event older than the one last applied changes nothing.
        WHERE subscriptions.last_event_at <= EXCLUDED.last_event_at
        RETURNING true AS "applied!"
        "#,
        u.provider_id,
        u.kind,
        u.parent,
        u.clerk_user_id,
        u.plan_id,
        u.plan_slug,
        u.status,
        &u.features,
        u.period_start,
        u.period_end,
        u.canceled_at,
        u.ended_at,
        event_at,
        u.raw,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(applied.is_some())
}

/// The entitlements a user's subscriptions grant now, as parallel arrays (for `unnest`).
struct Wanted {
    sources: Vec<String>,
    features: Vec<String>,
    expires: Vec<Option<DateTime<Utc>>>,
}

/// Runs `sync_entitlements`. The wanted set is every feature of every subscription item that
/// grants access now: active, past due (grace), in a free trial, or canceled but still inside
/// the period that was paid for. Features come from the event's plan, and from the local
/// product whose price carries the plan id. Anything subscription-sourced outside that set is
/// revoked; anything missing is granted (or un-revoked). A canceled item's entitlement carries
/// its period end as `expires_at`, and a sync is scheduled for that moment.
pub async fn sync_entitlements(ctx: JobContext, job: SyncEntitlements) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    let profile_id = ensure_profile(&mut tx, &job.clerk_user_id).await?;
    // Serialise syncs of one user (two workers, two events).
    sqlx::query!(
        "SELECT id FROM profiles WHERE id = $1 FOR UPDATE",
        profile_id
    )
    .fetch_one(&mut *tx)
    .await?;

    let wanted = wanted(&mut tx, &job.clerk_user_id).await?;
    let revoked = revoke_unwanted(&mut tx, profile_id, &wanted).await?;
    let granted = grant_wanted(&mut tx, profile_id, &wanted).await?;
    // A canceled item loses its features when its period ends: sync again then.
    if let Some(next) = wanted.expires.iter().flatten().min() {
        let at = *next + chrono::Duration::seconds(1);
        let later = SyncEntitlements {
            clerk_user_id: job.clerk_user_id.clone(),
            scheduled_for: Some(at),
        };
        queue::enqueue::enqueue_at(&mut tx, &later, Some(at)).await?;
    }
    // Plans that grant credits reset their allowance once per billing period.
    let allowances =
        crate::billing::credits::reset_allowances(&mut tx, profile_id, &job.clerk_user_id).await?;
    tx.commit().await?;
    tracing::info!(clerk_user_id = %job.clerk_user_id, granted, revoked, allowances, "entitlements synced");
    Ok(())
}

/// Every feature of every subscription item of the user that grants access now, with the
/// period end of a canceled item.
async fn wanted(conn: &mut PgConnection, clerk_user_id: &str) -> sqlx::Result<Wanted> {
    let wanted = sqlx::query!(
        r#"
        SELECT s.provider_subscription_id AS "source_id!", f.feature AS "feature!",
               CASE WHEN s.status = 'canceled' THEN s.current_period_end END AS expires_at
        FROM subscriptions s
        CROSS JOIN LATERAL (
            SELECT unnest(s.feature_keys) AS feature
            UNION
            SELECT unnest(p.feature_keys) FROM prices pr JOIN products p ON p.id = pr.product_id
            WHERE pr.clerk_plan_id = s.plan_id AND s.plan_id IS NOT NULL
        ) f
        WHERE s.clerk_user_id = $1 AND s.kind = 'item'
          AND (s.status IN ('active', 'past_due', 'free_trial')
               OR (s.status = 'canceled' AND s.current_period_end > now()))
        "#,
        clerk_user_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let sources: Vec<String> = wanted.iter().map(|w| w.source_id.clone()).collect();
    let features: Vec<String> = wanted.iter().map(|w| w.feature.clone()).collect();
    let expires: Vec<Option<DateTime<Utc>>> = wanted.iter().map(|w| w.expires_at).collect();
    Ok(Wanted {
        sources,
        features,
        expires,
    })
}

/// Revokes the user's subscription-sourced entitlements outside the wanted set.
async fn revoke_unwanted(
    conn: &mut PgConnection,
    profile_id: uuid::Uuid,
    wanted: &Wanted,
) -> sqlx::Result<u64> {
    let revoked = sqlx::query!(
        r#"
        UPDATE entitlements e SET revoked_at = now(), revoke_reason = 'subscription no longer grants this feature'
        WHERE e.profile_id = $1 AND e.source_type = 'subscription' AND e.revoked_at IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM unnest($2::text[], $3::text[]) AS w(source_id, feature)
              WHERE w.source_id = e.source_id AND w.feature = e.feature_key
          )
        "#,
        profile_id,
        &wanted.sources,
        &wanted.features
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(revoked)
}

/// Grants (or un-revokes) the wanted entitlements that are missing, with their expiry.
async fn grant_wanted(
    conn: &mut PgConnection,
    profile_id: uuid::Uuid,
    wanted: &Wanted,
) -> sqlx::Result<u64> {
    let granted = sqlx::query!(
        r#"
        INSERT INTO entitlements (profile_id, feature_key, source_type, source_id, expires_at)
        SELECT $1, w.feature, 'subscription', w.source_id, w.expires_at
        FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS w(source_id, feature, expires_at)
        ON CONFLICT (source_type, source_id, feature_key) DO UPDATE
            SET revoked_at = NULL, revoke_reason = NULL, expires_at = EXCLUDED.expires_at, profile_id = EXCLUDED.profile_id
            WHERE entitlements.revoked_at IS NOT NULL OR entitlements.expires_at IS DISTINCT FROM EXCLUDED.expires_at
        "#,
        profile_id,
        &wanted.sources,
        &wanted.features,
        &wanted.expires as &[Option<DateTime<Utc>>]
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(granted)
}
/// Queues the email that goes with an applied subscription item change: started, changed or
/// ended. One email per item and kind of change (dedupe key), so duplicate deliveries and
/// repeated updates do not spam the customer.
pub async fn notify(
    conn: &mut PgConnection,
    u: &SubscriptionUpdate,
    event_type: &str,
    frontend: &str,
) -> sqlx::Result<()> {
    if u.kind != "item" {
        return Ok(());
    }
    let suffix = event_type.rsplit('.').next().unwrap_or_default();
    let (kind, title, line) = match (suffix, u.status) {
        (_, "canceled" | "ended" | "abandoned") => (
            "subscription_ended",
            "Your subscription has ended",
            match u.period_end {
                Some(end) if end > chrono::Utc::now() => {
                    format!("You keep access until {}.", end.format("%Y-%m-%d"))
                }
                _ => "Your access has ended. You can subscribe again at any time.".to_string(),
            },
        ),
        ("created" | "active", "active" | "free_trial") => (
            "subscription_started",
            "Your subscription is active",
            "Thank you for subscribing.".to_string(),
        ),
        _ => (
            "subscription_changed",
            "Your subscription changed",
            format!("Its status is now: {}.", u.status.replace('_', " ")),
        ),
    };
    let profile_id = ensure_profile(conn, &u.clerk_user_id).await?;
    let plan = u
        .plan_slug
        .clone()
        .or_else(|| u.plan_id.clone())
        .unwrap_or_else(|| "your plan".into());
    let lines = vec![format!("Plan: {plan}."), line];
    let link = format!("{}/account/subscriptions", frontend.trim_end_matches('/'));
    let link = Some(("Your subscriptions", link.as_str()));
    crate::emails::queue_email(
        conn,
        &crate::emails::Draft {
            dedupe_key: format!("{kind}:{}:{}", u.provider_id, u.status),
            kind,
            subject: title.to_string(),
            html: crate::emails::html(title, &lines, link),
            text: crate::emails::text(title, &lines, link),
            order_id: None,
            profile_id,
        },
    )
    .await?;
    Ok(())
}

/// The profile of a Clerk user, created on first sight (a billing event may precede
/// `user.created`).
async fn ensure_profile(conn: &mut PgConnection, clerk_user_id: &str) -> sqlx::Result<uuid::Uuid> {
    sqlx::query_scalar!(
        r#"
        WITH ins AS (
            INSERT INTO profiles (clerk_user_id) VALUES ($1) ON CONFLICT (clerk_user_id) DO NOTHING RETURNING id
        )
        SELECT id AS "id!" FROM ins UNION ALL SELECT id FROM profiles WHERE clerk_user_id = $1
        "#,
        clerk_user_id
    )
    .fetch_one(conn)
    .await
}
