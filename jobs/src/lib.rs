//! Granary's domain library. Both binaries (`granary-api`, `granary-worker`) depend on it; it
//! depends on neither.
#![forbid(unsafe_code)]

pub mod account;
pub mod admin;
pub mod audit;
pub mod bounds;
pub mod catalog;
pub mod clerk_api;
pub mod config;
pub mod console;
pub mod credits;
pub mod db;
pub mod doctor;
pub mod emails;
pub mod error;
pub mod fulfillment;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod model;
pub mod orders;
pub mod queue;
pub mod reconcile;
pub mod refunds;
pub mod shutdown;
pub mod storage;
pub mod stripe_api;
pub mod stripe_checkout;
pub mod subscriptions;
pub mod telemetry;
pub mod webhooks;

pub use config::Config;
