//! What every feature stands on: configuration, the database, the outbound HTTP client and the
//! HTTP server, asset storage, metrics, tracing, shutdown, the input bounds and the operator
//! audit. Nothing here knows a feature.

pub mod audit;
pub mod bounds;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
