//! The driver role of a SQLite store, kept in the store itself: who drives, since when, and a
//! heartbeat, in the `meta` table. A role that lives in the database belongs to the database,
//! whatever path or link reaches it, and outlives any file beside it. A driver that dies is
//! replaced at once (its process is gone); one that stops (`SIGSTOP`, a suspended terminal) is
//! replaced once its heartbeat is `STALE`, and steps down when it wakes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::store::{DriverRole, Holder, Lease, RoleError};

/// How often a driver says it is alive.
const BEAT: Duration = Duration::from_secs(1);

/// A driver whose heartbeat is older than this is taken to be stopped: another takes over.
pub(super) const STALE: Duration = Duration::from_secs(8);

/// How long one step waits for the store while other processes write it.
const BUSY: Duration = Duration::from_secs(5);

/// The driver role of the store at `path` (the file itself, links resolved).
pub(crate) struct StoreRole {
    path: PathBuf,
    /// Kept open between looks: a watcher asks every second.
    conn: Mutex<Option<Connection>>,
}

/// Who drives, as the store says.
#[derive(Debug, Clone, PartialEq)]
struct Claim {
    token: String,
    pid: Option<u32>,
    host: String,
    since: Option<DateTime<Utc>>,
    beat: Option<DateTime<Utc>>,
}

impl Claim {
    /// Whether the claim still stands: its process is alive (where that can be known) and its
    /// heartbeat fresh.
    fn stands(&self, now: DateTime<Utc>) -> bool {
        let fresh =
            self.beat.is_some_and(|beat| now.signed_duration_since(beat).to_std().map_or(true, |age| age < STALE));
        fresh
            && !(self.host == crate::store::this_host()
                && self.pid.is_some_and(|pid| !crate::store::process_alive(pid)))
    }

    fn holder(&self) -> Holder {
        Holder { pid: self.pid, since: self.since }
    }
}

fn failed(path: &Path, e: &rusqlite::Error) -> RoleError {
    RoleError::Failed(format!("cannot use the driver role of the store {}: {e}", path.display()))
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY)?;
    Ok(conn)
}

const KEYS: [&str; 5] = ["driver_token", "driver_pid", "driver_host", "driver_since", "driver_beat"];

fn read_claim(conn: &Connection) -> rusqlite::Result<Option<Claim>> {
    let value = |key: &str| -> rusqlite::Result<Option<String>> {
        conn.prepare_cached("SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get::<_, Option<String>>(0))
            .optional()
            .map(Option::flatten)
    };
    let Some(token) = value("driver_token")?.filter(|t| !t.is_empty()) else { return Ok(None) };
    let time = |t: Option<String>| t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
    Ok(Some(Claim {
        token,
        pid: value("driver_pid")?.and_then(|p| p.parse().ok()),
        host: value("driver_host")?.unwrap_or_default(),
        since: time(value("driver_since")?),
        beat: time(value("driver_beat")?),
    }))
}

fn write_claim(conn: &Connection, claim: Option<&Claim>) -> rusqlite::Result<()> {
    let stamp = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    let values = match claim {
        Some(c) => [
            c.token.clone(),
            c.pid.map(|p| p.to_string()).unwrap_or_default(),
            c.host.clone(),
            stamp(c.since),
            stamp(c.beat),
        ],
        None => Default::default(),
    };
    let mut put = conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    for (key, value) in KEYS.iter().zip(values) {
        put.execute([*key, value.as_str()])?;
    }
    Ok(())
}

impl StoreRole {
    pub(super) fn new(path: PathBuf) -> Self {
        StoreRole { path, conn: Mutex::new(None) }
    }

    fn with_conn<T>(&self, work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, RoleError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(open(&self.path).map_err(|e| failed(&self.path, &e))?);
        }
        let Some(conn) = guard.as_mut() else { return Err(RoleError::Failed("no connection".into())) };
        let result = work(conn).map_err(|e| failed(&self.path, &e));
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Claims the role in one transaction, unless a standing claim of another process is there.
    fn claim(&self) -> Result<Box<dyn Lease>, RoleError> {
        let token = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        let mine = Claim {
            token: token.clone(),
            pid: Some(std::process::id()),
            host: crate::store::this_host(),
            since: Some(now),
            beat: Some(now),
        };
        let taken = self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(other) = read_claim(&tx)?.filter(|c| c.stands(now)) {
                return Ok(Err(other));
            }
            write_claim(&tx, Some(&mine))?;
            tx.commit()?;
            Ok(Ok(()))
        })?;
        if let Err(other) = taken {
            return Err(RoleError::Held { holder: other.holder(), store: self.path.display().to_string() });
        }
        StoreLease::start(self.path.clone(), token)
    }
}

