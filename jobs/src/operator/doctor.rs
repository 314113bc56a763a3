//! `granary-worker doctor`: checks the setup and the state of the shop, and explains every
//! problem with its fix. A failed check makes the command exit non-zero; warnings do not.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use crate::{
    Config,
    config::{ConfigError, StorageConfig},
    model::RunStatus,
    platform::{db, storage::Storage},
};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but worth knowing (development modes, empty optional settings).
    Warn,
    /// Broken: something a customer or the operator will hit.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Verdict.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when fine).
    pub fix: String,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every finding, in order.
    pub checks: Vec<Check>,
}

impl Report {
    fn push(
        &mut self,
        name: impl Into<String>,
        level: Level,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.checks.push(Check {
            name: name.into(),
            level,
            detail: detail.into(),
            fix: fix.into(),
        });
    }

    /// True when any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.level == Level::Fail)
    }

    /// A report of configuration problems (the configuration could not even be read).
    pub fn from_config_error(e: &ConfigError) -> Self {
        let mut r = Self::default();
        for p in &e.0 {
            r.push(
                format!("config {}", p.variable),
                Level::Fail,
                p.problem.clone(),
                p.fix.clone(),
            );
        }
        r
    }
}

/// What a rejection reason means, for the operator.
pub fn explain_rejection(provider: &str, reason: &str) -> (&'static str, String) {
    let secret = if provider == "stripe" {
        "STRIPE_WEBHOOK_SECRET"
    } else {
        "CLERK_WEBHOOK_SIGNING_SECRET"
    };
    match reason {
        "signature_mismatch" => ("signature mismatch", format!("the secret in {secret} does not match the one that signed: copy it again from the provider's dashboard (or the body was altered by a proxy)")),
        "stale_timestamp" | "future_timestamp" => ("timestamp outside 5 minutes", "check this server's clock (NTP), or someone is replaying old deliveries".into()),
        "missing_signature_headers" | "invalid_signature_header" => ("no usable signature headers", "the endpoint URL is hit by something that is not the provider, or a proxy strips headers".into()),
        "webhook_secret_not_configured" => ("no secret configured", format!("set {secret}")),
        "invalid_json" | "invalid_event" | "invalid_payload" => ("malformed body", "the sender is not the provider, or a proxy rewrites bodies".into()),
        _ => ("other", "see the stored deliveries: granary-worker webhooks list --status rejected".into()),
    }
}

/// What doctor looks at, beyond the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Also call Resend and Stripe to validate their keys.
    pub live: bool,
    /// Paid orders not fulfilled after this long are reported.
    pub unfulfilled_after: Duration,
    /// Orders still `pending_payment` after this long are examined for payments that arrived
    /// but were not applied.
    pub pending_after: Duration,
}

/// Runs every check.
pub async fn run(config: &Config, pool: &PgPool, opts: Options) -> Report {
    let Options {
        live,
        unfulfilled_after,
        pending_after,
    } = opts;
    let mut r = Report::default();
    config_checks(config, &mut r);
    let db_ok = database_checks(pool, &mut r).await;

    storage_check(config, &mut r).await;
    email_check(config, live, &mut r).await;
    seller_access_check(config, &mut r);
    clerk_jwks_check(config, &mut r).await;
    webhook_secret_checks(config, &mut r);

    cors_check(config, &mut r);
    if live {
        stripe_key_check(config, &mut r).await;
    }
    if db_ok && let Err(e) = shop_checks(config, pool, unfulfilled_after, &mut r).await {
        r.push(
            "shop state",
            Level::Fail,
            format!("could not read: {e}"),
            "run: granary-worker migrate",
        );
    }
    if db_ok && let Err(e) = recovery_checks(config, pool, pending_after, &mut r).await {
        r.push(
            "shop state",
            Level::Fail,
            format!("could not read: {e}"),
            "run: granary-worker migrate",
        );
    }
    r
}

