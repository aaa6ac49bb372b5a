//! The SQLite store: the session list, the outcomes of each, and the few facts every process that
//! opens the store must agree on (whether automatic refresh is paused), kept across runs.
//!
//! WAL mode, a schema version in `PRAGMA user_version` with forward-only migrations, and a file
//! that is checked before anything is written to it: a corrupt or newer store is refused and left
//! byte-for-byte unchanged. Every write transaction starts `IMMEDIATE`, so that the busy timeout
//! applies to it and several processes can write one store side by side.

mod lock;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::future::BoxFuture;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, params};

pub use lock::{DriverLock, LockError, lock_path, read_holder};
pub use writer::{StoreEvent, StoreWriter, WriterHandle};

use crate::session::{
    Action, LastCall, MAX_INTERVAL, MIN_INTERVAL, Mode, Outcome, OutcomeKind, SessionId, SessionKey, SettingsChange,
    Status, TrackedSession, WorkbookRef,
};
use crate::text;

/// Outcomes kept per session.
pub const KEPT_OUTCOMES: usize = 50;

/// How long a write waits for another process's write to finish, per try.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Removal records kept for watchers that sync by revision; one further behind reloads the list.
const KEPT_TOMBSTONES: i64 = 10_000;

/// Each entry moves the schema one version up; the index + 1 is the version it produces.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        workbook TEXT NOT NULL,
        session_id TEXT NOT NULL,
        mode TEXT NOT NULL,
        interval_ms INTEGER,
        recreate INTEGER NOT NULL,
        auto INTEGER NOT NULL,
        status TEXT NOT NULL,
        last_refresh TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE outcomes (
        id INTEGER PRIMARY KEY,
        session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        kind TEXT NOT NULL,
        latency_ms INTEGER NOT NULL,
        http_status INTEGER,
        codes TEXT,
        request_id TEXT,
        client_request_id TEXT,
        message TEXT
    );
    CREATE INDEX outcomes_by_session ON outcomes(session, id);
",
    // Revisions let a watcher read only what changed; meta holds what all processes share.
    "
    ALTER TABLE sessions ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX sessions_by_rev ON sessions(rev);
    CREATE INDEX sessions_by_session_id ON sessions(session_id);
    CREATE TABLE tombstones (session INTEGER NOT NULL, rev INTEGER NOT NULL);
    CREATE INDEX tombstones_by_rev ON tombstones(rev);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value);
    INSERT INTO meta (key, value) VALUES ('rev', 0), ('tombstones_from', 0), ('paused', 0);
",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {path} is not a wbsessions database ({detail}); it was left unchanged: move it away or pass another --store"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the store {path} has schema version {found}, newer than this wbsessions understands ({supported}); it was left unchanged: upgrade wbsessions"
    )]
    Newer { path: PathBuf, found: i64, supported: i64 },
    #[error(
        "the store {path} does not exist; create a session with `wbsessions create` or `wbsessions add`, or pass the right --store"
    )]
    Missing { path: PathBuf },
    #[error(
        "the store {path} is an empty file; it was left unchanged: create a session with `wbsessions create` or `wbsessions add`, or pass the right --store"
    )]
    Empty { path: PathBuf },
    #[error(
        "permission denied: cannot write the store {path}; check its permissions and its folder's, or pass another --store"
    )]
    ReadOnly { path: PathBuf },
    #[error(
        "permission denied: cannot read the store {path}; check its permissions and its folder's, or pass another --store"
    )]
    Unreadable { path: PathBuf },
    #[error("cannot open the store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the store {path} is busy: another process held it for {} s; try again", BUSY_TIMEOUT.as_secs() * 3)]
    Busy { path: PathBuf },
    #[error("the store {path} failed: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("no session is named {0:?}; `wbsessions list` shows the names")]
    NotFound(String),
    #[error("a session named {0:?} is already tracked; choose another name or `wbsessions remove {0}` first")]
    NameTaken(String),
    #[error("that session id is already tracked as {0:?}; `wbsessions show {0}` shows it")]
    IdTaken(String),
    #[error("the store writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// Whether the fault is the user's to fix (a bad file or name) rather than a failed operation.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::Newer { .. }
                | StoreError::Missing { .. }
                | StoreError::Empty { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Unreadable { .. }
                | StoreError::NotFound(_)
                | StoreError::NameTaken(_)
                | StoreError::IdTaken(_)
        )
    }
}

/// One change to the store; a batch of them is written in one transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// The result of a call: the session's new state, and the outcome to append.
    Record {
        key: SessionKey,
        state: RuntimeState,
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
    /// Automatic refresh paused for the whole store, for every process that opens it.
    Paused(bool),
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
    pub rev: i64,
    pub sessions: Vec<TrackedSession>,
    pub removed: Vec<SessionKey>,
    pub paused: bool,
    pub full: bool,
}

