//! Turns on a workbook for calls the engine does not make itself (the proxy's callers): a turn
//! waits in the workbook's lane like any call, so one workbook never has two calls at once and
//! a `Retry-After` holds everyone back alike; it is handed out when it may start, and it ends
//! when its holder says how the call went (or drops it). A call that worked on a tracked session
//! counts as activity: the session's next refresh moves later (docs/graph.md, "Sessions").

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dispatch::JobId;
use super::handle::{EngineError, Reply, Waiter};
use super::jobs::{Job, Work};
use super::messages::{Choice, Chosen, Passed, Turn, TurnAsk};
use super::ops::Report;
use super::policy::Verdict;
use super::{Done, Engine};
use crate::graph::ErrorClass;
use crate::session::{Action, Outcome, OutcomeKind, SessionKey, Status, WorkbookRef};

/// Activity closer together than this on one session is one line of history, not one a call.
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// The one live session tracked on `workbook`, or why there is none to choose.
fn only_live<'a>(
    mut sessions: impl Iterator<Item = &'a crate::session::TrackedSession>,
    workbook: &WorkbookRef,
) -> Result<SessionKey, EngineError> {
    // An expired session that may not be recreated is no use to anyone's call either.
    let usable = |s: &&crate::session::TrackedSession| {
        &s.workbook == workbook
            && !matches!(s.status, Status::Closed | Status::Dead | Status::Damaged)
            && (s.status != Status::Expired || s.recreate)
    };
    let Some(first) = sessions.by_ref().find(usable) else {
        return Err(EngineError::NoSession { workbook: workbook.to_string(), names: Vec::new() });
    };
    let others: Vec<String> = sessions.filter(usable).map(|s| s.name.clone()).collect();
    if others.is_empty() {
        return Ok(first.key);
    }
    let mut names = others;
    names.push(first.name.clone());
    names.sort();
    Err(EngineError::NoSession { workbook: workbook.to_string(), names })
}

impl Engine {
    /// Queues a turn on the workbook, after choosing its session.
    pub(super) fn ask_turn(&mut self, ask: TurnAsk, waiter: Waiter) {
        let key = match &ask.choice {
            Choice::Without => None,
            Choice::ById(id) => self.entries.values().find(|e| &e.session.session_id == id).map(|e| e.session.key),
            Choice::OnlyLive => match only_live(self.entries.values().map(|e| &*e.session), &ask.workbook) {
                Ok(key) => Some(key),
                Err(why) => return waiter.answer(Err(why)),
            },
            Choice::Named(name) => {
                let found = self.entries.values().find(|e| &e.session.name == name).map(|e| &e.session);
                match found {
                    None => return waiter.answer(Err(EngineError::NotFound)),
                    Some(s) if s.workbook != ask.workbook => {
                        return waiter.answer(Err(EngineError::Refused(format!(
                            "{name} is on {}, not on {}",
                            s.workbook, ask.workbook
                        ))));
                    }
                    Some(s) if matches!(s.status, Status::Closed) => {
                        return waiter.answer(Err(EngineError::Closed { name: name.clone() }));
                    }
                    Some(s) if matches!(s.status, Status::Damaged) => {
                        return waiter.answer(Err(EngineError::Damaged { name: name.clone() }));
                    }
                    Some(s) => Some(s.key),
                }
            }
        };
        self.submit(Job::new(Work::Pass { key, workbook: ask.workbook }, vec![waiter]));
    }

    /// The turn may start: its holder hears so, and the lane stays taken until it says how the
    /// call went.
    pub(super) fn start_turn(&mut self, id: JobId, mut job: Job) {
        let Work::Pass { key, .. } = &job.work else { return };
        let key = *key;
        let session = key.and_then(|k| self.entries.get(&k)).map(|e| Chosen {
            key: e.session.key,
            name: e.session.name.clone(),
            id: e.session.session_id.clone(),
            mode: e.session.mode,
            recreate: e.session.recreate,
        });
        if key.is_some() && session.is_none() {
            job.answer(&Err(EngineError::NotFound));
            self.dispatcher.finish(id, Instant::now(), 0, Verdict::Ok, 0.0);
            return;
        }
        let (end, mut ended) = mpsc::channel(1);
        let turn = Turn { session, end };
        job.answer(&Ok(Reply::Turn(turn)));
        let task = self.tasks.spawn(async move {
            let passed = ended.recv().await;
            Done::Passed { id, key, passed }
        });
        self.running.insert(task.id(), (Some(id), None));
    }

