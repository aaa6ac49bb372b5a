//! Whether automatic refreshes may travel in `$batch` requests, up to 20 in one (docs/graph.md,
//! "Batching"). Microsoft does not say whether Excel honours `workbook-session-id` inside a batch,
//! so nothing is taken on trust, and plain calls stay the fallback throughout:
//!
//! 1. **Probe**: a one-item batch refreshing a session id that does not exist, sent ahead of one
//!    session's refresh. Only an `invalidSession…` error back shows that Graph read the header
//!    there; a success shows that it did not (a batch would "refresh" nothing), and batching is off.
//! 2. **Canary**: that session alone is then refreshed through `$batch`, everything else with plain
//!    calls, until it has lived on batches alone for longer than its idle expiry; then one plain
//!    refresh checks it. Alive: batching is trusted. Expired: batching is off, and only the canary
//!    was at risk (it is recreated where allowed, as any expired session).
//! 3. **Audit**: while batching, the same check every half hour on some session that only
//!    batches have kept alive since longer than its expiry.
//!
//! And all along: a session that only batches kept alive, found expired by a batch although its
//! last (batched) refresh was within its idle expiry, shows that batches do not keep sessions
//! alive here, and so does a batch answer that does not answer each request. Either turns
//! batching off at once; three batches in a row that fail for want of any answer do too.
//!
//! What is learned of Graph itself (the canary lived, or batches let a session expire, or the
//! header is ignored) is written to the store (`learned`), and a process that starts within a
//! day of it starts from there: trusted (audits go on) or off, without probing again.

use std::time::Duration;

use tokio::time::Instant;

use super::dispatch::JobId;
use crate::graph::ErrorClass;
use crate::session::SessionKey;
use crate::time::format_duration;

/// Most refreshes in one request: Graph's limit for a batch.
pub(crate) const MAX_BATCH: usize = 20;

/// Refreshes due this soon are sent with the ones due now: without it, a keeper whose sessions
/// fall due a few milliseconds apart would send batches of one.
pub(crate) const GATHER: Duration = Duration::from_secs(1);

/// Batches in a row that failed without an answer (a timeout, a dropped connection) before
/// batching is given up.
const MAX_FAILED_BATCHES: u8 = 3;

/// A probe that said nothing useful (throttled, a network failure) is tried again after this.
const PROBE_AGAIN: Duration = Duration::from_secs(60);
/// Probes that say nothing useful before batching is given up.
const MAX_PROBES: u8 = 3;

/// How long what a process learned of `$batch` is taken on trust by the next one.
const VERDICT_LIFE: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// How often a session kept alive by batches alone is checked with a plain call.
const AUDIT_EVERY: Duration = Duration::from_secs(30 * 60);
/// An audit that said nothing useful is tried again after this.
const AUDIT_AGAIN: Duration = Duration::from_secs(60);
/// How long a session must have lived on batches alone to be checked: longer than its idle
/// expiry by a tenth of it, at most 30 s.
fn outlives(expiry: Duration) -> Duration {
    expiry + (expiry / 10).min(Duration::from_secs(30))
}

/// What a probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Graph answered the unknown session id with a session error: it reads the header.
    Honoured,
    /// Graph answered the unknown session id with a success: it ignores the header.
    Ignored,
    /// Graph refused the `$batch` request itself.
    Unavailable(String),
    /// Throttled, a network failure, an answer that says neither: ask again later.
    Inconclusive(String),
}

/// How one automatic refresh goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A request of its own.
    Plain,
    /// A plain request that checks that batches kept the session alive.
    Check,
    /// A one-item batch, after a probe when `probe` is set.
    Alone { probe: bool },
    /// A batch, with whatever else may start now.
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Off,
    Untried { probes: u8, next: Instant },
    Canary { key: Option<SessionKey> },
    Trusted { next_check: Instant },
}

#[derive(Debug)]
pub(crate) struct Batching {
    state: State,
    /// The check under way.
    checking: Option<JobId>,
    /// Batches in a row that failed without an answer.
    failed: u8,
    /// What was learned of Graph (not of a passing failure): whether batches keep sessions alive.
    learned: Option<bool>,
    /// Said once at the start, when it starts from what another process learned.
    start_note: Option<String>,
}

