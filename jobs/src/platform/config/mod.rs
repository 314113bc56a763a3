//! Granary's configuration: one typed struct read from the environment (and `.env` in
//! development), validated once at startup.
//!
//! Every problem names the variable and the fix; all problems are reported at once so a
//! deploy is not a loop of "fix one, restart, see the next". Secrets are [`SecretString`]s,
//! which never print.

mod clerk;
mod email;
mod http;
mod reader;
mod storage;
mod stripe;
mod worker;

use std::{fmt, path::PathBuf, time::Duration};

pub use http::{Rate, Throttles, parse_rate};
use reader::Reader;
pub use reader::{Env, decode_svix_secret};
use secrecy::SecretString;
pub use stripe::StripeConfig;
use url::Url;

/// Where Granary runs; production refuses development-only switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    /// Local development: embedded defaults, dev switches allowed.
    Development,
    /// Production: every dev-only switch is refused at startup.
    Production,
}

/// One configuration problem: which variable, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.variable, self.problem, self.fix)
    }
}

/// All the problems found in one read of the environment.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<ConfigProblem>);

impl ConfigError {
    /// The problem about `variable`, if any (used by tests and `doctor`).
    pub fn about(&self, variable: &str) -> Option<&ConfigProblem> {
        self.0.iter().find(|p| p.variable == variable)
    }
}

/// Asset storage, as configured. Incomplete configuration is not a startup error: the api
/// starts, warns, and answers 503 `storage_unavailable` on the routes that need storage.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// OpenDAL `fs`: the object with key `k` lives at `<root>/k`.
    Fs {
        /// Root folder.
        root: PathBuf,
    },
    /// Any S3-compatible endpoint.
    S3 {
        /// Endpoint URL (None: AWS default for the region).
        endpoint: Option<String>,
        /// Signing region.
        region: String,
        /// Bucket name.
        bucket: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: SecretString,
    },
    /// Supabase Storage, through its S3-compatible endpoint (`<SUPABASE_URL>/storage/v1/s3`):
    /// OpenDAL 0.59 no longer ships a native Supabase service.
    Supabase {
        /// Project URL.
        url: String,
        /// Bucket name.
        bucket: String,
        /// Signing region.
        region: String,
        /// S3 access key id (Supabase Dashboard → Storage → S3 access keys).
        access_key_id: String,
        /// S3 secret access key.
        secret_access_key: SecretString,
    },
    /// Chosen backend, but its configuration is incomplete; the string says what is missing.
    Unavailable {
        /// Which backend was asked for.
        backend: String,
        /// What is missing, naming the variables.
        reason: String,
    },
}

/// Clerk authentication and billing settings.
#[derive(Debug, Clone)]
pub struct ClerkConfig {
    /// Backend API secret key (`sk_...`).
    pub secret_key: Option<SecretString>,
    /// Instance domain, e.g. `clerk.example.com`.
    pub domain: Option<String>,
    /// JWKS URL; defaults to `https://<domain>/.well-known/jwks.json`.
    pub jwks_url: Option<Url>,
    /// Expected `iss`; defaults to `https://<domain>`.
    pub issuer: Option<String>,
    /// Expected `aud`, when set.
    pub audience: Option<String>,
    /// Allowed `azp` values; empty means any.
    pub authorized_parties: Vec<String>,
    /// Name of the token claim carrying billing features.
    pub billing_claim: String,
    /// Svix webhook secret, decoded from the base64 after `whsec_`.
    pub webhook_secret: Option<SecretString>,
    /// Backend API base (`CLERK_API_URL`, default `https://api.clerk.com`); tests point it at a
    /// local stand-in.
    pub api_url: Url,
    /// `GRANARY_DEV_AUTH`: trust locally signed development tokens (development only).
    pub dev_auth: bool,
}

/// Who may use the seller API (`SELLER_ACCESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SellerAccess {
    /// Only profiles with the `seller` or `admin` role (the default).
    Role,
    /// Every signed-in user manages the rows they own (the starter's rule).
    Any,
}

impl SellerAccess {
    /// The `SELLER_ACCESS` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Role => "role",
            Self::Any => "any",
        }
    }
}

