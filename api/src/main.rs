//! `granary-api`: serves the HTTP API; `--with-worker` also runs the job runtime in-process, and
//! `dev` is the one command that runs the whole system on embedded defaults.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use granary_api::AppState;
use granary_jobs::{Config, platform::db};
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "granary-api", version, about = "Granary's HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Also run the job runtime in this process (development, small deployments).
    #[arg(long, global = true)]
    with_worker: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Development: create and migrate the database, run the API and the worker together, on
    /// embedded defaults (local storage under var/storage, emails to the outbox table,
    /// development tokens trusted).
    Dev,
    /// Development: print a session token for a user, signed by the local development key
    /// (trusted when GRANARY_DEV_AUTH=true, which `dev` turns on), and set the user's role.
    Token {
        /// The Clerk-style user id (the token's `sub`).
        #[arg(long, default_value = "user_dev")]
        user: String,
        /// buyer, seller or admin.
        #[arg(long, default_value = "buyer")]
        role: String,
        /// Email claim.
        #[arg(long)]
        email: Option<String>,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 12)]
        hours: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dev = matches!(cli.command, Some(Command::Dev));
    let config = load_config(dev);
    granary_jobs::platform::telemetry::init(!config.is_development());
    if let Some(Command::Token {
        user,
        role,
        email,
        hours,
    }) = &cli.command
    {
        return dev_token(&config, user, role, email.as_deref(), *hours).await;
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if dev {
        anyhow::ensure!(
            config.is_development(),
            "`granary-api dev` is for development; APP_ENV is production"
        );
        db::create_database_if_missing(config.database_url.expose_secret()).await?;
    }
    let with_worker = cli.with_worker || dev;
    let registry = granary_jobs::registry::registry();
    let held = if with_worker {
        registry.held_connections()
    } else {
        0
    };
    let pool = db::pool(&config, config.database_pool_size.unwrap_or(20) + held)?;
    if dev {
        db::migrate(&pool).await?;
    }
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    granary_jobs::platform::shutdown::cancel_on_signal(shutdown.clone());

    let worker = if with_worker {
        db::ensure_migrated(&pool)
            .await
            .context("the in-process worker cannot start")?;
        let (pool, config, token) = (pool.clone(), config.clone(), shutdown.clone());
        Some(tokio::spawn(async move {
            granary_jobs::registry::run(pool, config, registry, token).await
        }))
    } else {
        None
    };

    let addr: SocketAddr = format!("{}:{}", config.bind_host, config.port)
        .parse()
        .context("BIND_HOST/PORT do not form an address")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, with_worker, "granary-api listening");
    if dev {
        print_dev_banner(&config, local);
    }
    let state = AppState::new((*config).clone(), pool.clone());
    let served = granary_api::serve(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(worker) = worker {
        worker.await.context("worker task panicked")??;
    }
    pool.close().await;
    served.context("server error")
}

/// Reads the configuration (with `dev`'s defaults), or exits 2 saying why it cannot start.
fn load_config(dev: bool) -> Config {
    // The one-command setup trusts local development tokens (`granary-api token`) and lets
    // every signed-in user sell (the starter's rule, so the storefront's "Create Offer Fast"
    // works on the first click), unless told otherwise; config validation refuses dev tokens in
    // production, and `serve` keeps `SELLER_ACCESS=role`.
    let defaults: &[(&str, &str)] = if dev {
        &[("GRANARY_DEV_AUTH", "true"), ("SELLER_ACCESS", "any")]
    } else {
        &[]
    };
    match Config::from_env_with_defaults(defaults) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("granary-api cannot start: {e}");
            std::process::exit(2);
        }
    }
}

/// `granary-api token`: sets the user's role on their profile and prints a development token.
async fn dev_token(
    config: &Config,
    user: &str,
    role: &str,
    email: Option<&str>,
    hours: i64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.is_development(),
        "development tokens exist only in development"
    );
    let role =
        granary_jobs::model::Role::parse(role).context("--role must be buyer, seller or admin")?;
    let pool = db::pool(config, 2)?;
    // Roles live on the profile: set it, so the token acts with this role.
    let facts = granary_jobs::profiles::ProfileFacts {
        clerk_user_id: user,
        email,
        role: Some(role),
        ..Default::default()
    };
    granary_jobs::profiles::upsert(&pool, &facts)
        .await
        .context(
            "setting the user's role (is the database migrated? run `granary-api dev` once)",
        )?;
    println!("{}", granary_api::auth::dev::token(user, email, hours)?);
    Ok(())
}

/// `granary-api dev`'s banner: where the system runs and how to use it.
fn print_dev_banner(config: &Config, local: SocketAddr) {
    println!("\nGranary is running (api + worker) on http://{local}");
    println!("  health:    curl http://{local}/api/health/");
    println!("  catalog:   curl http://{local}/api/products/");
    println!("  a token:   cargo run --bin granary-api -- token --user user_seller --role seller");
    println!("  contract:  curl http://{local}/api/openapi.json");
    println!(
        "  storage:   local files under {:?}; emails: the `emails` table (status outbox)",
        match &config.storage {
            granary_jobs::config::StorageConfig::Fs { root } => root.display().to_string(),
            _ => "the configured backend".into(),
        }
    );
    println!(
        "  sellers:   SELLER_ACCESS={} ({})",
        config.seller_access.as_str(),
        match config.seller_access {
            granary_jobs::config::SellerAccess::Any => {
                "every signed-in user may sell; production's default is `role`"
            }
            granary_jobs::config::SellerAccess::Role => {
                "only sellers: granary-worker users set-role <user> seller"
            }
        }
    );
    println!("  stop:      ctrl-c\n");
}
