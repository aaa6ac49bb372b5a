//! The rows on PostgreSQL: what the store's thread asks (`Backend`), in SQL. The same reads and
//! writes as on SQLite, and the same lenient reading of what comes back (`store::stored`).

use chrono::{DateTime, Utc};
use postgres::Row;
use postgres::types::ToSql;

use super::db::{BUDGET_LOCK, PgDb, Refusal};
use super::leases::{self, NOT_ANOTHERS};
use crate::session::{Outcome, SessionId, SessionKey, SortBy, TrackedSession};
use crate::store::stored::{StoredOutcome, StoredSession, interval_ms, parse_time, time_text};
use crate::store::thread::Backend;
use crate::store::{
    Changes, GRANT_COUNTED, Grant, GrantToken, KEPT_OUTCOMES, Reservation, Rev, StoreError, Unfinished, Write, grant_of,
};

/// A session row with its newest outcome (if any) joined beside it.
const SESSION_SELECT: &str = "SELECT s.id, s.name, s.workbook, s.session_id, s.mode, s.interval_ms, s.recreate, s.auto, \
     s.status, s.last_refresh, s.failures, s.created_at, o.at, o.latency_ms, s.owner \
     FROM wbs_sessions s LEFT JOIN wbs_outcomes o ON o.id = (SELECT max(id) FROM wbs_outcomes WHERE session = s.id)";
const OUTCOME_COLUMNS: &str =
    "SELECT at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message, made_by";

/// Removal records kept for watchers that sync by revision; one further behind reloads the list.
const KEPT_TOMBSTONES: i64 = 10_000;
/// How many of the newest outcomes `problems` looks through.
const RECENT_OUTCOMES: i64 = 20_000;
/// A creation started on another host is taken as given up after this long: whether its
/// process lives cannot be known from here.
const FOREIGN_INTENT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

fn session_from_row(row: &Row) -> Option<TrackedSession> {
    let text = |i: usize| row.try_get::<_, String>(i).ok();
    StoredSession {
        key: row.try_get(0).ok()?,
        name: text(1),
        workbook: text(2),
        session_id: text(3),
        mode: text(4),
        interval_ms: row.try_get(5).ok(),
        recreate: row.try_get(6).ok(),
        auto: row.try_get(7).ok(),
        status: text(8),
        last_refresh: row.try_get(9).ok(),
        failures: row.try_get::<_, i64>(10).ok().and_then(|f| u32::try_from(f).ok()),
        created_at: text(11),
        last_at: row.try_get::<_, Option<String>>(12).ok().flatten(),
        last_latency_ms: row.try_get::<_, Option<i64>>(13).ok().flatten(),
        owner: row.try_get::<_, Option<String>>(14).ok().flatten(),
    }
    .read()
}

fn outcome_from_row(row: &Row, first: usize) -> Outcome {
    let text = |i: usize| row.try_get::<_, Option<String>>(first + i).ok().flatten();
    StoredOutcome {
        at: text(0),
        action: text(1),
        kind: text(2),
        latency_ms: row.try_get(first + 3).ok(),
        http_status: row.try_get::<_, Option<i32>>(first + 4).ok().flatten().and_then(|s| u16::try_from(s).ok()),
        codes: text(5),
        request_id: text(6),
        client_request_id: text(7),
        message: text(8),
        made_by: text(9),
    }
    .read()
}

fn insert_outcome(tx: &mut postgres::Transaction<'_>, key: SessionKey, o: &Outcome) -> Result<(), postgres::Error> {
    let o = StoredOutcome::of(o);
    let status = o.http_status.map(i32::from);
    tx.execute(
        "INSERT INTO wbs_outcomes (session, at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message, made_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (session, client_request_id) WHERE client_request_id IS NOT NULL DO NOTHING",
        &[&key, &o.at, &o.action, &o.kind, &o.latency_ms, &status, &o.codes, &o.request_id, &o.client_request_id, &o.message, &o.made_by],
    )?;
    Ok(())
}

