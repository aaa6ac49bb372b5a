//! When to call again: the retry and next-due rules as pure functions of what happened, so that
//! they can be tested without a clock. `sample` arguments are uniform in [0, 1).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::graph::ErrorClass;
use crate::session::{Defaults, SessionKey, Status, TrackedSession};

/// Share of the interval by which a refresh may come early, so that sessions created together
/// drift apart instead of refreshing in one burst. Never late: late risks expiry.
pub(crate) const JITTER: f64 = 0.1;

/// The longest a `Retry-After` is honoured, as the Graph SDK's retry handler caps it: a server
/// that asks for a day must not make every session expire (docs/graph.md, "Throttling").
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(180);

/// How many times a call someone asked for is sent again after a 429, 503 or 504, as the Graph
/// SDK does, before its failure is reported.
pub(crate) const MANUAL_RETRIES: u8 = 3;

/// The longest `Retry-After` a call someone waits on sits through before it is tried again; a
/// longer one ends the call with the wait in its message (automatic refreshes honour it).
pub(crate) const MANUAL_WAIT: Duration = Duration::from_secs(10);

/// The next refresh: one interval on, less up to `JITTER` of it.
pub(crate) fn next_interval(interval: Duration, sample: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER * sample.clamp(0.0, 1.0))
}

/// Exponential backoff with jitter after `failures` failures in a row: 2 s, 4 s, 8 s, ...,
/// capped, then scaled by a random factor in [0.5, 1).
pub fn backoff(failures: u32, cap: Duration, sample: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let raw = Duration::from_secs(2).saturating_mul(1u32 << exp).min(cap).max(Duration::from_millis(100));
    raw.mul_f64(0.5 + 0.5 * sample.clamp(0.0, 1.0))
}

/// How often calls fail lately, as a moving average over about the last hundred calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FailureRate(f64);

impl FailureRate {
    pub fn record(&mut self, failed: bool) {
        const WEIGHT: f64 = 0.01;
        self.0 = self.0 * (1.0 - WEIGHT) + if failed { WEIGHT } else { 0.0 };
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

/// The time a session may go between refreshes when calls fail at `failure_rate`: its interval,
/// or less, so that the slack before its idle expiry leaves room for enough retries (measured
/// about 2.4 s apart under heavy throttling: its own waits and its workbook's) that a run of
/// failures long enough to let it expire has a chance of one in ten million. Never less than
/// half the expiry: refreshing more often would add load where Graph is struggling already.
pub(crate) fn safe_interval(interval: Duration, expiry: Duration, failure_rate: f64) -> Duration {
    const RETRY_GAP: f64 = 2.4;
    if failure_rate < 0.01 {
        return interval;
    }
    let tries = (1e-7f64).ln() / failure_rate.min(0.9).ln();
    let slack = Duration::from_secs_f64((tries * RETRY_GAP).min(expiry.as_secs_f64() / 2.0));
    interval.min(expiry.saturating_sub(slack))
}

/// How long a workbook is held back after it was throttled for the `streak`-th time in a row:
/// its `Retry-After` if it gave a usable one, capped; otherwise (absent, zero, garbage)
/// exponential backoff with jitter from 1 s.
pub(crate) fn throttle_hold(retry_after: Option<Duration>, streak: u32, sample: f64) -> Duration {
    match retry_after {
        Some(wait) if !wait.is_zero() => wait.min(MAX_RETRY_AFTER),
        _ => {
            let exp = streak.saturating_sub(1).min(16);
            let raw = Duration::from_secs(1).saturating_mul(1u32 << exp).min(MAX_RETRY_AFTER);
            raw.mul_f64(1.0 + sample.clamp(0.0, 1.0)).min(MAX_RETRY_AFTER)
        }
    }
}

/// What a finished call means for its workbook's lane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Graph answered well: throttling is easing.
    Ok,
    /// Graph asked to wait: hold the workbook back and slow down.
    Throttled { retry_after: Option<Duration> },
    /// No answer came (a timeout, a refused or dropped connection): the workbook may have
    /// stopped answering, and its calls may hold only a share of the slots.
    Unanswered,
    /// Anything else: no say about the rate.
    Other,
}

impl Verdict {
    /// `answered`: whether an HTTP answer came at all.
    pub fn of(class: Option<ErrorClass>, retry_after: Option<Duration>, answered: bool) -> Verdict {
        match class {
            None => Verdict::Ok,
            Some(ErrorClass::Throttled) => Verdict::Throttled { retry_after },
            Some(_) if !answered => Verdict::Unanswered,
            Some(_) => Verdict::Other,
        }
    }
}

/// How a call someone asked for is tried again after a failure, if it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retry {
    /// Throttled: at once, behind its workbook's hold.
    Now,
    /// A 503 or 504: after this pause.
    After(Duration),
}

