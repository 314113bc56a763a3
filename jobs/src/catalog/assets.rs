//! The asset state machine: an asset points at an uploaded object and is `pending` until
//! `finalize_asset` copies it to permanent storage (`ready`, or `failed` with the reason); a
//! new `file_path` makes it `pending` again with a finalize job of its own. Deleting is soft
//! (grants may refer to it). Once ready, `issue_grants` gives the asset to the paid orders that
//! wait for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    error::{DomainError, DomainResult, Fields},
    model::AssetStatus,
    orders::fulfillment::IssueGrants,
    platform::storage::Storage,
    queue::{self, Job, JobContext, JobError, JobRefs},
};

/// A digital asset as sellers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AssetOut {
    /// Id.
    pub id: Uuid,
    /// Product.
    pub product_id: Uuid,
    /// Title.
    pub title: String,
    /// The uploaded object's key.
    pub file_path: String,
    /// The permanent, content-addressed key once ready.
    pub storage_key: Option<String>,
    /// `pending`, `ready` or `failed`.
    pub status: AssetStatus,
    /// Size once ready.
    pub size_bytes: Option<i64>,
    /// Content type once ready.
    pub content_type: Option<String>,
    /// SHA-256 once ready.
    pub sha256: Option<String>,
    /// Granted to buyers.
    pub is_active: bool,
    /// Why finalizing failed.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// Asset create/update body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AssetInput {
    /// Title (required on create).
    pub title: Option<String>,
    /// The uploaded object's key (required on create).
    pub file_path: Option<String>,
    /// Granted to buyers.
    pub is_active: Option<bool>,
}

impl AssetInput {
    fn check(&self, creating: bool) -> DomainResult<()> {
        let mut f = Fields::new();
        if creating {
            f.check(self.title.is_some(), "title", "required");
            f.check(self.file_path.is_some(), "file_path", "required");
        }
        f.check(
            self.title
                .as_deref()
                .is_none_or(|t| !t.trim().is_empty() && t.len() <= 200),
            "title",
            "must be 1 to 200 characters",
        );
        f.check(
            self.file_path.as_deref().is_none_or(|p| {
                !p.is_empty()
                    && p.len() <= 1024
                    && !p.starts_with('/')
                    && !p.split('/').any(|s| s == ".." || s.is_empty())
            }),
            "file_path",
            "a relative object key such as files/bundle-v1.zip (no leading /, no .. or empty segments)",
        );
        f.check(
            self.file_path
                .as_deref()
                .is_none_or(|p| !p.starts_with("assets/")),
            "file_path",
            "names an upload, not a finalized object under assets/",
        );
        f.finish()
    }
}

/// The assets of a product (or one asset), oldest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    product_id: Option<Uuid>,
    only: Option<Uuid>,
) -> sqlx::Result<Vec<AssetOut>> {
    sqlx::query_as!(
        AssetOut,
        r#"SELECT id, product_id, title, file_path, storage_key, status AS "status: AssetStatus", size_bytes, content_type,
                  sha256, is_active, last_error, created_at, updated_at
           FROM digital_assets WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR product_id = $1) AND ($2::uuid IS NULL OR id = $2)
           ORDER BY created_at"#,
        product_id,
        only
    )
    .fetch_all(db)
    .await
}

/// Registers an uploaded object and enqueues its finalization; returns the id.
pub async fn create(
    conn: &mut PgConnection,
    product_id: Uuid,
    b: AssetInput,
) -> DomainResult<Uuid> {
    b.check(true)?;
    let file_path = b.file_path.unwrap_or_default();
    claim(&mut *conn, product_id, &file_path).await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO digital_assets (product_id, title, file_path, is_active) VALUES ($1, $2, $3, coalesce($4, true)) RETURNING id",
        product_id,
        b.title.as_deref().map(str::trim),
        file_path,
        b.is_active
    )
    .fetch_one(&mut *conn)
    .await?;
    queue::enqueue(
        conn,
        &FinalizeAsset {
            asset_id: id,
            file_path,
        },
    )
    .await?;
    Ok(id)
}

/// Changes the fields given; a different `file_path` makes the asset pending again and
/// enqueues its finalization.
pub async fn update(conn: &mut PgConnection, id: Uuid, b: AssetInput) -> DomainResult<()> {
    b.check(false)?;
    let current = sqlx::query!(
        r#"SELECT product_id, file_path <> $2 AS "replaced!" FROM digital_assets WHERE id = $1 FOR UPDATE"#,
        id,
        b.file_path.as_deref().unwrap_or_default()
    )
    .fetch_one(&mut *conn)
    .await?;
    if let Some(path) = &b.file_path {
        claim(&mut *conn, current.product_id, path).await?;
    }
    let replaced = current.replaced && b.file_path.is_some();
    sqlx::query!(
        r#"UPDATE digital_assets SET title = coalesce($2, title), is_active = coalesce($4, is_active),
               file_path = coalesce($3, file_path),
               status = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN 'pending' ELSE status END,
               storage_key = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN NULL ELSE storage_key END,
               sha256 = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN NULL ELSE sha256 END,
               size_bytes = CASE WHEN $3::text IS NOT NULL AND $3 <> file_path THEN NULL ELSE size_bytes END
           WHERE id = $1"#,
        id,
        b.title.as_deref().map(str::trim),
        b.file_path,
        b.is_active
    )
    .execute(&mut *conn)
    .await?;
    if let (true, Some(file_path)) = (replaced, b.file_path) {
        queue::enqueue(
            conn,
            &FinalizeAsset {
                asset_id: id,
                file_path,
            },
        )
        .await?;
    }
    Ok(())
}

