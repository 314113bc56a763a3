//! Granary's configuration: one typed struct read from the environment (and `.env` in
//! development), validated once at startup.
//!
//! Every problem names the variable and the fix; all problems are reported at once so a
//! deploy is not a loop of "fix one, restart, see the next". Secrets are [`SecretString`]s,
//! which never print.

use std::{collections::HashMap, fmt, path::PathBuf, time::Duration};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
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
}

/// Who may use the seller API (`SELLER_ACCESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SellerAccess {
    /// Only profiles with the `seller` or `admin` role (the default).
    Role,
    /// Every signed-in user manages the rows they own (the starter's rule).
    Any,
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
    /// Stripe webhook secret: the whole `whsec_...` string is the HMAC key.
    pub stripe_webhook_secret: Option<SecretString>,
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
    /// `GRANARY_DEV_AUTH`: trust locally signed development tokens.
    pub dev_auth: bool,
    /// `SELLER_ACCESS`: who may use the seller API.
    pub seller_access: SellerAccess,
    /// `CREDITS_SERVICE_TOKEN`: lets the shop's own services debit credits for a named user.
    pub credits_service_token: Option<SecretString>,
    /// Largest request body accepted, on every route.
    pub max_body_bytes: usize,
    /// How long shutdown waits for running jobs.
    pub shutdown_timeout: Duration,
    /// Job runtime settings.
    pub worker: WorkerConfig,
    /// Startup warnings (printed once, never fatal).
    pub warnings: Vec<String>,
}

/// Job runtime settings (see README, "Job runtime").
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Handlers running at once per queue, unless overridden in `per_queue_concurrency`.
    pub concurrency: usize,
    /// `WORKER_CONCURRENCY=send_email=4,fulfill_order=8`.
    pub per_queue_concurrency: HashMap<String, usize>,
    /// How often a worker proves it is alive.
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which a worker is dead and its jobs are rescued.
    pub missed_heartbeats: usize,
    /// Poll interval for delayed, retried and requeued jobs (new jobs wake workers at once
    /// through LISTEN/NOTIFY).
    pub poll_interval: Duration,
    /// Jobs claimed per fetch.
    pub batch_size: usize,
    /// First retry delay; doubles per attempt (see `queue::backoff`).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// Completed jobs older than this are pruned; failed ones are kept.
    pub retention: Duration,
}

impl WorkerConfig {
    /// Concurrency for one queue.
    pub fn concurrency_for(&self, queue: &str) -> usize {
        self.per_queue_concurrency
            .get(queue)
            .copied()
            .unwrap_or(self.concurrency)
    }

    /// The bound within which a dead worker's jobs are picked up again.
    pub fn rescue_bound(&self) -> Duration {
        self.heartbeat_interval * (self.missed_heartbeats as u32 + 1)
    }
}

type Env = HashMap<String, String>;

struct Reader<'a> {
    env: &'a Env,
    problems: Vec<ConfigProblem>,
}

impl<'a> Reader<'a> {
    /// A set, non-blank value.
    fn get(&self, var: &str) -> Option<&'a str> {
        self.env
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn problem(
        &mut self,
        variable: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(ConfigProblem {
            variable,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn flag(&mut self, var: &'static str, default: bool) -> bool {
        match self.get(var).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                self.problem(
                    var,
                    format!("`{other}` is not a boolean"),
                    "use true or false",
                );
                default
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, var: &'static str, default: T, fix: &str) -> T {
        match self.get(var) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.problem(var, format!("`{v}` is not a valid number"), fix);
                default
            }),
        }
    }

    fn url(&mut self, var: &'static str) -> Option<Url> {
        let raw = self.get(var)?;
        match Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                self.problem(
                    var,
                    format!("`{raw}` is not an http(s) URL"),
                    "use a full URL such as https://example.com",
                );
                None
            }
        }
    }

    fn list(&self, var: &str) -> Vec<String> {
        self.get(var)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn secret(&self, var: &str) -> Option<SecretString> {
        self.get(var).map(|v| SecretString::from(v.to_string()))
    }
}

