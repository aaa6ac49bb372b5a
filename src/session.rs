//! The domain: what a tracked session is, how a workbook is addressed, and what a refresh can
//! come back with. No I/O lives here, so the engine, the store and every front end share it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a workbook lives, in one of the forms Graph accepts (docs/graph.md, "Addressing a workbook").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum WorkbookRef {
    /// `me/drive/items/{item}`
    MyItem { item: String },
    /// `drives/{drive}/items/{item}`
    DriveItem { drive: String, item: String },
    /// `{sites|groups|users}/{owner}/drive/items/{item}`
    OwnedItem { kind: OwnerKind, owner: String, item: String },
    /// `me/drive/root:/{path}:`, resolved once to an item id before use.
    MyPath { path: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    Site,
    Group,
    User,
}

impl OwnerKind {
    fn segment(self) -> &'static str {
        match self {
            OwnerKind::Site => "sites",
            OwnerKind::Group => "groups",
            OwnerKind::User => "users",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "workbook reference {given:?} is not valid: {why}; use me/drive/items/ID, drives/D/items/I, \
     sites/S/drive/items/I, groups/G/drive/items/I, users/U/drive/items/I or /me/drive/root:/path/book.xlsx:"
)]
pub struct RefError {
    pub given: String,
    pub why: &'static str,
}

impl WorkbookRef {
    pub fn parse(input: &str) -> Result<Self, RefError> {
        let fail = |why| RefError { given: input.to_string(), why };
        let mut text = input.trim();
        if text.chars().any(char::is_control) {
            return Err(fail("it contains control characters"));
        }
        // A full URL pasted from Graph Explorer is accepted; only its path after the version counts.
        if let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) {
            let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
            text = path
                .strip_prefix("/v1.0")
                .or_else(|| path.strip_prefix("/beta"))
                .ok_or_else(|| fail("a URL must name the API version (/v1.0/...)"))?;
        }
        if text.contains(['?', '#']) {
            return Err(fail("it must not carry a query or fragment"));
        }
        let text = text.trim_start_matches('/');
        let text = text.strip_suffix("/workbook").unwrap_or(text).trim_end_matches('/');

