//! The dispatcher: every Graph call waits here for its turn. One call at a time per workbook (a
//! lane each), a global concurrency limit, a sliding request budget that slows down when Graph
//! throttles and speeds up again when it stops, and per-workbook holds for `Retry-After`. Among
//! the calls that may start, the most urgent goes first: calls someone asked for, then automatic
//! refreshes by how soon their session would expire.
//!
//! The bookkeeping (what runs, which lanes are busy or held, what the budget spent) lives only
//! here and changes only through `start` and `finish`, so it cannot get out of balance.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::policy::{Verdict, throttle_hold};

pub(crate) use crate::store::BUDGET_WINDOW;
use crate::store::{GRANT_LIFE, Grant, GrantToken, Reservation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct JobId(u64);

impl JobId {
    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> Self {
        JobId(n)
    }
}

/// How soon a call must go. `Now` (someone waits for it) before any `By`, and `By` in deadline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Urgency {
    Now,
    By(Instant),
}

/// A call that may start now.
#[derive(Debug)]
pub(crate) struct Ticket<T> {
    pub id: JobId,
    pub(crate) payload: T,
}

struct Queued<T> {
    urgency: Urgency,
    seq: u64,
    payload: T,
}

impl<T> Queued<T> {
    fn key(&self) -> (Urgency, u64) {
        (self.urgency, self.seq)
    }
}

