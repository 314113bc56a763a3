//! `granary-worker`: runs the job runtime, migrates the database, and carries the operator's
//! commands. Only wiring lives here; the logic is in `granary-jobs`.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use granary_jobs::{Config, db};

#[derive(Parser)]
#[command(
    name = "granary-worker",
    version,
    about = "Granary's worker and operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (the default when no command is given).
    Run,
    /// Apply every pending migration (the queue's and Granary's), then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    granary_jobs::telemetry::init(!config.is_development());
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => {
            let pool = db::pool(&config, 2)?;
            db::migrate(&pool).await?;
            println!("migrations applied; the database is current");
            Ok(())
        }
        Command::Run => {
            let pool = db::pool(&config, 10)?;
            db::ensure_migrated(&pool)
                .await
                .context("the worker cannot start")?;
            let token = tokio_util::sync::CancellationToken::new();
            granary_jobs::shutdown::cancel_on_signal(token.clone());
            let result = granary_jobs::queue::runtime::run(
                pool.clone(),
                std::sync::Arc::new(config),
                granary_jobs::handlers::registry(),
                token,
            )
            .await;
            pool.close().await;
            result
        }
    }
}
