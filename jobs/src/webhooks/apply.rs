//! `process_webhook_event`: apply one stored event, convergently. Duplicates, replays and any
//! delivery order end in the same rows: every write is an upsert keyed by the provider's ids,
//! subscription rows ignore events older than the last one applied, and payments are unique.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{ingest::ProcessWebhookEvent, reported};
use crate::{
    orders::{self, Payment},
    queue::{self, JobContext, JobError},
    subscriptions::{self, SyncEntitlements},
};

/// What applying an event did.
#[derive(Debug)]
enum Outcome {
    /// Rows changed (entity, id, action).
    Applied(Vec<(&'static str, Uuid, &'static str)>),
    /// Nothing to do, and why.
    Ignored(String),
    /// The provider reported a payment for `order` that proves nothing (an amount or currency
    /// missing, malformed or not the order's; a session that is not paid): never a fulfillment.
    /// The event fails for good with `reason`, linked to the order so its timeline shows it.
    Refused {
        /// `orders.id`.
        order: Uuid,
        /// What was wrong, naming the field.
        reason: String,
    },
}

impl Outcome {
    /// `what` (the provider's object) proves no payment for `order`, because `why`.
    fn refused(order: Uuid, what: impl std::fmt::Display, why: impl std::fmt::Display) -> Self {
        Self::Refused {
            order,
            reason: format!("{what}: {why}"),
        }
    }
}

