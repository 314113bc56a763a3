//! Provider webhooks: verify over the raw bytes, store every delivery (accepted or rejected)
//! before answering, and apply accepted events with the `process_webhook_event` job.

pub mod apply;
#[cfg(test)]
mod fuzz;
pub mod ingest;
pub mod reported;
pub mod verify;

/// Who sent a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Clerk (Billing and users), signed by Svix.
    Clerk,
    /// Stripe.
    Stripe,
}

impl Provider {
    /// The name stored in `webhook_events.provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clerk => "clerk",
            Self::Stripe => "stripe",
        }
    }
}
