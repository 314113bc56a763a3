//! The console's pages. Each reads through the `admin` functions the CLI and the JSON routes
//! use, and renders.

use std::time::Duration;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use granary_jobs::{
    model::WebhookStatus,
    operator::{
        doctor,
        reads::{self, JobFilter, WebhookFilter},
    },
    providers::Provider,
    queue::JobState,
};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    Operator,
    views::{self, badge, csrf, or_dash, page, pretty, reason, short, text, when},
};
use crate::AppState;

/// A database error as a page.
fn unavailable(e: impl std::fmt::Display) -> Response {
    super::auth::Refused::unavailable(e).into_response()
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        views::message("Not found", &format!("No {what} has that id.")),
    )
        .into_response()
}

fn doctor_options() -> doctor::Options {
    doctor::Options {
        live: false,
        unfulfilled_after: Duration::from_secs(15 * 60),
        pending_after: Duration::from_secs(30 * 60),
    }
}

async fn overview_body(state: &AppState) -> Result<Markup, sqlx::Error> {
    let pool = &state.pool;
    let counts = granary_jobs::queue::stats::job_counts(pool).await?;
    let depth = granary_jobs::queue::stats::depth(pool).await?;
    let hour = reads::throughput(pool, Duration::from_secs(3600), Duration::from_secs(60)).await?;
    let day =
        reads::throughput(pool, Duration::from_secs(86_400), Duration::from_secs(3600)).await?;
    let workers = reads::live_workers(pool, state.config.worker.rescue_bound()).await?;
    let report = doctor::run(&state.config, pool, doctor_options()).await;
    let mut queues: Vec<&str> = counts
        .iter()
        .filter(|c| c.exact)
        .map(|c| c.queue.as_str())
        .chain(granary_jobs::registry::registry().queues())
        .collect();
    queues.sort_unstable();
    queues.dedup();
    let completed = counts
        .iter()
        .find(|c| c.state == JobState::Completed.as_str())
        .map_or(0, |c| c.count);
    let findings: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.level != doctor::Level::Ok)
        .collect();
    Ok(html! {
        div #live hx-get="/console/overview/live" hx-trigger="every 5s" hx-swap="outerHTML" {
            section.cards {
                div.card { div.big { (depth.pending) } div { "waiting" } }
                div.card { div.big { (depth.running) } div { "running" } }
                div.card.alert[depth.failed > 0] { div.big { (depth.failed) } div { "failed or cancelled" } }
                div.card {
                    div.big { (depth.oldest_pending_age_seconds.map_or("—".to_string(), |s| format!("{s:.1} s"))) }
                    div { "oldest waiting job" }
                }
                div.card { div.big { "≈" (completed) } div { "completed (estimated)" } }
            }
            h2 { "Queues" }
            (queue_table(&queues, &counts))
            h2 { "Throughput" }
            (views::chart("Last hour, per minute", &hour, |t| t.format("%H:%M").to_string()))
            (views::chart("Last day, per hour", &day, |t| t.format("%d %H:00").to_string()))
            h2 { "Live workers" }
            (workers_table(&workers))
            h2 { "Doctor" }
            (doctor_findings(&findings))
        }
    })
}

