//! Credits: packs bought with a payment, plan allowances per billing period, consumption, and
//! refunds, as one ledger (`credit_entries`) with a balance per user and unit
//! (`credit_balances`).
//!
//! - Every change is an entry with a unique idempotency key, written in the same statement as
//!   the balance change, so a retried job, a duplicate webhook or a repeated request changes
//!   nothing twice.
//! - Consumption never takes a balance below zero: the debit is a conditional UPDATE, so
//!   concurrent debits serialise on the balance row and each re-checks what the previous one
//!   left.
//! - A plan's allowance is reset once per billing period (keyed by item and period start; an
//!   older period never resets a newer one). Consumption spends the allowance first, because it
//!   lapses; a refund takes back packs only, floors at zero, and records the shortfall.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    error::{DomainError, DomainResult, Fields},
    platform::audit::Actor,
};

/// What a product grants: per unit bought (a pack), or per billing period (a subscription
/// plan's allowance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreditGrant {
    /// `tokens`, `images`, ... (lower case, `[a-z0-9_.:-]`, at most 64).
    pub unit: String,
    /// How many, 1 to 10^12.
    pub amount: i64,
}

/// A credit unit: lower case letters, digits and `_ . : -`, 1 to 64 characters.
pub fn is_unit(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
}

const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Checks a product's `credit_grants` (units lower-cased first): valid units, positive
/// amounts, one grant per unit.
pub fn check_grants(grants: &mut [CreditGrant], f: &mut Fields) {
    for g in grants.iter_mut() {
        g.unit = g.unit.trim().to_lowercase();
    }
    f.check(
        grants
            .iter()
            .all(|g| is_unit(&g.unit) && (1..=MAX_AMOUNT).contains(&g.amount)),
        "credit_grants",
        "each grant is {unit: lower-case letters, digits and _ . : - (at most 64), amount: 1 to 10^12}",
    );
    let mut units: Vec<&str> = grants.iter().map(|g| g.unit.as_str()).collect();
    units.sort_unstable();
    units.dedup();
    f.check(
        units.len() == grants.len(),
        "credit_grants",
        "one grant per unit",
    );
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Adds the packs of a paid order's items (products that are not subscription plans), in the
/// fulfillment transaction: one entry per item and unit, keyed by the order item, so a retried
/// job adds nothing. Returns what was added now, per unit.
pub async fn grant_order_packs(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"
        WITH g AS (
            SELECT o.customer_profile_id AS profile_id, o.id AS order_id, oi.id AS item_id,
                   lower(cg->>'unit') AS unit, (cg->>'amount')::bigint * oi.quantity AS amount,
                   'order_item:' || oi.id || ':' || lower(cg->>'unit') AS key
            FROM orders o
            JOIN order_items oi ON oi.order_id = o.id
            JOIN products p ON p.id = oi.product_id
            CROSS JOIN LATERAL jsonb_array_elements(p.credit_grants) cg
            WHERE o.id = $1 AND p.product_type <> 'subscription'
        ),
        new AS (
            SELECT * FROM g WHERE NOT EXISTS (SELECT 1 FROM credit_entries e WHERE e.idempotency_key = g.key)
        ),
        bal AS (
            INSERT INTO credit_balances (profile_id, unit, balance)
            SELECT profile_id, unit, sum(amount) FROM new GROUP BY profile_id, unit
            ON CONFLICT (profile_id, unit) DO UPDATE SET balance = credit_balances.balance + EXCLUDED.balance
            RETURNING profile_id, unit, balance
        )
        INSERT INTO credit_entries (profile_id, unit, amount, balance_after, reason, source_type, source_id, order_id, idempotency_key)
        SELECT new.profile_id, new.unit, new.amount, bal.balance, 'pack purchased', 'order_item', new.item_id::text,
               new.order_id, new.key
        FROM new JOIN bal ON bal.profile_id = new.profile_id AND bal.unit = new.unit
        RETURNING unit, amount
        "#,
        order_id
    )
    .fetch_all(conn)
    .await?;
    let mut out: Vec<(String, i64)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(u, _)| *u == r.unit) {
            Some((_, a)) => *a += r.amount,
            None => out.push((r.unit, r.amount)),
        }
    }
    Ok(out)
}

/// The balance row of a user and unit, created empty if missing, locked for this transaction.
struct Locked {
    balance: i64,
    allowance_remaining: i64,
    allowance_period_start: Option<DateTime<Utc>>,
}

