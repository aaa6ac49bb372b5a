//! What comes out of the engine besides replies: `Event`s, for anyone who watches.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::{Progress, SignInState};
use crate::graph::ErrorClass;
use crate::session::{Mode, Outcome, SessionId, SessionKey, TrackedSession, WorkbookRef};
use crate::store::Holder;

/// What a request or a call does: the verb a front end says it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Refresh,
    Close,
    Recreate,
    Create,
    Track,
    Edit,
    Remove,
    SetAuto,
    Pause,
    History,
    SignIn,
    /// A caller's own call, made in a turn on its workbook (the proxy).
    Pass,
}

impl JobKind {
    /// What was done, as a summary says it: "40 refreshed".
    pub(crate) fn past(self) -> &'static str {
        match self {
            JobKind::Refresh => "refreshed",
            JobKind::Close => "closed",
            JobKind::Recreate => "recreated",
            JobKind::Create => "created",
            JobKind::Track => "tracked",
            JobKind::Edit => "edited",
            JobKind::Remove => "removed",
            JobKind::SetAuto => "switched",
            JobKind::Pause => "paused",
            JobKind::History => "read",
            JobKind::SignIn => "signed in",
            JobKind::Pass => "passed on",
        }
    }

    /// What is being done, as a progress line says it: "refreshing 3,400 of 10,000".
    pub(crate) fn doing(self) -> &'static str {
        match self {
            JobKind::Refresh => "refreshing",
            JobKind::Close => "closing",
            JobKind::Recreate => "recreating",
            JobKind::Create => "creating",
            JobKind::Track => "tracking",
            JobKind::Edit => "editing",
            JobKind::Remove => "removing",
            JobKind::SetAuto => "switching automatic refresh",
            JobKind::Pause => "pausing",
            JobKind::History => "reading",
            JobKind::SignIn => "signing in",
            JobKind::Pass => "passing on",
        }
    }

    pub(crate) fn verb(self) -> &'static str {
        match self {
            JobKind::Refresh => "refresh",
            JobKind::Close => "close",
            JobKind::Recreate => "recreate",
            JobKind::Create => "create",
            JobKind::Track => "track",
            JobKind::Edit => "edit",
            JobKind::Remove => "remove",
            JobKind::SetAuto => "set automatic refresh of",
            JobKind::Pause => "pause",
            JobKind::History => "read the history of",
            JobKind::SignIn => "sign in",
            JobKind::Pass => "pass on a call to",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A call on this session started.
    Started {
        key: SessionKey,
        kind: JobKind,
    },
    /// One call finished. `late` is how long after its due time an automatic refresh started.
    Outcome {
        key: SessionKey,
        name: String,
        outcome: Outcome,
        late: Option<Duration>,
    },
    /// Sessions travel shared: the engine's copy and a dashboard's are one until the engine
    /// changes its own (copy on write), so 100,000 sessions are held once, not twice.
    Added(Arc<TrackedSession>),
    /// Every session, once an engine started without them has read them from the store.
    Loaded(Vec<Arc<TrackedSession>>),
    Changed(Arc<TrackedSession>),
    Removed {
        key: SessionKey,
        name: String,
    },
    /// When the next automatic refresh of a session is due (`None`: none is planned).
    Scheduled {
        key: SessionKey,
        at: Option<DateTime<Utc>>,
    },
    /// Workbooks Graph asked to wait, and when the longest wait ends.
    Holds {
        workbooks: usize,
        until: Option<DateTime<Utc>>,
    },
    Paused(bool),
    /// The driver of the store went away and this engine schedules automatic refreshes now.
    Driving,
    /// The keepers alive on a store whose keepers share the workbooks, when they change.
    Keepers(Vec<crate::store::KeeperInfo>),
    /// This engine drove, but another process took the role (this one had stopped, and was
    /// given up for gone): it watches now, and takes the role back when that one goes.
    Watching(Option<Holder>),
    /// A call someone waits for failed and is tried again after `after` (Graph's `Retry-After`,
    /// or a backoff): said so that a wait is never silent.
    Retrying {
        kind: JobKind,
        name: String,
        attempt: u8,
        after: Duration,
    },
    SignIn(Progress),
    Auth(SignInState),
    /// Something failed that belongs to no single call (a store write).
    Error(String),
    /// Worth saying, and about no single call: how refreshes travel (`$batch` or one by one).
    Note(String),
    Stopped,
}

/// Which tracked session a caller's call goes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The session of this name (it must be on the call's workbook).
    Named(String),
    /// The one tracked session on the workbook that is not closed, dead or damaged.
    OnlyLive,
    /// The tracked session with this id, if one is: the caller brought its own id.
    ById(SessionId),
    /// None: the call needs none.
    Without,
}

/// A turn asked for: the workbook the call is on, and the session it goes with.
#[derive(Debug, Clone)]
pub struct TurnAsk {
    pub workbook: WorkbookRef,
    pub choice: Choice,
}

/// A turn handed out: the call may go now. Dropping it without `end` ends it as unanswered.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The session chosen, to put in the call's header.
    pub session: Option<Chosen>,
    pub(super) end: tokio::sync::mpsc::Sender<Passed>,
}

/// The session a turn goes with, as it is when the turn starts.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub key: SessionKey,
    pub name: String,
    pub id: SessionId,
    pub mode: Mode,
    /// It may be recreated when it expires.
    pub recreate: bool,
}

impl Turn {
    /// How the call went; frees the workbook for the next one.
    pub fn end(self, passed: Passed) {
        let _ = self.end.try_send(passed);
    }
}

/// How a call made in a turn went.
#[derive(Debug, Clone, Default)]
pub struct Passed {
    /// Whether it went to Graph at all: a turn given back unused says nothing of the workbook.
    pub sent: bool,
    /// `None`: no answer came (the call could not be made, or was cut off).
    pub http_status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub latency: Duration,
    /// Graph's error codes, outermost first, where the answer was an error.
    pub codes: Vec<String>,
    /// The call was the session's closeSession: if it worked, the session is closed.
    pub closed: bool,
    /// What a failed answer means, by Microsoft's classification; `None` when it worked.
    pub class: Option<ErrorClass>,
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Choice::Named(name) => write!(f, "{name}"),
            Choice::OnlyLive => f.write_str("the only live session"),
            Choice::ById(_) => f.write_str("the caller's own session"),
            Choice::Without => f.write_str("no session"),
        }
    }
}
