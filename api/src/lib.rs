//! Granary's HTTP API as a library, so the binary and the integration tests boot the very same
//! router. Handlers read like the contract: extract, authorize, one transaction, answer.
#![forbid(unsafe_code)]

pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
pub mod metrics;
mod middleware;
pub mod openapi;
pub mod request_id;
mod routes;
pub mod throttle;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::Method};
use granary_jobs::Config;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::{ApiError, ApiResult};

/// What every handler can reach. Cloned for every request (axum's `State`, each middleware
/// layer), so it is one shared pointer: a clone of the fields themselves measured ~3.5% of the
/// api's CPU at 2.5k webhook deliveries/s (the storage operator, the Svix key, the pool).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state's fields.
pub struct Shared {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The database pool.
    pub pool: PgPool,
    /// Session token verification (JWKS cache).
    pub verifier: Arc<auth::Verifier>,
    /// Asset storage, or why it is unusable (routes that need it answer 503).
    pub storage: Result<granary_jobs::platform::storage::Storage, String>,
    /// Group commit for accepted webhook deliveries.
    pub ingest: Arc<granary_jobs::webhooks::ingest::Batcher>,
    /// Clerk (Svix) signature verification, its secret decoded once.
    pub clerk_webhooks: granary_jobs::providers::verify::ClerkVerifier,
    /// Abuse limits (this process's).
    pub throttles: Arc<throttle::Throttles>,
}

impl AppState {
    /// Wraps a configuration and a pool. In development with `GRANARY_DEV_AUTH=true`, the local
    /// development key is trusted too.
    pub fn new(config: Config, pool: PgPool) -> Self {
        let dev_key = if config.clerk.dev_auth && config.is_development() {
            match auth::dev::decoding_key() {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(error = %e, "GRANARY_DEV_AUTH is on but the development key is unusable");
                    None
                }
            }
        } else {
            None
        };
        let verifier = Arc::new(auth::Verifier::new(&config, dev_key));
        let storage = granary_jobs::platform::storage::Storage::from_config(&config);
        if let Err(e) = &storage {
            tracing::warn!("{e}: download and asset routes answer 503 storage_unavailable");
        }
        Self(Arc::new(Shared {
            throttles: Arc::new(throttle::Throttles::new(&config.throttles)),
            clerk_webhooks: granary_jobs::providers::verify::ClerkVerifier::new(
                config.clerk.webhook_secret.as_ref(),
            ),
            config: Arc::new(config),
            ingest: Arc::new(granary_jobs::webhooks::ingest::Batcher::new(pool.clone())),
            pool,
            verifier,
            storage,
        }))
    }
}

impl Shared {
    /// The storage backend, or 503 `storage_unavailable`.
    pub fn storage(&self) -> Result<&granary_jobs::platform::storage::Storage, ApiError> {
        self.storage.as_ref().map_err(|e| ApiError::Unavailable {
            code: "storage_unavailable",
            message: format!("Asset storage is unavailable: {e}."),
        })
    }
}

/// The whole router with its middleware stack.
pub fn app(state: AppState) -> Router {
    let cors = cors_layer(&state.config);
    let limit = state.config.max_body_bytes;
    granary_jobs::platform::metrics::install();
    routes::router()
        .merge(console::router())
        .route("/metrics", axum::routing::get(metrics::public))
        .fallback(middleware::not_found)
        // A handler that panics answers the contract's 500 (and is counted and logged as one)
        // instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .layer(axum::middleware::from_fn(metrics::track))
        // Innermost first: tracing sees the matched path.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            throttle::throttle,
        ))
        .layer(axum::middleware::from_fn(middleware::refuse_nul_in_url))
        .layer(middleware::trace_layer())
        // Extractors may read up to the limit (axum's own default is lower than some settings).
        .layer(DefaultBodyLimit::max(limit))
        // The body limit and the body timeout, for every route: it reads each body whole before
        // routing, answers an oversized or too slow one itself, and records an oversized webhook
        // delivery as rejected.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::read_body,
        ))
        .layer(cors)
        .layer(axum::middleware::from_fn(middleware::json_errors))
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

fn cors_layer(config: &Config) -> CorsLayer {
    let origins: Vec<_> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderName::from_static("idempotency-key"),
            axum::http::HeaderName::from_static(request_id::HEADER),
            // What a client written for the Django starter may send (django-cors-headers'
            // defaults).
            axum::http::header::ACCEPT,
            axum::http::HeaderName::from_static("x-csrftoken"),
            axum::http::HeaderName::from_static("x-requested-with"),
        ])
        .expose_headers([axum::http::HeaderName::from_static(request_id::HEADER)])
        .max_age(Duration::from_secs(600))
}

/// Serves `app(state)` on `listener` until `shutdown` is cancelled, then drains in-flight
/// requests (graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    granary_jobs::platform::metrics::spawn_private(
        &state.config,
        &state.pool,
        granary_jobs::registry::registry().queues(),
        &shutdown,
    );
    let header_timeout = state.config.header_timeout;
    granary_jobs::platform::server::serve(listener, app(state), header_timeout, shutdown).await
}
