//! The SQLite store: the session list and the last outcomes of each, kept across runs.
//!
//! WAL mode, a schema version in `PRAGMA user_version` with forward-only migrations, and a file
//! that is checked before anything is written to it: a corrupt or newer store is refused and left
//! byte-for-byte unchanged.

mod lock;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

pub use lock::{DriverLock, LockError, lock_path, read_holder};
pub use writer::{StoreEvent, StoreWriter, WriterHandle};

use crate::session::{Action, Mode, Outcome, OutcomeKind, SessionId, SessionKey, Status, TrackedSession, WorkbookRef};

/// Outcomes kept per session.
pub const KEPT_OUTCOMES: usize = 50;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Each entry moves the schema one version up; the index + 1 is the version it produces.
const MIGRATIONS: &[&str] = &["
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
"];

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
    #[error("cannot open the store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the store {path} failed: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("no session is named {0:?}; `wbsessions list` shows the names")]
    NotFound(String),
    #[error("a session named {0:?} is already tracked; choose another name or `wbsessions remove {0}` first")]
    NameTaken(String),
    #[error("the store writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// Whether the fault is the user's to fix (a bad file or name) rather than a failed operation.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::Newer { .. } | StoreError::NotFound(_) | StoreError::NameTaken(_)
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
    /// The user changed how the session is kept.
    Settings {
        key: SessionKey,
        settings: SessionSettings,
    },
    Remove {
        key: SessionKey,
    },
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

/// What the user changes.
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
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Store {
    /// Opens the store, creating it (and its folder) if missing and migrating an older one.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        let corrupt = |detail: String| StoreError::Corrupt { path: path.to_path_buf(), detail };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return Err(corrupt("it is a directory".into())),
            Ok(meta) if meta.len() > 0 => {
                use std::io::Read;
                let mut head = [0u8; 16];
                let mut file = std::fs::File::open(path).map_err(io)?;
                if file.read_exact(&mut head).is_err() || &head != SQLITE_MAGIC {
                    return Err(corrupt("it does not start with the SQLite header".into()));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
            }
            Err(e) => return Err(io(e)),
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| corrupt(e.to_string()))?;
        // Read-only checks first: nothing may be written to a file that turns out not to be ours.
        let version: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| corrupt(e.to_string()))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer { path: path.to_path_buf(), found: version, supported: SCHEMA_VERSION });
        }
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| corrupt(e.to_string()))?;
        if version == 0 && !tables.is_empty() {
            return Err(corrupt("it holds tables of another program".into()));
        }
        if version >= 1 && !(tables.iter().any(|t| t == "sessions") && tables.iter().any(|t| t == "outcomes")) {
            return Err(corrupt("its tables are missing".into()));
        }
        let mut store = Store { conn, path: path.to_path_buf() };
        store
            .conn
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| store.err(e))?;
        store.conn.busy_timeout(Duration::from_secs(5)).map_err(|e| store.err(e))?;
        store.migrate(version)?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        if from >= SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        // Another process may have migrated while this one waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(now.max(0) as usize) {
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", index as i64 + 1).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes whenever another connection commits (SQLite's `PRAGMA data_version`).
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// Every session, each with up to `outcomes` of its newest outcomes.
    pub fn sessions(&self, outcomes: usize) -> Result<Vec<TrackedSession>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached(&format!("{SESSION_COLUMNS} ORDER BY name")).map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], session_from_row).map_err(|e| self.err(e))?;
        let mut sessions = Vec::new();
        for row in rows {
            sessions.push(row.map_err(|e| self.err(e))?);
        }
        if outcomes > 0 {
            self.attach_outcomes(&mut sessions, outcomes)?;
        }
        Ok(sessions)
    }

    fn attach_outcomes(&self, sessions: &mut [TrackedSession], limit: usize) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{OUTCOME_COLUMNS} WHERE session = ?1 ORDER BY id DESC LIMIT ?2"))
            .map_err(|e| self.err(e))?;
        for session in sessions {
            let rows = stmt.query_map(params![session.key, limit as i64], outcome_from_row).map_err(|e| self.err(e))?;
            session.outcomes = rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    pub fn session(&self, name: &str) -> Result<TrackedSession, StoreError> {
        let mut session = self
            .conn
            .query_row(&format!("{SESSION_COLUMNS} WHERE name = ?1"), [name], session_from_row)
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        self.attach_outcomes(std::slice::from_mut(&mut session), KEPT_OUTCOMES)?;
        Ok(session)
    }

    /// Adds a session; its `key` is set from the new row.
    pub fn insert(&mut self, session: &mut TrackedSession) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        let taken: bool = tx
            .query_row("SELECT EXISTS(SELECT 1 FROM sessions WHERE name = ?1)", [&session.name], |r| r.get(0))
            .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        if taken {
            return Err(StoreError::NameTaken(session.name.clone()));
        }
        tx.execute(
            "INSERT INTO sessions (name, workbook, session_id, mode, interval_ms, recreate, auto, status, last_refresh, failures, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                session.name,
                session.workbook.to_string(),
                session.session_id.as_str(),
                session.mode.as_str(),
                session.interval.map(|d| d.as_millis() as i64),
                session.recreate,
                session.auto,
                session.status.as_str(),
                session.last_refresh.map(time_text),
                session.failures,
                time_text(session.created_at),
            ],
        )
        .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        session.key = tx.last_insert_rowid();
        for outcome in session.outcomes.iter().rev() {
            insert_outcome(&tx, session.key, outcome)
                .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        }
        tx.commit().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })
    }

    /// Writes a batch in one transaction: all of it or none.
    pub fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        let mut touched = Vec::new();
        for write in writes {
            match write {
                Write::Record { key, state, outcome } => {
                    let updated = tx
                        .prepare_cached(
                            "UPDATE sessions SET status = ?2, last_refresh = ?3, failures = ?4, session_id = ?5, workbook = ?6 WHERE id = ?1",
                        )
                        .and_then(|mut stmt| stmt.execute(params![
                            key,
                            state.status.as_str(),
                            state.last_refresh.map(time_text),
                            state.failures,
                            state.session_id.as_str(),
                            state.workbook.to_string()
                        ]))
                        .map_err(err)?;
                    // The session may have been removed by another process meanwhile: nothing to record.
                    if updated == 0 {
                        continue;
                    }
                    if let Some(outcome) = outcome {
                        insert_outcome(&tx, *key, outcome).map_err(err)?;
                        touched.push(*key);
                    }
                }
                Write::Settings { key, settings } => {
                    let clash: Option<i64> = tx
                        .query_row(
                            "SELECT id FROM sessions WHERE name = ?1 AND id != ?2",
                            params![settings.name, key],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(err)?;
                    if clash.is_some() {
                        return Err(StoreError::NameTaken(settings.name.clone()));
                    }
                    tx.execute(
                        "UPDATE sessions SET name = ?2, interval_ms = ?3, recreate = ?4, auto = ?5 WHERE id = ?1",
                        params![
                            key,
                            settings.name,
                            settings.interval.map(|d| d.as_millis() as i64),
                            settings.recreate,
                            settings.auto
                        ],
                    )
                    .map_err(err)?;
                }
                Write::Remove { key } => {
                    tx.execute("DELETE FROM outcomes WHERE session = ?1", [key]).map_err(err)?;
                    tx.execute("DELETE FROM sessions WHERE id = ?1", [key]).map_err(err)?;
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            tx.prepare_cached(
                "DELETE FROM outcomes WHERE session = ?1 AND id <= (SELECT id FROM outcomes WHERE session = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
            .and_then(|mut stmt| stmt.execute(params![key, KEPT_OUTCOMES as i64]))
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

const SESSION_COLUMNS: &str = "SELECT id, name, workbook, session_id, mode, interval_ms, recreate, auto, status, last_refresh, failures, created_at FROM sessions";
const OUTCOME_COLUMNS: &str =
    "SELECT at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message FROM outcomes";

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
        interval: row.get::<_, Option<i64>>(5)?.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        recreate: row.get(6)?,
        auto: row.get(7)?,
        status: Status::parse(&status).ok_or_else(|| bad_value(8, format!("unknown status {status:?}")))?,
        last_refresh: last_refresh.map(|t| parse_time(9, &t)).transpose()?,
        failures: row.get(10)?,
        created_at: parse_time(11, &created_at)?,
        outcomes: Vec::new(),
    })
}

fn outcome_from_row(row: &Row<'_>) -> rusqlite::Result<Outcome> {
    let at: String = row.get(0)?;
    let action: String = row.get(1)?;
    let kind: String = row.get(2)?;
    let codes: Option<String> = row.get(5)?;
    Ok(Outcome {
        at: parse_time(0, &at)?,
        action: Action::parse(&action).ok_or_else(|| bad_value(1, format!("unknown action {action:?}")))?,
        kind: OutcomeKind::parse(&kind).ok_or_else(|| bad_value(2, format!("unknown kind {kind:?}")))?,
        latency_ms: row.get::<_, i64>(3)?.max(0) as u64,
        http_status: row.get(4)?,
        codes: codes.map(|c| c.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default(),
        request_id: row.get(6)?,
        client_request_id: row.get(7)?,
        message: row.get(8)?,
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
        o.latency_ms.min(i64::MAX as u64) as i64,
        o.http_status,
        (!o.codes.is_empty()).then(|| o.codes.join(",")),
        o.request_id,
        o.client_request_id,
        o.message,
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
            SessionId::new("cluster=SIM&session=abc").unwrap(),
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
            codes: vec![],
            request_id: Some(format!("r{n}")),
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
        assert_eq!(back.outcomes.len(), KEPT_OUTCOMES);
        assert_eq!(back.outcomes[0].latency_ms, 59, "newest first");
        assert_eq!(back.outcomes[49].latency_ms, 10);
        assert!(matches!(store.session("zzz"), Err(StoreError::NotFound(_))));
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

        let mut fake = SQLITE_MAGIC.to_vec();
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
    fn settings_renames_clash_and_removal_takes_the_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let (mut a, mut b) = (sample("a"), sample("b"));
        store.insert(&mut a).unwrap();
        store.insert(&mut b).unwrap();
        let mut settings = SessionSettings::of(&a);
        settings.name = "b".into();
        assert!(matches!(
            store.apply(&[Write::Settings { key: a.key, settings: settings.clone() }]),
            Err(StoreError::NameTaken(_))
        ));
        settings.name = "renamed".into();
        store.apply(&[Write::Settings { key: a.key, settings }]).unwrap();
        store.apply(&[Write::Record { key: a.key, state: RuntimeState::of(&a), outcome: Some(outcome(1)) }]).unwrap();
        store.apply(&[Write::Remove { key: a.key }]).unwrap();
        let names: Vec<String> = store.sessions(0).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["b"]);
        let orphans: i64 = store.conn.query_row("SELECT count(*) FROM outcomes", [], |r| r.get(0)).unwrap();
        assert_eq!(orphans, 0);
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
}
