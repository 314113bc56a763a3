//! One fresh database per test, cloned from a migrated template and dropped afterwards.

use std::str::FromStr as _;

use sha2::{Digest as _, Sha256};
use sqlx::{
    Connection as _, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The server tests run against: `DATABASE_URL` when set (its database name is ignored), else
/// the local server at 127.0.0.1:5432 as user postgres.
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL: {e}"))
}

fn url_for(opts: &PgConnectOptions, database: &str) -> String {
    let user = opts.get_username();
    let host = opts.get_host();
    let port = opts.get_port();
    let password = std::env::var("DATABASE_URL")
        .ok()
        .and_then(|u| url::Url::parse(&u).ok())
        .and_then(|u| u.password().map(str::to_string));
    let auth = match password {
        Some(p) => format!("{user}:{p}"),
        None => user.to_string(),
    };
    // A Unix socket directory travels as `?host=`: it cannot stand in the URL's authority.
    if host.starts_with('/') {
        format!("postgres://{auth}@localhost:{port}/{database}?host={host}")
    } else {
        format!("postgres://{auth}@{host}:{port}/{database}")
    }
}

async fn admin(opts: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(&opts.clone().database("postgres")).await.unwrap_or_else(|e| {
        panic!(
            "no PostgreSQL reachable at {}:{} as {} ({e}). Set DATABASE_URL to a server where this \
             user may create databases, or start the local one (pg_ctlcluster 15 main start).",
            opts.get_host(),
            opts.get_port(),
            opts.get_username()
        )
    })
}

/// The template's name changes whenever any migration does, so a stale template is never used.
fn template_name() -> String {
    let mut h = Sha256::new();
    for m in granary_jobs::platform::db::MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&m.checksum);
    }
    format!("granary_tmpl_{}", &hex::encode(h.finalize())[..16])
}

async fn ensure_template(conn: &mut PgConnection, opts: &PgConnectOptions) -> String {
    let name = template_name();
    // Serialises template creation across concurrently running test binaries.
    sqlx::query("SELECT pg_advisory_lock(hashtext('granary-test-template'))")
        .execute(&mut *conn)
        .await
        .expect("lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .expect("query pg_database");
    if !exists {
        // Built under another name and renamed when complete: a half-migrated template is never
        // visible under the real name.
        let building = format!("{name}_build");
        exec(
            conn,
            &format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
        )
        .await;
        exec(conn, &format!("CREATE DATABASE {building}")).await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url_for(opts, &building))
            .await
            .expect("connect template");
        granary_jobs::platform::db::migrate(&pool)
            .await
            .unwrap_or_else(|e| panic!("migrating the test template: {e:#}"));
        pool.close().await;
        exec(conn, &format!("ALTER DATABASE {building} RENAME TO {name}")).await;
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtext('granary-test-template'))")
        .execute(&mut *conn)
        .await
        .expect("unlock");
    name
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A database of its own for one test.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
    opts: PgConnectOptions,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn new() -> Self {
        Self::create(true).await
    }

    /// An empty database (no migrations), for migration tests.
    pub async fn empty() -> Self {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Self {
        let opts = server_options();
        let mut conn = admin(&opts).await;
        let name = format!("granary_test_{}", uuid::Uuid::new_v4().simple());
        let create = if migrated {
            let template = ensure_template(&mut conn, &opts).await;
            format!("CREATE DATABASE {name} TEMPLATE {template}")
        } else {
            format!("CREATE DATABASE {name}")
        };
        exec(&mut conn, &create).await;
        let url = url_for(&opts, &name);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect(&url)
            .await
            .expect("connect test database");
        Self {
            name,
            url,
            pool,
            opts,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async; a short-lived thread with its own runtime drops the database.
        let (opts, name) = (self.opts.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&opts.database("postgres")).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
