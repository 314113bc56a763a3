//! Download grants as their owner sees them, and download access: check and count in one
//! statement (`granary_can_download`, the one eligibility rule), then a short-lived signed URL.
//! Shapes: docs/storefront.md §4.14–4.15.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    error::{DomainError, DomainResult},
    platform::storage::Storage,
};

/// A grant as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantOut {
    /// Id.
    pub id: Uuid,
    /// The secret the access route takes (listed only to its owner).
    pub token: String,
    /// Asset; null while the grant is a placeholder (the file is not uploaded yet).
    pub asset: Option<Uuid>,
    /// Asset title (the product's name while a placeholder).
    pub asset_title: String,
    /// Product name.
    pub product_name: String,
    /// Order item.
    pub order_item: Uuid,
    /// The order's public id.
    pub order_public_id: String,
    /// Expiry, if any (a placeholder's clock starts when its file is there).
    pub expires_at: Option<DateTime<Utc>>,
    /// Allowed downloads; 0 = unlimited.
    pub max_downloads: i32,
    /// Used downloads.
    pub download_count: i32,
    /// Last download.
    pub last_downloaded_at: Option<DateTime<Utc>>,
    /// Not revoked, and not a placeholder (the starter's inactive placeholder grant).
    pub is_active: bool,
    /// Revoked (refund, dispute, operator).
    pub revoked: bool,
    /// A placeholder: the product is paid for, its file is not uploaded yet.
    pub is_placeholder: bool,
    /// Downloadable now: active, not expired, under the limit, asset ready.
    pub can_download: bool,
    /// Why it cannot be downloaded now, for people; null when it can.
    pub reason: Option<String>,
    /// Created (for a placeholder that became a grant: when its file arrived).
    pub created_at: DateTime<Utc>,
    /// Updated (last download, else creation).
    pub updated_at: DateTime<Utc>,
}

/// The caller's grants (or one of them), newest first, placeholders included.
pub async fn list(
    db: impl PgExecutor<'_>,
    profile_id: Uuid,
    only: Option<Uuid>,
) -> sqlx::Result<Vec<GrantOut>> {
    let rows = sqlx::query!(
        r#"SELECT g.id, g.token, g.asset_id AS "asset_id?", coalesce(a.title, p.name) AS "title!", p.name AS product_name,
                  g.order_item_id, o.public_id, g.expires_at, g.max_downloads, g.download_count, g.revoked_at, g.created_at,
                  coalesce(granary_can_download(g, a), false) AS "can_download!",
                  a.status AS "asset_status?", coalesce(a.is_active AND a.deleted_at IS NULL, false) AS "asset_live!",
                  (SELECT max(e.created_at) FROM download_events e WHERE e.grant_id = g.id) AS last_downloaded_at
           FROM download_grants g
           LEFT JOIN digital_assets a ON a.id = g.asset_id
           JOIN order_items oi ON oi.id = g.order_item_id JOIN orders o ON o.id = oi.order_id
           JOIN products p ON p.id = oi.product_id
           WHERE g.profile_id = $1 AND ($2::uuid IS NULL OR g.id = $2) ORDER BY g.created_at DESC"#,
        profile_id,
        only
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|g| {
            let placeholder = g.asset_id.is_none();
            let reason = if g.can_download {
                None
            } else if g.revoked_at.is_some() {
                Some("This download was revoked (a refund, a dispute or the shop).".to_string())
            } else if placeholder {
                Some(
                    "The seller has not uploaded this file yet. It becomes downloadable here \
                     when they do, and you get an email."
                        .to_string(),
                )
            } else if g.expires_at.is_some_and(|e| e <= Utc::now()) {
                Some("This download has expired.".to_string())
            } else if g.max_downloads.is_some_and(|m| g.download_count >= m) {
                Some("Every download of this file has been used.".to_string())
            } else if !g.asset_live || g.asset_status.as_deref() != Some("ready") {
                Some("The file is not available right now; the shop is preparing it.".to_string())
            } else {
                Some("This download is not available.".to_string())
            };
            GrantOut {
                id: g.id,
                token: g.token,
                asset: g.asset_id,
                asset_title: g.title,
                product_name: g.product_name,
                order_item: g.order_item_id,
                order_public_id: g.public_id,
                expires_at: g.expires_at,
                max_downloads: g.max_downloads.unwrap_or(0),
                download_count: g.download_count,
                last_downloaded_at: g.last_downloaded_at,
                is_active: g.revoked_at.is_none() && !placeholder,
                revoked: g.revoked_at.is_some(),
                is_placeholder: placeholder,
                can_download: g.can_download,
                reason,
                created_at: g.created_at,
                updated_at: g.last_downloaded_at.unwrap_or(g.created_at),
            }
        })
        .collect())
}