/// The configuration's own verdict: valid (with its environment), then each of its warnings.
fn config_checks(config: &Config, r: &mut Report) {
    r.push(
        "config",
        Level::Ok,
        format!(
            "valid ({} environment)",
            if config.is_development() {
                "development"
            } else {
                "production"
            }
        ),
        "",
    );
    for w in &config.warnings {
        r.push("config warning", Level::Warn, w.clone(), "");
    }
}

/// Database and migrations: whether PostgreSQL answers, then whether migrations are pending.
/// Returns whether the database is reachable.
async fn database_checks(pool: &PgPool, r: &mut Report) -> bool {
    let db_ok = match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool),
    )
    .await
    {
        Ok(Ok(_)) => {
            r.push("database", Level::Ok, "reachable", "");
            true
        }
        Ok(Err(e)) => {
            r.push(
                "database",
                Level::Fail,
                format!("unreachable: {e}"),
                "check DATABASE_URL and that PostgreSQL is running",
            );
            false
        }
        Err(_) => {
            r.push(
                "database",
                Level::Fail,
                "no answer within 5 s",
                "check DATABASE_URL, the network and PostgreSQL's load",
            );
            false
        }
    };
    if db_ok {
        match db::pending_migrations(pool).await {
            Ok(p) if p.is_empty() => r.push("migrations", Level::Ok, "current", ""),
            Ok(p) => r.push(
                "migrations",
                Level::Fail,
                format!("{} pending: {}", p.len(), p.join(", ")),
                "run: granary-worker migrate",
            ),
            Err(e) => r.push(
                "migrations",
                Level::Fail,
                format!("cannot read: {e}"),
                "run: granary-worker migrate",
            ),
        }
    }
    db_ok
}

/// Email: whether Resend is configured, and with `--live` whether it accepts the key.
async fn email_check(config: &Config, live: bool, r: &mut Report) {
    match &config.resend.api_key {
        None => r.push(
            "email",
            Level::Warn,
            "RESEND_API_KEY unset: emails are kept in the outbox (emails table), not sent",
            "set RESEND_API_KEY and RESEND_FROM_EMAIL to send",
        ),
        Some(key) if live => {
            match crate::emails::resend_client(&config.resend, key)
                .domains
                .list(resend_rs::list_opts::ListOptions::default())
                .await
            {
                Ok(_) => r.push("email", Level::Ok, "Resend accepted the API key", ""),
                Err(e) => r.push(
                    "email",
                    Level::Fail,
                    format!("Resend refused the API key: {e}"),
                    "create a new key in the Resend dashboard and set RESEND_API_KEY",
                ),
            }
        }
        Some(_) => r.push(
            "email",
            Level::Ok,
            format!(
                "Resend configured, sending as {} (use --live to check the key)",
                config.resend.from
            ),
            "",
        ),
    }
}

/// Who may sell: the `SELLER_ACCESS` rule in force.
fn seller_access_check(config: &Config, r: &mut Report) {
    match config.seller_access {
        crate::config::SellerAccess::Role => r.push(
            "seller access",
            Level::Ok,
            "SELLER_ACCESS=role: only sellers and admins use the seller API",
            "grant the role with: granary-worker users set-role <clerk user id> seller --reason ...",
        ),
        crate::config::SellerAccess::Any => r.push(
            "seller access",
            Level::Ok,
            "SELLER_ACCESS=any: every signed-in user may create products and sell them (the \
             starter's rule; `granary-api dev` starts this way)",
            "set SELLER_ACCESS=role to limit selling to users granted the seller role",
        ),
    }
}

