//! Field validation that reports every problem at once, as 422 `validation_failed`.

use std::collections::BTreeMap;

use crate::ApiError;

/// Collects field errors.
#[derive(Debug, Default)]
pub struct Fields(BTreeMap<String, Vec<String>>);

impl Fields {
    /// A new collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `reason` against `field` when `ok` is false.
    pub fn check(&mut self, ok: bool, field: &str, reason: &str) -> &mut Self {
        if !ok {
            self.0
                .entry(field.to_string())
                .or_default()
                .push(reason.to_string());
        }
        self
    }

    /// Err with every recorded problem, or Ok.
    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(std::mem::take(&mut self.0)))
        }
    }
}

/// `a-z0-9` words joined by single hyphens, at most 100 characters.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Three upper-case letters (ISO 4217 shape).
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Entitlement keys: letters, digits and `_ . : -`, 1 to 100 characters.
pub fn is_feature_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// Billing periods a price may have.
pub const BILLING_PERIODS: [&str; 5] = ["one_time", "weekly", "monthly", "quarterly", "yearly"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(is_slug("creator-bundle-2"));
        for bad in ["", "Bad", "a--b", "-a", "a-", "a b", "ä"] {
            assert!(!is_slug(bad), "{bad}");
        }
    }
}
