//! The domain's one error type. The api maps it once to the HTTP contract (`api/src/error.rs`);
//! the worker's commands print it.

use std::collections::BTreeMap;

use serde_json::Value;

/// `Result` with [`DomainError`] as the default error.
pub type DomainResult<T, E = DomainError> = std::result::Result<T, E>;

/// What a domain function can refuse, or fail with.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The row does not exist, or is not the caller's (no existence leak).
    #[error("not found")]
    NotFound,
    /// Field rules, every problem at once.
    #[error("validation failed: {}", describe(.0))]
    Validation(BTreeMap<String, Vec<String>>),
    /// A request that cannot be applied as sent (400 `invalid_request`).
    #[error("{0}")]
    BadRequest(String),
    /// Not allowed, with the contract code (`manual_confirm_disabled`, `download_not_allowed`).
    #[error("{message}")]
    Forbidden {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// A clash with the current state (`conflict`, `pending_verification`).
    #[error("{message}")]
    Conflict {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// A dependency is not configured or not reachable (`storage_unavailable`).
    #[error("{message}")]
    Unavailable {
        /// Contract code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// A provider Granary called for this request failed or refused (502), or did not answer
    /// or is rate-limiting (503): `payment_provider_unavailable`, `payment_provider_error`, ...
    #[error("{message}")]
    Upstream {
        /// 502 or 503.
        status: u16,
        /// Contract code.
        code: &'static str,
        /// Human sentence (never a secret).
        message: String,
        /// Seconds after which a retry may succeed (the `Retry-After` header), where one applies.
        retry_after: Option<u64>,
    },
    /// The database.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Anything else: a bug or an outage; the cause chain goes to the log.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl DomainError {
    /// A 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            code: "conflict",
            message: message.into(),
        }
    }

    /// A validation failure on one field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        Self::Validation(BTreeMap::from([(field.to_string(), vec![reason.into()])]))
    }

    /// True when this is a violation of the named constraint.
    pub fn is_constraint(&self, name: &str) -> bool {
        matches!(self, Self::Db(sqlx::Error::Database(db)) if db.constraint() == Some(name))
    }
}

/// Turns a named constraint violation into a client error, as realworld-axum-sqlx does:
/// constraint names, not message text, decide client errors.
pub trait ConstraintExt<T> {
    /// Maps a violation of `constraint` to `map()`; other errors pass through.
    fn on_constraint(self, constraint: &str, map: impl FnOnce() -> DomainError) -> DomainResult<T>;
}

impl<T, E: Into<DomainError>> ConstraintExt<T> for Result<T, E> {
    fn on_constraint(self, constraint: &str, map: impl FnOnce() -> DomainError) -> DomainResult<T> {
        self.map_err(|e| {
            let e = e.into();
            if e.is_constraint(constraint) {
                map()
            } else {
                e
            }
        })
    }
}

/// `field: reason; other: reason, reason`.
fn describe(fields: &BTreeMap<String, Vec<String>>) -> String {
    fields
        .iter()
        .map(|(f, r)| format!("{f}: {}", r.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field errors and reports every problem at once.
#[derive(Debug, Default)]
pub struct Fields(BTreeMap<String, Vec<String>>);

impl Fields {
    /// A new collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Free text at most `max` characters (counted as characters, not bytes).
    pub fn text(&mut self, value: Option<&str>, field: &str, max: usize) -> &mut Self {
        if value.is_some_and(|v| v.chars().count() > max) {
            self.push(field, format!("at most {max} characters"));
        }
        self
    }

    /// A free-form metadata object of at most [`crate::platform::bounds::METADATA_BYTES`] as JSON.
    pub fn metadata(&mut self, value: Option<&Value>, field: &str) -> &mut Self {
        match value {
            Some(v) if !v.is_object() => self.push(field, "must be an object".into()),
            Some(v) if !crate::platform::bounds::metadata_fits(v) => self.push(
                field,
                format!(
                    "at most {} bytes as JSON, nested at most {} deep",
                    crate::platform::bounds::METADATA_BYTES,
                    crate::platform::bounds::METADATA_DEPTH
                ),
            ),
            _ => {}
        }
        self
    }

    fn push(&mut self, field: &str, reason: String) {
        self.0.entry(field.to_string()).or_default().push(reason);
    }

    /// Records `reason` against `field` when `ok` is false.
    pub fn check(&mut self, ok: bool, field: &str, reason: &str) -> &mut Self {
        if !ok {
            self.push(field, reason.to_string());
        }
        self
    }

    /// Err with every recorded problem, or Ok.
    pub fn finish(&mut self) -> DomainResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Validation(std::mem::take(&mut self.0)))
        }
    }
}
