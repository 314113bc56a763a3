//! Stripe's API, the calls Granary makes, each a hand-written request through the shared HTTP
//! client (bearer `STRIPE_SECRET_KEY`, a pinned `Stripe-Version`): list events
//! (`GET /v1/events`) for the reconciliation sweep, create a Checkout Session
//! (`POST /v1/checkout/sessions`, form-encoded) for an order, and create a refund
//! (`POST /v1/refunds`). The base URL is `STRIPE_API_BASE`, so
//! tests point the real client at a local stand-in speaking Stripe's wire format.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use crate::Config;

/// The payment events a sweep lists.
pub const PAYMENT_EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "payment_intent.succeeded",
    "charge.refunded",
    "charge.dispute.created",
];

/// Most events per page (Stripe's maximum).
const PAGE_LIMIT: u32 = 100;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// No `STRIPE_SECRET_KEY`.
    #[error("STRIPE_SECRET_KEY is not set, so Granary cannot ask Stripe")]
    NotConfigured,
    /// Network, timeout, or an answer that is not Stripe's.
    #[error("Stripe could not be reached: {0}")]
    Unreachable(String),
    /// Stripe answered an error.
    #[error("Stripe answered {status} ({kind}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stripe's `error.type` (`invalid_request_error`, `api_error`, ...).
        kind: String,
        /// Stripe's `error.message`.
        message: String,
        /// Stripe's `Retry-After`, when it sent one (429).
        retry_after: Option<Duration>,
    },
}

impl StripeApiError {
    /// A short code for the run record and doctor.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Unreachable(_) => "stripe_unreachable",
            Self::Api { status: 401, .. } => "stripe_unauthorized",
            Self::Api { status: 403, .. } => "stripe_forbidden",
            Self::Api { status: 429, .. } => "stripe_rate_limited",
            Self::Api { .. } => "stripe_error",
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> &'static str {
        fix_for(self.code())
    }
}

/// What to do about a failure with this code ([`StripeApiError::code`]).
pub fn fix_for(code: &str) -> &'static str {
    match code {
        "not_configured" => {
            "set STRIPE_SECRET_KEY (a restricted key with read access to Events is enough)"
        }
        "stripe_unreachable" => {
            "check outbound network to STRIPE_API_BASE; the sweep retries with backoff"
        }
        "stripe_unauthorized" => {
            "STRIPE_SECRET_KEY is wrong or was rolled: copy a current key from Stripe Dashboard → Developers → API keys, then restart the worker"
        }
        "stripe_forbidden" => {
            "the restricted key may not read Events: give it read access to Events in Stripe Dashboard → Developers → API keys"
        }
        "stripe_rate_limited" => {
            "Stripe is rate-limiting this account; the sweep retries with backoff"
        }
        _ => "a Stripe-side error; the sweep retries with backoff (status.stripe.com)",
    }
}

/// One page of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventPage {
    /// Events, newest first.
    pub data: Vec<Value>,
    /// More (older) events follow the last one.
    pub has_more: bool,
}

/// `base/v1/<segments>`.
fn endpoint(config: &Config, segments: &[&str]) -> Result<url::Url, StripeApiError> {
    let mut url = config.stripe.api_base.clone();
    url.path_segments_mut()
        .map_err(|_| StripeApiError::Unreachable("STRIPE_API_BASE cannot be a base".into()))?
        .pop_if_empty()
        .push("v1")
        .extend(segments);
    Ok(url)
}

/// The API version Granary's calls are written against (Stripe's `Stripe-Version` header).
/// Webhook payloads follow the endpoint's own version, set in the Dashboard.
pub const STRIPE_VERSION: &str = "2024-06-20";

