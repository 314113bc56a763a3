//! Granary's jobs and domain: each feature's rules, queries, job payloads and handlers side by
//! side. Both binaries (`granary-api`, `granary-worker`) depend on it; it depends on neither.
//! The job runtime itself is the `granary-queue` crate.
//!
//! The layers, each importing only from those above it in this list (docs/architecture.md has
//! the map; `scripts/codebase-stats` checks it): [`platform`] (and the job runtime); the shared
//! vocabulary ([`error`], [`model`]); [`providers`]; [`emails`]; the features that stand alone
//! ([`billing`], [`profiles`], [`downloads`], [`bookings`]); [`orders`]; [`catalog`] (a finalized
//! asset queues the grants its paid orders wait for); [`webhooks`]; [`operator`]; and
//! [`registry`], which names every job kind.
#![forbid(unsafe_code)]

pub mod billing;
pub mod bookings;
pub mod catalog;
pub mod downloads;
pub mod emails;
pub mod error;
pub mod model;
pub mod operator;
pub mod orders;
pub mod platform;
pub mod profiles;
pub mod providers;
pub mod registry;
pub mod webhooks;

/// The job runtime (the `granary-queue` crate), bound to Granary's configuration.
pub mod queue {
    pub use granary_queue::*;
    /// What a Granary job handler gets besides its payload.
    pub type JobContext = granary_queue::JobContext<crate::Config>;
    /// Granary's job kinds and schedules.
    pub type Registry = granary_queue::Registry<crate::Config>;
}

pub use platform::config::{self, Config};
