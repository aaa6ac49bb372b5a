//! The driver role of a PostgreSQL store: one row (`wbs_driver`) says who drives, from which
//! host, since when, and its heartbeat on the database's clock. A driver whose process is gone
//! (same host) is replaced at once; one that stops, or is cut off from the database, once its
//! heartbeat is `STALE`; it steps down when it finds the row taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use postgres::Client;

use super::db::{ROLE_LOCK, connect, detail};
use super::url::PgUrl;
use crate::store::{DriverRole, Holder, Lease, RoleError};

/// How often a driver says it is alive.
const BEAT: Duration = Duration::from_secs(1);
/// A heartbeat older than this (by the database's clock) no longer holds the role.
const STALE_SECS: f64 = 8.0;
/// A driver silent this long (its loop stuck) gets no more heartbeats.
const QUIET: Duration = Duration::from_secs(4);

/// Runs `work` on a thread of its own: the PostgreSQL client blocks on a runtime of its own,
/// which may not be started from inside the caller's.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

struct Claim {
    pid: Option<u32>,
    host: String,
    since: Option<DateTime<Utc>>,
    /// Seconds since the heartbeat, on the database's clock.
    age: f64,
}

impl Claim {
    fn stands(&self) -> bool {
        self.age < STALE_SECS
            && !(self.host == crate::store::this_host()
                && self.pid.is_some_and(|pid| !crate::store::process_alive(pid)))
    }

    fn holder(&self) -> Holder {
        Holder { pid: self.pid, since: self.since }
    }
}

fn read_claim(client: &mut impl postgres::GenericClient) -> Result<Option<Claim>, postgres::Error> {
    let row =
        client.query_opt("SELECT pid, host, since, extract(epoch FROM (now() - beat))::float8 FROM wbs_driver", &[])?;
    Ok(row.map(|r| Claim {
        pid: r.get::<_, Option<i64>>(0).and_then(|p| u32::try_from(p).ok()),
        host: r.get(1),
        since: r.get::<_, Option<std::time::SystemTime>>(2).map(DateTime::<Utc>::from),
        age: r.get(3),
    }))
}

pub(crate) struct PgRole {
    url: PgUrl,
    conn: Mutex<Option<Client>>,
}

impl PgRole {
    pub(super) fn new(url: PgUrl) -> Self {
        PgRole { url, conn: Mutex::new(None) }
    }

    fn failed(&self, what: String) -> RoleError {
        RoleError::Failed(format!("cannot use the driver role of the store {}: {what}", self.url))
    }

    fn with_conn<T: Send>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, RoleError> {
        off_runtime(|| {
            let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(connect(&self.url).map_err(|e| self.failed(e.to_string()))?);
            }
            let Some(conn) = guard.as_mut() else { return Err(self.failed("no connection".into())) };
            let result = work(conn).map_err(|e| self.failed(detail(&e)));
            if result.is_err() {
                *guard = None;
            }
            result
        })
    }

    fn claim(&self) -> Result<Box<dyn Lease>, RoleError> {
        let token = uuid::Uuid::new_v4().to_string();
        let pid = i64::from(std::process::id());
        let host = crate::store::this_host();
        let taken = self.with_conn(|conn| {
            let mut tx = conn.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLE_LOCK])?;
            if let Some(other) = read_claim(&mut tx)?.filter(Claim::stands) {
                return Ok(Err(other.holder()));
            }
            tx.execute("DELETE FROM wbs_driver", &[])?;
            tx.execute(
                "INSERT INTO wbs_driver (token, pid, host, since, beat) VALUES ($1, $2, $3, now(), now())",
                &[&token, &pid, &host],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })?;
        if let Err(holder) = taken {
            return Err(RoleError::Held { holder, store: self.url.to_string() });
        }
        PgLease::start(self.url.clone(), token)
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        // A client says goodbye to the server as it is dropped, on its own runtime.
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(conn) = conn {
            off_runtime(move || drop(conn));
        }
    }
}

impl DriverRole for PgRole {
    fn acquire(&self) -> Result<Box<dyn Lease>, RoleError> {
        self.claim()
    }

    fn try_acquire(&self) -> Result<Box<dyn Lease>, RoleError> {
        self.claim()
    }

    fn holder(&self) -> Option<Holder> {
        let claim = self.with_conn(read_claim).ok().flatten()?;
        claim.stands().then(|| claim.holder())
    }
}

/// The role, held: a thread renews the heartbeat and notices when another process took it.
struct PgLease {
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    last_beat: Arc<Mutex<Instant>>,
    seen: Arc<Mutex<Instant>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PgLease {
    fn start(url: PgUrl, token: String) -> Result<Box<dyn Lease>, RoleError> {
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let last_beat = Arc::new(Mutex::new(Instant::now()));
        let seen = Arc::new(Mutex::new(Instant::now()));
        let (lost_t, stop_t, beat_t, seen_t) = (lost.clone(), stop.clone(), last_beat.clone(), seen.clone());
        let thread = std::thread::Builder::new()
            .name("driver-heartbeat".into())
            .spawn(move || heartbeat(&url, &token, &lost_t, &stop_t, &beat_t, &seen_t))
            .map_err(|e| RoleError::Failed(format!("cannot start the driver's heartbeat: {e}")))?;
        Ok(Box::new(PgLease { lost, stop, last_beat, seen, thread: Some(thread) }))
    }
}

fn heartbeat(
    url: &PgUrl,
    token: &str,
    lost: &AtomicBool,
    stop: &AtomicBool,
    last_beat: &Mutex<Instant>,
    seen: &Mutex<Instant>,
) {
    let mut conn: Option<Client> = None;
    let beat = |conn: &mut Client| -> Result<bool, postgres::Error> {
        Ok(conn.execute("UPDATE wbs_driver SET beat = now() WHERE token = $1", &[&token])? == 1)
    };
    while !stop.load(Ordering::Relaxed) {
        if conn.as_ref().is_none_or(Client::is_closed) {
            conn = connect(url).ok();
        }
        let at_work = seen.lock().is_ok_and(|t| t.elapsed() < QUIET);
        match conn.as_mut().filter(|_| at_work).map(beat) {
            Some(Ok(true)) => *last_beat.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now(),
            Some(Ok(false)) => {
                lost.store(true, Ordering::Relaxed);
                return;
            }
            // Unreachable for a moment: tried again; `renew` judges by the last beat's age.
            Some(Err(_)) => conn = None,
            None => {}
        }
        let until = Instant::now() + BEAT;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Let go: the role is free at once, not after the heartbeat goes stale.
    if !lost.load(Ordering::Relaxed)
        && let Some(mut conn) = conn.or_else(|| connect(url).ok())
    {
        let _ = conn.execute("DELETE FROM wbs_driver WHERE token = $1", &[&token]);
    }
}

impl Lease for PgLease {
    fn renew(&self) -> Result<(), RoleError> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let stale = self.last_beat.lock().is_ok_and(|t| t.elapsed().as_secs_f64() >= STALE_SECS);
        if self.lost.load(Ordering::Relaxed) || stale {
            return Err(RoleError::Failed(
                "another process took over driving the store (this one's heartbeat stopped or went stale)".into(),
            ));
        }
        Ok(())
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
