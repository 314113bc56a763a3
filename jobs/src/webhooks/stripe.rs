//! Stripe's events: a paid checkout session or payment intent pays its order (after the money
//! checks), an expired or failed checkout ends a pending one, and refunds and disputes record
//! the reversal (revoking what the order granted).

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::apply::Outcome;
use crate::{
    orders::{self, Payment},
    providers::{Provider, events::StripeObject, reported},
    queue::JobError,
};

/// The order a Stripe object names: (id, total in cents, currency).
type StripeOrder = (Uuid, i64, String);

/// Applies one Stripe event.
pub(super) async fn apply(
    conn: &mut PgConnection,
    event: Uuid,
    ty: &str,
    body: &Value,
) -> Result<Outcome, JobError> {
    let raw = &body["data"]["object"];
    let o = &StripeObject::of(body);
    match ty {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            session_paid(conn, event, ty, o, raw).await
        }
        "payment_intent.succeeded" => intent_succeeded(conn, event, o, raw).await,
        "payment_intent.payment_failed" => intent_failed(conn, o).await,
        "checkout.session.expired" => session_expired(conn, o).await,
        "checkout.session.async_payment_failed" => session_payment_failed(conn, o).await,
        "charge.refunded" => refund_charge(conn, event, o, raw).await,
        "charge.dispute.created" => dispute_created(conn, event, o, raw).await,
        other => Ok(Outcome::Ignored(format!(
            "event type `{other}` is not handled"
        ))),
    }
}

/// `checkout.session.completed` / `async_payment_succeeded`: a session that took money pays
/// its order.
async fn session_paid(
    conn: &mut PgConnection,
    event: Uuid,
    ty: &str,
    o: &StripeObject,
    obj: &Value,
) -> Result<Outcome, JobError> {
    let session_id =
        o.id.get()
            .ok_or_else(|| JobError::permanent(anyhow::anyhow!("checkout session without id")))?;
    let payment_status = o.payment_status.get().map(String::as_str);
    if ty == "checkout.session.completed" && payment_status == Some("unpaid") {
        return Ok(Outcome::Ignored("checkout completed but unpaid (delayed payment method); waiting for async_payment_succeeded".into()));
    }
    let Some(order) = stripe_order(conn, o).await? else {
        // Permanent: retrying cannot find an order that the session does not name. The
        // event stays `failed` for the operator.
        return Err(JobError::permanent(anyhow::anyhow!(
            "checkout session {session_id} names no known order (client_reference_id / metadata.order_id)"
        )));
    };
    // Only a session that took money pays: `payment_status: "paid"` in a mode that
    // charges. A setup session, or one with nothing to pay, proves no payment.
    let mode = o.mode.get().map(String::as_str);
    if payment_status != Some("paid") || !matches!(mode, Some("payment" | "subscription")) {
        return Ok(Outcome::refused(
            order.0,
            format!("checkout session {session_id}"),
            format!(
                "not a payment (payment_status {}, mode {}); not fulfilling",
                payment_status.map_or("missing".into(), |p| format!("{p:?}")),
                mode.map_or("missing".into(), |m| format!("{m:?}")),
            ),
        ));
    }
    // The payment is the session's payment intent when it has one, so the session and
    // its `payment_intent.succeeded` record one payment between them.
    let payment_id = o.payment_intent.get().unwrap_or(session_id);
    pay_stripe(
        conn,
        event,
        order,
        obj,
        payment_id,
        "/amount_total",
        &format!("checkout session {session_id}"),
    )
    .await
}

/// `payment_intent.succeeded`: an intent that names its order pays it (one that does not is
/// paid through its checkout session).
async fn intent_succeeded(
    conn: &mut PgConnection,
    event: Uuid,
    o: &StripeObject,
    obj: &Value,
) -> Result<Outcome, JobError> {
    let intent_id =
        o.id.get()
            .ok_or_else(|| JobError::permanent(anyhow::anyhow!("payment intent without id")))?;
    if o.metadata_order().is_none() {
        return Ok(Outcome::Ignored(format!(
            "payment intent {intent_id} names no order (metadata.order_id); its checkout session pays the order"
        )));
    }
    let Some(order) = stripe_order(conn, o).await? else {
        return Err(JobError::permanent(anyhow::anyhow!(
            "payment intent {intent_id} names an unknown order (metadata.order_id)"
        )));
    };
    pay_stripe(
        conn,
        event,
        order,
        obj,
        intent_id,
        "/amount_received",
        &format!("payment intent {intent_id}"),
    )
    .await
}

