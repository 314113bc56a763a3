//! The registry of every job kind Granary runs.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    billing::subscriptions,
    catalog, emails,
    operator::reconcile,
    orders::{self, fulfillment, refunds},
    queue::{Registry, probe, runtime},
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
        .register(catalog::assets::finalize_asset)
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

/// Runs `registry`'s queues with the configuration's runtime settings until `shutdown` (see
/// [`runtime::run`]).
pub async fn run(
    pool: PgPool,
    config: Arc<Config>,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (settings, grace) = (config.worker.clone(), config.shutdown_timeout);
    runtime::run(pool, settings, grace, config, registry, shutdown).await
}