/// How the engine reaches the store: the writer thread in the program, a map in memory in tests.
pub trait Persist: Send + Sync {
    /// Queues a write for the next batch; nobody waits for it.
    fn write(&self, write: Write);
    /// Writes and resolves once committed durably.
    fn write_acked(&self, writes: Vec<Write>) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Adds a session (its `key` set from the new row), refusing a taken name or id.
    fn insert(
        &self,
        session: TrackedSession,
        history: Vec<Outcome>,
    ) -> BoxFuture<'static, Result<TrackedSession, StoreError>>;
    /// The newest outcomes of a session, newest first.
    fn history(&self, key: SessionKey, limit: usize) -> BoxFuture<'static, Result<Vec<Outcome>, StoreError>>;
    /// Every session, for an engine that started before reading them.
    fn load(&self) -> BoxFuture<'static, Result<Vec<TrackedSession>, StoreError>>;
    /// Resolves once everything queued before it has committed durably.
    fn flush(&self) -> BoxFuture<'static, ()>;
}

/// Above this many rows an insert gets a bigger page cache for its transaction.
const BULK_ROWS: usize = 1000;
/// Negative: KiB, as SQLite reads `cache_size`. 64 MiB for a bulk insert; 8 MiB while writes come
/// fast, which holds the pages a keeper of 10,000 sessions writes every minute (with SQLite's
/// 2 MB it read them back from the file over and over); SQLite's 2 MB otherwise.
const BULK_CACHE_KIB: i64 = -65_536;
const BUSY_CACHE_KIB: i64 = -8_192;
const DEFAULT_CACHE_KIB: i64 = -2_000;

pub struct Store {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    durable: bool,
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn interval_ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.min(MAX_INTERVAL).as_millis()).unwrap_or(i64::MAX))
}

/// Whether the store exists. Its content is checked through SQLite itself, never by opening the
/// file here: closing such a descriptor would drop SQLite's locks for the whole process.
fn check_header(path: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            Err(StoreError::Corrupt { path: path.to_path_buf(), detail: "it is a directory".into() })
        }
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(StoreError::Unreadable { path: path.to_path_buf() })
        }
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), source }),
    }
}

/// For commands that only read: the store must exist and hold something. An empty file would be
/// a valid empty database to SQLite, and opening it would make it one.
fn check_readable(path: &Path) -> Result<(), StoreError> {
    if !check_header(path)? {
        return Err(StoreError::Missing { path: path.to_path_buf() });
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(StoreError::Empty { path: path.to_path_buf() }),
        _ => Ok(()),
    }
}

/// The store and the files SQLite keeps beside it, private to their owner.
fn tighten_store_files(path: &Path) {
    crate::files::tighten_path(path);
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_os_string();
        side.push(suffix);
        crate::files::tighten_path(Path::new(&side));
    }
}

