//! How a workbook is addressed and how a session is named to Graph: both travel in requests
//! (a URL path, a header), so both are checked once, here.

use std::fmt;

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
    "workbook reference \"{given}\" is not valid: {why}; use me/drive/items/ID, drives/D/items/I, \
     sites/S/drive/items/I, groups/G/drive/items/I, users/U/drive/items/I or /me/drive/root:/path/book.xlsx:"
)]
pub struct RefError {
    pub given: String,
    pub why: &'static str,
}

impl WorkbookRef {
    /// The longest reference accepted: Graph's item ids are tens of characters, SharePoint paths
    /// a few hundred; anything longer is a mistake, and it would travel in every URL.
    pub const MAX_LEN: usize = 2048;

    pub fn parse(input: &str) -> Result<Self, RefError> {
        if input.len() > Self::MAX_LEN {
            return Err(RefError { given: crate::text::escaped(input, 40), why: "it is longer than 2048 bytes" });
        }
        let fail = |why| RefError { given: crate::text::escaped(input, 200), why };
        let mut text = input.trim();
        if text.chars().any(|c| c.is_control() || crate::text::is_format(c)) {
            return Err(fail("it contains control or invisible characters"));
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

    /// What a stored reference that cannot be read becomes: never sent anywhere, since a session
    /// on it is `Damaged`.
    pub(crate) fn unreadable() -> WorkbookRef {
        WorkbookRef::MyItem { item: "(unreadable)".into() }
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
    #[error("the session id is {0} bytes long, more than the 8192 this tool accepts")]
    TooLong(usize),
}

impl SessionId {
    /// Graph's ids are hundreds of characters; a few kilobytes is room enough.
    pub(crate) const MAX_LEN: usize = 8 * 1024;

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
    pub(crate) fn abbreviated(&self) -> String {
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
