//! Clerk's Backend API, the one call Granary makes: a user's billing subscription
//! (`GET /v1/users/{user_id}/billing/subscription`, bearer `CLERK_SECRET_KEY`). The base URL
//! is `CLERK_API_URL`, so tests point the real client at a local stand-in.

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::Config;

/// Why a pull failed; `code()` is what the sync status shows.
#[derive(Debug, thiserror::Error)]
pub enum ClerkApiError {
    /// No `CLERK_SECRET_KEY`.
    #[error("CLERK_SECRET_KEY is not set, so Granary cannot ask Clerk")]
    NotConfigured,
    /// Network.
    #[error("Clerk could not be reached: {0}")]
    Unreachable(String),
    /// Clerk answered an error.
    #[error("Clerk answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Clerk's `errors[0].long_message` (or `message`).
        message: String,
    },
}

impl ClerkApiError {
    /// A short code for the sync status (`not_configured`, `clerk_unreachable`, `clerk_error`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Unreachable(_) => "clerk_unreachable",
            Self::Api { .. } => "clerk_error",
        }
    }
}

/// The user's billing subscription, or None when Clerk has none for them (404).
pub async fn user_subscription(
    config: &Config,
    clerk_user_id: &str,
) -> Result<Option<Value>, ClerkApiError> {
    let key = config
        .clerk
        .secret_key
        .as_ref()
        .ok_or(ClerkApiError::NotConfigured)?;
    let mut url = config.clerk.api_url.clone();
    url.path_segments_mut()
        .map_err(|_| ClerkApiError::Unreachable("CLERK_API_URL cannot be a base".into()))?
        .pop_if_empty()
        .extend(["v1", "users", clerk_user_id, "billing", "subscription"]);
    let res = crate::platform::http::client()
        .get(url)
        .bearer_auth(key.expose_secret())
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| ClerkApiError::Unreachable(e.to_string()))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        let e = &body["errors"][0];
        let message = e["long_message"]
            .as_str()
            .or_else(|| e["message"].as_str())
            .unwrap_or("no error message")
            .to_string();
        return Err(ClerkApiError::Api {
            status: status.as_u16(),
            message,
        });
    }
    Ok(Some(body))
}
