//! Human-readable tables for the operator commands (`--json` prints the raw documents).

use granary_jobs::doctor::{Level, Report};
use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
pub fn jobs(v: &Value) {
    let rows = v["jobs"].as_array().into_iter().flatten().map(|j| {
        vec![
            s(&j["id"]),
            s(&j["kind"]),
            s(&j["state"]),
            format!("{}/{}", s(&j["attempts"]), s(&j["max_attempts"])),
            s(&j["order"]),
            s(&j["run_at"]),
            short(&s(&j["last_error"]), 60),
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
    let counts = v["counts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| vec![s(&c["queue"]), s(&c["state"]), s(&c["count"])]);
    table(&["queue", "state", "count"], counts.collect());
}

/// `jobs show`.
pub fn job(v: &Value) {
    for k in [
        "id",
        "kind",
        "state",
        "attempts",
        "max_attempts",
        "next_run_at",
        "done_at",
        "worker",
        "order",
        "dedupe_key",
    ] {
        println!("{k:<13} {}", s(&v[k]));
    }
    println!("payload       {}", v["payload"]);
    println!();
    let rows = v["attempt_history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                s(&a["attempt"]),
                s(&a["outcome"]),
                s(&a["worker"]),
                s(&a["started_at"]),
                s(&a["finished_at"]),
                s(&a["retry_at"]),
                s(&a["error"]),
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
pub fn webhooks(v: &Value) {
    let rows = v["webhooks"].as_array().into_iter().flatten().map(|w| {
        let why = if w["rejection_reason"].is_null() {
            s(&w["error"])
        } else {
            s(&w["rejection_reason"])
        };
        vec![
            s(&w["id"]),
            s(&w["provider"]),
            s(&w["type"]),
            s(&w["status"]),
            s(&w["received_at"]),
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

/// `orders timeline`.
pub fn timeline(v: &Value) {
    let o = &v["order"];
    println!(
        "order {} · {} · {} {}",
        s(&o["public_id"]),
        s(&o["status"]),
        s(&o["total_cents"]),
        s(&o["currency"])
    );
    let rows = v["events"].as_array().into_iter().flatten().map(|e| {
        vec![
            s(&e["at"]),
            s(&e["kind"]),
            short(&e["detail"].to_string(), 110),
        ]
    });
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
pub fn reconcile_run(run: &granary_jobs::reconcile::Run, job_id: &str) {
    let what = if run.provider == "stripe" {
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
    if run.status == "queued" || run.status == "running" {
        println!("  not finished yet: is a worker running? (granary-worker probe)");
    }
    if let Some(e) = &run.error {
        let fix = if run.provider == "stripe" {
            granary_jobs::stripe_api::fix_for(run.error_code.as_deref().unwrap_or_default())
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
pub fn console_sessions(rows: &[granary_jobs::console::SessionRow]) {
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