/// Clerk: whether a JWKS is configured, and whether it is reachable and holds keys.
async fn clerk_jwks_check(config: &Config, r: &mut Report) {
    match &config.clerk.jwks_url {
        None if config.clerk.dev_auth => r.push(
            "clerk jwks",
            Level::Warn,
            "no Clerk JWKS configured; only development tokens are trusted",
            "set CLERK_DOMAIN for real sign-ins",
        ),
        None => r.push(
            "clerk jwks",
            Level::Warn,
            "no Clerk JWKS configured: signed-in routes answer 401",
            "set CLERK_DOMAIN (or CLERK_JWKS_URL)",
        ),
        Some(url) => {
            let fetched = async {
                let res = crate::platform::http::client()
                    .get(url.clone())
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await?
                    .error_for_status()?;
                res.json::<serde_json::Value>().await
            }
            .await;
            match fetched {
                Ok(v) if v["keys"].as_array().is_some_and(|k| !k.is_empty()) => r.push(
                    "clerk jwks",
                    Level::Ok,
                    format!(
                        "{} key(s) at {url}",
                        v["keys"].as_array().map_or(0, Vec::len)
                    ),
                    "",
                ),
                Ok(_) => r.push(
                    "clerk jwks",
                    Level::Fail,
                    format!("{url} holds no keys"),
                    "check CLERK_DOMAIN / CLERK_JWKS_URL",
                ),
                Err(e) => r.push(
                    "clerk jwks",
                    Level::Fail,
                    format!("{url} unreachable or not JSON: {e}"),
                    "check CLERK_DOMAIN / CLERK_JWKS_URL and outbound network",
                ),
            }
        }
    }
}

/// Whether each provider's webhook signing secret is set.
fn webhook_secret_checks(config: &Config, r: &mut Report) {
    for (name, set) in [
        (
            "CLERK_WEBHOOK_SIGNING_SECRET",
            config.clerk.webhook_secret.is_some(),
        ),
        (
            "STRIPE_WEBHOOK_SECRET",
            config.stripe.webhook_secret.is_some(),
        ),
    ] {
        if set {
            r.push(
                format!("webhook secret {name}"),
                Level::Ok,
                "well-formed",
                "",
            );
        } else {
            r.push(
                format!("webhook secret {name}"),
                Level::Warn,
                "not set: these deliveries are recorded and rejected",
                format!("set {name} if you use this provider"),
            );
        }
    }
}

/// The storefront's origin and Clerk's authorized parties against `CORS_ALLOWED_ORIGINS` (seed:
/// "CORS errors in the browser"). A browser blocks every call from an origin CORS does not
/// allow; a token whose `azp` is not an authorized party is refused.
fn cors_check(config: &Config, r: &mut Report) {
    let origin = |s: &str| {
        url::Url::parse(s)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| s.trim_end_matches('/').to_string())
    };
    let allowed: Vec<String> = config
        .cors_allowed_origins
        .iter()
        .map(|o| origin(o))
        .collect();
    let listed = if allowed.is_empty() {
        "(none)".to_string()
    } else {
        allowed.join(", ")
    };
    let mut fine = true;
    let frontend = config.frontend_app_url.origin().ascii_serialization();
    if !allowed.contains(&frontend) {
        fine = false;
        r.push(
            "cors",
            Level::Fail,
            format!("the storefront (FRONTEND_APP_URL) runs at {frontend}, which CORS_ALLOWED_ORIGINS does not allow ({listed}): the browser blocks every call it makes to the api"),
            format!("add {frontend} to CORS_ALLOWED_ORIGINS (origins only: scheme, host and port, no path or trailing slash), then restart the api"),
        );
    }
    let parties: Vec<String> = config
        .clerk
        .authorized_parties
        .iter()
        .map(|p| origin(p))
        .collect();
    for party in parties.iter().filter(|p| !allowed.contains(p)) {
        fine = false;
        r.push(
            "cors",
            Level::Warn,
            format!("{party} is in CLERK_AUTHORIZED_PARTIES but not in CORS_ALLOWED_ORIGINS ({listed}): its users sign in, then every api call from their browser is blocked"),
            format!("add {party} to CORS_ALLOWED_ORIGINS, or remove it from CLERK_AUTHORIZED_PARTIES"),
        );
    }
    if !parties.is_empty() {
        for o in allowed.iter().filter(|o| !parties.contains(o)) {
            fine = false;
            r.push(
                "cors",
                Level::Warn,
                format!("{o} is in CORS_ALLOWED_ORIGINS but not in CLERK_AUTHORIZED_PARTIES ({}): its browser calls get through, but its signed-in calls answer 401 (the token's azp is refused)", parties.join(", ")),
                format!("add {o} to CLERK_AUTHORIZED_PARTIES, or remove it from CORS_ALLOWED_ORIGINS"),
            );
        }
    }
    if fine {
        r.push(
            "cors",
            Level::Ok,
            format!("the storefront's origin {frontend} is allowed"),
            "",
        );
    }
}

