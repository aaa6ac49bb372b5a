//! How front ends talk to the engine: a request, and exactly one typed reply for it
//! (`Handle::ask`); what changed, as a stream of events that any number of watchers subscribe to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::messages::{Event, JobKind};
use super::messages::{Turn, TurnAsk};
use super::ops::Failure;
use crate::graph::ErrorClass;
use crate::session::{NewSession, Outcome, SessionId, SessionKey, SettingsChange, TrackedSession};
use crate::store::StoreError;

/// What a front end asks of the engine.
#[derive(Debug, Clone)]
pub enum Request {
    Refresh(SessionKey),
    /// Create a session at Graph and track it.
    Create(NewSession),
    /// Track a session that exists (its id in the `NewSession`).
    Track(NewSession),
    /// Changes only the settings `change` names.
    Edit {
        key: SessionKey,
        change: SettingsChange,
    },
    SetAuto {
        key: SessionKey,
        auto: bool,
    },
    /// Pause or resume automatic refresh for the whole store, for every process on it.
    PauseAll(bool),
    Close(SessionKey),
    Remove(SessionKey),
    /// A new session on the same workbook, replacing the id.
    Recreate(SessionKey),
    /// A new session, unless the id `expired` was replaced already (then the session as it is):
    /// for a caller who found the session expired and wants a live one.
    RecreateExpired {
        key: SessionKey,
        expired: SessionId,
    },
    /// The stored outcomes of a session, newest first.
    History(SessionKey),
    /// The store's recent failed calls, whichever process met them.
    Problems,
    /// The device-code sign-in; its steps come as `Event::SignIn`.
    SignIn,
    CancelSignIn,
    /// A turn on a workbook for a call the asker makes itself (the proxy's callers).
    Turn(TurnAsk),
}

impl Request {
    pub fn kind(&self) -> JobKind {
        match self {
            Request::Refresh(_) => JobKind::Refresh,
            Request::Create(_) => JobKind::Create,
            Request::Track(_) => JobKind::Track,
            Request::Edit { .. } => JobKind::Edit,
            Request::SetAuto { .. } => JobKind::SetAuto,
            Request::PauseAll(_) => JobKind::Pause,
            Request::Close(_) => JobKind::Close,
            Request::Remove(_) => JobKind::Remove,
            Request::Recreate(_) | Request::RecreateExpired { .. } => JobKind::Recreate,
            Request::History(_) | Request::Problems => JobKind::History,
            Request::SignIn | Request::CancelSignIn => JobKind::SignIn,
            Request::Turn(_) => JobKind::Pass,
        }
    }

    /// The session the request is about, if one.
    pub fn key(&self) -> Option<SessionKey> {
        match self {
            Request::Refresh(key)
            | Request::Edit { key, .. }
            | Request::SetAuto { key, .. }
            | Request::Close(key)
            | Request::Remove(key)
            | Request::Recreate(key)
            | Request::RecreateExpired { key, .. }
            | Request::History(key) => Some(*key),
            _ => None,
        }
    }
}

/// What the engine answers when a request went well.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Done; nothing more to say.
    Done,
    /// The session as it is after the call (refresh, close, recreate, create, track, edit).
    Session(Arc<TrackedSession>),
    History(Vec<Outcome>),
    /// Recent failed calls, newest first, each with its session's name.
    Problems(Vec<(String, Outcome)>),
    /// Who signed in.
    SignedIn(String),
    /// The workbook is the asker's for one call now.
    Turn(Turn),
}

/// Why a request did not go well: what a front end decides on (exit codes, hints), never text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the session is no longer tracked")]
    NotFound,
    #[error("the session is being removed")]
    Removing,
    #[error("{name} is closed, so there is nothing to refresh")]
    Closed { name: String },
    /// Its stored row cannot be read whole: nothing is sent for it as it is.
    #[error("{name} cannot be read whole from the store, so nothing is sent for it")]
    Damaged { name: String },
    #[error("{0}")]
    Expired(Box<Failure>),
    #[error("{0}")]
    Dead(Box<Failure>),
    /// Graph asked to wait longer than anyone should wait for an answer, or kept throttling.
    #[error("{0}")]
    Throttled(Box<Failure>),
    /// The workbook is held back by an earlier `Retry-After` for `wait` more: not waited for.
    #[error("throttled: Graph asked to leave {workbook} alone for {} more; not waited for", crate::time::format_duration(*.wait))]
    Held { workbook: String, wait: Duration },
    #[error("{0}")]
    Unauthorized(Box<Failure>),
    #[error("{0}")]
    Failed(Box<Failure>),
    /// The request itself is not acceptable (a bad name or interval, no session id).
    #[error("{0}")]
    Refused(String),
    /// No tracked session can be chosen for a call on the workbook: none is live there, or
    /// `names` are, and the call did not say which.
    #[error("{}", no_session_text(.workbook, .names))]
    NoSession { workbook: String, names: Vec<String> },
    #[error("cannot resolve {workbook}: {failure}")]
    Unresolved { workbook: String, failure: Box<Failure> },
    #[error(transparent)]
    Store(StoreError),
    /// A session was created at Graph but could not be stored; it was closed again, or not.
    #[error("{}", orphan_text(.why, .closed, .session_id))]
    Orphaned { why: StoreError, closed: Option<Box<Failure>>, session_id: SessionId },
    #[error("signing in is not available here")]
    NoSignIn,
    #[error("{0}")]
    SignIn(String),
    #[error("cancelled")]
    Cancelled,
    #[error("the engine has stopped")]
    Stopped,
    /// Something the engine should never see happened; the log has more.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

