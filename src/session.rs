//! The domain: what a tracked session is, how a workbook is addressed, and what a refresh can
//! come back with. No I/O lives here, so the engine, the store and every front end share it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a workbook lives, in one of the forms Graph accepts (graph-api.md §1).
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
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

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
        Ok(SessionId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for narrow places: the head and tail of the id.
    pub fn abbreviated(&self) -> String {
        let s = &self.0;
        if s.len() <= 20 {
            return s.clone();
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
        value.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Persistent,
    NonPersistent,
}

impl Mode {
    /// How long Graph keeps an idle session (graph-api.md §2).
    pub fn expiry(self) -> Duration {
        match self {
            Mode::Persistent => Duration::from_secs(5 * 60),
            Mode::NonPersistent => Duration::from_secs(7 * 60),
        }
    }

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
    pub const ALL: [Status; 9] = [
        Status::New,
        Status::Ok,
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
        matches!(self, Status::Expired | Status::Dead | Status::Throttled | Status::Auth | Status::Error)
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

/// The store's row id of a session: stable across renames.
pub type SessionKey = i64;

/// A session this tool keeps alive.
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
    pub last_refresh: Option<DateTime<Utc>>,
    /// Consecutive failed calls since the last success.
    pub failures: u32,
    pub created_at: DateTime<Utc>,
    /// Newest first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub outcomes: Vec<Outcome>,
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
            outcomes: Vec::new(),
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
        self.is_kept_alive()
            .then(|| self.last_activity() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::zero()))
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
        Ok(secs.filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64))
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