        if let Some(rest) = text.strip_prefix("me/drive/root:") {
            let path = rest.strip_suffix(':').ok_or_else(|| fail("a by-path reference must end with ':'"))?;
            let path = path.trim_matches('/');
            if path.is_empty() || path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
                return Err(fail("the path is empty or has an empty, '.' or '..' part"));
            }
            return Ok(WorkbookRef::MyPath { path: path.to_string() });
        }

        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(fail("it has an empty part"));
        }
        // A URL would resolve them away and address something else.
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(fail("it has a '.' or '..' part"));
        }
        let id = |s: &str| s.to_string();
        match parts.as_slice() {
            ["me", "drive", "items", item] => Ok(WorkbookRef::MyItem { item: id(item) }),
            ["drives", drive, "items", item] => Ok(WorkbookRef::DriveItem { drive: id(drive), item: id(item) }),
            [owner_kind, owner, "drive", "items", item] => {
                let kind = match *owner_kind {
                    "sites" => OwnerKind::Site,
                    "groups" => OwnerKind::Group,
                    "users" => OwnerKind::User,
                    _ => return Err(fail("it names no known drive owner")),
                };
                Ok(WorkbookRef::OwnedItem { kind, owner: id(owner), item: id(item) })
            }
            _ => Err(fail("it is not one of the known forms")),
        }
    }

    /// Path segments after the API version, ready to push into a URL (which percent-encodes them).
    pub fn segments(&self) -> Vec<String> {
        match self {
            WorkbookRef::MyItem { item } => vec!["me".into(), "drive".into(), "items".into(), item.clone()],
            WorkbookRef::DriveItem { drive, item } => {
                vec!["drives".into(), drive.clone(), "items".into(), item.clone()]
            }
            WorkbookRef::OwnedItem { kind, owner, item } => {
                vec![kind.segment().into(), owner.clone(), "drive".into(), "items".into(), item.clone()]
            }
            WorkbookRef::MyPath { path } => {
                // Graph reads `root:/a/b.xlsx:`: `root:` is a segment of its own, the colon closes the last.
                let mut segs = vec!["me".to_string(), "drive".to_string(), "root:".to_string()];
                segs.extend(path.split('/').map(str::to_string));
                if let Some(last) = segs.last_mut() {
                    last.push(':');
                }
                segs
            }
        }
    }

    /// The workbook's URL under a Graph base URL (`https://graph.microsoft.com/v1.0`), with each
    /// segment percent-encoded: what a script puts before `/createSession` or `/tables`.
    pub fn url(&self, base: &str) -> String {
        match url::Url::parse(base.trim_end_matches('/')) {
            Ok(mut url) => {
                if let Ok(mut path) = url.path_segments_mut() {
                    path.pop_if_empty();
                    path.extend(self.segments().iter().map(String::as_str));
                    path.push("workbook");
                }
                url.to_string()
            }
            Err(_) => format!("{}/{}/workbook", base.trim_end_matches('/'), self.segments().join("/")),
        }
    }

    pub fn is_by_path(&self) -> bool {
        matches!(self, WorkbookRef::MyPath { .. })
    }

    /// The same drive, addressed by item id: what a by-path reference becomes once resolved.
    pub fn with_item(&self, item: &str) -> WorkbookRef {
        match self {
            WorkbookRef::MyItem { .. } | WorkbookRef::MyPath { .. } => WorkbookRef::MyItem { item: item.into() },
            WorkbookRef::DriveItem { drive, .. } => WorkbookRef::DriveItem { drive: drive.clone(), item: item.into() },
            WorkbookRef::OwnedItem { kind, owner, .. } => {
                WorkbookRef::OwnedItem { kind: *kind, owner: owner.clone(), item: item.into() }
            }
        }
    }
}

impl fmt::Display for WorkbookRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkbookRef::MyItem { item } => write!(f, "me/drive/items/{item}"),
            WorkbookRef::DriveItem { drive, item } => write!(f, "drives/{drive}/items/{item}"),
            WorkbookRef::OwnedItem { kind, owner, item } => {
                write!(f, "{}/{owner}/drive/items/{item}", kind.segment())
            }
            WorkbookRef::MyPath { path } => write!(f, "/me/drive/root:/{path}:"),
        }
    }
}

impl TryFrom<String> for WorkbookRef {
    type Error = RefError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        WorkbookRef::parse(&value)
    }
}

impl From<WorkbookRef> for String {
    fn from(value: WorkbookRef) -> Self {
        value.to_string()
    }
}

impl std::str::FromStr for WorkbookRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkbookRef::parse(s)
    }
}

/// A workbook session id: long and opaque, and it travels in a header, so it is checked once here.
/// Shared rather than copied: the engine, the dashboard and every event hold the same hundreds
/// of bytes (this matters at 100,000 sessions).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(std::sync::Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    #[error("the session id is empty; pass the id that createSession returned")]
    Empty,
    #[error(
        "the session id contains control or non-ASCII characters; it must travel in an HTTP header, so copy it again without them"
    )]
    BadCharacters,
    #[error("the session id is {0} bytes long, more than the 16384 this tool accepts")]
    TooLong(usize),
}

impl SessionId {
    pub const MAX_LEN: usize = 16 * 1024;