/// A session's columns, `name` to `rev`, in the order the insert and the rewrite name them.
struct Columns {
    name: String,
    workbook: String,
    session_id: String,
    mode: &'static str,
    interval_ms: Option<i64>,
    recreate: bool,
    auto: bool,
    status: &'static str,
    last_refresh: Option<String>,
    failures: i64,
    created_at: String,
}

impl Columns {
    fn of(s: &TrackedSession) -> Columns {
        Columns {
            name: s.name.clone(),
            workbook: s.workbook.to_string(),
            session_id: s.session_id.as_str().to_string(),
            mode: s.mode.as_str(),
            interval_ms: interval_ms(s.interval),
            recreate: s.recreate,
            auto: s.auto,
            status: s.status.as_str(),
            last_refresh: s.last_refresh.map(time_text),
            failures: i64::from(s.failures),
            created_at: time_text(s.created_at),
        }
    }

    fn params<'a>(&'a self, rev: &'a i64) -> [&'a (dyn ToSql + Sync); 12] {
        [
            &self.name,
            &self.workbook,
            &self.session_id,
            &self.mode,
            &self.interval_ms,
            &self.recreate,
            &self.auto,
            &self.status,
            &self.last_refresh,
            &self.failures,
            &self.created_at,
            rev,
        ]
    }
}

