//! Routes, one module per area of the contract.

use axum::{
    Router,
    routing::{get, post},
};

use crate::AppState;

mod health;
mod webhooks;

/// Every route of the api.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health/", get(health::health))
        .route("/api/webhooks/clerk/", post(webhooks::clerk))
        .route("/api/webhooks/stripe/", post(webhooks::stripe))
}