/// Runs `process_webhook_event`.
pub async fn handle(ctx: JobContext, job: ProcessWebhookEvent) -> Result<(), JobError> {
    let id = job.webhook_event_id;
    let mut tx = ctx.pool.begin().await?;
    let Some(ev) = sqlx::query!(
        r#"SELECT provider, event_id, event_type, status, body, occurred_at, received_at FROM webhook_events WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(JobError::permanent(anyhow::anyhow!("webhook event {id} does not exist")));
    };
    let span = tracing::Span::current();
    if let Some(provider_id) = &ev.event_id {
        span.record("provider_event_id", provider_id.as_str());
    }
    if matches!(ev.status.as_str(), "processed" | "ignored" | "rejected") {
        // Already applied (a duplicate job, or a replay that raced): nothing to do.
        return Ok(());
    }
    let event_type = ev.event_type.unwrap_or_default();
    let event_at = ev.occurred_at.unwrap_or(ev.received_at);

    // A body that cannot be read fails the event like any other permanent error (below), so it
    // is `failed` on the event, not left `received`.
    let result = match serde_json::from_slice::<Value>(&ev.body) {
        Err(e) => Err(JobError::permanent(
            anyhow::anyhow!(e).context("the stored body is not readable JSON"),
        )),
        Ok(body) => match ev.provider.as_str() {
            "clerk" => {
                let frontend = ctx.config.frontend_app_url.to_string();
                apply_clerk(&mut tx, id, &event_type, &body, event_at, &frontend).await
            }
            "stripe" => apply_stripe(&mut tx, id, &event_type, &body).await,
            other => Err(JobError::permanent(anyhow::anyhow!(
                "unknown provider {other}"
            ))),
        },
    };
    match result {
        Ok(outcome) => {
            let refused;
            let (status, note, effects) = match &outcome {
                Outcome::Applied(effects) => {
                    if let Some((_, order, _)) = effects.iter().find(|(e, _, _)| *e == "order") {
                        span.record("order_id", tracing::field::display(order));
                    }
                    ("processed", None, effects.as_slice())
                }
                Outcome::Ignored(why) => ("ignored", Some(why.clone()), &[][..]),
                Outcome::Refused { order, reason } => {
                    span.record("order_id", tracing::field::display(order));
                    refused = [("order", *order, "payment_refused")];
                    ("failed", Some(reason.clone()), &refused[..])
                }
            };
            let entities: Vec<&str> = effects.iter().map(|(e, _, _)| *e).collect();
            let ids: Vec<Uuid> = effects.iter().map(|(_, i, _)| *i).collect();
            let actions: Vec<&str> = effects.iter().map(|(_, _, a)| *a).collect();
            // The effects and the event's new status in one statement.
            sqlx::query!(
                r#"
                WITH fx AS (
                    INSERT INTO webhook_event_effects (webhook_event_id, entity, entity_id, action)
                    SELECT $1, e, i, a FROM unnest($4::text[], $5::uuid[], $6::text[]) AS t(e, i, a)
                    ON CONFLICT DO NOTHING
                )
                UPDATE webhook_events SET status = $2, processed_at = now(), process_attempts = process_attempts + 1, last_error = $3
                WHERE id = $1
                "#,
                id,
                status,
                note,
                &entities as &[&str],
                &ids,
                &actions as &[&str],
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            if let Outcome::Refused { reason, .. } = outcome {
                tracing::warn!(event_id = %id, event_type, reason, "payment refused");
                // Failed for good: the job's error says why, as the event does.
                return Err(JobError::permanent(anyhow::anyhow!(
                    "payment refused: {reason}"
                )));
            }
            tracing::info!(event_id = %id, event_type, status, "webhook event applied");
            Ok(())
        }
        Err(err) => {
            tx.rollback().await?;
            // Visible on the event itself; the job retries (or stops, if permanent).
            sqlx::query!(
                "UPDATE webhook_events SET status = 'failed', process_attempts = process_attempts + 1, last_error = $2 WHERE id = $1",
                id,
                err.to_string()
            )
            .execute(&ctx.pool)
            .await?;
            Err(err)
        }
    }
}

fn s(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

async fn apply_clerk(
    conn: &mut PgConnection,
    event: Uuid,
    ty: &str,
    body: &Value,
    event_at: DateTime<Utc>,
    frontend: &str,
) -> Result<Outcome, JobError> {
    let data = &body["data"];
    match ty {
        "user.created" | "user.updated" => {
            let user_id = s(&data["id"])
                .ok_or_else(|| JobError::permanent(anyhow::anyhow!("{ty} without data.id")))?;
            let primary = s(&data["primary_email_address_id"]);
            let emails = data["email_addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let email = emails
                .iter()
                .find(|e| primary.is_some() && s(&e["id"]) == primary)
                .or_else(|| emails.first())
                .and_then(|e| s(&e["email_address"]))
                .map(str::to_string);
            let role = s(&data["public_metadata"]["role"])
                .filter(|r| matches!(*r, "buyer" | "seller" | "admin"));
            let id = sqlx::query_scalar!(
                r#"
                INSERT INTO profiles (clerk_user_id, email, first_name, last_name, role, last_event_at)
                VALUES ($1, $2, $3, $4, coalesce($5, 'buyer'), $6)
                ON CONFLICT (clerk_user_id) DO UPDATE SET
                    email = coalesce(EXCLUDED.email, profiles.email),
                    first_name = EXCLUDED.first_name,
                    last_name = EXCLUDED.last_name,
                    role = coalesce($5, profiles.role),
                    last_event_at = EXCLUDED.last_event_at
                WHERE profiles.last_event_at IS NULL OR profiles.last_event_at <= EXCLUDED.last_event_at
                RETURNING id
                "#,
                user_id,
                email,
                s(&data["first_name"]),
                s(&data["last_name"]),
                role,
                event_at
            )
            .fetch_optional(&mut *conn)
            .await?;
            Ok(match id {
                Some(id) => Outcome::Applied(vec![("profile", id, "upserted")]),
                None => Outcome::Ignored("older than the profile's last applied event".into()),
            })
        }
        "user.deleted" => {
            let user_id = s(&data["id"]).ok_or_else(|| {
                JobError::permanent(anyhow::anyhow!("user.deleted without data.id"))
            })?;
            let id = sqlx::query_scalar!(
                r#"
                UPDATE profiles SET deleted_at = coalesce(deleted_at, now()), last_event_at = $2
                WHERE clerk_user_id = $1 AND (last_event_at IS NULL OR last_event_at <= $2)
                RETURNING id
                "#,
                user_id,
                event_at
            )
            .fetch_optional(&mut *conn)
            .await?;
            Ok(match id {
                Some(id) => Outcome::Applied(vec![("profile", id, "soft_deleted")]),
                None => Outcome::Ignored("no such profile, or an older event".into()),
            })
        }
        t if t.starts_with("subscription.")
            || t.starts_with("subscriptionItem.")
            || t.starts_with("billing.subscription.") =>
        {
            let updates = subscriptions::updates_from_event(t, data)
                .map_err(|e| JobError::permanent(anyhow::anyhow!("{t}: {e}")))?;
            let mut effects = Vec::new();
            let mut users = std::collections::BTreeSet::new();
            for u in &updates {
                if subscriptions::upsert(conn, u, event_at).await? {
                    subscriptions::notify(conn, u, t, frontend).await?;
                    let sub_id = sqlx::query_scalar!(
                        "SELECT id FROM subscriptions WHERE provider = 'clerk' AND provider_subscription_id = $1",
                        u.provider_id
                    )
                    .fetch_one(&mut *conn)
                    .await?;
                    effects.push(("subscription", sub_id, "upserted"));
                }
                users.insert(u.clerk_user_id.clone());
            }
            // Sync even when this (late) event changed nothing: the sync reads the current
            // rows, so it is always right, and it is cheap.
            for user in users {
                queue::enqueue(conn, &SyncEntitlements::now(user)).await?;
            }
            if effects.is_empty() {
                return Ok(Outcome::Ignored(
                    "older than the subscription's last applied event".into(),
                ));
            }
            Ok(Outcome::Applied(effects))
        }
        "paymentAttempt.created" => Ok(Outcome::Ignored(
            "a payment attempt is not a payment; waiting for paymentAttempt.updated".into(),
        )),
        "paymentAttempt.updated" => pay_clerk_attempt(conn, event, data).await,
        other => Ok(Outcome::Ignored(format!(
            "event type `{other}` is not handled"
        ))),
    }
}

/// Clerk's billing period of a plan (`plan_period`) as a price's `billing_period`.
fn clerk_period(p: &str) -> Option<&'static str> {
    match p {
        "month" | "monthly" => Some("monthly"),
        "annual" | "year" | "yearly" => Some("yearly"),
        _ => None,
    }
}

/// A paid Clerk payment attempt pays the payer's order for its plan only when the order's price
/// is that plan at that period (a plan has a monthly and an annual fee under one id) and the
/// attempt's amount and currency are the order's. Anything else is refused, never fulfilled.
async fn pay_clerk_attempt(
    conn: &mut PgConnection,
    event: Uuid,
    data: &Value,
) -> Result<Outcome, JobError> {
    let status = s(&data["status"]).unwrap_or_default();
    if status != "paid" {
        return Ok(Outcome::Ignored(format!(
            "payment attempt status `{status}`"
        )));
    }
    let attempt_id = s(&data["id"])
        .or_else(|| s(&data["payment_id"]))
        .ok_or_else(|| JobError::permanent(anyhow::anyhow!("paymentAttempt without id")))?;
    let payer = s(&data["payer"]["user_id"])
        .or_else(|| s(&data["user_id"]))
        .ok_or_else(|| {
            JobError::permanent(anyhow::anyhow!("paymentAttempt without payer.user_id"))
        })?;
    // (plan id, its period as reported) for each item.
    let mut items: Vec<(String, Option<String>)> = data["subscription_items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let plan = s(&i["plan"]["id"]).or_else(|| s(&i["plan_id"]))?;
            Some((plan.to_string(), s(&i["plan_period"]).map(str::to_string)))
        })
        .collect();
    if let Some(plan) = s(&data["plan_id"]).or_else(|| s(&data["plan"]["id"])) {
        items.push((
            plan.to_string(),
            s(&data["plan_period"]).map(str::to_string),
        ));
    }
    let plans: Vec<String> = items.iter().map(|(p, _)| p.clone()).collect();
    // The payer's order for one of these plans (or Clerk prices): a pending one first, newest
    // first; with the plan and period of each of its prices.
    let order = sqlx::query!(
        r#"
        SELECT o.id, o.status, o.total_cents, o.currency,
               array_agg(coalesce(pr.clerk_plan_id, pr.clerk_price_id, '') ORDER BY oi.id) AS "plans!",
               array_agg(pr.billing_period ORDER BY oi.id) AS "periods!"
        FROM orders o
        JOIN profiles p ON p.id = o.customer_profile_id
        JOIN order_items oi ON oi.order_id = o.id
        JOIN prices pr ON pr.id = oi.price_id
        WHERE p.clerk_user_id = $1 AND o.status IN ('pending', 'paid', 'fulfilled')
          AND EXISTS (
              SELECT 1 FROM order_items oi2 JOIN prices pr2 ON pr2.id = oi2.price_id
              WHERE oi2.order_id = o.id AND (pr2.clerk_plan_id = ANY($2) OR pr2.clerk_price_id = ANY($2))
          )
        GROUP BY o.id
        ORDER BY (o.status = 'pending') DESC, o.created_at DESC
        LIMIT 1
        "#,
        payer,
        &plans
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(order) = order else {
        return Ok(Outcome::Ignored(format!(
            "no order of {payer} matches plans {plans:?}"
        )));
    };
    let what = format!("Clerk payment attempt {attempt_id}");
    let refuse = |why: String| Ok(Outcome::refused(order.id, &what, why));
    // Every price of the order is matched by an item of the attempt at the same period.
    for (plan, period) in order.plans.iter().zip(&order.periods) {
        let Some((_, reported)) = items.iter().find(|(p, _)| p == plan) else {
            return refuse(format!(
                "pays plans {plans:?}, but the order also holds plan {plan:?}"
            ));
        };
        let Some(reported) = reported else {
            return refuse(format!(
                "`plan_period` of plan {plan:?} is missing; the order's price is {period}"
            ));
        };
        if clerk_period(reported) != Some(period.as_str()) {
            return refuse(format!(
                "plan {plan:?} paid for period {reported:?}, but the order's price is {period}"
            ));
        }
    }
    // The total charged: `totals.grand_total` (Clerk's shape), or an `amount` object.
    let (amount_at, currency_at) = if data.pointer("/totals/grand_total").is_some() {
        ("/totals/grand_total/amount", "/totals/grand_total/currency")
    } else {
        ("/amount/amount", "/amount/currency")
    };
    let paid = match reported::money(data, amount_at, currency_at) {
        Ok(m) => m,
        Err(e) => return refuse(e),
    };
    if paid.amount_cents != order.total_cents || paid.currency != order.currency {
        return refuse(format!(
            "paid {paid} for an order of {} {}",
            order.total_cents, order.currency
        ));
    }
    // A recurring charge on an order already paid is the plan's renewal, not a second payment.
    let renewal = s(&data["charge_type"]) == Some("recurring") && order.status != "pending";
    let outcome = orders::record_payment(
        conn,
        order.id,
        &Payment {
            provider: "clerk",
            provider_payment_id: attempt_id,
            kind: "payment",
            amount_cents: paid.amount_cents,
            currency: &paid.currency,
            webhook_event_id: Some(event),
            raw: data.clone(),
        },
        renewal,
    )
    .await?;
    Ok(Outcome::Applied(vec![(
        "order",
        order.id,
        outcome.action(),
    )]))
}

/// The order a Stripe object points at: `client_reference_id` or `metadata.order_id` (an order's
/// public id or uuid), or a payment already recorded for its payment intent.
async fn stripe_order(
    conn: &mut PgConnection,
    obj: &Value,
) -> sqlx::Result<Option<(Uuid, i64, String)>> {
    let reference = s(&obj["client_reference_id"]).or_else(|| s(&obj["metadata"]["order_id"]));
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
    let intent = s(&obj["payment_intent"]).or_else(|| s(&obj["charge"]));
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
    (order_id, total, currency): (Uuid, i64, String),
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
            provider: "stripe",
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

async fn apply_stripe(
    conn: &mut PgConnection,
    event: Uuid,
    ty: &str,
    body: &Value,
) -> Result<Outcome, JobError> {
    let obj = &body["data"]["object"];
    match ty {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let session_id = s(&obj["id"]).ok_or_else(|| {
                JobError::permanent(anyhow::anyhow!("checkout session without id"))
            })?;
            let payment_status = obj["payment_status"].as_str();
            if ty == "checkout.session.completed" && payment_status == Some("unpaid") {
                return Ok(Outcome::Ignored("checkout completed but unpaid (delayed payment method); waiting for async_payment_succeeded".into()));
            }
            let Some(order) = stripe_order(conn, obj).await? else {
                // Permanent: retrying cannot find an order that the session does not name. The
                // event stays `failed` for the operator.
                return Err(JobError::permanent(anyhow::anyhow!(
                    "checkout session {session_id} names no known order (client_reference_id / metadata.order_id)"
                )));
            };
            // Only a session that took money pays: `payment_status: "paid"` in a mode that
            // charges. A setup session, or one with nothing to pay, proves no payment.
            let mode = obj["mode"].as_str();
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
            let payment_id = s(&obj["payment_intent"]).unwrap_or(session_id);
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
        "payment_intent.succeeded" => {
            let intent_id = s(&obj["id"])
                .ok_or_else(|| JobError::permanent(anyhow::anyhow!("payment intent without id")))?;
            if s(&obj["metadata"]["order_id"]).is_none() {
                return Ok(Outcome::Ignored(format!(
                    "payment intent {intent_id} names no order (metadata.order_id); its checkout session pays the order"
                )));
            }
            let Some(order) = stripe_order(conn, obj).await? else {
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
        "payment_intent.payment_failed" => {
            let Some((order_id, ..)) = stripe_order(conn, obj).await? else {
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
        "checkout.session.expired" => {
            let session_id = s(&obj["id"]).ok_or_else(|| {
                JobError::permanent(anyhow::anyhow!("checkout session without id"))
            })?;
            let Some((order_id, ..)) = stripe_order(conn, obj).await? else {
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
        "checkout.session.async_payment_failed" => {
            let Some((order_id, ..)) = stripe_order(conn, obj).await? else {
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
        "charge.refunded" => refund_charge(conn, event, obj).await,
        "charge.dispute.created" => {
            let dispute_id = s(&obj["id"]).ok_or_else(|| {
                JobError::permanent(anyhow::anyhow!("charge.dispute.created without id"))
            })?;
            let Some((order_id, ..)) = stripe_order(conn, obj).await? else {
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
                    provider: "stripe",
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
        other => Ok(Outcome::Ignored(format!(
            "event type `{other}` is not handled"
        ))),
    }
}

/// `charge.refunded`: Stripe reports the charge's cumulative `amount_refunded` each time part of
/// it is refunded. Each report records the part not yet recorded as its own refund row (keyed by
/// the charge and the cumulative amount, so a repeat of the same report records nothing), so the
/// rows add up to what Stripe says, whatever order the reports arrive in. The order's row is
/// locked first: two reports applied at once cannot both count the same part.
async fn refund_charge(
    conn: &mut PgConnection,
    event: Uuid,
    obj: &Value,
) -> Result<Outcome, JobError> {
    let charge_id = s(&obj["id"])
        .ok_or_else(|| JobError::permanent(anyhow::anyhow!("charge.refunded without id")))?;
    let Some((order_id, ..)) = stripe_order(conn, obj).await? else {
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
    let Some(full) = obj["refunded"].as_bool() else {
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
            provider: "stripe",
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
