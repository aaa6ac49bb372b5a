//! What every store offers, whatever keeps it: the sessions and their outcomes with a change feed
//! ("what changed since revision N"), the driver role, and errors that name what went wrong in
//! the store's own terms, never a database library's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::session::SessionId;
use crate::session::{Outcome, SessionKey, SettingsChange, SortBy, Status, TrackedSession, WorkbookRef};

/// Outcomes kept per session.
pub(crate) const KEPT_OUTCOMES: usize = 50;

/// The window Graph's request limits count in (docs/graph.md, "Throttling").
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// How long a start granted from the shared budget may wait to be used.
pub const GRANT_LIFE: Duration = Duration::from_secs(1);

/// How much later than its start a request may reach Graph (a connection to wait for, a busy
/// machine): Graph counts arrivals, so a grant is counted this much longer too.
pub const TRAVEL: Duration = Duration::from_millis(250);

/// How long a store counts a grant: the window, the grant's life and the travel after it, so
/// that the requests of every process arriving in any ten seconds stay within the budget.
pub const GRANT_COUNTED: Duration =
    Duration::from_millis(BUDGET_WINDOW.as_millis() as u64 + GRANT_LIFE.as_millis() as u64 + TRAVEL.as_millis() as u64);

/// What a store gave of the request budget its processes share.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    pub granted: u32,
    /// None was left: when some will be again.
    pub retry_in: Option<Duration>,
    /// Names the grant, so that what is left of it unused can be given back.
    pub token: Option<GrantToken>,
    /// Workbooks Graph asked a process on the store to wait, that this one has not heard of
    /// (`Reservation::holds_seen`), and the newest such hold's number.
    pub holds: Vec<SharedHold>,
    pub holds_seen: i64,
}

/// A workbook Graph asked to wait (a `429` and its `Retry-After`, or its backoff), until when:
/// every process on the store waits, not only the one that was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHold {
    pub workbook: String,
    pub until: DateTime<Utc>,
}

/// One grant as the store that gave it knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantToken {
    pub row: i64,
    /// When it was given, in the store's milliseconds: a row number alone may be taken again
    /// once the grant has left the window.
    pub at_ms: i64,
}

/// One call to the shared budget: starts wanted, requests made that no grant paid for (a
/// create's polls), and what an earlier grant left unused, which stops counting against anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reservation {
    pub want: u32,
    pub extra: u32,
    pub unused: Option<(GrantToken, u32)>,
    /// The newest shared hold this process has heard of (`Grant::holds`).
    pub holds_seen: i64,
}

/// The budget's one rule, whatever store keeps the count: of `budget`, what `used` left, and no
/// more than `want`.
pub(crate) fn grant_of(used: u64, want: u32, budget: u32) -> u32 {
    u32::try_from(u64::from(budget).saturating_sub(used)).unwrap_or(u32::MAX).min(want)
}

/// A store's revision: every write transaction takes the next one.
pub type Rev = i64;

/// What a store answers, later.
pub type StoreFuture<T> = BoxFuture<'static, Result<T, StoreError>>;

/// Store trouble, as the commands and the engine need to tell it apart. `store` is where the
/// store is, as people wrote it (a path, or a URL without its password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {store} is not a wbsessions database ({detail}); it was left unchanged: move it away or pass another --store"
    )]
    Corrupt { store: String, detail: String },
    #[error(
        "the store {store} has schema version {found}, newer than this wbsessions understands ({supported}); it was left unchanged: upgrade wbsessions"
    )]
    Newer { store: String, found: i64, supported: i64 },
    #[error(
        "the store {store} does not exist; create a session with `wbsessions create` or `wbsessions add`, or pass the right --store"
    )]
    Missing { store: String },
    #[error(
        "the store {store} is an empty file; it was left unchanged: create a session with `wbsessions create` or `wbsessions add`, or pass the right --store"
    )]
    Empty { store: String },
    #[error(
        "permission denied: cannot write the store {store}; check its permissions and its folder's, or pass another --store"
    )]
    ReadOnly { store: String },
    #[error(
        "permission denied: cannot read the store {store}; check its permissions and its folder's, or pass another --store"
    )]
    Unreadable { store: String },
    #[error("cannot reach the store {store}: {detail}")]
    Unavailable { store: String, detail: String },
    #[error(
        "the store {store} has {names} names (hard links): writes through one would be lost to the others; keep one name and remove the rest"
    )]
    Linked { store: String, names: u64 },
    #[error("the store {store} is {kind}, not a file; pass the path of a file with --store")]
    NotAFile { store: String, kind: &'static str },
    #[error("the disk that holds the store {store} is full; free some space and try again")]
    DiskFull { store: String },
    #[error("the store {store} is busy: another process held it for {} s; try again", .waited.as_secs())]
    Busy { store: String, waited: Duration },
    #[error("the store {store} failed: {detail}")]
    Backend { store: String, detail: String },
    #[error("no session is named {0:?}; `wbsessions list` shows the names")]
    NotFound(String),
    #[error("a session named {0:?} is already tracked; choose another name or `wbsessions remove {0}` first")]
    NameTaken(String),
    #[error("that session id is already tracked as {0:?}; `wbsessions show {0}` shows it")]
    IdTaken(String),
    #[error("the store has been closed")]
    Closed,
}

