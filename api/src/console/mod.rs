//! The operator console, under `/console/`: pages rendered on the server (maud), htmx for the
//! overview's live refresh, every asset compiled into the binary. Reads are the
//! `operator::reads` functions the CLI and the JSON routes use; actions are the same audited
//! job actions (`platform::audit`) and replay functions, with the operator's reason.
//!
//! Who may enter: a session opened by a one-time login link (`granary-worker console
//! login-link`) or by an admin's Clerk session. Anyone else is redirected to a page that says
//! how to log in. Every form carries the session's CSRF token, and the session cookie is
//! `SameSite=Strict` and `HttpOnly` (and `Secure` outside development).

mod actions;
mod auth;
mod pages;
mod views;

use axum::{
    Router,
    http::header,
    response::IntoResponse,
    routing::{get, post},
};

use crate::AppState;

pub use auth::Operator;

const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");
const CSS: &str = include_str!("assets/console.css");

async fn htmx() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        HTMX,
    )
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/assets/htmx-2.0.11.min.js", get(htmx))
        .route("/console/assets/console.css", get(css))
        .route("/console/login", get(auth::login))
        .route("/console/login/clerk", get(auth::login_clerk))
        .route("/console/login-help", get(auth::login_help))
        .route("/console/logout", post(auth::logout))
        .route("/console", get(pages::overview))
        .route("/console/", get(pages::overview))
        .route("/console/overview/live", get(pages::overview_live))
        .route("/console/jobs", get(pages::jobs))
        .route("/console/jobs/{id}", get(pages::job))
        .route("/console/jobs/{id}/requeue", post(actions::requeue_job))
        .route("/console/jobs/{id}/cancel", post(actions::cancel_job))
        .route(
            "/console/jobs-requeue-failed",
            post(actions::requeue_failed),
        )
        .route("/console/orders", get(pages::find_order))
        .route("/console/orders/{public_id}", get(pages::order))
        .route(
            "/console/orders/{public_id}/requeue",
            post(actions::requeue_order),
        )
        .route("/console/webhooks", get(pages::webhooks))
        .route("/console/webhooks/{id}", get(pages::webhook))
        .route("/console/webhooks/{id}/replay", post(actions::replay))
        .route(
            "/console/webhooks-replay-failed",
            post(actions::replay_failed),
        )
        .route("/console/doctor", get(pages::doctor))
}