    pub fn new(raw: &str) -> Result<Self, SessionIdError> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(SessionIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(SessionIdError::TooLong(id.len()));
        }
        if !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(SessionIdError::BadCharacters);
        }
        Ok(SessionId(id.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for narrow places: the head and tail of the id.
    pub fn abbreviated(&self) -> String {
        let s = &self.0;
        if s.len() <= 20 {
            return s.to_string();
        }
        format!("{}…{}", &s[..10], &s[s.len() - 6..])
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.abbreviated())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SessionId {
    type Error = SessionIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SessionId::new(&value)
    }
}

impl From<SessionId> for String {
    fn from(value: SessionId) -> Self {
        value.0.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Persistent,
    NonPersistent,
}

impl Mode {
    pub fn persist_changes(self) -> bool {
        self == Mode::Persistent
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent",
            Mode::NonPersistent => "non-persistent",
        }
    }
}

/// What one call to Graph came back with, as a session keeper sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    Ok,
    Expired,
    Dead,
    Throttled,
    Auth,
    Error,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Expired => "expired",
            OutcomeKind::Dead => "dead",
            OutcomeKind::Throttled => "throttled",
            OutcomeKind::Auth => "auth",
            OutcomeKind::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => OutcomeKind::Ok,
            "expired" => OutcomeKind::Expired,
            "dead" => OutcomeKind::Dead,
            "throttled" => OutcomeKind::Throttled,
            "auth" => OutcomeKind::Auth,
            "error" => OutcomeKind::Error,
            _ => return None,
        })
    }
}

/// Which call an outcome belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Refresh,
    Close,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Refresh => "refresh",
            Action::Close => "close",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => Action::Create,
            "refresh" => Action::Refresh,
            "close" => Action::Close,
            _ => return None,
        })
    }
}

/// One recorded call: everything Microsoft support would ask about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub at: DateTime<Utc>,
    pub action: Action,
    pub kind: OutcomeKind,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub codes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status a session shows: the kind of its last outcome, or what is happening to it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Tracked but not refreshed by this tool yet.
    New,
    Ok,
    /// The last call worked, but longer ago than the idle expiry: likely expired; the next call
    /// decides. Never stored: it is what `Ok` turns into with time.
    Stale,
    Refreshing,
    Expired,
    Dead,
    Throttled,
    Auth,
    Error,
    /// Closed on purpose; kept in the list but never refreshed.
    Closed,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::New,
        Status::Ok,
        Status::Stale,
        Status::Refreshing,
        Status::Expired,
        Status::Dead,
        Status::Throttled,
        Status::Auth,
        Status::Error,
        Status::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Ok => "ok",
            Status::Stale => "stale",
            Status::Refreshing => "refreshing",
            Status::Expired => "expired",
            Status::Dead => "dead",
            Status::Throttled => "throttled",
            Status::Auth => "auth",
            Status::Error => "error",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_failing(self) -> bool {
        matches!(
            self,
            Status::Stale | Status::Expired | Status::Dead | Status::Throttled | Status::Auth | Status::Error
        )
    }

    /// Whether a script may use the session's id: only when it is known to be alive.
    pub fn is_alive(self) -> bool {
        matches!(self, Status::Ok | Status::Refreshing | Status::Throttled | Status::New)
    }

    /// One line for the help's legend.
    pub fn meaning(self) -> &'static str {
        match self {
            Status::New => "tracked, not refreshed by this tool yet",
            Status::Ok => "the last call worked and the session is within its idle expiry",
            Status::Stale => "no successful call within the idle expiry: likely expired",
            Status::Refreshing => "a call is under way",
            Status::Expired => "Graph ended the session; recreated only where allowed",
            Status::Dead => "unusable; recreating it the same way will not help",
            Status::Throttled => "Graph asked to wait; the wait is honoured",
            Status::Auth => "the token was refused: sign in again",
            Status::Error => "network or server trouble; retried with backoff",
            Status::Closed => "closed on purpose; never refreshed",
        }
    }
}

