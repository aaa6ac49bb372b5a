//! When each session is due: planned from what is known of it by the one rule that `list`,
//! `show` and a watching dashboard use too (`policy::next_due`), adjusted only by what this
//! engine alone knows: a workbook held back by Graph, and how often calls fail lately.

use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use super::dispatch::Urgency;
use super::messages::Event;
use super::policy::{next_due_with, safe_interval};
use crate::session::{SessionKey, TrackedSession};
use crate::store::GRANT_COUNTED;

/// An instant `delay` from now, capped so that no arithmetic overflows.
pub(super) fn instant_after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay.min(crate::session::MAX_INTERVAL)).unwrap_or(now)
}

impl Engine {
    /// The interval in force: the session's, shortened while calls fail often (`safe_interval`);
    /// for a session kept only on standby, nine tenths of its expiry if that is longer: the
    /// keeper that took its workbook over refreshes it at its own pace, this one only in case
    /// none did.
    pub(super) fn interval_of(&self, session: &TrackedSession) -> Duration {
        let defaults = &self.settings.defaults;
        let expiry = defaults.expiry(session.mode);
        let interval = safe_interval(defaults.interval_of(session), expiry, self.failure_rate.value());
        if self.on_standby(session) { interval.max(expiry / 10 * 9) } else { interval }
    }

    /// Plans the next automatic refresh `delay` from now, if this engine drives and the session
    /// is kept alive; tells the front ends either way.
    pub(super) fn plan(&mut self, key: SessionKey, delay: Duration) {
        let Some(entry) = self.entries.get(&key) else { return };
        if !self.keeps(&entry.session) {
            return;
        }
        let at = entry.session.is_kept_alive().then(|| {
            self.schedule.plan(key, instant_after(delay));
            crate::time::add(self.ctx.clock.now(), delay)
        });
        if at.is_none() {
            self.schedule.cancel(key);
        }
        self.emit(Event::Scheduled { key, at });
    }

    /// Plans from what is known of the session (`policy::next_due`), after the hold on its
    /// workbook if Graph asked to wait.
    pub(super) fn plan_from_state(&mut self, key: SessionKey) {
        let Some(entry) = self.entries.get(&key) else { return };
        let session = &entry.session;
        let now = self.ctx.clock.now();
        let Some(due) = next_due_with(session, &self.settings.defaults, self.interval_of(session), now) else {
            self.schedule.cancel(key);
            if self.driving {
                self.emit(Event::Scheduled { key, at: None });
            }
            return;
        };
        let mut delay = crate::time::until(now, due);
        if let Some(held) = self.dispatcher.held_until(&session.workbook.to_string()) {
            delay = delay.max(held.saturating_duration_since(Instant::now()));
        }
        self.plan(key, delay);
    }

    /// How soon the session must be refreshed: the sooner it would expire, the sooner it goes.
    pub(super) fn urgency_of(&self, session: &TrackedSession) -> Urgency {
        match self.settings.defaults.expires_at(session) {
            Some(at) => Urgency::By(instant_after(crate::time::until(self.ctx.clock.now(), at))),
            None => Urgency::By(Instant::now()),
        }
    }

    /// The wall clock jumped ahead of the monotonic one (the machine slept): every session whose
    /// interval passed meanwhile is refreshed at once.
    pub(super) fn refresh_overdue(&mut self, gap: Duration) {
        let now = self.ctx.clock.now();
        let overdue: Vec<SessionKey> = self
            .entries
            .values()
            .filter(|e| e.busy.is_none() && e.session.is_kept_alive())
            .filter(|e| crate::time::until(e.session.last_activity(), now) >= self.interval_of(&e.session))
            .map(|e| e.session.key)
            .collect();
        tracing::info!(gap = ?gap, sessions = overdue.len(), "the clock jumped (sleep?); refreshing overdue sessions now");
        for key in overdue {
            self.plan(key, Duration::ZERO);
        }
    }

    /// How early automatic refreshes may start so that a crowd of them due together is sent
    /// before any is late: the most that the refreshes planned for the next two minutes would
    /// fall behind their due times if each went only when due, at the rate the budget allows
    /// (less the share that fails and must go again). Nothing, when they fit as they are.
    pub(super) fn backlog_lead(&self, now: Instant) -> Duration {
        const LOOK_AHEAD: Duration = Duration::from_secs(120);
        /// Enough to see a crowd coming; past it, the next tick looks again.
        const MOST: usize = 50_000;
        let success = (1.0 - self.failure_rate.value()).clamp(0.2, 1.0);
        // The store counts each start for `GRANT_COUNTED`, a little longer than the window.
        let per_second = f64::from(self.dispatcher.budget_limit()) / GRANT_COUNTED.as_secs_f64() * success;
        let mut behind = 0.0f64;
        for (sent, at) in self.schedule.upcoming(now + LOOK_AHEAD).take(MOST).enumerate() {
            let sent_by = (sent + 1) as f64 / per_second;
            behind = behind.max(sent_by - at.saturating_duration_since(now).as_secs_f64());
        }
        if behind <= 0.0 {
            return Duration::ZERO;
        }
        // A little more, for the answers that come slower than the budget.
        Duration::from_secs_f64(behind + 2.0).min(LOOK_AHEAD)
    }

    /// When the loop must wake next, if nothing else wakes it.
    pub(super) fn next_wake(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut wake = self.dispatcher.wake_at(now);
        if self.driving
            && !self.paused
            && let Some(due) = self.schedule.next_due()
        {
            // As early as a crowd lets it go, but not before what was just found too early.
            let mut at = due.checked_sub(self.lead).unwrap_or(due);
            if let Some(not_before) = self.not_before {
                at = at.max(not_before);
            }
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        if let Some(((at, _), _)) = self.later.first_key_value() {
            wake = Some(wake.map_or(*at, |w| w.min(*at)));
        }
        wake
    }
}