/// `--live`: asks Stripe whether the key works (one page of one event).
async fn stripe_key_check(config: &Config, r: &mut Report) {
    if config.stripe.secret_key.is_none() {
        return;
    }
    let since = chrono::Utc::now().timestamp();
    match crate::providers::stripe::list_events(
        crate::platform::http::client(),
        config,
        &[],
        since,
        None,
    )
    .await
    {
        Ok(_) => r.push(
            "stripe api",
            Level::Ok,
            "Stripe accepted STRIPE_SECRET_KEY",
            "",
        ),
        Err(e) => r.push("stripe api", Level::Fail, e.to_string(), e.fix()),
    }
}

/// The checks for payments that arrived but did not pay their order: the last reconciliation
/// sweeps, prices no buyer can pay, and pending orders with a stored but unapplied payment.
async fn recovery_checks(
    config: &Config,
    pool: &PgPool,
    pending_after: Duration,
    r: &mut Report,
) -> sqlx::Result<()> {
    reconciliation_checks(pool, r).await?;
    refused_payment_checks(pool, r).await?;
    duplicate_payment_checks(pool, r).await?;
    checkout_url_checks(config, pool, r).await?;
    stuck_pending_checks(pool, pending_after, r).await?;
    Ok(())
}

/// The last reconciliation sweep of each provider: failed (with its fix) or when it ran.
async fn reconciliation_checks(pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    // The sweeps (seed: "checkout.session.completed never arrived"; "bad Stripe key").
    for run in crate::operator::reconcile::latest(pool).await? {
        let name = format!("{} reconciliation", run.provider);
        if run.status == RunStatus::Failed {
            let code = run.error_code.clone().unwrap_or_default();
            let fix = if run.provider == crate::providers::Provider::Stripe {
                crate::providers::stripe::fix_for(&code).to_string()
            } else {
                "check CLERK_SECRET_KEY and CLERK_API_URL; the sweep retries with backoff".into()
            };
            r.push(
                name,
                Level::Fail,
                format!(
                    "the last sweep failed after {} attempt(s) ({code}): {}; missed payments are not being recovered",
                    run.attempts,
                    run.error.clone().unwrap_or_default()
                ),
                format!("{fix}; then run: granary-worker reconcile"),
            );
        } else {
            r.push(
                name,
                Level::Ok,
                format!(
                    "last sweep at {}: {} examined, {} recovered",
                    run.finished_at
                        .unwrap_or(run.created_at)
                        .format("%Y-%m-%d %H:%M UTC"),
                    run.examined,
                    run.recovered
                ),
                "",
            );
        }
    }
    Ok(())
}