impl Batching {
    /// `known`: what a process on the store learned, taken on trust for a day (`wall_now`).
    pub fn new(
        enabled: bool,
        known: Option<crate::store::BatchVerdict>,
        wall_now: chrono::DateTime<chrono::Utc>,
        now: Instant,
    ) -> Self {
        let known = known.filter(|v| enabled && v.at <= wall_now && wall_now - v.at < VERDICT_LIFE);
        let (state, start_note) = match known {
            Some(v) if v.keeps_alive => (
                State::Trusted { next_check: now + AUDIT_EVERY },
                Some(format!(
                    "$batch refreshes keep sessions alive, as a process on this store found at {}: refreshing up to {MAX_BATCH} sessions per request",
                    v.at.format("%Y-%m-%d %H:%M UTC")
                )),
            ),
            Some(v) => (
                State::Off,
                Some(format!(
                    "$batch refreshes do not keep sessions alive, as a process on this store found at {}: refreshing with one request per session",
                    v.at.format("%Y-%m-%d %H:%M UTC")
                )),
            ),
            None if enabled => (State::Untried { probes: 0, next: now }, None),
            None => (State::Off, None),
        };
        Batching { state, checking: None, failed: 0, learned: known.map(|v| v.keeps_alive), start_note }
    }

    /// What was learned of Graph, to share on the store.
    pub(crate) fn learned(&self) -> Option<bool> {
        self.learned
    }

    /// What to say at the start, once.
    pub(crate) fn take_start_note(&mut self) -> Option<String> {
        self.start_note.take()
    }

    /// Whether refreshes due a little later are fetched now to fill batches.
    pub(crate) fn gathers(&self) -> bool {
        matches!(self.state, State::Trusted { .. })
    }

    /// How an automatic refresh of `key` goes out. `alone`: since when batches alone kept it alive;
    /// `expiry`: its idle expiry. A `Check` is noted as under way (`checking`).
    pub(crate) fn route(
        &mut self,
        id: JobId,
        key: SessionKey,
        alone: Option<Instant>,
        expiry: Duration,
        now: Instant,
    ) -> Route {
        let outlived = alone.is_some_and(|since| now.saturating_duration_since(since) > outlives(expiry));
        let route = match &mut self.state {
            State::Off => Route::Plain,
            State::Untried { next, .. } if now >= *next => {
                // One probe at a time: the others go plain until it has answered.
                *next = now + PROBE_AGAIN;
                Route::Alone { probe: true }
            }
            State::Untried { .. } => Route::Plain,
            State::Canary { key: canary } => match canary {
                Some(canary) if *canary != key => Route::Plain,
                _ if outlived && self.checking.is_none() => Route::Check,
                _ => {
                    *canary = Some(key);
                    Route::Alone { probe: false }
                }
            },
            State::Trusted { next_check } if now >= *next_check && outlived && self.checking.is_none() => Route::Check,
            State::Trusted { .. } => Route::Group,
        };
        if route == Route::Check {
            self.checking = Some(id);
        }
        route
    }

    /// The session refreshed through `$batch` alone before batching is trusted.
    pub fn canary(&self) -> Option<SessionKey> {
        match self.state {
            State::Canary { key } => key,
            _ => None,
        }
    }

    /// The canary went away (removed, closed, no longer refreshed): another one is chosen.
    pub(crate) fn forget(&mut self, key: SessionKey) {
        if let State::Canary { key: canary } = &mut self.state
            && *canary == Some(key)
        {
            *canary = None;
        }
    }

    /// Learns from a probe sent ahead of the refresh of `name` (`key`); returns what the front
    /// ends should be told.
    pub(crate) fn probed(
        &mut self,
        probe: &Probe,
        key: SessionKey,
        name: &str,
        expiry: Duration,
        now: Instant,
    ) -> Option<String> {
        let State::Untried { probes, .. } = self.state else { return None };
        match probe {
            Probe::Honoured => {
                self.state = State::Canary { key: Some(key) };
                Some(format!(
                    "Graph reads the session header inside $batch; {name} is refreshed that way alone for {} and then checked, before other sessions are batched",
                    format_duration(outlives(expiry))
                ))
            }
            Probe::Ignored => {
                self.state = State::Off;
                self.learned = Some(false);
                Some("Graph ignores the session header inside $batch: refreshing with one request per session".into())
            }
            Probe::Unavailable(why) => {
                self.state = State::Off;
                Some(format!("$batch is not available ({why}): refreshing with one request per session"))
            }
            Probe::Inconclusive(why) => {
                let probes = probes.saturating_add(1);
                if probes >= MAX_PROBES {
                    self.state = State::Off;
                    Some(format!(
                        "$batch could not be checked {probes} times (last: {why}): refreshing with one request per session"
                    ))
                } else {
                    self.state = State::Untried { probes, next: now + PROBE_AGAIN };
                    None
                }
            }
        }
    }

    /// Graph refused a batch, or answered it unusably: plain calls from now on.
    pub fn refused(&mut self, why: &str) -> Option<String> {
        if self.state == State::Off {
            return None;
        }
        self.state = State::Off;
        Some(format!("$batch did not work ({why}): refreshing with one request per session"))
    }

