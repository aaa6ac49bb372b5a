//! The SQLite file: opening it (checked before anything is written to it: a corrupt or newer
//! store is refused and left byte-for-byte unchanged), its schema in `PRAGMA user_version` with
//! forward-only migrations, and write transactions. WAL mode; every write transaction starts
//! `IMMEDIATE`, so that the busy timeout applies to it and several processes can write one store
//! side by side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};

use crate::store::StoreError;

/// How long a write waits for another process's write to finish, per try.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Removal records kept for watchers that sync by revision; one further behind reloads the list.
pub(super) const KEPT_TOMBSTONES: i64 = 10_000;

/// Each entry moves the schema one version up; the index + 1 is the version it produces.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // A session about to be created at Graph is written down first: a process killed between
    // Graph's answer and the session's row leaves this behind, and the next start says so.
    "
    CREATE TABLE intents (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        workbook TEXT NOT NULL,
        started_at TEXT NOT NULL,
        pid INTEGER NOT NULL
    );
",
    // The request budget every process on the store shares: starts granted (and requests made
    // beyond them), by when (`budget.rs`).
    "
    CREATE TABLE budget (at_ms INTEGER NOT NULL, used INTEGER NOT NULL);
    CREATE INDEX budget_by_time ON budget(at_ms);
",
    // Which process made each call (`HOST:PID`); whose sign-in each session belongs to; the
    // workbooks Graph asked a process to wait on, for all of them (`budget.rs`).
    "
    ALTER TABLE outcomes ADD COLUMN made_by TEXT;
    ALTER TABLE sessions ADD COLUMN owner TEXT;
    CREATE TABLE holds (id INTEGER PRIMARY KEY, workbook TEXT NOT NULL, until_ms INTEGER NOT NULL);
",
];

pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Above this many rows an insert gets a bigger page cache for its transaction.
pub(super) const BULK_ROWS: usize = 1000;
/// Negative: KiB, as SQLite reads `cache_size`. 64 MiB for a bulk insert; 8 MiB while writes come
/// fast, which holds the pages a keeper of 10,000 sessions writes every minute (with SQLite's
/// 2 MB it read them back from the file over and over); SQLite's 2 MB otherwise.
pub(super) const BULK_CACHE_KIB: i64 = -65_536;
const BUSY_CACHE_KIB: i64 = -8_192;
pub(super) const DEFAULT_CACHE_KIB: i64 = -2_000;

/// One connection to the file; lives on the store's thread (`writer`).
pub(crate) struct Db {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    pub(super) read_only: bool,
    durable: bool,
    /// The schema has the `meta` table (its second version on): revisions and shared flags.
    has_meta: bool,
}

/// The path as messages show it.
pub(super) fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Whether the store exists. Its content is checked through SQLite itself, never by opening the
/// file here: closing such a descriptor would drop SQLite's locks for the whole process.
fn check_header(path: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        // SQLite would open a device or a pipe as an empty database and write beside it
        // (`/dev/null-journal`): anything but a plain file is refused before it is touched.
        Ok(meta) if !meta.is_file() => Err(StoreError::NotAFile { store: shown(path), kind: kind_of(&meta) }),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(StoreError::Unreadable { store: shown(path) })
        }
        Err(source) => Err(StoreError::Unavailable { store: shown(path), detail: source.to_string() }),
    }
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = meta.file_type();
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_fifo() {
            return "a pipe";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() { "a directory" } else { "a special file" }
}

