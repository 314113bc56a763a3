//! Asset storage (OpenDAL: fs, S3, Supabase) and download links: their lifetime, signing key
//! and default limits.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;

use super::{StorageConfig, reader::Reader};

/// What this part reads.
pub(super) struct Storage {
    pub storage: StorageConfig,
    pub signed_url_ttl: Duration,
    pub download_signing_key: SecretString,
    pub download_default_expiry_days: Option<i32>,
    pub download_default_max: Option<i32>,
}

/// Reads the storage backend, the download links' lifetime and signing key, and the default
/// download limits.
pub(super) fn read(
    r: &mut Reader<'_>,
    dev: bool,
    database_url: &str,
    warnings: &mut Vec<String>,
) -> Storage {
    let storage = backend(r, dev);
    if let StorageConfig::Unavailable { backend, reason } = &storage {
        warnings.push(format!("asset storage `{backend}` is not usable ({reason}): download and asset routes answer 503 storage_unavailable"));
    }
    let signed_url_ttl = signed_url_ttl(r);
    let download_signing_key = download_signing_key(r, dev, database_url);
    let download_default_expiry_days = download_default_expiry_days(r);
    let download_default_max = download_default_max(r);
    Storage {
        storage,
        signed_url_ttl,
        download_signing_key,
        download_default_expiry_days,
        download_default_max,
    }
}

/// `ASSET_STORAGE_BACKEND` and that backend's settings (`Unavailable` when incomplete).
fn backend(r: &mut Reader<'_>, dev: bool) -> StorageConfig {
    let backend = r
        .get("ASSET_STORAGE_BACKEND")
        .unwrap_or(if dev { "fs" } else { "s3" })
        .to_string();
    let bucket = r.get("ASSET_STORAGE_BUCKET").map(str::to_string);
    match backend.as_str() {
        "fs" => StorageConfig::Fs {
            root: PathBuf::from(r.get("ASSET_STORAGE_FS_ROOT").unwrap_or("var/storage")),
        },
        "s3" => s3(r, &backend, bucket),
        "supabase" => supabase(r, &backend, bucket),
        other => {
            r.problem(
                "ASSET_STORAGE_BACKEND",
                format!("`{other}` is not a storage backend"),
                "use fs, s3 or supabase",
            );
            StorageConfig::Unavailable {
                backend: other.into(),
                reason: "unknown backend".into(),
            }
        }
    }
}

