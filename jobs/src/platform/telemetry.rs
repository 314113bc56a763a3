//! Tracing setup shared by both binaries.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber: human-readable in development, JSON lines in production.
/// `RUST_LOG` overrides the default filter. Safe to call more than once (tests do).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info,apalis=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init()
    } else {
        registry.with(fmt::layer().compact()).try_init()
    };
}
