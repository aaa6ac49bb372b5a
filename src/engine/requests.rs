//! What front ends ask for, turned into jobs: a Graph call queued in the dispatcher (joining one
//! of the same kind already queued for the session), or a store-only change that waits for a
//! call on its session to end. Every ask is answered exactly once.

use std::sync::Arc;

use super::dispatch::Urgency;
use super::handle::{Answer, EngineError, Reply, Request, Waiter, answer_all};
use super::jobs::{Entry, Job, Local, Work};
use super::messages::Event;
use super::{Done, Engine};
use crate::session::{NewSession, SessionKey, SettingsChange, Status, TrackedSession, check_interval, validate_name};
use crate::store::{KEPT_OUTCOMES, StoreError, Write};

/// The engine's side of the one rule for new sessions: what a `NewSession` guarantees, checked
/// again because a front end may have built one by hand.
/// How many recent failures a `Problems` reply carries: more than a log view shows at once.
const PROBLEMS_SHOWN: usize = 200;

fn check_new(new: &NewSession) -> Result<(), EngineError> {
    validate_name(&new.name).map_err(|e| EngineError::Refused(e.to_string()))?;
    check_interval(new.interval).map_err(EngineError::Refused)
}

impl Engine {
    pub(super) fn request(&mut self, request: Request, waiter: Waiter) {
        if self.loading && !matches!(request, Request::SignIn | Request::CancelSignIn) {
            self.waiting.push((request, waiter));
            return;
        }
        // A store opened read-only can be shown, not changed: nothing is sent to Graph whose
        // answer could not be recorded.
        let reads =
            matches!(request, Request::History(_) | Request::Problems | Request::SignIn | Request::CancelSignIn);
        if self.store.read_only() && !reads {
            let store = self.store.location().to_string();
            waiter.answer(Err(EngineError::Store(StoreError::ReadOnly { store })));
            return;
        }
        match request {
            Request::Refresh(key) => self.ask_call(Work::Refresh { key, due: None }, waiter),
            Request::Close(key) => self.ask_call(Work::Close { key }, waiter),
            Request::Recreate(key) => self.ask_call(Work::Recreate { key, expired: None }, waiter),
            Request::RecreateExpired { key, expired } => {
                self.ask_call(Work::Recreate { key, expired: Some(expired) }, waiter)
            }
            Request::Create(new) => match check_new(&new) {
                Err(why) => waiter.answer(Err(why)),
                Ok(()) => self.submit(Job::new(Work::Create(new), vec![waiter])),
            },
            Request::Track(new) => match (check_new(&new), new.session_id.clone()) {
                (Err(why), _) => waiter.answer(Err(why)),
                (Ok(()), None) => waiter.answer(Err(EngineError::Refused("no session id to track".into()))),
                (Ok(()), Some(_)) if new.workbook.is_by_path() => self.submit(Job::new(Work::Track(new), vec![waiter])),
                (Ok(()), Some(id)) => {
                    // Nothing to ask Graph: straight to the store.
                    let mut session = new.into_tracked(id, self.ctx.clock.now());
                    let (store, graph) = (self.store.clone(), self.ctx.graph.clone());
                    let waiters = vec![waiter];
                    let task = self.tasks.spawn(async move {
                        session.owner = graph.owner().await;
                        let result = store.insert(session, Vec::new()).await;
                        Done::Inserted { waiters, result }
                    });
                    self.running.insert(task.id(), (None, None));
                }
            },
            Request::Edit { key, change } => match change.check() {
                Err(why) => waiter.answer(Err(EngineError::Refused(why))),
                Ok(()) => self.local(key, Local::Edit(change), vec![waiter]),
            },
            Request::SetAuto { key, auto } => self.local(key, Local::SetAuto(auto), vec![waiter]),
            Request::Remove(key) => self.local(key, Local::Remove, vec![waiter]),
            Request::PauseAll(paused) => {
                let store = self.store.clone();
                let waiters = vec![waiter];
                let task = self.tasks.spawn(async move {
                    let result = store.write_acked(vec![Write::Paused(paused)]).await;
                    Done::Paused { paused, waiters, result }
                });
                self.running.insert(task.id(), (None, None));
            }
            Request::History(key) => {
                let store = self.store.clone();
                let task = self.tasks.spawn(async move {
                    let result = store.history(key, KEPT_OUTCOMES).await.map(Reply::History);
                    Done::Read { waiter, result }
                });
                self.running.insert(task.id(), (None, None));
            }
            Request::Problems => {
                let store = self.store.clone();
                let task = self.tasks.spawn(async move {
                    let result = store.problems(PROBLEMS_SHOWN).await.map(Reply::Problems);
                    Done::Read { waiter, result }
                });
                self.running.insert(task.id(), (None, None));
            }
            Request::Turn(ask) => self.ask_turn(ask, waiter),
            Request::SignIn => self.start_sign_in(waiter),
            Request::CancelSignIn => {
                self.cancel_sign_in();
                waiter.answer(Ok(Reply::Done));
            }
        }
    }