/// Resend (email) settings. Without an API key emails go to the local outbox.
#[derive(Debug, Clone)]
pub struct ResendConfig {
    /// API key (`re_...`); None means development outbox.
    pub api_key: Option<SecretString>,
    /// Base URL override (tests point it at a local stand-in).
    pub base_url: Option<Url>,
    /// `From:` address.
    pub from: String,
    /// `Reply-To:` address.
    pub reply_to: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Development or production.
    pub app_env: AppEnv,
    /// PostgreSQL connection string.
    pub database_url: SecretString,
    /// Connections per process (`DATABASE_POOL_SIZE`); None: the process's own default.
    pub database_pool_size: Option<u32>,
    /// Port the api listens on.
    pub port: u16,
    /// Address the api binds.
    pub bind_host: String,
    /// Origins allowed by CORS (and by the cookie CSRF check).
    pub cors_allowed_origins: Vec<String>,
    /// Storefront URL used in emails.
    pub frontend_app_url: Url,
    /// Clerk settings.
    pub clerk: ClerkConfig,
    /// Stripe webhook secret, API key and reconciliation.
    pub stripe: StripeConfig,
    /// Asset storage.
    pub storage: StorageConfig,
    /// Lifetime of a signed download URL.
    pub signed_url_ttl: Duration,
    /// Key for HMAC-signed `fs` download URLs.
    pub download_signing_key: SecretString,
    /// Days a download grant lasts unless its product says otherwise (None: no expiry).
    pub download_default_expiry_days: Option<i32>,
    /// Downloads a grant allows unless its product says otherwise (None: unlimited).
    pub download_default_max: Option<i32>,
    /// Email delivery.
    pub resend: ResendConfig,
    /// `ORDER_CONFIRM_ALLOW_MANUAL`.
    pub order_confirm_allow_manual: bool,
    /// `ORDER_CONFIRM_ALLOW_CLIENT_SIDE_CLERK_CONFIRM`.
    pub order_confirm_allow_client_side_clerk_confirm: bool,
    /// `DEV_MANUAL_CHECKOUT`.
    pub dev_manual_checkout: bool,
    /// `SELLER_ACCESS`: who may use the seller API.
    pub seller_access: SellerAccess,
    /// `CREDITS_SERVICE_TOKEN`: lets the shop's own services debit credits for a named user.
    pub credits_service_token: Option<SecretString>,
    /// Where this API is reached from a browser (`PUBLIC_URL`): console login links start with
    /// it. Default: `http://<BIND_HOST>:<PORT>`.
    pub public_url: Url,
    /// Bearer token `/metrics` requires (`METRICS_TOKEN`, at least 32 characters).
    pub metrics_token: Option<SecretString>,
    /// A separate address serving only `/metrics` (`METRICS_BIND`); each process that has it
    /// set (the api, the worker) serves its own there.
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Abuse limits (per process).
    pub throttles: Throttles,
    /// Largest request body accepted, on every route.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers (`HTTP_HEADER_TIMEOUT_SECONDS`,
    /// 10): then the connection is closed.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (`HTTP_BODY_TIMEOUT_SECONDS`, 30):
    /// then 408 `request_timeout`.
    pub body_timeout: Duration,
    /// How long shutdown waits for running jobs.
    pub shutdown_timeout: Duration,
    /// Job runtime settings.
    pub worker: granary_queue::Settings,
    /// Startup warnings (printed once, never fatal).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the process environment, loading `.env` first in development.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with_defaults(&[])
    }

    /// [`Config::from_env`], with defaults for variables that are not set.
    pub fn from_env_with_defaults(defaults: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let is_production = std::env::var("APP_ENV").is_ok_and(|v| v.trim() == "production");
        if !is_production {
            // A missing .env is normal; a malformed one is reported by the values it leaves out.
            let _ = dotenvy::dotenv();
        }
        let mut env: Env = std::env::vars().collect();
        for (k, v) in defaults {
            env.entry((*k).to_string())
                .or_insert_with(|| (*v).to_string());
        }
        Self::from_map(&env)
    }

    /// Builds and validates the configuration from a map of variables. Each concern reads and
    /// validates its own variables; every problem of every part is reported together.
    pub fn from_map(env: &Env) -> Result<Self, ConfigError> {
        let mut r = Reader {
            env,
            problems: Vec::new(),
        };
        let mut warnings = Vec::new();

        let app_env = app_env(&mut r);
        let dev = app_env == AppEnv::Development;

        let database_url = database_url(&mut r, dev);

        let database_pool_size = r
            .get("DATABASE_POOL_SIZE")
            .map(|_| r.number("DATABASE_POOL_SIZE", 20u32, "use a number such as 20"))
            .filter(|n| *n > 0);
        let http = http::read(&mut r, dev);
        let clerk = clerk::read(&mut r, dev, &mut warnings);
        let stripe = stripe::read(&mut r, &mut warnings);
        if clerk.webhook_secret.is_none() && stripe.webhook_secret.is_none() {
            warnings.push("no webhook secret set (CLERK_WEBHOOK_SIGNING_SECRET, STRIPE_WEBHOOK_SECRET): webhook deliveries will be recorded and rejected".into());
        }
        let storage = storage::read(&mut r, dev, &database_url, &mut warnings);
        let resend = email::read(&mut r, &mut warnings);
        let (worker, shutdown_timeout) = worker::read(&mut r);

        if !dev {
            refuse_dev_switches(&mut r, &http, &clerk);
        }

        if !r.problems.is_empty() {
            return Err(ConfigError(r.problems));
        }
        Ok(Config {
            app_env,
            database_url: SecretString::from(database_url),
            database_pool_size,
            port: http.port,
            bind_host: http.bind_host,
            cors_allowed_origins: http.cors_allowed_origins,
            frontend_app_url: http.frontend_app_url,
            clerk,
            stripe,
            storage: storage.storage,
            signed_url_ttl: storage.signed_url_ttl,
            download_signing_key: storage.download_signing_key,
            download_default_expiry_days: storage.download_default_expiry_days,
            download_default_max: storage.download_default_max,
            resend,
            order_confirm_allow_manual: http.order_confirm_allow_manual,
            order_confirm_allow_client_side_clerk_confirm: http
                .order_confirm_allow_client_side_clerk_confirm,
            dev_manual_checkout: http.dev_manual_checkout,
            seller_access: http.seller_access,
            credits_service_token: http.credits_service_token,
            public_url: http.public_url,
            metrics_token: http.metrics_token,
            metrics_bind: http.metrics_bind,
            max_body_bytes: http.max_body_bytes,
            header_timeout: http.header_timeout,
            body_timeout: http.body_timeout,
            throttles: http.throttles,
            shutdown_timeout,
            worker,
            warnings,
        })
    }

    /// True in development.
    pub fn is_development(&self) -> bool {
        self.app_env == AppEnv::Development
    }
}