impl<T> PartialEq for Queued<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Queued<T> {}
impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Queued<T> {
    /// Reversed, so that the heap's top is the most urgent.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// One workbook's calls.
struct Lane<T> {
    queue: BinaryHeap<Queued<T>>,
    running: Option<JobId>,
    held_until: Option<Instant>,
    /// Throttled answers in a row.
    streak: u32,
    /// Its last call got no answer: its calls share half of the slots between them, so that
    /// workbooks that stopped answering cannot hold every slot while the others wait.
    silent: bool,
    /// Bumped whenever the lane's place in `ready` or `holds` changes; older entries are stale.
    version: u64,
}

impl<T> Lane<T> {
    fn new() -> Self {
        Lane { queue: BinaryHeap::new(), running: None, held_until: None, streak: 0, silent: false, version: 0 }
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_none() && self.held_until.is_none() && self.streak == 0 && !self.silent
    }
}

/// At most `limit` request starts in any `BUDGET_WINDOW`, where the limit follows throttling:
/// each second in which Graph throttled, it is cut by half the share of answers that were 429s
/// (scattered 429s barely slow the keeper, a wall of them halves its rate); each success raises
/// it by 1 % of the ceiling. It never goes below a twentieth of the ceiling, so the keeper slows
/// down instead of stopping.
///
/// With `shared`, every start is also taken from the budget all processes on the store share
/// (`SessionStore::reserve`), a few at a time as work waits for them.
#[derive(Debug)]
pub(crate) struct Budget {
    ceiling: f64,
    limit: f64,
    starts: VecDeque<Instant>,
    /// This second's answers: (when it began, answers, throttled ones).
    second: (Option<Instant>, u32, u32),
    shared: Option<Allowance>,
    /// The part of the ceiling this process spends on its own while the store cannot share the
    /// budget out: all of it, unless keepers share the store (`Share::budget`).
    alone_share: f64,
}

/// Starts granted from the shared budget and not yet used.
#[derive(Debug, Default)]
struct Allowance {
    tokens: u32,
    /// Grants not used by then are given back with the next reservation.
    expires: Option<Instant>,
    /// The grant `tokens` came from.
    grant: Option<GrantToken>,
    /// A reservation is on its way.
    asking: bool,
    /// The store had none to give: not asked again before this.
    not_before: Option<Instant>,
    /// Requests made beyond what grants paid for (a create's polls), not yet told to the store.
    extra: u32,
}

impl Allowance {
    fn usable(&self, now: Instant) -> u32 {
        if self.expires.is_some_and(|at| now < at) { self.tokens } else { 0 }
    }
}

impl Budget {
    pub fn new(ceiling: u32, shared: bool) -> Self {
        let ceiling_f = f64::from(ceiling.max(1));
        Budget {
            ceiling: ceiling_f,
            limit: ceiling_f,
            starts: VecDeque::new(),
            second: (None, 0, 0),
            shared: shared.then(Allowance::default),
            alone_share: 1.0,
        }
    }

    /// Starts this process may make now on its own part of the ceiling (`alone_share`), and
    /// when the next one is possible if none is.
    fn alone_room(&mut self, now: Instant) -> (usize, Option<Instant>) {
        self.evict(now);
        let allowed = ((self.ceiling * self.alone_share).floor() as usize).clamp(1, self.allowed());
        let room = allowed.saturating_sub(self.starts.len());
        let next =
            (room == 0).then(|| self.starts.get(self.starts.len() - allowed).map(|t| *t + BUDGET_WINDOW)).flatten();
        (room, next)
    }

    fn room(&mut self, now: Instant) -> usize {
        self.evict(now);
        self.allowed().saturating_sub(self.starts.len())
    }

    fn floor(&self) -> f64 {
        (self.ceiling / 20.0).max(1.0)
    }

    fn allowed(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }

    fn evict(&mut self, now: Instant) {
        while self.starts.front().is_some_and(|t| now.saturating_duration_since(*t) >= BUDGET_WINDOW) {
            self.starts.pop_front();
        }
    }

    pub(crate) fn has_room(&mut self, now: Instant) -> bool {
        self.room(now) > 0 && self.shared.as_ref().is_none_or(|a| a.usable(now) > 0)
    }

    /// Spends `requests` starts at `now`.
    pub(crate) fn spend(&mut self, now: Instant, requests: u32) {
        for _ in 0..requests {
            self.starts.push_back(now);
        }
        if let Some(allowance) = &mut self.shared {
            allowance.tokens = allowance.tokens.saturating_sub(requests);
        }
    }

    /// Requests a call made after its start, which no grant paid for: counted here now, and
    /// told to the store with the next reservation.
    pub(crate) fn spend_after(&mut self, now: Instant, requests: u32) {
        for _ in 0..requests {
            self.starts.push_back(now);
        }
        if let Some(allowance) = &mut self.shared {
            allowance.extra = allowance.extra.saturating_add(requests);
        }
    }

    /// When the next start becomes possible, if none is possible now (`None` too while a
    /// reservation is on its way: its answer wakes the engine).
    pub(crate) fn next_free(&mut self, now: Instant) -> Option<Instant> {
        self.evict(now);
        let allowed = self.allowed();
        let local = if self.starts.len() < allowed {
            None
        } else {
            self.starts.get(self.starts.len() - allowed).map(|t| *t + BUDGET_WINDOW)
        };
        let shared = self.shared.as_ref().and_then(|a| a.not_before.filter(|t| *t > now && a.usable(now) == 0));
        match (local, shared) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// What to ask the shared budget for now, if anything. Starts are asked for when `waiting`
    /// work has none: as many as wait, or as many as the last `GRANT_LIFE` started if more (a
    /// steady stream of calls, the proxy's, asks once a grant's life rather than once a call),
    /// at most a twentieth of the ceiling at a time. What a grant leaves unused goes back to
    /// the store once its life is over: kept, it would count against every process on the
    /// store for a whole window (a keeper of 10,000 sessions started 0.3 % of its refreshes
    /// over a second late that way).
    fn reservation(&mut self, now: Instant, waiting: usize) -> Option<Reservation> {
        let room = self.room(now);
        let chunk = (self.ceiling / 20.0).max(1.0) as usize;
        let recent = match waiting {
            0 => 0,
            _ => self.starts.iter().rev().take_while(|t| now.saturating_duration_since(**t) < GRANT_LIFE).count(),
        };
        let allowance = self.shared.as_mut()?;
        if allowance.asking {
            return None;
        }
        let lapsed = allowance.expires.is_some_and(|at| now >= at);
        let unused = match (lapsed, allowance.grant) {
            (true, Some(grant)) if allowance.tokens > 0 => Some((grant, std::mem::take(&mut allowance.tokens))),
            _ => None,
        };
        if lapsed {
            allowance.grant = None;
        }
        let may_ask = allowance.not_before.is_none_or(|t| now >= t) && allowance.usable(now) == 0;
        let want = if may_ask { waiting.max(recent).min(chunk).min(room) } else { 0 };
        if want == 0 && allowance.extra == 0 && unused.is_none() {
            return None;
        }
        allowance.asking = true;
        Some(Reservation {
            want: u32::try_from(want).unwrap_or(u32::MAX),
            extra: std::mem::take(&mut allowance.extra),
            unused,
            holds_seen: 0,
        })
    }

    /// The store's answer to a reservation of `want` asked for at `asked`: the grant's life runs
    /// from then, as the store counts it from then (a store slow to answer, busy writing a
    /// keeper's outcomes, made late starts reach Graph after the store stopped counting them:
    /// 25 of Graph's 429s in 20,000 requests). A store that could not answer leaves this process
    /// on its own part of the budget for the moment: keeping sessions alive comes first, and
    /// the other keepers spend the rest (a keeper cut off that spent all of it made the store's
    /// keepers send twice the budget together).
    fn reserved(&mut self, asked: Instant, want: u32, grant: Option<Grant>) {
        if self.shared.is_none() {
            return;
        }
        let grant = grant.unwrap_or_else(|| {
            let now = Instant::now();
            let (room, next) = self.alone_room(now);
            let granted = want.min(u32::try_from(room).unwrap_or(u32::MAX));
            let retry_in = next.map(|at| at.saturating_duration_since(asked));
            Grant { granted, retry_in, ..Grant::default() }
        });
        let Some(allowance) = &mut self.shared else { return };
        allowance.asking = false;
        if grant.granted > 0 {
            allowance.tokens = grant.granted;
            allowance.expires = Some(asked + GRANT_LIFE);
            allowance.grant = grant.token;
            allowance.not_before = None;
        } else if want > 0 {
            allowance.not_before = Some(asked + grant.retry_in.unwrap_or(Duration::from_millis(100)));
        }
    }

    /// Counts an answer; a second that is over applies its cut.
    pub fn answered(&mut self, now: Instant, throttled: bool) {
        let (began, answers, hits) = &mut self.second;
        if began.is_none_or(|b| now.saturating_duration_since(b) >= Duration::from_secs(1)) {
            if *hits > 0 && *answers > 0 {
                let share = f64::from(*hits) / f64::from(*answers);
                self.limit = (self.limit * (1.0 - share / 2.0)).max(self.floor());
            }
            self.second = (Some(now), 0, 0);
        }
        self.second.1 += 1;
        if throttled {
            self.second.2 += 1;
        } else {
            self.limit = (self.limit + self.ceiling / 100.0).min(self.ceiling);
        }
    }

    /// Requests per window allowed now.
    pub fn limit(&self) -> u32 {
        self.allowed() as u32
    }
}

/// Which workbooks Graph asked to wait, and until when the longest wait runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holds {
    pub workbooks: usize,
    pub until: Option<Instant>,
}

pub(crate) struct Dispatcher<T> {
    lanes: HashMap<String, Lane<T>>,
    /// One entry per lane that could start a call: its best job's urgency.
    ready: BinaryHeap<Reverse<(Urgency, u64, u64, String)>>,
    /// When held lanes are free again (an entry counts while its lane is held until that time).
    holds: BinaryHeap<Reverse<(Instant, String)>>,
    held: usize,
    /// Each running call's lane and the request it travels in (its own, or a batch's).
    running: HashMap<JobId, (String, JobId)>,
    /// Calls per request in flight: the concurrency limit counts requests, not calls.
    requests: HashMap<JobId, usize>,
    /// Requests in flight to workbooks that stopped answering.
    silent_requests: std::collections::HashSet<JobId>,
    budget: Budget,
    /// Holds Graph gave since the engine last took them (`take_new_holds`).
    new_holds: Vec<(String, Instant)>,
    concurrency: usize,
    next_id: u64,
    seq: u64,
}

impl<T> Dispatcher<T> {
    pub fn new(concurrency: usize, budget: u32, shared: bool) -> Self {
        Dispatcher {
            lanes: HashMap::new(),
            ready: BinaryHeap::new(),
            holds: BinaryHeap::new(),
            held: 0,
            running: HashMap::new(),
            requests: HashMap::new(),
            silent_requests: std::collections::HashSet::new(),
            budget: Budget::new(budget, shared),
            new_holds: Vec::new(),
            concurrency: concurrency.max(1),
            next_id: 0,
            seq: 0,
        }
    }

    /// Puts the lane back among those that may start, if it may.
    fn index(&mut self, name: &str) {
        let Some(lane) = self.lanes.get_mut(name) else { return };
        lane.version += 1;
        if lane.running.is_some() || lane.held_until.is_some() {
            return;
        }
        match lane.queue.peek() {
            Some(best) => self.ready.push(Reverse((best.urgency, best.seq, lane.version, name.to_string()))),
            None => {
                if lane.idle() {
                    self.lanes.remove(name);
                }
            }
        }
    }

    pub(crate) fn submit(&mut self, lane: &str, urgency: Urgency, payload: T) {
        self.seq += 1;
        let entry = self.lanes.entry(lane.to_string()).or_insert_with(Lane::new);
        let better = entry.queue.peek().is_none_or(|best| (urgency, self.seq) < best.key());
        entry.queue.push(Queued { urgency, seq: self.seq, payload });
        if better {
            self.index(lane);
        }
    }

    /// The most urgent call that may start now, if the limits allow one. `accept` sees each
    /// candidate first and may drop it (its session went away meanwhile); a dropped one costs
    /// nothing.
    pub fn start(&mut self, now: Instant, accept: impl FnMut(&mut T) -> bool) -> Option<Ticket<T>> {
        if self.requests.len() >= self.concurrency {
            return None;
        }
        self.take(now, None, |_| true, accept)
    }

    /// Like `start`, for a call that travels in the same request as `leader` (a `$batch`): it
    /// takes no place of its own under the concurrency limit, but its lane and its share of the
    /// budget as any call. Only the most urgent candidate is looked at: if `fits` refuses it, it
    /// stays queued and nothing joins, so that joining never overtakes a more urgent call.
    pub fn join(
        &mut self,
        now: Instant,
        leader: JobId,
        fits: impl Fn(&T) -> bool,
        accept: impl FnMut(&mut T) -> bool,
    ) -> Option<Ticket<T>> {
        if !self.requests.contains_key(&leader) {
            return None;
        }
        self.take(now, Some(leader), fits, accept)
    }

    fn take(
        &mut self,
        now: Instant,
        leader: Option<JobId>,
        fits: impl Fn(&T) -> bool,
        mut accept: impl FnMut(&mut T) -> bool,
    ) -> Option<Ticket<T>> {
        if !self.budget.has_room(now) {
            return None;
        }
        let silent_share = (self.concurrency / 2).max(1);
        let silent_full = leader.is_none() && self.silent_requests.len() >= silent_share;
        let mut passed_over = Vec::new();
        let ticket = loop {
            let Some(Reverse((urgency, seq, version, name))) = self.ready.pop() else { break None };
            let Some(lane) = self.lanes.get_mut(&name) else { continue };
            if lane.version != version || lane.running.is_some() || lane.held_until.is_some() {
                continue;
            }
            // Its turn comes when a slot for silent workbooks is free; others go meanwhile.
            if lane.silent && silent_full {
                passed_over.push(Reverse((urgency, seq, version, name)));
                continue;
            }
            if lane.queue.peek().is_some_and(|job| !fits(&job.payload)) {
                self.index(&name);
                break None;
            }
            let Some(mut job) = lane.queue.pop() else {
                self.index(&name);
                continue;
            };
            if !accept(&mut job.payload) {
                self.index(&name);
                continue;
            }
            self.next_id += 1;
            let id = JobId(self.next_id);
            lane.running = Some(id);
            lane.version += 1;
            let request = leader.unwrap_or(id);
            if lane.silent && leader.is_none() {
                self.silent_requests.insert(request);
            }
            self.running.insert(id, (name.clone(), request));
            *self.requests.entry(request).or_default() += 1;
            self.budget.spend(now, 1);
            break Some(Ticket { id, payload: job.payload });
        };
        self.ready.extend(passed_over);
        ticket
    }

    /// A call ended: it made `requests` HTTP requests (the first was paid at its start). Returns
    /// whether the holds changed. Finishing an unknown or already finished call does nothing.
    pub(crate) fn finish(&mut self, id: JobId, now: Instant, requests: u32, verdict: Verdict, sample: f64) -> bool {
        let Some((name, request)) = self.running.remove(&id) else { return false };
        if let std::collections::hash_map::Entry::Occupied(mut calls) = self.requests.entry(request) {
            *calls.get_mut() -= 1;
            if *calls.get() == 0 {
                calls.remove();
                self.silent_requests.remove(&request);
            }
        }
        self.budget.spend_after(now, requests.saturating_sub(1));
        let mut holds_changed = false;
        if let Some(lane) = self.lanes.get_mut(&name) {
            lane.running = None;
            self.budget.answered(now, matches!(verdict, Verdict::Throttled { .. }));
            lane.silent = verdict == Verdict::Unanswered;
            match verdict {
                Verdict::Ok => lane.streak = 0,
                Verdict::Throttled { retry_after } => {
                    lane.streak = lane.streak.saturating_add(1);
                    let until = now + throttle_hold(retry_after, lane.streak, sample);
                    self.hold(&name, until);
                    self.new_holds.push((name.clone(), until));
                    holds_changed = true;
                }
                Verdict::Unanswered | Verdict::Other => {}
            }
        }
        self.index(&name);
        holds_changed
    }

    /// Holds `lane` back until `until` (if not held longer already): Graph asked this process to
    /// wait, or another process on the store (`SessionStore::reserve`). Returns whether it changed.
    pub(crate) fn hold(&mut self, lane: &str, until: Instant) -> bool {
        let entry = self.lanes.entry(lane.to_string()).or_insert_with(Lane::new);
        if entry.held_until.is_some_and(|h| h >= until) {
            return false;
        }
        if entry.held_until.is_none() {
            self.held += 1;
        }
        entry.held_until = Some(until);
        self.holds.push(Reverse((until, lane.to_string())));
        true
    }

    /// The holds Graph gave this process since the last call: for the other processes on the store.
    pub(crate) fn take_new_holds(&mut self) -> Vec<(String, Instant)> {
        std::mem::take(&mut self.new_holds)
    }

    /// Shows `visit` each queued call in a lane held past `horizon`, with the end of its lane's
    /// hold, and takes out those it returns `true` for: calls someone waits for are told of a
    /// long hold, not made to sit through it.
    pub(crate) fn take_held(&mut self, horizon: Instant, mut visit: impl FnMut(&mut T, Instant) -> bool) -> Vec<T> {
        if self.held == 0 {
            return Vec::new();
        }
        let long: Vec<String> =
            self.holds.iter().filter(|Reverse((until, _))| *until > horizon).map(|Reverse((_, n))| n.clone()).collect();
        let mut taken = Vec::new();
        for name in long {
            let Some(lane) = self.lanes.get_mut(&name) else { continue };
            let Some(until) = lane.held_until.filter(|until| *until > horizon) else { continue };
            let mut keep = Vec::with_capacity(lane.queue.len());
            for mut queued in std::mem::take(&mut lane.queue).into_vec() {
                if visit(&mut queued.payload, until) {
                    taken.push(queued.payload);
                } else {
                    keep.push(queued);
                }
            }
            lane.queue = keep.into();
        }
        taken
    }

    /// Finds the first queued call on `lane` that `pick` selects, lets `change` amend it, and
    /// moves it up to `urgency` if that is more urgent than its own. Returns whether one was found.
    pub(crate) fn amend(
        &mut self,
        lane: &str,
        mut pick: impl FnMut(&T) -> bool,
        change: impl FnOnce(&mut T),
        urgency: Urgency,
    ) -> bool {
        let Some(entry) = self.lanes.get_mut(lane) else { return false };
        let mut queue = std::mem::take(&mut entry.queue).into_vec();
        let found = queue.iter_mut().find(|q| pick(&q.payload)).map(|q| {
            change(&mut q.payload);
            q.urgency = q.urgency.min(urgency);
        });
        entry.queue = queue.into();
        if found.is_some() {
            self.index(lane);
        }
        found.is_some()
    }

    /// Frees the lanes whose hold has passed. Returns whether any was freed.
    pub(crate) fn release_holds(&mut self, now: Instant) -> bool {
        let mut released = false;
        while let Some(Reverse((until, _))) = self.holds.peek() {
            if *until > now {
                break;
            }
            let until = *until;
            let Some(Reverse((_, name))) = self.holds.pop() else { break };
            let Some(lane) = self.lanes.get_mut(&name) else { continue };
            // A longer hold since replaced this one: its own entry frees the lane.
            if lane.held_until != Some(until) {
                continue;
            }
            lane.held_until = None;
            self.held = self.held.saturating_sub(1);
            released = true;
            self.index(&name);
        }
        released
    }

    /// The next moment something may become possible: a hold ending, the budget freeing up.
    pub(crate) fn wake_at(&mut self, now: Instant) -> Option<Instant> {
        let hold = self.holds.peek().map(|Reverse((t, _))| *t);
        let budget = (!self.ready.is_empty() && self.requests.len() < self.concurrency)
            .then(|| self.budget.next_free(now))
            .flatten();
        match (hold, budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn holds(&self) -> Holds {
        let until = if self.held == 0 { None } else { self.lanes.values().filter_map(|l| l.held_until).max() };
        Holds { workbooks: self.held, until }
    }

    /// When a held lane may start calls again.
    pub(crate) fn held_until(&self, lane: &str) -> Option<Instant> {
        self.lanes.get(lane).and_then(|l| l.held_until)
    }

    /// Requests per window the budget allows now.
    pub(crate) fn budget_limit(&self) -> u32 {
        self.budget.limit()
    }

    /// What to ask the store's shared budget for, if anything (`Budget::reservation`): starts
    /// while calls wait for want of them, extra requests to record.
    pub(crate) fn reservation(&mut self, now: Instant) -> Option<Reservation> {
        let waiting = if self.requests.len() < self.concurrency { self.ready.len() } else { 0 };
        self.budget.reservation(now, waiting)
    }

    /// The store's answer to `reservation` asked for at `asked` (`None`: it could not answer).
    pub(crate) fn reserved(&mut self, asked: Instant, want: u32, grant: Option<Grant>) {
        self.budget.reserved(asked, want, grant);
    }

    /// The part of the budget this process spends on its own while the store cannot share it.
    pub(crate) fn set_alone_share(&mut self, share: f64) {
        self.budget.alone_share = share.clamp(0.0, 1.0);
    }

    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.running.len()
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lanes.values().map(|l| l.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut Dispatcher<&'static str>, now: Instant) -> Vec<(JobId, &'static str)> {
        std::iter::from_fn(|| d.start(now, |_| true).map(|t| (t.id, t.payload))).collect()
    }

    /// A steady stream asks for a second's worth at once, and what a grant leaves unused goes
    /// back to the store once its life is over, named by the grant it came from.
    #[tokio::test(start_paused = true)]
    async fn a_shared_budget_asks_for_what_the_last_second_used_and_gives_back_the_rest() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000, true);
        let first = budget.reservation(t0, 1).expect("a call waits");
        assert_eq!((first.want, first.unused), (1, None));
        assert!(budget.reservation(t0, 1).is_none(), "one reservation at a time");
        let one = GrantToken { row: 1, at_ms: 0 };
        budget.reserved(t0, 1, Some(Grant { granted: 1, retry_in: None, token: Some(one), ..Grant::default() }));
        assert!(budget.has_room(t0));
        budget.spend(t0, 30);
        assert!(!budget.has_room(t0), "the grant is spent");
        let at = t0 + Duration::from_millis(100);
        let second = budget.reservation(at, 1).expect("a call waits again");
        assert_eq!(second.want, 30, "as many as the last second started");
        let two = GrantToken { row: 2, at_ms: 100 };
        budget.reserved(at, 30, Some(Grant { granted: 30, retry_in: None, token: Some(two), ..Grant::default() }));
        budget.spend(at, 10);
        assert!(budget.reservation(at, 0).is_none(), "twenty left and nothing waits");
        let lapsed = at + GRANT_LIFE;
        let back = budget.reservation(lapsed, 0).expect("the rest goes back");
        assert_eq!((back.want, back.unused), (0, Some((two, 20))));
        budget.reserved(lapsed, 0, Some(Grant { granted: 0, retry_in: None, token: None, ..Grant::default() }));
        assert!(budget.reservation(lapsed, 0).is_none(), "given back once");
        assert!(!budget.has_room(lapsed), "nothing of it is used after its life");
    }

    /// A keeper cut off from the store spends only its own part of the budget (the others
    /// spend the rest), and waits for the window to make room once it is spent.
    #[tokio::test(start_paused = true)]
    async fn a_process_the_store_cannot_answer_spends_only_its_part_of_the_budget() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000, true);
        budget.alone_share = 0.25;
        let mut spent = 0;
        while let Some(ask) = budget.reservation(t0, 100) {
            budget.reserved(t0, ask.want, None);
            let usable = budget.shared.as_ref().map_or(0, |a| a.usable(t0));
            if usable == 0 {
                break;
            }
            budget.spend(t0, usable);
            spent += usable;
        }
        assert_eq!(spent, 250, "a quarter of the ceiling");
        assert!(!budget.has_room(t0));
        let next = budget.next_free(t0).expect("a time when room comes back");
        assert_eq!(next, t0 + BUDGET_WINDOW, "once the window has passed the first starts");
        budget.alone_share = 1.0;
        let later = t0 + BUDGET_WINDOW;
        let ask = budget.reservation(later, 100).expect("room again");
        budget.reserved(later, ask.want, None);
        assert!(budget.has_room(later));
    }

    #[tokio::test(start_paused = true)]
    async fn one_call_per_workbook_and_a_global_limit() {
        let now = Instant::now();
        let mut d = Dispatcher::new(2, 100, false);
        d.submit("A", Urgency::Now, "a1");
        d.submit("A", Urgency::Now, "a2");
        d.submit("B", Urgency::Now, "b1");
        d.submit("C", Urgency::Now, "c1");
        let first = drain(&mut d, now);
        assert_eq!(first.iter().map(|(_, p)| *p).collect::<Vec<_>>(), ["a1", "b1"]);
        assert!(d.start(now, |_| true).is_none(), "two run: the limit");
        d.finish(first[0].0, now, 1, Verdict::Ok, 0.0);
        // A is free again: a2 was submitted before c1 and both are `Now`, so a2 takes the slot.
        assert_eq!(drain(&mut d, now).iter().map(|(_, p)| *p).collect::<Vec<_>>(), ["a2"]);
        assert_eq!(d.running(), 2);
        assert!(!d.finish(JobId(999), now, 1, Verdict::Ok, 0.0), "unknown ids change nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn the_soonest_to_expire_goes_first_and_asked_for_calls_before_all() {
        let now = Instant::now();
        let mut d = Dispatcher::new(10, 100, false);
        d.submit("A", Urgency::By(now + Duration::from_secs(50)), "late");
        d.submit("B", Urgency::By(now + Duration::from_secs(5)), "soon");
        d.submit("C", Urgency::Now, "asked");
        assert_eq!(drain(&mut d, now).iter().map(|(_, p)| *p).collect::<Vec<_>>(), ["asked", "soon", "late"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_workbook_is_held_and_the_others_go_on() {
        let now = Instant::now();
        let mut d = Dispatcher::new(10, 100, false);
        d.submit("A", Urgency::Now, "a1");
        let [(a1, _)] = drain(&mut d, now)[..] else { panic!() };
        d.submit("A", Urgency::Now, "a2");
        d.submit("B", Urgency::Now, "b1");
        assert!(d.finish(a1, now, 1, Verdict::Throttled { retry_after: Some(Duration::from_secs(1_000_000)) }, 0.0));
        assert_eq!(drain(&mut d, now).iter().map(|(_, p)| *p).collect::<Vec<_>>(), ["b1"]);
        let holds = d.holds();
        assert_eq!(holds.workbooks, 1);
        assert_eq!(holds.until, Some(now + Duration::from_secs(180)), "capped at three minutes");
        assert_eq!(d.wake_at(now), Some(now + Duration::from_secs(180)));
        assert!(!d.release_holds(now + Duration::from_secs(179)));
        assert!(d.release_holds(now + Duration::from_secs(180)));
        assert_eq!(drain(&mut d, now + Duration::from_secs(180)).iter().map(|(_, p)| *p).collect::<Vec<_>>(), ["a2"]);
        assert_eq!(d.holds().workbooks, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_counts_every_request_and_adapts_to_throttling() {
        let now = Instant::now();
        let mut d = Dispatcher::new(100, 10, false);
        for lane in ["A", "B", "C", "D"] {
            d.submit(lane, Urgency::Now, lane);
        }
        let started = drain(&mut d, now);
        assert_eq!(started.len(), 4);
        // A long-running create polled eight times: nine requests in all.
        d.finish(started[0].0, now, 9, Verdict::Ok, 0.0);
        d.submit("E", Urgency::Now, "E");
        assert!(d.start(now, |_| true).is_none(), "4 + 8 = 12 spent of 10");
        assert_eq!(d.wake_at(now), Some(now + BUDGET_WINDOW));

        let mut b = Budget::new(1000, false);
        // A second with one 429 in five answers: the next second starts 10 % lower.
        for i in 0..5 {
            b.answered(now, i == 0);
        }
        assert_eq!(b.limit(), 1000, "successes in the same second raised it back to the ceiling");
        let second = now + Duration::from_secs(1);
        b.answered(second, true);
        assert_eq!(b.limit(), 900, "cut by half of a 20 % share");
        // A wall of 429s: halved each second, never below a twentieth.
        for s in 2..20 {
            for _ in 0..10 {
                b.answered(now + Duration::from_secs(s), true);
            }
        }
        assert_eq!(b.limit(), 50);
        for _ in 0..10 {
            b.answered(now + Duration::from_secs(30), false);
        }
        assert_eq!(b.limit(), 150, "back up by 1 % of the ceiling per success");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_that_join_a_request_share_its_place_but_not_its_lane_or_budget() {
        let now = Instant::now();
        let mut d = Dispatcher::new(1, 4, false);
        d.submit("A", Urgency::Now, "a1");
        d.submit("A", Urgency::Now, "a2");
        d.submit("B", Urgency::Now, "b1");
        d.submit("C", Urgency::Now, "close c");
        d.submit("D", Urgency::Now, "d1");
        let leader = d.start(now, |_| true).unwrap();
        assert_eq!(leader.payload, "a1");
        assert!(d.start(now, |_| true).is_none(), "one request at a time");
        let b1 = d.join(now, leader.id, |p| !p.starts_with("close"), |_| true).unwrap();
        assert_eq!(b1.payload, "b1", "a2 waits for its lane");
        assert!(d.join(now, leader.id, |p| !p.starts_with("close"), |_| true).is_none(), "the close does not fit");
        assert_eq!(d.queued(), 3, "and stays queued, ahead of d1");
        // Both finish: the request's place is free only then.
        d.finish(leader.id, now, 1, Verdict::Ok, 0.0);
        assert!(d.start(now, |_| true).is_none(), "b1 still holds the request");
        d.finish(b1.id, now, 1, Verdict::Ok, 0.0);
        let next = d.start(now, |_| true).unwrap();
        assert_eq!(next.payload, "a2");
        assert!(d.join(now, next.id, |_| true, |_| true).is_some(), "a third call ...");
        assert!(d.join(now, next.id, |_| true, |_| true).is_none(), "... and the budget of 4 is spent");
    }

    #[tokio::test(start_paused = true)]
    async fn workbooks_that_stopped_answering_hold_at_most_half_of_the_slots() {
        let now = Instant::now();
        let mut d = Dispatcher::new(4, 100, false);
        for lane in ["A", "B", "C", "D"] {
            d.submit(lane, Urgency::Now, lane);
        }
        for (id, _) in drain(&mut d, now) {
            d.finish(id, now, 1, Verdict::Unanswered, 0.0);
        }
        for lane in ["A", "B", "C", "D"] {
            d.submit(lane, Urgency::Now, lane);
        }
        d.submit("E", Urgency::By(now + Duration::from_secs(60)), "E");
        d.submit("F", Urgency::By(now + Duration::from_secs(60)), "F");
        let started: Vec<&str> = drain(&mut d, now).into_iter().map(|(_, p)| p).collect();
        assert_eq!(started, ["A", "B", "E", "F"], "two silent workbooks at a time; the others go too");
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_candidates_cost_nothing() {
        let now = Instant::now();
        let mut d = Dispatcher::new(10, 1, false);
        d.submit("A", Urgency::Now, "gone");
        d.submit("B", Urgency::Now, "kept");
        let ticket = d.start(now, |p| *p != "gone").unwrap();
        assert_eq!(ticket.payload, "kept");
        assert_eq!(d.queued(), 0);
    }
}