/// The Graph SDK's rule for calls a person or a script waits on: 429, 503 and 504 are tried again.
pub(crate) fn manual_retry(
    class: ErrorClass,
    http_status: Option<u16>,
    retry_after: Option<Duration>,
    attempt: u8,
    sample: f64,
) -> Option<Retry> {
    match (class, http_status) {
        // Someone is waiting: a wait longer than this is reported instead of sat through.
        _ if retry_after.is_some_and(|wait| wait > MANUAL_WAIT) => None,
        (ErrorClass::Throttled, _) => Some(Retry::Now),
        (_, Some(503 | 504)) => Some(Retry::After(backoff(u32::from(attempt) + 1, Duration::from_secs(30), sample))),
        _ => None,
    }
}

/// When to refresh a session again after a call on it left it at `status`. `None` means not by
/// itself: the user must act (a dead session, an expired one that may not be recreated, a closed
/// one). `life_left` is how long Graph would still keep the session: a retry comes within a
/// fortieth of it (but not sooner than half a second), so that backoff never outlasts the
/// session it protects and a failing session gets many tries before it would die; the request
/// budget still bounds what all of them together send. A throttled one comes back right after
/// its workbook's hold, which only the engine knows: a second here.
pub(crate) fn after_call(
    status: Status,
    session: &TrackedSession,
    // The interval in force (see `safe_interval`).
    interval: Duration,
    life_left: Option<Duration>,
    sample: f64,
) -> Option<Duration> {
    let retry_cap = interval.min(Duration::from_secs(300));
    let soon = |delay: Duration| match life_left {
        Some(left) => delay.min((left / 40).max(Duration::from_millis(500))),
        None => delay,
    };
    match status {
        Status::New => Some(Duration::ZERO),
        Status::Ok | Status::Stale | Status::Refreshing => Some(next_interval(interval, sample)),
        Status::Throttled => Some(Duration::from_secs(1)),
        Status::Error => Some(soon(backoff(session.failures, retry_cap, sample))),
        Status::Expired if session.recreate => Some(backoff(session.failures, retry_cap, sample)),
        // A sign-in in another shell fixes this without telling us: look again now and then.
        Status::Auth => Some(backoff(session.failures.saturating_add(4), Duration::from_secs(300), sample)),
        Status::Expired | Status::Dead | Status::Closed | Status::Damaged => None,
    }
}

