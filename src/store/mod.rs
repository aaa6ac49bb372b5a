//! Where sessions are kept across runs, behind two traits (`api`): `SessionStore` for the
//! sessions, their outcomes and a change feed, `DriverRole` for who schedules automatic
//! refreshes. `sqlite` is the embedded default. Which one a command gets is decided here, once,
//! from `--store` (a path, or a URL whose scheme names the kind).

mod api;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use api::{
    BUDGET_WINDOW, Changes, GRANT_LIFE, Grant, GrantToken, Holder, IntentId, Reservation, Rev, RoleError, RuntimeState,
    SessionStore, StoreError, StoreEvent, StoreFuture, Unfinished, Write,
};
pub(crate) use api::{DriverRole, KEPT_OUTCOMES, Lease, grant_of};

/// The kinds of store `--store` may name, by URL scheme.
pub(crate) const SCHEMES: &[&str] = &["sqlite"];

/// A store as `--store`, `WBSESSIONS_STORE` or the config's `store` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file: a plain path, or `sqlite:PATH`.
    Sqlite(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store {given:?} names the unknown kind {scheme:?}; use a file path or {}", known())]
pub struct UnknownScheme {
    pub given: String,
    pub(crate) scheme: String,
}

fn known() -> String {
    SCHEMES.iter().map(|s| format!("{s}:PATH")).collect::<Vec<_>>().join(", ")
}

impl Location {
    /// Reads a store's name: `scheme:…` (a URL) when it starts with a scheme followed by `//`,
    /// or is `sqlite:`; anything else is a file path, so a file named `a:b` stays a file.
    pub fn parse(given: &str) -> Result<Location, UnknownScheme> {
        if let Some(rest) = given.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, rest)) = given.split_once(':') {
            let is_scheme = scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if is_scheme && rest.starts_with("//") {
                return Err(UnknownScheme { given: given.to_string(), scheme: scheme.to_ascii_lowercase() });
            }
        }
        Ok(Location::Sqlite(PathBuf::from(given)))
    }

    /// The file of a file-based store.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
        }
    }

    /// Whether the store is there already (a missing one is created by commands that write).
    pub fn exists(&self) -> bool {
        match self {
            Location::Sqlite(path) => path.exists(),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What a command needs of the store it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// To change it: created if missing, refused if it cannot be written.
    Write,
    /// To read it: it must exist; one that cannot be written is read as it stands.
    Read,
    /// To look without changing anything, not even an upgrade (shell completion).
    Peek,
}

/// An open store: its sessions and its driver role.
pub struct Opened {
    pub sessions: Arc<dyn SessionStore>,
    pub role: Arc<dyn DriverRole>,
}

/// Opens the store at `location`.
pub fn open(location: &Location, access: Access) -> Result<Opened, StoreError> {
    match location {
        Location::Sqlite(path) => sqlite::open(path, access),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_are_told_apart() {
        assert_eq!(Location::parse("/tmp/s.db"), Ok(Location::Sqlite("/tmp/s.db".into())));
        assert_eq!(Location::parse("a:b.db"), Ok(Location::Sqlite("a:b.db".into())), "a file named a:b.db");
        assert_eq!(Location::parse("sqlite:/tmp/s.db"), Ok(Location::Sqlite("/tmp/s.db".into())));
        assert_eq!(Location::parse("sqlite:rel.db"), Ok(Location::Sqlite("rel.db".into())));
        assert_eq!(Location::parse("sqlite:///tmp/s.db"), Ok(Location::Sqlite("/tmp/s.db".into())));
        let unknown = Location::parse("nosuch://x").unwrap_err();
        assert_eq!(unknown.scheme, "nosuch");
        assert!(unknown.to_string().contains("sqlite:PATH"), "{unknown}");
    }
}