    /// A batch was answered.
    pub fn answered(&mut self) {
        self.failed = 0;
    }

    /// A batch went unanswered (a timeout, a dropped connection; its refreshes went out as plain
    /// calls instead).
    pub fn unanswered(&mut self, why: &str) -> Option<String> {
        self.failed = self.failed.saturating_add(1);
        if self.failed < MAX_FAILED_BATCHES || self.state == State::Off {
            return None;
        }
        self.state = State::Off;
        Some(format!(
            "{} $batch requests in a row went unanswered (last: {why}): refreshing with one request per session",
            self.failed
        ))
    }

    /// A batch found `name` expired, though only batches kept it alive and the last of them was
    /// `ago` ago, within its idle expiry: batches do not keep sessions alive here.
    pub(crate) fn expired_in_batch(&mut self, name: &str, ago: Duration) -> Option<String> {
        if self.state == State::Off {
            return None;
        }
        self.state = State::Off;
        self.checking = None;
        self.learned = Some(false);
        Some(format!(
            "{name} expired although $batch refreshed it {} ago: Graph does not keep sessions alive through $batch here, so refreshing with one request per session from now on",
            format_duration(ago)
        ))
    }

    pub(crate) fn is_check(&self, id: JobId) -> bool {
        self.checking == Some(id)
    }

    /// The check of `name`, kept alive by batches alone for `alone`, ended with `failure`
    /// (`None`: it worked). Returns what the front ends should be told.
    pub fn checked(
        &mut self,
        name: &str,
        alone: Duration,
        failure: Option<ErrorClass>,
        now: Instant,
    ) -> Option<String> {
        self.checking = None;
        let alone = format_duration(alone);
        match (&self.state, failure) {
            (State::Canary { .. } | State::Trusted { .. }, Some(ErrorClass::Expired)) => {
                self.state = State::Off;
                self.learned = Some(false);
                Some(format!(
                    "{name} expired although $batch refreshed it for {alone}: Graph does not keep sessions alive through $batch here, so refreshing with one request per session from now on"
                ))
            }
            (State::Canary { .. }, None) => {
                self.state = State::Trusted { next_check: now + AUDIT_EVERY };
                self.learned = Some(true);
                Some(format!(
                    "$batch refreshes keep sessions alive ({name} lived on them alone for {alone}): refreshing up to {MAX_BATCH} sessions per request from now on"
                ))
            }
            (State::Trusted { .. }, None) => {
                self.state = State::Trusted { next_check: now + AUDIT_EVERY };
                None
            }
            (State::Trusted { .. }, Some(_)) => {
                self.state = State::Trusted { next_check: now + AUDIT_AGAIN };
                None
            }
            // The canary's check said nothing (throttled, say): its next refresh checks again.
            _ => None,
        }
    }