/// The overview's jobs per queue and watched state.
fn queue_table(queues: &[&str], counts: &[granary_jobs::queue::stats::JobCount]) -> Markup {
    let count = |q: &str, s: JobState| {
        counts
            .iter()
            .find(|c| c.queue == q && c.state == s.as_str())
            .map_or(0, |c| c.count)
    };
    html! {
        table {
            thead { tr { th { "queue" } @for s in JobState::WATCHED { th.num { (s) } } } }
            tbody {
                @for q in queues {
                    tr {
                        td { a href={ "/console/jobs?kind=" (q) } { (q) } }
                        @for s in JobState::WATCHED {
                            @let n = count(q, s);
                            td.num.alert[n > 0 && s.is_stopped()] {
                                @if n > 0 { a href={ "/console/jobs?kind=" (q) "&state=" (s) } { (n) } } @else { "0" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The overview's live workers.
fn workers_table(workers: &[reads::LiveWorker]) -> Markup {
    html! {
        @if workers.is_empty() {
            p.alert { "No worker has reported within the rescue bound. Start one: granary-worker run" }
        } @else {
            table {
                thead { tr { th { "worker" } th { "queue" } th.num { "running" } th { "started" } th { "last seen" } } }
                tbody {
                    @for w in workers {
                        tr { td { code { (w.id) } } td { (w.queue) } td.num { (w.running) } td { (views::fmt(w.started_at)) } td { (views::fmt(w.last_seen)) } }
                    }
                }
            }
        }
    }
}

/// The overview's doctor findings (the checks that are not ok).
fn doctor_findings(findings: &[&doctor::Check]) -> Markup {
    html! {
        @if findings.is_empty() {
            p { "Every check passes. " a href="/console/doctor" { "All checks" } }
        } @else {
            ul.findings {
                @for c in findings {
                    li class={ "level-" (format!("{:?}", c.level).to_lowercase()) } {
                        strong { (c.name) } ": " (c.detail)
                        @if !c.fix.is_empty() { br; span.muted { "Fix: " (c.fix) } }
                    }
                }
            }
            p { a href="/console/doctor" { "All checks" } }
        }
    }
}

/// `GET /console/`.
pub async fn overview(State(state): State<AppState>, op: Operator) -> Response {
    match overview_body(&state).await {
        Ok(body) => page("Overview", Some(&op), body).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /console/overview/live`: the overview's body alone, for htmx's refresh.
pub async fn overview_live(State(state): State<AppState>, _op: Operator) -> Response {
    match overview_body(&state).await {
        Ok(body) => body.into_response(),
        Err(e) => unavailable(e),
    }
}

/// The jobs page's query: the filter and the time range as the form sends them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobsQuery {
    state: Option<String>,
    kind: Option<String>,
    order: Option<String>,
    q: Option<String>,
    /// `datetime-local` values, read as UTC.
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
}

pub(super) fn local_time(s: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = s?.trim();
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
                .ok()
                .map(|t| t.and_utc())
        })
}

impl JobsQuery {
    /// The filter the listing, the paging and the bulk requeue share.
    pub fn filter(&self) -> JobFilter {
        JobFilter {
            state: self.state.clone(),
            kind: self.kind.clone(),
            order: self.order.clone(),
            q: self.q.clone(),
            since: local_time(self.since.as_deref()),
            until: local_time(self.until.as_deref()),
            before: self.before.clone(),
            limit: Some(50),
            offset: None,
        }
        .normalized()
    }

    /// The query string of this filter (without the page cursor).
    fn query_string(&self, before: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("state", &self.state),
            ("kind", &self.kind),
            ("order", &self.order),
            ("q", &self.q),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.trim().is_empty()) {
                q.append_pair(k, v);
            }
        }
        if let Some(b) = before {
            q.append_pair("before", b);
        }
        q.finish()
    }

    /// This filter (with its page) as a query string.
    pub fn to_query(&self) -> String {
        self.query_string(self.before.as_deref())
    }

    /// Shows jobs in `state` (from the first page).
    pub fn set_state(&mut self, state: JobState) {
        self.state = Some(state.as_str().to_string());
        self.before = None;
    }

    /// Hidden fields carrying this filter into a form.
    pub fn hidden(&self) -> Markup {
        html! {
            @for (k, v) in [("kind", &self.kind), ("order", &self.order), ("q", &self.q), ("since", &self.since), ("until", &self.until)] {
                @if let Some(v) = v.as_deref().filter(|v| !v.trim().is_empty()) {
                    input type="hidden" name=(k) value=(v);
                }
            }
        }
    }
}

/// `GET /console/jobs`.
pub async fn jobs(
    State(state): State<AppState>,
    op: Operator,
    Query(q): Query<JobsQuery>,
) -> Response {
    let f = q.filter();
    let listed = match reads::list_jobs(&state.pool, &f).await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let kinds = granary_jobs::registry::registry().queues();
    let per_state = |s: JobState| -> (i64, bool) {
        listed
            .counts
            .iter()
            .filter(|c| {
                c.state == s
                    && f.kind
                        .as_deref()
                        .is_none_or(|k| c.queue == k || c.queue == "*")
            })
            .fold((0, true), |(n, exact), c| (n + c.count, exact && c.exact))
    };
    let sel = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    let body = html! {
        form.filters method="get" action="/console/jobs" {
            label { "State " select name="state" {
                option value="" { "any" }
                @for s in JobState::ALL { option value=(s) selected[sel(&f.state, s.as_str())] { (s) } }
            } }
            label { "Kind " select name="kind" {
                option value="" { "any" }
                @for k in &kinds { option value=(k) selected[sel(&f.kind, k)] { (k) } }
            } }
            label { "Order " input type="text" name="order" value=[f.order.as_deref()] placeholder="public id"; }
            label { "From " input type="datetime-local" name="since" value=[q.since.as_deref()]; }
            label { "To " input type="datetime-local" name="until" value=[q.until.as_deref()]; }
            label.grow { "Search " input type="search" name="q" value=[f.q.as_deref()] placeholder="text in arguments or errors"; }
            button type="submit" { "Filter" }
            a href="/console/jobs" { "Clear" }
        }
        p.muted {
            "Search finds text in the arguments and errors of failed, cancelled and retrying jobs (choose a state to search others). "
            "An order id (ord_… or its UUID) or a webhook's UUID finds every job that concerns it."
        }
        p.counts {
            @for s in JobState::ALL {
                @let (n, exact) = per_state(s);
                a.chip href={ "/console/jobs?" (JobsQuery { state: Some(s.as_str().into()), before: None, ..q.clone() }.query_string(None)) } {
                    (s) " " @if !exact { "≈" } (n)
                }
            }
        }
        (jobs_table(&listed.jobs))
        nav.paging {
            @if f.before.is_some() { a href={ "/console/jobs?" (q.query_string(None)) } { "← Newest" } }
            @if let Some(next) = listed.next_before.as_deref() {
                a href={ "/console/jobs?" (q.query_string(Some(next))) } { "Older →" }
            }
        }
        form.bulk method="post" action="/console/jobs-requeue-failed" {
            (csrf(&op))
            (q.hidden())
            "Every failed or cancelled job matching this filter (up to 1,000): "
            (reason())
            button type="submit" { "Requeue" }
        }
    };
    page("Jobs", Some(&op), body).into_response()
}

/// The jobs page's table.
fn jobs_table(jobs: &[reads::JobSummary]) -> Markup {
    html! {
        table.jobs {
            thead { tr { th { "job" } th { "kind" } th { "state" } th.num { "attempts" } th { "last error" } th { "order" } th { "created" } } }
            tbody {
                @for j in jobs {
                    tr {
                        td { a href={ "/console/jobs/" (j.id) } { code { (j.id) } } }
                        td { (j.kind) }
                        td { (badge(j.state.as_str())) }
                        td.num { (j.attempts) "/" (j.max_attempts) }
                        td.error { @if let Some(e) = &j.last_error { span title=(e) { (short(e, 140)) } } }
                        td { @if let Some(o) = &j.order { a href={ "/console/orders/" (o) } { (o) } } }
                        td { (when(j.created_at)) }
                    }
                }
                @if jobs.is_empty() { tr { td colspan="7" { "No job matches." } } }
            }
        }
    }
}

/// `GET /console/jobs/{id}`.
pub async fn job(State(state): State<AppState>, op: Operator, Path(id): Path<String>) -> Response {
    let j = match reads::show_job(&state.pool, &id).await {
        Ok(Some(j)) => j,
        Ok(None) => return not_found("job"),
        Err(e) => return unavailable(e),
    };
    let body = html! {
        dl.facts {
            dt { "kind" } dd { (j.kind) }
            dt { "state" } dd { (badge(j.state.as_str())) }
            dt { "attempts" } dd { (j.attempts) " of " (j.max_attempts) }
            dt { "next run" } dd { (when(j.next_run_at)) }
            dt { "finished" } dd { (when(j.done_at)) }
            dt { "worker" } dd { (or_dash(j.worker.as_deref())) }
            @if let Some(o) = &j.order { dt { "order" } dd { a href={ "/console/orders/" (o) } { (o) } } }
            @if let Some(w) = j.webhook_event_id { dt { "webhook" } dd { a href={ "/console/webhooks/" (w) } { (w) } } }
            @if let Some(e) = j.email_id { dt { "email" } dd { (e) } }
            @if let Some(k) = &j.dedupe_key { dt { "dedupe key" } dd { code { (k) } } }
        }
        @if let Some(e) = &j.last_error { h2 { "Last error" } pre.error { (e) } }
        div.actions {
            @if j.state.is_stopped() {
                form method="post" action={ "/console/jobs/" (id) "/requeue" } {
                    (csrf(&op)) (reason()) button type="submit" { "Requeue" }
                }
            }
            @if j.state.is_waiting() {
                form method="post" action={ "/console/jobs/" (id) "/cancel" } {
                    (csrf(&op)) (reason()) button.danger type="submit" { "Cancel" }
                }
            }
        }
        h2 { "Payload" }
        pre { (pretty(&j.payload)) }
        h2 { "Attempts" }
        table {
            thead { tr { th.num { "#" } th { "worker" } th { "started" } th { "finished" } th { "outcome" } th { "retry at" } th { "error" } } }
            tbody {
                @for a in &j.attempt_history {
                    tr {
                        td.num { (a.attempt) }
                        td { code { (a.worker) } }
                        td { (when(a.started_at)) }
                        td { (when(a.finished_at)) }
                        td { (badge(&a.outcome)) }
                        td { (when(a.retry_at)) }
                        td.error { @if let Some(e) = &a.error { pre { (e) } } }
                    }
                }
            }
        }
    };
    page(&format!("Job {id}"), Some(&op), body).into_response()
}

/// `?public_id=` of the order search.
#[derive(Debug, Deserialize)]
pub struct FindOrder {
    public_id: Option<String>,
}

/// `GET /console/orders?public_id=`: to the order's page.
pub async fn find_order(_op: Operator, Query(q): Query<FindOrder>) -> Response {
    match q
        .public_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(id) => Redirect::to(&format!(
            "/console/orders/{}",
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        ))
        .into_response(),
        None => Redirect::to("/console/").into_response(),
    }
}

/// The facts of a timeline event that its line names (the others are listed as stored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Facts {
    job_id: Option<String>,
    kind: Option<String>,
    attempt: Option<i64>,
    outcome: Option<String>,
    error: Option<String>,
    id: Option<String>,
    provider: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    status: Option<String>,
    found_by: Option<String>,
    actor: Option<String>,
    reason: Option<String>,
}

impl Facts {
    /// The facts in an event's `detail` (none where it is not an object of these).
    fn of(detail: &serde_json::Value) -> Self {
        Self::deserialize(detail).unwrap_or_default()
    }
}

/// `GET /console/orders/{public_id}`: the timeline.
pub async fn order(
    State(state): State<AppState>,
    op: Operator,
    Path(public_id): Path<String>,
) -> Response {
    let t = match reads::timeline(&state.pool, &public_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found("order"),
        Err(e) => return unavailable(e),
    };
    let o = &t.order;
    let body = html! {
        dl.facts {
            dt { "status" } dd { (badge(&o.status)) }
            dt { "total" } dd { (o.total_cents) " cents " (o.currency) }
            dt { "created" } dd { (when(o.created_at)) }
            dt { "paid" } dd { (when(o.paid_at)) }
            dt { "fulfilled" } dd { (when(o.fulfilled_at)) }
        }
        div.actions {
            form method="post" action={ "/console/orders/" (public_id) "/requeue" } {
                (csrf(&op))
                "Every failed job of this order: "
                (reason())
                button type="submit" { "Requeue" }
            }
            a href={ "/console/jobs?order=" (public_id) } { "This order's jobs" }
        }
        h2 { "Timeline" }
        ol.timeline {
            @for e in &t.events {
                @let group = e.kind.split('.').next().unwrap_or_default();
                @let d = &e.detail;
                @let facts = Facts::of(d);
                li class={ "t-" (group) } {
                    time { (views::when_precise(e.at)) }
                    span.kind { (e.kind) }
                    span.detail {
                        @match group {
                            "job" => {
                                a href={ "/console/jobs/" (or_dash(facts.job_id.as_deref())) } { (or_dash(facts.kind.as_deref())) }
                                @if let Some(n) = facts.attempt { " attempt " (n) " " (badge(facts.outcome.as_deref().unwrap_or_default())) }
                                @if let Some(err) = &facts.error { " " span.error title=(err) { (short(err, 160)) } }
                            }
                            "webhook" => {
                                a href={ "/console/webhooks/" (or_dash(facts.id.as_deref())) } { (or_dash(facts.provider.as_deref())) " " (or_dash(facts.event_type.as_deref())) }
                                " " (badge(facts.status.as_deref().unwrap_or_default()))
                                @if facts.found_by.as_deref() == Some("reconciliation") { " " span.badge.found { "found by reconciliation" } }
                            }
                            "operator" => {
                                strong { (or_dash(facts.actor.as_deref())) } ": " (or_dash(facts.reason.as_deref()))
                                @if let Some(j) = &facts.job_id { " (" a href={ "/console/jobs/" (j) } { (or_dash(facts.kind.as_deref())) } ")" }
                            }
                            _ => {
                                @for (k, v) in d.as_object().into_iter().flatten().filter(|(_, v)| !v.is_null()) {
                                    span.kv { span.muted { (k.replace('_', " ")) } " " (short(&text(v), 80)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&format!("Order {public_id}"), Some(&op), body).into_response()
}

/// The webhooks page's query.
#[derive(Debug, Default, Deserialize)]
pub struct WebhooksQuery {
    provider: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    since: Option<String>,
    offset: Option<i64>,
}

/// `GET /console/webhooks`.
pub async fn webhooks(
    State(state): State<AppState>,
    op: Operator,
    Query(q): Query<WebhooksQuery>,
) -> Response {
    let blank = |o: &Option<String>| {
        o.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let f = WebhookFilter {
        provider: blank(&q.provider),
        status: blank(&q.status),
        event_type: blank(&q.event_type),
        since: local_time(q.since.as_deref()),
        limit: Some(50),
        offset: q.offset,
    };
    let listed = match reads::list_webhooks(&state.pool, &f).await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let rows = &listed.webhooks;
    let sel = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    let offset = f.offset.unwrap_or(0).max(0);
    let more = |off: i64| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("provider", &f.provider),
            ("status", &f.status),
            ("type", &f.event_type),
            ("since", &q.since),
        ] {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        }
        s.append_pair("offset", &off.to_string());
        s.finish()
    };
    let now = chrono::Utc::now();
    let body = html! {
        form.filters method="get" action="/console/webhooks" {
            label { "Provider " select name="provider" { option value="" { "any" } @for p in Provider::ALL.map(Provider::as_str) { option value=(p) selected[sel(&f.provider, p)] { (p) } } } }
            label { "Status " select name="status" { option value="" { "any" } @for s in WebhookStatus::ALL.map(WebhookStatus::as_str) { option value=(s) selected[sel(&f.status, s)] { (s) } } } }
            label { "Type " input type="text" name="type" value=[f.event_type.as_deref()] placeholder="e.g. checkout.session.completed"; }
            label { "Since " input type="datetime-local" name="since" value=[q.since.as_deref()]; }
            button type="submit" { "Filter" }
            a href="/console/webhooks" { "Clear" }
        }
        (webhooks_table(rows))
        nav.paging {
            @if offset > 0 { a href={ "/console/webhooks?" (more((offset - 50).max(0))) } { "← Newer" } }
            @if rows.len() == 50 { a href={ "/console/webhooks?" (more(offset + 50)) } { "Older →" } }
        }
        form.bulk method="post" action="/console/webhooks-replay-failed" {
            (csrf(&op))
            "Every failed event received from "
            input type="datetime-local" name="since" required value=(  (now - chrono::Duration::hours(24)).format("%Y-%m-%dT%H:%M").to_string());
            " to "
            input type="datetime-local" name="until" required value=((now + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M").to_string());
            " (UTC): "
            (reason())
            button type="submit" { "Replay" }
        }
    };
    page("Webhooks", Some(&op), body).into_response()
}

/// The webhooks page's table.
fn webhooks_table(rows: &[reads::WebhookSummary]) -> Markup {
    html! {
        table {
            thead { tr { th { "received" } th { "provider" } th { "type" } th { "status" } th { "event id" } th { "error or reason" } } }
            tbody {
                @for w in rows {
                    tr {
                        td { a href={ "/console/webhooks/" (w.id) } { (when(w.received_at)) } }
                        td { (w.provider) }
                        td { (or_dash(w.event_type.as_deref())) }
                        td {
                            (badge(&w.status))
                            @if w.found_by == "reconciliation" { " " span.badge.found { "found by reconciliation" } }
                        }
                        td { code { (or_dash(w.event_id.as_deref())) } }
                        td.error {
                            @if let Some(r) = &w.rejection_reason { (r) }
                            @if let Some(e) = &w.error { span title=(e) { (short(e, 120)) } }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="6" { "No delivery matches." } } }
            }
        }
    }
}

/// `GET /console/webhooks/{id}`: the exact stored body and the headers, signatures redacted.
pub async fn webhook(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<Uuid>,
) -> Response {
    let w = match reads::show_webhook(&state.pool, id).await {
        Ok(Some(w)) => w,
        Ok(None) => return not_found("webhook event"),
        Err(e) => return unavailable(e),
    };
    let body = html! {
        dl.facts {
            dt { "provider" } dd { (w.provider) }
            dt { "type" } dd { (or_dash(w.event_type.as_deref())) }
            dt { "status" } dd { (badge(&w.status)) @if let Some(r) = &w.rejection_reason { " " (r) } }
            dt { "event id" } dd { code { (or_dash(w.event_id.as_deref())) } }
            dt { "received" } dd { (when(w.received_at)) }
            dt { "occurred" } dd { (when(w.occurred_at)) }
            dt { "processed" } dd { (when(w.processed_at)) }
            dt { "attempts" } dd { (w.process_attempts) }
            dt { "reached Granary" } dd {
                @if w.found_by == "reconciliation" { span.badge.found { "found by reconciliation" } " (run " (or_dash(w.reconcile_run_id)) ")" } @else { "delivered by the provider" }
            }
        }
        @if let Some(e) = &w.error { h2 { "Error" } pre.error { (e) } }
        @if w.status != "rejected" {
            div.actions {
                form method="post" action={ "/console/webhooks/" (id) "/replay" } {
                    (csrf(&op)) (reason()) button type="submit" { "Replay" }
                }
            }
        }
        h2 { "Headers" }
        table.headers {
            tbody {
                @for (k, v) in &w.headers {
                    tr { th { (k) } td { code { (text(v)) } } }
                }
            }
        }
        h2 { "Body" @if w.body_truncated { " (truncated)" } }
        pre.body { (w.body) }
        @if !w.effects.is_empty() {
            h2 { "Effects" }
            ul { @for e in &w.effects { li { (e.action) " " (e.entity) " " code { (e.entity_id) } } } }
        }
    };
    page(&format!("Webhook {id}"), Some(&op), body).into_response()
}

/// `GET /console/doctor`.
pub async fn doctor(State(state): State<AppState>, op: Operator) -> Response {
    let report = doctor::run(&state.config, &state.pool, doctor_options()).await;
    let body = html! {
        p.muted { "The same checks as " code { "granary-worker doctor" } " (without --live)." }
        table {
            thead { tr { th { "check" } th { "verdict" } th { "found" } th { "fix" } } }
            tbody {
                @for c in &report.checks {
                    @let level = format!("{:?}", c.level).to_lowercase();
                    tr class={ "level-" (level) } { td { (c.name) } td { (badge(&level)) } td { (c.detail) } td { (c.fix) } }
                }
            }
        }
    };
    page("Doctor", Some(&op), body).into_response()
}
