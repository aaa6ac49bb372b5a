//! The domain: what a tracked session is, how a workbook is addressed, and what a refresh can
//! come back with. No I/O lives here, so the engine, the store and every front end share it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod new;
mod refs;

pub use new::{Draft, DraftError, DraftField, NewSession, SettingsChange};
pub(crate) use new::{SessionSettings, check_interval, validate_name};
pub use refs::{SessionId, WorkbookRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Persistent,
    NonPersistent,
}

impl Mode {
    pub(crate) fn persist_changes(self) -> bool {
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
    /// A call of someone else's made with the session (through the proxy): activity, as a
    /// refresh is.
    Call,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Refresh => "refresh",
            Action::Close => "close",
            Action::Call => "call",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => Action::Create,
            "refresh" => Action::Refresh,
            "close" => Action::Close,
            "call" => Action::Call,
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
    /// The process that made the call, `HOST:PID` (where several keepers share a store: which
    /// of them); unknown for outcomes older than this field.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub by: Option<String>,
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
    /// Its row in the store holds values that cannot be read (edited by hand, written by
    /// another program): shown so that it can be removed or recreated, never called on as it is.
    Damaged,
}

impl Status {
    pub const ALL: [Status; 11] = [
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
        Status::Damaged,
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
            Status::Damaged => "damaged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_failing(self) -> bool {
        matches!(
            self,
            Status::Stale
                | Status::Expired
                | Status::Dead
                | Status::Throttled
                | Status::Auth
                | Status::Error
                | Status::Damaged
        )
    }

    /// Whether a script may use the session's id: only when it is known to be alive (a session
    /// tracked but never refreshed is not known to be).
    pub(crate) fn is_alive(self) -> bool {
        matches!(self, Status::Ok | Status::Refreshing | Status::Throttled)
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
            Status::Damaged => "its stored row cannot be read: remove it, or recreate it",
        }
    }
}

impl Status {
    /// What a call leaves its session at: the one rule from an outcome to a stored status (what
    /// is shown then ages it: `Defaults::status_at`).
    pub fn after(action: Action, kind: OutcomeKind) -> Status {
        match (action, kind) {
            (Action::Close, OutcomeKind::Ok) => Status::Closed,
            (_, kind) => kind.into(),
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
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Sessions expire after minutes idle: an interval beyond a day keeps nothing alive, and is more
/// likely a typo than a wish.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

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
    /// Whose sign-in it belongs to (the `/me` user, or the token's own claim): on a store
    /// several people's keepers share, only a keeper of the same sign-in keeps it. `None`:
    /// unknown (tracked by an older build, or nobody could be told), and any keeper keeps it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
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
            owner: None,
            last_call: None,
        }
    }

    /// What keepers sharing a store lease as one: the session's workbook, for its owner (all of
    /// one workbook's sessions of one sign-in go together). `leases::UNIT` says the same in SQL.
    pub fn keeping_unit(&self) -> String {
        format!("{} {}", self.owner.as_deref().unwrap_or(""), self.workbook)
    }

    /// The time of the last call that kept the session alive (a refresh or its creation).
    pub(crate) fn last_activity(&self) -> DateTime<Utc> {
        self.last_refresh.map_or(self.created_at, |t| t.max(self.created_at))
    }

    /// Whether automatic refreshes apply: not for closed or dead sessions, nor for expired ones
    /// that may not be recreated.
    pub fn is_kept_alive(&self) -> bool {
        self.auto
            && match self.status {
                Status::Closed | Status::Dead | Status::Damaged => false,
                Status::Expired => self.recreate,
                _ => true,
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
    pub(crate) fn interval_of(&self, session: &TrackedSession) -> Duration {
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
    pub(crate) fn status_at(&self, s: &TrackedSession, now: DateTime<Utc>) -> Status {
        match (s.status, self.expires_at(s)) {
            (Status::Ok, Some(at)) if at <= now => Status::Stale,
            (status, _) => status,
        }
    }

    /// The warning for an interval that lets a session expire before its next refresh.
    pub(crate) fn interval_warning(&self, interval: Option<Duration>, mode: Mode) -> Option<String> {
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

mod opt_duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let secs: Option<f64> = Option::deserialize(d)?;
        // Nonsense (negative, not finite, past `Duration`) reads as no interval of its own.
        Ok(secs.and_then(|s| Duration::try_from_secs_f64(s).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::refs::SessionIdError;
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