/// Refused payments whose order a human must settle.
async fn refused_payment_checks(pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    // Payments the provider reported that proved nothing (an amount or currency missing,
    // malformed or not the order's; a session that took no money): refused, never fulfilled,
    // and a human decides (refund, or pay the order by hand).
    let refused = sqlx::query!(
        r#"SELECT o.public_id, o.status, w.id AS event_row, w.provider, w.event_type, w.last_error
           FROM webhook_event_effects e JOIN webhook_events w ON w.id = e.webhook_event_id
           JOIN orders o ON o.id = e.entity_id
           WHERE e.entity = 'order' AND e.action = 'payment_refused' AND w.status = 'failed'
           ORDER BY w.received_at DESC LIMIT 50"#
    )
    .fetch_all(pool)
    .await?;
    for x in &refused {
        r.push(
            format!("refused payment for order {}", x.public_id),
            Level::Fail,
            format!(
                "{} {} ({}) was refused, the order is {}: {}",
                x.provider,
                x.event_type.clone().unwrap_or_default(),
                x.event_row,
                x.status,
                x.last_error.clone().unwrap_or_default()
            ),
            format!(
                "read it: granary-worker orders timeline {}; check the payment in the provider's dashboard, refund it there or fix the order, then: granary-worker webhooks replay {}",
                x.public_id, x.event_row
            ),
        );
    }
    Ok(())
}

/// Second payments for already paid orders that were not refunded yet.
async fn duplicate_payment_checks(pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    // A second distinct payment for an order another payment already paid: money to give back.
    let duplicates = sqlx::query!(
        r#"SELECT o.public_id, t.provider, t.provider_payment_id, t.amount_cents, t.currency
           FROM payment_transactions t JOIN orders o ON o.id = t.order_id
           WHERE t.kind = 'payment' AND t.status = 'duplicate'
             AND NOT EXISTS (SELECT 1 FROM payment_transactions r WHERE r.order_id = t.order_id AND r.kind = 'refund'
                             AND r.raw->>'payment_intent' = t.provider_payment_id)
           ORDER BY t.created_at DESC LIMIT 50"#
    )
    .fetch_all(pool)
    .await?;
    for d in &duplicates {
        r.push(
            format!("duplicate payment for order {}", d.public_id),
            Level::Warn,
            format!(
                "{} payment {} of {} {} arrived for an order that another payment had already paid",
                d.provider, d.provider_payment_id, d.amount_cents, d.currency
            ),
            format!(
                "refund {} in the {} dashboard (the order keeps its first payment); see granary-worker orders timeline {}",
                d.provider_payment_id, d.provider, d.public_id
            ),
        );
    }
    Ok(())
}

/// Purchasable prices that send the buyer nowhere to pay.
async fn checkout_url_checks(config: &Config, pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    // A purchasable price without a checkout URL: the storefront creates the order and shows it
    // pending, but the buyer is never sent anywhere to pay (seed: "Buy button shows Checkout URL
    // missing").
    // With a Stripe key, a one-time price without a URL is sold through a Checkout Session.
    let no_checkout: Vec<_> = sqlx::query!(
        r#"SELECT p.slug, p.name AS product, pr.id, pr.name, pr.metadata, pr.billing_period
           FROM prices pr JOIN products p ON p.id = pr.product_id
           WHERE granary_purchasable(p, pr) AND coalesce(pr.metadata->>'checkout_url', '') = ''
             AND pr.clerk_plan_id IS NULL
           ORDER BY p.slug, pr.created_at"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .filter(|p| {
        config.stripe.secret_key.is_none()
            || !crate::orders::buyer::sells_through_stripe(&p.metadata, &p.billing_period)
    })
    .collect();
    if !no_checkout.is_empty() {
        let list: Vec<String> = no_checkout
            .iter()
            .map(|p| format!("{} ({}): price \"{}\" {}", p.product, p.slug, p.name, p.id))
            .collect();
        r.push(
            "prices without a checkout URL",
            Level::Warn,
            format!(
                "{} purchasable price(s) send no buyer anywhere to pay (orders stay pending_payment): {}",
                no_checkout.len(),
                list.join("; ")
            ),
            "set STRIPE_SECRET_KEY to sell one-time prices through Stripe Checkout, or give each a checkout URL: PATCH /api/seller/prices/<id>/ with {\"metadata\": {\"checkout_url\": \"https://...\"}}, or map it to a Clerk plan (clerk_plan_id)",
        );
    }
    Ok(())
}