impl From<OutcomeKind> for Status {
    fn from(kind: OutcomeKind) -> Self {
        match kind {
            OutcomeKind::Ok => Status::Ok,
            OutcomeKind::Expired => Status::Expired,
            OutcomeKind::Dead => Status::Dead,
            OutcomeKind::Throttled => Status::Throttled,
            OutcomeKind::Auth => Status::Auth,
            OutcomeKind::Error => Status::Error,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shortest refresh interval accepted: anything faster only hammers Graph.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Sessions expire after minutes idle: an interval beyond a day keeps nothing alive, and is more
/// likely a typo than a wish.
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// The store's row id of a session: stable across renames.
pub type SessionKey = i64;

/// A session this tool keeps alive: what a row shows. Its full history stays in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedSession {
    #[serde(skip)]
    pub key: SessionKey,
    pub name: String,
    pub workbook: WorkbookRef,
    pub session_id: SessionId,
    pub mode: Mode,
    /// Own refresh interval; `None` follows the global default for its mode.
    #[serde(with = "opt_duration_secs", skip_serializing_if = "Option::is_none", default)]
    pub interval: Option<Duration>,
    /// Recreate the session when it expires.
    pub recreate: bool,
    /// Refresh on schedule.
    pub auto: bool,
    pub status: Status,
    /// The last call that kept the session alive: a successful refresh or its creation.
    pub last_refresh: Option<DateTime<Utc>>,
    /// Consecutive failed calls since the last success.
    pub failures: u32,
    pub created_at: DateTime<Utc>,
    /// What a row shows of the newest outcome; the outcomes themselves stay in the store.
    #[serde(skip)]
    pub last_call: Option<LastCall>,
}

/// The newest outcome's time and latency: fixed-size, so a session in memory stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastCall {
    pub at: DateTime<Utc>,
    pub latency_ms: u64,
}

impl From<&Outcome> for LastCall {
    fn from(outcome: &Outcome) -> Self {
        LastCall { at: outcome.at, latency_ms: outcome.latency_ms }
    }
}

impl TrackedSession {
    /// Everything a new session needs but its identity, with the defaults the tool starts from.
    pub fn new(name: String, workbook: WorkbookRef, session_id: SessionId, mode: Mode, now: DateTime<Utc>) -> Self {
        TrackedSession {
            key: 0,
            name,
            workbook,
            session_id,
            mode,
            interval: None,
            recreate: false,
            auto: true,
            status: Status::New,
            last_refresh: None,
            failures: 0,
            created_at: now,
            last_call: None,
        }
    }

    /// The time of the last call that kept the session alive (a refresh or its creation).
    pub fn last_activity(&self) -> DateTime<Utc> {
        self.last_refresh.map_or(self.created_at, |t| t.max(self.created_at))
    }

    /// Whether automatic refreshes apply: not for closed or dead sessions, nor for expired ones
    /// that may not be recreated.
    pub fn is_kept_alive(&self) -> bool {
        self.auto
            && match self.status {
                Status::Closed | Status::Dead => false,
                Status::Expired => self.recreate,
                _ => true,
            }
    }

    /// When the next automatic refresh is due if nothing delays it: one interval after the last
    /// activity.
    pub fn next_refresh_estimate(&self, interval: Duration) -> Option<DateTime<Utc>> {
        self.is_kept_alive().then(|| crate::time::add(self.last_activity(), interval))
    }
}

/// What the user decides about a session, as opposed to what its calls change.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub name: String,
    pub interval: Option<Duration>,
    pub recreate: bool,
    pub auto: bool,
}

impl SessionSettings {
    pub fn of(s: &TrackedSession) -> Self {
        SessionSettings { name: s.name.clone(), interval: s.interval, recreate: s.recreate, auto: s.auto }
    }

    pub fn apply_to(&self, s: &mut TrackedSession) {
        s.name.clone_from(&self.name);
        s.interval = self.interval;
        s.recreate = self.recreate;
        s.auto = self.auto;
    }
}

/// What an edit changes; `None` leaves a setting as it stands in the store. An edit therefore
/// never undoes another process's change to a setting it did not touch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsChange {
    pub name: Option<String>,
    /// `Some(None)`: follow the default interval again.
    pub interval: Option<Option<Duration>>,
    pub recreate: Option<bool>,
    pub auto: Option<bool>,
}

