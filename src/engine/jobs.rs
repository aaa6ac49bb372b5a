//! What the engine keeps per session (`Entry`), the calls that wait in the dispatcher (`Job`),
//! and the dispatcher's last word on a call about to start (`accept`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::handle::{Answer, EngineError, Waiter, answer_all};
use super::messages::JobKind;
use super::policy::MANUAL_RETRIES;
use crate::session::{NewSession, SessionId, SessionKey, SettingsChange, Status, TrackedSession, WorkbookRef};
use crate::store::{IntentId, StoreError};

/// Kinds of calls queued for a session, so that a second ask joins the first.
pub(super) mod queued {
    pub(crate) const REFRESH: u8 = 1;
    pub(crate) const CLOSE: u8 = 2;
    pub(crate) const RECREATE: u8 = 4;
}

/// A store-only change to a session; waits for a call on the session that is under way.
#[derive(Debug, Clone)]
pub(super) enum Local {
    Edit(SettingsChange),
    SetAuto(bool),
    Remove,
}

pub(super) struct Entry {
    /// Shared with the front ends' copies; changed through `Arc::make_mut`.
    pub(super) session: Arc<TrackedSession>,
    /// The call on this session that runs now.
    pub(super) busy: Option<super::dispatch::JobId>,
    pub(super) queued: u8,
    /// Store changes asked for while a call ran: done right after it, each with its asker.
    pub(super) parked: VecDeque<(Local, Vec<Waiter>)>,
    /// How late the running automatic refresh started.
    pub(super) late: Option<Duration>,
    /// Its removal is being written; nothing new starts on it.
    pub(super) removing: bool,
    /// Since when only `$batch` refreshes have kept it alive (`batching`'s audit looks at it).
    pub(super) batched_since: Option<Instant>,
    /// When a caller's call (the proxy's) was last recorded as its activity.
    pub(super) called_at: Option<Instant>,
}

impl Entry {
    pub(super) fn new(session: Arc<TrackedSession>) -> Self {
        Entry {
            session,
            busy: None,
            queued: 0,
            parked: VecDeque::new(),
            late: None,
            removing: false,
            batched_since: None,
            called_at: None,
        }
    }
}

/// A Graph call waiting in the dispatcher, with everyone waiting for it.
pub(super) struct Job {
    pub(super) work: Work,
    /// Retries so far of a call someone waits for.
    pub(super) attempt: u8,
    pub(super) waiters: Vec<Waiter>,
    /// The keeper wants it too, whoever else waits for it: it stays queued when they are told
    /// of a long hold, and it runs only while automatic refresh may.
    pub(super) keeper: bool,
    /// A creation written down before Graph was asked (`Write::Creating`), let go of with the
    /// write that records how it ended.
    pub(super) intent: Option<IntentId>,
}

pub(super) enum Work {
    /// `due` is set for automatic refreshes.
    Refresh {
        key: SessionKey,
        due: Option<Instant>,
    },
    Close {
        key: SessionKey,
    },
    Recreate {
        key: SessionKey,
        /// Only if the session still has this id: it expired under someone, who wants a live
        /// one, not a second new one when another asker's recreation got there first.
        expired: Option<SessionId>,
    },
    Create(NewSession),
    /// Tracking a by-path workbook: it is resolved first.
    Track(NewSession),
    /// A turn on a workbook for a caller's own call, with the session it goes with.
    Pass {
        key: Option<SessionKey>,
        workbook: WorkbookRef,
    },
    /// A session this engine created but could not store: closed so that nothing is left open.
    CloseOrphan {
        name: String,
        session: Box<TrackedSession>,
        why: StoreError,
    },
}

impl Job {
    /// A call someone asked for.
    pub(super) fn new(work: Work, waiters: Vec<Waiter>) -> Job {
        Job { work, attempt: 0, waiters, keeper: false, intent: None }
    }

    /// A call the keeper makes by itself.
    pub(super) fn keepers(work: Work) -> Job {
        Job { work, attempt: 0, waiters: Vec::new(), keeper: true, intent: None }
    }

    pub(super) fn key(&self) -> Option<SessionKey> {
        match &self.work {
            Work::Refresh { key, .. } | Work::Close { key } | Work::Recreate { key, .. } => Some(*key),
            _ => None,
        }
    }