/// Pending orders whose payment reached Granary but was not applied.
async fn stuck_pending_checks(
    pool: &PgPool,
    pending_after: Duration,
    r: &mut Report,
) -> sqlx::Result<()> {
    // Orders still pending whose payment did reach Granary (delivered, or found by a sweep) but
    // was ignored or failed to apply: a customer who paid and got nothing.
    let stuck = sqlx::query!(
        r#"SELECT o.public_id, w.id AS event_row, w.event_id AS "event_id!", w.event_type AS "event_type!",
                  w.status, w.last_error, w.found_by
           FROM orders o
           JOIN webhook_events w ON w.provider = 'stripe' AND w.status IN ('ignored', 'failed')
                AND w.received_at >= o.created_at - interval '1 hour'
                AND w.event_type IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded', 'payment_intent.succeeded')
                AND (convert_from(w.body, 'UTF8')::jsonb #>> '{data,object,client_reference_id}' IN (o.public_id, o.id::text)
                     OR convert_from(w.body, 'UTF8')::jsonb #>> '{data,object,metadata,order_id}' IN (o.public_id, o.id::text))
           WHERE o.status = 'pending' AND o.created_at < now() - make_interval(secs => $1)
           ORDER BY o.created_at LIMIT 50"#,
        pending_after.as_secs_f64()
    )
    .fetch_all(pool)
    .await?;
    for s in &stuck {
        r.push(
            format!("pending order {}", s.public_id),
            Level::Fail,
            format!(
                "still pending_payment after {} min, yet Stripe reported its payment ({} {}, {} by {}) and it was {}: {}",
                pending_after.as_secs() / 60,
                s.event_type,
                s.event_id,
                if s.found_by == "reconciliation" { "found" } else { "delivered" },
                if s.found_by == "reconciliation" { "the reconciliation sweep" } else { "webhook" },
                s.status,
                s.last_error.clone().unwrap_or_default()
            ),
            format!(
                "read the event: granary-worker webhooks show {}; fix what it names (the price's amount or currency, the order reference), then: granary-worker webhooks replay {}",
                s.event_row, s.event_row
            ),
        );
    }
    Ok(())
}

async fn storage_check(config: &Config, r: &mut Report) {
    let storage = match Storage::from_config(config) {
        Ok(s) => s,
        Err(e) => {
            let fix = match &config.storage {
                StorageConfig::Unavailable { backend, .. } if backend == "s3" => {
                    "set ASSET_STORAGE_BUCKET, ASSET_STORAGE_S3_ACCESS_KEY_ID, ASSET_STORAGE_S3_SECRET_ACCESS_KEY (and ASSET_STORAGE_S3_ENDPOINT_URL for non-AWS)"
                }
                StorageConfig::Unavailable { backend, .. } if backend == "supabase" => {
                    "set SUPABASE_URL, ASSET_STORAGE_BUCKET and the S3 access keys from Supabase Dashboard → Storage → S3"
                }
                _ => "check ASSET_STORAGE_BACKEND and its settings",
            };
            r.push(
                "storage",
                Level::Fail,
                format!("{e}; downloads and asset uploads answer 503 storage_unavailable"),
                fix,
            );
            return;
        }
    };
    let key = format!("granary-doctor/probe-{}.txt", uuid::Uuid::new_v4().simple());
    let op = storage.operator();
    let result = async {
        op.write(&key, "granary doctor probe").await?;
        let back = op.read(&key).await?.to_vec();
        if back != b"granary doctor probe" {
            return Err(opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                "read back different bytes",
            ));
        }
        storage
            .signed_url(
                &key,
                "probe.txt",
                Duration::from_secs(60),
                "http://localhost",
                None,
            )
            .await?;
        op.delete(&key).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => r.push(
            "storage",
            Level::Ok,
            format!(
                "{}: write, read, sign and delete of a probe object work",
                storage.backend
            ),
            "",
        ),
        Err(e) => r.push(
            "storage",
            Level::Fail,
            format!("{}: the probe object failed: {e}", storage.backend),
            "check the bucket, credentials and endpoint (or the fs root's permissions)",
        ),
    }
}