async fn lock(conn: &mut PgConnection, profile_id: Uuid, unit: &str) -> sqlx::Result<Locked> {
    sqlx::query!(
        "INSERT INTO credit_balances (profile_id, unit) VALUES ($1, $2) ON CONFLICT (profile_id, unit) DO NOTHING",
        profile_id,
        unit
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as!(
        Locked,
        "SELECT balance, allowance_remaining, allowance_period_start FROM credit_balances WHERE profile_id = $1 AND unit = $2 FOR UPDATE",
        profile_id,
        unit
    )
    .fetch_one(conn)
    .await
}

/// One entry to write against a locked balance row.
struct Entry<'a> {
    profile_id: Uuid,
    unit: &'a str,
    amount: i64,
    reason: &'a str,
    source_type: &'a str,
    source_id: &'a str,
    shortfall: i64,
    order_id: Option<Uuid>,
    key: &'a str,
}

/// The balance row after an entry.
struct After {
    balance: i64,
    allowance: Option<i64>,
    allowance_remaining: i64,
    allowance_period_start: Option<DateTime<Utc>>,
}

/// Writes the entry and the new balance in one statement; nothing when the key exists.
/// The caller holds the row lock. Returns whether it wrote.
async fn write(conn: &mut PgConnection, e: &Entry<'_>, after: &After) -> sqlx::Result<bool> {
    let done = sqlx::query_scalar!(
        r#"
        WITH e AS (
            INSERT INTO credit_entries (profile_id, unit, amount, balance_after, reason, source_type, source_id, shortfall, order_id, idempotency_key)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
        )
        UPDATE credit_balances SET balance = $4, allowance = coalesce($11, allowance), allowance_remaining = $12,
               allowance_period_start = coalesce($13, allowance_period_start)
        WHERE profile_id = $1 AND unit = $2 AND EXISTS (SELECT 1 FROM e)
        RETURNING true AS "done!"
        "#,
        e.profile_id,
        e.unit,
        e.amount,
        after.balance,
        e.reason,
        e.source_type,
        e.source_id,
        e.shortfall,
        e.order_id,
        e.key,
        after.allowance,
        after.allowance_remaining,
        after.allowance_period_start,
    )
    .fetch_optional(conn)
    .await?;
    Ok(done.is_some())
}