/// `payment_intent.payment_failed`: on the order's timeline; the order stays payable.
async fn intent_failed(conn: &mut PgConnection, o: &StripeObject) -> Result<Outcome, JobError> {
    let Some((order_id, ..)) = stripe_order(conn, o).await? else {
        return Ok(Outcome::Ignored(
            "names no known order (metadata.order_id)".into(),
        ));
    };
    // The order stays pending: the buyer can pay again. The attempt is on the timeline.
    Ok(Outcome::Applied(vec![(
        "order",
        order_id,
        "payment_failed",
    )]))
}

/// `checkout.session.expired`: the session's pending order expires.
async fn session_expired(conn: &mut PgConnection, o: &StripeObject) -> Result<Outcome, JobError> {
    let session_id =
        o.id.get()
            .ok_or_else(|| JobError::permanent(anyhow::anyhow!("checkout session without id")))?;
    let Some((order_id, ..)) = stripe_order(conn, o).await? else {
        return Ok(Outcome::Ignored(format!(
            "expired checkout session {session_id} names no known order"
        )));
    };
    if orders::expire(
        conn,
        order_id,
        Some(session_id),
        &format!("checkout session {session_id} expired unpaid"),
    )
    .await?
    {
        Ok(Outcome::Applied(vec![("order", order_id, "expired")]))
    } else {
        Ok(Outcome::Ignored(format!(
            "checkout session {session_id} expired, but its order is no longer pending (or has another session)"
        )))
    }
}

