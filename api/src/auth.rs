//! Clerk session authentication.
//!
//! A session token (`Authorization: Bearer`, or the `__session` cookie) is an RS256 JWT signed by
//! a key in the instance's JWKS (<https://clerk.com/docs/backend-requests/manual-jwt>). Only RS256
//! is accepted (so `alg: none` and HS256-with-the-public-key forgeries fail), keys come only from
//! the configured JWKS URL (never from a token), and an unknown `kid` refetches the JWKS at most
//! once per cooldown, single flight: a flood of random kids costs one fetch.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, Method, request::Parts},
};
use granary_jobs::{
    config::SellerAccess,
    profiles::{self, ProfileFacts},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{ApiError, AppState};

/// How long after a JWKS fetch an unknown kid may trigger another.
pub const JWKS_COOLDOWN: Duration = Duration::from_secs(30);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 5;
/// The kid of locally signed development tokens.
pub const DEV_KID: &str = "granary-dev";

/// Keys from the configured JWKS URL, cached.
pub struct JwksCache {
    url: url::Url,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
    fetches: AtomicU64,
}

impl JwksCache {
    /// A cache over `url`.
    pub fn new(url: url::Url, cooldown: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        Self {
            url,
            client,
            keys: RwLock::default(),
            last_fetch: tokio::sync::Mutex::new(None),
            cooldown,
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the JWKS was fetched (tests, metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().expect("jwks lock").get(kid).cloned()
    }

    /// The key for `kid`, fetching the JWKS when it is unknown and the cooldown allows.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        if let Some(k) = self.cached(kid) {
            return Ok(k);
        }
        // Single flight: one fetch at a time; whoever waited re-checks the cache first.
        let mut last = self.last_fetch.lock().await;
        if let Some(k) = self.cached(kid) {
            return Ok(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return Err(format!(
                "unknown kid {kid:?} (JWKS refetch is cooling down)"
            ));
        }
        *last = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let set: JwkSet = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("JWKS fetch failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("JWKS is not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(id) = jwk.common.key_id.clone() else {
                continue;
            };
            if let Ok(k) = DecodingKey::from_jwk(jwk) {
                keys.insert(id, k);
            }
        }
        tracing::info!(keys = keys.len(), "JWKS refreshed");
        *self.keys.write().expect("jwks lock") = keys;
        self.cached(kid)
            .ok_or_else(|| format!("unknown kid {kid:?}"))
    }
}

/// Verifies session tokens.
pub struct Verifier {
    jwks: Option<JwksCache>,
    dev_key: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    authorized_parties: Vec<String>,
}

/// The verified claims of a Clerk session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
    /// Authorized party (the origin that requested the token).
    #[serde(default)]
    pub azp: Option<String>,
    /// Session id.
    #[serde(default)]
    pub sid: Option<String>,
    /// Expiry.
    pub exp: i64,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Issued at.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Everything else (custom claims, billing features).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Verifier {
    /// Builds the verifier from configuration (and the development key, when trusted).
    pub fn new(config: &granary_jobs::Config, dev_key: Option<DecodingKey>) -> Self {
        Self {
            jwks: config
                .clerk
                .jwks_url
                .clone()
                .map(|u| JwksCache::new(u, JWKS_COOLDOWN)),
            dev_key,
            issuer: config.clerk.issuer.clone(),
            audience: config.clerk.audience.clone(),
            authorized_parties: config.clerk.authorized_parties.clone(),
        }
    }

    /// The JWKS cache, if configured.
    pub fn jwks(&self) -> Option<&JwksCache> {
        self.jwks.as_ref()
    }

    /// Verifies `token`; the error says why (for the log, never the client).
    pub async fn verify(&self, token: &str) -> Result<Claims, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("algorithm {:?} refused; only RS256", header.alg));
        }
        let kid = header.kid.ok_or("token has no kid")?;
        let (key, dev) = match (&self.dev_key, kid.as_str()) {
            (Some(k), DEV_KID) => (k.clone(), true),
            _ => (
                self.jwks
                    .as_ref()
                    .ok_or("no JWKS configured (CLERK_DOMAIN / CLERK_JWKS_URL)")?
                    .key(&kid)
                    .await?,
                false,
            ),
        };
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        if let (Some(iss), false) = (&self.issuer, dev) {
            v.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) if !dev => v.set_audience(&[aud]),
            _ => v.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| format!("invalid token: {e}"))?;
        let claims = data.claims;
        if !dev && !self.authorized_parties.is_empty() {
            match &claims.azp {
                Some(azp) if self.authorized_parties.iter().any(|p| p == azp) => {}
                other => return Err(format!("azp {other:?} is not an authorized party")),
            }
        }
        Ok(claims)
    }
}

