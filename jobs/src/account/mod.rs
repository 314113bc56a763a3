//! The buyer's side of the storefront contract (docs/storefront.md §1.1): profile, features,
//! entitlements, subscriptions and their sync status, orders, downloads, work orders,
//! bookings, and the dashboard's preflight checks. Each function takes a connection and typed
//! inputs; the api's handlers only extract, authorize, call and answer.

pub mod billing;
pub mod bookings;
pub mod downloads;
pub mod orders;
pub mod profile;
pub mod work_orders;
