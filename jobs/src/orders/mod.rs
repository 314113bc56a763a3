//! Order state changes that imply work, each writing rows and enqueueing jobs in the caller's
//! transaction: a payment marks the order paid and enqueues `fulfill_order`; a refund or a
//! dispute records the reversal and enqueues `revoke_source`.

pub mod buyer;
pub mod fulfillment;
pub mod refunds;
pub mod stripe_checkout;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    Config,
    model::OrderStatus::{self, *},
    queue::{self, Job, JobContext, JobError, JobRefs},
};

/// `fulfill_order`: entitlements, download grants, bookings and the receipt for a paid order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FulfillOrder {
    /// `orders.id`.
    pub order_id: Uuid,
}

impl Job for FulfillOrder {
    const QUEUE: &'static str = "fulfill_order";
    const MAX_ATTEMPTS: i32 = 25;

    fn dedupe_key(&self) -> Option<String> {
        Some(self.order_id.to_string())
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            order_id: Some(self.order_id),
            ..Default::default()
        }
    }
}

/// `revoke_source`: revoke exactly what one order granted (refund, dispute, cancellation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeSource {
    /// `orders.id` whose items' entitlements and grants are revoked.
    pub order_id: Uuid,
    /// Why (kept on every revoked row).
    pub reason: String,
}

impl Job for RevokeSource {
    const QUEUE: &'static str = "revoke_source";

    fn dedupe_key(&self) -> Option<String> {
        Some(self.order_id.to_string())
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            order_id: Some(self.order_id),
            ..Default::default()
        }
    }
}

/// A provider's confirmation of money moving.
#[derive(Debug, Clone)]
pub struct Payment<'a> {
    /// `clerk`, `stripe` or `manual`.
    pub provider: &'a str,
    /// The provider's id for it (unique per provider and kind).
    pub provider_payment_id: &'a str,
    /// `payment`, `refund` or `dispute`.
    pub kind: &'a str,
    /// Minor units.
    pub amount_cents: i64,
    /// ISO currency, upper case.
    pub currency: &'a str,
    /// The stored event that reported it.
    pub webhook_event_id: Option<Uuid>,
    /// Provider payload, for the audit.
    pub raw: Value,
}

/// What a payment did to its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaidOutcome {
    /// The order became paid; `fulfill_order` is enqueued.
    NewlyPaid,
    /// This very payment was recorded before (a duplicate delivery or a replay): nothing changed.
    AlreadyRecorded,
    /// A renewal of a recurring plan whose order is already paid: recorded, nothing to fulfil.
    Renewal,
    /// A second, distinct payment for an order that another payment already paid: recorded with
    /// status `duplicate`, on the order's timeline, and listed by `doctor` to be refunded.
    Duplicate,
}

impl PaidOutcome {
    /// The action recorded on the event's link to the order.
    pub fn action(self) -> &'static str {
        match self {
            Self::NewlyPaid => "paid",
            Self::AlreadyRecorded => "payment_recorded",
            Self::Renewal => "renewal_recorded",
            Self::Duplicate => "duplicate_payment",
        }
    }
}

/// Records a payment and marks its order paid, enqueueing fulfillment, in the caller's
/// transaction. Idempotent: the payment is unique by provider id, and only an order that is not
/// yet paid changes. A payment for a cancelled, failed or expired order still marks it paid:
/// the money was taken, so the customer must get what they paid for. A distinct payment for an order that
/// is already paid is a duplicate (money to give back) unless the caller knows it is a
/// `renewal` of a recurring plan.
pub async fn record_payment(
    conn: &mut PgConnection,
    order_id: Uuid,
    p: &Payment<'_>,
    renewal: bool,
) -> sqlx::Result<PaidOutcome> {
    // Written only by the statement whose update makes the order paid: only one can.
    let fulfill = queue::Prepared::of(&FulfillOrder { order_id })?;
    let from = [Pending, Canceled, Failed, Expired].map(OrderStatus::as_db);
    let to = Some((Paid.as_db(), &from[..]));
    let done = record_transaction(conn, order_id, p, to, Some(&fulfill)).await?;
    if done.moved {
        fulfill.written();
        return Ok(PaidOutcome::NewlyPaid);
    }
    if !done.inserted {
        return Ok(PaidOutcome::AlreadyRecorded);
    }
    if renewal {
        return Ok(PaidOutcome::Renewal);
    }
    sqlx::query!(
        "UPDATE payment_transactions SET status = 'duplicate' WHERE provider = $1 AND kind = 'payment' AND provider_payment_id = $2",
        p.provider,
        p.provider_payment_id
    )
    .execute(&mut *conn)
    .await?;
    tracing::warn!(%order_id, provider = p.provider, payment = p.provider_payment_id, "a second payment for an order already paid: refund it");
    Ok(PaidOutcome::Duplicate)
}