fn is_read_only_error(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

impl Store {
    /// Opens the store for writing, creating it (and its folder, 0700) if missing and migrating
    /// an older one. The file and SQLite's files beside it are 0600.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        let existed = check_header(path)?;
        if !existed {
            if let Some(parent) = path.parent() {
                crate::files::private_dir(parent).map_err(|e| match e.kind() {
                    std::io::ErrorKind::PermissionDenied => StoreError::ReadOnly { path: path.to_path_buf() },
                    _ => io(e),
                })?;
            }
            // SQLite gives its -wal and -shm files the database file's mode.
            crate::files::ensure_private_file(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => StoreError::ReadOnly { path: path.to_path_buf() },
                _ => io(e),
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| {
            if is_read_only_error(&e) {
                StoreError::ReadOnly { path: path.to_path_buf() }
            } else {
                StoreError::Corrupt { path: path.to_path_buf(), detail: e.to_string() }
            }
        })?;
        // SQLite quietly opens a write-protected file read-only; every write would fail later,
        // after a Graph call, so it is said now.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(StoreError::ReadOnly { path: path.to_path_buf() });
        }
        let mut store = Store { conn, path: path.to_path_buf(), read_only: false, durable: false };
        let version = store.check_schema()?;
        // Only a file known to be ours is touched. Tightening is by path (chmod), never through a
        // descriptor, which would drop SQLite's POSIX locks for the whole process.
        if existed {
            tighten_store_files(path);
        }
        store.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| store.err(e))?;
        store
            .conn
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| store.write_err(e))?;
        store.migrate(version)?;
        Ok(store)
    }

    /// Opens an existing store for reading only: nothing is created or changed, and a read-only
    /// file (or folder) still works.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        check_readable(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = |conn: Connection| -> Result<Store, StoreError> {
            let store = Store { conn, path: path.to_path_buf(), read_only: true, durable: false };
            store.check_schema()?;
            store.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| store.err(e))?;
            Ok(store)
        };
        let first = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::Corrupt { path: path.to_path_buf(), detail: e.to_string() })
            .and_then(open);
        match first {
            // A WAL store in a folder this user cannot write: its shared-memory file cannot be
            // made, but nobody without write access can be writing it either, so it is read as it
            // stands.
            Err(StoreError::ReadOnly { .. } | StoreError::Corrupt { .. }) => {
                let uri = format!("file:{}?immutable=1", path.display());
                match Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI).map(open) {
                    Ok(Ok(store)) => Ok(store),
                    _ => first,
                }
            }
            other => other,
        }
    }

    /// Opens the store for a command that only reads: a missing store is an error (nothing is
    /// created), a writable one is upgraded as any command would, a read-only one is read.
    pub fn open_for_reading(path: &Path) -> Result<Store, StoreError> {
        check_readable(path)?;
        match Store::open(path) {
            Err(StoreError::ReadOnly { .. }) => Store::open_read_only(path),
            other => other,
        }
    }

    /// Read-only checks: nothing may be written to a file that turns out not to be ours.
    fn check_schema(&self) -> Result<i64, StoreError> {
        let corrupt = |e: rusqlite::Error| {
            if is_read_only_error(&e) {
                StoreError::ReadOnly { path: self.path.clone() }
            } else {
                StoreError::Corrupt { path: self.path.clone(), detail: e.to_string() }
            }
        };
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(corrupt)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer { path: self.path.clone(), found: version, supported: SCHEMA_VERSION });
        }
        let tables: Vec<String> = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(corrupt)?;
        if version == 0 && !tables.is_empty() {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: "it holds tables of another program".into(),
            });
        }
        if version >= 1 && !(tables.iter().any(|t| t == "sessions") && tables.iter().any(|t| t == "outcomes")) {
            return Err(StoreError::Corrupt { path: self.path.clone(), detail: "its tables are missing".into() });
        }
        Ok(version)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// An error from a write: a read-only file says so, with the path.
    fn write_err(&self, source: rusqlite::Error) -> StoreError {
        if is_read_only_error(&source) {
            StoreError::ReadOnly { path: self.path.clone() }
        } else if is_busy(&source) {
            StoreError::Busy { path: self.path.clone() }
        } else {
            self.err(source)
        }
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        if from >= SCHEMA_VERSION {
            return Ok(());
        }
        self.write(|tx, _| {
            // Another process may have migrated while this one waited for the lock.
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(now.max(0) as usize) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", index as i64 + 1)?;
            }
            Ok(())
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits durably (`synchronous = FULL`) from now on: for writes a command reports as done.
    pub fn set_durable(&mut self, durable: bool) -> Result<(), StoreError> {
        if self.durable != durable && !self.read_only {
            let level = if durable { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level).map_err(|e| self.err(e))?;
            self.durable = durable;
        }
        Ok(())
    }

    /// A bigger page cache while writes come fast (`BUSY_CACHE_KIB`).
    pub fn set_busy(&mut self, busy: bool) -> Result<(), StoreError> {
        let kib = if busy { BUSY_CACHE_KIB } else { DEFAULT_CACHE_KIB };
        self.conn.pragma_update(None, "cache_size", kib).map_err(|e| self.err(e))
    }

    /// Runs `work` in an IMMEDIATE transaction that takes the next revision, so that the busy
    /// timeout applies from the start; tries again while other writers hold the store.
    fn write<T>(
        &mut self,
        mut work: impl FnMut(&Transaction<'_>, i64) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly { path: self.path.clone() });
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let result = (|| {
                let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                // The meta table arrives with the second migration; before it, there is no revision.
                let rev = tx
                    .prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'rev' RETURNING value")
                    .and_then(|mut bump| bump.query_row([], |r| r.get(0)))
                    .optional()
                    .or_else(|e| {
                        if matches!(&e, rusqlite::Error::SqliteFailure(_, Some(m)) if m.contains("no such table")) {
                            Ok(None)
                        } else {
                            Err(e)
                        }
                    })?
                    .unwrap_or(0);
                let value = work(&tx, rev)?;
                tx.commit()?;
                Ok(value)
            })();
            match result {
                Err(e) if is_busy(&e) && tries < 3 => continue,
                Err(e) => return Err(self.write_err(e)),
                Ok(value) => return Ok(value),
            }
        }
    }

    /// Changes whenever another connection commits (SQLite's `PRAGMA data_version`).
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut version| version.query_row([], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// The store's current revision: every write transaction takes the next one.
    pub fn rev(&self) -> Result<i64, StoreError> {
        self.meta_i64("rev")
    }

    fn meta_i64(&self, key: &str) -> Result<i64, StoreError> {
        let value = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut select| select.query_row([key], |r| r.get::<_, i64>(0)));
        match value {
            Ok(value) => Ok(value),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
            // A first-version store read without upgrading it has no meta table yet.
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(0),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Whether automatic refresh is paused for the whole store.
    pub fn paused(&self) -> Result<bool, StoreError> {
        Ok(self.meta_i64("paused")? != 0)
    }

    /// Every session, with its newest outcome.
    pub fn sessions(&self) -> Result<Vec<TrackedSession>, StoreError> {
        let mut sessions = Vec::new();
        self.each_session(|s| {
            sessions.push(s);
            Ok(())
        })?;
        Ok(sessions)
    }

    /// Every session and the revision they were read at, in one read: changes after that
    /// revision are exactly what `changes_since(rev)` will return.
    pub fn snapshot(&self) -> Result<(Vec<TrackedSession>, i64), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let rev = self.rev()?;
        let sessions = self.sessions()?;
        drop(tx);
        Ok((sessions, rev))
    }

    /// Calls `each` with every session in name order, without holding them all in memory.
    pub fn each_session<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(TrackedSession) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt =
            self.conn.prepare_cached(&format!("{SESSION_SELECT} ORDER BY s.name")).map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], session_from_row).map_err(|e| self.err(e))?;
        for row in rows {
            each(row.map_err(|e| self.err(e))?)?;
        }
        Ok(())
    }

    /// The first `limit` sessions in an order close to `sort`: what a dashboard shows before the
    /// rest is read. The keys are found first, so that only those rows are read whole.
    pub fn first_page(
        &self,
        sort: crate::session::SortBy,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<TrackedSession>, StoreError> {
        use crate::session::SortBy;
        let column = match sort {
            SortBy::Name | SortBy::Latency => "name",
            SortBy::Workbook => "workbook",
            SortBy::Mode => "mode",
            SortBy::Status => "status",
            SortBy::Last | SortBy::Next | SortBy::Expires => "last_refresh",
            SortBy::Failures => "failures",
        };
        let descending = reverse != matches!(sort, SortBy::Failures);
        let order = if descending { "DESC" } else { "ASC" };
        let keys: Vec<SessionKey> = self
            .conn
            .prepare(&format!("SELECT id FROM sessions ORDER BY {column} {order}, name LIMIT ?1"))
            .and_then(|mut s| s.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))?;
        let mut stmt =
            self.conn.prepare_cached(&format!("{SESSION_SELECT} WHERE s.id = ?1")).map_err(|e| self.err(e))?;
        let mut page = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(session) = stmt.query_row([key], session_from_row).optional().map_err(|e| self.err(e))? {
                page.push(session);
            }
        }
        Ok(page)
    }

    /// Every session's name, in order: what shell completion offers.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT name FROM sessions ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    /// What changed since revision `since`.
    pub fn changes_since(&self, since: i64) -> Result<Changes, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let rev = self.rev()?;
        let paused = self.paused()?;
        let kept_from = self.meta_i64("tombstones_from")?;
        if since < kept_from {
            let sessions = self.sessions()?;
            drop(tx);
            return Ok(Changes { rev, sessions, removed: Vec::new(), paused, full: true });
        }
        let mut stmt =
            self.conn.prepare_cached(&format!("{SESSION_SELECT} WHERE s.rev > ?1")).map_err(|e| self.err(e))?;
        let sessions = stmt
            .query_map([since], session_from_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let removed = self
            .conn
            .prepare_cached("SELECT session FROM tombstones WHERE rev > ?1")
            .and_then(|mut s| s.query_map([since], |r| r.get(0))?.collect::<Result<Vec<SessionKey>, _>>())
            .map_err(|e| self.err(e))?;
        drop(tx);
        Ok(Changes { rev, sessions, removed, paused, full: false })
    }

    pub fn session(&self, name: &str) -> Result<TrackedSession, StoreError> {
        self.conn
            .query_row(&format!("{SESSION_SELECT} WHERE s.name = ?1"), [name], session_from_row)
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    /// The newest `limit` outcomes of a session, newest first.
    pub fn outcomes(&self, key: SessionKey, limit: usize) -> Result<Vec<Outcome>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{OUTCOME_COLUMNS} FROM outcomes WHERE session = ?1 ORDER BY id DESC LIMIT ?2"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![key, i64::try_from(limit).unwrap_or(i64::MAX)], |r| outcome_from_row(r, 0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Adds a session; its `key` is set from the new row. A taken name or session id is refused.
    pub fn insert(&mut self, session: &mut TrackedSession) -> Result<(), StoreError> {
        self.insert_with_history(session, &[])
    }

    /// Adds a session with the calls that brought it (its creation, a path lookup), oldest first.
    pub fn insert_with_history(&mut self, session: &mut TrackedSession, history: &[Outcome]) -> Result<(), StoreError> {
        let key = self.insert_rows(&[(session, history)])?;
        session.key = key.first().copied().unwrap_or_default();
        if let Some(last) = history.last() {
            session.last_call = Some(last.into());
        }
        Ok(())
    }

    /// Adds sessions in one transaction: all of them, or none if one name or id is taken (the
    /// error names the first).
    pub fn insert_all(&mut self, sessions: &[TrackedSession]) -> Result<Vec<SessionKey>, StoreError> {
        let rows: Vec<(&TrackedSession, &[Outcome])> = sessions.iter().map(|s| (s, &[][..])).collect();
        self.insert_rows(&rows)
    }

    fn insert_rows(&mut self, sessions: &[(&TrackedSession, &[Outcome])]) -> Result<Vec<SessionKey>, StoreError> {
        // A bulk insert touches index pages all over the file (session ids are random); with
        // SQLite's default 2 MB cache it spends its time writing pages out and reading them back.
        let bulk = sessions.len() > BULK_ROWS;
        if bulk {
            self.conn.pragma_update(None, "cache_size", BULK_CACHE_KIB).map_err(|e| self.err(e))?;
        }
        let inserted = self.insert_rows_now(sessions);
        if bulk {
            self.conn.pragma_update(None, "cache_size", DEFAULT_CACHE_KIB).map_err(|e| self.err(e))?;
        }
        inserted
    }

    fn insert_rows_now(&mut self, sessions: &[(&TrackedSession, &[Outcome])]) -> Result<Vec<SessionKey>, StoreError> {
        let path = self.path.clone();
        let mut clash: Option<StoreError> = None;
        let keys = self.write(|tx, rev| {
            clash = None;
            let mut keys = Vec::with_capacity(sessions.len());
            let mut by_name = tx.prepare_cached("SELECT 1 FROM sessions WHERE name = ?1")?;
            let mut by_id = tx.prepare_cached("SELECT name FROM sessions WHERE session_id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO sessions (name, workbook, session_id, mode, interval_ms, recreate, auto, status, last_refresh, failures, created_at, rev)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for &(session, history) in sessions {
                if by_name.exists([&session.name])? {
                    clash = Some(StoreError::NameTaken(session.name.clone()));
                    return Err(rusqlite::Error::QueryReturnedNoRows);
                }
                if let Some(other) =
                    by_id.query_row([session.session_id.as_str()], |r| r.get::<_, String>(0)).optional()?
                {
                    clash = Some(StoreError::IdTaken(other));
                    return Err(rusqlite::Error::QueryReturnedNoRows);
                }
                insert.execute(params![
                    session.name,
                    session.workbook.to_string(),
                    session.session_id.as_str(),
                    session.mode.as_str(),
                    interval_ms(session.interval),
                    session.recreate,
                    session.auto,
                    session.status.as_str(),
                    session.last_refresh.map(time_text),
                    session.failures,
                    time_text(session.created_at),
                    rev,
                ])?;
                let key = tx.last_insert_rowid();
                for outcome in history {
                    insert_outcome(tx, key, outcome)?;
                }
                keys.push(key);
            }
            Ok(keys)
        });
        match (keys, clash) {
            (_, Some(clash)) => Err(clash),
            (Ok(keys), None) => Ok(keys),
            (Err(e), None) => Err(match e {
                StoreError::Sqlite { source, .. } => StoreError::Sqlite { path, source },
                other => other,
            }),
        }
    }

    /// Writes a batch in one transaction: all of it or none.
    pub fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let mut clash: Option<StoreError> = None;
        let result = self.write(|tx, rev| {
            clash = None;
            let mut touched = Vec::new();
            let mut removed = false;
            for write in writes {
                match write {
                    Write::Record { key, state, outcome } => {
                        let updated = tx
                            .prepare_cached(
                                "UPDATE sessions SET status = ?2, last_refresh = ?3, failures = ?4, session_id = ?5, workbook = ?6, rev = ?7 WHERE id = ?1",
                            )?
                            .execute(params![
                                key,
                                state.status.as_str(),
                                state.last_refresh.map(time_text),
                                state.failures,
                                state.session_id.as_str(),
                                state.workbook.to_string(),
                                rev,
                            ])?;
                        // The session may have been removed by another process meanwhile: nothing to record.
                        if updated == 0 {
                            continue;
                        }
                        if let Some(outcome) = outcome {
                            insert_outcome(tx, *key, outcome)?;
                            touched.push(*key);
                        }
                    }
                    Write::Settings { key, change } => {
                        if let Some(name) = &change.name {
                            let other: Option<i64> = tx
                                .prepare_cached("SELECT id FROM sessions WHERE name = ?1 AND id != ?2")?
                                .query_row(params![name, key], |r| r.get(0))
                                .optional()?;
                            if other.is_some() {
                                clash = Some(StoreError::NameTaken(name.clone()));
                                return Err(rusqlite::Error::QueryReturnedNoRows);
                            }
                        }
                        // Only the columns the change names are written: another process's edit
                        // of the others, committed a moment ago, stands.
                        tx.prepare_cached(
                            "UPDATE sessions SET name = coalesce(?2, name), \
                             interval_ms = CASE WHEN ?3 THEN ?4 ELSE interval_ms END, \
                             recreate = coalesce(?5, recreate), auto = coalesce(?6, auto), rev = ?7 WHERE id = ?1",
                        )?
                        .execute(params![
                            key,
                            change.name,
                            change.interval.is_some(),
                            interval_ms(change.interval.flatten()),
                            change.recreate,
                            change.auto,
                            rev
                        ])?;
                    }
                    Write::Remove { key } => {
                        tx.execute("DELETE FROM outcomes WHERE session = ?1", [key])?;
                        if tx.execute("DELETE FROM sessions WHERE id = ?1", [key])? > 0 {
                            tx.execute("INSERT INTO tombstones (session, rev) VALUES (?1, ?2)", params![key, rev])?;
                            removed = true;
                        }
                    }
                    Write::Paused(paused) => {
                        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'paused'", [i64::from(*paused)])?;
                    }
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for key in touched {
                tx.prepare_cached(
                    "DELETE FROM outcomes WHERE session = ?1 AND id <= (SELECT id FROM outcomes WHERE session = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )?
                .execute(params![key, KEPT_OUTCOMES as i64])?;
            }
            if removed {
                prune_tombstones(tx)?;
            }
            Ok(())
        });
        match (result, clash) {
            (_, Some(clash)) => Err(clash),
            (result, None) => result,
        }
    }
}

/// Keeps the removal records bounded; a watcher behind the oldest kept reloads the whole list.
fn prune_tombstones(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let count: i64 = tx.query_row("SELECT count(*) FROM tombstones", [], |r| r.get(0))?;
    if count > KEPT_TOMBSTONES {
        let cut: i64 = tx.query_row(
            "SELECT rev FROM tombstones ORDER BY rev DESC LIMIT 1 OFFSET ?1",
            [KEPT_TOMBSTONES / 2],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM tombstones WHERE rev <= ?1", [cut])?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'tombstones_from'", [cut])?;
    }
    Ok(())
}

/// A session row with its newest outcome (if any) joined beside it.
const SESSION_SELECT: &str = "SELECT s.id, s.name, s.workbook, s.session_id, s.mode, s.interval_ms, s.recreate, s.auto, \
     s.status, s.last_refresh, s.failures, s.created_at, \
     o.at, o.latency_ms \
     FROM sessions s LEFT JOIN outcomes o ON o.id = (SELECT max(id) FROM outcomes WHERE session = s.id)";
const OUTCOME_COLUMNS: &str =
    "SELECT at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message";

fn bad_value(column: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.into())
}

fn parse_time(column: usize, text: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| bad_value(column, e.to_string()))
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<TrackedSession> {
    let workbook: String = row.get(2)?;
    let session_id: String = row.get(3)?;
    let mode: String = row.get(4)?;
    let status: String = row.get(8)?;
    let last_refresh: Option<String> = row.get(9)?;
    let created_at: String = row.get(11)?;
    let last_call_at: Option<String> = row.get(12)?;
    Ok(TrackedSession {
        key: row.get(0)?,
        name: row.get(1)?,
        workbook: WorkbookRef::parse(&workbook).map_err(|e| bad_value(2, e.to_string()))?,
        session_id: SessionId::new(&session_id).map_err(|e| bad_value(3, e.to_string()))?,
        mode: match mode.as_str() {
            "persistent" => Mode::Persistent,
            "non-persistent" => Mode::NonPersistent,
            other => return Err(bad_value(4, format!("unknown mode {other:?}"))),
        },
        interval: row
            .get::<_, Option<i64>>(5)?
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)).clamp(MIN_INTERVAL, MAX_INTERVAL)), // a hand-edited store must not overflow the scheduler
        recreate: row.get(6)?,
        auto: row.get(7)?,
        status: match Status::parse(&status) {
            // Stale is what `ok` turns into with time; it is never stored, but read it kindly.
            Some(Status::Stale) => Status::Ok,
            Some(status) => status,
            None => return Err(bad_value(8, format!("unknown status {status:?}"))),
        },
        last_refresh: last_refresh.map(|t| parse_time(9, &t)).transpose()?,
        failures: row.get(10)?,
        created_at: parse_time(11, &created_at)?,
        last_call: match last_call_at {
            Some(at) => Some(LastCall {
                at: parse_time(12, &at)?,
                latency_ms: u64::try_from(row.get::<_, i64>(13)?).unwrap_or(0),
            }),
            None => None,
        },
    })
}