/// `checkout.session.async_payment_failed`: the pending order failed.
async fn session_payment_failed(
    conn: &mut PgConnection,
    o: &StripeObject,
) -> Result<Outcome, JobError> {
    let Some((order_id, ..)) = stripe_order(conn, o).await? else {
        return Ok(Outcome::Ignored("names no known order".into()));
    };
    sqlx::query!(
        "UPDATE orders SET status = 'failed' WHERE id = $1 AND status = 'pending'",
        order_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(Outcome::Applied(vec![(
        "order",
        order_id,
        "payment_failed",
    )]))
}

/// `charge.dispute.created`: the disputed amount is recorded and the order is disputed.
async fn dispute_created(
    conn: &mut PgConnection,
    event: Uuid,
    o: &StripeObject,
    obj: &Value,
) -> Result<Outcome, JobError> {
    let dispute_id = o
        .id
        .get()
        .ok_or_else(|| JobError::permanent(anyhow::anyhow!("charge.dispute.created without id")))?;
    let Some((order_id, ..)) = stripe_order(conn, o).await? else {
        return Err(JobError::Retry(anyhow::anyhow!(
            "dispute {dispute_id}: no order found yet for its payment intent (the payment event may not be applied yet)"
        )));
    };
    let disputed = match reported::money(obj, "/amount", "/currency") {
        Ok(m) => m,
        Err(e) => {
            return Ok(Outcome::refused(
                order_id,
                format!("dispute {dispute_id}"),
                e,
            ));
        }
    };
    orders::record_reversal(
        conn,
        order_id,
        &Payment {
            provider: Provider::Stripe.as_str(),
            provider_payment_id: dispute_id,
            kind: "dispute",
            amount_cents: disputed.amount_cents,
            currency: &disputed.currency,
            webhook_event_id: Some(event),
            raw: obj.clone(),
        },
        true,
    )
    .await?;
    Ok(Outcome::Applied(vec![("order", order_id, "disputed")]))
}

/// The order a Stripe object points at: `client_reference_id` or `metadata.order_id` (an order's
/// public id or uuid), or a payment already recorded for its payment intent.
async fn stripe_order(
    conn: &mut PgConnection,
    o: &StripeObject,
) -> sqlx::Result<Option<StripeOrder>> {
    let reference = o.order_reference();
    if let Some(r) = reference {
        let as_uuid = Uuid::parse_str(r).ok();
        // Two index lookups rather than `public_id = $1 OR id = $2`, whose generic plan
        // PostgreSQL never chose: it planned the OR again at every payment.
        let row = sqlx::query!(
            r#"
            SELECT id AS "id!", total_cents AS "total_cents!", currency AS "currency!" FROM orders WHERE id = $2
            UNION ALL
            SELECT id, total_cents, currency FROM orders WHERE public_id = $1
            LIMIT 1
            "#,
            r,
            as_uuid
        )
        .fetch_optional(&mut *conn)
        .await?;
        return Ok(row.map(|r| (r.id, r.total_cents, r.currency)));
    }
    let intent = o.payment_intent.get().or_else(|| o.charge.get());
    if let Some(pi) = intent {
        let row = sqlx::query!(
            r#"
            SELECT o.id, o.total_cents, o.currency FROM payment_transactions t JOIN orders o ON o.id = t.order_id
            WHERE t.provider = 'stripe' AND t.kind = 'payment'
              AND (t.provider_payment_id = $1 OR t.raw->>'payment_intent' = $1 OR t.raw->>'latest_charge' = $1)
            LIMIT 1
            "#,
            pi
        )
        .fetch_optional(&mut *conn)
        .await?;
        return Ok(row.map(|r| (r.id, r.total_cents, r.currency)));
    }
    Ok(None)
}

/// Records a Stripe payment for `order` after the checks every Stripe payment passes: the
/// amount (`amount_at`) and the currency must be reported, well formed and the order's, or the
/// payment is refused (failed for a human, never fulfilled). One payment per provider id: a
/// repeat records nothing and pays nothing.
async fn pay_stripe(
    conn: &mut PgConnection,
    event: Uuid,
    (order_id, total, currency): StripeOrder,
    obj: &Value,
    payment_id: &str,
    amount_at: &str,
    what: &str,
) -> Result<Outcome, JobError> {
    let refuse = |why: String| {
        Ok(Outcome::refused(
            order_id,
            what,
            format!("{why}; not fulfilling, check it by hand"),
        ))
    };
    let paid = match reported::money(obj, amount_at, "/currency") {
        Ok(m) => m,
        Err(e) => return refuse(e),
    };
    if paid.amount_cents != total || paid.currency != currency {
        return refuse(format!("paid {paid} for an order of {total} {currency}"));
    }
    let outcome = orders::record_payment(
        conn,
        order_id,
        &Payment {
            provider: Provider::Stripe.as_str(),
            provider_payment_id: payment_id,
            kind: "payment",
            amount_cents: paid.amount_cents,
            currency: &paid.currency,
            webhook_event_id: Some(event),
            raw: obj.clone(),
        },
        false,
    )
    .await?;
    Ok(Outcome::Applied(vec![(
        "order",
        order_id,
        outcome.action(),
    )]))
}

/// `charge.refunded`: Stripe reports the charge's cumulative `amount_refunded` each time part of
/// it is refunded. Each report records the part not yet recorded as its own refund row (keyed by
/// the charge and the cumulative amount, so a repeat of the same report records nothing), so the
/// rows add up to what Stripe says, whatever order the reports arrive in. The order's row is
/// locked first: two reports applied at once cannot both count the same part.
async fn refund_charge(
    conn: &mut PgConnection,
    event: Uuid,
    o: &StripeObject,
    obj: &Value,
) -> Result<Outcome, JobError> {
    let charge_id =
        o.id.get()
            .ok_or_else(|| JobError::permanent(anyhow::anyhow!("charge.refunded without id")))?;
    let Some((order_id, ..)) = stripe_order(conn, o).await? else {
        return Err(JobError::Retry(anyhow::anyhow!(
            "charge.refunded {charge_id}: no order found yet for its payment intent (the payment event may not be applied yet)"
        )));
    };
    let what = format!("refund of charge {charge_id}");
    let refused = |why: String| Ok(Outcome::refused(order_id, &what, why));
    let cumulative = match reported::money(obj, "/amount_refunded", "/currency") {
        Ok(m) => m,
        Err(e) => return refused(e),
    };
    let Some(&full) = o.refunded.get() else {
        return refused("`refunded` is missing or not a boolean".into());
    };
    let recorded = orders::refunded_so_far(conn, order_id, charge_id).await?;
    let delta = cumulative.amount_cents - recorded;
    if delta <= 0 {
        return Ok(Outcome::Ignored(format!(
            "charge {charge_id}: {} refunded in all, {recorded} already recorded",
            cumulative.amount_cents
        )));
    }
    let key = format!("{charge_id}:{}", cumulative.amount_cents);
    orders::record_reversal(
        conn,
        order_id,
        &Payment {
            provider: Provider::Stripe.as_str(),
            provider_payment_id: &key,
            kind: "refund",
            amount_cents: delta,
            currency: &cumulative.currency,
            webhook_event_id: Some(event),
            raw: obj.clone(),
        },
        full,
    )
    .await?;
    Ok(Outcome::Applied(vec![(
        "order",
        order_id,
        if full {
            "refunded"
        } else {
            "partially_refunded"
        },
    )]))
}