impl PgDb {
    fn insert_rows(&mut self, sessions: &[(&TrackedSession, &[Outcome])]) -> Result<Vec<SessionKey>, StoreError> {
        self.write(|tx, rev| {
            let mut keys = Vec::with_capacity(sessions.len());
            let by_name = tx.prepare("SELECT 1 FROM wbs_sessions WHERE name = $1")?;
            let by_id = tx.prepare("SELECT name FROM wbs_sessions WHERE session_id = $1")?;
            let insert = tx.prepare(
                "INSERT INTO wbs_sessions (name, workbook, session_id, mode, interval_ms, recreate, auto, status, last_refresh, failures, created_at, rev, owner) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            )?;
            for &(session, history) in sessions {
                if tx.query_opt(&by_name, &[&session.name])?.is_some() {
                    return Err(Refusal::Clash(StoreError::NameTaken(session.name.clone())));
                }
                if let Some(other) = tx.query_opt(&by_id, &[&session.session_id.as_str()])? {
                    return Err(Refusal::Clash(StoreError::IdTaken(other.get(0))));
                }
                let columns = Columns::of(session);
                // The owner is written once: a rewrite (a refresh's outcome) never changes it.
                let mut params = columns.params(&rev).to_vec();
                params.push(&session.owner);
                let key: i64 = tx.query_one(&insert, &params)?.get(0);
                for outcome in history {
                    insert_outcome(tx, key, outcome)?;
                }
                keys.push(key);
            }
            Ok(keys)
        })
    }

    fn apply_one(
        tx: &mut postgres::Transaction<'_>,
        rev: i64,
        write: &Write,
        keeper: Option<&str>,
        touched: &mut Vec<SessionKey>,
        removed: &mut bool,
    ) -> Result<(), Refusal> {
        match write {
            Write::Record { key, state, outcome } => {
                let updated = match state {
                    Some(state) => tx.execute(
                        &format!(
                            "UPDATE wbs_sessions SET status = $2, last_refresh = $3, failures = $4, session_id = $5, workbook = $6, rev = $7 \
                             WHERE id = $1 AND {}",
                            NOT_ANOTHERS.replace("KEEPER", "$8")
                        ),
                        &[
                            key,
                            &state.status.as_str(),
                            &state.last_refresh.map(time_text),
                            &i64::from(state.failures),
                            &state.session_id.as_str(),
                            &state.workbook.to_string(),
                            &rev,
                            &keeper,
                        ],
                    )?,
                    None => tx.execute("UPDATE wbs_sessions SET rev = $2 WHERE id = $1", &[key, &rev])?,
                };
                // Not written because another keeper holds the workbook now: the call was still
                // made, and its outcome goes in the history (a refresh sent twice around a
                // failover is counted there), only the session's state stays the holder's.
                let lost = updated == 0
                    && state.is_some()
                    && tx.execute("UPDATE wbs_sessions SET rev = $2 WHERE id = $1", &[key, &rev])? > 0;
                // The session may have been removed by another process meanwhile: nothing to record.
                if (updated > 0 || lost)
                    && let Some(outcome) = outcome
                {
                    insert_outcome(tx, *key, outcome)?;
                    touched.push(*key);
                }
            }
            Write::Settings { key, change } => {
                if let Some(name) = &change.name
                    && tx.query_opt("SELECT id FROM wbs_sessions WHERE name = $1 AND id != $2", &[name, key])?.is_some()
                {
                    return Err(Refusal::Clash(StoreError::NameTaken(name.clone())));
                }
                // Only the columns the change names are written: another process's edit of the
                // others, committed a moment ago, stands.
                tx.execute(
                    "UPDATE wbs_sessions SET name = coalesce($2, name), \
                     interval_ms = CASE WHEN $3 THEN $4 ELSE interval_ms END, \
                     recreate = coalesce($5, recreate), auto = coalesce($6, auto), rev = $7 WHERE id = $1",
                    &[
                        key,
                        &change.name,
                        &change.interval.is_some(),
                        &interval_ms(change.interval.flatten()),
                        &change.recreate,
                        &change.auto,
                        &rev,
                    ],
                )?;
            }
            Write::Rewrite(session) => {
                let columns = Columns::of(session);
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&session.key];
                params.extend(columns.params(&rev));
                tx.execute(
                    "UPDATE wbs_sessions SET name = $2, workbook = $3, session_id = $4, mode = $5, interval_ms = $6, \
                     recreate = $7, auto = $8, status = $9, last_refresh = $10, failures = $11, created_at = $12, \
                     rev = $13 WHERE id = $1",
                    &params,
                )?;
            }
            Write::Remove { key } => {
                if tx.execute("DELETE FROM wbs_sessions WHERE id = $1", &[key])? > 0 {
                    tx.execute("INSERT INTO wbs_tombstones (session, rev) VALUES ($1, $2)", &[key, &rev])?;
                    *removed = true;
                }
            }
            Write::Paused(paused) => {
                tx.execute("UPDATE wbs_meta SET value = $1 WHERE key = 'paused'", &[&i64::from(*paused)])?;
            }
            Write::Batching(verdict) => {
                tx.execute(
                    "INSERT INTO wbs_meta (key, value) VALUES ('batching', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
                    &[&verdict.to_meta()],
                )?;
            }
            Write::Hold(hold) => {
                tx.execute(
                    "INSERT INTO wbs_holds (workbook, until_ms) VALUES ($1, $2)",
                    &[&hold.workbook, &hold.until.timestamp_millis()],
                )?;
            }
            Write::Creating { id, name, workbook } => {
                tx.execute(
                    "INSERT INTO wbs_intents (id, name, workbook, started_at, pid, host) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (id) DO UPDATE SET name = $2, workbook = $3, started_at = $4, pid = $5, host = $6",
                    &[id, name, &workbook.to_string(), &time_text(Utc::now()), &i64::from(std::process::id()), &crate::store::this_host()],
                )?;
            }
            Write::Created { id } => {
                tx.execute("DELETE FROM wbs_intents WHERE id = $1", &[id])?;
            }
        }
        Ok(())
    }
}

/// Keeps the removal records bounded; a watcher behind the oldest kept reloads the whole list.
fn prune_tombstones(tx: &mut postgres::Transaction<'_>) -> Result<(), postgres::Error> {
    let count: i64 = tx.query_one("SELECT count(*) FROM wbs_tombstones", &[])?.get(0);
    if count > KEPT_TOMBSTONES {
        let cut: i64 = tx
            .query_one("SELECT rev FROM wbs_tombstones ORDER BY rev DESC LIMIT 1 OFFSET $1", &[&(KEPT_TOMBSTONES / 2)])?
            .get(0);
        tx.execute("DELETE FROM wbs_tombstones WHERE rev <= $1", &[&cut])?;
        tx.execute("UPDATE wbs_meta SET value = $1 WHERE key = 'tombstones_from'", &[&cut])?;
    }
    Ok(())
}

