//! Clerk's events (Svix-signed): users become profiles, Clerk Billing's subscriptions become
//! subscription rows (and an entitlement sync), and a paid payment attempt pays the payer's
//! order for its plan, after the money checks.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::apply::Outcome;
use crate::{
    billing::subscriptions::{self, SyncEntitlements},
    model::{OrderStatus, Role},
    orders::{self, Payment},
    profiles::{self, ProfileFacts},
    providers::{
        Provider,
        events::{ClerkPaymentAttempt, ClerkUser},
        reported,
    },
    queue::{self, JobError},
};

/// Applies one Clerk event.
pub(super) async fn apply(
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
            upsert_user(conn, ty, &ClerkUser::of(body), event_at).await
        }
        "user.deleted" => delete_user(conn, &ClerkUser::of(body), event_at).await,
        t if t.starts_with("subscription.")
            || t.starts_with("subscriptionItem.")
            || t.starts_with("billing.subscription.") =>
        {
            apply_subscription(conn, t, data, event_at, frontend).await
        }
        "paymentAttempt.created" => Ok(Outcome::Ignored(
            "a payment attempt is not a payment; waiting for paymentAttempt.updated".into(),
        )),
        "paymentAttempt.updated" => {
            pay_attempt(conn, event, &ClerkPaymentAttempt::of(body), data).await
        }
        other => Ok(Outcome::Ignored(format!(
            "event type `{other}` is not handled"
        ))),
    }
}

/// `user.created` / `user.updated`: the profile, unless a later event was applied already.
async fn upsert_user(
    conn: &mut PgConnection,
    ty: &str,
    user: &ClerkUser,
    event_at: DateTime<Utc>,
) -> Result<Outcome, JobError> {
    let user_id = required_id(user, ty)?;
    let facts = ProfileFacts {
        clerk_user_id: user_id,
        email: user.email(),
        first_name: user.first_name.get(),
        last_name: user.last_name.get(),
        role: user.role().and_then(Role::parse),
        event_at: Some(event_at),
        ..ProfileFacts::default()
    };
    let id = profiles::upsert(&mut *conn, &facts).await?.map(|p| p.id);
    Ok(match id {
        Some(id) => Outcome::Applied(vec![("profile", id, "upserted")]),
        None => Outcome::Ignored("older than the profile's last applied event".into()),
    })
}

/// The user's id, which a `ty` event cannot be applied without.
fn required_id<'a>(user: &'a ClerkUser, ty: &str) -> Result<&'a str, JobError> {
    user.id
        .get()
        .ok_or_else(|| JobError::permanent(anyhow::anyhow!("{ty} without data.id")))
}