/// Sends `req` with the secret key and the pinned version; Stripe's error body becomes
/// [`StripeApiError::Api`], anything that is not an answer [`StripeApiError::Unreachable`].
async fn send<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    config: &Config,
    what: &str,
) -> Result<T, StripeApiError> {
    let key = config
        .stripe
        .secret_key
        .as_ref()
        .ok_or(StripeApiError::NotConfigured)?;
    let res = req
        .bearer_auth(key.expose_secret())
        .header("Stripe-Version", STRIPE_VERSION)
        .send()
        .await
        .map_err(|e| StripeApiError::Unreachable(e.without_url().to_string()))?;
    let status = res.status();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = res
        .bytes()
        .await
        .map_err(|e| StripeApiError::Unreachable(e.without_url().to_string()))?;
    if !status.is_success() {
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let e = &body["error"];
        return Err(StripeApiError::Api {
            status: status.as_u16(),
            kind: e["type"].as_str().unwrap_or("unknown").to_string(),
            message: e["message"]
                .as_str()
                .unwrap_or("no error message")
                .to_string(),
            retry_after,
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| StripeApiError::Unreachable(format!("the answer is not a Stripe {what}: {e}")))
}

/// Lists one page of events of `types` created at or after `created_gte` (unix seconds),
/// older than `starting_after` when given.
pub async fn list_events(
    client: &reqwest::Client,
    config: &Config,
    types: &[&str],
    created_gte: i64,
    starting_after: Option<&str>,
) -> Result<EventPage, StripeApiError> {
    let mut url = endpoint(config, &["events"])?;
    {
        let mut q = url.query_pairs_mut();
        for t in types {
            q.append_pair("types[]", t);
        }
        q.append_pair("created[gte]", &created_gte.to_string());
        q.append_pair("limit", &PAGE_LIMIT.to_string());
        if let Some(after) = starting_after {
            q.append_pair("starting_after", after);
        }
    }
    send(
        client.get(url).timeout(Duration::from_secs(30)),
        config,
        "list of events",
    )
    .await
}

/// A Checkout Session as Stripe answers its creation (the fields Granary keeps).
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    /// `cs_...`.
    pub id: String,
    /// Where the buyer pays.
    pub url: String,
    /// When it stops accepting payment (unix seconds).
    pub expires_at: i64,
    /// What it charges, in minor units (checked against the order).
    pub amount_total: Option<i64>,
    /// In this currency (lower case).
    pub currency: Option<String>,
}

/// `POST /v1/checkout/sessions`: `form` is the form-encoded body (Stripe's bracket notation),
/// `idempotency_key` makes a retry return the first session instead of a second one. Ten
/// seconds at most: the buyer is waiting.
pub async fn create_checkout_session(
    client: &reqwest::Client,
    config: &Config,
    form: &[(String, String)],
    idempotency_key: &str,
) -> Result<CheckoutSession, StripeApiError> {
    post_form(
        client,
        config,
        &["checkout", "sessions"],
        form,
        idempotency_key,
        Duration::from_secs(10),
        "Checkout Session",
    )
    .await
}

/// A refund as Stripe answers its creation.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    /// `re_...`.
    pub id: String,
}

/// `POST /v1/refunds` (form-encoded: `payment_intent` or `charge`, `amount`, `metadata[...]`)
/// under `idempotency_key`.
pub async fn create_refund(
    client: &reqwest::Client,
    config: &Config,
    form: &[(String, String)],
    idempotency_key: &str,
) -> Result<Refund, StripeApiError> {
    post_form(
        client,
        config,
        &["refunds"],
        form,
        idempotency_key,
        Duration::from_secs(30),
        "refund",
    )
    .await
}

/// `POST base/v1/<segments>` with `form` encoded as Stripe's API takes it, under
/// `idempotency_key`, waiting at most `timeout`.
async fn post_form<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    config: &Config,
    segments: &[&str],
    form: &[(String, String)],
    idempotency_key: &str,
    timeout: Duration,
    what: &str,
) -> Result<T, StripeApiError> {
    let url = endpoint(config, segments)?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    send(
        client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("Idempotency-Key", idempotency_key)
            .timeout(timeout)
            .body(body),
        config,
        what,
    )
    .await
}