/// Resets the plan allowances of a user's live subscription items (active, past due, in a
/// trial) to their plan's `credit_grants` for the current period: once per item and period
/// start, and never back to an older period. Runs in `sync_entitlements`, which every
/// subscription change enqueues, so duplicate and out-of-order events converge. Returns how
/// many allowances were reset.
pub async fn reset_allowances(
    conn: &mut PgConnection,
    profile_id: Uuid,
    clerk_user_id: &str,
) -> sqlx::Result<u64> {
    let due = sqlx::query!(
        r#"
        SELECT DISTINCT ON (lower(cg->>'unit')) s.provider_subscription_id AS item,
               s.current_period_start AS "period!", lower(cg->>'unit') AS "unit!", (cg->>'amount')::bigint AS "amount!"
        FROM subscriptions s
        JOIN prices pr ON pr.id = s.price_id
        JOIN products p ON p.id = pr.product_id
        CROSS JOIN LATERAL jsonb_array_elements(p.credit_grants) cg
        WHERE s.clerk_user_id = $1 AND s.kind = 'item' AND s.status IN ('active', 'past_due', 'free_trial')
          AND s.current_period_start IS NOT NULL AND s.current_period_start <= now()
        ORDER BY lower(cg->>'unit'), s.current_period_start DESC
        "#,
        clerk_user_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut reset = 0;
    for d in due {
        let b = lock(conn, profile_id, &d.unit).await?;
        if b.allowance_period_start.is_some_and(|p| p >= d.period) {
            continue;
        }
        // The new period's allowance replaces what was left of the old one; packs stay.
        let balance = b.balance - b.allowance_remaining + d.amount;
        let key = format!(
            "subscription_period:{}:{}:{}",
            d.item,
            d.period.timestamp(),
            d.unit
        );
        let reason = format!(
            "plan allowance for the period from {}",
            d.period.format("%Y-%m-%d")
        );
        let wrote = write(
            conn,
            &Entry {
                profile_id,
                unit: &d.unit,
                amount: balance - b.balance,
                reason: &reason,
                source_type: "subscription_period",
                source_id: &d.item,
                shortfall: 0,
                order_id: None,
                key: &key,
            },
            &After {
                balance,
                allowance: Some(d.amount),
                allowance_remaining: d.amount,
                allowance_period_start: Some(d.period),
            },
        )
        .await?;
        reset += u64::from(wrote);
    }
    Ok(reset)
}

/// Takes back what a refunded or disputed order's packs added (in `revoke_source`): the unspent
/// part of each pack, flooring the balance at zero, with the spent part recorded as the entry's
/// shortfall. Idempotent per item and unit. Returns the total shortfall.
pub async fn revoke_order_packs(
    conn: &mut PgConnection,
    order_id: Uuid,
    reason: &str,
) -> sqlx::Result<i64> {
    let packs = sqlx::query!(
        r#"SELECT profile_id, unit, amount, source_id FROM credit_entries
           WHERE order_id = $1 AND source_type = 'order_item' AND amount > 0 ORDER BY id"#,
        order_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut shortfall = 0;
    for p in packs {
        let b = lock(conn, p.profile_id, &p.unit).await?;
        let packs_left = b.balance - b.allowance_remaining;
        let take = p.amount.min(packs_left).max(0);
        let short = p.amount - take;
        let key = format!("refund:{}:{}", p.source_id, p.unit);
        let wrote = write(
            conn,
            &Entry {
                profile_id: p.profile_id,
                unit: &p.unit,
                amount: -take,
                reason,
                source_type: "refund",
                source_id: &p.source_id,
                shortfall: short,
                order_id: Some(order_id),
                key: &key,
            },
            &After {
                balance: b.balance - take,
                allowance: None,
                allowance_remaining: b.allowance_remaining,
                allowance_period_start: None,
            },
        )
        .await?;
        if wrote {
            shortfall += short;
            if short > 0 {
                tracing::warn!(%order_id, unit = %p.unit, shortfall = short, "refunded credits were already spent");
            }
        }
    }
    Ok(shortfall)
}

/// A successful consumption.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Consumed {
    /// Unit.
    pub unit: String,
    /// Debited.
    pub consumed: i64,
    /// The balance after this debit.
    pub balance: i64,
    /// The ledger entry.
    pub entry_id: i64,
    /// True when this key was used before: the first result, nothing debited now.
    pub replayed: bool,
}

/// Why a consumption was refused.
#[derive(Debug)]
pub enum ConsumeError {
    /// Not enough credits; nothing changed.
    Insufficient {
        /// The balance now.
        balance: i64,
    },
    /// Anything else.
    Domain(DomainError),
}

impl From<sqlx::Error> for ConsumeError {
    fn from(e: sqlx::Error) -> Self {
        Self::Domain(e.into())
    }
}

/// `POST /api/account/credits/consume/` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct ConsumeInput {
    /// Unit.
    pub unit: String,
    /// 1 to 10^12.
    #[schema(minimum = 1, maximum = 1e12)]
    pub amount: i64,
    /// The caller's key for this debit: a repeat answers the first result.
    pub idempotency_key: String,
    /// With the service token: the Clerk user id to debit.
    pub user: Option<String>,
}