impl StoreError {
    /// Whether the fault is the user's to fix (a bad file or name) rather than a failed operation.
    pub(crate) fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::Newer { .. }
                | StoreError::Missing { .. }
                | StoreError::Empty { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Unreadable { .. }
                | StoreError::Linked { .. }
                | StoreError::NotAFile { .. }
                | StoreError::NotFound(_)
                | StoreError::NameTaken(_)
                | StoreError::IdTaken(_)
        )
    }
}

/// One change to the store; a batch of them is written in one transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// The result of a call: the session's new state (`None`: the call changed nothing of it),
    /// and the outcome to append.
    Record {
        key: SessionKey,
        state: Option<RuntimeState>,
        outcome: Option<Outcome>,
    },
    /// The user changed how the session is kept: only the settings named change.
    Settings {
        key: SessionKey,
        change: SettingsChange,
    },
    Remove {
        key: SessionKey,
    },
    /// Every column of a session's row, as `session` holds it: repairs a row that could not be
    /// read whole once a recreation gave it a new session.
    Rewrite(Box<TrackedSession>),
    /// Automatic refresh paused for the whole store, for every process that opens it.
    Paused(bool),
    /// What a process learned of `$batch`, for the next one to start from.
    Batching(BatchVerdict),
    /// Graph asked this process to wait on a workbook: the others wait too.
    Hold(SharedHold),
    /// A session is about to be created at Graph for `name` (new, or in place of an expired
    /// one); `id` names the intent, to be let go of with `Created` once its row holds the id.
    Creating {
        id: IntentId,
        name: String,
        workbook: WorkbookRef,
    },
    /// What `Creating` announced is in the store now, or did not happen.
    Created {
        id: IntentId,
    },
}

/// What a process on the store learned of `$batch` (docs/graph.md, "Batching"): whether
/// refreshes through it keep sessions alive, and when that was found. Shared on the store so that
/// the next process starts from it instead of probing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchVerdict {
    pub keeps_alive: bool,
    pub at: DateTime<Utc>,
}

impl BatchVerdict {
    /// As the store's meta table keeps it: the time in milliseconds, negative when batches do
    /// not keep sessions alive; 0 while nothing was learned.
    pub(crate) fn to_meta(self) -> i64 {
        let ms = self.at.timestamp_millis().max(1);
        if self.keeps_alive { ms } else { -ms }
    }

    pub(crate) fn from_meta(value: i64) -> Option<BatchVerdict> {
        let at = DateTime::<Utc>::from_timestamp_millis(value.checked_abs()?)?;
        (value != 0).then_some(BatchVerdict { keeps_alive: value > 0, at })
    }
}

/// The name of one intent to create a session.
pub type IntentId = i64;

/// A creation that started and never said how it ended: its process was killed between asking
/// Graph and writing the session down, so a session may be open at Graph that nothing tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub name: String,
    pub workbook: String,
    pub started_at: DateTime<Utc>,
}

/// What the engine changes as calls complete.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeState {
    pub status: Status,
    pub last_refresh: Option<DateTime<Utc>>,
    pub failures: u32,
    pub session_id: SessionId,
    pub workbook: WorkbookRef,
}

impl RuntimeState {
    pub fn of(s: &TrackedSession) -> Self {
        RuntimeState {
            status: s.status,
            last_refresh: s.last_refresh,
            failures: s.failures,
            session_id: s.session_id.clone(),
            workbook: s.workbook.clone(),
        }
    }
}

/// What changed since a revision: the sessions written since, the ones removed, and the shared
/// flags. `full` means the list is the whole store (the watcher was too far behind).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub rev: Rev,
    pub sessions: Vec<TrackedSession>,
    pub removed: Vec<SessionKey>,
    pub paused: bool,
    pub full: bool,
}

/// What a store's change feed reports.
#[derive(Debug)]
pub enum StoreEvent {
    /// Another process changed the store.
    Changed(Changes),
    /// A batch of unacknowledged writes failed.
    Failed(StoreError),
}

