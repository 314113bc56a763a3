//! The console's actions. Each checks the CSRF token, asks for a reason, calls the same
//! function as the CLI (which writes `operator_actions` in its transaction), and redirects to
//! where the operator sees the result.

use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use granary_jobs::{
    admin,
    queue::ops::{self, Actor, OpError},
    webhooks::ingest::{self, ReplayError},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{Operator, auth::Refused, pages::JobsQuery, views};
use crate::AppState;

/// Most jobs one bulk requeue touches.
const BULK_MAX: i64 = 1000;

/// The fields every action form sends.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
    reason: Option<String>,
}

fn refused(status: StatusCode, title: &str, text: &str) -> Response {
    (status, views::message(title, text)).into_response()
}

/// The operator as the audit names them, with their reason; refuses a forged or reasonless form.
fn actor(op: &Operator, form: &ActionForm) -> Result<Actor, Refused> {
    op.check_csrf(&form.csrf)?;
    let reason = form.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.len() < 3 {
        return Err(Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "A reason is needed",
            text: "Say why (at least 3 characters): it is kept in the audit with the action."
                .into(),
        });
    }
    Ok(Actor {
        name: op.session.actor.clone(),
        reason: Some(reason.to_string()),
    })
}

fn op_failed(e: OpError) -> Response {
    match e {
        OpError::NotFound(_) => refused(StatusCode::NOT_FOUND, "Not found", &e.to_string()),
        OpError::WrongState { .. } => {
            refused(StatusCode::CONFLICT, "Not applicable", &e.to_string())
        }
        OpError::Db(e) => {
            tracing::error!(error = %e, "console action failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The database did not answer. Try again.",
            )
        }
    }
}

fn replay_failed_page(e: ReplayError) -> Response {
    match e {
        ReplayError::NotFound(_) => refused(StatusCode::NOT_FOUND, "Not found", &e.to_string()),
        ReplayError::Rejected(..) => {
            refused(StatusCode::CONFLICT, "Not applicable", &e.to_string())
        }
        ReplayError::Db(e) => {
            tracing::error!(error = %e, "console replay failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The database did not answer. Try again.",
            )
        }
    }
}

/// `POST /console/jobs/{id}/requeue`.
pub async fn requeue_job(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let actor = match actor(&op, &f) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match ops::requeue(&state.pool, &id, &actor).await {
        Ok(()) => Redirect::to(&format!("/console/jobs/{id}")).into_response(),
        Err(e) => op_failed(e),
    }
}

/// `POST /console/jobs/{id}/cancel`.
pub async fn cancel_job(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let actor = match actor(&op, &f) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match ops::cancel(&state.pool, &id, &actor).await {
        Ok(()) => Redirect::to(&format!("/console/jobs/{id}")).into_response(),
        Err(e) => op_failed(e),
    }
}

/// The bulk requeue's form: the action's fields and the jobs page's filter.
#[derive(Debug, Deserialize)]
pub struct BulkForm {
    #[serde(flatten)]
    action: ActionForm,
    #[serde(flatten)]
    filter: JobsQuery,
}

/// `POST /console/jobs-requeue-failed`: every failed or cancelled job matching the filter.
pub async fn requeue_failed(
    State(state): State<AppState>,
    op: Operator,
    Form(f): Form<BulkForm>,
) -> Response {
    let actor = match actor(&op, &f.action) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let ids = match admin::failed_job_ids(&state.pool, &f.filter.filter(), BULK_MAX).await {
        Ok(ids) => ids,
        Err(e) => return op_failed(OpError::Db(e)),
    };
    let mut requeued = 0;
    for id in &ids {
        match ops::requeue(&state.pool, id, &actor).await {
            Ok(()) => requeued += 1,
            // Requeued or cancelled by someone else meanwhile: nothing to do for it.
            Err(OpError::WrongState { .. } | OpError::NotFound(_)) => {}
            Err(e) => return op_failed(e),
        }
    }
    tracing::info!(requeued, actor = %actor.name, "console bulk requeue");
    let mut to = JobsQuery::clone(&f.filter);
    to.set_state("pending");
    Redirect::to(&format!("/console/jobs?{}", to.to_query())).into_response()
}

/// `POST /console/orders/{public_id}/requeue`: every failed job of the order.
pub async fn requeue_order(
    State(state): State<AppState>,
    op: Operator,
    Path(public_id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let actor = match actor(&op, &f) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let order = match admin::order_id(&state.pool, &public_id).await {
        Ok(Some(o)) => o,
        Ok(None) => return refused(StatusCode::NOT_FOUND, "Not found", "No order has that id."),
        Err(e) => return op_failed(OpError::Db(e)),
    };
    match ops::requeue_order(&state.pool, order, &actor).await {
        Ok(_) => Redirect::to(&format!("/console/orders/{public_id}")).into_response(),
        Err(e) => op_failed(e),
    }
}

/// `POST /console/webhooks/{id}/replay`.
pub async fn replay(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<Uuid>,
    Form(f): Form<ActionForm>,
) -> Response {
    let actor = match actor(&op, &f) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match ingest::replay(&state.pool, id, &actor).await {
        Ok(_) => Redirect::to(&format!("/console/webhooks/{id}")).into_response(),
        Err(e) => replay_failed_page(e),
    }
}

/// The range replay's form.
#[derive(Debug, Deserialize)]
pub struct RangeForm {
    #[serde(flatten)]
    action: ActionForm,
    since: String,
    until: String,
}

/// `POST /console/webhooks-replay-failed`: every failed event received in the range.
pub async fn replay_failed(
    State(state): State<AppState>,
    op: Operator,
    Form(f): Form<RangeForm>,
) -> Response {
    let actor = match actor(&op, &f.action) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let (Some(since), Some(until)) = (
        super::pages::local_time(Some(&f.since)),
        super::pages::local_time(Some(&f.until)),
    ) else {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Bad range",
            "Give the range as two times, e.g. 2026-12-02T10:00.",
        );
    };
    match admin::replay_failed(&state.pool, since, until, &actor).await {
        Ok(_) => Redirect::to("/console/webhooks?status=received").into_response(),
        Err(e) => replay_failed_page(e),
    }
}
