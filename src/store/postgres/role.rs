//! Keepers on a PostgreSQL store: every `run` (and proxy) joins as a keeper and keeps its share
//! of the workbooks (`leases`), renewing them each second while its engine is at work; a keeper
//! that dies, stops or is cut off has its workbooks taken over by the others once its leases
//! lapse. A dashboard keeps the store only when no keeper does (`acquire`), as on SQLite.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::Client;

use super::db::{connect, detail};
use super::leases;
use super::url::PgUrl;
use crate::store::{DriverRole, Holder, KeeperInfo, Lease, RoleError};

/// How often a keeper takes its turn: renews its leases, takes its share, says it is alive.
const TURN: Duration = Duration::from_secs(1);
/// A keeper whose engine has not asked after its role for this long (its loop stuck: a hung
/// terminal, `SIGSTOP`) takes no more turns, so that its leases lapse and others take over.
const QUIET: Duration = Duration::from_secs(4);

/// Runs `work` on a thread of its own: the PostgreSQL client blocks on a runtime of its own,
/// which may not be started from inside the caller's.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

pub(crate) struct PgRole {
    url: PgUrl,
    conn: Mutex<Option<Client>>,
    keeper: super::KeeperId,
}

impl PgRole {
    pub(super) fn new(url: PgUrl, keeper: super::KeeperId) -> Self {
        PgRole { url, conn: Mutex::new(None), keeper }
    }

    fn failed(&self, what: String) -> RoleError {
        RoleError::Failed(format!("cannot reach the keepers of the store {}: {what}", self.url))
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

    fn live(&self) -> Result<Vec<leases::KeeperRow>, RoleError> {
        let lease = self.url.lease;
        self.with_conn(move |conn| leases::keepers(conn, lease))
    }

    /// Joins unless another keeper is there (what a dashboard does).
    fn alone(&self) -> Result<Box<dyn Lease>, RoleError> {
        if let Some(first) = self.live()?.into_iter().next() {
            return Err(RoleError::Held {
                holder: Holder { pid: Some(first.pid), since: first.since },
                store: self.url.to_string(),
            });
        }
        self.join()
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
        self.alone()
    }

    fn try_acquire(&self) -> Result<Box<dyn Lease>, RoleError> {
        self.alone()
    }

    fn join(&self) -> Result<Box<dyn Lease>, RoleError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (pid, host, lease) = (std::process::id(), crate::store::this_host(), self.url.lease);
        // The first turn before anything starts: a database that cannot be reached says so now.
        let first = {
            let (id, host) = (id.clone(), host.clone());
            self.with_conn(move |conn| leases::claim(conn, &id, pid, &host, lease))?
        };
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        KeeperLease::start(self.url.clone(), id, first, self.keeper.clone())
    }

    fn holder(&self) -> Option<Holder> {
        let first = self.live().ok()?.into_iter().next()?;
        Some(Holder { pid: Some(first.pid), since: first.since })
    }

    fn keepers(&self) -> Result<Vec<KeeperInfo>, RoleError> {
        Ok(self
            .live()?
            .into_iter()
            .map(|k| KeeperInfo {
                host: k.host,
                pid: Some(k.pid),
                since: k.since,
                quiet_secs: Some(k.quiet_secs),
                workbooks: u64::try_from(k.workbooks).ok(),
                sessions: u64::try_from(k.sessions).ok(),
            })
            .collect())
    }
}

/// A keeper's share, held: a thread takes the keeper's turn every second while its engine is at
/// work. Cut off from the database, it keeps the workbooks it had (and takes no new ones); back,
/// it keeps what is still its own.
struct KeeperLease {
    keeper: super::KeeperId,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Instant>>,
    held: Arc<Mutex<Arc<BTreeSet<String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeeperLease {
    fn start(
        url: PgUrl,
        id: String,
        first: leases::Held,
        keeper: super::KeeperId,
    ) -> Result<Box<dyn Lease>, RoleError> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Instant::now()));
        let held = Arc::new(Mutex::new(Arc::new(first.into_keys().collect::<BTreeSet<_>>())));
        let (stop_t, seen_t, held_t) = (stop.clone(), seen.clone(), held.clone());
        let thread = std::thread::Builder::new()
            .name("keeper-turns".into())
            .spawn(move || turns(&url, &id, &stop_t, &seen_t, &held_t))
            .map_err(|e| RoleError::Failed(format!("cannot start the keeper's turns: {e}")))?;
        Ok(Box::new(KeeperLease { keeper, stop, seen, held, thread: Some(thread) }))
    }
}

fn turns(url: &PgUrl, id: &str, stop: &AtomicBool, seen: &Mutex<Instant>, held: &Mutex<Arc<BTreeSet<String>>>) {
    let (pid, host) = (std::process::id(), crate::store::this_host());
    let mut conn: Option<Client> = None;
    let mut cut_off = false;
    while !stop.load(Ordering::Relaxed) {
        let at_work = seen.lock().is_ok_and(|t| t.elapsed() < QUIET);
        if at_work {
            if conn.as_ref().is_none_or(Client::is_closed) {
                conn = connect(url).ok();
            }
            match conn.as_mut().map(|c| leases::claim(c, id, pid, &host, url.lease)) {
                Some(Ok(now)) => {
                    if cut_off {
                        tracing::warn!(
                            workbooks = now.len(),
                            "the database is back; this keeper keeps what is still its own"
                        );
                        cut_off = false;
                    }
                    *held.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(now.into_keys().collect());
                }
                failed => {
                    if !cut_off {
                        let why = match failed {
                            Some(Err(e)) => detail(&e),
                            _ => "cannot connect".into(),
                        };
                        tracing::warn!(error = %why, "cut off from the database: keeping the workbooks held, taking no new ones");
                        cut_off = true;
                    }
                    conn = None;
                }
            }
        }
        let until = Instant::now() + TURN;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Let go at once rather than after the lease: the others take over within a second.
    if let Some(mut conn) = conn.filter(|c| !c.is_closed()).or_else(|| connect(url).ok()) {
        let _ = leases::release(&mut conn, id);
    }
}

impl Lease for KeeperLease {
    fn renew(&self) -> Result<(), RoleError> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    fn workbooks(&self) -> Option<Arc<BTreeSet<String>>> {
        Some(self.held.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl Drop for KeeperLease {
    fn drop(&mut self) {
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
