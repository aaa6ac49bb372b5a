//! Where sessions are kept across runs, behind two traits (`api`): `SessionStore` for the
//! sessions, their outcomes and a change feed, `DriverRole` for who schedules automatic
//! refreshes. `sqlite` is the embedded default. Which one a command gets is decided here, once,
//! from `--store` (a path, or a URL whose scheme names the kind).

mod api;
pub mod postgres;
mod sqlite;
mod stored;
mod thread;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use api::{
    BUDGET_WINDOW, BatchVerdict, Changes, GRANT_COUNTED, GRANT_LIFE, Grant, GrantToken, Holder, IntentId, KeeperInfo,
    Reservation, Rev, RoleError, RuntimeState, SessionStore, Share, SharedHold, StoreError, StoreEvent, StoreFuture,
    Unfinished, Write,
};
pub(crate) use api::{DriverRole, KEPT_OUTCOMES, Lease, grant_of};

/// Whether a process of this host is still there (a pid another host wrote says nothing here).
pub(crate) fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            return true;
        }
        std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// This machine's name, as driver claims and creation intents record it.
pub(crate) fn this_host() -> String {
    #[cfg(unix)]
    {
        let mut name = [0u8; 256];
        // SAFETY: gethostname writes at most `len` bytes into the buffer it is given.
        if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0 {
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            return String::from_utf8_lossy(&name[..end]).into_owned();
        }
    }
    String::new()
}

/// This process as the outcomes of its calls name it: `HOST:PID`.
pub(crate) fn this_process() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| format!("{}:{}", this_host(), std::process::id())).clone()
}

/// A store as `--store`, `WBSESSIONS_STORE` or the config's `store` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file: a plain path, or `sqlite:PATH`.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://…` or `postgresql://…`.
    Postgres(postgres::PgUrl),
}

/// A store's name that cannot be used; it never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownScheme {
    #[error(
        "the store {given:?} names the unknown kind {scheme:?}; use a file path, sqlite:PATH or postgres://USER@HOST/DB"
    )]
    Kind { given: String, scheme: String },
    #[error("{0}; write it as postgres://USER[:PASSWORD]@HOST[:PORT]/DB")]
    BadUrl(#[from] postgres::BadUrl),
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
                let scheme = scheme.to_ascii_lowercase();
                if matches!(scheme.as_str(), "postgres" | "postgresql") {
                    return Ok(Location::Postgres(postgres::PgUrl::parse(given)?));
                }
                return Err(UnknownScheme::Kind { given: postgres::without_password(given), scheme });
            }
        }
        Ok(Location::Sqlite(PathBuf::from(given)))
    }

    /// The file of a file-based store.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// Whether the store is there already (a missing one is created by commands that write).
    pub fn exists(&self) -> bool {
        match self {
            Location::Sqlite(path) => path.exists(),
            // Whether its tables are there is known once connected: `open` says.
            Location::Postgres(_) => true,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => write!(f, "{url}"),
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
        Location::Postgres(url) => postgres::open(url, access),
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
        let unknown = Location::parse("nosuch://u:pw@x").unwrap_err();
        assert!(matches!(&unknown, UnknownScheme::Kind { scheme, .. } if scheme == "nosuch"));
        assert!(unknown.to_string().contains("sqlite:PATH"), "{unknown}");
        assert!(!unknown.to_string().contains("pw"), "{unknown}");
        let pg = Location::parse("postgres://keeper:pw@db.example/team").unwrap();
        assert_eq!(pg.to_string(), "postgres://keeper@db.example:5432/team");
        assert!(Location::parse("postgresql://keeper@db.example/team").is_ok());
    }
}