pub use granary_jobs::model::Role;

/// A verified user with their profile.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// `profiles.id`.
    pub profile_id: Uuid,
    /// Clerk user id (`sub`).
    pub clerk_user_id: String,
    /// From the profile.
    pub role: Role,
    /// The verified claims.
    pub claims: Claims,
    /// `SELLER_ACCESS`: whether the seller API needs the role.
    pub seller_access: SellerAccess,
}

impl AuthUser {
    /// 403 unless seller or admin, or `SELLER_ACCESS=any` (the starter's rule: every signed-in
    /// user manages the rows they own).
    fn require_seller(&self) -> Result<(), ApiError> {
        if self.role >= Role::Seller || self.seller_access == SellerAccess::Any {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                code: "forbidden",
                message: format!(
                    "This needs the seller role. An operator grants it with `granary-worker \
                     users set-role {} seller --reason \"...\"` (or POST \
                     /api/admin/users/{}/role/); SELLER_ACCESS=any lets every signed-in user \
                     sell.",
                    self.clerk_user_id, self.clerk_user_id
                ),
            })
        }
    }

    /// 403 unless admin.
    fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                code: "forbidden",
                message: "This needs the admin role.".into(),
            })
        }
    }

    /// True for admins (who see every seller's rows).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A request's session, already verified by the throttle (which keys the request by it): the
/// [`AuthUser`] extractor then does not verify the token again.
#[derive(Debug, Clone)]
pub struct VerifiedSession(pub Claims);

/// A signed-in user who may use the seller API (see [`AuthUser::require_seller`]): a handler
/// that takes it cannot run for anyone else. Dereferences to the [`AuthUser`].
pub struct Seller(pub AuthUser);

/// A signed-in admin: a handler that takes it cannot run for anyone else. Dereferences to the
/// [`AuthUser`].
pub struct Admin(pub AuthUser);

impl std::ops::Deref for Seller {
    type Target = AuthUser;
    fn deref(&self) -> &AuthUser {
        &self.0
    }
}

impl std::ops::Deref for Admin {
    type Target = AuthUser;
    fn deref(&self) -> &AuthUser {
        &self.0
    }
}

impl FromRequestParts<AppState> for Seller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        user.require_seller()?;
        Ok(Self(user))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        user.require_admin()?;
        Ok(Self(user))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization())
}

/// The request's session token: `Authorization: Bearer`, else the `__session` cookie (true when
/// it came from the cookie, which makes unsafe methods subject to the CSRF origin check).
pub fn session_token(parts: &Parts) -> Option<(&str, bool)> {
    match bearer(&parts.headers) {
        Some(t) => Some((t, false)),
        None => cookie(&parts.headers, "__session").map(|c| (c, true)),
    }
}

pub(crate) use granary_jobs::platform::server::bearer;

/// True when the request carries `Authorization: Bearer <CREDITS_SERVICE_TOKEN>` (compared in
/// constant time): the shop's own services, not a user.
pub fn is_service_token(parts: &Parts, config: &granary_jobs::Config) -> bool {
    use secrecy::ExposeSecret as _;
    use subtle::ConstantTimeEq as _;
    let Some(expected) = &config.credits_service_token else {
        return false;
    };
    bearer(&parts.headers)
        .is_some_and(|b| bool::from(b.as_bytes().ct_eq(expected.expose_secret().as_bytes())))
}

