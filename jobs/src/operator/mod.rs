//! The operator's side: reads of jobs, webhooks and order timelines; reconciliation with the
//! providers; `doctor`; and who may enter the console.

pub mod console;
pub mod doctor;
pub mod reads;
pub mod reconcile;
