//! Asset storage through OpenDAL: `fs` (development), any S3-compatible endpoint, and Supabase
//! Storage through its S3 endpoint.
//!
//! Downloads are short-lived signed URLs: OpenDAL's presign for S3, and for `fs` an
//! HMAC-signed api route (`/api/downloads/file/`) that refuses expired or tampered signatures.

use std::time::Duration;

use futures::TryStreamExt as _;
use hmac::{Hmac, Mac};
use opendal::{ErrorKind, Operator, services};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::{Config, StorageConfig};

/// A usable storage backend.
#[derive(Clone)]
pub struct Storage {
    op: Operator,
    /// `fs`, `s3` or `supabase`.
    pub backend: &'static str,
    signing_key: SecretString,
    /// The `fs` backend's canonical root: every object read is checked under it.
    fs_root: Option<std::path::PathBuf>,
}

/// What finalizing found in the staging object.
#[derive(Debug, Clone)]
pub struct Finalized {
    /// Permanent, content-addressed key.
    pub storage_key: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// Guessed from the file name.
    pub content_type: String,
}

impl Storage {
    /// The configured backend, or why it is unusable (a 503 `storage_unavailable`).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let mut fs_root = None;
        let (op, backend) = match &config.storage {
            StorageConfig::Fs { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    format!("cannot create the fs storage root {}: {e}", root.display())
                })?;
                let root =
                    std::fs::canonicalize(root).map_err(|e| format!("fs storage root: {e}"))?;
                fs_root = Some(root.clone());
                (
                    Operator::new(services::Fs::default().root(&root.to_string_lossy()))
                        .map_err(|e| e.to_string())?,
                    "fs",
                )
            }
            StorageConfig::S3 {
                endpoint,
                region,
                bucket,
                access_key_id,
                secret_access_key,
            } => {
                let mut b = services::S3::default()
                    .bucket(bucket)
                    .region(region)
                    .access_key_id(access_key_id)
                    .secret_access_key(secret_access_key.expose_secret());
                if let Some(e) = endpoint {
                    b = b.endpoint(e);
                }
                (Operator::new(b).map_err(|e| e.to_string())?, "s3")
            }
            StorageConfig::Supabase {
                url,
                bucket,
                region,
                access_key_id,
                secret_access_key,
            } => {
                let b = services::S3::default()
                    .endpoint(&format!("{url}/storage/v1/s3"))
                    .bucket(bucket)
                    .region(region)
                    .access_key_id(access_key_id)
                    .secret_access_key(secret_access_key.expose_secret());
                (Operator::new(b).map_err(|e| e.to_string())?, "supabase")
            }
            StorageConfig::Unavailable { backend, reason } => {
                return Err(format!(
                    "asset storage `{backend}` is not configured: {reason}"
                ));
            }
        };
        Ok(Self {
            op,
            backend,
            signing_key: config.download_signing_key.clone(),
            fs_root,
        })
    }

    /// On `fs`, refuses to read `key` unless it is a regular file reached without a symbolic
    /// link: a link under the root could serve any file of the host (`/etc/passwd`) to a buyer,
    /// and a FIFO or a device would block the reader forever. Other backends hold only objects.
    pub async fn check_readable(&self, key: &str) -> opendal::Result<()> {
        let Some(root) = &self.fs_root else {
            return Ok(());
        };
        let refuse = |why: &str| {
            Err(opendal::Error::new(
                ErrorKind::PermissionDenied,
                format!("{key} {why}; only regular files are served"),
            ))
        };
        // Every component from the root down: none may be a link; the last is the file itself.
        let mut at = root.clone();
        let mut last = None;
        for part in std::path::Path::new(key).components() {
            at.push(part);
            match tokio::fs::symlink_metadata(&at).await {
                Ok(m) if m.file_type().is_symlink() => {
                    return refuse("is (or is under) a symbolic link");
                }
                Ok(m) => last = Some(m),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(opendal::Error::new(
                        ErrorKind::NotFound,
                        format!("{key} does not exist"),
                    ));
                }
                Err(e) => return Err(opendal::Error::new(ErrorKind::Unexpected, e.to_string())),
            }
        }
        match last {
            Some(m) if m.file_type().is_file() => Ok(()),
            _ => refuse("is not a regular file"),
        }
    }

    /// The OpenDAL operator (tests and `doctor` use it directly).
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> opendal::Result<bool> {
        match self.op.stat(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Copies the staging object `src` to its permanent content-addressed key, hashing it on
    /// the way. `Ok(None)` when `src` does not exist. Idempotent: the same bytes always land at
    /// the same key.
    pub async fn finalize(&self, src: &str) -> opendal::Result<Option<Finalized>> {
        match self.check_readable(src).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            other => other?,
        }
        let meta = match self.op.stat(src).await {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut hasher = Sha256::new();
        let mut size = 0i64;
        let mut stream = self.op.reader(src).await?.into_bytes_stream(..).await?;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string()))?
        {
            size += chunk.len() as i64;
            hasher.update(&chunk);
        }
        let sha = hex::encode(hasher.finalize());
        let ext = src
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .filter(|e| e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()));
        let storage_key = match &ext {
            Some(e) => format!("assets/{}/{sha}.{e}", &sha[..2]),
            None => format!("assets/{}/{sha}", &sha[..2]),
        };
        if !self.exists(&storage_key).await? {
            if self.op.info().capability().copy {
                self.op.copy(src, &storage_key).await?;
            } else {
                let bytes = self.op.read(src).await?;
                self.op.write(&storage_key, bytes).await?;
            }
        }
        let _ = meta;
        Ok(Some(Finalized {
            storage_key,
            sha256: sha,
            size,
            content_type: content_type_for(ext.as_deref()).to_string(),
        }))
    }

    /// A URL the buyer's browser can fetch for `ttl`. `api_base` is where the api is reached
    /// (used by the `fs` route).
    /// `grant` is the download grant the URL serves: the `fs` route checks it is still live
    /// when the file is fetched, not only when the URL was signed.
    pub async fn signed_url(
        &self,
        key: &str,
        filename: &str,
        ttl: Duration,
        api_base: &str,
        grant: Option<uuid::Uuid>,
    ) -> opendal::Result<String> {
        if self.backend == "fs" {
            let exp = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
            let grant = grant.map(|g| g.to_string()).unwrap_or_default();
            let sig = self.sign(key, filename, exp, &grant);
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("key", key)
                .append_pair("name", filename)
                .append_pair("exp", &exp.to_string());
            if !grant.is_empty() {
                q.append_pair("grant", &grant);
            }
            let q = q.append_pair("sig", &sig).finish();
            return Ok(format!(
                "{}/api/downloads/file/?{q}",
                api_base.trim_end_matches('/')
            ));
        }
        Ok(self.op.presign_read(key, ttl).await?.uri().to_string())
    }

    fn mac(&self, key: &str, filename: &str, exp: i64, grant: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.signing_key.expose_secret().as_bytes())
            .expect("any key length");
        mac.update(format!("{key}\n{filename}\n{exp}\n{grant}").as_bytes());
        mac
    }

    fn sign(&self, key: &str, filename: &str, exp: i64, grant: &str) -> String {
        hex::encode(self.mac(key, filename, exp, grant).finalize().into_bytes())
    }

    /// Checks an `fs` download URL's signature (constant time) and expiry; `grant` is the
    /// URL's `grant` parameter (empty when it has none).
    pub fn verify_fs_url(
        &self,
        key: &str,
        filename: &str,
        exp: i64,
        grant: &str,
        sig: &str,
        now: i64,
    ) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.mac(key, filename, exp, grant)
            .verify_slice(&sig)
            .is_ok()
            && exp >= now
    }

    /// Reads an object as a byte stream (the `fs` download route).
    pub async fn stream(&self, key: &str) -> opendal::Result<(u64, opendal::FuturesBytesStream)> {
        self.check_readable(key).await?;
        let meta = self.op.stat(key).await?;
        let stream = self.op.reader(key).await?.into_bytes_stream(..).await?;
        Ok((meta.content_length(), stream))
    }
}

/// A content type from a file extension; `application/octet-stream` when unknown.
pub fn content_type_for(ext: Option<&str>) -> &'static str {
    match ext.unwrap_or_default() {
        "zip" => "application/zip",
        "pdf" => "application/pdf",
        "epub" => "application/epub+zip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}