/// `POST /api/account/downloads/<token>/access/`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessOut {
    /// The signed URL (the starter's name).
    pub download_url: String,
    /// The signed URL.
    pub url: String,
    /// When the URL stops working.
    pub expires_at: DateTime<Utc>,
    /// The grant, with this download counted.
    pub grant: GrantOut,
}

/// Who asked, for the download log.
#[derive(Debug, Clone)]
pub struct Requester {
    /// Client IP.
    pub ip: String,
    /// User agent, truncated.
    pub user_agent: Option<String>,
    /// Where the client reached the api (for `fs` URLs).
    pub api_base: String,
}

/// A safe download file name from the asset title and its stored extension.
pub fn file_name(title: &str, key: &str) -> String {
    let stem: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "download" } else { stem };
    match key
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| e.len() <= 8 && !e.contains('/'))
    {
        Some(ext) => format!("{stem}.{ext}"),
        None => stem.to_string(),
    }
}

/// Counts one download and signs a URL, in one transaction: a signing failure counts nothing.
/// Not the caller's grant: 404; not downloadable now: 403 `download_not_allowed`.
pub async fn access(
    pool: &PgPool,
    storage: &Storage,
    ttl: Duration,
    profile_id: Uuid,
    token: &str,
    who: &Requester,
) -> DomainResult<AccessOut> {
    let mut tx = pool.begin().await?;
    // Check and count in one statement: concurrent requests cannot overshoot the limit (the
    // row lock makes each re-check the count the previous one left).
    let granted = sqlx::query!(
        r#"
        UPDATE download_grants g SET download_count = g.download_count + 1
        FROM digital_assets a
        WHERE g.token = $1 AND g.profile_id = $2 AND a.id = g.asset_id AND granary_can_download(g, a)
        RETURNING g.id, a.storage_key AS "storage_key!", a.title
        "#,
        token,
        profile_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(g) = granted else {
        return Err(refusal(&mut tx, token, profile_id).await?);
    };
    sqlx::query!(
        "INSERT INTO download_events (grant_id, profile_id, ip, user_agent) VALUES ($1, $2, $3::text::inet, $4)",
        g.id,
        profile_id,
        who.ip,
        who.user_agent
    )
    .execute(&mut *tx)
    .await?;
    let url = storage
        .signed_url(
            &g.storage_key,
            &file_name(&g.title, &g.storage_key),
            ttl,
            &who.api_base,
            Some(g.id),
        )
        .await
        .map_err(|e| DomainError::Unavailable {
            code: "storage_unavailable",
            message: format!("Asset storage could not sign the URL: {e}"),
        })?;
    let grant = list(&mut *tx, profile_id, Some(g.id))
        .await?
        .pop()
        .ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok(AccessOut {
        download_url: url.clone(),
        url,
        expires_at: Utc::now() + ttl,
        grant,
    })
}

/// Why a grant cannot be downloaded: no such grant of the caller's (404), a placeholder whose
/// file is not uploaded yet, or not downloadable now (403).
async fn refusal(
    conn: &mut PgConnection,
    token: &str,
    profile_id: Uuid,
) -> DomainResult<DomainError> {
    let placeholder = sqlx::query_scalar!(
        r#"SELECT asset_id IS NULL AND revoked_at IS NULL AS "p!" FROM download_grants WHERE token = $1 AND profile_id = $2"#,
        token,
        profile_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match placeholder {
        None => DomainError::NotFound,
        Some(true) => DomainError::Forbidden {
            code: "download_not_ready",
            message: "The seller has not uploaded this file yet; it becomes downloadable \
                      when they do."
                .into(),
        },
        Some(false) => DomainError::Forbidden {
            code: "download_not_allowed",
            message: "Download grant is inactive, expired, or out of attempts.".into(),
        },
    })
}

/// A grant as the operator changed it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantState {
    /// Grant id.
    pub id: Uuid,
    /// Downloads used (a reset sets it to 0).
    pub download_count: i32,
    /// Downloads allowed; None: unlimited.
    pub max_downloads: Option<i32>,
    /// Expiry; None: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a reset gives back beyond the used count.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reset {
    /// Downloads added to the limit (on top of the reset count).
    pub add: Option<i32>,
    /// Pushes the expiry this far from now (or from the expiry, if it is later).
    pub extend: Option<Duration>,
}

