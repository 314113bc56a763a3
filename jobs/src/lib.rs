//! Granary's domain library. Both binaries (`granary-api`, `granary-worker`) depend on it; it
//! depends on neither.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod db;
pub mod doctor;
pub mod emails;
pub mod fulfillment;
pub mod handlers;
pub mod orders;
pub mod queue;
pub mod shutdown;
pub mod storage;
pub mod subscriptions;
pub mod telemetry;
pub mod webhooks;

pub use config::Config;
