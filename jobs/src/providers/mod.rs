//! Stripe and Clerk: webhook signatures, what their events report about money, and the API
//! calls Granary makes.

pub mod clerk;
pub mod events;
pub mod reported;
pub mod stripe;
pub mod verify;

/// Who sent a webhook (`webhook_events.provider`, `reconcile_runs.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Clerk (Billing and users), signed by Svix.
    Clerk,
    /// Stripe.
    Stripe,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Provider {
    /// Every provider.
    pub const ALL: [Self; 2] = [Self::Clerk, Self::Stripe];

    /// The provider named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The name stored in `webhook_events.provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clerk => "clerk",
            Self::Stripe => "stripe",
        }
    }
}
