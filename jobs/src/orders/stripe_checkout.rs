//! A Stripe Checkout Session for an order (docs/payments.md): built from Granary's own order
//! lines, naming the order three ways, created once per order under a Stripe idempotency key
//! derived from it, and stored on the order. Stripe's failures become the contract's 502/503
//! with a code and, where a retry can help, `Retry-After`; the secret key never appears in them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Config,
    error::{DomainError, DomainResult},
    model::OrderStatus,
    platform::http,
    providers::stripe::{self, StripeApiError},
};

/// The Stripe idempotency key of an order's session: a retried create replays Stripe's first
/// answer instead of making a second session.
pub fn idempotency_key(order_id: Uuid) -> String {
    format!("granary-checkout-{order_id}")
}

/// One line, as the session lists it.
struct Line {
    name: String,
    quantity: i32,
    unit_amount_cents: i64,
    currency: String,
    stripe_price_id: Option<String>,
}

/// The form Stripe's API takes (bracket notation), for an order with `lines`.
fn session_form(
    config: &Config,
    public_id: &str,
    email: Option<&str>,
    lines: &[Line],
    expires_at: DateTime<Utc>,
) -> Vec<(String, String)> {
    let base = config.frontend_app_url.as_str().trim_end_matches('/');
    let mut form = vec![
        ("mode".to_string(), "payment".to_string()),
        ("client_reference_id".into(), public_id.into()),
        ("metadata[order_id]".into(), public_id.into()),
        (
            "payment_intent_data[metadata][order_id]".into(),
            public_id.into(),
        ),
        (
            "success_url".into(),
            format!("{base}/checkout/success?order={public_id}&session_id={{CHECKOUT_SESSION_ID}}"),
        ),
        ("cancel_url".into(), format!("{base}/checkout/cancel")),
        ("expires_at".into(), expires_at.timestamp().to_string()),
    ];
    if let Some(email) = email {
        form.push(("customer_email".into(), email.into()));
    }
    for (n, line) in lines.iter().enumerate() {
        let item = |field: &str| format!("line_items[{n}][{field}]");
        match &line.stripe_price_id {
            Some(price) => form.push((item("price"), price.clone())),
            None => {
                form.push((item("price_data][currency"), line.currency.to_lowercase()));
                form.push((
                    item("price_data][unit_amount"),
                    line.unit_amount_cents.to_string(),
                ));
                form.push((item("price_data][product_data][name"), line.name.clone()));
            }
        }
        form.push((item("quantity"), line.quantity.to_string()));
    }
    form
}

/// Stripe's failure as the buyer's answer. A retry helps when Stripe is down, slow or
/// rate-limiting; a refused key needs the shop owner.
fn refused(e: StripeApiError) -> DomainError {
    let retry =
        |after: Option<Duration>, default: u64| Some(after.map_or(default, |d| d.as_secs().max(1)));
    let (status, code, message, retry_after) = match &e {
        StripeApiError::NotConfigured => (
            503,
            "payment_provider_unavailable",
            "Checkout through Stripe is not configured for this shop.".to_string(),
            None,
        ),
        StripeApiError::Unreachable(_) => (
            503,
            "payment_provider_unavailable",
            "Stripe did not answer. Your order is saved: try again in a moment.".to_string(),
            retry(None, 5),
        ),
        StripeApiError::Api {
            status: 429,
            retry_after,
            ..
        } => (
            503,
            "payment_provider_rate_limited",
            "Stripe is busy. Your order is saved: try again in a moment.".to_string(),
            retry(*retry_after, 2),
        ),
        StripeApiError::Api {
            status: 401 | 403, ..
        } => (
            502,
            "payment_provider_misconfigured",
            "Stripe refused this shop's API key, so checkout cannot start. The shop owner must \
             fix STRIPE_SECRET_KEY (`granary-worker doctor --live` checks it)."
                .to_string(),
            None,
        ),
        StripeApiError::Api { status, .. } if *status >= 500 => (
            502,
            "payment_provider_error",
            "Stripe failed to start the checkout. Your order is saved: try again in a moment."
                .to_string(),
            retry(None, 5),
        ),
        StripeApiError::Api { message, .. } => (
            502,
            "payment_provider_error",
            format!("Stripe refused the checkout: {message}"),
            None,
        ),
    };
    tracing::warn!(error = %e, code, "creating the Stripe Checkout Session failed");
    DomainError::Upstream {
        status,
        code,
        message,
        retry_after,
    }
}