/// A number in [0, 1) that is the same wherever and whenever it is worked out for this session
/// and this moment: the jitter of its next refresh, so that the engine, `list`, `show` and a
/// watching dashboard agree on when that is.
pub(crate) fn sample_of(key: SessionKey, at: DateTime<Utc>) -> f64 {
    // splitmix64 over the key and the moment.
    let mut z = (key as u64) ^ (at.timestamp_millis() as u64).rotate_left(32);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// When the session's next automatic refresh is due, from what is stored of it: the one rule
/// the engine plans by and `list`, `show` and a watching dashboard show. `None` when none will
/// come by itself. A time in the future (another machine's clock) counts as `now`.
pub fn next_due(s: &TrackedSession, defaults: &Defaults, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_due_with(s, defaults, defaults.interval_of(s), now)
}

/// `next_due` with the interval in force (the engine shortens it while calls fail often).
pub(crate) fn next_due_with(
    s: &TrackedSession,
    defaults: &Defaults,
    interval: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !s.is_kept_alive() {
        return None;
    }
    let (from, life_left) = match s.status {
        Status::New => (s.created_at.min(now), None),
        Status::Ok | Status::Stale | Status::Refreshing => (s.last_activity().min(now), None),
        _ => {
            let at = s.last_call.map_or_else(|| s.last_activity(), |c| c.at).min(now);
            (at, defaults.expires_at(s).map(|end| crate::time::until(at, end)))
        }
    };
    let delay = after_call(s.status, s, interval, life_left, sample_of(s.key, from))?;
    Some(crate::time::add(from, delay))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn retry_after_is_honoured_up_to_three_minutes_and_zero_means_back_off() {
        assert_eq!(throttle_hold(Some(Duration::from_millis(2128)), 1, 0.5), Duration::from_millis(2128));
        assert_eq!(throttle_hold(Some(Duration::from_secs(1_000_000_000)), 1, 0.5), MAX_RETRY_AFTER);
        // Zero, absent or unreadable: 1 s, 2 s, 4 s ... with up to as much again of jitter.
        assert_eq!(throttle_hold(Some(Duration::ZERO), 1, 0.0), Duration::from_secs(1));
        assert_eq!(throttle_hold(None, 1, 0.0), Duration::from_secs(1));
        assert_eq!(throttle_hold(None, 3, 0.0), Duration::from_secs(4));
        assert_eq!(throttle_hold(None, 3, 0.999), Duration::from_millis(7996));
        assert_eq!(throttle_hold(None, 40, 0.9), MAX_RETRY_AFTER);
    }

    #[test]
    fn when_calls_fail_often_sessions_are_refreshed_early_enough_to_retry() {
        let (interval, expiry) = (Duration::from_secs(40), Duration::from_secs(60));
        assert_eq!(safe_interval(interval, expiry, 0.0), interval, "healthy: the interval as set");
        let flaky = safe_interval(interval, expiry, 0.4);
        assert_eq!(flaky, Duration::from_secs(30), "{flaky:?}");
        assert_eq!(safe_interval(interval, expiry, 0.1), interval, "enough slack for rare failures");
        assert_eq!(safe_interval(interval, expiry, 0.99), Duration::from_secs(30), "never below half the expiry");
        let default = Duration::from_secs(240);
        assert_eq!(safe_interval(default, Duration::from_secs(300), 0.4), default, "the defaults leave slack enough");
        let mut rate = FailureRate::default();
        for i in 0..1000 {
            rate.record(i % 5 < 2);
        }
        assert!((rate.value() - 0.4).abs() < 0.02, "{}", rate.value());
    }

    #[test]
    fn a_failing_session_is_retried_well_within_its_remaining_life() {
        let mut s = TrackedSession::new(
            "a".into(),
            crate::session::WorkbookRef::parse("me/drive/items/X").unwrap(),
            crate::session::SessionId::new("S").unwrap(),
            crate::session::Mode::Persistent,
            chrono::Utc::now(),
        );
        s.failures = 6;
        let interval = Duration::from_secs(240);
        let far = after_call(Status::Error, &s, interval, Some(Duration::from_secs(3000)), 1.0);
        assert_eq!(far, Some(Duration::from_secs(64)), "plain backoff while expiry is far");
        let near = after_call(Status::Error, &s, interval, Some(Duration::from_secs(60)), 1.0);
        assert_eq!(near, Some(Duration::from_millis(1500)), "a fortieth of the life left");
        let gone = after_call(Status::Error, &s, interval, Some(Duration::ZERO), 1.0);
        assert_eq!(gone, Some(Duration::from_millis(500)), "never a busy loop");
    }

    #[test]
    fn manual_calls_retry_on_429_503_and_504_only() {
        assert_eq!(manual_retry(ErrorClass::Throttled, Some(429), None, 0, 0.0), Some(Retry::Now));
        let short = Some(Duration::from_secs(2));
        assert_eq!(manual_retry(ErrorClass::Throttled, Some(429), short, 0, 0.0), Some(Retry::Now));
        let long = Some(Duration::from_secs(999_999_999));
        assert_eq!(manual_retry(ErrorClass::Throttled, Some(429), long, 0, 0.0), None, "reported, not sat through");
        assert_eq!(manual_retry(ErrorClass::Throttled, Some(503), long, 0, 0.0), None);
        assert!(matches!(manual_retry(ErrorClass::Transient, Some(504), None, 0, 0.0), Some(Retry::After(_))));
        assert!(matches!(manual_retry(ErrorClass::Expired, Some(503), None, 0, 0.0), Some(Retry::After(_))));
        assert_eq!(manual_retry(ErrorClass::Transient, Some(500), None, 0, 0.0), None);
        assert_eq!(manual_retry(ErrorClass::Expired, Some(404), None, 0, 0.0), None);
    }
}
