//! The console's actions. Each checks the CSRF token, asks for a reason, calls the same
//! function as the CLI (which writes `operator_actions` in its transaction), and redirects to
//! where the operator sees the result.

use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::Redirect,
};
use granary_jobs::{
    operator::reads,
    platform::audit::{self, Actor},
    queue::{JobState, ops::OpError},
    webhooks::ingest::{self, ReplayError},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{Operator, auth::Refused, pages::JobsQuery};
use crate::AppState;

/// Most jobs one bulk requeue touches.
const BULK_MAX: i64 = 1000;

/// The fields every action form sends.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
    reason: Option<String>,
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

fn not_found(text: String) -> Refused {
    Refused {
        status: StatusCode::NOT_FOUND,
        title: "Not found",
        text,
    }
}

fn not_applicable(text: String) -> Refused {
    Refused {
        status: StatusCode::CONFLICT,
        title: "Not applicable",
        text,
    }
}

impl From<OpError> for Refused {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(_) => not_found(e.to_string()),
            OpError::WrongState { .. } => not_applicable(e.to_string()),
            OpError::Db(e) => Refused::unavailable(e),
        }
    }
}

impl From<ReplayError> for Refused {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::NotFound(_) => not_found(e.to_string()),
            ReplayError::Rejected(..) => not_applicable(e.to_string()),
            ReplayError::Db(e) => Refused::unavailable(e),
        }
    }
}

/// `POST /console/jobs/{id}/requeue`.
pub async fn requeue_job(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect, Refused> {
    audit::requeue_job(&state.pool, &id, &actor(&op, &f)?).await?;
    Ok(Redirect::to(&format!("/console/jobs/{id}")))
}

/// `POST /console/jobs/{id}/cancel`.
pub async fn cancel_job(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect, Refused> {
    audit::cancel_job(&state.pool, &id, &actor(&op, &f)?).await?;
    Ok(Redirect::to(&format!("/console/jobs/{id}")))
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
) -> Result<Redirect, Refused> {
    let actor = actor(&op, &f.action)?;
    let ids = reads::failed_job_ids(&state.pool, &f.filter.filter(), BULK_MAX)
        .await
        .map_err(Refused::unavailable)?;
    let mut requeued = 0;
    for id in &ids {
        match audit::requeue_job(&state.pool, id, &actor).await {
            Ok(()) => requeued += 1,
            // Requeued or cancelled by someone else meanwhile: nothing to do for it.
            Err(OpError::WrongState { .. } | OpError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(requeued, actor = %actor.name, "console bulk requeue");
    let mut to = f.filter.clone();
    to.set_state(JobState::Pending);
    Ok(Redirect::to(&format!("/console/jobs?{}", to.to_query())))
}

/// `POST /console/orders/{public_id}/requeue`: every failed job of the order.
pub async fn requeue_order(
    State(state): State<AppState>,
    op: Operator,
    Path(public_id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect, Refused> {
    let actor = actor(&op, &f)?;
    let order = reads::order_id(&state.pool, &public_id)
        .await
        .map_err(Refused::unavailable)?
        .ok_or_else(|| not_found("No order has that id.".into()))?;
    audit::requeue_order_jobs(&state.pool, order, &actor).await?;
    Ok(Redirect::to(&format!("/console/orders/{public_id}")))
}

/// `POST /console/webhooks/{id}/replay`.
pub async fn replay(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<Uuid>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect, Refused> {
    ingest::replay(&state.pool, id, &actor(&op, &f)?).await?;
    Ok(Redirect::to(&format!("/console/webhooks/{id}")))
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
) -> Result<Redirect, Refused> {
    let actor = actor(&op, &f.action)?;
    let (Some(since), Some(until)) = (
        super::pages::local_time(Some(&f.since)),
        super::pages::local_time(Some(&f.until)),
    ) else {
        return Err(Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Bad range",
            text: "Give the range as two times, e.g. 2026-12-02T10:00.".into(),
        });
    };
    reads::replay_failed(&state.pool, since, until, &actor).await?;
    Ok(Redirect::to("/console/webhooks?status=received"))
}
