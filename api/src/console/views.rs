//! The console's building blocks: the page layout, badges, times, charts, forms.

use chrono::{DateTime, Utc};
use granary_jobs::operator::reads::Throughput;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::Operator;

/// A whole page.
pub fn page(title: &str, op: Option<&Operator>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Granary console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/htmx-2.0.11.min.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console/" { "Granary" }
                    @if let Some(op) = op {
                        nav {
                            a href="/console/" { "Overview" }
                            a href="/console/jobs" { "Jobs" }
                            a href="/console/webhooks" { "Webhooks" }
                            a href="/console/doctor" { "Doctor" }
                        }
                        form.find method="get" action="/console/orders" {
                            input type="search" name="public_id" placeholder="Order id" aria-label="Order id";
                            button type="submit" { "Open order" }
                        }
                        form.logout method="post" action="/console/logout" {
                            (csrf(op))
                            span.who { (op.session.actor) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page with one message (errors, refusals).
pub fn message(title: &str, text: &str) -> Markup {
    page(title, None, html! { p.message { (text) } })
}

/// How to log in.
pub fn login_help() -> Markup {
    page(
        "Log in to the console",
        None,
        html! {
            p { "The console is for Granary's operators. There are two ways in:" }
            ol {
                li {
                    "On a machine with Granary's configuration, run "
                    code { "granary-worker console login-link" }
                    " (add " code { "--ttl 30m" } " for a longer-lived link). It prints a one-time link: open it in this browser."
                }
                li {
                    "If you are an admin of the shop and signed in to its dashboard with Clerk, "
                    a href="/console/login/clerk" { "enter with your Clerk session" } "."
                }
            }
            p.muted { "Sessions last 12 hours. " code { "granary-worker console logout --all" } " ends every session." }
        },
    )
}

/// The hidden CSRF field every form carries.
pub fn csrf(op: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(op.session.csrf_token); }
}

/// The reason field of an action.
pub fn reason() -> Markup {
    html! {
        input type="text" name="reason" required minlength="3" placeholder="Reason (kept in the audit)" aria-label="Reason";
    }
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge s-" (state) } { (state) } }
}

/// A time (or none) in UTC, or a dash.
pub fn when(t: impl Into<Option<DateTime<Utc>>>) -> String {
    t.into().map_or_else(|| "—".to_string(), fmt)
}

/// A time to the millisecond (events of one transaction share a second).
pub fn when_precise(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// A time in UTC.
pub fn fmt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A value, or a dash.
pub fn or_dash(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "—".to_string(), |v| v.to_string())
}

/// A free-form JSON value (stored headers, a timeline event's facts) as text, or a dash.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A long text cut to `n` characters.
pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Pretty JSON.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Attempts per bucket as stacked bars (succeeded, retried, failed), drawn on the server.
pub fn chart(title: &str, buckets: &[Throughput], label: fn(DateTime<Utc>) -> String) -> Markup {
    let (w, h) = (720.0_f64, 110.0_f64);
    let n = buckets.len().max(1) as f64;
    let bw = w / n;
    let max = buckets
        .iter()
        .map(|b| b.succeeded + b.failed + b.retried)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let total_ok: i64 = buckets.iter().map(|b| b.succeeded).sum();
    let total_failed: i64 = buckets.iter().map(|b| b.failed).sum();
    let total_retried: i64 = buckets.iter().map(|b| b.retried).sum();
    let mut bars = String::new();
    for (i, b) in buckets.iter().enumerate() {
        let x = i as f64 * bw;
        let mut y = h;
        for (count, class) in [
            (b.succeeded, "ok"),
            (b.retried, "retry"),
            (b.failed, "fail"),
        ] {
            if count == 0 {
                continue;
            }
            let bh = (count as f64 / max * (h - 4.0)).max(1.0);
            y -= bh;
            bars.push_str(&format!(
                r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}"><title>{} {class}: {count}</title></rect>"#,
                (bw - 1.0).max(1.0),
                label(b.at),
            ));
        }
    }
    html! {
        figure.chart {
            figcaption {
                strong { (title) } " "
                span.ok { (total_ok) " succeeded" } " · "
                span.retry { (total_retried) " retried" } " · "
                span.fail { (total_failed) " failed" }
                " (peak " (max as i64) " per bar)"
            }
            svg viewBox={ "0 0 " (w) " " (h) } preserveAspectRatio="none" role="img" aria-label=(title) {
                (PreEscaped(bars))
            }
            div.axis {
                span { (buckets.first().map(|b| label(b.at)).unwrap_or_default()) }
                span { (buckets.last().map(|b| label(b.at)).unwrap_or_default()) }
            }
        }
    }
}
