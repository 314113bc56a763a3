//! Statuses as Rust enums. Each is stored as text in PostgreSQL (the `sqlx` name) and has one
//! wire spelling (the `serde` name): where the starter's frontend spells a state differently
//! from the database (docs/storefront.md §6), the mapping is here and nowhere else.

use serde::{Deserialize, Serialize};

/// A user's role (`profiles.role`), in order of power: a seller may do what a buyer may, an
/// admin what a seller may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every signed-in user.
    Buyer,
    /// Manages the catalog.
    Seller,
    /// The operator surface and everything a seller has.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Self; 3] = [Self::Buyer, Self::Seller, Self::Admin];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Seller => "seller",
            Self::Admin => "admin",
        }
    }

    /// The role spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An order's state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created, waiting for the payment (the starter's `pending_payment`).
    #[serde(rename = "pending_payment")]
    Pending,
    /// Paid; fulfillment is queued.
    Paid,
    /// Everything bought was granted.
    Fulfilled,
    /// Canceled before payment.
    Canceled,
    /// Refunded in full.
    Refunded,
    /// Disputed (chargeback).
    Disputed,
    /// The payment failed.
    Failed,
    /// Never paid: its checkout expired, or it stayed pending past `PENDING_ORDER_TTL`. A
    /// payment that arrives later still pays it.
    Expired,
}

impl OrderStatus {
    /// The database spelling.
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Fulfilled => "fulfilled",
            Self::Canceled => "canceled",
            Self::Refunded => "refunded",
            Self::Disputed => "disputed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }
}

/// A subscription's state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Not paid yet.
    Incomplete,
    /// Starts later.
    Upcoming,
    /// Paid and running.
    Active,
    /// A renewal failed; access continues during the grace period.
    PastDue,
    /// Paused.
    Paused,
    /// Canceled; access continues until the period ends.
    Canceled,
    /// Over.
    Ended,
    /// Never completed.
    Abandoned,
    /// In a free trial (the starter's `trialing`).
    #[serde(rename = "trialing")]
    FreeTrial,
}

/// What granted an entitlement.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EntitlementSource {
    /// A paid order item (the starter's `purchase`).
    #[serde(rename = "purchase")]
    OrderItem,
    /// A subscription plan (the starter's `plan`).
    #[serde(rename = "plan")]
    Subscription,
    /// Granted by an operator.
    Manual,
}

/// A work order's state: `requested` → `in_progress` → `ready_for_delivery` → `completed`, or
/// `canceled` from any open state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum WorkOrderStatus {
    /// Opened by the payment; the seller has not started.
    Requested,
    /// The seller is working on it.
    InProgress,
    /// Done, waiting for delivery.
    ReadyForDelivery,
    /// Delivered.
    Completed,
    /// Canceled (also by a refund).
    Canceled,
}

impl WorkOrderStatus {
    /// The database spelling.
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::InProgress => "in_progress",
            Self::ReadyForDelivery => "ready_for_delivery",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
        }
    }

    /// Whether the buyer still waits for it.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Requested | Self::InProgress | Self::ReadyForDelivery
        )
    }

    /// The moves a seller may make. Moving back one step is allowed (work reopened); a closed
    /// order stays closed.
    pub fn can_move_to(self, to: Self) -> bool {
        use WorkOrderStatus::*;
        match (self, to) {
            (a, b) if a == b => false,
            (Completed | Canceled, _) => false,
            (_, Canceled) => true,
            (Requested, InProgress | ReadyForDelivery) => true,
            (InProgress, Requested | ReadyForDelivery | Completed) => true,
            (ReadyForDelivery, InProgress | Completed) => true,
            _ => false,
        }
    }
}

/// A digital asset's state: `pending` until `finalize_asset` copies it to permanent storage.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AssetStatus {
    /// Uploaded, not finalized yet.
    Pending,
    /// In permanent storage; grants can be issued.
    Ready,
    /// Finalizing failed (`last_error` says why).
    Failed,
}

/// How a work order is delivered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Delivered as a file or online.
    Downloadable,
    /// Shipped with a carrier and a tracking number.
    PhysicalShipped,
}

/// A stored webhook delivery's state (`webhook_events.status`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Verified and stored; its `process_webhook_event` job applies it.
    Received,
    /// Applied.
    Processed,
    /// Nothing to apply (an event type Granary does not handle, an older event).
    Ignored,
    /// Applying it failed (the job retries), or it was refused for good.
    Failed,
    /// Failed verification; stored for the operator, never applied.
    Rejected,
}

impl std::fmt::Display for WebhookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl WebhookStatus {
    /// Every state, in the order the operator's filters list them.
    pub const ALL: [Self; 5] = [
        Self::Received,
        Self::Processed,
        Self::Ignored,
        Self::Failed,
        Self::Rejected,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }

    /// Settled for good: applying it again changes nothing.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Processed | Self::Ignored | Self::Rejected)
    }
}

/// An email row's state (`emails.status`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EmailStatus {
    /// Waiting for its `send_email` job (or its retry).
    Pending,
    /// Accepted by Resend.
    Sent,
    /// Refused for good by Resend.
    Failed,
    /// Not sent, and never will be (no recipient).
    Skipped,
    /// Kept as the development outbox (no `RESEND_API_KEY`).
    Outbox,
}

impl EmailStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Outbox => "outbox",
        }
    }

    /// Done with: sending it again would send a second copy or nothing at all.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Sent | Self::Skipped | Self::Outbox)
    }
}

/// A refund request's state (`refund_requests.status`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Recorded; its `refund_payment` job asks Stripe.
    Queued,
    /// Stripe accepted it; the `charge.refunded` webhook records the money.
    Submitted,
    /// Stripe refused it for good.
    Failed,
}

impl RefundStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Submitted => "submitted",
            Self::Failed => "failed",
        }
    }
}

/// A reconciliation run's state (`reconcile_runs.status`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for its job.
    Queued,
    /// Its job is sweeping.
    Running,
    /// Swept the window.
    Succeeded,
    /// Gave up (`error` says why).
    Failed,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_follow_the_starter() {
        assert_eq!(
            serde_json::to_value(OrderStatus::Pending).unwrap(),
            "pending_payment"
        );
        assert_eq!(
            serde_json::to_value(SubscriptionStatus::FreeTrial).unwrap(),
            "trialing"
        );
        assert_eq!(
            serde_json::to_value(EntitlementSource::OrderItem).unwrap(),
            "purchase"
        );
        assert_eq!(
            serde_json::to_value(EntitlementSource::Subscription).unwrap(),
            "plan"
        );
    }

    #[test]
    fn closed_work_orders_stay_closed() {
        use WorkOrderStatus::*;
        assert!(Requested.can_move_to(InProgress));
        assert!(InProgress.can_move_to(Completed));
        assert!(!Completed.can_move_to(InProgress));
        assert!(!Canceled.can_move_to(Requested));
        assert!(!Requested.can_move_to(Completed));
    }
}