impl SettingsChange {
    /// What a form that started from `before` and ends at `after` changed.
    pub fn between(before: &SessionSettings, after: &SessionSettings) -> Self {
        SettingsChange {
            name: (after.name != before.name).then(|| after.name.clone()),
            interval: (after.interval != before.interval).then_some(after.interval),
            recreate: (after.recreate != before.recreate).then_some(after.recreate),
            auto: (after.auto != before.auto).then_some(after.auto),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    /// The same checks a new session's settings get.
    pub fn check(&self) -> Result<(), String> {
        if let Some(name) = &self.name {
            validate_name(name).map_err(|e| e.to_string())?;
        }
        check_interval(self.interval.flatten())
    }

    pub fn apply_to(&self, s: &mut TrackedSession) {
        if let Some(name) = &self.name {
            s.name.clone_from(name);
        }
        if let Some(interval) = self.interval {
            s.interval = interval;
        }
        if let Some(recreate) = self.recreate {
            s.recreate = recreate;
        }
        if let Some(auto) = self.auto {
            s.auto = auto;
        }
    }
}

/// How sessions are kept when they say nothing of their own, and how long Graph keeps an idle
/// one (docs/graph.md, "Lifetime"): settings, so that a test or the demo can shorten them.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub persistent_interval: Duration,
    pub non_persistent_interval: Duration,
    pub persistent_expiry: Duration,
    pub non_persistent_expiry: Duration,
    /// Recreate expired sessions unless told otherwise.
    pub recreate: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            persistent_interval: Duration::from_secs(4 * 60),
            non_persistent_interval: Duration::from_secs(5 * 60),
            persistent_expiry: Duration::from_secs(5 * 60),
            non_persistent_expiry: Duration::from_secs(7 * 60),
            recreate: false,
        }
    }
}

impl Defaults {
    pub fn interval(&self, mode: Mode) -> Duration {
        match mode {
            Mode::Persistent => self.persistent_interval,
            Mode::NonPersistent => self.non_persistent_interval,
        }
    }

    /// The interval a session refreshes at: its own, or the default for its mode.
    pub fn interval_of(&self, session: &TrackedSession) -> Duration {
        session.interval.unwrap_or_else(|| self.interval(session.mode))
    }

    /// How long Graph keeps an idle session of this mode.
    pub fn expiry(&self, mode: Mode) -> Duration {
        match mode {
            Mode::Persistent => self.persistent_expiry,
            Mode::NonPersistent => self.non_persistent_expiry,
        }
    }

    /// When Graph will expire the session if nothing refreshes it: its last successful activity
    /// plus its idle expiry. `None` while that is unknown (tracked but never refreshed) or moot.
    pub fn expires_at(&self, s: &TrackedSession) -> Option<DateTime<Utc>> {
        match s.status {
            Status::Closed | Status::Dead | Status::Expired | Status::New => None,
            _ => s.last_refresh.map(|t| crate::time::add(t, self.expiry(s.mode))),
        }
    }

    /// The status to show at `now`: an `ok` whose expiry has passed is `stale`.
    pub fn status_at(&self, s: &TrackedSession, now: DateTime<Utc>) -> Status {
        match (s.status, self.expires_at(s)) {
            (Status::Ok, Some(at)) if at <= now => Status::Stale,
            (status, _) => status,
        }
    }

    /// The warning for an interval that lets a session expire before its next refresh.
    pub fn interval_warning(&self, interval: Option<Duration>, mode: Mode) -> Option<String> {
        let interval = interval.unwrap_or_else(|| self.interval(mode));
        let expiry = self.expiry(mode);
        (interval >= expiry).then(|| {
            format!(
                "refreshing every {} lets a {} session expire first (it lives {} idle)",
                crate::time::format_duration(interval),
                mode.as_str(),
                crate::time::format_duration(expiry)
            )
        })
    }
}