/// CSRF: a cookie is sent by the browser on cross-site requests too, so a cookie-authenticated
/// unsafe request must come from an allowed origin (its `Origin`, else its `Referer`'s).
fn check_origin(parts: &Parts, config: &granary_jobs::Config) -> Result<(), ApiError> {
    let origin = parts
        .headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            parts
                .headers
                .get(axum::http::header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(origin_of)
        });
    let allowed = origin.as_deref().is_some_and(|o| {
        config.cors_allowed_origins.iter().any(|a| a == o)
            || origin_of(config.frontend_app_url.as_str()).as_deref() == Some(o)
    });
    if !allowed {
        return Err(ApiError::Forbidden {
            code: "forbidden",
            message: "Cross-site request refused (Origin/Referer not allowed).".into(),
        });
    }
    Ok(())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (token, from_cookie) =
            session_token(parts).ok_or_else(|| ApiError::Unauthenticated("no token".into()))?;
        // The throttle verified it already (and keyed the request by it).
        let verified = parts
            .extensions
            .get::<VerifiedSession>()
            .map(|s| s.0.clone());
        let claims = match verified {
            Some(c) => c,
            None => state
                .verifier
                .verify(token)
                .await
                .map_err(ApiError::Unauthenticated)?,
        };

        // CSRF: a cookie is sent by the browser on cross-site requests too, so a cookie-
        // authenticated unsafe request must come from an allowed origin.
        if from_cookie && !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            check_origin(parts, &state.config)?;
        }

        // Profiles are created on first sight and kept in sync with the token's claims, as the
        // starter syncs them (email, given/first name, family name, picture).
        let claim = |names: &[&str]| {
            names.iter().find_map(|n| {
                claims
                    .extra
                    .get(*n)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
            })
        };
        let facts = ProfileFacts {
            clerk_user_id: &claims.sub,
            email: claim(&["email"]),
            first_name: claim(&["given_name", "first_name"]),
            last_name: claim(&["family_name", "last_name"]),
            image_url: claim(&["picture", "image_url"]),
            ..ProfileFacts::default()
        };
        // Without an event time the upsert always answers.
        let row = profiles::upsert(&state.pool, &facts)
            .await?
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("the profile upsert answered no row"))
            })?;
        if row.deleted_at.is_some() {
            return Err(ApiError::Unauthenticated("profile deleted".into()));
        }
        let clerk_user_id = claims.sub.clone();
        tracing::Span::current().record("user", clerk_user_id.as_str());
        Ok(AuthUser {
            profile_id: row.id,
            clerk_user_id,
            role: row.role,
            claims,
            seller_access: state.config.seller_access,
        })
    }
}

/// Development tokens: a local RSA key under `var/dev-auth/`, created on first use. The api
/// trusts it only when `GRANARY_DEV_AUTH=true` in development (production refuses the switch).
pub mod dev {
    use std::path::{Path, PathBuf};

    use anyhow::Context as _;
    use jsonwebtoken::{DecodingKey, EncodingKey, Header};
    use rsa::{
        RsaPrivateKey,
        pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding},
    };

    use super::DEV_KID;

    /// Where the development key lives.
    pub fn key_path() -> PathBuf {
        PathBuf::from(
            std::env::var("GRANARY_DEV_KEY_PATH").unwrap_or_else(|_| "var/dev-auth/key.pem".into()),
        )
    }

    fn load_or_create(path: &Path) -> anyhow::Result<RsaPrivateKey> {
        if let Ok(pem) = std::fs::read_to_string(path) {
            return RsaPrivateKey::from_pkcs1_pem(&pem)
                .context("the development key is not a PKCS#1 PEM");
        }
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, key.to_pkcs1_pem(LineEnding::LF)?.as_bytes())?;
        Ok(key)
    }

    /// The verification key for development tokens.
    pub fn decoding_key() -> anyhow::Result<DecodingKey> {
        let key = load_or_create(&key_path())?;
        let pem = key.to_public_key().to_pkcs1_pem(LineEnding::LF)?;
        Ok(DecodingKey::from_rsa_pem(pem.as_bytes())?)
    }

    /// A development token for `user`, valid for `hours`.
    pub fn token(user: &str, email: Option<&str>, hours: i64) -> anyhow::Result<String> {
        let key = load_or_create(&key_path())?;
        let pem = key.to_pkcs1_pem(LineEnding::LF)?;
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(DEV_KID.into());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "sub": user, "iss": "granary-dev", "iat": now, "nbf": now, "exp": now + hours * 3600,
            "sid": format!("sess_dev_{user}"), "email": email,
        });
        Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes())?,
        )?)
    }
}

/// The token claims a client may inspect (`/api/me/clerk/`).
pub fn public_claims(c: &Claims) -> Value {
    serde_json::to_value(c).unwrap_or_default()
}

/// Shared verifier handle.
pub type SharedVerifier = Arc<Verifier>;
