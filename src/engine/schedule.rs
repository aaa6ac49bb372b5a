//! The scheduler's arithmetic, kept pure so it can be tested without a clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Graph's throttling window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// At most `limit` request starts in any `BUDGET_WINDOW`.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    starts: VecDeque<Instant>,
}

impl Budget {
    pub fn new(limit: u32) -> Self {
        Budget { limit: limit.max(1) as usize, starts: VecDeque::new() }
    }

    fn evict(&mut self, now: Instant) {
        while self.starts.front().is_some_and(|t| now.saturating_duration_since(*t) >= BUDGET_WINDOW) {
            self.starts.pop_front();
        }
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        self.evict(now);
        if self.starts.len() < self.limit {
            self.starts.push_back(now);
            true
        } else {
            false
        }
    }

    /// When the next start becomes possible, if none is possible now.
    pub fn next_free(&mut self, now: Instant) -> Option<Instant> {
        self.evict(now);
        (self.starts.len() >= self.limit).then(|| self.starts.front().map(|t| *t + BUDGET_WINDOW)).flatten()
    }
}

/// Share of the interval by which a refresh may come early, so that sessions created together
/// drift apart instead of refreshing in one burst. Never late: late risks expiry.
pub const JITTER: f64 = 0.1;

/// The next refresh: one interval on, less up to `JITTER` of it. `sample` is uniform in [0, 1).
pub fn next_interval(interval: Duration, sample: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER * sample.clamp(0.0, 1.0))
}

/// Exponential backoff with jitter after `failures` failures in a row: 2 s, 4 s, 8 s, ...,
/// capped, then scaled by a random factor in [0.5, 1).
pub fn backoff(failures: u32, cap: Duration, sample: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let raw = Duration::from_secs(2).saturating_mul(1u32 << exp).min(cap).max(Duration::from_millis(100));
    raw.mul_f64(0.5 + 0.5 * sample.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_a_sliding_ten_second_window() {
        let mut budget = Budget::new(3);
        let t0 = Instant::now();
        assert!(budget.try_take(t0));
        assert!(budget.try_take(t0 + Duration::from_secs(1)));
        assert!(budget.try_take(t0 + Duration::from_secs(2)));
        assert!(!budget.try_take(t0 + Duration::from_secs(3)));
        assert_eq!(budget.next_free(t0 + Duration::from_secs(3)), Some(t0 + BUDGET_WINDOW));
        assert!(budget.try_take(t0 + BUDGET_WINDOW));
        assert!(!budget.try_take(t0 + BUDGET_WINDOW));
        assert_eq!(budget.next_free(t0 + Duration::from_secs(30)), None);
    }

    #[test]
    fn intervals_come_early_never_late() {
        let four = Duration::from_secs(240);
        assert_eq!(next_interval(four, 0.0), four);
        assert_eq!(next_interval(four, 0.5), Duration::from_secs(228));
        assert!(next_interval(four, 0.999) > Duration::from_secs(216));
        assert_eq!(next_interval(four, 7.0), Duration::from_secs(216), "samples are clamped");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(2, cap, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(3, cap, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(10, cap, 1.0), cap);
        assert_eq!(backoff(10, cap, 0.0), cap / 2);
        assert_eq!(backoff(u32::MAX, cap, 1.0), cap);
        assert_eq!(backoff(1, Duration::ZERO, 1.0), Duration::from_millis(100), "never a busy loop");
    }
}
