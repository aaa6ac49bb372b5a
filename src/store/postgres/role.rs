//! Keepers on a PostgreSQL store: every `run` (and proxy) joins as a keeper and keeps its share
//! of the workbooks (`leases`), renewing them each second while its engine is at work; a keeper
//! that dies, stops or is cut off has its workbooks taken over by the others once its leases
//! lapse. A dashboard keeps the store only when no keeper does (`acquire`), as on SQLite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::Client;

use super::db::{connect, detail};
use super::leases;
use super::url::PgUrl;
use crate::store::{DriverRole, Holder, KeeperInfo, Lease, RoleError, Share};

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
    /// Whose sign-in this process refreshes with (`DriverRole::identify`).
    owner: Mutex<Option<String>>,
}

impl PgRole {
    pub(super) fn new(url: PgUrl, keeper: super::KeeperId) -> Self {
        PgRole { url, conn: Mutex::new(None), keeper, owner: Mutex::new(None) }
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
        let me = leases::Keeper {
            id: uuid::Uuid::new_v4().to_string(),
            pid: std::process::id(),
            host: crate::store::this_host(),
            owner: self.owner.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        let lease = self.url.lease;
        // The first turn before anything starts: a database that cannot be reached says so now.
        let began = Instant::now();
        let first = self.with_conn(|conn| leases::claim(conn, &me, lease))?;
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(me.id.clone());
        KeeperLease::start(self.url.clone(), me, first, began, self.keeper.clone())
    }

    fn identify(&self, owner: Option<String>) {
        *self.owner.lock().unwrap_or_else(|p| p.into_inner()) = owner;
    }

    fn shares_workbooks(&self) -> bool {
        true
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
                owner: k.owner,
            })
            .collect())
    }
}

/// A keeper's share, held: a thread takes the keeper's turn every second while its engine is at
/// work. Cut off from the database, it keeps the workbooks it had (and takes no new ones) until
/// their leases lapse by its own clock; then, if other keepers were alive to take them over, it
/// keeps them only on standby (`Share::standby`). Back, it keeps what is still its own.
struct KeeperLease {
    keeper: super::KeeperId,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Instant>>,
    share: Arc<Mutex<Share>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Leases are let go of this long before they lapse by this keeper's clock: the engine looks at
/// its share once a tick, and a refresh may be on its way when it does.
const LAPSE_MARGIN: Duration = Duration::from_millis(1500);

/// The share a good turn that began at `began` gave.
fn share_of(turn: leases::Turn, began: Instant, lease: Duration) -> Share {
    let alone = turn.live <= 1;
    Share {
        kept: Arc::new(turn.held.into_keys().collect()),
        standby: Arc::default(),
        budget: 1.0 / turn.live.max(1) as f64,
        kept_until: (!alone).then(|| began + lease.saturating_sub(LAPSE_MARGIN)),
        riders: Arc::new(turn.riders),
    }
}

impl KeeperLease {
    fn start(
        url: PgUrl,
        me: leases::Keeper,
        first: leases::Turn,
        began: Instant,
        keeper: super::KeeperId,
    ) -> Result<Box<dyn Lease>, RoleError> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Instant::now()));
        let share = Arc::new(Mutex::new(share_of(first, began, url.lease)));
        let (stop_t, seen_t, share_t) = (stop.clone(), seen.clone(), share.clone());
        let thread = std::thread::Builder::new()
            .name("keeper-turns".into())
            .spawn(move || turns(&url, &me, began, &stop_t, &seen_t, &share_t))
            .map_err(|e| RoleError::Failed(format!("cannot start the keeper's turns: {e}")))?;
        Ok(Box::new(KeeperLease { keeper, stop, seen, share, thread: Some(thread) }))
    }
}

fn turns(
    url: &PgUrl,
    me: &leases::Keeper,
    began: Instant,
    stop: &AtomicBool,
    seen: &Mutex<Instant>,
    share: &Mutex<Share>,
) {
    let mut conn: Option<Client> = None;
    let mut cut_off = false;
    // Until when the leases of the last good turn hold, by this keeper's clock: they were set
    // from the database's `now()` after the turn began, so they hold at least this long.
    let mut lapse = began + url.lease;
    let set = |next: Share| *share.lock().unwrap_or_else(|p| p.into_inner()) = next;
    while !stop.load(Ordering::Relaxed) {
        let at_work = seen.lock().is_ok_and(|t| t.elapsed() < QUIET);
        if at_work {
            if conn.as_ref().is_none_or(Client::is_closed) {
                conn = connect(url).ok();
            }
            let began = Instant::now();
            match conn.as_mut().map(|c| leases::claim(c, me, url.lease)) {
                Some(Ok(turn)) => {
                    if cut_off {
                        tracing::warn!(
                            workbooks = turn.held.len(),
                            "the database is back; this keeper keeps what is still its own"
                        );
                        cut_off = false;
                    }
                    lapse = began + url.lease;
                    set(share_of(turn, began, url.lease));
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
        if (cut_off || !at_work) && Instant::now() + LAPSE_MARGIN >= lapse {
            stand_by(share);
        }
        let until = Instant::now() + TURN;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Let go at once rather than after the lease: the others take over within a second.
    if let Some(mut conn) = conn.filter(|c| !c.is_closed()).or_else(|| connect(url).ok()) {
        let _ = leases::release(&mut conn, &me.id);
    }
}

/// The leases lapsed while the database could not be reached: where other keepers were alive
/// to take the workbooks over, they are kept on standby only, on `STANDBY_BUDGET` at most;
/// a keeper that was alone keeps them all, as nobody else will.
fn stand_by(share: &Mutex<Share>) {
    let mut share = share.lock().unwrap_or_else(|p| p.into_inner());
    if share.kept.is_empty() || share.budget >= 1.0 {
        return;
    }
    tracing::warn!(
        workbooks = share.kept.len(),
        "this keeper's leases lapsed while it was cut off: the other keepers take its workbooks over; \
         it refreshes their sessions only if they come near expiry"
    );
    let mut standby = (*share.standby).clone();
    standby.extend(share.kept.iter().cloned());
    share.standby = Arc::new(standby);
    share.kept = Arc::default();
    share.kept_until = None;
    share.budget = share.budget.min(leases::STANDBY_BUDGET);
}

impl Lease for KeeperLease {
    fn renew(&self) -> Result<(), RoleError> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    fn share(&self) -> Option<Share> {
        Some(self.share.lock().unwrap_or_else(|p| p.into_inner()).clone())
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