/// For commands that only read: the store must exist and hold something. An empty file would be
/// a valid empty database to SQLite, and opening it would make it one.
fn check_readable(path: &Path) -> Result<(), StoreError> {
    if !check_header(path)? {
        return Err(StoreError::Missing { store: shown(path) });
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(StoreError::Empty { store: shown(path) }),
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

/// What a failure to read a file as a store means: only SQLite's own verdict makes it "not a
/// wbsessions database"; a full disk or a failing one is said as such.
fn unreadable_as_store(path: &Path, e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::DiskFull { store: shown(path) },
        Some(ErrorCode::SystemIoFailure | ErrorCode::OutOfMemory) => {
            StoreError::Unavailable { store: shown(path), detail: e.to_string() }
        }
        _ if is_read_only_error(e) => StoreError::ReadOnly { store: shown(path) },
        _ => StoreError::Corrupt { store: shown(path), detail: e.to_string() },
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

impl Db {
    /// Opens the store for writing, creating it (and its folder, 0700) if missing and migrating
    /// an older one. The file and SQLite's files beside it are 0600.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let io = |source: std::io::Error| StoreError::Unavailable { store: shown(path), detail: source.to_string() };
        let existed = check_header(path)?;
        if !existed {
            if let Some(parent) = path.parent() {
                crate::files::private_dir(parent).map_err(|e| match e.kind() {
                    std::io::ErrorKind::PermissionDenied => StoreError::ReadOnly { store: shown(path) },
                    _ => io(e),
                })?;
            }
            // SQLite gives its -wal and -shm files the database file's mode.
            crate::files::ensure_private_file(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => StoreError::ReadOnly { store: shown(path) },
                _ => io(e),
            })?;
        }
        if existed {
            for suffix in ["-wal", "-shm"] {
                let mut side = path.as_os_str().to_os_string();
                side.push(suffix);
                crate::files::owner_read_write(Path::new(&side));
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| unreadable_as_store(path, &e))?;
        // SQLite quietly opens a write-protected file read-only; every write would fail later,
        // after a Graph call, so it is said now.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(StoreError::ReadOnly { store: shown(path) });
        }
        let mut store = Db { conn, path: path.to_path_buf(), read_only: false, durable: false, has_meta: false };
        // Several processes may open (and create) one store at once: every step waits its turn.
        store.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| store.err(e))?;
        let version = store.check_schema()?;
        // Only a file known to be ours is touched. Tightening is by path (chmod), never through a
        // descriptor, which would drop SQLite's POSIX locks for the whole process.
        if existed {
            tighten_store_files(path);
        }
        // Turning a new file to WAL takes it whole for a moment; another process creating the
        // same store at once may be refused without waiting: a moment, and again.
        let mut tries = 0u64;
        loop {
            tries += 1;
            match store
                .conn
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            {
                Err(e) if is_busy(&e) && tries < 5 => std::thread::sleep(Duration::from_millis(20 * tries)),
                Err(e) => return Err(store.write_err(e)),
                Ok(()) => break,
            }
        }
        store.migrate(version)?;
        store.has_meta = true;
        Ok(store)
    }

    /// Opens an existing store for reading only: nothing is created or changed, and a read-only
    /// file (or folder) still works.
    pub(crate) fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        check_readable(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = |conn: Connection| -> Result<Db, StoreError> {
            let mut store = Db { conn, path: path.to_path_buf(), read_only: true, durable: false, has_meta: false };
            store.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| store.err(e))?;
            store.has_meta = store.check_schema()? >= 2;
            Ok(store)
        };
        let first = Connection::open_with_flags(path, flags).map_err(|e| unreadable_as_store(path, &e)).and_then(open);
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
    pub(crate) fn open_for_reading(path: &Path) -> Result<Db, StoreError> {
        check_readable(path)?;
        match Db::open(path) {
            Err(StoreError::ReadOnly { .. }) => Db::open_read_only(path),
            other => other,
        }
    }

    /// Read-only checks: nothing may be written to a file that turns out not to be ours.
    fn check_schema(&self) -> Result<i64, StoreError> {
        let corrupt = |e: rusqlite::Error| unreadable_as_store(&self.path, &e);
        // The version and the tables in one read: another process creating the store commits
        // both at once, and must not be seen half way (tables without their version).
        let read = self.conn.unchecked_transaction().map_err(corrupt)?;
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(corrupt)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer { store: shown(&self.path), found: version, supported: SCHEMA_VERSION });
        }
        let tables: Vec<String> = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(corrupt)?;
        if version == 0 && !tables.is_empty() {
            return Err(StoreError::Corrupt {
                store: shown(&self.path),
                detail: "it holds tables of another program".into(),
            });
        }
        if version >= 1 && !(tables.iter().any(|t| t == "sessions") && tables.iter().any(|t| t == "outcomes")) {
            return Err(StoreError::Corrupt { store: shown(&self.path), detail: "its tables are missing".into() });
        }
        drop(read);
        Ok(version)
    }

    pub(super) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Backend { store: shown(&self.path), detail: source.to_string() }
    }

    /// An error from a write: a read-only file says so, with the path.
    fn write_err(&self, source: rusqlite::Error) -> StoreError {
        if is_read_only_error(&source) {
            StoreError::ReadOnly { store: shown(&self.path) }
        } else if source.sqlite_error_code() == Some(ErrorCode::DiskFull) {
            StoreError::DiskFull { store: shown(&self.path) }
        } else if is_busy(&source) {
            tracing::warn!(error = %source, code = ?source.sqlite_error(), store = %self.path.display(), "the store stayed busy");
            StoreError::Busy { store: shown(&self.path), waited: BUSY_TIMEOUT * 5 }
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

    /// Commits durably (`synchronous = FULL`) from now on: for writes a command reports as done.
    pub(crate) fn set_durable(&mut self, durable: bool) -> Result<(), StoreError> {
        if self.durable != durable && !self.read_only {
            let level = if durable { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level).map_err(|e| self.err(e))?;
            self.durable = durable;
        }
        Ok(())
    }

    /// Makes every commit so far durable: the write-ahead log is synced and copied into the file
    /// as far as no reader holds it back.
    pub fn sync(&mut self) {
        if !self.read_only
            && let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "a checkpoint of the store failed");
        }
    }

    /// A bigger page cache while writes come fast (`BUSY_CACHE_KIB`).
    pub(crate) fn set_busy(&mut self, busy: bool) -> Result<(), StoreError> {
        let kib = if busy { BUSY_CACHE_KIB } else { DEFAULT_CACHE_KIB };
        self.conn.pragma_update(None, "cache_size", kib).map_err(|e| self.err(e))
    }

    /// Runs `work` in an IMMEDIATE transaction that takes the next revision, so that the busy
    /// timeout applies from the start; tries again while other writers hold the store.
    pub(super) fn write<T>(
        &mut self,
        work: impl FnMut(&Transaction<'_>, i64) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        self.transact(true, work)
    }

    /// A write transaction; `revise`: it changes what watchers follow, so it takes the next
    /// revision (the shared request budget's bookkeeping does not, and wakes nobody).
    pub(super) fn transact<T>(
        &mut self,
        revise: bool,
        mut work: impl FnMut(&Transaction<'_>, i64) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly { store: shown(&self.path) });
        }
        let has_meta = self.has_meta && revise;
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            let result = (|| {
                let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                // The meta table arrives with the second migration; before it, there is no revision.
                let rev = if has_meta {
                    tx.prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'rev' RETURNING value")?
                        .query_row([], |r| r.get(0))
                        .optional()?
                        .unwrap_or(0)
                } else {
                    0
                };
                let value = work(&tx, rev)?;
                tx.commit()?;
                Ok(value)
            })();
            match result {
                // Waited out by the busy timeout already, or refused at once where waiting could
                // not help (another writer changed what this one read): a moment, and again.
                Err(e) if is_busy(&e) && tries < 5 => {
                    tracing::debug!(error = %e, code = ?e.sqlite_error(), tries, "the store was busy; trying again");
                    std::thread::sleep(Duration::from_millis(20 * u64::from(tries)));
                    continue;
                }
                Err(e) => return Err(self.write_err(e)),
                Ok(value) => return Ok(value),
            }
        }
    }

    /// Changes whenever another connection commits (SQLite's `PRAGMA data_version`).
    pub(crate) fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut version| version.query_row([], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// The store's current revision: every write transaction takes the next one.
    pub fn rev(&self) -> Result<i64, StoreError> {
        self.meta_i64("rev")
    }

    pub(super) fn meta_i64(&self, key: &str) -> Result<i64, StoreError> {
        // A first-version store read without upgrading it has no meta table yet.
        if !self.has_meta {
            return Ok(0);
        }
        let value = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut select| select.query_row([key], |r| r.get::<_, i64>(0)));
        match value {
            Ok(value) => Ok(value),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Whether automatic refresh is paused for the whole store.
    pub fn paused(&self) -> Result<bool, StoreError> {
        Ok(self.meta_i64("paused")? != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store read while it was write-protected left SQLite's side files read-only: the next
    /// writer makes them its own again instead of being refused by them.
    #[cfg(unix)]
    #[test]
    fn side_files_left_read_only_are_made_writable_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let db = Db::open(&path).unwrap();
        let sides: Vec<PathBuf> = ["-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut side = path.as_os_str().to_os_string();
                side.push(suffix);
                PathBuf::from(side)
            })
            .collect();
        drop(db);
        for side in &sides {
            std::fs::write(side, b"").unwrap();
            std::fs::set_permissions(side, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        drop(Db::open(&path).unwrap());
        for side in sides.iter().filter(|s| s.exists()) {
            let mode = std::fs::metadata(side).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", side.display());
        }
    }

    /// A pipe, a device or a folder is no store: refused before SQLite opens it (it would
    /// write a journal beside it: `/dev/null-journal`).
    #[cfg(unix)]
    #[test]
    fn anything_but_a_plain_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.db");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        for (path, kind) in
            [(fifo.as_path(), "a pipe"), (Path::new("/dev/null"), "a device"), (dir.path(), "a directory")]
        {
            for opened in [Db::open(path), Db::open_read_only(path)] {
                match opened {
                    Err(StoreError::NotAFile { kind: found, .. }) => assert_eq!(found, kind),
                    Err(e) => panic!("{}: {e}", path.display()),
                    Ok(_) => panic!("{} opened as a store", path.display()),
                }
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing was written beside them");
    }
}
