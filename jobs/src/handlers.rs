//! The registry of every job kind Granary runs.
//!
//! `fulfill_order` is enqueued by payments (webhooks, manual confirm) but has no handler yet:
//! its jobs wait, visible as pending, until the fulfillment pipeline is registered here.

use crate::{
    orders,
    queue::{Registry, probe},
    subscriptions,
    webhooks::{apply, ingest::ProcessWebhookEvent},
};

/// Every job kind with its handler.
pub fn registry() -> Registry {
    Registry::new()
        .register(probe::handle)
        .register::<ProcessWebhookEvent, _, _>(apply::handle)
        .register(subscriptions::sync_entitlements)
        .register(orders::revoke_source)
}
