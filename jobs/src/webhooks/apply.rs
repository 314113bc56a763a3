//! `process_webhook_event`: apply one stored event, convergently. Duplicates, replays and any
//! delivery order end in the same rows: every write is an upsert keyed by the provider's ids,
//! subscription rows ignore events older than the last one applied, and payments are unique.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::ingest::ProcessWebhookEvent;
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
    let body: Value = serde_json::from_slice(&ev.body)
        .map_err(|e| JobError::permanent(anyhow::anyhow!(e).context("stored body is not JSON")))?;
    let event_type = ev.event_type.unwrap_or_default();
    let event_at = ev.occurred_at.unwrap_or(ev.received_at);

    let result = match ev.provider.as_str() {
        "clerk" => {
            let frontend = ctx.config.frontend_app_url.to_string();
            apply_clerk(&mut tx, id, &event_type, &body, event_at, &frontend).await
        }
        "stripe" => apply_stripe(&mut tx, id, &event_type, &body).await,
        other => Err(JobError::permanent(anyhow::anyhow!(
            "unknown provider {other}"
        ))),
    };
    match result {
        Ok(outcome) => {
            let (status, note, effects) = match &outcome {
                Outcome::Applied(effects) => {
                    if let Some((_, order, _)) = effects.iter().find(|(e, _, _)| *e == "order") {
                        span.record("order_id", tracing::field::display(order));
                    }
                    ("processed", None, effects.as_slice())
                }
                Outcome::Ignored(why) => ("ignored", Some(why.clone()), &[][..]),
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
        "paymentAttempt.updated" => {
            let status = s(&data["status"]).unwrap_or_default();
            if status != "paid" {
                return Ok(Outcome::Ignored(format!(
                    "payment attempt status `{status}`"
                )));
            }
            let attempt_id = s(&data["id"])
                .ok_or_else(|| JobError::permanent(anyhow::anyhow!("paymentAttempt without id")))?;
            let payer = s(&data["payer"]["user_id"])
                .or_else(|| s(&data["user_id"]))
                .ok_or_else(|| {
                    JobError::permanent(anyhow::anyhow!("paymentAttempt without payer.user_id"))
                })?;
            let mut plans: Vec<String> = data["subscription_items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    s(&i["plan"]["id"])
                        .or_else(|| s(&i["plan_id"]))
                        .map(str::to_string)
                })
                .collect();
            plans.extend(
                s(&data["plan_id"])
                    .or_else(|| s(&data["plan"]["id"]))
                    .map(str::to_string),
            );
            // The pending order of this payer for one of these plans (or Clerk prices), newest first.
            let order = sqlx::query!(
                r#"
                SELECT o.id, o.total_cents, o.currency FROM orders o
                JOIN profiles p ON p.id = o.customer_profile_id
                WHERE p.clerk_user_id = $1 AND o.status IN ('pending', 'paid', 'fulfilled')
                  AND EXISTS (
                      SELECT 1 FROM order_items oi JOIN prices pr ON pr.id = oi.price_id
                      WHERE oi.order_id = o.id AND (pr.clerk_plan_id = ANY($2) OR pr.clerk_price_id = ANY($2))
                  )
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
            let amount = data["amount"]["amount"]
                .as_i64()
                .or_else(|| data["totals"]["grand_total"]["amount"].as_i64())
                .unwrap_or(order.total_cents);
            let currency = s(&data["amount"]["currency"])
                .map(str::to_ascii_uppercase)
                .unwrap_or(order.currency.clone());
            let paid = orders::record_payment(
                conn,
                order.id,
                &Payment {
                    provider: "clerk",
                    provider_payment_id: attempt_id,
                    kind: "payment",
                    amount_cents: amount,
                    currency: &currency,
                    webhook_event_id: Some(event),
                    raw: data.clone(),
                },
            )
            .await?;
            Ok(Outcome::Applied(vec![(
                "order",
                order.id,
                if paid == orders::PaidOutcome::NewlyPaid {
                    "paid"
                } else {
                    "payment_recorded"
                },
            )]))
        }
        other => Ok(Outcome::Ignored(format!(
            "event type `{other}` is not handled"
        ))),
    }
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
/// amount and currency must be the order's (a mismatch is left failed for a human, never
/// fulfilled). One payment per provider id: a repeat records nothing and pays nothing.
async fn pay_stripe(
    conn: &mut PgConnection,
    event: Uuid,
    (order_id, total, currency): (Uuid, i64, String),
    obj: &Value,
    payment_id: &str,
    amount: Option<i64>,
    what: &str,
) -> Result<Outcome, JobError> {
    let amount = amount.unwrap_or(total);
    let paid_currency = s(&obj["currency"])
        .map(str::to_ascii_uppercase)
        .unwrap_or(currency.clone());
    if amount != total || paid_currency != currency {
        return Err(JobError::permanent(anyhow::anyhow!(
            "{what} paid {amount} {paid_currency} for an order of {total} {currency}; not fulfilling, check it by hand"
        )));
    }
    let paid = orders::record_payment(
        conn,
        order_id,
        &Payment {
            provider: "stripe",
            provider_payment_id: payment_id,
            kind: "payment",
            amount_cents: amount,
            currency: &paid_currency,
            webhook_event_id: Some(event),
            raw: obj.clone(),
        },
    )
    .await?;
    Ok(Outcome::Applied(vec![(
        "order",
        order_id,
        if paid == orders::PaidOutcome::NewlyPaid {
            "paid"
        } else {
            "payment_recorded"
        },
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
            let payment_status = s(&obj["payment_status"]).unwrap_or("paid");
            if ty == "checkout.session.completed" && payment_status == "unpaid" {
                return Ok(Outcome::Ignored("checkout completed but unpaid (delayed payment method); waiting for async_payment_succeeded".into()));
            }
            let session_id = s(&obj["id"]).ok_or_else(|| {
                JobError::permanent(anyhow::anyhow!("checkout session without id"))
            })?;
            let Some(order) = stripe_order(conn, obj).await? else {
                // Permanent: retrying cannot find an order that the session does not name. The
                // event stays `failed` for the operator.
                return Err(JobError::permanent(anyhow::anyhow!(
                    "checkout session {session_id} names no known order (client_reference_id / metadata.order_id)"
                )));
            };
            // The payment is the session's payment intent when it has one, so the session and
            // its `payment_intent.succeeded` record one payment between them.
            let payment_id = s(&obj["payment_intent"]).unwrap_or(session_id);
            let amount = obj["amount_total"].as_i64();
            pay_stripe(
                conn,
                event,
                order,
                obj,
                payment_id,
                amount,
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
            let amount = obj["amount_received"].as_i64().or(obj["amount"].as_i64());
            pay_stripe(
                conn,
                event,
                order,
                obj,
                intent_id,
                amount,
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
        "charge.refunded" | "charge.dispute.created" => {
            let kind = if ty == "charge.refunded" {
                "refund"
            } else {
                "dispute"
            };
            let object_id = s(&obj["id"])
                .ok_or_else(|| JobError::permanent(anyhow::anyhow!("{ty} without id")))?;
            let Some((order_id, total, currency)) = stripe_order(conn, obj).await? else {
                return Err(JobError::Retry(anyhow::anyhow!(
                    "{ty} {object_id}: no order found yet for its payment intent (the payment event may not be applied yet)"
                )));
            };
            let amount = if kind == "refund" {
                obj["amount_refunded"].as_i64()
            } else {
                obj["amount"].as_i64()
            }
            .unwrap_or(total);
            let full = kind == "dispute" || obj["refunded"].as_bool().unwrap_or(amount >= total);
            let cur = s(&obj["currency"])
                .map(str::to_ascii_uppercase)
                .unwrap_or(currency);
            orders::record_reversal(
                conn,
                order_id,
                &Payment {
                    provider: "stripe",
                    provider_payment_id: object_id,
                    kind,
                    amount_cents: amount,
                    currency: &cur,
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
                    if kind == "refund" {
                        "refunded"
                    } else {
                        "disputed"
                    }
                } else {
                    "partially_refunded"
                },
            )]))
        }
        other => Ok(Outcome::Ignored(format!(
            "event type `{other}` is not handled"
        ))),
    }
}
