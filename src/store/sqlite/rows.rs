//! The rows: sessions with their newest outcome, outcomes, revisions and tombstones; what is read
//! and written, in SQL.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::db::{BULK_CACHE_KIB, BULK_ROWS, DEFAULT_CACHE_KIB, Db, KEPT_TOMBSTONES};
use crate::session::{Outcome, SessionId, SessionKey, SortBy, TrackedSession};
use crate::store::stored::{StoredOutcome, StoredSession, interval_ms, parse_time, time_text};
use crate::store::{Changes, KEPT_OUTCOMES, StoreError, Unfinished, Write};

impl Db {
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
    pub fn first_page(&self, sort: SortBy, reverse: bool, limit: usize) -> Result<Vec<TrackedSession>, StoreError> {
        let (column, order) = crate::store::stored::page_order(sort, reverse);
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
    pub(crate) fn changes_since(&self, since: i64) -> Result<Changes, StoreError> {
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

    /// Creations whose process is gone without saying how they ended, taken out as they are
    /// read. One whose session is in the store since (only its last step was lost) is not one.
    pub fn take_unfinished(&mut self) -> Result<Vec<Unfinished>, StoreError> {
        self.write(|tx, _| {
            let mut found = Vec::new();
            let mut gone = Vec::new();
            let mut rows = tx.prepare_cached(
                "SELECT i.id, i.name, i.workbook, i.started_at, i.pid, \
                 EXISTS (SELECT 1 FROM sessions s WHERE s.name = i.name \
                         AND (s.last_refresh >= i.started_at OR s.created_at >= i.started_at)) \
                 FROM intents i",
            )?;
            let intents = rows.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, bool>(5)?,
                ))
            })?;
            for intent in intents {
                let (id, name, workbook, started_at, pid, stored) = intent?;
                if u32::try_from(pid).is_ok_and(crate::store::process_alive) {
                    continue;
                }
                gone.push(id);
                if !stored {
                    let started_at = parse_time(&started_at).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                    found.push(Unfinished { name, workbook, started_at });
                }
            }
            drop(rows);
            for id in gone {
                tx.prepare_cached("DELETE FROM intents WHERE id = ?1")?.execute([id])?;
            }
            Ok(found)
        })
    }

    /// The name of the session that tracks `id`, if one does.
    pub fn name_of_id(&self, id: &SessionId) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT name FROM sessions WHERE session_id = ?1")
            .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
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

    /// The newest `limit` failed calls among the store's most recent outcomes, whichever process
    /// made them, newest first, each with its session's name. Only the newest `RECENT_OUTCOMES`
    /// are looked at: a range of the primary key, so the read stays quick at millions of rows.
    pub fn problems(&self, limit: usize) -> Result<Vec<(String, Outcome)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{OUTCOME_COLUMNS}, s.name FROM outcomes o JOIN sessions s ON s.id = o.session \
                 WHERE o.id > (SELECT coalesce(max(id), 0) FROM outcomes) - ?1 AND o.kind != 'ok' \
                 ORDER BY o.id DESC LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![RECENT_OUTCOMES, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, Option<String>>(10)?.unwrap_or_default(), outcome_from_row(r, 0)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Adds a session; its `key` is set from the new row. A taken name or session id is refused.
    /// A session's columns, `name` to `rev`, in the order the insert and the rewrite name them.
    fn columns(session: &TrackedSession, rev: i64) -> [Value; 12] {
        [
            Value::from(session.name.clone()),
            Value::from(session.workbook.to_string()),
            Value::from(session.session_id.as_str().to_string()),
            Value::from(session.mode.as_str().to_string()),
            Value::from(interval_ms(session.interval)),
            Value::from(session.recreate),
            Value::from(session.auto),
            Value::from(session.status.as_str().to_string()),
            Value::from(session.last_refresh.map(time_text)),
            Value::from(session.failures),
            Value::from(time_text(session.created_at)),
            Value::from(rev),
        ]
    }

    #[cfg(test)]
    pub fn insert(&mut self, session: &mut TrackedSession) -> Result<(), StoreError> {
        self.insert_with_history(session, &[])
    }

    /// Adds a session with the calls that brought it (its creation, a path lookup), oldest first.
    pub(crate) fn insert_with_history(
        &mut self,
        session: &mut TrackedSession,
        history: &[Outcome],
    ) -> Result<(), StoreError> {
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
        let mut clash: Option<StoreError> = None;
        let keys = self.write(|tx, rev| {
            clash = None;
            let mut keys = Vec::with_capacity(sessions.len());
            let mut by_name = tx.prepare_cached("SELECT 1 FROM sessions WHERE name = ?1")?;
            let mut by_id = tx.prepare_cached("SELECT name FROM sessions WHERE session_id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO sessions (name, workbook, session_id, mode, interval_ms, recreate, auto, status, last_refresh, failures, created_at, rev, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
                // The owner is written once: a rewrite (a refresh's outcome) never changes it.
                let owner = Value::from(session.owner.clone());
                insert.execute(rusqlite::params_from_iter(Self::columns(session, rev).into_iter().chain([owner])))?;
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
            (Err(e), None) => Err(e),
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
                        let updated = match state {
                            Some(state) => tx
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
                                ])?,
                            None => tx.prepare_cached("UPDATE sessions SET rev = ?2 WHERE id = ?1")?.execute(params![key, rev])?,
                        };
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
                    Write::Rewrite(session) => {
                        tx.prepare_cached(
                            "UPDATE sessions SET name = ?2, workbook = ?3, session_id = ?4, mode = ?5, interval_ms = ?6, \
                             recreate = ?7, auto = ?8, status = ?9, last_refresh = ?10, failures = ?11, created_at = ?12, \
                             rev = ?13 WHERE id = ?1",
                        )?
                        .execute(rusqlite::params_from_iter(
                            std::iter::once(Value::from(session.key)).chain(Self::columns(session, rev)),
                        ))?;
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
                    Write::Batching(verdict) => {
                        tx.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES ('batching', ?1)",
                            [verdict.to_meta()],
                        )?;
                    }
                    Write::Hold(hold) => {
                        tx.prepare_cached("INSERT INTO holds (workbook, until_ms) VALUES (?1, ?2)")?
                            .execute(params![hold.workbook, hold.until.timestamp_millis()])?;
                    }
                    Write::Creating { id, name, workbook } => {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO intents (id, name, workbook, started_at, pid) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![id, name, workbook.to_string(), time_text(Utc::now()), std::process::id()])?;
                    }
                    Write::Created { id } => {
                        tx.prepare_cached("DELETE FROM intents WHERE id = ?1")?.execute([id])?;
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
     o.at, o.latency_ms, s.owner \
     FROM sessions s LEFT JOIN outcomes o ON o.id = (SELECT max(id) FROM outcomes WHERE session = s.id)";
const OUTCOME_COLUMNS: &str =
    "SELECT at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message, made_by";

/// How many of the newest outcomes `problems` looks through.
const RECENT_OUTCOMES: i64 = 20_000;

/// A session row with its newest outcome, read leniently (`stored`).
fn session_from_row(row: &Row<'_>) -> rusqlite::Result<TrackedSession> {
    let text = |i: usize| row.get::<_, String>(i).ok();
    let stored = StoredSession {
        key: row.get(0)?,
        name: text(1),
        workbook: text(2),
        session_id: text(3),
        mode: text(4),
        interval_ms: row.get(5).ok(),
        recreate: row.get(6).ok(),
        auto: row.get(7).ok(),
        status: text(8),
        last_refresh: row.get(9).ok(),
        failures: row.get(10).ok(),
        created_at: text(11),
        last_at: row.get::<_, Option<String>>(12).ok().flatten(),
        last_latency_ms: row.get::<_, Option<i64>>(13).ok().flatten(),
        owner: row.get::<_, Option<String>>(14).ok().flatten(),
    };
    stored.read().ok_or_else(|| rusqlite::Error::InvalidColumnType(3, "session_id".into(), rusqlite::types::Type::Text))
}

/// An outcome from columns `at, action, kind, latency_ms, http_status, codes, request_id,
/// client_request_id, message, made_by` starting at `first`.
fn outcome_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<Outcome> {
    let text = |i: usize| row.get::<_, Option<String>>(first + i).ok().flatten();
    Ok(StoredOutcome {
        at: text(0),
        action: text(1),
        kind: text(2),
        latency_ms: row.get(first + 3).ok(),
        http_status: row.get(first + 4).ok().flatten(),
        codes: text(5),
        request_id: text(6),
        client_request_id: text(7),
        message: text(8),
        made_by: text(9),
    }
    .read())
}

fn insert_outcome(conn: &Connection, key: SessionKey, o: &Outcome) -> rusqlite::Result<()> {
    let o = StoredOutcome::of(o);
    conn.prepare_cached(
        "INSERT INTO outcomes (session, at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message, made_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        key,
        o.at,
        o.action,
        o.kind,
        o.latency_ms,
        o.http_status,
        o.codes,
        o.request_id,
        o.client_request_id,
        o.message,
        o.made_by
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::db::MIGRATIONS;
    use super::*;
    use crate::session::SettingsChange;
    use crate::session::{Action, MAX_INTERVAL, Mode, OutcomeKind, WorkbookRef};
    use crate::store::RuntimeState;
    use std::path::Path;
    use std::time::Duration;

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
            by: None,
        }
    }

    #[test]
    fn sessions_survive_reopening_and_keep_fifty_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/s.db");
        let mut store = Db::open(&path).unwrap();
        let mut a = sample("a");
        a.interval = Some(Duration::from_secs(90));
        store.insert(&mut a).unwrap();
        assert!(matches!(store.insert(&mut sample("a")), Err(StoreError::NameTaken(_))));
        let writes: Vec<Write> = (0..60)
            .map(|n| Write::Record { key: a.key, state: Some(RuntimeState::of(&a)), outcome: Some(outcome(n)) })
            .collect();
        store.apply(&writes).unwrap();
        drop(store);

        let store = Db::open(&path).unwrap();
        let back = store.session("a").unwrap();
        assert_eq!(back.interval, Some(Duration::from_secs(90)));
        assert_eq!(back.last_call.map(|c| c.latency_ms), Some(59), "the newest rides along");
        let history = store.outcomes(back.key, 100).unwrap();
        assert_eq!(history.len(), KEPT_OUTCOMES);
        assert_eq!(history[0].latency_ms, 59, "newest first");
        assert_eq!(history[49].latency_ms, 10);
        assert!(matches!(store.session("zzz"), Err(StoreError::NotFound(_))));
    }

    /// What went wrong lately, for any session, whichever process recorded it; and a read
    /// that looks at the newest outcomes only.
    #[test]
    fn problems_are_the_newest_failures_of_every_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Db::open(&dir.path().join("s.db")).unwrap();
        let (mut a, mut b) = (sample("a"), sample("b"));
        b.session_id = SessionId::new("other-id").unwrap();
        store.insert(&mut a).unwrap();
        store.insert(&mut b).unwrap();
        let failed = |n: u64, kind: OutcomeKind| Outcome { kind, request_id: Some(format!("req-{n}")), ..outcome(n) };
        let writes = vec![
            Write::Record { key: a.key, state: None, outcome: Some(failed(1, OutcomeKind::Expired)) },
            Write::Record { key: b.key, state: None, outcome: Some(outcome(2)) },
            Write::Record { key: b.key, state: None, outcome: Some(failed(3, OutcomeKind::Throttled)) },
            Write::Record { key: a.key, state: None, outcome: Some(outcome(4)) },
        ];
        store.apply(&writes).unwrap();
        let problems = store.problems(10).unwrap();
        let seen: Vec<(&str, OutcomeKind, Option<&str>)> =
            problems.iter().map(|(name, o)| (name.as_str(), o.kind, o.request_id.as_deref())).collect();
        assert_eq!(
            seen,
            [("b", OutcomeKind::Throttled, Some("req-3")), ("a", OutcomeKind::Expired, Some("req-1"))],
            "newest first, successes left out"
        );
        assert_eq!(store.problems(1).unwrap().len(), 1);
        // Beyond the newest RECENT_OUTCOMES, nothing is looked at.
        let many: Vec<Write> = (0..RECENT_OUTCOMES as u64)
            .map(|n| Write::Record { key: b.key, state: None, outcome: Some(outcome(n)) })
            .collect();
        store.apply(&many).unwrap();
        assert!(store.problems(10).unwrap().is_empty());
    }

    #[test]
    fn the_same_session_id_is_not_tracked_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Db::open(&dir.path().join("s.db")).unwrap();
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
        let err = Db::open(&garbage).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("garbage.db"));
        assert_eq!(std::fs::read(&garbage).unwrap(), before);

        let mut fake = b"SQLite format 3\0".to_vec();
        fake.extend(std::iter::repeat_n(0xAB, 4096));
        let broken = dir.path().join("broken.db");
        std::fs::write(&broken, &fake).unwrap();
        assert!(matches!(Db::open(&broken), Err(StoreError::Corrupt { .. })));
        assert_eq!(std::fs::read(&broken).unwrap(), fake);

        let newer = dir.path().join("newer.db");
        {
            let conn = Connection::open(&newer).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
            conn.execute_batch("CREATE TABLE sessions (x); CREATE TABLE outcomes (y);").unwrap();
        }
        let before = std::fs::read(&newer).unwrap();
        assert!(matches!(Db::open(&newer), Err(StoreError::Newer { found: 99, .. })));
        assert_eq!(std::fs::read(&newer).unwrap(), before);

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE photos (x)").unwrap();
        assert!(matches!(Db::open(&foreign), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn a_missing_store_is_not_created_by_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.db");
        assert!(matches!(Db::open_read_only(&path), Err(StoreError::Missing { .. })));
        assert!(matches!(Db::open_for_reading(&path), Err(StoreError::Missing { .. })));
        assert!(!path.exists());
        Db::open(&path).unwrap().insert(&mut sample("a")).unwrap();
        let reader = Db::open_read_only(&path).unwrap();
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
        let store = Db::open(&path).unwrap();
        let old = store.session("old").unwrap();
        assert_eq!(old.interval, Some(MAX_INTERVAL), "a huge interval is read as the most allowed");
        assert!(!store.paused().unwrap());
    }

    #[test]
    fn settings_renames_clash_and_removal_takes_the_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Db::open(&dir.path().join("s.db")).unwrap();
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
        store
            .apply(&[Write::Record { key: a.key, state: Some(RuntimeState::of(&a)), outcome: Some(outcome(1)) }])
            .unwrap();
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
        let mut store = Db::open(&path).unwrap();
        let (mut a, mut b) = (sample("a"), sample("b"));
        store.insert(&mut a).unwrap();
        store.insert(&mut b).unwrap();
        let seen = store.rev().unwrap();
        let reader = Db::open(&path).unwrap();
        assert!(reader.changes_since(seen).unwrap().sessions.is_empty());
        store
            .apply(&[Write::Record { key: a.key, state: Some(RuntimeState::of(&a)), outcome: Some(outcome(7)) }])
            .unwrap();
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
        let mut mine = Db::open(&path).unwrap();
        let v0 = mine.data_version().unwrap();
        mine.insert(&mut sample("a")).unwrap();
        assert_eq!(mine.data_version().unwrap(), v0);
        let mut other = Db::open(&path).unwrap();
        other.insert(&mut sample("b")).unwrap();
        assert_ne!(mine.data_version().unwrap(), v0);
    }

    #[cfg(unix)]
    #[test]
    fn the_store_and_its_side_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/s.db");
        let mut store = Db::open(&path).unwrap();
        store.insert(&mut sample("a")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new/s.db-wal")), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
    }
}