    /// The check's call ended without an answer about its session (it was removed, say).
    pub(crate) fn check_lost(&mut self, id: JobId) {
        if self.checking == Some(id) {
            self.checking = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRY: Duration = Duration::from_secs(300);

    /// What a process on the store learned is taken on trust for a day, then probed again.
    #[test]
    fn a_verdict_from_the_store_is_taken_for_a_day() {
        let (now, wall) = (Instant::now(), chrono::Utc::now());
        let verdict = |keeps_alive: bool, hours: i64| {
            Some(crate::store::BatchVerdict { keeps_alive, at: wall - chrono::TimeDelta::hours(hours) })
        };
        let mut trusted = Batching::new(true, verdict(true, 2), wall, now);
        assert!(trusted.gathers(), "batches at once");
        assert!(trusted.take_start_note().is_some_and(|n| n.contains("as a process on this store found")));
        assert_eq!(trusted.learned(), Some(true), "nothing new to tell the store");
        let mut off = Batching::new(true, verdict(false, 2), wall, now);
        assert_eq!(off.route(JobId::for_tests(1), 1, None, EXPIRY, now), Route::Plain);
        let mut stale = Batching::new(true, verdict(true, 25), wall, now);
        assert_eq!(
            stale.route(JobId::for_tests(1), 1, None, EXPIRY, now),
            Route::Alone { probe: true },
            "a day on: probed again"
        );
        assert_eq!(stale.learned(), None);
        let disabled = Batching::new(false, verdict(true, 2), wall, now);
        assert!(!disabled.gathers(), "batch = false wins");
        // A canary that lived is learned, to be shared.
        let mut b = Batching::new(true, None, wall, now);
        b.route(JobId::for_tests(1), 1, None, EXPIRY, now);
        b.probed(&Probe::Honoured, 1, "a", EXPIRY, now);
        let later = now + outlives(EXPIRY) + Duration::from_secs(1);
        assert_eq!(b.route(JobId::for_tests(2), 1, Some(now), EXPIRY, later), Route::Check);
        b.checked("a", outlives(EXPIRY), None, later);
        assert_eq!(b.learned(), Some(true));
    }

    fn key(n: i64) -> SessionKey {
        n
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_probe_that_shows_the_header_is_read_leads_to_a_canary() {
        let now = Instant::now();
        let id = JobId::for_tests(1);
        let mut off = Batching::new(false, None, chrono::Utc::now(), now);
        assert_eq!(off.route(id, key(1), None, EXPIRY, now), Route::Plain);
        assert!(off.probed(&Probe::Honoured, key(1), "a", EXPIRY, now).is_none(), "a setting of false stays off");

        let mut b = Batching::new(true, None, chrono::Utc::now(), now);
        assert_eq!(b.route(id, key(1), None, EXPIRY, now), Route::Alone { probe: true });
        assert!(b.probed(&Probe::Inconclusive("throttled".into()), key(1), "a", EXPIRY, now).is_none());
        assert_eq!(b.route(id, key(1), None, EXPIRY, now + Duration::from_secs(59)), Route::Plain, "a minute later");
        assert_eq!(b.route(id, key(1), None, EXPIRY, now + PROBE_AGAIN), Route::Alone { probe: true });
        assert!(b.probed(&Probe::Honoured, key(1), "a", EXPIRY, now).is_some());
        assert_eq!(b.route(id, key(2), None, EXPIRY, now), Route::Plain, "only the canary is batched");
        assert_eq!(b.route(id, key(1), Some(now), EXPIRY, now), Route::Alone { probe: false });
        assert!(!b.gathers());

        for probe in [Probe::Ignored, Probe::Unavailable("400".into())] {
            let mut b = Batching::new(true, None, chrono::Utc::now(), now);
            assert!(b.probed(&probe, key(1), "a", EXPIRY, now).is_some());
            assert_eq!(b.route(id, key(1), None, EXPIRY, now), Route::Plain, "{probe:?} turns batching off");
        }
        let mut b = Batching::new(true, None, chrono::Utc::now(), now);
        for _ in 0..MAX_PROBES {
            b.probed(&Probe::Inconclusive("timeout".into()), key(1), "a", EXPIRY, now);
        }
        let later = now + Duration::from_secs(3600);
        assert_eq!(b.route(id, key(1), None, EXPIRY, later), Route::Plain, "three probes that say nothing give up");
    }

    #[tokio::test(start_paused = true)]
    async fn the_canary_is_checked_once_it_outlived_its_expiry_and_decides() {
        let start = Instant::now();
        let (id, check) = (JobId::for_tests(1), JobId::for_tests(2));
        let mut b = Batching::new(true, None, chrono::Utc::now(), start);
        b.probed(&Probe::Honoured, key(1), "a", EXPIRY, start);
        let soon = start + EXPIRY;
        assert_eq!(b.route(id, key(1), Some(start), EXPIRY, soon), Route::Alone { probe: false }, "not yet");
        let later = start + outlives(EXPIRY) + Duration::from_secs(1);
        assert_eq!(b.route(check, key(1), Some(start), EXPIRY, later), Route::Check);
        assert!(b.is_check(check));
        assert!(b.checked("a", later - start, Some(ErrorClass::Throttled), later).is_none());
        assert_eq!(b.route(check, key(1), Some(start), EXPIRY, later), Route::Check, "checked again");
        assert!(b.checked("a", later - start, None, later).is_some());
        assert!(b.gathers());
        assert_eq!(b.route(id, key(2), None, EXPIRY, later), Route::Group, "everything is batched now");

        // Half an hour on, a session batches alone kept alive is checked; expired turns it off.
        let audit = later + AUDIT_EVERY;
        assert_eq!(b.route(id, key(2), Some(later), EXPIRY, later + Duration::from_secs(400)), Route::Group);
        assert_eq!(b.route(check, key(2), Some(later), EXPIRY, audit), Route::Check);
        assert!(b.checked("b", audit - later, Some(ErrorClass::Expired), audit).is_some());
        assert_eq!(b.route(id, key(2), None, EXPIRY, audit), Route::Plain);
    }

    #[tokio::test(start_paused = true)]
    async fn a_canary_that_went_away_is_replaced() {
        let now = Instant::now();
        let id = JobId::for_tests(1);
        let mut b = Batching::new(true, None, chrono::Utc::now(), now);
        b.probed(&Probe::Honoured, key(1), "a", EXPIRY, now);
        b.forget(key(1));
        assert_eq!(b.route(id, key(2), None, EXPIRY, now), Route::Alone { probe: false });
        assert_eq!(b.route(id, key(1), None, EXPIRY, now), Route::Plain);
    }
}
