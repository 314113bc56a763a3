//! Refunds asked for from Granary (docs/payments.md): an operator (`POST
//! /api/admin/orders/<id>/refund/`, `granary-worker orders refund`) or the product's seller
//! (`POST /api/seller/orders/<id>/refund/`) asks; the request is checked against what the
//! order paid through Stripe, audited with its reason, and queued; the `refund_payment` job
//! calls Stripe's `POST /v1/refunds` under an idempotency key per request. Stripe's
//! `charge.refunded` then records the refund once, exactly as for a refund made in Stripe's
//! own dashboard, and a full refund revokes what the order granted.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    error::{DomainError, DomainResult, Fields},
    model::{OrderStatus, RefundStatus},
    platform::{
        audit::{self, Actor},
        http,
    },
    providers::stripe::{self, StripeApiError},
    queue::{self, Job, JobContext, JobError, JobRefs},
};

/// `refund_payment`: carry out refund request `refund_id` at Stripe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    /// `refund_requests.id`.
    pub refund_id: Uuid,
    /// Its order (for the timeline).
    pub order_id: Uuid,
}

impl Job for RefundPayment {
    const QUEUE: &'static str = "refund_payment";

    fn dedupe_key(&self) -> Option<String> {
        Some(self.refund_id.to_string())
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            order_id: Some(self.order_id),
            ..Default::default()
        }
    }
}

/// The Stripe idempotency key of one refund request: a retried job replays Stripe's first
/// answer instead of refunding twice.
pub fn idempotency_key(refund_id: Uuid) -> String {
    format!("granary-refund-{refund_id}")
}

/// `{amount_cents?, reason}`: no amount is the rest of the order.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct RefundInput {
    /// Minor units, 1 or more; absent: everything not yet refunded.
    pub amount_cents: Option<i64>,
    /// Why (kept in the audit log and sent to Stripe as metadata), 1 to 500 characters.
    pub reason: Option<String>,
}

/// A queued refund.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefundOut {
    /// The request.
    pub refund_id: Uuid,
    /// The order's public id.
    pub order: String,
    /// Minor units.
    pub amount_cents: i64,
    /// ISO currency.
    pub currency: String,
    /// `queued`: the `refund_payment` job asks Stripe.
    pub status: RefundStatus,
    /// What can still be refunded after this one.
    pub refundable_after_cents: i64,
}

/// Who may refund the order: an operator any order, a seller only an order whose every line
/// is one of their products (another seller's order is 404, as for every row not theirs).
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Admin or CLI.
    Operator,
    /// The seller with this profile id.
    Seller(Uuid),
}

