//! What goes into the engine (`Command`) and what comes out of it (`Event`): plain enums on
//! tokio channels, the whole vocabulary between the engine and its front ends.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::signin::Progress;
use crate::session::{NewSession, Outcome, SessionKey, SettingsChange, TrackedSession};

#[derive(Debug, Clone)]
pub enum Command {
    Refresh(Vec<SessionKey>),
    RefreshAll,
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
        keys: Vec<SessionKey>,
        auto: bool,
    },
    /// Pause or resume automatic refresh for the whole store, for every process on it.
    PauseAll(bool),
    Close(Vec<SessionKey>),
    Remove(Vec<SessionKey>),
    /// A new session on the same workbook, replacing the id.
    Recreate(Vec<SessionKey>),
    SignIn,
    CancelSignIn,
    /// The stored outcomes of a session, for its details.
    History(SessionKey),
    Shutdown,
}

/// What was asked for; `Finished` names it when it is done.
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
}

impl JobKind {
    pub fn verb(self) -> &'static str {
        match self {
            JobKind::Refresh => "refresh",
            JobKind::Close => "close",
            JobKind::Recreate => "recreate",
            JobKind::Create => "create",
            JobKind::Track => "track",
            JobKind::Edit => "edit",
            JobKind::Remove => "remove",
            JobKind::SetAuto => "set automatic refresh of",
        }
    }
}

/// Something asked for is done, well or not: after every retry, never silently dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub kind: JobKind,
    pub key: Option<SessionKey>,
    pub name: String,
    pub result: Result<(), String>,
}

/// Where tokens come from, as the header shows it; never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInState {
    /// A fixed token or a token command.
    Source(&'static str),
    SignedIn {
        user: Option<String>,
        until: DateTime<Utc>,
    },
    /// The sign-in ended (`invalid_grant`): a new one is needed.
    Ended,
    NotSignedIn,
    /// The token cache cannot be used; the text says why and how to fix it.
    Unusable(String),
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
    /// A call someone waits for failed and is tried again after `after` (Graph's `Retry-After`,
    /// or a backoff): said so that a wait is never silent.
    Retrying {
        kind: JobKind,
        name: String,
        attempt: u8,
        after: Duration,
    },
    Finished(Finished),
    SignIn(Progress),
    Auth(SignInState),
    History {
        key: SessionKey,
        outcomes: Vec<Outcome>,
    },
    /// Something failed that belongs to no single call (a store write).
    Error(String),
    /// Worth saying, and about no single call: how refreshes travel (`$batch` or one by one).
    Note(String),
    Stopped,
}