/// An outcome from columns `at, action, kind, latency_ms, http_status, codes, request_id,
/// client_request_id, message` starting at `first`. What a server said is cleaned again on the
/// way out: a store written by an older build may hold raw text.
fn outcome_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<Outcome> {
    let at: String = row.get(first)?;
    let action: String = row.get(first + 1)?;
    let kind: String = row.get(first + 2)?;
    let codes: Option<String> = row.get(first + 5)?;
    let request_id: Option<String> = row.get(first + 6)?;
    let client_request_id: Option<String> = row.get(first + 7)?;
    let message: Option<String> = row.get(first + 8)?;
    Ok(Outcome {
        at: parse_time(first, &at)?,
        action: Action::parse(&action).ok_or_else(|| bad_value(first + 1, format!("unknown action {action:?}")))?,
        kind: OutcomeKind::parse(&kind).ok_or_else(|| bad_value(first + 2, format!("unknown kind {kind:?}")))?,
        latency_ms: u64::try_from(row.get::<_, i64>(first + 3)?).unwrap_or(0),
        http_status: row.get(first + 4)?,
        codes: codes
            .map(|c| c.split(',').filter(|s| !s.is_empty()).map(|c| text::clean(c, text::MAX_TOKEN)).collect())
            .unwrap_or_default(),
        request_id: text::clean_opt(request_id.as_deref(), text::MAX_TOKEN),
        client_request_id: text::clean_opt(client_request_id.as_deref(), text::MAX_TOKEN),
        message: text::clean_opt(message.as_deref(), text::MAX_MESSAGE),
    })
}