/// Sessions and their outcomes. Every method answers later and never blocks its caller; reads
/// see every write acknowledged before them.
pub trait SessionStore: Send + Sync {
    /// Where the store is, for messages.
    fn location(&self) -> &str;
    /// Opened for reading only (a write-protected file): every write would be refused.
    fn read_only(&self) -> bool {
        false
    }

    /// Every session in name order, with its newest outcome's time and latency.
    fn sessions(&self) -> StoreFuture<Vec<TrackedSession>>;
    /// Every session and the revision they were read at, in one read: what changes after it is
    /// exactly what `changes_since` of that revision returns.
    fn snapshot(&self) -> StoreFuture<(Vec<TrackedSession>, Rev)>;
    /// Every session in name order, a chunk at a time, without holding them all.
    fn each_session(&self) -> mpsc::Receiver<Result<Vec<TrackedSession>, StoreError>>;
    /// The session of this name; `NotFound` if there is none.
    fn session(&self, name: &str) -> StoreFuture<TrackedSession>;
    /// The name of the session that tracks this id, if one does.
    fn name_of_id(&self, id: &SessionId) -> StoreFuture<Option<String>>;
    /// The first `limit` sessions in an order close to `sort`: what a dashboard shows first.
    fn first_page(&self, sort: SortBy, reverse: bool, limit: usize) -> StoreFuture<Vec<TrackedSession>>;
    /// Every session's name, in order.
    fn names(&self) -> StoreFuture<Vec<String>>;
    /// The newest `limit` outcomes of a session, newest first.
    fn history(&self, key: SessionKey, limit: usize) -> StoreFuture<Vec<Outcome>>;
    /// The newest `limit` failed calls of any session, by any process, newest first, with the
    /// session's name: what went wrong lately wherever it was met.
    fn problems(&self, limit: usize) -> StoreFuture<Vec<(String, Outcome)>>;
    /// Takes up to `ask.want` request starts from the budget every process on the store shares
    /// (at most `budget` in any `BUDGET_WINDOW`, each grant counted for `GRANT_COUNTED`),
    /// records `ask.extra` requests made beyond what earlier grants paid for, and stops counting
    /// what `ask.unused` names. `now` is the caller's clock; a store that spans hosts uses its own.
    fn reserve(&self, ask: Reservation, budget: u32, now: DateTime<Utc>) -> StoreFuture<Grant>;
    /// Whether automatic refresh is paused for the whole store.
    fn paused(&self) -> StoreFuture<bool>;
    /// What a process on the store last learned of `$batch`, if anything.
    fn batching(&self) -> StoreFuture<Option<BatchVerdict>>;
    /// The current revision.
    fn rev(&self) -> StoreFuture<Rev>;

    /// Queues a write for the next batch; nobody waits for it (failures come on the feed).
    fn write(&self, write: Write);
    /// Writes in one transaction and answers once that is committed durably.
    fn write_acked(&self, writes: Vec<Write>) -> StoreFuture<()>;
    /// Adds a session with the calls that brought it (oldest first); the answer has its `key`.
    /// A taken name or id is refused.
    fn insert(&self, session: TrackedSession, history: Vec<Outcome>) -> StoreFuture<TrackedSession>;
    /// Adds sessions in one transaction: all, or none if one name or id is taken (the error
    /// names the first).
    fn insert_all(&self, sessions: Vec<TrackedSession>) -> StoreFuture<Vec<SessionKey>>;
    /// Answers once everything queued before it has committed durably.
    fn flush(&self) -> BoxFuture<'static, ()>;
    /// Creations started by processes that are gone and never finished, let go of as they are
    /// read: each is said once.
    fn unfinished(&self) -> StoreFuture<Vec<Unfinished>>;

    /// From now on, what other processes commit after `since`, as soon as it is noticed.
    fn watch(&self, since: Rev) -> mpsc::UnboundedReceiver<StoreEvent>;
    /// Flushes, then lets go of the store; later calls answer `Closed`.
    fn close(&self) -> BoxFuture<'static, ()>;
}

/// Who drives a store: schedules its automatic refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The driving process's id, where the store knows it.
    pub pid: Option<u32>,
    /// Since when it drives, where the store knows it.
    pub since: Option<DateTime<Utc>>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "wbsessions pid {pid}"),
            None => f.write_str("another wbsessions process"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error(
        "{holder} (a keeper or a dashboard) already drives the store {store}; stop it first, or open a dashboard, which watches it"
    )]
    Held { holder: Holder, store: String },
    /// The role cannot be taken here, for a reason the user must fix.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl RoleError {
    /// Whether the fault is the user's to fix rather than a failed operation.
    pub(crate) fn is_bad_input(&self) -> bool {
        matches!(self, RoleError::Held { .. } | RoleError::Refused(_))
    }
}