/// Debits `amount` of `unit`, unless the balance is short (then nothing changes). A repeated
/// key answers the first successful result and debits nothing. Retries of one key are
/// serialised by an advisory lock; different keys serialise on the balance row.
pub async fn consume(
    pool: &PgPool,
    profile_id: Uuid,
    b: &ConsumeInput,
) -> Result<Consumed, ConsumeError> {
    let unit = b.unit.trim().to_lowercase();
    let mut f = Fields::new();
    f.check(
        is_unit(&unit),
        "unit",
        "lower-case letters, digits and _ . : - (at most 64)",
    );
    f.check((1..=MAX_AMOUNT).contains(&b.amount), "amount", "1 to 10^12");
    f.check(
        !b.idempotency_key.trim().is_empty() && b.idempotency_key.len() <= 200,
        "idempotency_key",
        "1 to 200 characters",
    );
    f.finish().map_err(ConsumeError::Domain)?;
    let key = format!("consume:{profile_id}:{}", b.idempotency_key.trim());
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
        .execute(&mut *tx)
        .await?;
    if let Some(e) = sqlx::query!(
        "SELECT id, unit, amount, balance_after FROM credit_entries WHERE idempotency_key = $1",
        key
    )
    .fetch_optional(&mut *tx)
    .await?
    {
        return Ok(Consumed {
            unit: e.unit,
            consumed: -e.amount,
            balance: e.balance_after,
            entry_id: e.id,
            replayed: true,
        });
    }
    let debited = sqlx::query!(
        r#"
        WITH d AS (
            UPDATE credit_balances SET balance = balance - $3, allowance_remaining = greatest(allowance_remaining - $3, 0)
            WHERE profile_id = $1 AND unit = $2 AND balance >= $3
            RETURNING balance
        )
        INSERT INTO credit_entries (profile_id, unit, amount, balance_after, reason, source_type, source_id, idempotency_key)
        SELECT $1, $2, -$3, d.balance, 'consumed', 'consumption', $4, $5 FROM d
        RETURNING id, balance_after
        "#,
        profile_id,
        unit,
        b.amount,
        b.idempotency_key.trim(),
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(d) = debited else {
        let balance = balance_of(&mut *tx, profile_id, &unit).await?;
        return Err(ConsumeError::Insufficient { balance });
    };
    tx.commit().await?;
    Ok(Consumed {
        unit,
        consumed: b.amount,
        balance: d.balance_after,
        entry_id: d.id,
        replayed: false,
    })
}

/// The profile of a Clerk user (for the service token, which names the user).
pub async fn profile_of(db: impl PgExecutor<'_>, clerk_user_id: &str) -> DomainResult<Uuid> {
    sqlx::query_scalar!(
        "SELECT id FROM profiles WHERE clerk_user_id = $1 AND deleted_at IS NULL",
        clerk_user_id
    )
    .fetch_optional(db)
    .await?
    .ok_or(DomainError::NotFound)
}

async fn balance_of(db: impl PgExecutor<'_>, profile_id: Uuid, unit: &str) -> sqlx::Result<i64> {
    Ok(sqlx::query_scalar!(
        "SELECT balance FROM credit_balances WHERE profile_id = $1 AND unit = $2",
        profile_id,
        unit
    )
    .fetch_optional(db)
    .await?
    .unwrap_or(0))
}

/// A balance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BalanceOut {
    /// Unit.
    pub unit: String,
    /// Spendable now.
    pub balance: i64,
    /// This period's plan allowance in full (0 without a plan).
    pub allowance: i64,
    /// What is left of it (part of `balance`; it lapses at the next period).
    pub allowance_remaining: i64,
}

/// A ledger entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntryOut {
    /// Id.
    pub id: i64,
    /// Unit.
    pub unit: String,
    /// Signed amount.
    pub amount: i64,
    /// Balance after it.
    pub balance_after: i64,
    /// Why.
    pub reason: String,
    /// `order_item`, `subscription_period`, `consumption`, `refund`, `operator`.
    pub source_type: String,
    /// The order item, subscription item, consumption key, or operator action.
    pub source_id: String,
    /// What a refund could not take back (already spent).
    pub shortfall: i64,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// `GET /api/account/credits/`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreditsOut {
    /// Per unit.
    pub balances: Vec<BalanceOut>,
    /// The newest 100 entries.
    pub entries: Vec<EntryOut>,
}

/// A user's balances and recent entries.
pub async fn summary(db: impl PgExecutor<'_> + Copy, profile_id: Uuid) -> sqlx::Result<CreditsOut> {
    let balances = sqlx::query_as!(
        BalanceOut,
        "SELECT unit, balance, allowance, allowance_remaining FROM credit_balances WHERE profile_id = $1 ORDER BY unit",
        profile_id
    )
    .fetch_all(db)
    .await?;
    let entries = sqlx::query_as!(
        EntryOut,
        r#"SELECT id, unit, amount, balance_after, reason, source_type, source_id, shortfall, created_at
           FROM credit_entries WHERE profile_id = $1 ORDER BY id DESC LIMIT 100"#,
        profile_id
    )
    .fetch_all(db)
    .await?;
    Ok(CreditsOut { balances, entries })
}

