//! Retry delays, persisted as the job's next `run_at` so that they survive a worker restart.
//!
//! The formula (also in docs/queue.md): after failed attempt `n` (1-based),
//!
//! ```text
//! delay(n) = min(base * 2^(n-1), cap) * (1 + j),   j uniform in [0, 0.25)
//! ```
//!
//! With the defaults (base 2 s, cap 1 h): 2 s, 4 s, 8 s, … 1 h, each up to 25 % later so that
//! jobs failing together do not retry together. A handler's `RetryAfter(d)` replaces the formula
//! with `d` (capped at 24 h).

use std::time::Duration;

use rand::Rng as _;

/// The longest delay a handler's Retry-After may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before the retry that follows failed attempt `attempt`, without jitter.
pub fn base_delay(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).clamp(0, 30) as u32;
    base.saturating_mul(1u32 << exp).min(cap)
}

/// [`base_delay`] with up to 25 % jitter added.
pub fn delay(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let d = base_delay(attempt, base, cap);
    d.mul_f64(1.0 + rand::rng().random_range(0.0..0.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_and_stops_at_the_cap() {
        let (b, c) = (Duration::from_secs(2), Duration::from_secs(3600));
        let secs: Vec<u64> = (1..=13).map(|n| base_delay(n, b, c).as_secs()).collect();
        assert_eq!(
            secs,
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(base_delay(1000, b, c), c);
    }

    #[test]
    fn jitter_only_ever_adds_up_to_a_quarter() {
        let (b, c) = (Duration::from_secs(2), Duration::from_secs(3600));
        for n in 1..10 {
            let d = delay(n, b, c);
            let floor = base_delay(n, b, c);
            assert!(d >= floor && d < floor.mul_f64(1.25), "{d:?} vs {floor:?}");
        }
    }
}
