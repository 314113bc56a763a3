//! Routes, one module per area of the contract.

use axum::{Router, routing::get};

use crate::AppState;

mod health;

/// Every route of the api.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/health/", get(health::health))
}