/// `user.deleted`: the profile is soft-deleted, unless a later event was applied already.
async fn delete_user(
    conn: &mut PgConnection,
    user: &ClerkUser,
    event_at: DateTime<Utc>,
) -> Result<Outcome, JobError> {
    let user_id = required_id(user, "user.deleted")?;
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

/// A subscription event: each subscription it carries is upserted (older events change
/// nothing), its owner told, and every user it names gets an entitlement sync.
async fn apply_subscription(
    conn: &mut PgConnection,
    t: &str,
    data: &Value,
    event_at: DateTime<Utc>,
    frontend: &str,
) -> Result<Outcome, JobError> {
    let updates = subscriptions::updates_from_event(t, data)
        .map_err(|e| JobError::permanent(anyhow::anyhow!("{t}: {e}")))?;
    let mut effects = Vec::new();
    let mut users = BTreeSet::new();
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

/// Clerk's billing period of a plan (`plan_period`) as a price's `billing_period`.
fn clerk_period(p: &str) -> Option<&'static str> {
    match p {
        "month" | "monthly" => Some("monthly"),
        "annual" | "year" | "yearly" => Some("yearly"),
        _ => None,
    }
}

/// Every price of the order (its plan and billing period) is matched by an item of the attempt
/// at the same period; otherwise, why not.
fn check_plans(
    order_plans: &[String],
    order_periods: &[String],
    items: &[(String, Option<String>)],
    plans: &[String],
) -> Result<(), String> {
    for (plan, period) in order_plans.iter().zip(order_periods) {
        let Some((_, reported)) = items.iter().find(|(p, _)| p == plan) else {
            return Err(format!(
                "pays plans {plans:?}, but the order also holds plan {plan:?}"
            ));
        };
        let Some(reported) = reported else {
            return Err(format!(
                "`plan_period` of plan {plan:?} is missing; the order's price is {period}"
            ));
        };
        if clerk_period(reported) != Some(period.as_str()) {
            return Err(format!(
                "plan {plan:?} paid for period {reported:?}, but the order's price is {period}"
            ));
        }
    }
    Ok(())
}

/// The total an attempt charged: `totals.grand_total` (Clerk's shape), or an `amount` object.
fn attempt_total(data: &Value) -> Result<reported::Money, String> {
    let (amount_at, currency_at) = if data.pointer("/totals/grand_total").is_some() {
        ("/totals/grand_total/amount", "/totals/grand_total/currency")
    } else {
        ("/amount/amount", "/amount/currency")
    };
    reported::money(data, amount_at, currency_at)
}

/// The payer's order for one of these plans (or Clerk prices): a pending one first, newest
/// first; with the plan and period of each of its prices.
async fn payer_order(
    conn: &mut PgConnection,
    payer: &str,
    plans: &[String],
) -> sqlx::Result<Option<PayerOrder>> {
    sqlx::query_as!(
        PayerOrder,
        r#"
        SELECT o.id, o.status AS "status: OrderStatus", o.total_cents, o.currency,
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
        plans
    )
    .fetch_optional(&mut *conn)
    .await
}

/// An order a Clerk payment attempt may pay.
struct PayerOrder {
    id: Uuid,
    status: OrderStatus,
    total_cents: i64,
    currency: String,
    /// Each item's Clerk plan (or price) id.
    plans: Vec<String>,
    /// Each item's billing period.
    periods: Vec<String>,
}

/// A paid Clerk payment attempt pays the payer's order for its plan only when the order's price
/// is that plan at that period (a plan has a monthly and an annual fee under one id) and the
/// attempt's amount and currency are the order's. Anything else is refused, never fulfilled.
async fn pay_attempt(
    conn: &mut PgConnection,
    event: Uuid,
    attempt: &ClerkPaymentAttempt,
    data: &Value,
) -> Result<Outcome, JobError> {
    let status = attempt.status.get().unwrap_or_default();
    if status != "paid" {
        return Ok(Outcome::Ignored(format!(
            "payment attempt status `{status}`"
        )));
    }
    let attempt_id = attempt
        .attempt_id()
        .ok_or_else(|| JobError::permanent(anyhow::anyhow!("paymentAttempt without id")))?;
    let payer = attempt.payer().ok_or_else(|| {
        JobError::permanent(anyhow::anyhow!("paymentAttempt without payer.user_id"))
    })?;
    let items = attempt.items();
    let plans: Vec<String> = items.iter().map(|(p, _)| p.clone()).collect();
    let order = payer_order(conn, payer, &plans).await?;
    let Some(order) = order else {
        return Ok(Outcome::Ignored(format!(
            "no order of {payer} matches plans {plans:?}"
        )));
    };
    let what = format!("Clerk payment attempt {attempt_id}");
    let refuse = |why: String| Ok(Outcome::refused(order.id, &what, why));
    if let Err(why) = check_plans(&order.plans, &order.periods, &items, &plans) {
        return refuse(why);
    }
    let paid = match attempt_total(data) {
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
    let renewal =
        attempt.charge_type.get() == Some("recurring") && order.status != OrderStatus::Pending;
    let outcome = orders::record_payment(
        conn,
        order.id,
        &Payment {
            provider: Provider::Clerk.as_str(),
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