/// The checkout URL of order `order_id`: its stored session's, or a new session's. A new
/// session is created only for a `pending` order sold through Stripe that has none, and is
/// stored on the order; a session whose total or currency is not the order's is refused (its
/// URL is never shown).
pub async fn open_session(pool: &PgPool, config: &Config, order_id: Uuid) -> DomainResult<String> {
    let order = sqlx::query!(
        r#"SELECT o.public_id, o.status AS "status: OrderStatus", o.total_cents, o.currency, o.stripe_checkout,
                  o.stripe_checkout_session_id, o.checkout_url, p.email
           FROM orders o JOIN profiles p ON p.id = o.customer_profile_id WHERE o.id = $1"#,
        order_id
    )
    .fetch_optional(pool)
    .await?
    .ok_or(DomainError::NotFound)?;
    if order.stripe_checkout_session_id.is_some() || !order.stripe_checkout {
        return Ok(order.checkout_url.unwrap_or_default());
    }
    if order.status != OrderStatus::Pending {
        return Ok(String::new());
    }
    let lines = session_lines(pool, order_id).await?;
    let expires_at = Utc::now()
        + chrono::Duration::from_std(config.stripe.checkout_session_ttl)
            .map_err(anyhow::Error::from)?;
    let email = order.email.as_deref().filter(|e| e.contains('@'));
    let form = session_form(config, &order.public_id, email, &lines, expires_at);
    let session =
        stripe::create_checkout_session(http::client(), config, &form, &idempotency_key(order_id))
            .await
            .map_err(refused)?;
    // Money is checked: the session must charge exactly the order.
    check_total(order_id, &session, order.total_cents, &order.currency)?;
    store_session(pool, order_id, &session).await
}