/// Checks a Svix/Clerk signing secret (`whsec_` + base64) and returns the decoded key bytes.
pub fn decode_svix_secret(raw: &str) -> Result<Vec<u8>, String> {
    let Some(b64) = raw.strip_prefix("whsec_") else {
        return Err("does not start with `whsec_`".into());
    };
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(key) if key.len() >= 16 => Ok(key),
        Ok(_) => Err("the key after `whsec_` is shorter than 16 bytes".into()),
        Err(_) => Err("the part after `whsec_` is not valid base64".into()),
    }
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

    /// Builds and validates the configuration from a map of variables.
    pub fn from_map(env: &Env) -> Result<Self, ConfigError> {
        let mut r = Reader {
            env,
            problems: Vec::new(),
        };
        let mut warnings = Vec::new();

        let app_env = match r.get("APP_ENV").unwrap_or("development") {
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
        };
        let dev = app_env == AppEnv::Development;

        let database_url = match r.get("DATABASE_URL") {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                u.to_string()
            }
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
                r.problem("DATABASE_URL", "is not set", "set it to your PostgreSQL URL, e.g. postgres://user:password@host:5432/granary");
                String::new()
            }
        };

        let port = r.number("PORT", 8000u16, "use a port number such as 8000");
        let bind_host = r
            .get("BIND_HOST")
            .unwrap_or(if dev { "127.0.0.1" } else { "0.0.0.0" })
            .to_string();

        let cors_allowed_origins = {
            let list = r.list("CORS_ALLOWED_ORIGINS");
            let mut out = Vec::new();
            for origin in list {
                match Url::parse(&origin) {
                    Ok(u) if u.path() == "/" && u.query().is_none() => {
                        out.push(origin.trim_end_matches('/').to_string())
                    }
                    _ => r.problem(
                        "CORS_ALLOWED_ORIGINS",
                        format!("`{origin}` is not an origin"),
                        "list origins like http://localhost:5173, comma-separated, without paths",
                    ),
                }
            }
            if out.is_empty() && dev {
                out = vec![
                    "http://localhost:5173".into(),
                    "http://127.0.0.1:5173".into(),
                ];
            }
            out
        };
        let frontend_app_url = r
            .url("FRONTEND_APP_URL")
            .unwrap_or_else(|| Url::parse("http://127.0.0.1:5173").expect("static URL"));

        // Clerk.
        let domain = r.get("CLERK_DOMAIN").map(|d| {
            d.trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        });
        let jwks_url = r.url("CLERK_JWKS_URL").or_else(|| {
            domain
                .as_ref()
                .and_then(|d| Url::parse(&format!("https://{d}/.well-known/jwks.json")).ok())
        });
        let issuer = r
            .get("CLERK_JWT_ISSUER")
            .map(str::to_string)
            .or_else(|| domain.as_ref().map(|d| format!("https://{d}")));
        let secret_key = r.secret("CLERK_SECRET_KEY");
        if let Some(k) = &secret_key
            && !k.expose_secret().starts_with("sk_")
        {
            r.problem(
                "CLERK_SECRET_KEY",
                "does not start with `sk_`",
                "copy the secret key from Clerk Dashboard → API keys",
            );
        }
        let webhook_secret = match r.get("CLERK_WEBHOOK_SIGNING_SECRET") {
            None => None,
            Some(raw) => match decode_svix_secret(raw) {
                Ok(_) => Some(SecretString::from(raw.to_string())),
                Err(why) => {
                    r.problem(
                        "CLERK_WEBHOOK_SIGNING_SECRET",
                        format!("is malformed: it {why}"),
                        "copy the signing secret (whsec_ followed by base64) from Clerk Dashboard → Webhooks → your endpoint",
                    );
                    None
                }
            },
        };
        let stripe_webhook_secret = match r.get("STRIPE_WEBHOOK_SECRET") {
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
        };
        let dev_auth = r.flag("GRANARY_DEV_AUTH", false);
        if !dev && jwks_url.is_none() {
            r.problem(
                "CLERK_DOMAIN",
                "neither CLERK_DOMAIN nor CLERK_JWKS_URL is set, so no token can be verified",
                "set CLERK_DOMAIN to your Clerk instance domain",
            );
        }
        if !dev && issuer.is_none() {
            r.problem(
                "CLERK_JWT_ISSUER",
                "is not set and cannot be derived",
                "set CLERK_DOMAIN or CLERK_JWT_ISSUER",
            );
        }
        if dev && jwks_url.is_none() && !dev_auth {
            warnings.push("CLERK_DOMAIN/CLERK_JWKS_URL unset: only public routes work (set GRANARY_DEV_AUTH=true for local development tokens)".into());
        }
        let clerk = ClerkConfig {
            secret_key,
            domain,
            jwks_url,
            issuer,
            audience: r.get("CLERK_JWT_AUDIENCE").map(str::to_string),
            authorized_parties: r.list("CLERK_AUTHORIZED_PARTIES"),
            billing_claim: r
                .get("CLERK_BILLING_CLAIM")
                .unwrap_or("entitlements")
                .to_string(),
            webhook_secret,
            api_url: r
                .url("CLERK_API_URL")
                .unwrap_or_else(|| Url::parse("https://api.clerk.com").expect("static URL")),
        };
        let credits_service_token = r.secret("CREDITS_SERVICE_TOKEN");
        if credits_service_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 32)
        {
            r.problem(
                "CREDITS_SERVICE_TOKEN",
                "is shorter than 32 characters",
                "generate one with: openssl rand -hex 32",
            );
        }
        let seller_access = match r.get("SELLER_ACCESS").unwrap_or("role") {
            "role" => SellerAccess::Role,
            "any" => SellerAccess::Any,
            other => {
                r.problem(
                    "SELLER_ACCESS",
                    format!("`{other}` is not a seller access rule"),
                    "use role (sellers and admins only) or any (every signed-in user sells)",
                );
                SellerAccess::Role
            }
        };
        if clerk.webhook_secret.is_none() && stripe_webhook_secret.is_none() {
            warnings.push("no webhook secret set (CLERK_WEBHOOK_SIGNING_SECRET, STRIPE_WEBHOOK_SECRET): webhook deliveries will be recorded and rejected".into());
        }

        // Storage.
        let backend = r
            .get("ASSET_STORAGE_BACKEND")
            .unwrap_or(if dev { "fs" } else { "s3" })
            .to_string();
        let bucket = r.get("ASSET_STORAGE_BUCKET").map(str::to_string);
        let storage = match backend.as_str() {
            "fs" => StorageConfig::Fs {
                root: PathBuf::from(r.get("ASSET_STORAGE_FS_ROOT").unwrap_or("var/storage")),
            },
            "s3" => {
                let missing: Vec<&str> = [
                    ("ASSET_STORAGE_BUCKET", bucket.is_some()),
                    (
                        "ASSET_STORAGE_S3_ACCESS_KEY_ID",
                        r.get("ASSET_STORAGE_S3_ACCESS_KEY_ID").is_some(),
                    ),
                    (
                        "ASSET_STORAGE_S3_SECRET_ACCESS_KEY",
                        r.get("ASSET_STORAGE_S3_SECRET_ACCESS_KEY").is_some(),
                    ),
                ]
                .into_iter()
                .filter_map(|(v, ok)| (!ok).then_some(v))
                .collect();
                if missing.is_empty() {
                    StorageConfig::S3 {
                        endpoint: r
                            .url("ASSET_STORAGE_S3_ENDPOINT_URL")
                            .map(|u| u.to_string().trim_end_matches('/').to_string()),
                        region: r
                            .get("ASSET_STORAGE_S3_REGION")
                            .unwrap_or("us-east-1")
                            .to_string(),
                        bucket: bucket.clone().unwrap_or_default(),
                        access_key_id: r
                            .get("ASSET_STORAGE_S3_ACCESS_KEY_ID")
                            .unwrap_or_default()
                            .to_string(),
                        secret_access_key: r
                            .secret("ASSET_STORAGE_S3_SECRET_ACCESS_KEY")
                            .expect("checked above"),
                    }
                } else {
                    StorageConfig::Unavailable {
                        backend: backend.clone(),
                        reason: format!("missing {}", missing.join(", ")),
                    }
                }
            }
            "supabase" => match (
                r.url("SUPABASE_URL"),
                r.get("ASSET_STORAGE_S3_ACCESS_KEY_ID"),
                r.secret("ASSET_STORAGE_S3_SECRET_ACCESS_KEY"),
                bucket.clone(),
            ) {
                (Some(url), Some(key_id), Some(secret), Some(bucket)) => StorageConfig::Supabase {
                    url: url.to_string().trim_end_matches('/').to_string(),
                    bucket,
                    region: r
                        .get("ASSET_STORAGE_S3_REGION")
                        .unwrap_or("us-east-1")
                        .to_string(),
                    access_key_id: key_id.to_string(),
                    secret_access_key: secret,
                },
                (url, key_id, secret, bucket) => {
                    let missing: Vec<&str> = [
                        ("SUPABASE_URL", url.is_some()),
                        ("ASSET_STORAGE_S3_ACCESS_KEY_ID", key_id.is_some()),
                        ("ASSET_STORAGE_S3_SECRET_ACCESS_KEY", secret.is_some()),
                        ("ASSET_STORAGE_BUCKET", bucket.is_some()),
                    ]
                    .into_iter()
                    .filter_map(|(v, ok)| (!ok).then_some(v))
                    .collect();
                    StorageConfig::Unavailable {
                        backend: backend.clone(),
                        reason: format!("missing {}", missing.join(", ")),
                    }
                }
            },
            other => {
                r.problem(
                    "ASSET_STORAGE_BACKEND",
                    format!("`{other}` is not a storage backend"),
                    "use fs, s3 or supabase",
                );
                StorageConfig::Unavailable {
                    backend: other.into(),
                    reason: "unknown backend".into(),
                }
            }
        };
        if let StorageConfig::Unavailable { backend, reason } = &storage {
            warnings.push(format!("asset storage `{backend}` is not usable ({reason}): download and asset routes answer 503 storage_unavailable"));
        }
        let signed_url_ttl = Duration::from_secs(r.number(
            "ASSET_STORAGE_SIGNED_URL_TTL_SECONDS",
            600u64,
            "use a number of seconds such as 600",
        ));
        if signed_url_ttl.is_zero() || signed_url_ttl > Duration::from_secs(7 * 24 * 3600) {
            r.problem(
                "ASSET_STORAGE_SIGNED_URL_TTL_SECONDS",
                "must be between 1 second and 7 days",
                "use a number of seconds such as 600",
            );
        }
        let download_signing_key = match r.get("DOWNLOAD_URL_SIGNING_KEY") {
            Some(k) if k.len() >= 32 => SecretString::from(k.to_string()),
            Some(_) => {
                r.problem(
                    "DOWNLOAD_URL_SIGNING_KEY",
                    "is shorter than 32 characters",
                    "generate one with: openssl rand -hex 32",
                );
                SecretString::from(String::new())
            }
            // Development: a per-database-URL key is good enough and needs no setup.
            None if dev => SecretString::from(format!("granary-dev-signing-key::{database_url}")),
            None => {
                r.problem(
                    "DOWNLOAD_URL_SIGNING_KEY",
                    "is not set",
                    "generate one with: openssl rand -hex 32",
                );
                SecretString::from(String::new())
            }
        };

        let download_default_expiry_days = match r.number(
            "DOWNLOAD_DEFAULT_EXPIRY_DAYS",
            30i32,
            "use a number of days such as 30; 0 means no expiry",
        ) {
            0 => None,
            d if d > 0 => Some(d),
            _ => {
                r.problem(
                    "DOWNLOAD_DEFAULT_EXPIRY_DAYS",
                    "must not be negative",
                    "use a number of days such as 30; 0 means no expiry",
                );
                None
            }
        };
        let download_default_max = match r.number(
            "DOWNLOAD_DEFAULT_MAX",
            10i32,
            "use a number such as 10; 0 means unlimited",
        ) {
            0 => None,
            d if d > 0 => Some(d),
            _ => {
                r.problem(
                    "DOWNLOAD_DEFAULT_MAX",
                    "must not be negative",
                    "use a number such as 10; 0 means unlimited",
                );
                None
            }
        };

        // Email.
        let resend_api_key = r.secret("RESEND_API_KEY");
        if let Some(k) = &resend_api_key
            && !k.expose_secret().starts_with("re_")
        {
            r.problem(
                "RESEND_API_KEY",
                "does not start with `re_`",
                "create an API key in the Resend dashboard",
            );
        }
        let resend_from = r.get("RESEND_FROM_EMAIL").map(str::to_string);
        if resend_api_key.is_some() && resend_from.is_none() {
            r.problem(
                "RESEND_FROM_EMAIL",
                "is not set while RESEND_API_KEY is",
                "set it to a sender on a domain verified in Resend, e.g. Acme <orders@example.com>",
            );
        }
        if resend_api_key.is_none() {
            warnings.push("RESEND_API_KEY unset: emails are recorded in the local outbox (emails table, status outbox) instead of sent".into());
        }
        let resend = ResendConfig {
            api_key: resend_api_key,
            base_url: r.url("RESEND_BASE_URL"),
            from: resend_from.unwrap_or_else(|| "Granary <onboarding@resend.dev>".into()),
            reply_to: r.get("RESEND_REPLY_TO_EMAIL").map(str::to_string),
        };

        let order_confirm_allow_manual = r.flag("ORDER_CONFIRM_ALLOW_MANUAL", false);
        let order_confirm_allow_client_side_clerk_confirm =
            r.flag("ORDER_CONFIRM_ALLOW_CLIENT_SIDE_CLERK_CONFIRM", false);
        let dev_manual_checkout = r.flag("DEV_MANUAL_CHECKOUT", false);
        if !dev {
            for (var, on) in [
                ("ORDER_CONFIRM_ALLOW_MANUAL", order_confirm_allow_manual),
                (
                    "ORDER_CONFIRM_ALLOW_CLIENT_SIDE_CLERK_CONFIRM",
                    order_confirm_allow_client_side_clerk_confirm,
                ),
                ("DEV_MANUAL_CHECKOUT", dev_manual_checkout),
                ("GRANARY_DEV_AUTH", dev_auth),
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

        let max_body_bytes = r.number(
            "MAX_BODY_BYTES",
            1024 * 1024usize,
            "use a number of bytes such as 1048576",
        );
        if max_body_bytes < 1024 {
            r.problem(
                "MAX_BODY_BYTES",
                "is below 1024 bytes",
                "use a number of bytes such as 1048576",
            );
        }
        let shutdown_timeout = Duration::from_secs(r.number(
            "SHUTDOWN_TIMEOUT_SECONDS",
            25u64,
            "use a number of seconds such as 25",
        ));

        let worker = WorkerConfig {
            concurrency: r.number(
                "WORKER_CONCURRENCY_DEFAULT",
                10usize,
                "use a number such as 10",
            ),
            per_queue_concurrency: {
                let mut map = HashMap::new();
                for pair in r.list("WORKER_CONCURRENCY") {
                    match pair
                        .split_once('=')
                        .map(|(q, n)| (q.trim().to_string(), n.trim().parse::<usize>()))
                    {
                        Some((q, Ok(n))) if n > 0 => {
                            map.insert(q, n);
                        }
                        _ => r.problem(
                            "WORKER_CONCURRENCY",
                            format!("`{pair}` is not queue=number"),
                            "use e.g. send_email=4,fulfill_order=8",
                        ),
                    }
                }
                map
            },
            heartbeat_interval: Duration::from_millis(r.number(
                "WORKER_HEARTBEAT_MS",
                5000u64,
                "use milliseconds such as 5000",
            )),
            missed_heartbeats: r.number(
                "WORKER_MISSED_HEARTBEATS",
                3usize,
                "use a number such as 3",
            ),
            poll_interval: Duration::from_millis(r.number(
                "WORKER_POLL_INTERVAL_MS",
                1000u64,
                "use milliseconds such as 1000",
            )),
            batch_size: r.number("WORKER_BATCH_SIZE", 10usize, "use a number such as 10"),
            backoff_base: Duration::from_millis(r.number(
                "JOB_BACKOFF_BASE_MS",
                2000u64,
                "use milliseconds such as 2000",
            )),
            backoff_cap: Duration::from_secs(r.number(
                "JOB_BACKOFF_CAP_SECONDS",
                3600u64,
                "use seconds such as 3600",
            )),
            retention: Duration::from_secs(
                3600 * r.number("JOB_RETENTION_HOURS", 168u64, "use hours such as 168"),
            ),
        };
        if worker.concurrency == 0 || worker.batch_size == 0 || worker.missed_heartbeats == 0 {
            r.problem(
                "WORKER_CONCURRENCY_DEFAULT",
                "concurrency, batch size and missed heartbeats must be at least 1",
                "use positive numbers",
            );
        }
        // apalis-postgres registers a worker with a whole-second client timestamp and compares
        // it with the database clock: a bound under 2 s (or under two heartbeats) would let a
        // live worker look dead and its running jobs be taken (measured: a slow job ran twice
        // with 0.5 s x 2).
        if worker.missed_heartbeats < 2
            || worker.heartbeat_interval * (worker.missed_heartbeats as u32)
                < Duration::from_secs(2)
            || worker.rescue_bound() < Duration::from_secs(3)
        {
            r.problem("WORKER_MISSED_HEARTBEATS", "the rescue bound (heartbeat x missed heartbeats) must be at least 2 s and 2 heartbeats", "use WORKER_HEARTBEAT_MS=5000 and WORKER_MISSED_HEARTBEATS=3");
        }
        if worker.heartbeat_interval < Duration::from_millis(200)
            || worker.poll_interval < Duration::from_millis(20)
        {
            r.problem(
                "WORKER_HEARTBEAT_MS",
                "heartbeat below 200 ms or poll below 20 ms would hammer the database",
                "use WORKER_HEARTBEAT_MS=5000 and WORKER_POLL_INTERVAL_MS=1000",
            );
        }

        if !r.problems.is_empty() {
            return Err(ConfigError(r.problems));
        }
        Ok(Config {
            app_env,
            database_url: SecretString::from(database_url),
            port,
            bind_host,
            cors_allowed_origins,
            frontend_app_url,
            clerk,
            stripe_webhook_secret,
            storage,
            signed_url_ttl,
            download_signing_key,
            download_default_expiry_days,
            download_default_max,
            resend,
            order_confirm_allow_manual,
            order_confirm_allow_client_side_clerk_confirm,
            dev_manual_checkout,
            dev_auth,
            seller_access,
            credits_service_token,
            max_body_bytes,
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
