//! Download grants as their owner sees them, and download access: check and count in one
//! statement (`granary_can_download`, the one eligibility rule), then a short-lived signed URL.
//! Shapes: design/STOREFRONT.md §4.14–4.15.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    error::{DomainError, DomainResult},
    storage::Storage,
};

/// A grant as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantOut {
    /// Id.
    pub id: Uuid,
    /// The secret the access route takes (listed only to its owner).
    pub token: String,
    /// Asset.
    pub asset: Uuid,
    /// Asset title.
    pub asset_title: String,
    /// Product name.
    pub product_name: String,
    /// Order item.
    pub order_item: Uuid,
    /// The order's public id.
    pub order_public_id: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Allowed downloads; 0 = unlimited.
    pub max_downloads: i32,
    /// Used downloads.
    pub download_count: i32,
    /// Last download.
    pub last_downloaded_at: Option<DateTime<Utc>>,
    /// Not revoked.
    pub is_active: bool,
    /// Revoked (refund, dispute, operator).
    pub revoked: bool,
    /// Downloadable now: active, not expired, under the limit, asset ready.
    pub can_download: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated (last download, else creation).
    pub updated_at: DateTime<Utc>,
}

/// The caller's grants (or one of them), newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    profile_id: Uuid,
    only: Option<Uuid>,
) -> sqlx::Result<Vec<GrantOut>> {
    let rows = sqlx::query!(
        r#"SELECT g.id, g.token, g.asset_id, a.title, p.name AS product_name, g.order_item_id, o.public_id, g.expires_at,
                  g.max_downloads, g.download_count, g.revoked_at, g.created_at,
                  granary_can_download(g, a) AS "can_download!",
                  (SELECT max(e.created_at) FROM download_events e WHERE e.grant_id = g.id) AS last_downloaded_at
           FROM download_grants g
           JOIN digital_assets a ON a.id = g.asset_id
           JOIN products p ON p.id = a.product_id
           JOIN order_items oi ON oi.id = g.order_item_id JOIN orders o ON o.id = oi.order_id
           WHERE g.profile_id = $1 AND ($2::uuid IS NULL OR g.id = $2) ORDER BY g.created_at DESC"#,
        profile_id,
        only
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|g| GrantOut {
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
            is_active: g.revoked_at.is_none(),
            revoked: g.revoked_at.is_some(),
            can_download: g.can_download,
            created_at: g.created_at,
            updated_at: g.last_downloaded_at.unwrap_or(g.created_at),
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
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM download_grants WHERE token = $1 AND profile_id = $2) AS "e!""#,
            token,
            profile_id
        )
        .fetch_one(&mut *tx)
        .await?;
        return Err(if exists {
            DomainError::Forbidden {
                code: "download_not_allowed",
                message: "Download grant is inactive, expired, or out of attempts.".into(),
            }
        } else {
            DomainError::NotFound
        });
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
