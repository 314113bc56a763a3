//! The registry of every job kind Granary runs.

use crate::queue::{Registry, probe};

/// Every job kind with its handler.
pub fn registry() -> Registry {
    Registry::new().register(probe::handle)
}