impl DriverRole for StoreRole {
    fn acquire(&self) -> Result<Box<dyn Lease>, RoleError> {
        // Two processes starting together: the second waits its turn in `claim`'s transaction.
        self.claim()
    }

    fn try_acquire(&self) -> Result<Box<dyn Lease>, RoleError> {
        self.claim()
    }

    fn holder(&self) -> Option<Holder> {
        let now = Utc::now();
        let claim = self.with_conn(|conn| read_claim(conn)).ok().flatten()?;
        claim.stands(now).then(|| claim.holder())
    }
}

/// The role, held: a thread renews the heartbeat and notices when another process took it.
struct StoreLease {
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// When the heartbeat last went through: a process that was stopped finds this old.
    last_beat: Arc<Mutex<Instant>>,
    /// When the driver last asked after the role (`renew`, from its loop): the heartbeat says
    /// the driver is at work only while it is, not merely while this thread runs.
    seen: Arc<Mutex<Instant>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A driver silent this long (its loop stuck: a hung terminal, a runaway computation) gets no
/// more heartbeats, and others take over once the last one is `STALE`.
const QUIET: Duration = Duration::from_secs(4);

impl StoreLease {
    fn start(path: PathBuf, token: String) -> Result<Box<dyn Lease>, RoleError> {
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let last_beat = Arc::new(Mutex::new(Instant::now()));
        let seen = Arc::new(Mutex::new(Instant::now()));
        let (lost_t, stop_t, beat_t, seen_t) = (lost.clone(), stop.clone(), last_beat.clone(), seen.clone());
        let thread = std::thread::Builder::new()
            .name("driver-heartbeat".into())
            .spawn(move || heartbeat(&path, &token, &lost_t, &stop_t, &beat_t, &seen_t))
            .map_err(|e| RoleError::Failed(format!("cannot start the driver's heartbeat: {e}")))?;
        Ok(Box::new(StoreLease { lost, stop, last_beat, seen, thread: Some(thread) }))
    }
}

fn heartbeat(
    path: &Path,
    token: &str,
    lost: &AtomicBool,
    stop: &AtomicBool,
    last_beat: &Mutex<Instant>,
    seen: &Mutex<Instant>,
) {
    let mut conn: Option<Connection> = None;
    let beat = |conn: &Connection| -> rusqlite::Result<bool> {
        let now = Utc::now().to_rfc3339();
        let updated = conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'driver_beat' \
             AND (SELECT value FROM meta WHERE key = 'driver_token') = ?2",
            [now.as_str(), token],
        )?;
        Ok(updated == 1)
    };
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = open(path).ok();
        }
        let at_work = seen.lock().is_ok_and(|t| t.elapsed() < QUIET);
        match conn.as_ref().filter(|_| at_work).map(beat) {
            Some(Ok(true)) => *last_beat.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now(),
            Some(Ok(false)) => {
                lost.store(true, Ordering::Relaxed);
                return;
            }
            // Busy or gone for a moment: tried again; `renew` judges by the last beat's age.
            Some(Err(_)) => conn = None,
            None => {}
        }
        // Woken early when the lease is let go.
        let until = Instant::now() + BEAT;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Let go: the role is free at once, not after the heartbeat goes stale.
    if !lost.load(Ordering::Relaxed)
        && let Some(conn) = conn.or_else(|| open(path).ok())
    {
        let _ = conn.execute(
            "UPDATE meta SET value = '' WHERE key IN ('driver_token', 'driver_beat') \
             AND (SELECT value FROM meta WHERE key = 'driver_token') = ?1",
            [token],
        );
    }
}

