//! `granary-worker`: runs the job runtime, migrates the database, and carries the operator's
//! commands (the same operations as `/api/admin/...`). Only wiring lives here; the logic is in
//! `granary-jobs`.
#![forbid(unsafe_code)]

mod output;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, builder::PossibleValuesParser};
use granary_jobs::{
    Config,
    model::{RunStatus, WebhookStatus},
    operator::{
        doctor,
        reads::{self, JobFilter, WebhookFilter},
    },
    platform::{
        audit::{self, Actor},
        db,
    },
    providers::Provider,
    queue::JobState,
};
use serde_json::{Value, json};
use sqlx::PgPool;

#[derive(Parser)]
#[command(
    name = "granary-worker",
    version,
    about = "Granary's worker and operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (the default when no command is given).
    Run,
    /// Apply every pending migration (the queue's and Granary's), then exit.
    Migrate,
    /// Check configuration, database, storage, email, Clerk, webhooks and the shop's state;
    /// exits non-zero when anything is wrong.
    Doctor {
        /// Also call Resend to validate the API key.
        #[arg(long)]
        live: bool,
        /// Paid orders not fulfilled after this many minutes are reported.
        #[arg(long, default_value_t = 15)]
        unfulfilled_minutes: u64,
        /// Orders pending this many minutes are checked for payments that arrived unapplied.
        #[arg(long, default_value_t = 30)]
        pending_minutes: u64,
    },
    /// Jobs: list, show, requeue, cancel.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Orders: requeue failed jobs, timeline.
    #[command(subcommand)]
    Orders(OrdersCmd),
    /// Webhook deliveries: list, show, replay.
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// Users: grant a role.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Credits: show a user's ledger, add or remove credits.
    #[command(subcommand)]
    Credits(CreditsCmd),
    /// Run a reconciliation sweep now: list Stripe's payment events of the window and apply
    /// those no webhook delivered; pull stale Clerk subscriptions. Prints what it found and did.
    Reconcile {
        /// RFC 3339 time, or an age like 30m, 24h, 7d (Stripe keeps events for 30 days).
        #[arg(long, default_value = "24h")]
        since: String,
        /// stripe, clerk, or all configured.
        #[arg(long, default_value = "all")]
        provider: String,
        /// How long to wait for a worker to run the sweep and apply what it found.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Download grants: give back downloads, or take a grant away.
    #[command(subcommand)]
    Grants(GrantsCmd),
    /// The operator console (`/console/`): login links and sessions.
    #[command(subcommand)]
    Console(ConsoleCmd),
    /// Enqueue a canary job and wait for a worker to run it.
    Probe {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum ConsoleCmd {
    /// Print a one-time login link for the console (opened once, before it expires).
    LoginLink {
        /// How long the link stays valid: 90s, 15m, 2h (at most 24h).
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
    /// List live console sessions.
    Sessions,
    /// End console sessions: one by id, or all.
    Logout {
        /// The session's id (from `console sessions`).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<uuid::Uuid>,
        /// Every live session.
        #[arg(long)]
        all: bool,
    },
}

/// `90s`, `15m`, `2h`, `1d`.
fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let ttl = granary_jobs::platform::bounds::parse_span(s).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!ttl.is_zero(), "`{s}`: a link must live a while");
    anyhow::ensure!(
        ttl <= granary_jobs::operator::console::LINK_TTL_MAX,
        "`{s}`: a login link lives at most 24h"
    );
    Ok(ttl)
}

#[derive(Args)]
struct Why {
    /// Why (kept in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Subcommand)]
enum JobsCmd {
    /// List jobs with counts per state and queue.
    List {
        /// pending, running, retrying, failed, cancelled, completed.
        #[arg(long, value_parser = PossibleValuesParser::new(JobState::ALL.map(JobState::as_str)))]
        state: Option<String>,
        /// Job kind (queue).
        #[arg(long)]
        kind: Option<String>,
        /// Order public id.
        #[arg(long)]
        order: Option<String>,
        /// RFC 3339 time, or an age like 30m, 24h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one job with its payload and every attempt.
    Show { id: String },
    /// Requeue a failed or cancelled job.
    Requeue {
        id: String,
        #[command(flatten)]
        why: Why,
    },
    /// Cancel a waiting or failed job.
    Cancel {
        id: String,
        #[command(flatten)]
        why: Why,
    },
}

#[derive(Subcommand)]
enum CreditsCmd {
    /// A user's balances and newest ledger entries.
    Show {
        /// Clerk user id.
        clerk_user_id: String,
    },
    /// Add (positive) or remove (negative) credits; `--reason` is required and audited.
    Adjust {
        /// Clerk user id.
        clerk_user_id: String,
        /// Unit (`tokens`, ...).
        unit: String,
        /// Signed amount, e.g. 500 or -200.
        #[arg(allow_hyphen_values = true)]
        amount: i64,
        #[command(flatten)]
        why: Why,
    },
}

#[derive(Subcommand)]
enum GrantsCmd {
    /// Reset a grant's used downloads to 0 (for a customer who ran out), optionally allowing
    /// more and extending its expiry.
    Reset {
        /// Grant id (on the order's timeline).
        grant: uuid::Uuid,
        /// Downloads added to the limit.
        #[arg(long)]
        add: Option<i32>,
        /// Extend the expiry, e.g. 7d or 12h (from now, or from the expiry if later).
        #[arg(long)]
        extend: Option<String>,
        #[command(flatten)]
        why: Why,
    },
    /// Revoke a grant: its downloads stop at once.
    Revoke {
        /// Grant id.
        grant: uuid::Uuid,
        #[command(flatten)]
        why: Why,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Make a Clerk user a buyer, seller or admin (with SELLER_ACCESS=role, only sellers and
    /// admins may use the seller API).
    SetRole {
        /// Clerk user id (`user_...`).
        clerk_user_id: String,
        /// buyer, seller or admin.
        role: String,
        #[command(flatten)]
        why: Why,
    },
}

#[derive(Subcommand)]
enum OrdersCmd {
    /// Requeue every failed job of an order.
    Requeue {
        public_id: String,
        #[command(flatten)]
        why: Why,
    },
    /// Everything that happened to an order, from webhook to email, in time order.
    Timeline { public_id: String },
    /// Refund an order paid through Stripe (queues the refund_payment job; audited).
    Refund {
        public_id: String,
        /// Minor units; without it, everything not yet refunded.
        #[arg(long)]
        amount: Option<i64>,
        #[command(flatten)]
        why: Why,
    },
}

#[derive(Subcommand)]
enum WebhooksCmd {
    /// List stored deliveries (rejected ones included).
    List {
        /// clerk or stripe.
        #[arg(long, value_parser = PossibleValuesParser::new(Provider::ALL.map(Provider::as_str)))]
        provider: Option<String>,
        /// received, processed, ignored, failed, rejected.
        #[arg(long, value_parser = PossibleValuesParser::new(WebhookStatus::ALL.map(WebhookStatus::as_str)))]
        status: Option<String>,
        /// Event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// RFC 3339 time, or an age like 30m, 24h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one delivery: headers (signatures redacted) and the exact body.
    Show { id: uuid::Uuid },
    /// Apply a stored event again (convergent: an applied event changes nothing).
    Replay {
        id: uuid::Uuid,
        #[command(flatten)]
        why: Why,
    },
    /// Replay every failed event received in a time range.
    ReplayFailed {
        /// RFC 3339 time, or an age like 24h.
        #[arg(long)]
        since: String,
        /// RFC 3339 time (default: now).
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        why: Why,
    },
}

/// `2026-11-23T10:00:00Z`, or an age: `30m`, `24h`, `7d`.
fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = granary_jobs::platform::bounds::parse_span(s)
        .map_err(|e| anyhow::anyhow!("{e} (give RFC 3339, or an age like 30m, 24h, 7d)"))?;
    // At most MAX_DAYS: always in range.
    Ok(Utc::now() - chrono::Duration::from_std(age)?)
}

fn actor(why: &Why) -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    Actor {
        name: format!("cli:{user}"),
        reason: why.reason.clone(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) if matches!(command, Command::Doctor { .. }) => {
            output::doctor(&doctor::Report::from_config_error(&e), cli.json);
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("granary-worker cannot start: {e}");
            std::process::exit(2);
        }
    };
    let quiet = !matches!(command, Command::Run);
    granary_jobs::platform::telemetry::init(!config.is_development() && !quiet);
    if !quiet {
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
    }
    match command {
        Command::Migrate => {
            let pool = db::pool(&config, 2)?;
            db::migrate(&pool).await?;
            println!("migrations applied; the database is current");
            Ok(())
        }
        Command::Run => run_worker(config).await,
        Command::Doctor {
            live,
            unfulfilled_minutes,
            pending_minutes,
        } => {
            let pool = db::pool(&config, 2)?;
            let report = doctor::run(
                &config,
                &pool,
                doctor::Options {
                    live,
                    unfulfilled_after: Duration::from_secs(unfulfilled_minutes * 60),
                    pending_after: Duration::from_secs(pending_minutes * 60),
                },
            )
            .await;
            output::doctor(&report, cli.json);
            std::process::exit(if report.failed() { 1 } else { 0 });
        }
        Command::Console(cmd) => {
            let pool = db::pool(&config, 2)?;
            console(&pool, &config, cmd, cli.json).await
        }
        Command::Reconcile {
            since,
            provider,
            wait,
        } => {
            let pool = db::pool(&config, 2)?;
            let ok = reconcile_now(&pool, &config, &since, &provider, wait, cli.json).await?;
            std::process::exit(if ok { 0 } else { 1 });
        }
        other => {
            let pool = db::pool(&config, 2)?;
            operate(&pool, other, cli.json).await
        }
    }
}

/// Starts the worker: signal handling, the pool, the private metrics server, the job runtime.
async fn run_worker(config: Config) -> anyhow::Result<()> {
    // First, so that a SIGTERM during startup is a clean exit.
    let token = tokio_util::sync::CancellationToken::new();
    granary_jobs::platform::shutdown::cancel_on_signal(token.clone());
    let registry = granary_jobs::registry::registry();
    let pool = db::pool(
        &config,
        config.database_pool_size.unwrap_or(20) + registry.held_connections(),
    )?;
    db::ensure_migrated(&pool)
        .await
        .context("the worker cannot start")?;
    let config = Arc::new(config);
    if config.metrics_bind.is_some() {
        granary_jobs::platform::metrics::install();
    }
    granary_jobs::platform::metrics::spawn_private(&config, &pool, registry.queues(), &token);
    let result = granary_jobs::registry::run(pool.clone(), config, registry, token).await;
    pool.close().await;
    result
}

/// `granary-worker console ...`.
async fn console(
    pool: &PgPool,
    config: &Config,
    cmd: ConsoleCmd,
    as_json: bool,
) -> anyhow::Result<()> {
    use granary_jobs::operator::console;
    let me = actor(&Why { reason: None }).name;
    match cmd {
        ConsoleCmd::LoginLink { ttl } => {
            let (token, expires_at) =
                console::create_login_link(pool, &me, parse_ttl(&ttl)?).await?;
            let mut url = config.public_url.join("/console/login")?;
            url.query_pairs_mut().append_pair("token", &token);
            if as_json {
                println!(
                    "{}",
                    json!({ "url": url.as_str(), "expires_at": expires_at })
                );
            } else {
                println!("{url}");
                eprintln!(
                    "One-time link, valid until {expires_at} (UTC). Open it in your browser."
                );
            }
        }
        ConsoleCmd::Sessions => {
            let rows = console::sessions(pool).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                output::console_sessions(&rows);
            }
        }
        ConsoleCmd::Logout { id, all } => {
            let n = console::end_sessions(pool, if all { None } else { id }, &me).await?;
            println!("{n} session(s) ended");
        }
    }
    Ok(())
}

/// `granary-worker reconcile`: queues the sweeps as jobs, waits for a worker to run them and
/// apply what they found, and prints it. True when every sweep succeeded.
async fn reconcile_now(
    pool: &PgPool,
    config: &Config,
    since: &str,
    provider: &str,
    wait: u64,
    as_json: bool,
) -> anyhow::Result<bool> {
    use granary_jobs::operator::reconcile::{self, Trigger};
    let since = parse_time(since)?;
    let providers = match provider {
        "all" => reconcile::configured(config),
        other => match Provider::parse(other) {
            Some(p) => vec![p],
            None => anyhow::bail!("`{other}`: use stripe, clerk or all"),
        },
    };
    anyhow::ensure!(
        !providers.is_empty(),
        "nothing to reconcile: set STRIPE_SECRET_KEY (and/or CLERK_SECRET_KEY)"
    );
    let mut runs = Vec::new();
    for p in providers {
        let q = reconcile::enqueue(pool, p, Trigger::Operator, Some(since)).await?;
        runs.push((
            q.run_id.context("an operator's sweep is always new")?,
            q.job_id,
        ));
    }
    let mut ok = true;
    let mut all = Vec::new();
    for (run_id, job_id) in runs {
        let run = reconcile::wait_for(pool, run_id, Duration::from_secs(wait))
            .await?
            .context("the sweep's run row vanished")?;
        if run.status != RunStatus::Succeeded {
            ok = false;
        }
        if !as_json {
            output::reconcile_run(&run, &job_id);
        }
        all.push(run);
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(ok)
}

/// The operator's commands that read or change the shop's state (everything but the worker,
/// migrations, doctor, reconcile and console, which `main` handles).
async fn operate(pool: &PgPool, command: Command, as_json: bool) -> anyhow::Result<()> {
    match command {
        Command::Jobs(cmd) => jobs_command(pool, cmd, as_json).await?,
        Command::Orders(cmd) => orders_command(pool, cmd, as_json).await?,
        Command::Users(cmd) => users_command(pool, cmd, as_json).await?,
        Command::Grants(cmd) => grants_command(pool, cmd, as_json).await?,
        Command::Credits(cmd) => credits_command(pool, cmd, as_json).await?,
        Command::Webhooks(cmd) => webhooks_command(pool, cmd, as_json).await?,
        Command::Probe { timeout } => probe(pool, timeout, as_json).await?,
        Command::Run
        | Command::Migrate
        | Command::Doctor { .. }
        | Command::Reconcile { .. }
        | Command::Console(_) => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}

/// Prints `v` as pretty JSON when `as_json`, else with its table printer.
fn show(as_json: bool, v: Value, table: fn(&Value)) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        table(&v);
    }
}

/// `granary-worker jobs ...`.
async fn jobs_command(pool: &PgPool, cmd: JobsCmd, as_json: bool) -> anyhow::Result<()> {
    let out = |v: Value, table: fn(&Value)| show(as_json, v, table);
    match cmd {
        JobsCmd::List {
            state,
            kind,
            order,
            since,
            limit,
        } => {
            let since = since.as_deref().map(parse_time).transpose()?;
            let f = JobFilter {
                state,
                kind,
                order,
                since,
                limit: Some(limit),
                ..JobFilter::default()
            };
            output::jobs(&reads::list_jobs(pool, &f).await?, as_json);
        }
        JobsCmd::Show { id } => {
            let job = reads::show_job(pool, &id)
                .await?
                .with_context(|| format!("no job with id {id}"))?;
            output::job(&job, as_json);
        }
        JobsCmd::Requeue { id, why } => {
            audit::requeue_job(pool, &id, &actor(&why)).await?;
            out(json!({ "requeued": [id] }), output::plain);
        }
        JobsCmd::Cancel { id, why } => {
            audit::cancel_job(pool, &id, &actor(&why)).await?;
            out(json!({ "cancelled": id }), output::plain);
        }
    }
    Ok(())
}

/// `granary-worker orders ...`.
async fn orders_command(pool: &PgPool, cmd: OrdersCmd, as_json: bool) -> anyhow::Result<()> {
    let out = |v: Value, table: fn(&Value)| show(as_json, v, table);
    match cmd {
        OrdersCmd::Requeue { public_id, why } => {
            let order = reads::order_id(pool, &public_id)
                .await?
                .with_context(|| format!("no order {public_id}"))?;
            let ids = audit::requeue_order_jobs(pool, order, &actor(&why)).await?;
            out(
                json!({ "order": public_id, "requeued": ids }),
                output::plain,
            );
        }
        OrdersCmd::Refund {
            public_id,
            amount,
            why,
        } => {
            let input = granary_jobs::orders::refunds::RefundInput {
                amount_cents: amount,
                reason: why.reason.clone(),
            };
            let queued = granary_jobs::orders::refunds::request(
                pool,
                &public_id,
                granary_jobs::orders::refunds::Scope::Operator,
                input,
                &actor(&why),
            )
            .await?;
            out(serde_json::to_value(&queued)?, output::plain);
        }
        OrdersCmd::Timeline { public_id } => {
            let t = reads::timeline(pool, &public_id)
                .await?
                .with_context(|| format!("no order {public_id}"))?;
            output::timeline(&t, as_json);
        }
    }
    Ok(())
}

/// `granary-worker users ...`.
async fn users_command(pool: &PgPool, cmd: UsersCmd, as_json: bool) -> anyhow::Result<()> {
    let out = |v: Value, table: fn(&Value)| show(as_json, v, table);
    match cmd {
        UsersCmd::SetRole {
            clerk_user_id,
            role,
            why,
        } => {
            let previous =
                granary_jobs::profiles::set_role(pool, &clerk_user_id, &role, &actor(&why)).await?;
            out(
                json!({ "user": clerk_user_id, "role": role, "previous_role": previous }),
                output::plain,
            );
        }
    }
    Ok(())
}

/// `granary-worker grants ...`.
async fn grants_command(pool: &PgPool, cmd: GrantsCmd, as_json: bool) -> anyhow::Result<()> {
    let out = |v: Value, table: fn(&Value)| show(as_json, v, table);
    match cmd {
        GrantsCmd::Reset {
            grant,
            add,
            extend,
            why,
        } => {
            let extend = extend
                .as_deref()
                .map(granary_jobs::platform::bounds::parse_span)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let state = granary_jobs::downloads::reset_grant(
                pool,
                grant,
                granary_jobs::downloads::Reset { add, extend },
                &actor(&why),
            )
            .await?;
            out(serde_json::to_value(state)?, output::plain);
        }
        GrantsCmd::Revoke { grant, why } => {
            let state = granary_jobs::downloads::revoke_grant(pool, grant, &actor(&why)).await?;
            out(serde_json::to_value(state)?, output::plain);
        }
    }
    Ok(())
}

/// `granary-worker credits ...`.
async fn credits_command(pool: &PgPool, cmd: CreditsCmd, as_json: bool) -> anyhow::Result<()> {
    let out = |v: Value, table: fn(&Value)| show(as_json, v, table);
    match cmd {
        CreditsCmd::Show { clerk_user_id } => {
            let profile = granary_jobs::billing::credits::profile_of(pool, &clerk_user_id).await?;
            let summary = granary_jobs::billing::credits::summary(pool, profile).await?;
            out(serde_json::to_value(summary)?, output::pretty);
        }
        CreditsCmd::Adjust {
            clerk_user_id,
            unit,
            amount,
            why,
        } => {
            let balance = granary_jobs::billing::credits::adjust(
                pool,
                &clerk_user_id,
                &unit,
                amount,
                &actor(&why),
            )
            .await?;
            out(
                json!({ "user": clerk_user_id, "unit": unit, "balance": balance }),
                output::plain,
            );
        }
    }
    Ok(())
}

/// `granary-worker webhooks ...`.
async fn webhooks_command(pool: &PgPool, cmd: WebhooksCmd, as_json: bool) -> anyhow::Result<()> {
    let out = |v: Value, table: fn(&Value)| show(as_json, v, table);
    match cmd {
        WebhooksCmd::List {
            provider,
            status,
            event_type,
            since,
            limit,
        } => {
            let since = since.as_deref().map(parse_time).transpose()?;
            let f = WebhookFilter {
                provider,
                status,
                event_type,
                since,
                limit: Some(limit),
                offset: None,
            };
            output::webhooks(&reads::list_webhooks(pool, &f).await?, as_json);
        }
        WebhooksCmd::Show { id } => {
            let w = reads::show_webhook(pool, id)
                .await?
                .with_context(|| format!("no webhook event {id}"))?;
            output::webhook(&w);
        }
        WebhooksCmd::Replay { id, why } => {
            let job = granary_jobs::webhooks::ingest::replay(pool, id, &actor(&why)).await?;
            out(json!({ "replayed": id, "job_id": job }), output::plain);
        }
        WebhooksCmd::ReplayFailed { since, until, why } => {
            let since = parse_time(&since)?;
            let until = until
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or_else(Utc::now);
            let ids = reads::replay_failed(pool, since, until, &actor(&why)).await?;
            out(json!({ "replayed": ids }), output::plain);
        }
    }
    Ok(())
}

/// `granary-worker probe`: enqueues a probe job and waits for a worker to run it.
async fn probe(pool: &PgPool, timeout: u64, as_json: bool) -> anyhow::Result<()> {
    let out = |v: Value, table: fn(&Value)| show(as_json, v, table);
    let key = format!("cli-{}", uuid::Uuid::new_v4().simple());
    let mut tx = pool.begin().await?;
    let job = granary_jobs::queue::enqueue(
        &mut tx,
        &granary_jobs::queue::probe::Probe {
            key: key.clone(),
            ..Default::default()
        },
    )
    .await?;
    tx.commit().await?;
    let started = std::time::Instant::now();
    loop {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM job_probe_effects WHERE probe_key = $1)",
        )
        .bind(&key)
        .fetch_one(pool)
        .await?;
        if done {
            out(
                json!({ "probe": job.id(), "ran_after_ms": started.elapsed().as_millis() }),
                output::plain,
            );
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(timeout),
            "no worker ran probe job {} within {timeout} s: is `granary-worker run` running?",
            job.id()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
