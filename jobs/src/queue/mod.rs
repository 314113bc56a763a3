//! The durable job runtime on apalis-postgres, and what Granary adds to it (see QUEUE.md).

pub mod stats;