/// The checks of the shop's state: catalog, credits, jobs, workers, webhooks and paid orders.
async fn shop_checks(
    config: &Config,
    pool: &PgPool,
    unfulfilled_after: Duration,
    r: &mut Report,
) -> sqlx::Result<()> {
    catalog_checks(pool, r).await?;
    credit_shortfall_checks(pool, r).await?;
    failed_job_checks(pool, r).await?;
    worker_checks(config, pool, r).await?;
    webhook_checks(pool, r).await?;
    paid_order_checks(pool, unfulfilled_after, r).await?;
    let _ = json!({});
    Ok(())
}

/// Products missing from the catalog (not published, or without an active price).
async fn catalog_checks(pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    let invisible = sqlx::query!(
        r#"SELECT p.slug, p.visibility,
                  EXISTS (SELECT 1 FROM prices pr WHERE pr.product_id = p.id AND pr.is_active AND pr.deleted_at IS NULL) AS "has_price!"
           FROM products p WHERE p.deleted_at IS NULL AND p.visibility <> 'archived'
             AND NOT EXISTS (SELECT 1 FROM prices pr WHERE pr.product_id = p.id AND granary_purchasable(p, pr))
           ORDER BY p.slug"#
    )
    .fetch_all(pool)
    .await?;
    for p in &invisible {
        let mut why = Vec::new();
        if p.visibility != "published" {
            why.push(format!("not published (visibility {})", p.visibility));
        }
        if !p.has_price {
            why.push("no active price".to_string());
        }
        r.push(
            format!("product {}", p.slug),
            Level::Warn,
            format!("invisible in the catalog: {}", why.join(", ")),
            "set visibility to published and make sure an active price exists",
        );
    }
    if invisible.is_empty() {
        r.push("catalog", Level::Ok, "every product is visible", "");
    }
    Ok(())
}

/// Refunds of credit packs that were already partly spent: the shop gave away the shortfall.
async fn credit_shortfall_checks(pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    let shortfalls = sqlx::query!(
        r#"SELECT p.clerk_user_id, c.unit, c.shortfall, o.public_id AS "public_id?"
           FROM credit_entries c JOIN profiles p ON p.id = c.profile_id LEFT JOIN orders o ON o.id = c.order_id
           WHERE c.shortfall > 0 AND c.created_at > now() - interval '30 days' ORDER BY c.id DESC LIMIT 20"#
    )
    .fetch_all(pool)
    .await?;
    for s in &shortfalls {
        r.push(
            format!("credits of {}", s.clerk_user_id),
            Level::Warn,
            format!(
                "{} {} were already spent when order {} was refunded: the balance stopped at zero",
                s.shortfall,
                s.unit,
                s.public_id.as_deref().unwrap_or("?")
            ),
            "decide whether to recover them; `granary-worker credits show <user>` has the ledger",
        );
    }
    Ok(())
}