/// Checks and queues a refund of order `public_id`, in one transaction with its audit row.
/// Refused: 404 (no such order, or not the seller's), 409 `not_refundable` (not paid, or not
/// through Stripe), 409 `refund_exceeds_payment` (more than is left), 422 (no reason, amount
/// not positive).
pub async fn request(
    pool: &PgPool,
    public_id: &str,
    scope: Scope,
    input: RefundInput,
    actor: &Actor,
) -> DomainResult<RefundOut> {
    let reason = checked_reason(&input, actor)?;
    let mut tx = pool.begin().await?;
    let order = sqlx::query!(
        r#"SELECT o.id, o.status AS "status: OrderStatus", o.currency,
                  NOT EXISTS (SELECT 1 FROM order_items oi JOIN products p ON p.id = oi.product_id
                              WHERE oi.order_id = o.id AND p.seller_profile_id IS DISTINCT FROM $2) AS "all_theirs!"
           FROM orders o WHERE o.public_id = $1 FOR UPDATE OF o"#,
        public_id,
        match scope {
            Scope::Seller(id) => Some(id),
            Scope::Operator => None,
        }
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    if matches!(scope, Scope::Seller(_)) && !order.all_theirs {
        return Err(DomainError::NotFound);
    }
    if !matches!(order.status, OrderStatus::Paid | OrderStatus::Fulfilled) {
        return Err(not_refundable(format!(
            "Order {public_id} is {}: only a paid order can be refunded.",
            order.status.as_db()
        )));
    }
    let (paid, refundable) = refundable(&mut tx, order.id, public_id).await?;
    let amount = input.amount_cents.unwrap_or(refundable);
    if amount <= 0 || amount > refundable {
        return Err(DomainError::Conflict {
            code: "refund_exceeds_payment",
            message: format!(
                "Only {refundable} of the {paid} {} paid can still be refunded; asked for {amount}.",
                order.currency
            ),
        });
    }
    let refund_id =
        queue_refund(&mut tx, order.id, amount, &order.currency, &reason, actor).await?;
    tx.commit().await?;
    tracing::info!(order = public_id, %refund_id, amount, "refund queued");
    Ok(RefundOut {
        refund_id,
        order: public_id.to_string(),
        amount_cents: amount,
        currency: order.currency,
        status: RefundStatus::Queued,
        refundable_after_cents: refundable - amount,
    })
}

/// 409 `not_refundable`, saying why.
fn not_refundable(why: String) -> DomainError {
    DomainError::Conflict {
        code: "not_refundable",
        message: why,
    }
}

/// The request's reason (the body's, else the actor's), checked with the amount's bounds.
fn checked_reason(input: &RefundInput, actor: &Actor) -> DomainResult<String> {
    let reason = input
        .reason
        .as_deref()
        .or(actor.reason.as_deref())
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let mut f = Fields::new();
    f.check(
        (1..=500).contains(&reason.chars().count()),
        "reason",
        "why the order is refunded: 1 to 500 characters",
    );
    f.check(
        input
            .amount_cents
            .is_none_or(|a| (1..=1_000_000_000_000).contains(&a)),
        "amount_cents",
        "a positive number of minor units, or none for the rest of the order",
    );
    f.finish()?;
    Ok(reason)
}

/// What Stripe took for the order and what can still be refunded of it: `(paid, refundable)`.
/// 409 `not_refundable` when the order was not paid through Stripe.
async fn refundable(
    conn: &mut PgConnection,
    order_id: Uuid,
    public_id: &str,
) -> DomainResult<(i64, i64)> {
    // What Stripe took, what it has reported refunded, and what was asked already.
    let money = sqlx::query!(
        r#"SELECT
             (SELECT sum(amount_cents) FROM payment_transactions WHERE order_id = $1 AND provider = 'stripe'
                AND kind = 'payment' AND status = 'succeeded')::bigint AS paid,
             coalesce((SELECT sum(amount_cents) FROM payment_transactions WHERE order_id = $1 AND kind = 'refund'), 0)::bigint AS "recorded!",
             coalesce((SELECT sum(amount_cents) FROM refund_requests WHERE order_id = $1 AND status <> 'failed'), 0)::bigint AS "requested!""#,
        order_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let Some(paid) = money.paid else {
        return Err(not_refundable(format!(
            "Order {public_id} was not paid through Stripe: refund it where it was paid."
        )));
    };
    // Requests Stripe has not reported yet, and refunds made in Stripe's dashboard, both
    // count; Stripe itself refuses anything past the charge.
    let refundable = paid - money.recorded.max(money.requested);
    Ok((paid, refundable))
}

/// Records the refund request, queues its `refund_payment` job and audits it, in the caller's
/// transaction. Returns the request's id.
async fn queue_refund(
    conn: &mut PgConnection,
    order_id: Uuid,
    amount: i64,
    currency: &str,
    reason: &str,
    actor: &Actor,
) -> DomainResult<Uuid> {
    let refund_id = sqlx::query_scalar!(
        "INSERT INTO refund_requests (order_id, amount_cents, currency, reason, actor) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        order_id,
        amount,
        currency,
        reason,
        actor.name
    )
    .fetch_one(&mut *conn)
    .await?;
    queue::enqueue(
        &mut *conn,
        &RefundPayment {
            refund_id,
            order_id,
        },
    )
    .await?;
    audit::record(
        &mut *conn,
        &audit::Action {
            actor: &actor.name,
            action: "order.refund",
            target_type: "order",
            target_id: &order_id.to_string(),
            reason: Some(reason),
            details: json!({"refund_id": refund_id, "amount_cents": amount, "currency": currency}),
        },
    )
    .await?;
    Ok(refund_id)
}

/// Runs `refund_payment`: asks Stripe to refund the request's amount of the order's payment.
/// Stripe down, slow or rate-limiting: retried (the idempotency key makes a retry safe).
/// Refused by Stripe (more than is left, a bad key): the request is `failed` with Stripe's
/// reason and the job fails for the operator.
pub async fn refund_payment(ctx: JobContext, job: RefundPayment) -> Result<(), JobError> {
    let Some(r) = sqlx::query!(
        r#"SELECT r.status, r.amount_cents, o.public_id,
                  (SELECT t.provider_payment_id FROM payment_transactions t WHERE t.order_id = r.order_id
                     AND t.provider = 'stripe' AND t.kind = 'payment' AND t.status = 'succeeded'
                   ORDER BY t.created_at LIMIT 1) AS payment
           FROM refund_requests r JOIN orders o ON o.id = r.order_id WHERE r.id = $1"#,
        job.refund_id
    )
    .fetch_optional(&ctx.pool)
    .await?
    else {
        return Err(JobError::permanent(anyhow::anyhow!(
            "refund request {} does not exist",
            job.refund_id
        )));
    };
    if r.status == "submitted" {
        return Ok(());
    }
    let payment = r.payment.unwrap_or_default();
    let target = if payment.starts_with("pi_") {
        "payment_intent"
    } else if payment.starts_with("ch_") || payment.starts_with("py_") {
        "charge"
    } else {
        let why =
            format!("the order's Stripe payment `{payment}` is not a payment intent or a charge");
        fail(&ctx.pool, job.refund_id, &why).await?;
        return Err(JobError::permanent(anyhow::anyhow!(why)));
    };
    let form = [
        (target.to_string(), payment.clone()),
        ("amount".into(), r.amount_cents.to_string()),
        ("metadata[order_id]".into(), r.public_id.clone()),
        (
            "metadata[granary_refund_id]".into(),
            job.refund_id.to_string(),
        ),
    ];
    match stripe::create_refund(
        http::client(),
        &ctx.config,
        &form,
        &idempotency_key(job.refund_id),
    )
    .await
    {
        Ok(refund) => {
            sqlx::query!(
                "UPDATE refund_requests SET status = 'submitted', stripe_refund_id = $2, submitted_at = now(), last_error = NULL WHERE id = $1",
                job.refund_id,
                refund.id
            )
            .execute(&ctx.pool)
            .await?;
            tracing::info!(refund_id = %job.refund_id, stripe_refund = %refund.id, "refund submitted to Stripe");
            Ok(())
        }
        Err(e @ StripeApiError::Unreachable(_)) => Err(JobError::Retry(e.into())),
        Err(StripeApiError::Api {
            status: 429,
            retry_after: Some(after),
            message,
            ..
        }) => Err(JobError::RetryAfter(
            after,
            anyhow::anyhow!("Stripe rate-limited the refund: {message}"),
        )),
        Err(e @ StripeApiError::Api { status, .. }) if status == 429 || status >= 500 => {
            Err(JobError::Retry(e.into()))
        }
        Err(e) => {
            let why = format!("{e} ({})", e.fix());
            fail(&ctx.pool, job.refund_id, &why).await?;
            Err(JobError::permanent(anyhow::anyhow!(why)))
        }
    }
}

async fn fail(pool: &PgPool, refund_id: Uuid, why: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE refund_requests SET status = 'failed', last_error = left($2, 4000) WHERE id = $1",
        refund_id,
        why
    )
    .execute(pool)
    .await?;
    Ok(())
}