/// The starter's usage buckets (`/api/ai/usage/summary/`), one per unit the user holds:
/// `used` is what was consumed in the current allowance period (all time without a plan),
/// `limit` the period's allowance (else everything made available), `near_limit` from 80 %.
pub async fn usage_buckets(db: impl PgExecutor<'_>, profile_id: Uuid) -> sqlx::Result<Vec<Value>> {
    let rows = sqlx::query!(
        r#"SELECT b.unit, b.balance, b.allowance, b.allowance_period_start,
                  coalesce((SELECT -sum(e.amount) FROM credit_entries e
                            WHERE e.profile_id = b.profile_id AND e.unit = b.unit AND e.source_type = 'consumption'
                              AND (b.allowance_period_start IS NULL OR e.created_at >= b.allowance_period_start)), 0)::bigint AS "used!"
           FROM credit_balances b WHERE b.profile_id = $1 ORDER BY b.unit"#,
        profile_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let limit = if r.allowance > 0 {
                r.allowance
            } else {
                r.used + r.balance
            };
            let percent = if limit > 0 {
                (r.used as f64 * 1000.0 / limit as f64).round() / 10.0
            } else {
                0.0
            };
            let mut label: String = r.unit.replace(['_', '-', '.', ':'], " ");
            if let Some(first) = label.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            json!({
                "key": r.unit, "label": label, "unit": r.unit, "used": r.used, "limit": limit,
                "remaining": r.balance, "percent_used": percent, "near_limit": percent >= 80.0,
                "reset_window": if r.allowance > 0 { "billing_period" } else { "none" },
                "period_start": r.allowance_period_start,
            })
        })
        .collect())
}

/// An operator's change: add (positive) or remove (negative) credits, with a reason; audited.
/// A removal larger than the balance is refused (409). Returns the new balance.
pub async fn adjust(
    pool: &PgPool,
    clerk_user_id: &str,
    unit: &str,
    amount: i64,
    actor: &Actor,
) -> DomainResult<i64> {
    let unit = unit.trim().to_lowercase();
    let mut f = Fields::new();
    f.check(
        is_unit(&unit),
        "unit",
        "lower-case letters, digits and _ . : - (at most 64)",
    );
    f.check(
        // A range, not `abs()`: `i64::MIN.abs()` overflows.
        amount != 0 && (-MAX_AMOUNT..=MAX_AMOUNT).contains(&amount),
        "amount",
        "a non-zero number up to 10^12 either way",
    );
    f.check(
        actor
            .reason
            .as_deref()
            .is_some_and(|r| !r.trim().is_empty()),
        "reason",
        "say why (kept in the ledger and the audit log)",
    );
    f.finish()?;
    let mut tx = pool.begin().await?;
    let profile_id = profile_of(&mut *tx, clerk_user_id).await?;
    let b = lock(&mut tx, profile_id, &unit).await?;
    let balance = b.balance + amount;
    if balance < 0 {
        return Err(DomainError::conflict(format!(
            "The balance is {} {unit}: at most that can be removed.",
            b.balance
        )));
    }
    let action_id = Uuid::new_v4().to_string();
    let reason = actor.reason.clone().unwrap_or_default();
    write(
        &mut tx,
        &Entry {
            profile_id,
            unit: &unit,
            amount,
            reason: &reason,
            source_type: "operator",
            source_id: &actor.name,
            shortfall: 0,
            order_id: None,
            key: &format!("operator:{action_id}"),
        },
        &After {
            balance,
            allowance: None,
            allowance_remaining: b.allowance_remaining.min(balance),
            allowance_period_start: None,
        },
    )
    .await?;
    crate::platform::audit::record_by(
        &mut *tx,
        actor,
        "credits.adjust",
        "profile",
        clerk_user_id,
        json!({ "unit": unit, "amount": amount, "balance": balance, "action_id": action_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(balance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }

    #[test]
    fn grants_are_checked_and_lower_cased() {
        let mut ok = vec![CreditGrant {
            unit: "Tokens".into(),
            amount: 100_000,
        }];
        let mut f = Fields::new();
        check_grants(&mut ok, &mut f);
        assert!(f.finish().is_ok());
        assert_eq!(ok[0].unit, "tokens");
        let mut bad = vec![
            CreditGrant {
                unit: "tokens".into(),
                amount: 1,
            },
            CreditGrant {
                unit: "tokens".into(),
                amount: 0,
            },
        ];
        let mut f = Fields::new();
        check_grants(&mut bad, &mut f);
        assert!(f.finish().is_err());
    }
}
