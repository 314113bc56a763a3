//! The job runtime: concurrency, heartbeats and the rescue bound, polling, backoff, retention,
//! and how long shutdown waits.

use std::{collections::HashMap, time::Duration};

use granary_queue::Settings;

use super::reader::Reader;

/// Reads the job runtime's settings and the shutdown timeout, and checks their bounds.
pub(super) fn read(r: &mut Reader<'_>) -> (Settings, Duration) {
    let shutdown_timeout = Duration::from_secs(r.number(
        "SHUTDOWN_TIMEOUT_SECONDS",
        25u64,
        "use a number of seconds such as 25",
    ));

    let worker = Settings {
        concurrency: r.number(
            "WORKER_CONCURRENCY_DEFAULT",
            10usize,
            "use a number such as 10",
        ),
        per_queue_concurrency: per_queue_concurrency(r),
        per_queue_timeout: per_queue_timeout(r),
        heartbeat_interval: Duration::from_millis(r.number(
            "WORKER_HEARTBEAT_MS",
            5000u64,
            "use milliseconds such as 5000",
        )),
        missed_heartbeats: r.number("WORKER_MISSED_HEARTBEATS", 3usize, "use a number such as 3"),
        poll_interval: Duration::from_millis(r.number(
            "WORKER_POLL_INTERVAL_MS",
            1000u64,
            "use milliseconds such as 1000",
        )),
        batch_size: r.number("WORKER_BATCH_SIZE", 10usize, "use a number such as 10"),
        backoff_base: Duration::from_millis(r.number(
            "JOB_BACKOFF_BASE_MS",
            2000u64,
            "use milliseconds such as 2000",
        )),
        backoff_cap: Duration::from_secs(r.number(
            "JOB_BACKOFF_CAP_SECONDS",
            3600u64,
            "use seconds such as 3600",
        )),
        retention: Duration::from_secs(3600u64.saturating_mul(r.number(
            "JOB_RETENTION_HOURS",
            168u64,
            "use hours such as 168",
        ))),
        complete_in_commit: r.flag("JOB_COMPLETE_IN_COMMIT", false),
    };
    check(r, &worker);
    (worker, shutdown_timeout)
}

/// `WORKER_CONCURRENCY`: `queue=number` pairs.
fn per_queue_concurrency(r: &mut Reader<'_>) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for pair in r.list("WORKER_CONCURRENCY") {
        match pair
            .split_once('=')
            .map(|(q, n)| (q.trim().to_string(), n.trim().parse::<usize>()))
        {
            Some((q, Ok(n))) if n > 0 => {
                map.insert(q, n);
            }
            _ => r.problem(
                "WORKER_CONCURRENCY",
                format!("`{pair}` is not queue=number"),
                "use e.g. send_email=4,fulfill_order=8",
            ),
        }
    }
    map
}

/// `JOB_TIMEOUT_SECONDS`: `queue=seconds` pairs (1 to 86400).
fn per_queue_timeout(r: &mut Reader<'_>) -> HashMap<String, Duration> {
    let mut map = HashMap::new();
    for pair in r.list("JOB_TIMEOUT_SECONDS") {
        match pair
            .split_once('=')
            .map(|(q, n)| (q.trim().to_string(), n.trim().parse::<u64>()))
        {
            Some((q, Ok(n))) if (1..=86_400).contains(&n) => {
                map.insert(q, Duration::from_secs(n));
            }
            _ => r.problem(
                "JOB_TIMEOUT_SECONDS",
                format!("`{pair}` is not queue=seconds (1 to 86400)"),
                "use e.g. finalize_asset=1800,send_email=30",
            ),
        }
    }
    map
}

/// The bounds across settings: spans PostgreSQL can hold, positive sizes, a safe rescue bound
/// and intervals that do not hammer the database.
fn check(r: &mut Reader<'_>, worker: &Settings) {
    // Spans that reach PostgreSQL as intervals stay inside its range.
    if worker.retention.as_secs() > crate::platform::bounds::MAX_SECONDS {
        r.problem(
            "JOB_RETENTION_HOURS",
            "is longer than 3650 days",
            "use hours such as 168",
        );
    }
    if worker.backoff_cap.as_secs() > crate::platform::bounds::MAX_SECONDS
        || worker.backoff_base.as_secs() > crate::platform::bounds::MAX_SECONDS
    {
        r.problem(
            "JOB_BACKOFF_CAP_SECONDS",
            "the backoff is longer than 3650 days",
            "use seconds such as 3600",
        );
    }
    if worker.concurrency == 0 || worker.batch_size == 0 || worker.missed_heartbeats == 0 {
        r.problem(
            "WORKER_CONCURRENCY_DEFAULT",
            "concurrency, batch size and missed heartbeats must be at least 1",
            "use positive numbers",
        );
    }
    // A bound under 2 s (or under two heartbeats) would let a live worker that is merely
    // slow to heartbeat (a busy database, a GC pause elsewhere) look dead and its running
    // jobs be taken.
    if worker.missed_heartbeats < 2
        || worker.heartbeat_interval * (worker.missed_heartbeats as u32) < Duration::from_secs(2)
        || worker.rescue_bound() < Duration::from_secs(3)
    {
        r.problem("WORKER_MISSED_HEARTBEATS", "the rescue bound (heartbeat x missed heartbeats) must be at least 2 s and 2 heartbeats", "use WORKER_HEARTBEAT_MS=5000 and WORKER_MISSED_HEARTBEATS=3");
    }
    if worker.heartbeat_interval < Duration::from_millis(200)
        || worker.poll_interval < Duration::from_millis(20)
    {
        r.problem(
            "WORKER_HEARTBEAT_MS",
            "heartbeat below 200 ms or poll below 20 ms would hammer the database",
            "use WORKER_HEARTBEAT_MS=5000 and WORKER_POLL_INTERVAL_MS=1000",
        );
    }
}