/// Soft-deletes an asset (grants may refer to it).
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE digital_assets SET deleted_at = now(), is_active = false WHERE id = $1",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A seller's asset may name only an object no other seller's asset names (as its upload or as
/// its finalized key, deleted assets included): the first seller to register an upload owns it,
/// so one seller can never serve another's file. Serialized per path for the transaction.
async fn claim(conn: &mut PgConnection, product_id: Uuid, file_path: &str) -> DomainResult<()> {
    // The lock first, on its own: the check below must read with a snapshot taken after it.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        file_path
    )
    .fetch_one(&mut *conn)
    .await?;
    let taken = sqlx::query_scalar!(
        r#"
        SELECT EXISTS (
            SELECT 1 FROM digital_assets a JOIN products p ON p.id = a.product_id
            WHERE (a.file_path = $2 OR a.storage_key = $2)
              AND p.seller_profile_id <> (SELECT seller_profile_id FROM products WHERE id = $1)
        ) AS "taken!"
        "#,
        product_id,
        file_path
    )
    .fetch_one(conn)
    .await?;
    if taken {
        return Err(DomainError::field(
            "file_path",
            "names an object another seller's asset already registered",
        ));
    }
    Ok(())
}

/// `finalize_asset`: copy an uploaded object to its permanent key and mark the asset ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalizeAsset {
    /// `digital_assets.id`.
    pub asset_id: Uuid,
    /// The staging key this job finalizes (a later replacement has its own job).
    pub file_path: String,
}

impl Job for FinalizeAsset {
    /// Hashing and copying a large upload takes a while.
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);
    const QUEUE: &'static str = "finalize_asset";

    fn dedupe_key(&self) -> Option<String> {
        Some(format!("{}:{}", self.asset_id, self.file_path))
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            asset_id: Some(self.asset_id),
            ..Default::default()
        }
    }
}

/// Runs `finalize_asset`.
pub async fn finalize_asset(ctx: JobContext, job: FinalizeAsset) -> Result<(), JobError> {
    let Some(asset) = sqlx::query!(r#"SELECT file_path, status AS "status: AssetStatus", storage_key FROM digital_assets WHERE id = $1 AND deleted_at IS NULL"#, job.asset_id)
        .fetch_optional(&ctx.pool)
        .await?
    else {
        return Ok(()); // deleted meanwhile
    };
    if asset.file_path != job.file_path {
        return Ok(()); // replaced meanwhile; the replacement has its own job
    }
    if asset.status == AssetStatus::Ready && asset.storage_key.is_some() {
        return Ok(()); // done before; the staging object may be gone, which is fine
    }
    let storage =
        Storage::from_config(&ctx.config).map_err(|e| JobError::Retry(anyhow::anyhow!(e)))?;
    let finalized = match storage.finalize(&job.file_path).await {
        Ok(f) => f,
        Err(e) => {
            // A link or a FIFO in place of the upload: the seller sees why on the asset.
            if e.kind() == opendal::ErrorKind::PermissionDenied {
                sqlx::query!(
                    "UPDATE digital_assets SET last_error = $2 WHERE id = $1",
                    job.asset_id,
                    e.to_string()
                )
                .execute(&ctx.pool)
                .await?;
            }
            return Err(JobError::Retry(anyhow::anyhow!(e).context(format!(
                "reading {} from {} storage",
                job.file_path, storage.backend
            ))));
        }
    };
    let Some(f) = finalized else {
        let why = format!(
            "no object at `{}` in {} storage: upload it there, then the next retry (or a requeue) finalizes it",
            job.file_path, storage.backend
        );
        sqlx::query!(
            "UPDATE digital_assets SET last_error = $2 WHERE id = $1",
            job.asset_id,
            why
        )
        .execute(&ctx.pool)
        .await?;
        return Err(JobError::Retry(anyhow::anyhow!(why)));
    };
    let mut tx = ctx.pool.begin().await?;
    let updated = sqlx::query!(
        r#"UPDATE digital_assets SET status = 'ready', storage_key = $3, sha256 = $4, size_bytes = $5, content_type = $6,
               last_error = NULL, finalized_at = now()
           WHERE id = $1 AND file_path = $2"#,
        job.asset_id,
        job.file_path,
        f.storage_key,
        f.sha256,
        f.size,
        f.content_type
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        queue::enqueue(
            &mut tx,
            &IssueGrants {
                asset_id: job.asset_id,
            },
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(asset_id = %job.asset_id, key = %f.storage_key, size = f.size, "asset finalized");
    Ok(())
}
