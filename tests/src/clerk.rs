//! A Clerk stand-in: a JWKS endpoint on loopback serving a test RSA key, counting its fetches;
//! the Backend API's billing-subscription call in Clerk's wire format; and tokens carrying
//! Clerk's session claims signed with that key.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::Path,
    http::{HeaderMap, StatusCode},
    routing::get,
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::{
    RsaPrivateKey,
    pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding},
    traits::PublicKeyParts,
};
use serde_json::{Value, json};

/// The issuer the stand-in's tokens carry.
pub const ISSUER: &str = "https://clerk.test";
/// The authorized party they carry.
pub const AZP: &str = "http://localhost:5173";
/// The kid of the served key.
pub const KID: &str = "ins_test_key_1";

/// A test RSA key pair.
pub struct Key {
    /// Private key, PKCS#1 PEM.
    pub private_pem: String,
    /// Public key, PKCS#1 PEM.
    pub public_pem: String,
    /// JWK `n`.
    pub n: String,
    /// JWK `e`.
    pub e: String,
}

fn make_key() -> Key {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate RSA key");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Key {
        private_pem: key.to_pkcs1_pem(LineEnding::LF).expect("pem").to_string(),
        public_pem: key
            .to_public_key()
            .to_pkcs1_pem(LineEnding::LF)
            .expect("pem"),
        n: b64.encode(key.n().to_bytes_be()),
        e: b64.encode(key.e().to_bytes_be()),
    }
}

/// The served key (generated once per test binary).
pub fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(make_key)
}

/// A key that is not in the JWKS.
pub fn rogue_key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(make_key)
}

/// The Backend API secret key the stand-in accepts.
pub const SECRET_KEY: &str = "sk_test_granary_stand_in";

/// A running Clerk stand-in: the JWKS endpoint, and the Backend API's
/// `GET /v1/users/{user_id}/billing/subscription` (bearer [`SECRET_KEY`]; 404 with Clerk's
/// error body when the user has no subscription; a settable failure status).
pub struct ClerkStandIn {
    /// Its JWKS URL.
    pub jwks_url: String,
    /// Its Backend API base URL (`CLERK_API_URL`).
    pub api_url: String,
    hits: Arc<AtomicU64>,
    bapi: Arc<BackendApi>,
}

#[derive(Default)]
struct BackendApi {
    subscriptions: Mutex<HashMap<String, Value>>,
    fail_with: Mutex<Option<u16>>,
    calls: AtomicU64,
}

fn clerk_error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(
            json!({"errors": [{"message": message, "long_message": message, "code": code}],
                    "clerk_trace_id": "trace_test"}),
        ),
    )
}

impl ClerkStandIn {
    /// Starts serving on an ephemeral loopback port.
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let bapi = Arc::new(BackendApi::default());
        let k = key();
        let jwks = json!({"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": k.n, "e": k.e}]});
        let counter = hits.clone();
        let api = bapi.clone();
        let app = Router::new()
            .route(
                "/.well-known/jwks.json",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = jwks.clone();
                    async move { Json(body) }
                }),
            )
            .route(
                "/v1/users/{user_id}/billing/subscription",
                get(move |Path(user): Path<String>, headers: HeaderMap| {
                    let api = api.clone();
                    async move {
                        api.calls.fetch_add(1, Ordering::SeqCst);
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        if auth != format!("Bearer {SECRET_KEY}") {
                            return clerk_error(
                                StatusCode::UNAUTHORIZED,
                                "authentication_invalid",
                                "Unauthorized request",
                            );
                        }
                        if let Some(code) = *api.fail_with.lock().unwrap() {
                            return clerk_error(
                                StatusCode::from_u16(code).unwrap(),
                                "internal_clerk_error",
                                "Oops, an unexpected error occurred",
                            );
                        }
                        match api.subscriptions.lock().unwrap().get(&user) {
                            Some(sub) => (StatusCode::OK, Json(sub.clone())),
                            None => clerk_error(
                                StatusCode::NOT_FOUND,
                                "resource_not_found",
                                "Resource not found",
                            ),
                        }
                    }
                }),
            );
        let addr = crate::serve_loopback(app).await;
        Self {
            jwks_url: format!("http://{addr}/.well-known/jwks.json"),
            api_url: format!("http://{addr}"),
            hits,
            bapi,
        }
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// The subscription the Backend API answers for `user` (a Clerk `commerce_subscription`).
    pub fn set_subscription(&self, user: &str, subscription: Value) {
        self.bapi
            .subscriptions
            .lock()
            .unwrap()
            .insert(user.into(), subscription);
    }

    /// Makes every Backend API call answer `status` (None: answer normally).
    pub fn fail_backend_api(&self, status: Option<u16>) {
        *self.bapi.fail_with.lock().unwrap() = status;
    }

    /// How many Backend API calls were made.
    pub fn backend_api_calls(&self) -> u64 {
        self.bapi.calls.load(Ordering::SeqCst)
    }
}

/// Clerk's session claims for `user`, valid for 10 minutes.
pub fn claims(user: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": user, "iss": ISSUER, "azp": AZP, "sid": format!("sess_{user}"), "iat": now, "nbf": now - 5, "exp": now + 600})
}

/// Signs `claims` with the served key (RS256, kid [`KID`]).
pub fn sign(claims: &Value) -> String {
    sign_with(claims, &key().private_pem, KID)
}

/// Signs `claims` with any key and kid.
pub fn sign_with(claims: &Value, private_pem: &str, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("key"),
    )
    .expect("sign")
}
