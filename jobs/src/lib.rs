//! Granary's domain library. Both binaries (`granary-api`, `granary-worker`) depend on it; it
//! depends on neither.
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod handlers;
pub mod queue;
pub mod shutdown;
pub mod telemetry;

pub use config::Config;