/// `grants reset`: gives a customer who ran out their downloads back: the used count goes to 0
/// (the history of downloads stays), optionally with more allowed and a later expiry. A revoked
/// grant is refused: a refund or an operator took it away on purpose. Audited with before and
/// after.
pub async fn reset_grant(
    pool: &PgPool,
    grant_id: Uuid,
    r: Reset,
    actor: &crate::platform::audit::Actor,
) -> DomainResult<GrantState> {
    let mut f = crate::error::Fields::new();
    f.check(
        r.add
            .is_none_or(|n| (0..=crate::platform::bounds::MAX_DOWNLOADS).contains(&n)),
        "add",
        "0 to 1000000",
    );
    f.check(
        r.extend
            .is_none_or(|d| d.as_secs() <= crate::platform::bounds::MAX_SECONDS),
        "extend_seconds",
        "at most 315360000 (3650 days)",
    );
    f.finish()?;
    let extend_secs = r.extend.map(|d| d.as_secs_f64());
    let mut tx = pool.begin().await?;
    let before = grant_state(&mut tx, grant_id).await?;
    if let Some(at) = before.revoked_at {
        return Err(DomainError::conflict(format!(
            "grant {grant_id} was revoked at {at}; a revoked grant is not reset (issue a new one with orders requeue after fixing the order, if that is what you mean)"
        )));
    }
    let after = sqlx::query_as!(
        GrantState,
        r#"UPDATE download_grants SET download_count = 0,
               max_downloads = CASE WHEN max_downloads IS NULL THEN NULL ELSE max_downloads + coalesce($2, 0) END,
               expires_at = CASE WHEN $3::float8 IS NULL OR expires_at IS NULL THEN expires_at
                                 ELSE least(greatest(expires_at, now()) + make_interval(secs => $3),
                                            now() + interval '7300 days') END
           WHERE id = $1
           RETURNING id, download_count, max_downloads, expires_at, revoked_at"#,
        grant_id,
        r.add,
        extend_secs
    )
    .fetch_one(&mut *tx)
    .await?;
    crate::platform::audit::record_by(
        &mut *tx,
        actor,
        "grant.reset",
        "download_grant",
        &grant_id.to_string(),
        serde_json::json!({ "before": before, "after": after }),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// `grants revoke`: the grant stops working at once (its download route answers 403). Audited.
/// Revoking a revoked grant changes nothing and says so.
pub async fn revoke_grant(
    pool: &PgPool,
    grant_id: Uuid,
    actor: &crate::platform::audit::Actor,
) -> DomainResult<GrantState> {
    let mut tx = pool.begin().await?;
    let before = grant_state(&mut tx, grant_id).await?;
    if before.revoked_at.is_some() {
        return Err(DomainError::conflict(format!(
            "grant {grant_id} is already revoked"
        )));
    }
    let reason = actor
        .reason
        .clone()
        .unwrap_or_else(|| "revoked by an operator".into());
    let after = sqlx::query_as!(
        GrantState,
        r#"UPDATE download_grants SET revoked_at = now(), revoke_reason = $2 WHERE id = $1
           RETURNING id, download_count, max_downloads, expires_at, revoked_at"#,
        grant_id,
        reason
    )
    .fetch_one(&mut *tx)
    .await?;
    crate::platform::audit::record_by(
        &mut *tx,
        actor,
        "grant.revoke",
        "download_grant",
        &grant_id.to_string(),
        serde_json::json!({ "before": before }),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

async fn grant_state(conn: &mut sqlx::PgConnection, grant_id: Uuid) -> DomainResult<GrantState> {
    sqlx::query_as!(
        GrantState,
        "SELECT id, download_count, max_downloads, expires_at, revoked_at FROM download_grants WHERE id = $1 FOR UPDATE",
        grant_id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(DomainError::NotFound)
}

/// Whether grant `id` still serves downloads: not revoked, not expired. The `fs` file route asks
/// at fetch time (its signed URL outlives a revocation by up to its time to live otherwise).
pub async fn grant_is_live(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM download_grants WHERE id = $1 AND revoked_at IS NULL
                          AND (expires_at IS NULL OR expires_at > now())) AS "live!""#,
        id
    )
    .fetch_one(db)
    .await
}