fn sessions_where(
    tx: &mut postgres::Transaction<'_>,
    condition: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<TrackedSession>, postgres::Error> {
    Ok(tx.query(&format!("{SESSION_SELECT} {condition}"), params)?.iter().filter_map(session_from_row).collect())
}

impl Backend for PgDb {
    fn read_only(&self) -> bool {
        false
    }

    fn snapshot(&mut self) -> Result<(Vec<TrackedSession>, Rev), StoreError> {
        self.read(|tx| {
            let rev: i64 = tx.query_one("SELECT value FROM wbs_meta WHERE key = 'rev'", &[])?.get(0);
            Ok((sessions_where(tx, "ORDER BY s.name", &[])?, rev))
        })
    }

    fn each_session(
        &mut self,
        each: &mut dyn FnMut(TrackedSession) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        use postgres::fallible_iterator::FallibleIterator as _;
        let client = self.client()?;
        let mut stopped = None;
        let outcome = (|| -> Result<(), postgres::Error> {
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let mut rows = tx.query_raw(&format!("{SESSION_SELECT} ORDER BY s.name"), std::iter::empty::<i64>())?;
            while let Some(row) = rows.next()? {
                if let Some(session) = session_from_row(&row)
                    && let Err(e) = each(session)
                {
                    stopped = Some(e);
                    break;
                }
            }
            drop(rows);
            tx.commit()
        })();
        if let Some(e) = stopped {
            return Err(e);
        }
        outcome.map_err(|e| self.err(&e))
    }

    fn session(&mut self, name: &str) -> Result<TrackedSession, StoreError> {
        let name = name.to_string();
        self.read(|tx| sessions_where(tx, "WHERE s.name = $1", &[&name]))?.pop().ok_or(StoreError::NotFound(name))
    }

    fn name_of_id(&mut self, id: &SessionId) -> Result<Option<String>, StoreError> {
        let id = id.as_str().to_string();
        self.read(|tx| {
            Ok(tx.query_opt("SELECT name FROM wbs_sessions WHERE session_id = $1", &[&id])?.map(|r| r.get(0)))
        })
    }

    fn first_page(&mut self, sort: SortBy, reverse: bool, limit: usize) -> Result<Vec<TrackedSession>, StoreError> {
        let (column, order) = crate::store::stored::page_order(sort, reverse);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            sessions_where(
                tx,
                &format!(
                    "WHERE s.id IN (SELECT id FROM wbs_sessions ORDER BY {column} {order}, name LIMIT $1) ORDER BY s.{column} {order}, s.name"
                ),
                &[&limit],
            )
        })
    }

    fn names(&mut self) -> Result<Vec<String>, StoreError> {
        self.read(|tx| {
            Ok(tx.query("SELECT name FROM wbs_sessions ORDER BY name", &[])?.iter().map(|r| r.get(0)).collect())
        })
    }

    fn outcomes(&mut self, key: SessionKey, limit: usize) -> Result<Vec<Outcome>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            Ok(tx
                .query(
                    &format!("{OUTCOME_COLUMNS} FROM wbs_outcomes WHERE session = $1 ORDER BY id DESC LIMIT $2"),
                    &[&key, &limit],
                )?
                .iter()
                .map(|r| outcome_from_row(r, 0))
                .collect())
        })
    }

    fn problems(&mut self, limit: usize) -> Result<Vec<(String, Outcome)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            Ok(tx
                .query(
                    &format!(
                        "{OUTCOME_COLUMNS}, s.name FROM wbs_outcomes o JOIN wbs_sessions s ON s.id = o.session \
                         WHERE o.id > (SELECT coalesce(max(id), 0) FROM wbs_outcomes) - $1 AND o.kind != 'ok' \
                         ORDER BY o.id DESC LIMIT $2"
                    ),
                    &[&RECENT_OUTCOMES, &limit],
                )?
                .iter()
                .map(|r| (r.try_get::<_, String>(10).unwrap_or_default(), outcome_from_row(r, 0)))
                .collect())
        })
    }

    /// On the database's clock, one process at a time (an advisory lock): processes on several
    /// hosts share one count however their clocks differ.
    fn reserve(&mut self, ask: Reservation, budget: u32, _now: DateTime<Utc>) -> Result<Grant, StoreError> {
        let Reservation { want, extra, unused, holds_seen } = ask;
        let window_ms = i64::try_from(GRANT_COUNTED.as_millis()).unwrap_or(i64::MAX);
        let lease = self.url.lease;
        let (granted, oldest, now_ms, row, holds) = self.transact(false, |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BUDGET_LOCK])?;
            if let Some((token, n)) = unused {
                tx.execute(
                    "UPDATE wbs_budget SET used = greatest(used - $3, 0) WHERE id = $1 AND at_ms = $2",
                    &[&token.row, &token.at_ms, &i64::from(n)],
                )?;
            }
            let now_ms: i64 =
                tx.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[])?.get(0);
            tx.execute("DELETE FROM wbs_budget WHERE at_ms <= $1", &[&now_ms.saturating_sub(window_ms)])?;
            let counted = tx.query_one("SELECT coalesce(sum(used), 0)::bigint, min(at_ms) FROM wbs_budget", &[])?;
            let (used, oldest): (i64, Option<i64>) = (counted.get(0), counted.get(1));
            // What keepers cut off from here may be sending is not handed to the others.
            let absent = (leases::absent_share(tx, lease, GRANT_COUNTED)? * f64::from(budget)).ceil() as i64;
            let used = used.saturating_add(absent);
            let granted = grant_of(u64::try_from(used).unwrap_or(0), want, budget);
            let recorded = i64::from(granted) + i64::from(extra);
            let row = if recorded > 0 {
                Some(
                    tx.query_one(
                        "INSERT INTO wbs_budget (at_ms, used) VALUES ($1, $2) RETURNING id",
                        &[&now_ms, &recorded],
                    )?
                    .get::<_, i64>(0),
                )
            } else {
                None
            };
            // The holds Graph gave any process on the store that this one has not heard of.
            tx.execute("DELETE FROM wbs_holds WHERE until_ms <= $1", &[&now_ms])?;
            let holds: Vec<(i64, String, i64)> = tx
                .query(
                    "SELECT id, workbook, until_ms FROM wbs_holds WHERE id > $1 ORDER BY id LIMIT 10000",
                    &[&holds_seen],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            Ok((granted, oldest, now_ms, row, holds))
        })?;
        let retry_in = (granted == 0 && want > 0).then(|| {
            let free_at = oldest.unwrap_or(now_ms).saturating_add(window_ms);
            std::time::Duration::from_millis(
                u64::try_from(free_at.saturating_sub(now_ms)).unwrap_or(0).clamp(10, 11_000),
            )
        });
        let token = row.filter(|_| granted > 0).map(|row| GrantToken { row, at_ms: now_ms });
        let (holds, holds_seen) = crate::store::stored::shared_holds(holds, holds_seen);
        Ok(Grant { granted, retry_in, token, holds, holds_seen })
    }

    fn paused(&mut self) -> Result<bool, StoreError> {
        Ok(self.meta("paused")? != 0)
    }

    fn batching(&mut self) -> Result<Option<crate::store::BatchVerdict>, StoreError> {
        Ok(crate::store::BatchVerdict::from_meta(self.meta("batching")?))
    }

    fn rev(&mut self) -> Result<Rev, StoreError> {
        self.meta("rev")
    }

    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.write(|tx, rev| {
            let mut touched = Vec::new();
            let mut removed = false;
            for write in writes {
                PgDb::apply_one(tx, rev, write, keeper.as_deref(), &mut touched, &mut removed)?;
            }
            touched.sort_unstable();
            touched.dedup();
            let kept = i64::try_from(KEPT_OUTCOMES).unwrap_or(i64::MAX);
            for key in touched {
                tx.execute(
                    "DELETE FROM wbs_outcomes WHERE session = $1 AND id <= \
                     (SELECT id FROM wbs_outcomes WHERE session = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                    &[&key, &kept],
                )?;
            }
            if removed {
                prune_tombstones(tx)?;
            }
            Ok(())
        })
    }

    fn insert_with_history(&mut self, session: &mut TrackedSession, history: &[Outcome]) -> Result<(), StoreError> {
        let keys = self.insert_rows(&[(session, history)])?;
        session.key = keys.first().copied().unwrap_or_default();
        if let Some(last) = history.last() {
            session.last_call = Some(last.into());
        }
        Ok(())
    }

    fn insert_all(&mut self, sessions: &[TrackedSession]) -> Result<Vec<SessionKey>, StoreError> {
        let rows: Vec<(&TrackedSession, &[Outcome])> = sessions.iter().map(|s| (s, &[][..])).collect();
        self.insert_rows(&rows)
    }

    fn take_unfinished(&mut self) -> Result<Vec<Unfinished>, StoreError> {
        let here = crate::store::this_host();
        self.write(|tx, _| {
            let mut found = Vec::new();
            let intents = tx.query(
                "SELECT i.id, i.name, i.workbook, i.started_at, i.pid, i.host, \
                 EXISTS (SELECT 1 FROM wbs_sessions s WHERE s.name = i.name \
                         AND (s.last_refresh >= i.started_at OR s.created_at >= i.started_at)) \
                 FROM wbs_intents i",
                &[],
            )?;
            for intent in intents {
                let (id, name, workbook, started_at, pid, host, stored): (
                    i64,
                    String,
                    String,
                    String,
                    i64,
                    String,
                    bool,
                ) = (
                    intent.get(0),
                    intent.get(1),
                    intent.get(2),
                    intent.get(3),
                    intent.get(4),
                    intent.get(5),
                    intent.get(6),
                );
                let started = parse_time(&started_at).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                let alive = if host == here {
                    u32::try_from(pid).is_ok_and(crate::store::process_alive)
                } else {
                    Utc::now().signed_duration_since(started) < FOREIGN_INTENT
                };
                if alive {
                    continue;
                }
                tx.execute("DELETE FROM wbs_intents WHERE id = $1", &[&id])?;
                if !stored {
                    found.push(Unfinished { name, workbook, started_at: started });
                }
            }
            Ok(found)
        })
    }

    fn changes_since(&mut self, since: Rev) -> Result<Changes, StoreError> {
        self.read(|tx| {
            let meta = |tx: &mut postgres::Transaction<'_>, key: &str| -> Result<i64, postgres::Error> {
                Ok(tx.query_opt("SELECT value FROM wbs_meta WHERE key = $1", &[&key])?.map_or(0, |r| r.get(0)))
            };
            let rev = meta(tx, "rev")?;
            let paused = meta(tx, "paused")? != 0;
            if since < meta(tx, "tombstones_from")? {
                let sessions = sessions_where(tx, "ORDER BY s.name", &[])?;
                return Ok(Changes { rev, sessions, removed: Vec::new(), paused, full: true });
            }
            let sessions = sessions_where(tx, "WHERE s.rev > $1", &[&since])?;
            let removed = tx
                .query("SELECT session FROM wbs_tombstones WHERE rev > $1", &[&since])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(Changes { rev, sessions, removed, paused, full: false })
        })
    }

    fn others_mark(&mut self) -> Result<i64, StoreError> {
        Ok(self.meta("rev")? - self.own_revs)
    }

    fn wake_on_change(&mut self, wake: Box<dyn Fn() + Send>) {
        if self.listener.is_none() {
            let url = self.url.clone();
            self.listener = super::listen::Listener::start(Box::new(move || super::db::connect(&url).ok()), wake);
        }
    }

    fn woken(&self) -> bool {
        self.listener.as_ref().is_some_and(super::listen::Listener::listening)
    }
}
