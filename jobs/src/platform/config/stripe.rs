//! Stripe: the webhook signing secret, and the API key, base URL and window of the
//! reconciliation sweep that recovers payments whose webhook never arrived.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::reader::Reader;

/// Stripe settings.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `STRIPE_WEBHOOK_SECRET`: the whole `whsec_...` string is the HMAC key.
    pub webhook_secret: Option<SecretString>,
    /// `STRIPE_SECRET_KEY` (`sk_...`, or a restricted `rk_...` key with read access to events).
    /// Without it the sweep is off.
    pub secret_key: Option<SecretString>,
    /// `STRIPE_API_BASE` (default `https://api.stripe.com`); tests point it at a stand-in.
    pub api_base: Url,
    /// `RECONCILE_INTERVAL_SECONDS`: how often the sweeps run (0: never on a schedule).
    pub reconcile_interval: Duration,
    /// `RECONCILE_LOOKBACK_HOURS`: how far back a scheduled sweep lists events.
    pub reconcile_lookback: Duration,
    /// `CHECKOUT_SESSION_TTL` (seconds): how long a Checkout Session Granary creates stays
    /// open. Stripe allows 30 minutes to 24 hours.
    pub checkout_session_ttl: Duration,
    /// `PENDING_ORDER_TTL` (seconds): an order pending longer, with no Checkout Session still
    /// open, expires.
    pub pending_order_ttl: Duration,
}

/// Stripe's bounds on a Checkout Session's `expires_at`, from now.
pub const CHECKOUT_SESSION_TTL_BOUNDS: (u64, u64) = (30 * 60, 24 * 3600);

/// Stripe keeps events for 30 days; a longer window lists nothing more.
const MAX_LOOKBACK_HOURS: u64 = 30 * 24;

/// Reads the Stripe settings and checks their shapes and bounds.
pub(super) fn read(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> StripeConfig {
    let webhook_secret = webhook_secret(r);
    let secret_key = secret_key(r);
    let api_base = r
        .url("STRIPE_API_BASE")
        .unwrap_or_else(|| Url::parse("https://api.stripe.com").expect("static URL"));
    let reconcile_interval = Duration::from_secs(r.number(
        "RECONCILE_INTERVAL_SECONDS",
        300u64,
        "use a number of seconds such as 300; 0 turns the scheduled sweeps off",
    ));
    let lookback_hours = r.number(
        "RECONCILE_LOOKBACK_HOURS",
        72u64,
        "use a number of hours such as 72",
    );
    if lookback_hours == 0 || lookback_hours > MAX_LOOKBACK_HOURS {
        r.problem(
            "RECONCILE_LOOKBACK_HOURS",
            format!(
                "must be between 1 and {MAX_LOOKBACK_HOURS} hours (Stripe keeps events for 30 days)"
            ),
            "use a number of hours such as 72",
        );
    }
    let (min_ttl, max_ttl) = CHECKOUT_SESSION_TTL_BOUNDS;
    let (ttl, pending_ttl) = ttls(r);
    if webhook_secret.is_some() && secret_key.is_none() {
        warnings.push("STRIPE_SECRET_KEY unset: a Stripe payment whose webhook never arrives is not recovered (the reconciliation sweep is off)".into());
    }
    StripeConfig {
        webhook_secret,
        secret_key,
        api_base,
        reconcile_interval,
        reconcile_lookback: Duration::from_secs(3600 * lookback_hours.clamp(1, MAX_LOOKBACK_HOURS)),
        checkout_session_ttl: Duration::from_secs(ttl.clamp(min_ttl, max_ttl)),
        pending_order_ttl: Duration::from_secs(pending_ttl.min(10 * 365 * 86_400)),
    }
}

/// `STRIPE_WEBHOOK_SECRET`: a `whsec_...` string.
fn webhook_secret(r: &mut Reader<'_>) -> Option<SecretString> {
    match r.get("STRIPE_WEBHOOK_SECRET") {
        None => None,
        Some(raw) if raw.starts_with("whsec_") && raw.len() > "whsec_".len() + 8 => {
            Some(SecretString::from(raw.to_string()))
        }
        Some(_) => {
            r.problem(
                "STRIPE_WEBHOOK_SECRET",
                "is malformed: it does not look like `whsec_...`",
                "copy the endpoint's signing secret from Stripe Dashboard → Developers → Webhooks",
            );
            None
        }
    }
}

/// `STRIPE_SECRET_KEY`: an `sk_...` or restricted `rk_...` key.
fn secret_key(r: &mut Reader<'_>) -> Option<SecretString> {
    let secret_key = r.secret("STRIPE_SECRET_KEY");
    if let Some(k) = &secret_key {
        let k = k.expose_secret();
        if !(k.starts_with("sk_") || k.starts_with("rk_")) || k.len() < 12 {
            r.problem(
                "STRIPE_SECRET_KEY",
                "does not look like a Stripe secret key (`sk_...` or a restricted `rk_...`)",
                "copy a secret key, or a restricted key with read access to Events, from Stripe Dashboard → Developers → API keys",
            );
        }
    }
    secret_key
}

/// `CHECKOUT_SESSION_TTL` (within Stripe's bounds) and `PENDING_ORDER_TTL` (no shorter), as
/// read, in seconds.
fn ttls(r: &mut Reader<'_>) -> (u64, u64) {
    let (min_ttl, max_ttl) = CHECKOUT_SESSION_TTL_BOUNDS;
    let ttl = r.number(
        "CHECKOUT_SESSION_TTL",
        3600u64,
        "use a number of seconds from 1800 (30 minutes) to 86400 (24 hours)",
    );
    if !(min_ttl..=max_ttl).contains(&ttl) {
        r.problem(
            "CHECKOUT_SESSION_TTL",
            "must be between 1800 and 86400 seconds (Stripe's bounds on a session's expiry)",
            "use a number of seconds such as 3600",
        );
    }
    let pending_ttl = r.number(
        "PENDING_ORDER_TTL",
        86_400u64,
        "use a number of seconds such as 86400 (24 hours)",
    );
    if pending_ttl < ttl {
        r.problem(
            "PENDING_ORDER_TTL",
            "must be at least CHECKOUT_SESSION_TTL: an order must not expire while its checkout is open",
            "use a number of seconds such as 86400 (24 hours)",
        );
    }
    (ttl, pending_ttl)
}