/// A session as the user describes it, before anything checked it.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub name: String,
    pub workbook: String,
    /// Set when tracking a session that exists; unset when creating one.
    pub session_id: Option<String>,
    pub non_persistent: bool,
    pub interval: Option<Duration>,
    /// `None` takes the default.
    pub recreate: Option<bool>,
}

/// A new session that passed every check that needs neither the network nor the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub name: String,
    pub workbook: WorkbookRef,
    pub session_id: Option<SessionId>,
    pub mode: Mode,
    pub interval: Option<Duration>,
    pub recreate: bool,
    /// Said to the user, but not a reason to refuse.
    pub warning: Option<String>,
}

impl NewSession {
    /// The one check for a new session, used by the command line, the dashboard and the engine.
    pub fn check(draft: &Draft, defaults: &Defaults) -> Result<NewSession, String> {
        validate_name(draft.name.trim()).map_err(|e| e.to_string())?;
        let workbook = WorkbookRef::parse(&draft.workbook).map_err(|e| e.to_string())?;
        let session_id = match &draft.session_id {
            Some(raw) => Some(SessionId::new(raw).map_err(|e| e.to_string())?),
            None => None,
        };
        check_interval(draft.interval)?;
        let mode = if draft.non_persistent { Mode::NonPersistent } else { Mode::Persistent };
        Ok(NewSession {
            name: draft.name.trim().to_string(),
            warning: defaults.interval_warning(draft.interval, mode),
            workbook,
            session_id,
            mode,
            interval: draft.interval,
            recreate: draft.recreate.unwrap_or(defaults.recreate),
        })
    }

    /// The session to track, once its id is known.
    pub fn into_tracked(self, id: SessionId, now: DateTime<Utc>) -> TrackedSession {
        let mut session = TrackedSession::new(self.name, self.workbook, id, self.mode, now);
        session.interval = self.interval;
        session.recreate = self.recreate;
        session
    }
}

/// An interval of a session's own must not hammer Graph.
pub fn check_interval(interval: Option<Duration>) -> Result<(), String> {
    match interval {
        Some(i) if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&i) => Err(format!(
            "the interval must be {} to {}",
            crate::time::format_duration(MIN_INTERVAL),
            crate::time::format_duration(MAX_INTERVAL)
        )),
        _ => Ok(()),
    }
}

/// What a list of sessions can be sorted by: any column the dashboard shows. The words are what
/// config.toml and the dashboard's saved state use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortBy {
    Name,
    Workbook,
    Mode,
    Status,
    Last,
    Next,
    Expires,
    Latency,
    Failures,
}

impl SortBy {
    pub const ALL: [SortBy; 9] = [
        SortBy::Name,
        SortBy::Workbook,
        SortBy::Mode,
        SortBy::Status,
        SortBy::Last,
        SortBy::Next,
        SortBy::Expires,
        SortBy::Latency,
        SortBy::Failures,
    ];

    pub fn next(self) -> SortBy {
        let i = SortBy::ALL.iter().position(|s| *s == self).unwrap_or(0);
        SortBy::ALL[(i + 1) % SortBy::ALL.len()]
    }

    pub fn label(self) -> &'static str {
        match self {
            SortBy::Name => "name",
            SortBy::Workbook => "workbook",
            SortBy::Mode => "mode",
            SortBy::Status => "status",
            SortBy::Last => "last refresh",
            SortBy::Next => "next refresh",
            SortBy::Expires => "expiry",
            SortBy::Latency => "latency",
            SortBy::Failures => "failures",
        }
    }

    /// The word used in config.toml and the saved state.
    pub fn word(self) -> &'static str {
        match self {
            SortBy::Last => "last",
            SortBy::Next => "next",
            SortBy::Expires => "expires",
            other => other.label(),
        }
    }

    pub fn parse(word: &str) -> Option<SortBy> {
        SortBy::ALL.into_iter().find(|s| s.word() == word)
    }
}