fn no_session_text(workbook: &str, names: &[String]) -> String {
    if names.is_empty() {
        format!("no live session is tracked on {workbook}")
    } else {
        format!("{} sessions are tracked on {workbook} ({}); say which", names.len(), names.join(", "))
    }
}

fn orphan_text(why: &StoreError, closed: &Option<Box<Failure>>, id: &SessionId) -> String {
    match closed {
        None => format!("{why}; the session it opened at Graph was closed again"),
        Some(failure) => format!(
            "{why}; the session it opened at Graph could not be closed either ({failure}): it stays open until it expires; its id is {id}"
        ),
    }
}

impl EngineError {
    /// A failed call, as the error its class makes it.
    pub(crate) fn from_failure(failure: Failure) -> EngineError {
        let class = failure.class();
        let failure = Box::new(failure);
        match class {
            ErrorClass::Expired => EngineError::Expired(failure),
            ErrorClass::Dead => EngineError::Dead(failure),
            ErrorClass::Throttled => EngineError::Throttled(failure),
            ErrorClass::Auth => EngineError::Unauthorized(failure),
            ErrorClass::Transient | ErrorClass::Failed => EngineError::Failed(failure),
        }
    }

    /// One word for what became of the session, for a summary ("2 expired, 1 throttled").
    pub fn word(&self) -> &'static str {
        match self {
            EngineError::Expired(_) => "expired",
            EngineError::Dead(_) => "dead",
            EngineError::Throttled(_) | EngineError::Held { .. } => "throttled",
            EngineError::Unauthorized(_) => "not authorized",
            EngineError::Closed { .. } => "closed",
            EngineError::Damaged { .. } => "damaged",
            EngineError::NotFound | EngineError::Removing => "gone",
            EngineError::Store(_) => "not stored",
            EngineError::Refused(_) => "refused",
            _ => "failed",
        }
    }

    /// Whether the fault is in what was asked (exit 2) rather than in how it went (exit 1).
    pub(crate) fn is_bad_input(&self) -> bool {
        match self {
            EngineError::NotFound
            | EngineError::Closed { .. }
            | EngineError::Damaged { .. }
            | EngineError::Refused(_) => true,
            EngineError::Store(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

pub type Answer = Result<Reply, EngineError>;

/// One who waits for a job's end. Each is answered exactly once; one dropped unanswered (a bug,
/// or an engine that stopped) reads as `Stopped` at the asker's end.
pub(crate) struct Waiter(pub(crate) oneshot::Sender<Answer>);

impl Waiter {
    pub(crate) fn answer(self, answer: Answer) {
        let _ = self.0.send(answer);
    }
}

/// Answers every waiter of a job with the same answer.
pub(crate) fn answer_all(waiters: Vec<Waiter>, answer: &Answer) {
    for waiter in waiters {
        waiter.answer(answer.clone());
    }
}

/// What reaches the engine's task.
pub(crate) enum Inbox {
    Ask(Request, oneshot::Sender<Answer>),
    Shutdown,
}

/// Everyone who watches the engine's events.
#[derive(Default)]
pub(crate) struct Hub {
    watchers: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
}

impl Hub {
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.push(tx);
        }
        rx
    }

    pub(crate) fn emit(&self, event: Event) {
        let Ok(mut watchers) = self.watchers.lock() else { return };
        match watchers.len() {
            0 => {}
            1 => {
                if watchers[0].send(event).is_err() {
                    watchers.clear();
                }
            }
            _ => watchers.retain(|w| w.send(event.clone()).is_ok()),
        }
    }
}

/// A front end's way to the engine; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inbox: mpsc::UnboundedSender<Inbox>,
    pub(crate) hub: Arc<Hub>,
}

impl Handle {
    /// Sends `request` now; the returned future is its one reply.
    pub fn send(&self, request: Request) -> impl Future<Output = Answer> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.inbox.send(Inbox::Ask(request, reply)).is_ok();
        async move {
            if !sent {
                return Err(EngineError::Stopped);
            }
            answer.await.unwrap_or(Err(EngineError::Stopped))
        }
    }

    /// Sends `request` and waits for its reply.
    pub async fn ask(&self, request: Request) -> Answer {
        self.send(request).await
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        self.hub.subscribe()
    }

    /// Asks the engine to stop: nothing new starts, running calls get a moment, the store
    /// flushes, then `Event::Stopped`.
    pub fn shutdown(&self) {
        let _ = self.inbox.send(Inbox::Shutdown);
    }
}
