//! Provider webhooks: verify over the raw bytes, store every delivery (accepted or rejected)
//! before answering, and apply accepted events with the `process_webhook_event` job.

pub mod apply;
mod clerk;
#[cfg(test)]
mod fuzz;
pub mod ingest;
mod stripe;