/// The S3 backend, or `Unavailable` naming the missing settings.
fn s3(r: &mut Reader<'_>, backend: &str, bucket: Option<String>) -> StorageConfig {
    let missing: Vec<&str> = [
        ("ASSET_STORAGE_BUCKET", bucket.is_some()),
        (
            "ASSET_STORAGE_S3_ACCESS_KEY_ID",
            r.get("ASSET_STORAGE_S3_ACCESS_KEY_ID").is_some(),
        ),
        (
            "ASSET_STORAGE_S3_SECRET_ACCESS_KEY",
            r.get("ASSET_STORAGE_S3_SECRET_ACCESS_KEY").is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(v, ok)| (!ok).then_some(v))
    .collect();
    if missing.is_empty() {
        StorageConfig::S3 {
            endpoint: r
                .url("ASSET_STORAGE_S3_ENDPOINT_URL")
                .map(|u| u.to_string().trim_end_matches('/').to_string()),
            region: r
                .get("ASSET_STORAGE_S3_REGION")
                .unwrap_or("us-east-1")
                .to_string(),
            bucket: bucket.unwrap_or_default(),
            access_key_id: r
                .get("ASSET_STORAGE_S3_ACCESS_KEY_ID")
                .unwrap_or_default()
                .to_string(),
            secret_access_key: r
                .secret("ASSET_STORAGE_S3_SECRET_ACCESS_KEY")
                .expect("checked above"),
        }
    } else {
        StorageConfig::Unavailable {
            backend: backend.to_string(),
            reason: format!("missing {}", missing.join(", ")),
        }
    }
}

/// The Supabase backend, or `Unavailable` naming the missing settings.
fn supabase(r: &mut Reader<'_>, backend: &str, bucket: Option<String>) -> StorageConfig {
    match (
        r.url("SUPABASE_URL"),
        r.get("ASSET_STORAGE_S3_ACCESS_KEY_ID"),
        r.secret("ASSET_STORAGE_S3_SECRET_ACCESS_KEY"),
        bucket,
    ) {
        (Some(url), Some(key_id), Some(secret), Some(bucket)) => StorageConfig::Supabase {
            url: url.to_string().trim_end_matches('/').to_string(),
            bucket,
            region: r
                .get("ASSET_STORAGE_S3_REGION")
                .unwrap_or("us-east-1")
                .to_string(),
            access_key_id: key_id.to_string(),
            secret_access_key: secret,
        },
        (url, key_id, secret, bucket) => {
            let missing: Vec<&str> = [
                ("SUPABASE_URL", url.is_some()),
                ("ASSET_STORAGE_S3_ACCESS_KEY_ID", key_id.is_some()),
                ("ASSET_STORAGE_S3_SECRET_ACCESS_KEY", secret.is_some()),
                ("ASSET_STORAGE_BUCKET", bucket.is_some()),
            ]
            .into_iter()
            .filter_map(|(v, ok)| (!ok).then_some(v))
            .collect();
            StorageConfig::Unavailable {
                backend: backend.to_string(),
                reason: format!("missing {}", missing.join(", ")),
            }
        }
    }
}

/// `ASSET_STORAGE_SIGNED_URL_TTL_SECONDS`: between 1 second and 7 days.
fn signed_url_ttl(r: &mut Reader<'_>) -> Duration {
    let signed_url_ttl = Duration::from_secs(r.number(
        "ASSET_STORAGE_SIGNED_URL_TTL_SECONDS",
        600u64,
        "use a number of seconds such as 600",
    ));
    if signed_url_ttl.is_zero() || signed_url_ttl > Duration::from_secs(7 * 24 * 3600) {
        r.problem(
            "ASSET_STORAGE_SIGNED_URL_TTL_SECONDS",
            "must be between 1 second and 7 days",
            "use a number of seconds such as 600",
        );
    }
    signed_url_ttl
}

/// `DOWNLOAD_URL_SIGNING_KEY`: at least 32 characters (derived from the database URL in
/// development when unset).
fn download_signing_key(r: &mut Reader<'_>, dev: bool, database_url: &str) -> SecretString {
    match r.get("DOWNLOAD_URL_SIGNING_KEY") {
        Some(k) if k.len() >= 32 => SecretString::from(k.to_string()),
        Some(_) => {
            r.problem(
                "DOWNLOAD_URL_SIGNING_KEY",
                "is shorter than 32 characters",
                "generate one with: openssl rand -hex 32",
            );
            SecretString::from(String::new())
        }
        // Development: a per-database-URL key is good enough and needs no setup.
        None if dev => SecretString::from(format!("granary-dev-signing-key::{database_url}")),
        None => {
            r.problem(
                "DOWNLOAD_URL_SIGNING_KEY",
                "is not set",
                "generate one with: openssl rand -hex 32",
            );
            SecretString::from(String::new())
        }
    }
}

/// `DOWNLOAD_DEFAULT_EXPIRY_DAYS`: 0 (no expiry) to 3650 days.
fn download_default_expiry_days(r: &mut Reader<'_>) -> Option<i32> {
    match r.number(
        "DOWNLOAD_DEFAULT_EXPIRY_DAYS",
        30i32,
        "use a number of days such as 30; 0 means no expiry",
    ) {
        0 => None,
        d if d > 0 && i64::from(d) <= crate::platform::bounds::MAX_DAYS => Some(d),
        _ => {
            r.problem(
                "DOWNLOAD_DEFAULT_EXPIRY_DAYS",
                "must be 0 to 3650 days",
                "use a number of days such as 30; 0 means no expiry",
            );
            None
        }
    }
}

/// `DOWNLOAD_DEFAULT_MAX`: 0 (unlimited) to 1000000.
fn download_default_max(r: &mut Reader<'_>) -> Option<i32> {
    match r.number(
        "DOWNLOAD_DEFAULT_MAX",
        10i32,
        "use a number such as 10; 0 means unlimited",
    ) {
        0 => None,
        d if d > 0 && d <= crate::platform::bounds::MAX_DOWNLOADS => Some(d),
        _ => {
            r.problem(
                "DOWNLOAD_DEFAULT_MAX",
                "must be 0 to 1000000",
                "use a number such as 10; 0 means unlimited",
            );
            None
        }
    }
}