    pub(super) fn kind(&self) -> JobKind {
        match &self.work {
            Work::Refresh { .. } => JobKind::Refresh,
            Work::Close { .. } => JobKind::Close,
            Work::Recreate { .. } => JobKind::Recreate,
            Work::Create(_) | Work::CloseOrphan { .. } => JobKind::Create,
            Work::Track(_) => JobKind::Track,
            Work::Pass { .. } => JobKind::Pass,
        }
    }

    /// Whether someone waits for it: then it goes before automatic work, is retried after a
    /// 429/503/504, and is told of a long hold rather than made to sit through it.
    pub(super) fn asked(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// Whether a failure may be tried again for whoever waits.
    pub(super) fn may_retry(&self) -> bool {
        self.asked()
            && !matches!(self.work, Work::CloseOrphan { .. } | Work::Pass { .. })
            && self.attempt < MANUAL_RETRIES
    }

    /// The keeper wants it as well: `due` is when it wanted it.
    pub(super) fn keep(&mut self, due: Option<Instant>) {
        self.keeper = true;
        if let Work::Refresh { due: mine @ None, .. } = &mut self.work {
            *mine = due;
        }
    }

    pub(super) fn bit(&self) -> u8 {
        match self.work {
            Work::Refresh { .. } => queued::REFRESH,
            Work::Close { .. } => queued::CLOSE,
            Work::Recreate { .. } => queued::RECREATE,
            _ => 0,
        }
    }

    /// Ends the job for everyone waiting.
    pub(super) fn answer(&mut self, answer: &Answer) {
        answer_all(std::mem::take(&mut self.waiters), answer);
    }
}

/// The session a job is about, by name, and the workbook it calls; `None` when its session is
/// no longer tracked.
pub(super) fn subject<'a>(entries: &'a HashMap<SessionKey, Entry>, job: &'a Job) -> Option<(&'a str, &'a WorkbookRef)> {
    match &job.work {
        Work::Create(new) | Work::Track(new) => Some((&new.name, &new.workbook)),
        Work::CloseOrphan { name, session, .. } => Some((name, &session.workbook)),
        Work::Pass { workbook, .. } => Some(("", workbook)),
        _ => job.key().and_then(|k| entries.get(&k)).map(|e| (e.session.name.as_str(), &e.session.workbook)),
    }
}

/// The dispatcher's last word on a candidate call: is its session still there and still wanting
/// it? A call that will not be made answers whoever waits for it.
pub(super) fn accept(entries: &mut HashMap<SessionKey, Entry>, auto_allowed: bool, job: &mut Job) -> bool {
    let Some(key) = job.key() else { return true };
    let Some(entry) = entries.get_mut(&key) else {
        job.answer(&Err(EngineError::NotFound));
        return false;
    };
    entry.queued &= !job.bit();
    if entry.removing {
        job.answer(&Err(EngineError::Removing));
        return false;
    }
    let session = &entry.session;
    let unreadable = session.workbook == WorkbookRef::unreadable();
    match &job.work {
        // A row that cannot be read whole is never called on as it is: only a new session on a
        // workbook that could be read replaces it.
        Work::Refresh { .. } | Work::Close { .. } if session.status == Status::Damaged => {
            job.answer(&Err(EngineError::Damaged { name: session.name.clone() }));
            false
        }
        Work::Recreate { .. } if unreadable => {
            job.answer(&Err(EngineError::Damaged { name: session.name.clone() }));
            false
        }
        Work::Refresh { .. } => {
            if session.status == Status::Closed {
                job.answer(&Err(EngineError::Closed { name: session.name.clone() }));
                return false;
            }
            // Someone asked for it, or the keeper wants it and may.
            job.asked() || (job.keeper && auto_allowed && session.is_kept_alive())
        }
        // Closing twice asks Graph nothing: the end wished for is there already.
        Work::Close { .. } if session.status == Status::Closed => {
            job.answer(&Ok(super::handle::Reply::Session(session.clone())));
            false
        }
        // Replaced already since it expired under the asker: that is what they wanted.
        Work::Recreate { expired: Some(stale), .. } if *stale != session.session_id && job.asked() => {
            job.answer(&Ok(super::handle::Reply::Session(session.clone())));
            false
        }
        // An expired session about to be closed is not recreated first.
        Work::Recreate { .. } if !job.asked() => entry.queued & queued::CLOSE == 0,
        _ => true,
    }
}