/// The driver role of one store, held while it lives: dropping it lets go.
pub trait Lease: Send + Sync {
    /// Says the driver is still at work; `Err` if the role was lost meanwhile.
    fn renew(&self) -> Result<(), RoleError>;
    /// This driver's part, on a store whose keepers share the workbooks between them (`None`:
    /// every workbook of the store, and the whole budget).
    fn share(&self) -> Option<Share> {
        None
    }
}

/// A keeper's part of a store whose keepers share the workbooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// What it keeps under leases it holds (or held when it was cut off from the store, until
    /// they lapse): keeping units (`TrackedSession::keeping_unit`), a workbook for one owner.
    pub kept: std::sync::Arc<std::collections::BTreeSet<String>>,
    /// Workbooks whose leases lapsed while it was cut off, with other keepers alive to take
    /// them over: it refreshes their sessions only as their expiry nears, in case nobody did
    /// (the whole store may be away, for every keeper).
    pub standby: std::sync::Arc<std::collections::BTreeSet<String>>,
    /// The part of the request budget it may spend on its own while the store cannot share
    /// the budget out: one over the keepers it last saw.
    pub budget: f64,
    /// Until when the leases on `kept` hold by this process's clock, where other keepers could
    /// take them over (`None`: alone, or nothing held under a lease). A keeper stopped for
    /// longer (`SIGSTOP`) sends nothing of its own once it runs again until its next turn says
    /// what is still its own.
    pub kept_until: Option<std::time::Instant>,
    /// Workbooks whose sessions of no known owner go with an owner's unit, and that unit: one
    /// sign-in's keepers never send two requests to one workbook at once.
    pub riders: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

impl Share {
    /// Whether `other` keeps the same units in the same way (only the leases' end moved).
    pub fn same_units(&self, other: &Share) -> bool {
        self.kept == other.kept
            && self.standby == other.standby
            && self.budget == other.budget
            && self.riders == other.riders
    }

    /// The unit `session` is kept in (`TrackedSession::keeping_unit`, or the unit its workbook's
    /// owned sessions make where it has no owner of its own).
    pub fn unit_of(&self, session: &crate::session::TrackedSession) -> String {
        match (&session.owner, self.riders.get(&session.workbook.to_string())) {
            (None, Some(unit)) => unit.clone(),
            _ => session.keeping_unit(),
        }
    }

    /// Whether the leases it keeps by are known to hold now.
    pub fn holds_now(&self) -> bool {
        self.kept_until.is_none_or(|until| std::time::Instant::now() < until)
    }

    /// Whether it refreshes the sessions of `unit` at all.
    pub fn covers(&self, unit: &str) -> bool {
        self.kept.contains(unit) || self.standby.contains(unit)
    }
}

/// A process that keeps sessions of the store alive, as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeeperInfo {
    pub host: String,
    pub pid: Option<u32>,
    pub since: Option<DateTime<Utc>>,
    /// Seconds since it last said it is alive.
    pub quiet_secs: Option<f64>,
    /// Workbooks and sessions it keeps (`None`: all of the store's).
    pub workbooks: Option<u64>,
    pub sessions: Option<u64>,
    /// Whose sign-in it refreshes with, where that is known.
    pub owner: Option<String>,
}

/// Who schedules a store's automatic refreshes: one process at a time, or (on a store whose
/// keepers share the workbooks) every keeper for its share.
pub trait DriverRole: Send + Sync {
    /// Takes the role, waiting a moment for one who only peeks at it; `Held` if another has it.
    fn acquire(&self) -> Result<Box<dyn Lease>, RoleError>;
    /// One try, no waiting: for a process that asks again and again anyway.
    fn try_acquire(&self) -> Result<Box<dyn Lease>, RoleError>;
    /// Takes a share beside the keepers already there, where the store shares workbooks between
    /// keepers; elsewhere the same as `acquire`.
    fn join(&self) -> Result<Box<dyn Lease>, RoleError> {
        self.acquire()
    }
    /// Who holds the role now, if anyone.
    fn holder(&self) -> Option<Holder>;
    /// Names whose sign-in this process refreshes with, before it joins: where keepers share
    /// the store, it keeps only that owner's sessions and those of no known owner.
    fn identify(&self, _owner: Option<String>) {}
    /// Whether keepers share the store's workbooks (each keeps its part, `join`), so that who
    /// they are is worth showing.
    fn shares_workbooks(&self) -> bool {
        false
    }
    /// The live keepers.
    fn keepers(&self) -> Result<Vec<KeeperInfo>, RoleError> {
        Ok(self
            .holder()
            .map(|h| KeeperInfo {
                host: super::this_host(),
                pid: h.pid,
                since: h.since,
                quiet_secs: None,
                workbooks: None,
                sessions: None,
                owner: None,
            })
            .into_iter()
            .collect())
    }
}