    fn ask_call(&mut self, work: Work, waiter: Waiter) {
        self.submit(Job::new(work, vec![waiter]));
    }

    /// Queues a call. A call of the same kind queued already for the session is not queued
    /// twice: whoever waits for this one joins it, and it moves up to the asker's urgency.
    pub(super) fn submit(&mut self, mut job: Job) {
        self.asked_since_holds |= job.asked();
        let Some(lane) = super::jobs::subject(&self.entries, &job).map(|(_, workbook)| workbook.to_string()) else {
            job.answer(&Err(EngineError::NotFound));
            return;
        };
        let urgency = match job.key().and_then(|k| self.entries.get(&k)) {
            Some(entry) if !job.asked() => self.urgency_of(&entry.session),
            _ => Urgency::Now,
        };
        let (key, bit) = (job.key(), job.bit());
        let queued = key.and_then(|k| self.entries.get(&k)).is_some_and(|e| e.queued & bit != 0);
        if queued && !job.asked() {
            // The keeper's own call finds one queued: that one is the keeper's too now.
            let due = match job.work {
                Work::Refresh { due, .. } => due,
                _ => None,
            };
            let same = |other: &Job| other.key() == key && other.bit() == bit;
            if job.keeper
                && !self.dispatcher.amend(&lane, same, |other: &mut Job| other.keep(due), urgency)
                && let Some(other) = self.later.values_mut().find(|other| same(other))
            {
                other.keep(due);
            }
            return;
        }
        if queued {
            let same = |other: &Job| other.key() == key && other.bit() == bit;
            let mut waiters = Some(std::mem::take(&mut job.waiters));
            let mut join = |other: &mut Job| other.waiters.extend(waiters.take().unwrap_or_default());
            if self.dispatcher.amend(&lane, same, &mut join, urgency) {
                return;
            }
            // A retry waiting out a pause: it goes when the pause ends.
            if let Some(other) = self.later.values_mut().find(|other| same(other)) {
                join(other);
                return;
            }
            // Not where the mark said: queued anew rather than lost.
            tracing::warn!(session = ?key, "a queued call was not found; queueing another");
            job.waiters = waiters.take().unwrap_or_default();
        }
        if let Some(entry) = key.and_then(|k| self.entries.get_mut(&k)) {
            entry.queued |= bit;
        }
        self.dispatcher.submit(&lane, urgency, job);
    }

    /// Sessions that failed for want of a token are tried again (a sign-in succeeded).
    pub(super) fn retry_signed_out(&mut self) {
        let waiting: Vec<SessionKey> =
            self.entries.values().filter(|e| e.session.status == Status::Auth).map(|e| e.session.key).collect();
        for key in waiting {
            self.submit(Job::keepers(Work::Refresh { key, due: Some(tokio::time::Instant::now()) }));
        }
    }

    // ---- store-only changes ---------------------------------------------------------------------

