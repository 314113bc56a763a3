//! The registry of every job kind Granary runs.

use crate::{
    emails, fulfillment, orders,
    queue::{Registry, probe},
    reconcile, refunds, subscriptions,
    webhooks::{apply, ingest::ProcessWebhookEvent},
};

/// Every job kind with its handler.
pub fn registry() -> Registry {
    Registry::new()
        .register(probe::handle)
        .register::<ProcessWebhookEvent, _, _>(apply::handle)
        .register(subscriptions::sync_entitlements)
        .register(orders::revoke_source)
        .register(fulfillment::fulfill_order)
        .register(fulfillment::finalize_asset)
        .register(fulfillment::issue_grants)
        .register(emails::send_email)
        .register(refunds::refund_payment)
        .register(reconcile::reconcile_stripe)
        .register(reconcile::reconcile_clerk)
        .every(
            "reconcile",
            reconcile::interval,
            |pool, config| async move { reconcile::schedule(&pool, &config).await },
        )
        .every(
            "expire_pending_orders",
            orders::expiry_interval,
            |pool, config| async move { orders::expire_stale(&pool, &config).await.map(|_| ()) },
        )
}