/// Jobs out of attempts, per queue.
async fn failed_job_checks(pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    let failed = sqlx::query!(
        r#"SELECT queue, count(*) AS "n!" FROM jobs WHERE state = 'failed' GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(pool)
    .await?;
    if failed.is_empty() {
        r.push("failed jobs", Level::Ok, "none", "");
    }
    for f in failed {
        r.push(
            format!("failed jobs: {}", f.queue),
            Level::Fail,
            format!("{} job(s) out of attempts", f.n),
            format!(
                "inspect: granary-worker jobs list --state failed --kind {}; then requeue",
                f.queue
            ),
        );
    }
    Ok(())
}

/// Jobs held by silent workers, and overdue jobs with no live worker to run them.
async fn worker_checks(config: &Config, pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    let bound = config.worker.rescue_bound();
    let stuck: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM jobs j LEFT JOIN job_workers w ON w.id = j.locked_by
           WHERE j.state = 'running' AND (w.last_seen IS NULL OR w.last_seen < now() - make_interval(secs => $1))"#,
        bound.as_secs_f64() * 2.0
    )
    .fetch_one(pool)
    .await?;
    if stuck > 0 {
        r.push(
            "stuck jobs",
            Level::Fail,
            format!(
                "{stuck} job(s) claimed by workers silent for over twice the rescue bound ({} s)",
                bound.as_secs() * 2
            ),
            "start a worker (granary-worker run): it rescues them",
        );
    } else {
        r.push("stuck jobs", Level::Ok, "none", "");
    }
    let workers: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM job_workers WHERE last_seen > now() - make_interval(secs => $1)"#, bound.as_secs_f64()).fetch_one(pool).await?;
    let pending: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM jobs WHERE state IN ('pending', 'retrying') AND run_at < now() - interval '1 minute'"#).fetch_one(pool).await?;
    if workers == 0 && pending > 0 {
        r.push(
            "workers",
            Level::Fail,
            format!("no live worker, and {pending} job(s) overdue by more than a minute"),
            "start the worker process: granary-worker run (Procfile `worker`)",
        );
    } else {
        r.push(
            "workers",
            Level::Ok,
            format!("{workers} live worker queue(s)"),
            "",
        );
    }
    Ok(())
}

/// Webhooks rejected in the last 24 hours, and stored events that failed to apply.
async fn webhook_checks(pool: &PgPool, r: &mut Report) -> sqlx::Result<()> {
    let rejected = sqlx::query!(
        r#"SELECT provider, rejection_reason AS "reason!", count(*) AS "n!" FROM webhook_events
           WHERE status = 'rejected' AND received_at > now() - interval '24 hours' GROUP BY 1, 2 ORDER BY 3 DESC"#
    )
    .fetch_all(pool)
    .await?;
    if rejected.is_empty() {
        r.push("rejected webhooks (24 h)", Level::Ok, "none", "");
    }
    for x in rejected {
        let (what, fix) = explain_rejection(&x.provider, &x.reason);
        r.push(
            format!("rejected {} webhooks (24 h)", x.provider),
            Level::Fail,
            format!("{} × {what} ({})", x.n, x.reason),
            fix,
        );
    }
    let failed_events: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM webhook_events WHERE status = 'failed'"#
    )
    .fetch_one(pool)
    .await?;
    if failed_events > 0 {
        r.push("webhook events", Level::Fail, format!("{failed_events} stored event(s) failed to apply"), "inspect: granary-worker webhooks list --status failed; fix the cause, then webhooks replay");
    }
    Ok(())
}

/// Paid orders still waiting for fulfillment after `unfulfilled_after`.
async fn paid_order_checks(
    pool: &PgPool,
    unfulfilled_after: Duration,
    r: &mut Report,
) -> sqlx::Result<()> {
    let late = sqlx::query!(
        r#"SELECT public_id, paid_at AS "paid_at!" FROM orders WHERE status = 'paid' AND paid_at < now() - make_interval(secs => $1) ORDER BY paid_at LIMIT 20"#,
        unfulfilled_after.as_secs_f64()
    )
    .fetch_all(pool)
    .await?;
    if late.is_empty() {
        r.push(
            "paid orders",
            Level::Ok,
            format!(
                "none waiting for fulfillment over {} min",
                unfulfilled_after.as_secs() / 60
            ),
            "",
        );
    } else {
        let ids: Vec<_> = late.iter().map(|o| o.public_id.clone()).collect();
        r.push(
            "paid orders not fulfilled",
            Level::Fail,
            format!("{} paid order(s) not fulfilled after {} min: {}", late.len(), unfulfilled_after.as_secs() / 60, ids.join(", ")),
            "see what happened: granary-worker orders timeline <public_id>; then granary-worker orders requeue <public_id>",
        );
    }
    Ok(())
}
