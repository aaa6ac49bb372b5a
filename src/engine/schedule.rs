//! When each session's next automatic refresh is due, and noticing that the machine slept.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::session::SessionKey;

/// Due times in order; planning a session again makes its older entry stale (generations).
#[derive(Default)]
pub(crate) struct Schedule {
    queue: BTreeSet<(Instant, u64, SessionKey)>,
    generations: HashMap<SessionKey, u64>,
}

impl Schedule {
    fn bump(&mut self, key: SessionKey) -> u64 {
        let generation = self.generations.entry(key).or_default();
        *generation += 1;
        *generation
    }

    pub fn plan(&mut self, key: SessionKey, at: Instant) {
        let generation = self.bump(key);
        self.queue.insert((at, generation, key));
    }

    /// Plans nothing any more (this engine stopped driving).
    pub(crate) fn clear(&mut self) {
        *self = Schedule::default();
    }

    /// No automatic refresh for this session until it is planned again.
    pub(crate) fn cancel(&mut self, key: SessionKey) {
        self.bump(key);
    }

    pub(crate) fn forget(&mut self, key: SessionKey) {
        self.generations.remove(&key);
    }

    fn is_current(&self, generation: u64, key: SessionKey) -> bool {
        self.generations.get(&key) == Some(&generation)
    }

    /// The sessions due by `now`, with when each was due; each is consumed.
    pub fn due(&mut self, now: Instant) -> Vec<(SessionKey, Instant)> {
        let mut due = Vec::new();
        while let Some(&(at, generation, key)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            if self.is_current(generation, key) {
                self.bump(key);
                due.push((key, at));
            }
        }
        due
    }

    /// When the next session is due (stale entries are dropped on the way).
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(&(at, generation, key)) = self.queue.first() {
            if self.is_current(generation, key) {
                return Some(at);
            }
            self.queue.pop_first();
        }
        None
    }

    /// When the sessions planned up to `until` are due, in order.
    pub(crate) fn upcoming(&self, until: Instant) -> impl Iterator<Item = Instant> + '_ {
        self.queue
            .iter()
            .take_while(move |(at, ..)| *at <= until)
            .filter(|(_, generation, key)| self.is_current(*generation, *key))
            .map(|(at, ..)| *at)
    }
}

/// Wall-clock time running ahead of monotonic time by more than this means the machine slept.
const GAP_THRESHOLD: Duration = Duration::from_secs(5);

/// Compares wall-clock and monotonic time between ticks: monotonic time stops while a laptop
/// sleeps, the wall clock does not.
pub(crate) struct GapWatch {
    anchor: (DateTime<Utc>, Instant),
}

impl GapWatch {
    pub fn new(wall: DateTime<Utc>, mono: Instant) -> Self {
        GapWatch { anchor: (wall, mono) }
    }

    /// The wall time that passed unseen since the last check, if the machine slept.
    pub fn check(&mut self, wall: DateTime<Utc>, mono: Instant) -> Option<Duration> {
        let (wall0, mono0) = std::mem::replace(&mut self.anchor, (wall, mono));
        let wall_elapsed = crate::time::until(wall0, wall);
        (wall_elapsed > mono.saturating_duration_since(mono0) + GAP_THRESHOLD).then_some(wall_elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn planning_again_replaces_the_older_plan() {
        let now = Instant::now();
        let mut s = Schedule::default();
        s.plan(1, now + Duration::from_secs(5));
        s.plan(2, now + Duration::from_secs(3));
        s.plan(1, now + Duration::from_secs(10));
        assert_eq!(s.next_due(), Some(now + Duration::from_secs(3)));
        assert_eq!(s.due(now + Duration::from_secs(6)), [(2, now + Duration::from_secs(3))]);
        s.cancel(1);
        assert_eq!(s.next_due(), None);
        assert!(s.due(now + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_jump_of_the_wall_clock_is_a_gap() {
        let mono = Instant::now();
        let wall = Utc::now();
        let mut watch = GapWatch::new(wall, mono);
        assert_eq!(watch.check(wall + chrono::Duration::seconds(1), mono + Duration::from_secs(1)), None);
        let slept = watch.check(wall + chrono::Duration::seconds(601), mono + Duration::from_secs(2));
        assert_eq!(slept, Some(Duration::from_secs(600)));
    }
}
