//! Human-readable tables for the operator commands (`--json` prints the raw documents).

use chrono::{DateTime, SecondsFormat, Utc};
use granary_jobs::{
    model::RunStatus,
    operator::{
        doctor::{Level, Report},
        reads::{JobDetail, JobList, OrderTimeline, WebhookDetail, WebhookList},
    },
    providers::Provider,
};
use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value, or a dash.
fn or_dash(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A time as the JSON documents spell it (RFC 3339, UTC as `Z`).
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A document as pretty JSON (what `--json` prints).
fn print_json(doc: serde_json::Result<String>) {
    println!("{}", doc.expect("json"));
}

fn short(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max - 1).collect::<String>())
    }
}

/// Prints rows under a header, columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

/// `{"key": value}` documents, one line each.
pub fn plain(v: &Value) {
    for (k, v) in v.as_object().into_iter().flatten() {
        println!("{k}: {}", s(v));
    }
}

/// Any document, pretty JSON.
pub fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// `jobs list`.
pub fn jobs(v: &JobList, as_json: bool) {
    if as_json {
        print_json(serde_json::to_string_pretty(v));
        return;
    }
    let rows = v.jobs.iter().map(|j| {
        vec![
            j.id.clone(),
            j.kind.clone(),
            j.state.to_string(),
            format!("{}/{}", j.attempts, j.max_attempts),
            or_dash(j.order.as_deref()),
            ts(j.run_at),
            short(&or_dash(j.last_error.as_deref()), 60),
        ]
    });
    table(
        &[
            "id",
            "kind",
            "state",
            "attempts",
            "order",
            "run at",
            "last error",
        ],
        rows.collect(),
    );
    println!();
    let counts = v
        .counts
        .iter()
        .map(|c| vec![c.queue.clone(), c.state.to_string(), c.count.to_string()]);
    table(&["queue", "state", "count"], counts.collect());
}

/// `jobs show`.
pub fn job(v: &JobDetail, as_json: bool) {
    if as_json {
        print_json(serde_json::to_string_pretty(v));
        return;
    }
    for (k, value) in [
        ("id", v.id.clone()),
        ("kind", v.kind.clone()),
        ("state", v.state.to_string()),
        ("attempts", v.attempts.to_string()),
        ("max_attempts", v.max_attempts.to_string()),
        ("next_run_at", or_dash(v.next_run_at.map(ts))),
        ("done_at", or_dash(v.done_at.map(ts))),
        ("worker", or_dash(v.worker.as_deref())),
        ("order", or_dash(v.order.as_deref())),
        ("dedupe_key", or_dash(v.dedupe_key.as_deref())),
    ] {
        println!("{k:<13} {value}");
    }
    println!("payload       {}", v.payload);
    println!();
    let rows = v.attempt_history.iter().map(|a| {
        vec![
            a.attempt.to_string(),
            a.outcome.clone(),
            a.worker.clone(),
            ts(a.started_at),
            or_dash(a.finished_at.map(ts)),
            or_dash(a.retry_at.map(ts)),
            or_dash(a.error.as_deref()),
        ]
    });
    table(
        &[
            "#", "outcome", "worker", "started", "finished", "retry at", "error",
        ],
        rows.collect(),
    );
}

/// `webhooks list`.
pub fn webhooks(v: &WebhookList, as_json: bool) {
    if as_json {
        print_json(serde_json::to_string_pretty(v));
        return;
    }
    let rows = v.webhooks.iter().map(|w| {
        let why = or_dash(w.rejection_reason.as_deref().or(w.error.as_deref()));
        vec![
            w.id.to_string(),
            w.provider.clone(),
            or_dash(w.event_type.as_deref()),
            w.status.clone(),
            ts(w.received_at),
            short(&why, 70),
        ]
    });
    table(
        &[
            "id",
            "provider",
            "type",
            "status",
            "received",
            "reason / error",
        ],
        rows.collect(),
    );
}

/// `webhooks show`: the document itself, with or without `--json` (headers and body are the
/// point).
pub fn webhook(v: &WebhookDetail) {
    print_json(serde_json::to_string_pretty(v));
}

/// `orders timeline`.
pub fn timeline(v: &OrderTimeline, as_json: bool) {
    if as_json {
        print_json(serde_json::to_string_pretty(v));
        return;
    }
    let o = &v.order;
    println!(
        "order {} · {} · {} {}",
        o.public_id, o.status, o.total_cents, o.currency
    );
    let rows = v
        .events
        .iter()
        .map(|e| vec![ts(e.at), e.kind.clone(), short(&e.detail.to_string(), 110)]);
    table(&["at", "event", "detail"], rows.collect());
}

/// `doctor`.
pub fn doctor(r: &Report, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(r).expect("json"));
        return;
    }
    for c in &r.checks {
        let mark = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("[{mark}] {}: {}", c.name, c.detail);
        if !c.fix.is_empty() && c.level != Level::Ok {
            println!("       fix: {}", c.fix);
        }
    }
    println!(
        "\n{}",
        if r.failed() {
            "doctor found problems (exit 1)"
        } else {
            "all good"
        }
    );
}

/// `reconcile`: what one sweep found and what applying it did.
pub fn reconcile_run(run: &granary_jobs::operator::reconcile::Run, job_id: &str) {
    let what = if run.provider == Provider::Stripe {
        format!(
            "{} payment event(s) listed, {} never seen before",
            run.examined, run.recovered
        )
    } else {
        format!(
            "{} stale user(s) examined, {} pulled",
            run.examined, run.recovered
        )
    };
    println!(
        "{} sweep {} (job {job_id}): {}, after {} attempt(s); {what}",
        run.provider, run.id, run.status, run.attempts
    );
    if matches!(run.status, RunStatus::Queued | RunStatus::Running) {
        println!("  not finished yet: is a worker running? (granary-worker probe)");
    }
    if let Some(e) = &run.error {
        let fix = if run.provider == Provider::Stripe {
            granary_jobs::providers::stripe::fix_for(run.error_code.as_deref().unwrap_or_default())
        } else {
            "check CLERK_SECRET_KEY and CLERK_API_URL"
        };
        println!("  failed: {e}");
        println!(
            "  fix: {fix}; the sweep retries with backoff (granary-worker jobs show {job_id})"
        );
    }
    for e in &run.found {
        let did = if e.effects.is_empty() {
            e.note.clone().unwrap_or_default()
        } else {
            e.effects.join(", ")
        };
        println!(
            "  found {} {} → {}: {did}",
            e.provider_event_id, e.event_type, e.status
        );
    }
}

/// Live console sessions.
pub fn console_sessions(rows: &[granary_jobs::operator::console::SessionRow]) {
    table(
        &["id", "actor", "via", "opened", "last seen", "expires"],
        rows.iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.actor.clone(),
                    r.opened_via.clone(),
                    r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.last_seen_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.expires_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
            .collect(),
    );
}