/// The refunds already recorded for Stripe charge `charge_id` of `order_id`, after locking the
/// order's row, so that concurrent reports of one charge's refunds are counted one at a time.
/// (Two statements: the sum must be read with a snapshot taken after the lock is held.)
pub async fn refunded_so_far(
    conn: &mut PgConnection,
    order_id: Uuid,
    charge_id: &str,
) -> sqlx::Result<i64> {
    sqlx::query!("SELECT id FROM orders WHERE id = $1 FOR UPDATE", order_id)
        .fetch_optional(&mut *conn)
        .await?;
    sqlx::query_scalar!(
        r#"
        SELECT coalesce(sum(amount_cents), 0)::bigint AS "sum!" FROM payment_transactions
        WHERE order_id = $1 AND provider = 'stripe' AND kind = 'refund'
          AND (provider_payment_id = $2 OR starts_with(provider_payment_id, $2 || ':'))
        "#,
        order_id,
        charge_id
    )
    .fetch_one(conn)
    .await
}

/// Records a refund or dispute. A full reversal moves the order to `refunded`/`disputed` and
/// enqueues `revoke_source`; a partial refund is recorded only.
pub async fn record_reversal(
    conn: &mut PgConnection,
    order_id: Uuid,
    p: &Payment<'_>,
    full: bool,
) -> sqlx::Result<bool> {
    let status = full.then_some(if p.kind == "dispute" {
        Disputed
    } else {
        Refunded
    });
    let from = [Paid, Fulfilled, Disputed].map(OrderStatus::as_db);
    let to = status.map(|s| (s.as_db(), &from[..]));
    record_transaction(conn, order_id, p, to, None).await?;
    let Some(status) = status else {
        return Ok(false);
    };
    queue::enqueue(
        conn,
        &RevokeSource {
            order_id,
            reason: format!(
                "order {} ({} {})",
                status.as_db(),
                p.provider,
                p.provider_payment_id
            ),
        },
    )
    .await?;
    Ok(true)
}

/// What [`record_transaction`] wrote.
struct Recorded {
    /// The transaction is new (not a repeat of one already recorded).
    inserted: bool,
    /// The order moved to the new status.
    moved: bool,
}

/// Records the money movement `p` and, in the same statement (one round trip), moves the order
/// to `status` if it is in one of `from` (`to` = `(status, from)`; None: the order is left as it
/// is), writing the job `then` only if it did. The transaction is unique by provider, kind and
/// provider id, so a repeat records nothing. Only one transaction can ever move the order, so
/// only that one enqueues what follows.
async fn record_transaction(
    conn: &mut PgConnection,
    order_id: Uuid,
    p: &Payment<'_>,
    to: Option<(&str, &[&str])>,
    then: Option<&queue::Prepared>,
) -> sqlx::Result<Recorded> {
    let (status, from) = to.unwrap_or_default();
    let row = sqlx::query!(
        r#"
        WITH t AS (
            INSERT INTO payment_transactions (order_id, provider, provider_payment_id, kind, status, amount_cents, currency, webhook_event_id, raw)
            VALUES ($1, $2, $3, $4, 'succeeded', $5, $6, $7, $8)
            ON CONFLICT (provider, kind, provider_payment_id) DO NOTHING
            RETURNING id
        ), moved AS (
            UPDATE orders SET status = $9,
                paid_at = CASE WHEN $9 = 'paid' THEN now() ELSE paid_at END,
                refunded_at = CASE WHEN $9 = 'paid' THEN refunded_at ELSE coalesce(refunded_at, now()) END
            WHERE id = $1 AND status = ANY($10)
            RETURNING id
        )
        -- The job is written (count(*) is never null) only when the order moved.
        SELECT EXISTS (SELECT 1 FROM t) AS "inserted!",
               EXISTS (SELECT 1 FROM moved WHERE CASE WHEN $11::jsonb IS NULL THEN true
                                                     ELSE granary_insert_jobs($11, $12) IS NOT NULL END) AS "moved!"
        "#,
        order_id,
        p.provider,
        p.provider_payment_id,
        p.kind,
        p.amount_cents,
        p.currency,
        p.webhook_event_id,
        p.raw,
        status,
        from as &[&str],
        then.map(queue::Prepared::batch) as _,
        then.is_some_and(queue::Prepared::notify),
    )
    .fetch_one(conn)
    .await?;
    Ok(Recorded {
        inserted: row.inserted,
        moved: row.moved,
    })
}

