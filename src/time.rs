//! Time as the rest of the crate sees it: an injectable clock, and durations read and written the
//! way people type them (`90s`, `4m`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Wall-clock time, injectable so that tests and snapshots can freeze or advance it.
#[derive(Clone, Default)]
pub struct Clock(Kind);

#[derive(Clone, Default)]
enum Kind {
    #[default]
    System,
    Manual(Arc<Mutex<DateTime<Utc>>>),
    /// Wall time that moves with tokio's clock, so that paused-time tests see both agree.
    Tokio {
        start: DateTime<Utc>,
        base: tokio::time::Instant,
    },
}

impl Clock {
    pub fn system() -> Self {
        Clock(Kind::System)
    }

    /// A clock that stands still until told to move.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock(Kind::Manual(Arc::new(Mutex::new(start))))
    }

    /// A clock that reads `start` now and moves as tokio's time does (paused or not).
    pub fn following_tokio(start: DateTime<Utc>) -> Self {
        Clock(Kind::Tokio { start, base: tokio::time::Instant::now() })
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Kind::System => Utc::now(),
            Kind::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
            Kind::Tokio { start, base } => add(*start, base.elapsed()),
        }
    }

    /// Moves a manual clock forward; other clocks ignore it.
    pub fn advance(&self, by: Duration) {
        if let Kind::Manual(t) = &self.0 {
            let mut guard = t.lock().unwrap_or_else(|p| p.into_inner());
            *guard = add(*guard, by);
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::System => f.write_str("Clock::system"),
            Kind::Manual(_) => write!(f, "Clock::manual({})", self.now()),
            Kind::Tokio { .. } => write!(f, "Clock::following_tokio({})", self.now()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{given:?} is not a duration; write a number with a unit, like 500ms, 90s, 4m, 1h or 1m30s")]
    NotADuration { given: String },
    #[error("{given:?} is longer than a year; write a shorter duration, like 4m or 1h")]
    TooLong { given: String },
}

/// Reads `500ms`, `90s`, `4m`, `1h`, `1m30s`, `2.5s`. A bare number is refused: the unit is the point.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let fail = || DurationError::NotADuration { given: input.to_string() };
    let text = input.trim();
    if text.is_empty() {
        return Err(fail());
    }
    let mut total = 0f64;
    let mut rest = text;
    // Units from the largest down, each once: `1h1h` or `30s1m` is a typo, not a duration.
    let mut last_scale = f64::INFINITY;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(fail)?;
        if number_len == 0 {
            return Err(fail());
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| fail())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(fail()),
        };
        if scale >= last_scale {
            return Err(fail());
        }
        last_scale = scale;
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total > 365.0 * 86400.0 {
        return Err(DurationError::TooLong { given: input.to_string() });
    }
    Ok(Duration::from_secs_f64(total))
}

/// The shortest exact-enough form: `850ms`, `45s`, `4m`, `4m30s`, `2h5m`.
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) if d.subsec_millis() != 0 && s < 10 => format!("{:.1}s", d.as_secs_f64()),
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// `t + d`, saturating at the end of time instead of overflowing: durations can come from a
/// store, a config file or a server.
pub fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the start of time.
pub(crate) fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How long from `from` until `to`; zero once passed.
pub fn until(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    to.signed_duration_since(from).to_std().unwrap_or(Duration::ZERO)
}

/// "just now", "12s ago", "4m ago", "3h ago", "2d ago".
pub(crate) fn format_ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = now.signed_duration_since(then).num_seconds();
    if secs < 1 {
        return "just now".into();
    }
    format!("{} ago", format_coarse(secs as u64))
}

/// "in 45s", "in 3m", "now" once due.
pub(crate) fn format_until(when: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = when.signed_duration_since(now).num_seconds();
    if secs < 1 {
        return "now".into();
    }
    format!("in {}", format_coarse(secs as u64))
}

/// To the second while seconds matter (under ten minutes), then to the minute, the hour, the
/// day: "45s", "1m40s", "4m", "42m", "1h40m", "5h", "3d". Never a jump from "99s" to "1m".
pub(crate) fn format_coarse(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600, secs / 60, secs % 60);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=599 if s == 0 => format!("{m}m"),
        60..=599 => format!("{m}m{s}s"),
        600..=5999 => format!("{m}m"),
        6000..=35_999 if m.is_multiple_of(60) => format!("{h}h"),
        6000..=35_999 => format!("{h}h{}m", m % 60),
        36_000..=172_799 => format!("{h}h"),
        _ => format!("{d}d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_way_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("4m"), Ok(Duration::from_secs(240)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        for bad in ["", "5", "s", "4 minutes", "-3s", "1x", "9999999999h", "1h1h", "30s1m", "1m1m30s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(240)), "4m");
        assert_eq!(format_duration(Duration::from_secs(270)), "4m30s");
        assert_eq!(format_duration(Duration::from_millis(2128)), "2.1s");
        for d in ["850ms", "45s", "4m", "4m30s", "2h", "2h5m"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(format_ago(now, now), "just now");
        assert_eq!(format_ago(now - chrono::Duration::seconds(12), now), "12s ago");
        assert_eq!(format_ago(now - chrono::Duration::seconds(300), now), "5m ago");
        assert_eq!(format_ago(now - chrono::Duration::seconds(100), now), "1m40s ago", "no jump from 99s to 1m");
        assert_eq!(format_ago(now - chrono::Duration::seconds(6000), now), "1h40m ago");
        assert_eq!(format_ago(now - chrono::Duration::seconds(3 * 86_400), now), "3d ago");
        assert_eq!(format_until(now + chrono::Duration::seconds(45), now), "in 45s");
        assert_eq!(format_until(now - chrono::Duration::seconds(3), now), "now");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = Utc::now();
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(3));
        assert_eq!(clock.now(), start + chrono::Duration::seconds(3));
    }
}