    pub(super) fn local(&mut self, key: SessionKey, op: Local, waiters: Vec<Waiter>) {
        let Some(entry) = self.entries.get_mut(&key) else {
            answer_all(waiters, &Err(EngineError::NotFound));
            return;
        };
        if entry.busy.is_some() {
            entry.parked.push_back((op, waiters));
            return;
        }
        let name = entry.session.name.clone();
        let write = match &op {
            Local::Edit(change) => Write::Settings { key, change: change.clone() },
            Local::SetAuto(auto) => {
                Write::Settings { key, change: SettingsChange { auto: Some(*auto), ..SettingsChange::default() } }
            }
            Local::Remove => {
                entry.removing = true;
                Write::Remove { key }
            }
        };
        if matches!(op, Local::Remove) {
            self.schedule.cancel(key);
        }
        let store = self.store.clone();
        let task = self.tasks.spawn(async move {
            let result = store.write_acked(vec![write]).await;
            Done::Local { key, name, op, waiters, result }
        });
        self.running.insert(task.id(), (None, Some(key)));
    }

    pub(super) fn run_parked(&mut self, key: SessionKey) {
        let parked: Vec<(Local, Vec<Waiter>)> = match self.entries.get_mut(&key) {
            Some(entry) => entry.parked.drain(..).collect(),
            None => return,
        };
        for (op, waiters) in parked {
            self.local(key, op, waiters);
        }
    }

    pub(super) fn local_done(
        &mut self,
        key: SessionKey,
        name: &str,
        op: Local,
        waiters: Vec<Waiter>,
        result: Result<(), StoreError>,
    ) {
        if let Err(e) = result {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.removing = false;
            }
            if matches!(op, Local::Remove) {
                self.plan_from_state(key);
            }
            answer_all(waiters, &Err(EngineError::Store(e)));
            return;
        }
        let answer: Answer = match op {
            Local::Remove => {
                self.schedule.forget(key);
                if self.entries.remove(&key).is_some() {
                    self.emit(Event::Removed { key, name: name.to_string() });
                }
                Ok(Reply::Done)
            }
            Local::Edit(change) => self.adopt_settings(key, |s| change.apply_to(s)),
            Local::SetAuto(auto) => self.adopt_settings(key, |s| s.auto = auto),
        };
        answer_all(waiters, &answer);
    }

    fn adopt_settings(&mut self, key: SessionKey, change: impl FnOnce(&mut TrackedSession)) -> Answer {
        let Some(entry) = self.entries.get_mut(&key) else { return Err(EngineError::NotFound) };
        change(Arc::make_mut(&mut entry.session));
        let session = entry.session.clone();
        self.plan_from_state(key);
        self.emit(Event::Changed(session.clone()));
        Ok(Reply::Session(session))
    }

    /// A session was added to the store (tracked, or created and stored).
    pub(super) fn inserted(&mut self, waiters: Vec<Waiter>, result: Result<TrackedSession, StoreError>) {
        let answer = match result {
            Ok(session) => {
                let key = session.key;
                let shared = match self.entries.entry(key) {
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        let session = Arc::new(session);
                        slot.insert(Entry::new(session.clone()));
                        self.plan_from_state(key);
                        self.emit(Event::Added(session.clone()));
                        session
                    }
                    std::collections::hash_map::Entry::Occupied(known) => known.get().session.clone(),
                };
                Ok(Reply::Session(shared))
            }
            Err(e) => Err(EngineError::Store(e)),
        };
        answer_all(waiters, &answer);
    }

    /// The sessions an engine started without have been read: plan them, tell the front ends,
    /// and do what was asked meanwhile.
    pub(super) fn loaded(&mut self, result: Result<Vec<TrackedSession>, StoreError>) {
        self.loading = false;
        match result {
            Ok(sessions) => {
                let mut shared = Vec::with_capacity(sessions.len());
                for session in sessions {
                    let key = session.key;
                    // A session other processes wrote meanwhile is known already; keep that copy.
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.entries.entry(key) {
                        let session = Arc::new(session);
                        slot.insert(Entry::new(session.clone()));
                        self.plan_from_state(key);
                        shared.push(session);
                    }
                }
                self.emit(Event::Loaded(shared));
            }
            Err(e) => self.emit(Event::Error(format!("cannot read the sessions: {e}"))),
        }
        for (request, waiter) in std::mem::take(&mut self.waiting) {
            self.request(request, waiter);
        }
    }
}
