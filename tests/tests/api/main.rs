//! Granary's integration suite: one test binary, a module per area. Every test starts the real
//! api (in-process, or the binary as a process where the shipped artefact is the point) on a fresh
//! PostgreSQL database of its own; the worker runs in-process or as the real `granary-worker`
//! process. Providers (Clerk, Stripe, Resend, S3) are local stand-ins speaking their wire
//! protocol, and the real client crates are pointed at them. `docs/testing.md` says how to run
//! it and what each area needs.

mod checkout;
mod config_docs;
mod console;
mod console_browser;
mod contract;
mod credits;
mod faults;
mod foundation;
mod fulfillment;
mod logs;
mod operator;
mod queue;
mod reconcile;
mod storage_s3;
mod storefront;
mod throttle;
mod webhooks;