/// Runs `revoke_source`: revokes the entitlements and download grants sourced from the order's
/// items, and cancels their open bookings. What another purchase granted has its own source rows
/// and is untouched. Idempotent: `revoked_at` is set once.
pub async fn revoke_source(ctx: JobContext, job: RevokeSource) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await?;
    let ents = sqlx::query!(
        r#"
        UPDATE entitlements SET revoked_at = now(), revoke_reason = $2
        WHERE source_type = 'order_item' AND revoked_at IS NULL
          AND source_id IN (SELECT id::text FROM order_items WHERE order_id = $1)
        "#,
        job.order_id,
        job.reason
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let grants = sqlx::query!(
        r#"
        UPDATE download_grants SET revoked_at = now(), revoke_reason = $2
        WHERE revoked_at IS NULL AND order_item_id IN (SELECT id FROM order_items WHERE order_id = $1)
        "#,
        job.order_id,
        job.reason
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        r#"
        UPDATE bookings SET status = 'canceled'
        WHERE status IN ('requested', 'confirmed') AND order_item_id IN (SELECT id FROM order_items WHERE order_id = $1)
        "#,
        job.order_id
    )
    .execute(&mut *tx)
    .await?;
    let work_orders =
        crate::bookings::work_orders::cancel_for_order(&mut tx, job.order_id, &job.reason).await?;
    let credit_shortfall =
        crate::billing::credits::revoke_order_packs(&mut tx, job.order_id, &job.reason).await?;
    tx.commit().await?;
    tracing::info!(order_id = %job.order_id, entitlements = ents, grants, work_orders, credit_shortfall, "revoked what the order granted");
    Ok(())
}

/// How often the worker looks for pending orders to expire.
pub fn expiry_interval(_: &Config) -> Option<std::time::Duration> {
    Some(std::time::Duration::from_secs(60))
}

/// Expires order `order_id` if it is still pending (and, given `session`, if that is its
/// Checkout Session or it has none). True when it expired now.
pub async fn expire(
    conn: &mut PgConnection,
    order_id: Uuid,
    session: Option<&str>,
    reason: &str,
) -> sqlx::Result<bool> {
    Ok(sqlx::query!(
        r#"UPDATE orders SET status = 'expired', expired_at = now(), expire_reason = $3
           WHERE id = $1 AND status = 'pending'
             AND ($2::text IS NULL OR stripe_checkout_session_id IS NULL OR stripe_checkout_session_id = $2)"#,
        order_id,
        session,
        reason
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The sweep: every order pending longer than `PENDING_ORDER_TTL` with no Checkout Session
/// still open expires. Returns how many did.
pub async fn expire_stale(pool: &PgPool, config: &Config) -> sqlx::Result<u64> {
    let ttl = i64::try_from(config.stripe.pending_order_ttl.as_secs()).unwrap_or(i64::MAX);
    let n = sqlx::query!(
        r#"UPDATE orders SET status = 'expired', expired_at = now(),
               expire_reason = 'pending longer than PENDING_ORDER_TTL with no checkout open'
           WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1::bigint::double precision)
             AND (checkout_expires_at IS NULL OR checkout_expires_at < now())"#,
        ttl
    )
    .execute(pool)
    .await?
    .rows_affected();
    if n > 0 {
        tracing::info!(expired = n, "pending orders expired");
    }
    Ok(n)
}
