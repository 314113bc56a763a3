//! Connecting to PostgreSQL and migrating it.

use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::config::Config;

/// Granary's own migrations (`migrations/` at the workspace root).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens the connection pool. It connects lazily, so the api can start (and report an unhealthy
/// database on `/api/health/`) while PostgreSQL is still down. A connection is not pinged before
/// each use (sqlx's default costs a round trip per acquire); a broken one fails its statement,
/// which the callers that must survive a restart retry, and is then closed.
pub fn pool(config: &Config, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(config.database_url.expose_secret())
        .context("DATABASE_URL could not be parsed")
}

/// Applies every pending migration. Safe to run any number of times and from several processes
/// at once (the migrator takes an advisory lock). A database from before Granary's own job
/// runtime also has apalis-postgres's history in `apalis._sqlx_migrations`; the migration that
/// moves its jobs across drops that schema.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying Granary's migrations")?;
    Ok(())
}

/// Migrations this binary knows that the database has not applied (empty when current).
pub async fn pending_migrations(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .or_else(|e| match &e {
                // The table does not exist yet: nothing is applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    Ok(Vec::new())
                }
                _ => Err(e),
            })
            .context("reading the applied migrations")?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect())
}

/// Fails with an explanation unless every migration is applied; the worker checks this at start.
pub async fn ensure_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let pending = pending_migrations(pool).await?;
    anyhow::ensure!(
        pending.is_empty(),
        "the database is missing {} migration(s) ({}); run `granary-worker migrate` first",
        pending.len(),
        pending.join(", ")
    );
    Ok(())
}

/// Development: creates the database named in `url` when it does not exist yet, connecting to
/// the server's `postgres` database to do it.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};
    use std::str::FromStr as _;
    let opts = PgConnectOptions::from_str(url).context("DATABASE_URL could not be parsed")?;
    let name = opts.get_database().unwrap_or("postgres").to_string();
    let mut admin = PgConnection::connect_with(&opts.clone().database("postgres"))
        .await
        .with_context(|| {
            "cannot reach PostgreSQL: is it running? (set DATABASE_URL to point elsewhere)"
                .to_string()
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&mut admin)
            .await?;
        tracing::info!(database = %name, "created database");
    }
    Ok(())
}
