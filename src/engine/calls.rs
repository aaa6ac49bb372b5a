//! Graph calls from the dispatcher to their end: which may start now (`pump`), how each travels
//! (`route`: plain, or refreshes together in one `$batch`), the task that makes it, and what its
//! report means for the session, its schedule and whoever waits for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::batching::{GATHER, MAX_BATCH, Route};
use super::dispatch::{JobId, Ticket};
use super::handle::{Answer, EngineError, Reply};
use super::jobs::{Job, Work, accept, queued, subject};
use super::messages::Event;
use super::ops::{self, Failure, Report};
use super::plan::instant_after;
use super::policy::{MANUAL_WAIT, Retry, Verdict, manual_retry};
use super::{Done, Engine};
use crate::graph::ErrorClass;
use crate::session::{OutcomeKind, SessionKey, Status, TrackedSession};
use crate::store::{StoreError, Write};

/// How late an automatic refresh starts; one gathered ahead of its time is not late.
fn late_by(job: &Job, now: Instant) -> Option<Duration> {
    match job.work {
        Work::Refresh { due: Some(due), .. } => Some(now.saturating_duration_since(due)),
        _ => None,
    }
}

impl Engine {
    /// Moves due work to the dispatcher and starts what the limits allow.
    pub(super) fn pump(&mut self) {
        // Whatever happened last may have taught something of `$batch`: told before anything stops.
        self.share_batching();
        let now = Instant::now();
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            // Its mark stays set while it waits; queued again, it is put back.
            if let Some(e) = job.key().and_then(|k| self.entries.get_mut(&k)) {
                e.queued &= !job.bit();
            }
            self.submit(job);
        }
        if self.dispatcher.release_holds(now) {
            self.report_holds();
        }
        if self.driving && !self.paused {
            // Gathered only once the first is due: a pass that ran for another reason (a call
            // ended) would otherwise send the few that just came within reach, in small batches.
            let gather = self.batching.gathers() && self.schedule.next_due().is_some_and(|due| due <= now);
            let lead = self.lead.max(if gather { GATHER } else { Duration::ZERO });
            self.not_before = None;
            for (key, due) in self.schedule.due(now + lead) {
                let Some(entry) = self.entries.get(&key) else { continue };
                // Early by a twentieth of its interval at most (a quarter while a crowd is due):
                // a session refreshed every second must not be refreshed ever sooner.
                let interval = self.interval_of(&entry.session);
                let early = (interval / 20).max(self.lead.min(interval / 4));
                if due > now && due - now > early {
                    self.schedule.plan(key, due);
                    let allowed = due - early;
                    self.not_before = Some(self.not_before.map_or(allowed, |t| t.min(allowed)));
                    continue;
                }
                if entry.busy.is_none() && !entry.removing {
                    self.submit(Job::keepers(Work::Refresh { key, due: Some(due) }));
                }
            }
        }
        if std::mem::take(&mut self.asked_since_holds) {
            self.refuse_long_holds(now);
        }
        // A keeper whose leases may have lapsed meanwhile (it was stopped) sends nothing of its
        // own until its next turn says what is still its own.
        let auto_allowed =
            self.driving && !self.paused && self.share.as_ref().is_none_or(crate::store::Share::holds_now);
        loop {
            let entries = &mut self.entries;
            let Some(ticket) = self.dispatcher.start(now, |job| accept(entries, auto_allowed, job)) else { break };
            match self.route(&ticket, now) {
                Route::Plain | Route::Check => {
                    self.start(ticket, now);
                    continue;
                }
                Route::Alone { probe } => {
                    self.start_group(vec![ticket], probe, now);
                    continue;
                }
                Route::Group => {}
            }
            // Refreshes on other workbooks that may start now go with it, in one request.
            let mut group = vec![ticket];
            while group.len() < MAX_BATCH {
                let entries = &mut self.entries;
                let joined = self.dispatcher.join(
                    now,
                    group[0].id,
                    |job| matches!(job.work, Work::Refresh { .. }),
                    |job| accept(entries, auto_allowed, job),
                );
                match joined {
                    Some(ticket) => group.push(ticket),
                    None => break,
                }
            }
            if group.len() > 1 {
                self.start_group(group, false, now);
            } else if let Some(alone) = group.pop() {
                // A batch of one would save nothing.
                self.start(alone, now);
            }
        }
        self.reserve_budget(now);
    }

    /// Asks the store for starts from the budget every process on it shares, when calls wait
    /// for want of them (and tells it the requests made beyond earlier grants).
    fn reserve_budget(&mut self, now: Instant) {
        /// A store slower than this to share the budget out (a database cut off in silence,
        /// its connection attempts hanging) is taken for one that cannot: this process goes on
        /// with its own part of the budget rather than stop refreshing.
        const RESERVE_WAIT: Duration = Duration::from_secs(2);
        let Some(mut ask) = self.dispatcher.reservation(now) else { return };
        ask.holds_seen = self.holds_seen;
        let (store, budget, at) = (self.store.clone(), self.settings.request_budget, self.ctx.clock.now());
        let task = self.tasks.spawn(async move {
            let result = match tokio::time::timeout(RESERVE_WAIT, store.reserve(ask, budget, at)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(crate::store::StoreError::Busy { store: store.location().to_string(), waited: RESERVE_WAIT })
                }
            };
            Done::Reserved { want: ask.want, asked: now, result }
        });
        self.running.insert(task.id(), (None, None));
    }

    /// How a call goes out: only refreshes travel in `$batch`, and until batching is trusted only
    /// the automatic ones of the probe and the canary do (`batching`).
    fn route(&mut self, ticket: &Ticket<Job>, now: Instant) -> Route {
        let Work::Refresh { key, due } = &ticket.payload.work else { return Route::Plain };
        if due.is_none() || ticket.payload.asked() {
            return if self.batching.gathers() { Route::Group } else { Route::Plain };
        }
        if let Some(canary) = self.batching.canary()
            && !self.entries.get(&canary).is_some_and(|e| e.session.is_kept_alive() && !e.removing)
        {
            self.batching.forget(canary);
        }
        let Some(entry) = self.entries.get(key) else { return Route::Plain };
        let expiry = self.settings.defaults.expiry(entry.session.mode);
        let route = self.batching.route(ticket.id, *key, entry.batched_since, expiry, now);
        if route == Route::Check {
            tracing::info!(session = %entry.session.name, "checking with a plain refresh that $batch refreshes kept it alive");
        }
        route
    }

    /// Whoever waits for a call on a workbook Graph asked to leave alone for longer than
    /// `MANUAL_WAIT` is told now; the keeper's own calls wait for the hold.
    fn refuse_long_holds(&mut self, now: Instant) {
        let entries = &self.entries;
        let mut told = Vec::new();
        let taken = self.dispatcher.take_held(now + MANUAL_WAIT, |job, until| {
            if !job.asked() || matches!(job.work, Work::CloseOrphan { .. }) {
                return false;
            }
            let workbook = subject(entries, job).map_or_else(String::new, |(_, w)| w.to_string());
            let wait = until.saturating_duration_since(now);
            job.answer(&Err(EngineError::Held { workbook, wait }));
            // A call the keeper wants too stays: the keeper waits for the hold.
            let take = !job.keeper;
            if take {
                told.push((job.key(), job.bit()));
            }
            take
        });
        drop(taken);
        for (key, bit) in told {
            let Some(key) = key else { continue };
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.queued &= !bit;
            }
            // Whatever the keeper would have done for it comes back by the one rule.
            if self.entries.get(&key).is_some_and(|e| e.busy.is_none()) {
                self.plan_from_state(key);
            }
        }
    }

    /// Tells the other processes on the store of the holds Graph just gave this one.
    fn share_holds(&mut self, now: Instant) {
        for (workbook, until) in self.dispatcher.take_new_holds() {
            let until = crate::time::add(self.ctx.clock.now(), until.saturating_duration_since(now));
            self.store.write(Write::Hold(crate::store::SharedHold { workbook, until }));
        }
    }

    /// Holds another process on the store was given: this one waits on those workbooks too.
    pub(super) fn heed_holds(&mut self, holds: &[crate::store::SharedHold], seen: i64) {
        self.holds_seen = self.holds_seen.max(seen);
        let (wall, now) = (self.ctx.clock.now(), Instant::now());
        let mut changed = false;
        for hold in holds {
            let left = crate::time::until(wall, hold.until);
            if !left.is_zero() {
                changed |= self.dispatcher.hold(&hold.workbook, now + left.min(crate::session::MAX_INTERVAL));
            }
        }
        if changed {
            self.report_holds();
        }
    }

    pub(super) fn report_holds(&mut self) {
        let holds = self.dispatcher.holds();
        if (holds.workbooks, holds.until) == self.holds {
            return;
        }
        self.holds = (holds.workbooks, holds.until);
        let now = Instant::now();
        let until = holds.until.map(|t| crate::time::add(self.ctx.clock.now(), t.saturating_duration_since(now)));
        self.emit(Event::Holds { workbooks: holds.workbooks, until });
    }

    fn start(&mut self, ticket: Ticket<Job>, now: Instant) {
        let Ticket { id, payload: mut job, .. } = ticket;
        if matches!(job.work, Work::Pass { .. }) {
            return self.start_turn(id, job);
        }
        // A creation is written down before Graph is asked: killed between Graph's answer and
        // the session's row, the next start can say which name may have a session open.
        let creating = match &job.work {
            Work::Create(new) => Some((new.name.clone(), new.workbook.clone())),
            Work::Recreate { key, .. } => {
                self.entries.get(key).map(|e| (e.session.name.clone(), e.session.workbook.clone()))
            }
            _ => None,
        };
        let intent = creating.map(|(name, workbook)| {
            let intent = self.rng.i64(1..);
            job.intent = Some(intent);
            Write::Creating { id: intent, name, workbook }
        });
        let session = match job.key().and_then(|k| self.entries.get_mut(&k)) {
            Some(entry) => {
                entry.busy = Some(id);
                entry.late = late_by(&job, now);
                Some(entry.session.clone())
            }
            None => None,
        };
        if let Some(key) = job.key() {
            self.emit(Event::Started { key, kind: job.kind() });
        }
        let graph = self.ctx.graph.clone();
        let clock = self.ctx.clock.clone();
        let store = self.store.clone();
        let key = job.key();
        let task = self.tasks.spawn(async move {
            let graph = &*graph;
            if let Some(intent) = intent
                && let Err(e) = store.write_acked(vec![intent]).await
            {
                tracing::warn!(error = %e, "a creation could not be written down before it started");
            }
            let (report, inserted) = match (&job.work, &session) {
                (Work::Refresh { .. }, Some(s)) => (ops::refresh(graph, s, &clock).await, None),
                (Work::Close { .. }, Some(s)) => (ops::close(graph, s, &clock).await, None),
                (Work::Recreate { .. }, Some(s)) => (ops::create(graph, &s.workbook, s.mode, &clock).await, None),
                (Work::CloseOrphan { session, .. }, _) => (ops::close(graph, session, &clock).await, None),
                (Work::Create(new), _) => {
                    let report = ops::create(graph, &new.workbook, new.mode, &clock).await;
                    let inserted = match &report.new_session_id {
                        Some(id) => {
                            let mut session = new.clone().into_tracked(id.clone(), clock.now());
                            report.apply_to(&mut session);
                            session.owner = graph.owner().await;
                            Some(store.insert(session, report.outcomes.clone()).await)
                        }
                        None => None,
                    };
                    // Stored, or nothing opened: either way the creation is over. (Opened and not
                    // stored, it is closed again, and over then.)
                    if let (Some(intent), false) = (job.intent, matches!(inserted, Some(Err(_)))) {
                        store.write(Write::Created { id: intent });
                    }
                    (report, inserted)
                }
                (Work::Track(new), _) => {
                    let (resolved, requests) = ops::resolve(graph, &new.workbook).await;
                    let mut report = Report { requests, ..Report::default() };
                    let inserted = match (resolved, &new.session_id) {
                        (Ok(workbook), Some(id)) => {
                            let mut session = new.clone().into_tracked(id.clone(), clock.now());
                            session.workbook = workbook;
                            session.owner = graph.owner().await;
                            Some(store.insert(session, Vec::new()).await)
                        }
                        (Err(failure), _) => {
                            report.failure = Some(failure);
                            None
                        }
                        // `request` refuses a track without an id before it gets here.
                        (Ok(_), None) => None,
                    };
                    (report, inserted)
                }
                // The session went away between the dispatcher's check and here: nothing to do.
                (Work::Pass { .. }, _) | (_, None) => (Report::default(), None),
            };
            Done::Job { id, job: Box::new(job), report: Box::new(report), inserted }
        });
        self.running.insert(task.id(), (Some(id), key));
    }

    /// Refreshes on different workbooks, sent together (`ops::refresh_group`).
    fn start_group(&mut self, group: Vec<Ticket<Job>>, probe: bool, now: Instant) {
        let mut calls = Vec::with_capacity(group.len());
        let mut members = Vec::with_capacity(group.len());
        for Ticket { id, payload: mut job, .. } in group {
            let Some(key) = job.key() else { continue };
            let Some(entry) = self.entries.get_mut(&key) else {
                // `accept` saw the session a moment ago; should it be gone, the call is simply not made.
                self.dispatcher.finish(id, now, 0, Verdict::Other, 0.0);
                job.answer(&Err(EngineError::NotFound));
                continue;
            };
            entry.busy = Some(id);
            entry.late = late_by(&job, now);
            calls.push((id, job, entry.session.clone()));
            members.push((id, key));
            self.emit(Event::Started { key, kind: super::JobKind::Refresh });
        }
        if calls.is_empty() {
            return;
        }
        let graph = self.ctx.graph.clone();
        let clock = self.ctx.clock.clone();
        let task = self.tasks.spawn(async move {
            let sessions: Vec<&TrackedSession> = calls.iter().map(|(_, _, s)| &**s).collect();
            let result = ops::refresh_group(&*graph, &sessions, probe, &clock).await;
            Done::Group { calls: calls.into_iter().map(|(id, job, _)| (id, job)).collect(), result }
        });
        self.groups.insert(task.id(), members);
    }

    pub(super) fn group_done(&mut self, calls: Vec<(JobId, Job)>, result: ops::GroupResult) {
        let now = Instant::now();
        let first = calls.first().and_then(|(_, job)| job.key()).and_then(|k| Some(k).zip(self.entries.get(&k)));
        let probed = match (&result.probe, first) {
            (Some(probe), Some((key, entry))) => {
                let expiry = self.settings.defaults.expiry(entry.session.mode);
                let name = entry.session.name.clone();
                self.batching.probed(probe, key, &name, expiry, now)
            }
            _ => None,
        };
        let batched = result.batch == ops::Batch::Answered;
        let mut notes = vec![
            probed,
            match &result.batch {
                ops::Batch::NotSent => None,
                ops::Batch::Answered => {
                    self.batching.answered();
                    None
                }
                ops::Batch::DidNotWork(why) => self.batching.refused(why),
                ops::Batch::Unanswered(why) => self.batching.unanswered(why),
            },
        ];
        let wall = self.ctx.clock.now();
        for ((id, job), report) in calls.into_iter().zip(result.reports) {
            let key = job.key();
            let mut kept_since = None;
            if let Some(entry) = key.and_then(|k| self.entries.get(&k)) {
                kept_since = entry.batched_since;
                // Kept alive by batches alone, and found expired within its idle expiry of the
                // last of them: batches do not keep sessions alive here.
                let expiry = self.settings.defaults.expiry(entry.session.mode);
                let ago = entry.session.last_refresh.map(|at| crate::time::until(at, wall));
                if batched
                    && kept_since.is_some()
                    && report.failure.as_ref().is_some_and(|f| f.class() == ErrorClass::Expired)
                    && let Some(ago) = ago.filter(|ago| *ago < expiry)
                {
                    notes.push(self.batching.expired_in_batch(&entry.session.name, ago));
                }
            }
            let worked = report.failure.is_none();
            self.job_done(id, job, report, None);
            if batched
                && worked
                && let Some(entry) = key.and_then(|k| self.entries.get_mut(&k))
            {
                entry.batched_since = Some(kept_since.unwrap_or(now));
            }
        }
        for note in notes.into_iter().flatten() {
            self.note(note);
        }
    }

    /// How refreshes travel changed: said in the log and to the front ends.
    fn note(&self, note: String) {
        tracing::info!("{note}");
        self.emit(Event::Note(note));
    }

    pub(super) fn job_done(
        &mut self,
        id: JobId,
        mut job: Job,
        report: Report,
        inserted: Option<Result<TrackedSession, StoreError>>,
    ) {
        let now = Instant::now();
        let failure = report.failure.as_ref();
        let answered = failure.is_none_or(|f| f.http_status().is_some() || matches!(f, Failure::Auth { .. }));
        let verdict = Verdict::of(failure.map(Failure::class), failure.and_then(Failure::retry_after), answered);
        if self.dispatcher.finish(id, now, report.requests, verdict, self.rng.f64()) {
            self.asked_since_holds = true;
            self.report_holds();
        }
        self.share_holds(now);
        if self.batching.is_check(id) {
            let checked = job
                .key()
                .and_then(|k| self.entries.get(&k))
                .and_then(|e| Some(e.session.name.clone()).zip(e.batched_since));
            match checked {
                Some((name, since)) => {
                    let alone = now.saturating_duration_since(since);
                    if let Some(note) = self.batching.checked(&name, alone, failure.map(Failure::class), now) {
                        self.note(note);
                    }
                }
                None => self.batching.check_lost(id),
            }
        }
        if job.may_retry()
            && let Some(failure) = failure
            && let Some(retry) =
                manual_retry(failure.class(), failure.http_status(), failure.retry_after(), job.attempt, self.rng.f64())
        {
            self.retry(job, &report, retry, now);
            return;
        }
        match &job.work {
            Work::Refresh { key, .. } | Work::Close { key } | Work::Recreate { key, .. } => {
                let key = *key;
                self.session_call_done(key, job, report)
            }
            Work::Create(new) => match (inserted, &report.new_session_id) {
                (Some(Ok(session)), _) => self.inserted(std::mem::take(&mut job.waiters), Ok(session)),
                (Some(Err(why)), Some(id)) => {
                    // Nothing may be left open at Graph that nothing tracks: close it.
                    let mut orphan = new.clone().into_tracked(id.clone(), self.ctx.clock.now());
                    report.apply_to(&mut orphan);
                    tracing::warn!(session = %new.name, error = %why, "a created session could not be stored; closing it");
                    let work = Work::CloseOrphan { name: new.name.clone(), session: Box::new(orphan), why };
                    let mut close = Job::new(work, std::mem::take(&mut job.waiters));
                    close.intent = job.intent;
                    self.submit(close);
                }
                _ => {
                    self.log_failures(&new.name, &report);
                    let error = report.failure.clone().map_or(
                        EngineError::Internal("a create ended without a session id"),
                        EngineError::from_failure,
                    );
                    job.answer(&Err(error));
                }
            },
            Work::Track(new) => match inserted {
                Some(result) => self.inserted(std::mem::take(&mut job.waiters), result),
                None => {
                    let workbook = new.workbook.to_string();
                    let answer = match report.failure.clone() {
                        Some(failure) => Err(EngineError::Unresolved { workbook, failure: Box::new(failure) }),
                        None => Err(EngineError::Refused("no session id to track".into())),
                    };
                    job.answer(&answer);
                }
            },
            Work::CloseOrphan { session, why, .. } => {
                if let Some(intent) = job.intent {
                    self.store.write(Write::Created { id: intent });
                }
                let error = EngineError::Orphaned {
                    why: why.clone(),
                    closed: report.failure.clone().map(Box::new),
                    session_id: session.session_id.clone(),
                };
                job.answer(&Err(error));
            }
            // Turns end through `turn_done`, never as a call the engine made.
            Work::Pass { .. } => job.answer(&Err(EngineError::Internal("a turn ended as a call"))),
        }
    }

    /// Records what happened, then tries the call again; whoever waits hears only the last word,
    /// and that it is tried again.
    fn retry(&mut self, mut job: Job, report: &Report, retry: Retry, now: Instant) {
        // A creation that failed is over; the next attempt writes its own down.
        if let Some(intent) = job.intent.take() {
            self.store.write(Write::Created { id: intent });
        }
        if let Some(key) = job.key() {
            self.record(key, report);
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.busy = None;
            }
        }
        tracing::info!(
            call = job.kind().verb(),
            attempt = job.attempt + 1,
            "trying again after a {}",
            report.failure.as_ref().and_then(Failure::http_status).map_or("failure".into(), |s| s.to_string())
        );
        let (name, lane) = subject(&self.entries, &job)
            .map(|(name, workbook)| (name.to_string(), workbook.to_string()))
            .unwrap_or_default();
        let after = match retry {
            Retry::Now => {
                self.dispatcher.held_until(&lane).map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
            }
            Retry::After(pause) => pause,
        };
        self.emit(Event::Retrying { kind: job.kind(), name, attempt: job.attempt + 1, after });
        let key = job.key();
        let mut again = job;
        again.attempt += 1;
        match retry {
            Retry::Now => self.submit(again),
            Retry::After(pause) => {
                // Marked as queued while it waits, so that another ask joins it.
                if let Some(entry) = key.and_then(|k| self.entries.get_mut(&k)) {
                    entry.queued |= again.bit();
                }
                self.later_seq += 1;
                self.later.insert((instant_after(pause), self.later_seq), again);
            }
        }
        if let Some(key) = key {
            self.run_parked(key);
        }
    }

    /// Writes a report's outcomes and the session's new state, and tells the front ends.
    pub(super) fn record(&mut self, key: SessionKey, report: &Report) {
        let Some(entry) = self.entries.get_mut(&key) else { return };
        report.apply_to(Arc::make_mut(&mut entry.session));
        let late = entry.late.take();
        let session = entry.session.clone();
        for write in report.records(&session) {
            self.store.write(write);
        }
        self.log_failures(&session.name, report);
        for (i, outcome) in report.outcomes.iter().enumerate() {
            let late = if i == 0 { late } else { None };
            self.emit(Event::Outcome { key, name: session.name.clone(), outcome: outcome.clone(), late });
        }
        self.emit(Event::Changed(session));
    }

    /// What Microsoft support asks for: the ids of each failed request.
    fn log_failures(&self, name: &str, report: &Report) {
        for outcome in report.outcomes.iter().filter(|o| o.kind != OutcomeKind::Ok) {
            tracing::warn!(session = %name, action = outcome.action.as_str(), kind = outcome.kind.as_str(),
                http_status = ?outcome.http_status, codes = ?outcome.codes, request_id = ?outcome.request_id,
                client_request_id = ?outcome.client_request_id, "call failed");
        }
    }

    fn session_call_done(&mut self, key: SessionKey, mut job: Job, report: Report) {
        let Some(entry) = self.entries.get_mut(&key) else {
            job.answer(&Err(EngineError::NotFound));
            return;
        };
        // A call that worked outside a batch: batches alone no longer keep it alive
        // (`group_done` marks those that did).
        if report.failure.is_none() {
            entry.batched_since = None;
        }
        // A failure that belongs to this process, not to the session (its token refused, no
        // answer on its network), is this caller's to hear; the shared session's state, which a
        // keeper elsewhere may keep well, is not changed by it. The driver's own are the state.
        let own = !self.driving
            && report.failure.as_ref().is_some_and(|f| f.class() == ErrorClass::Auth || f.http_status().is_none());
        let was_closed = entry.session.status == Status::Closed;
        let was_damaged = entry.session.status == Status::Damaged;
        if own {
            if let Some(last) = report.outcomes.last() {
                Arc::make_mut(&mut entry.session).last_call = Some(last.into());
            }
        } else {
            report.apply_to(Arc::make_mut(&mut entry.session));
            // A closed session stays closed unless a new one replaces it.
            if was_closed && report.new_session_id.is_none() {
                Arc::make_mut(&mut entry.session).status = Status::Closed;
            }
        }
        // A row that could not be read whole is written whole again once a new session replaces
        // it: what could not be read was given its fallback, and the creation time is now.
        if was_damaged && report.new_session_id.is_some() {
            Arc::make_mut(&mut entry.session).created_at = self.ctx.clock.now();
        }
        let mut writes = if own { report.outcomes_only(&entry.session) } else { report.records(&entry.session) };
        if was_damaged && report.new_session_id.is_some() {
            writes.push(Write::Rewrite(Box::new((*entry.session).clone())));
        }
        // A recreation is over with the write that records it: in the same transaction.
        if let Some(intent) = job.intent.take() {
            writes.push(Write::Created { id: intent });
        }
        // What someone is told of, and a new session id before it is used or announced, is
        // committed durably first: a crash must not leave the id open at Graph and unknown here.
        if job.asked() || report.new_session_id.is_some() {
            let store = self.store.clone();
            let task = self.tasks.spawn(async move {
                let stored = store.write_acked(writes).await;
                Done::Recorded { key, job: Box::new(job), report: Box::new(report), stored }
            });
            self.running.insert(task.id(), (None, Some(key)));
            return;
        }
        for write in writes {
            self.store.write(write);
        }
        self.recorded(key, job, &report, Ok(()));
    }

    /// The rest of a call on a session, once its outcome is in the store: the watchers told, the
    /// asker answered, the session planned (or recreated, if it expired and may be).
    pub(super) fn recorded(&mut self, key: SessionKey, mut job: Job, report: &Report, stored: Result<(), StoreError>) {
        let Some(entry) = self.entries.get_mut(&key) else {
            job.answer(&Err(EngineError::NotFound));
            return;
        };
        entry.busy = None;
        let late = entry.late.take();
        let closing = entry.queued & queued::CLOSE != 0;
        let session = entry.session.clone();
        if report.new_session_id.is_some()
            && let Some(answered) = report.outcomes.last()
        {
            // How long a new session lived at Graph unknown to the store: a kill in this window
            // leaves it open (the next start names it).
            let window = crate::time::until(answered.at, self.ctx.clock.now());
            tracing::info!(session = %session.name, window_ms = window.as_millis() as u64, stored = stored.is_ok(), "a new session id is in the store");
        }
        self.log_failures(&session.name, report);
        for (i, outcome) in report.outcomes.iter().enumerate() {
            let late = if i == 0 { late } else { None };
            self.emit(Event::Outcome { key, name: session.name.clone(), outcome: outcome.clone(), late });
        }
        self.emit(Event::Changed(session.clone()));
        if let Err(e) = &stored {
            tracing::error!(session = %session.name, error = %e, "the outcome of a call could not be stored");
            self.emit(Event::Error(format!("store: {e}")));
        }
        let class = report.failure.as_ref().map(Failure::class);
        let refresh = matches!(job.work, Work::Refresh { .. });
        if refresh {
            self.failure_rate.record(report.failure.is_some());
        }
        // An expired session that may be recreated is, at once, unless it is being closed;
        // whoever asked for the refresh hears how the recreation went.
        if refresh && class == Some(ErrorClass::Expired) && session.recreate && !closing {
            tracing::info!(session = %session.name, "session expired; creating a new one as allowed");
            let mut recreate = Job::keepers(Work::Recreate { key, expired: None });
            recreate.waiters = std::mem::take(&mut job.waiters);
            self.submit(recreate);
            self.run_parked(key);
            return;
        }
        let answer: Answer = match (report.failure.clone(), stored) {
            (Some(failure), _) => Err(EngineError::from_failure(failure)),
            (None, Err(e)) => Err(EngineError::Store(e)),
            (None, Ok(())) => Ok(Reply::Session(session.clone())),
        };
        job.answer(&answer);
        if matches!(job.work, Work::Close { .. }) && class.is_none() {
            self.schedule.cancel(key);
            self.emit(Event::Scheduled { key, at: None });
        } else {
            // The one rule, then the hold on this workbook, if Graph asked to wait.
            self.plan_from_state(key);
        }
        self.run_parked(key);
    }
}