/// The order's lines as the session lists them (a line's Stripe price only when well-formed).
async fn session_lines(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Vec<Line>> {
    let lines: Vec<Line> = sqlx::query!(
        r#"SELECT oi.product_name, oi.quantity, oi.unit_amount_cents, oi.currency,
                  pr.metadata->>'stripe_price_id' AS stripe_price_id
           FROM order_items oi JOIN prices pr ON pr.id = oi.price_id
           WHERE oi.order_id = $1 ORDER BY oi.created_at, oi.id"#,
        order_id
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|l| Line {
        name: l.product_name,
        quantity: l.quantity,
        unit_amount_cents: l.unit_amount_cents,
        currency: l.currency,
        stripe_price_id: l
            .stripe_price_id
            .filter(|p| p.starts_with("price_") && p.len() <= 255),
    })
    .collect();
    Ok(lines)
}

/// Refuses a session that does not charge exactly the order's total in its currency.
fn check_total(
    order_id: Uuid,
    session: &stripe::CheckoutSession,
    order_total_cents: i64,
    order_currency: &str,
) -> DomainResult<()> {
    match (session.amount_total, session.currency.as_deref()) {
        (Some(total), Some(currency))
            if total == order_total_cents && currency.eq_ignore_ascii_case(order_currency) => {}
        (total, currency) => {
            tracing::error!(order_id = %order_id, session = %session.id, ?total, ?currency,
                order_total = order_total_cents, order_currency = %order_currency,
                "the Checkout Session does not charge the order's total");
            return Err(DomainError::Upstream {
                status: 502,
                code: "checkout_total_mismatch",
                message: format!(
                    "Stripe's checkout would charge {} {}, not the order's {} {}; not sending \
                     you there. The shop owner must fix the price's stripe_price_id.",
                    total.map_or("an unstated amount".into(), |t| t.to_string()),
                    currency.unwrap_or("(no currency)"),
                    order_total_cents,
                    order_currency
                ),
                retry_after: None,
            });
        }
    }
    Ok(())
}

/// Stores the session on the order (unless a concurrent retry stored it first) and answers the
/// order's checkout URL.
async fn store_session(
    pool: &PgPool,
    order_id: Uuid,
    session: &stripe::CheckoutSession,
) -> DomainResult<String> {
    let expires = DateTime::<Utc>::from_timestamp(session.expires_at, 0).ok_or_else(|| {
        anyhow::anyhow!(
            "Stripe answered an expires_at out of range: {}",
            session.expires_at
        )
    })?;
    let stored = sqlx::query_scalar!(
        r#"UPDATE orders SET stripe_checkout_session_id = $2, checkout_url = $3, checkout_expires_at = $4
           WHERE id = $1 AND stripe_checkout_session_id IS NULL RETURNING checkout_url AS "url!""#,
        order_id,
        session.id,
        session.url,
        expires
    )
    .fetch_optional(pool)
    .await?;
    match stored {
        Some(url) => {
            tracing::info!(order_id = %order_id, session = %session.id, "checkout session created");
            Ok(url)
        }
        // A concurrent retry stored it first (Stripe answered both with the same session).
        None => Ok(
            sqlx::query_scalar!("SELECT checkout_url FROM orders WHERE id = $1", order_id)
                .fetch_one(pool)
                .await?
                .unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_names_the_order_three_ways_and_lists_every_line() {
        let config = Config::from_map(
            &[(
                "FRONTEND_APP_URL".to_string(),
                "https://shop.example/".to_string(),
            )]
            .into_iter()
            .collect(),
        )
        .unwrap();
        let lines = [
            Line {
                name: "Guide".into(),
                quantity: 2,
                unit_amount_cents: 1500,
                currency: "USD".into(),
                stripe_price_id: None,
            },
            Line {
                name: "Kit".into(),
                quantity: 1,
                unit_amount_cents: 900,
                currency: "USD".into(),
                stripe_price_id: Some("price_123".into()),
            },
        ];
        let at = DateTime::<Utc>::from_timestamp(1_900_000_000, 0).unwrap();
        let form: std::collections::HashMap<String, String> =
            session_form(&config, "ord_1", Some("a@b.example"), &lines, at)
                .into_iter()
                .collect();
        for (k, v) in [
            ("mode", "payment"),
            ("client_reference_id", "ord_1"),
            ("metadata[order_id]", "ord_1"),
            ("payment_intent_data[metadata][order_id]", "ord_1"),
            ("customer_email", "a@b.example"),
            ("expires_at", "1900000000"),
            (
                "success_url",
                "https://shop.example/checkout/success?order=ord_1&session_id={CHECKOUT_SESSION_ID}",
            ),
            ("cancel_url", "https://shop.example/checkout/cancel"),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", "1500"),
            ("line_items[0][price_data][product_data][name]", "Guide"),
            ("line_items[0][quantity]", "2"),
            ("line_items[1][price]", "price_123"),
            ("line_items[1][quantity]", "1"),
        ] {
            assert_eq!(form.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!form.contains_key("line_items[1][price_data][unit_amount]"));
    }

    #[test]
    fn stripe_failures_become_answers_that_say_what_to_do_and_never_the_key() {
        let e = refused(StripeApiError::Api {
            status: 401,
            kind: "invalid_request_error".into(),
            message: "Invalid API Key provided: sk_test_****abcd".into(),
            retry_after: None,
        });
        let DomainError::Upstream {
            status,
            code,
            message,
            retry_after,
        } = e
        else {
            panic!("not upstream")
        };
        assert_eq!(
            (status, code, retry_after),
            (502, "payment_provider_misconfigured", None)
        );
        assert!(!message.contains("sk_"), "{message}");
        let DomainError::Upstream {
            status,
            retry_after,
            ..
        } = refused(StripeApiError::Api {
            status: 429,
            kind: "rate_limit_error".into(),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
        })
        else {
            panic!("not upstream")
        };
        assert_eq!((status, retry_after), (503, Some(7)));
    }
}