/// `APP_ENV`: development (the default) or production.
fn app_env(r: &mut Reader<'_>) -> AppEnv {
    match r.get("APP_ENV").unwrap_or("development") {
        "development" | "dev" => AppEnv::Development,
        "production" | "prod" => AppEnv::Production,
        other => {
            r.problem(
                "APP_ENV",
                format!("`{other}` is not an environment"),
                "use development or production",
            );
            AppEnv::Development
        }
    }
}

/// `DATABASE_URL`: a PostgreSQL URL (a local default in development).
fn database_url(r: &mut Reader<'_>, dev: bool) -> String {
    match r.get("DATABASE_URL") {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => u.to_string(),
        Some(_) => {
            r.problem(
                "DATABASE_URL",
                "is not a PostgreSQL URL",
                "use postgres://user:password@host:5432/dbname",
            );
            String::new()
        }
        None if dev => "postgres://postgres@127.0.0.1:5432/granary".to_string(),
        None => {
            r.problem(
                "DATABASE_URL",
                "is not set",
                "set it to your PostgreSQL URL, e.g. postgres://user:password@host:5432/granary",
            );
            String::new()
        }
    }
}

/// In production, every development-only switch that is on is a problem.
fn refuse_dev_switches(r: &mut Reader<'_>, http: &http::Http, clerk: &ClerkConfig) {
    for (var, on) in [
        (
            "ORDER_CONFIRM_ALLOW_MANUAL",
            http.order_confirm_allow_manual,
        ),
        (
            "ORDER_CONFIRM_ALLOW_CLIENT_SIDE_CLERK_CONFIRM",
            http.order_confirm_allow_client_side_clerk_confirm,
        ),
        ("DEV_MANUAL_CHECKOUT", http.dev_manual_checkout),
        ("GRANARY_DEV_AUTH", clerk.dev_auth),
    ] {
        if on {
            r.problem(
                var,
                "is a development-only switch and APP_ENV is production",
                "remove it (or set it to false) in production",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn development_defaults_need_nothing() {
        let c = Config::from_map(&env(&[])).unwrap();
        assert!(c.is_development());
        assert!(matches!(c.storage, StorageConfig::Fs { .. }));
        assert_eq!(c.port, 8000);
    }

    #[test]
    fn spans_past_ten_years_are_refused_at_startup_not_in_postgresql() {
        for (var, value) in [
            ("DOWNLOAD_DEFAULT_EXPIRY_DAYS", "2147483647"),
            ("DOWNLOAD_DEFAULT_MAX", "2147483647"),
            ("JOB_RETENTION_HOURS", "18446744073709551615"),
            ("JOB_BACKOFF_CAP_SECONDS", "18446744073709551615"),
            ("JOB_TIMEOUT_SECONDS", "probe=999999999"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "0"),
        ] {
            let err = Config::from_map(&env(&[(var, value)])).unwrap_err();
            assert!(err.about(var).is_some(), "{var}={value}: {err}");
        }
    }

    #[test]
    fn a_malformed_svix_secret_names_the_variable_and_the_fix() {
        let err = Config::from_map(&env(&[("CLERK_WEBHOOK_SIGNING_SECRET", "not-a-secret")]))
            .unwrap_err();
        let p = err
            .about("CLERK_WEBHOOK_SIGNING_SECRET")
            .expect("names the variable");
        assert!(p.problem.contains("whsec_"), "{p}");
        assert!(p.fix.contains("Clerk Dashboard"), "{p}");
        let err = Config::from_map(&env(&[(
            "CLERK_WEBHOOK_SIGNING_SECRET",
            "whsec_!!!notbase64",
        )]))
        .unwrap_err();
        assert!(
            err.about("CLERK_WEBHOOK_SIGNING_SECRET")
                .unwrap()
                .problem
                .contains("base64")
        );
    }

    #[test]
    fn production_refuses_development_switches_and_missing_essentials() {
        let err = Config::from_map(&env(&[
            ("APP_ENV", "production"),
            ("DEV_MANUAL_CHECKOUT", "true"),
            ("GRANARY_DEV_AUTH", "true"),
        ]))
        .unwrap_err();
        for var in [
            "DATABASE_URL",
            "DEV_MANUAL_CHECKOUT",
            "GRANARY_DEV_AUTH",
            "CLERK_DOMAIN",
            "DOWNLOAD_URL_SIGNING_KEY",
        ] {
            assert!(
                err.about(var).is_some(),
                "expected a problem about {var} in {err}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_map(&env(&[
            ("DATABASE_URL", "postgres://u:hunter2secret@h/db"),
            ("RESEND_API_KEY", "re_topsecretvalue"),
            ("RESEND_FROM_EMAIL", "a@b.c"),
        ]))
        .unwrap();
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("hunter2secret") && !printed.contains("re_topsecretvalue"),
            "{printed}"
        );
    }

    #[test]
    fn incomplete_storage_is_a_warning_not_an_error() {
        let c = Config::from_map(&env(&[("ASSET_STORAGE_BACKEND", "s3")])).unwrap();
        match &c.storage {
            StorageConfig::Unavailable { reason, .. } => {
                assert!(reason.contains("ASSET_STORAGE_BUCKET"))
            }
            other => panic!("expected unavailable storage, got {other:?}"),
        }
        assert!(c.warnings.iter().any(|w| w.contains("storage_unavailable")));
    }

    #[test]
    fn rates_read_as_the_starter_writes_them() {
        assert_eq!(
            parse_rate("120/minute").unwrap(),
            Some(Rate {
                count: 120,
                period: Duration::from_secs(60)
            })
        );
        assert_eq!(
            parse_rate("1500/h").unwrap().unwrap().period,
            Duration::from_secs(3600)
        );
        assert_eq!(parse_rate("0").unwrap(), None);
        let err = Config::from_map(&env(&[
            ("THROTTLE_USER", "lots"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip"),
        ]))
        .unwrap_err();
        assert!(err.about("THROTTLE_USER").is_some() && err.about("TRUSTED_PROXIES").is_some());
        let c = Config::from_map(&env(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")])).unwrap();
        assert_eq!(c.throttles.trusted_proxies.len(), 2);
        assert_eq!(c.throttles.anon.unwrap().count, 120);
    }

    #[test]
    fn a_stripe_key_must_look_like_one() {
        let err =
            Config::from_map(&env(&[("STRIPE_SECRET_KEY", "pk_live_publishable")])).unwrap_err();
        assert!(err.about("STRIPE_SECRET_KEY").is_some(), "{err}");
        let c = Config::from_map(&env(&[
            ("STRIPE_SECRET_KEY", "rk_test_restricted_key"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef"),
        ]))
        .unwrap();
        assert!(!format!("{c:?}").contains("rk_test_restricted_key"));
        let c =
            Config::from_map(&env(&[("STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef")])).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("STRIPE_SECRET_KEY unset"))
        );
    }

    #[test]
    fn bad_numbers_and_flags_are_reported_together() {
        let err = Config::from_map(&env(&[
            ("PORT", "eighty"),
            ("DEV_MANUAL_CHECKOUT", "maybe"),
        ]))
        .unwrap_err();
        assert!(
            err.about("PORT").is_some() && err.about("DEV_MANUAL_CHECKOUT").is_some(),
            "{err}"
        );
    }
}