/// A session name must be typed on command lines and shown in narrow columns.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 64 {
        return Err(NameError::TooLong);
    }
    if name.starts_with('-') || !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(NameError::BadCharacters(name.to_string()));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty; give the session a short name such as 'report'")]
    Empty,
    #[error("the name is longer than 64 characters; choose a shorter one")]
    TooLong,
    #[error("the name {0:?} may hold only letters, digits, '-', '_' and '.', and must not start with '-'")]
    BadCharacters(String),
}

mod opt_duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let secs: Option<f64> = Option::deserialize(d)?;
        // Nonsense (negative, not finite, past `Duration`) reads as no interval of its own.
        Ok(secs.and_then(|s| Duration::try_from_secs_f64(s).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            ("me/drive/items/01ABC", "me/drive/items/01ABC"),
            ("/me/drive/items/01ABC/", "me/drive/items/01ABC"),
            ("/me/drive/items/01ABC/workbook", "me/drive/items/01ABC"),
            ("drives/b!x/items/01ABC", "drives/b!x/items/01ABC"),
            ("sites/contoso.sharepoint.com,1,2/drive/items/I", "sites/contoso.sharepoint.com,1,2/drive/items/I"),
            ("groups/G/drive/items/I", "groups/G/drive/items/I"),
            ("users/a@b.com/drive/items/I", "users/a@b.com/drive/items/I"),
            ("/me/drive/root:/Reports/Q1 2026.xlsx:", "/me/drive/root:/Reports/Q1 2026.xlsx:"),
            ("https://graph.microsoft.com/v1.0/me/drive/items/X/workbook", "me/drive/items/X"),
        ];
        for (input, canonical) in cases {
            let parsed = WorkbookRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(WorkbookRef::parse(canonical), Ok(parsed), "round trip of {canonical}");
        }
    }

    #[test]
    fn refuses_malformed_refs_with_the_reason() {
        for bad in [
            "",
            "me/drive/items/",
            "me/drive/items/a/b",
            "planets/x/drive/items/i",
            "/me/drive/root:/a.xlsx",
            "/me/drive/root:/../a.xlsx:",
            "me/drive/items/..",
            "drives/./items/x",
            "me/drive/items/a?x=1",
            "me/drive/items/a\nb",
            "https://graph.microsoft.com/me/drive/items/a",
        ] {
            let err = WorkbookRef::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("me/drive/items/ID"), "{err}");
        }
    }

    #[test]
    fn by_path_segments_keep_the_colons_where_graph_wants_them() {
        let r = WorkbookRef::parse("/me/drive/root:/a/b.xlsx:").unwrap();
        assert_eq!(r.segments(), ["me", "drive", "root:", "a", "b.xlsx:"]);
        let single = WorkbookRef::parse("/me/drive/root:/b.xlsx:").unwrap();
        assert_eq!(single.segments(), ["me", "drive", "root:", "b.xlsx:"]);
        assert_eq!(r.with_item("ID").to_string(), "me/drive/items/ID");
    }

    #[test]
    fn workbook_urls_are_encoded() {
        let r = WorkbookRef::parse("drives/b!x y/items/01ABC").unwrap();
        assert_eq!(
            r.url("https://graph.microsoft.com/v1.0/"),
            "https://graph.microsoft.com/v1.0/drives/b!x%20y/items/01ABC/workbook"
        );
    }

    #[test]
    fn session_ids_that_cannot_travel_in_a_header_are_refused() {
        assert_eq!(SessionId::new(""), Err(SessionIdError::Empty));
        assert_eq!(SessionId::new("abc\r\nX-Evil: 1"), Err(SessionIdError::BadCharacters));
        assert_eq!(SessionId::new("caf\u{e9}"), Err(SessionIdError::BadCharacters));
        assert!(SessionId::new(&"a".repeat(20_000)).is_err());
        assert_eq!(SessionId::new("  cluster=A&session=B+/=  ").unwrap().as_str(), "cluster=A&session=B+/=");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("report-q1.v2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a b").is_err());
    }
}