impl Lease for StoreLease {
    fn renew(&self) -> Result<(), RoleError> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Instant::now();
        }
        let since_beat = self.last_beat.lock().map(|t| t.elapsed()).unwrap_or(STALE);
        if self.lost.load(Ordering::Relaxed) || since_beat >= STALE {
            return Err(RoleError::Failed("another process took over the driver role".into()));
        }
        Ok(())
    }
}

impl Drop for StoreLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(super::super::db::Db::open(&path).unwrap());
        (dir, path)
    }

    #[test]
    fn one_driver_at_a_time_and_the_role_is_free_once_let_go() {
        let (_dir, path) = store();
        let role = StoreRole::new(path.clone());
        assert_eq!(role.holder(), None);
        let first = role.acquire().unwrap();
        assert_eq!(role.holder().and_then(|h| h.pid), Some(std::process::id()));
        assert!(role.holder().and_then(|h| h.since).is_some(), "since when it drives");
        // Another path to the same store sees the same role.
        let other = StoreRole::new(path.clone());
        match other.try_acquire() {
            Err(RoleError::Held { holder, .. }) => assert_eq!(holder.pid, Some(std::process::id())),
            Err(e) => panic!("expected Held, got {e:?}"),
            Ok(_) => panic!("a second driver"),
        }
        assert!(first.renew().is_ok());
        drop(first);
        assert_eq!(role.holder(), None, "free at once");
        other.try_acquire().unwrap();
    }

    #[test]
    fn a_claim_of_a_dead_process_or_with_a_stale_heartbeat_is_taken_over() {
        let (_dir, path) = store();
        let conn = open(&path).unwrap();
        let now = Utc::now();
        // A process that no longer exists, heartbeat fresh: taken over at once.
        let dead = Claim {
            token: "t1".into(),
            pid: Some(u32::MAX - 7),
            host: crate::store::this_host(),
            since: Some(now),
            beat: Some(now),
        };
        write_claim(&conn, Some(&dead)).unwrap();
        let role = StoreRole::new(path.clone());
        drop(role.try_acquire().unwrap());
        // A live process (this one), heartbeat stale: it was stopped; taken over.
        let stale_beat = now - chrono::Duration::seconds(60);
        let stopped = Claim { pid: Some(std::process::id()), beat: Some(stale_beat), ..dead.clone() };
        write_claim(&conn, Some(&stopped)).unwrap();
        let lease = role.try_acquire().unwrap();
        // The stopped one, awake, finds the role gone.
        let token = read_claim(&conn).unwrap().unwrap().token;
        assert_ne!(token, "t1");
        assert!(lease.renew().is_ok());
        // Fresh and alive: refused.
        let alive = Claim { pid: Some(std::process::id()), beat: Some(Utc::now()), ..dead };
        write_claim(&conn, Some(&alive)).unwrap();
        std::thread::sleep(BEAT * 2);
        assert!(lease.renew().is_err(), "a lease whose claim was taken steps down");
    }

    /// A driver whose loop stops asking after the role (stuck, not dead: its heartbeat thread
    /// runs on) stops beating, and another process takes over once the last beat is stale.
    #[test]
    fn a_driver_that_stops_asking_after_its_role_is_replaced() {
        let (_dir, path) = store();
        let stuck = StoreRole::new(path.clone()).acquire().unwrap();
        let other = StoreRole::new(path);
        let deadline = Instant::now() + QUIET + STALE + Duration::from_secs(5);
        let taken = loop {
            match other.try_acquire() {
                Ok(lease) => break lease,
                Err(RoleError::Held { .. }) if Instant::now() < deadline => std::thread::sleep(BEAT / 2),
                Err(e) => panic!("still not replaced: {e}"),
            }
        };
        assert!(stuck.renew().is_err(), "woken, the stuck one finds the role gone");
        assert!(taken.renew().is_ok());
    }
}