    /// A turn is over: the lane is free, a hold or a throttled answer is heeded as for the
    /// engine's own calls, a call that worked on a session is activity, and one that found the
    /// session expired or dead says so of it.
    pub(super) fn turn_done(&mut self, id: JobId, key: Option<SessionKey>, passed: Option<Passed>) {
        let now = Instant::now();
        let passed = passed.unwrap_or_default();
        let (verdict, requests) = if passed.sent {
            (Verdict::of(passed.class, passed.retry_after, passed.http_status.is_some()), 1)
        } else {
            (Verdict::Other, 0)
        };
        if self.dispatcher.finish(id, now, requests, verdict, self.rng.f64()) {
            self.asked_since_holds = true;
            self.report_holds();
        }
        let worked = passed.http_status.is_some_and(|s| (200..300).contains(&s));
        let kind = match passed.class {
            None if worked => OutcomeKind::Ok,
            Some(ErrorClass::Expired) => OutcomeKind::Expired,
            Some(ErrorClass::Dead) => OutcomeKind::Dead,
            // The caller's own mistakes and Graph's passing troubles say nothing of the session.
            _ => return,
        };
        let Some(key) = key else { return };
        let at = self.ctx.clock.now();
        let Some(entry) = self.entries.get_mut(&key) else { return };
        let recent = entry.called_at.is_some_and(|t| now.saturating_duration_since(t) < ACTIVITY_EVERY);
        if kind == OutcomeKind::Ok && recent && entry.session.status == Status::Ok && !passed.closed {
            return;
        }
        entry.called_at = Some(now);
        let action = if kind == OutcomeKind::Ok && passed.closed { Action::Close } else { Action::Call };
        let outcome = Outcome {
            at,
            action,
            kind,
            latency_ms: u64::try_from(passed.latency.as_millis()).unwrap_or(u64::MAX),
            http_status: passed.http_status,
            codes: passed.codes,
            request_id: passed.request_id,
            client_request_id: passed.client_request_id,
            message: None,
            by: Some(crate::store::this_process()),
        };
        let report = Report { outcomes: vec![outcome], ..Report::default() };
        self.record(key, &report);
        if self.entries.get(&key).is_some_and(|e| e.busy.is_none()) {
            self.plan_from_state(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Mode, SessionId, TrackedSession};
    use chrono::Utc;

    fn session(name: &str, workbook: &str, status: Status) -> TrackedSession {
        let workbook = WorkbookRef::parse(workbook).unwrap_or_else(|_| WorkbookRef::unreadable());
        let id = SessionId::new("id").unwrap_or_else(|_| unreachable!());
        let mut s = TrackedSession::new(name.into(), workbook, id, Mode::Persistent, Utc::now());
        s.status = status;
        s.key = i64::from(name.as_bytes()[0]);
        s
    }

    #[test]
    fn the_only_live_session_is_chosen_and_two_are_named() {
        let w1 = WorkbookRef::parse("me/drive/items/W1").unwrap_or_else(|_| unreachable!());
        let one = [session("a", "me/drive/items/W1", Status::Ok), session("b", "me/drive/items/W1", Status::Closed)];
        assert_eq!(only_live(one.iter(), &w1).ok(), Some(one[0].key));
        let mut expired = session("a", "me/drive/items/W1", Status::Expired);
        // Expired and not to be recreated: no use to a call, so not counted.
        let two = [session("b", "me/drive/items/W1", Status::Ok), expired.clone()];
        assert_eq!(only_live(two.iter(), &w1).ok(), Some(two[0].key));
        expired.recreate = true;
        let two = [session("b", "me/drive/items/W1", Status::Ok), expired];
        match only_live(two.iter(), &w1) {
            Err(EngineError::NoSession { names, .. }) => assert_eq!(names, ["a", "b"]),
            other => panic!("expected two names, got {other:?}"),
        }
        let none = [session("c", "me/drive/items/W2", Status::Ok)];
        assert!(matches!(only_live(none.iter(), &w1), Err(EngineError::NoSession { names, .. }) if names.is_empty()));
    }
}
