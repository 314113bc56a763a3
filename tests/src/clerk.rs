//! A Clerk stand-in: a JWKS endpoint on loopback serving a test RSA key, counting its fetches,
//! and tokens carrying Clerk's session claims signed with that key.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use axum::{Json, Router, routing::get};
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

/// A running JWKS endpoint.
pub struct ClerkStandIn {
    /// Its JWKS URL.
    pub jwks_url: String,
    hits: Arc<AtomicU64>,
}

impl ClerkStandIn {
    /// Starts serving the JWKS on an ephemeral loopback port.
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let k = key();
        let jwks = json!({"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": k.n, "e": k.e}]});
        let counter = hits.clone();
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = jwks.clone();
                async move { Json(body) }
            }),
        );
        let addr = crate::serve_loopback(app).await;
        Self {
            jwks_url: format!("http://{addr}/.well-known/jwks.json"),
            hits,
        }
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
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