fn insert_outcome(conn: &Connection, key: SessionKey, o: &Outcome) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO outcomes (session, at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        key,
        time_text(o.at),
        o.action.as_str(),
        o.kind.as_str(),
        i64::try_from(o.latency_ms).unwrap_or(i64::MAX),
        o.http_status,
        (!o.codes.is_empty()).then(|| o.codes.join(",")),
        o.request_id,
        o.client_request_id,
        o.message.as_deref().map(|m| text::clean(m, text::MAX_MESSAGE)),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> TrackedSession {
        TrackedSession::new(
            name.into(),
            WorkbookRef::parse("me/drive/items/W1").unwrap(),
            SessionId::new(&format!("cluster=SIM&session={name}")).unwrap(),
            Mode::Persistent,
            Utc::now(),
        )
    }

    fn outcome(n: u64) -> Outcome {
        Outcome {
            at: Utc::now(),
            action: Action::Refresh,
            kind: OutcomeKind::Ok,
            latency_ms: n,
            http_status: Some(204),
            codes: Vec::new(),
            request_id: None,
            client_request_id: None,
            message: None,
        }
    }

    #[test]
    fn sessions_survive_reopening_and_keep_fifty_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/s.db");
        let mut store = Store::open(&path).unwrap();
        let mut a = sample("a");
        a.interval = Some(Duration::from_secs(90));
        store.insert(&mut a).unwrap();
        assert!(matches!(store.insert(&mut sample("a")), Err(StoreError::NameTaken(_))));
        let writes: Vec<Write> = (0..60)
            .map(|n| Write::Record { key: a.key, state: RuntimeState::of(&a), outcome: Some(outcome(n)) })
            .collect();
        store.apply(&writes).unwrap();
        drop(store);

        let store = Store::open(&path).unwrap();
        let back = store.session("a").unwrap();
        assert_eq!(back.interval, Some(Duration::from_secs(90)));
        assert_eq!(back.last_call.map(|c| c.latency_ms), Some(59), "the newest rides along");
        let history = store.outcomes(back.key, 100).unwrap();
        assert_eq!(history.len(), KEPT_OUTCOMES);
        assert_eq!(history[0].latency_ms, 59, "newest first");
        assert_eq!(history[49].latency_ms, 10);
        assert!(matches!(store.session("zzz"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn the_same_session_id_is_not_tracked_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        store.insert(&mut sample("a")).unwrap();
        let mut twin = sample("a");
        twin.name = "b".into();
        match store.insert(&mut twin) {
            Err(StoreError::IdTaken(name)) => assert_eq!(name, "a"),
            other => panic!("{other:?}"),
        }
        // One clash refuses the whole batch.
        let batch = [sample("c"), sample("d"), sample("c")];
        assert!(matches!(store.insert_all(&batch), Err(StoreError::NameTaken(n)) if n == "c"));
        assert_eq!(store.sessions().unwrap().len(), 1);
    }

    #[test]
    fn garbage_and_newer_stores_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, b"this is not a database at all, just some text").unwrap();
        let before = std::fs::read(&garbage).unwrap();
        let err = Store::open(&garbage).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("garbage.db"));
        assert_eq!(std::fs::read(&garbage).unwrap(), before);

        let mut fake = b"SQLite format 3\0".to_vec();
        fake.extend(std::iter::repeat_n(0xAB, 4096));
        let broken = dir.path().join("broken.db");
        std::fs::write(&broken, &fake).unwrap();
        assert!(matches!(Store::open(&broken), Err(StoreError::Corrupt { .. })));
        assert_eq!(std::fs::read(&broken).unwrap(), fake);

        let newer = dir.path().join("newer.db");
        {
            let conn = Connection::open(&newer).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
            conn.execute_batch("CREATE TABLE sessions (x); CREATE TABLE outcomes (y);").unwrap();
        }
        let before = std::fs::read(&newer).unwrap();
        assert!(matches!(Store::open(&newer), Err(StoreError::Newer { found: 99, .. })));
        assert_eq!(std::fs::read(&newer).unwrap(), before);

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE photos (x)").unwrap();
        assert!(matches!(Store::open(&foreign), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn a_missing_store_is_not_created_by_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.db");
        assert!(matches!(Store::open_read_only(&path), Err(StoreError::Missing { .. })));
        assert!(matches!(Store::open_for_reading(&path), Err(StoreError::Missing { .. })));
        assert!(!path.exists());
        Store::open(&path).unwrap().insert(&mut sample("a")).unwrap();
        let reader = Store::open_read_only(&path).unwrap();
        assert_eq!(reader.sessions().unwrap().len(), 1);
    }

    #[test]
    fn an_old_store_is_migrated_and_keeps_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO sessions (name, workbook, session_id, mode, interval_ms, recreate, auto, status, failures, created_at)
                 VALUES ('old', 'me/drive/items/W', 'S', 'persistent', 99999999999999999, 0, 1, 'ok', 0, '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.session("old").unwrap();
        assert_eq!(old.interval, Some(MAX_INTERVAL), "a huge interval is read as the most allowed");
        assert!(!store.paused().unwrap());
    }

    #[test]
    fn settings_renames_clash_and_removal_takes_the_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let (mut a, mut b) = (sample("a"), sample("b"));
        store.insert(&mut a).unwrap();
        store.insert(&mut b).unwrap();
        let rename = |name: &str| SettingsChange { name: Some(name.into()), ..SettingsChange::default() };
        assert!(matches!(
            store.apply(&[Write::Settings { key: a.key, change: rename("b") }]),
            Err(StoreError::NameTaken(_))
        ));
        // Two processes edit different settings of one session: neither undoes the other.
        let interval = SettingsChange { interval: Some(Some(Duration::from_secs(77))), ..SettingsChange::default() };
        store.apply(&[Write::Settings { key: a.key, change: interval }]).unwrap();
        store.apply(&[Write::Settings { key: a.key, change: rename("renamed") }]).unwrap();
        let edited = store.session("renamed").unwrap();
        assert_eq!((edited.interval, edited.recreate), (Some(Duration::from_secs(77)), a.recreate));
        let back = SettingsChange { interval: Some(None), ..SettingsChange::default() };
        store.apply(&[Write::Settings { key: a.key, change: back }]).unwrap();
        assert_eq!(store.session("renamed").unwrap().interval, None, "back to the default");
        store.apply(&[Write::Record { key: a.key, state: RuntimeState::of(&a), outcome: Some(outcome(1)) }]).unwrap();
        store.apply(&[Write::Remove { key: a.key }]).unwrap();
        let names: Vec<String> = store.sessions().unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["b"]);
        let orphans: i64 = store.conn.query_row("SELECT count(*) FROM outcomes", [], |r| r.get(0)).unwrap();
        assert_eq!(orphans, 0);
    }

    #[test]
    fn changes_since_a_revision_name_what_was_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open(&path).unwrap();
        let (mut a, mut b) = (sample("a"), sample("b"));
        store.insert(&mut a).unwrap();
        store.insert(&mut b).unwrap();
        let seen = store.rev().unwrap();
        let reader = Store::open(&path).unwrap();
        assert!(reader.changes_since(seen).unwrap().sessions.is_empty());
        store.apply(&[Write::Record { key: a.key, state: RuntimeState::of(&a), outcome: Some(outcome(7)) }]).unwrap();
        store.apply(&[Write::Remove { key: b.key }, Write::Paused(true)]).unwrap();
        let changes = reader.changes_since(seen).unwrap();
        assert_eq!(changes.sessions.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(changes.removed, [b.key]);
        assert!(changes.paused && !changes.full);
        assert!(reader.changes_since(changes.rev).unwrap().sessions.is_empty());
    }

    #[test]
    fn data_version_moves_only_for_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut mine = Store::open(&path).unwrap();
        let v0 = mine.data_version().unwrap();
        mine.insert(&mut sample("a")).unwrap();
        assert_eq!(mine.data_version().unwrap(), v0);
        let mut other = Store::open(&path).unwrap();
        other.insert(&mut sample("b")).unwrap();
        assert_ne!(mine.data_version().unwrap(), v0);
    }

    #[cfg(unix)]
    #[test]
    fn the_store_and_its_side_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/s.db");
        let mut store = Store::open(&path).unwrap();
        store.insert(&mut sample("a")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new/s.db-wal")), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
    }
}
