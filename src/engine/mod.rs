//! The refresh engine: a tokio task that owns the authoritative session list, answers each
//! front end's requests once (`handle`), sends every Graph call through one dispatcher
//! (`dispatch`), writes every change to the store, and tells watchers what changed (`Event`).
//!
//! One job per file: `requests` turns asks into jobs, `calls` makes them and records what came
//! of them, `plan` decides when each session is due, `dispatch` which call may start, `policy`
//! the retry and due-time rules, `batching` how refreshes travel, `reconcile` adopts what other
//! processes wrote, `takeover` makes a watcher the driver, `ops` makes the calls. This file
//! only wires them.

mod batching;
mod calls;
pub(crate) mod dispatch;
mod handle;
mod jobs;
pub mod keeper;
mod messages;
pub mod ops;
mod plan;
pub mod policy;
mod reconcile;
mod requests;
pub(crate) mod schedule;
mod settings;
mod takeover;
mod turns;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::auth::{Authenticator, Progress, SignInState};
use crate::session::{SessionKey, TrackedSession};
use crate::store::{DriverRole, Lease, SessionStore, StoreError, StoreEvent};
use crate::time::Clock;
use batching::Batching;
use dispatch::{Dispatcher, JobId};
pub use handle::{Answer, EngineError, Handle, Reply, Request};
use handle::{Hub, Inbox, Waiter};
use jobs::{Entry, Job, Local};
pub use messages::{Choice, Chosen, Passed, Turn, TurnAsk};
pub use messages::{Event, JobKind};
pub(crate) use ops::Report;
pub use ops::{BatchResult, Failure, Graph, LiveGraph};
use policy::{FailureRate, Verdict};
use schedule::{GapWatch, Schedule};
pub use settings::EngineSettings;
use takeover::Takeover;

pub(crate) use crate::store::KEPT_OUTCOMES;

/// How long in-flight calls may finish after a shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the engine calls out to; cheap to clone into tasks.
#[derive(Clone)]
pub struct Context {
    pub graph: Arc<dyn Graph>,
    pub clock: Clock,
    /// `None` where tokens do not matter (tests with a fake Graph).
    pub auth: Option<Arc<dyn Authenticator>>,
}

/// Who schedules automatic refreshes.
pub enum Role {
    /// This engine drives, with nobody to share the store with (tests).
    Driver,
    /// This engine holds the store's driver role while `lease` holds; it watches once another
    /// process takes the role, and takes it back when that one goes.
    Leased { lease: Box<dyn Lease>, role: Arc<dyn DriverRole> },
    /// Another process drives; this one takes the role over once it is free.
    Watcher(Arc<dyn DriverRole>),
    /// Only what it is told: a one-shot command.
    OneShot,
}

pub struct EngineConfig {
    pub settings: EngineSettings,
    pub role: Role,
    /// Whether automatic refresh is paused for the store, as the store says.
    pub paused: bool,
    /// What a process on the store learned of `$batch`, as the store says.
    pub batching: Option<crate::store::BatchVerdict>,
    /// Seeds the jitter of retries, for runs that must repeat exactly; `None` seeds it at random.
    pub seed: Option<u64>,
}

/// A running engine: its handle, the first subscription to its events (made before it ran, so
/// that nothing it says is missed), and its task.
pub struct Spawned {
    pub handle: Handle,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub task: JoinHandle<()>,
}

/// What the engine's own tasks bring back.
enum Done {
    Job {
        id: JobId,
        job: Box<Job>,
        report: Box<Report>,
        inserted: Option<Result<TrackedSession, StoreError>>,
    },
    Inserted {
        waiters: Vec<Waiter>,
        result: Result<TrackedSession, StoreError>,
    },
    Local {
        key: SessionKey,
        name: String,
        op: Local,
        waiters: Vec<Waiter>,
        result: Result<(), StoreError>,
    },
    Paused {
        paused: bool,
        waiters: Vec<Waiter>,
        result: Result<(), StoreError>,
    },
    /// The store's answer to a reservation of `want` starts from the shared budget.
    Reserved {
        want: u32,
        /// When it was asked for: the store counts the grant from about then, so its life runs
        /// from then too, however long the answer took.
        asked: Instant,
        result: Result<crate::store::Grant, StoreError>,
    },
    /// A read of the store for a front end.
    Read {
        waiter: Waiter,
        result: Result<Reply, StoreError>,
    },
    Loaded(Result<Vec<TrackedSession>, StoreError>),
    /// Who keeps the store, as it says (`Event::Keepers`).
    Keepers(Result<Vec<crate::store::KeeperInfo>, crate::store::RoleError>),
    /// A turn handed out is over; `None` when its holder dropped it without a word.
    Passed {
        id: JobId,
        key: Option<SessionKey>,
        passed: Option<messages::Passed>,
    },
    /// Refreshes that went out together (`ops::refresh_group`), with what each found.
    Group {
        calls: Vec<(JobId, Job)>,
        result: ops::GroupResult,
    },
    /// A call's outcome is in the store (durably), or could not be put there.
    Recorded {
        key: SessionKey,
        job: Box<Job>,
        report: Box<Report>,
        stored: Result<(), StoreError>,
    },
}

/// Starts the engine. `initial`: the sessions to start from; `None` reads them from the store
/// in the background (requests that come meanwhile wait for them), so that a front end can show
/// its first screen at once. `store_events`: the store's change feed, where others write to it.
pub fn spawn(
    ctx: Context,
    store: Arc<dyn SessionStore>,
    store_events: Option<mpsc::UnboundedReceiver<StoreEvent>>,
    initial: Option<Vec<TrackedSession>>,
    config: EngineConfig,
) -> Spawned {
    let (inbox_tx, inbox) = mpsc::unbounded_channel();
    let hub = Arc::new(Hub::default());
    let events = hub.subscribe();
    // Nobody drives a store it may not write.
    let driving = matches!(config.role, Role::Driver | Role::Leased { .. }) && !store.read_only();
    let takeover = match config.role {
        Role::Leased { lease, role } => Takeover::new(Some(role), Some(lease)),
        Role::Watcher(role) => Takeover::new(Some(role), None),
        Role::Driver | Role::OneShot => Takeover::new(None, None),
    };
    let batching = Batching::new(config.settings.batch, config.batching, ctx.clock.now(), Instant::now());
    let share = takeover.share();
    let mut dispatcher = Dispatcher::new(config.settings.concurrency, config.settings.request_budget, true);
    dispatcher.set_alone_share(share.as_ref().map_or(1.0, |s| s.budget));
    let mut engine = Engine {
        // Every process on the store spends from one budget, as Graph counts them together.
        dispatcher,
        gap: GapWatch::new(ctx.clock.now(), Instant::now()),
        driving,
        // The share the keeper's first turn gave it, before anything is planned.
        share,
        budget_unshared: false,
        said_cut_off: false,
        holds_seen: 0,
        keepers_seen: None,
        keepers_asked: None,
        paused: config.paused,
        settings: config.settings,
        ctx,
        store,
        hub: hub.clone(),
        entries: HashMap::with_capacity(initial.as_ref().map_or(0, Vec::len)),
        loading: initial.is_none(),
        waiting: Vec::new(),
        schedule: Schedule::default(),
        later: BTreeMap::new(),
        later_seq: 0,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        groups: HashMap::new(),
        batching,
        batching_told: config.batching.map(|v| v.keeps_alive),
        takeover,
        rng: config.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
        signin: None,
        signin_waiters: Vec::new(),
        auth_state: None,
        load_task: None,
        holds: (0, None),
        failure_rate: FailureRate::default(),
        asked_since_holds: false,
        lead: Duration::ZERO,
        not_before: None,
    };
    if let Some(note) = engine.batching.take_start_note() {
        engine.emit(Event::Note(note));
    }
    match initial {
        Some(sessions) => {
            for session in sessions {
                let key = session.key;
                engine.entries.insert(key, Entry::new(Arc::new(session)));
                engine.plan_from_state(key);
            }
        }
        None => {
            let store = engine.store.clone();
            let task = engine.tasks.spawn(async move { Done::Loaded(store.sessions().await) });
            engine.running.insert(task.id(), (None, None));
            engine.load_task = Some(task.id());
        }
    }
    let task = tokio::spawn(engine.run(inbox, store_events));
    Spawned { handle: Handle { inbox: inbox_tx, hub }, events, task }
}

struct Engine {
    ctx: Context,
    store: Arc<dyn SessionStore>,
    hub: Arc<Hub>,
    /// The sessions are being read from the store; requests wait for them in `waiting`.
    loading: bool,
    waiting: Vec<(Request, Waiter)>,
    settings: EngineSettings,
    driving: bool,
    /// The workbooks this engine keeps while it drives, where the store's keepers share them
    /// (`None`: all of them).
    share: Option<crate::store::Share>,
    /// The store could not share the budget out at the last ask.
    budget_unshared: bool,
    /// A keeper told the front ends it is cut off from the store, and not yet that it is back.
    said_cut_off: bool,
    /// The newest hold shared on the store that this engine has heard of (`heed_holds`).
    holds_seen: i64,
    /// What the store holds of what was learned of `$batch`, as far as this engine knows.
    batching_told: Option<bool>,
    /// The keepers last told to the front ends, and when they were last asked for.
    keepers_seen: Option<Vec<crate::store::KeeperInfo>>,
    keepers_asked: Option<Instant>,
    paused: bool,
    entries: HashMap<SessionKey, Entry>,
    schedule: Schedule,
    dispatcher: Dispatcher<Job>,
    /// Retries waiting out a pause before they go back to the dispatcher.
    later: BTreeMap<(Instant, u64), Job>,
    later_seq: u64,
    tasks: JoinSet<Done>,
    /// What each task works on, to free it if the task dies.
    running: HashMap<tokio::task::Id, (Option<JobId>, Option<SessionKey>)>,
    /// The calls of each task that refreshes a group.
    groups: HashMap<tokio::task::Id, Vec<(JobId, SessionKey)>>,
    batching: Batching,
    takeover: Takeover,
    gap: GapWatch,
    rng: fastrand::Rng,
    /// The sign-in under way, and its steps: a new one replaces it, and what the old one still
    /// says is never heard.
    signin: Option<(JoinHandle<()>, mpsc::UnboundedReceiver<Progress>)>,
    signin_waiters: Vec<Waiter>,
    auth_state: Option<SignInState>,
    /// The task reading the sessions, while it runs.
    load_task: Option<tokio::task::Id>,
    /// The holds last reported.
    holds: (usize, Option<Instant>),
    /// How often refreshes fail lately: sessions are refreshed earlier when it is high.
    failure_rate: FailureRate,
    /// An asked-for call was queued, or a hold set, since long holds were last looked at: the
    /// look costs a pass over the held lanes, so it is made only then.
    asked_since_holds: bool,
    /// How early automatic refreshes may start, while a crowd of them is due (`backlog_lead`).
    lead: Duration,
    /// The soonest a refresh looked at too early may start: the loop need not wake before.
    not_before: Option<Instant>,
}

impl Engine {
    fn emit(&self, event: Event) {
        self.hub.emit(event);
    }

    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Inbox>,
        store_events: Option<mpsc::UnboundedReceiver<StoreEvent>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut store_events, mut store_open) = match store_events {
            Some(rx) => (rx, true),
            None => (mpsc::unbounded_channel().1, false),
        };
        self.report_auth();
        'run: loop {
            self.pump();
            let wake = self.next_wake();
            // A fixed order rather than tokio's random one, so that a run under paused time
            // repeats exactly; every branch is cheap and `pump` runs whichever fired.
            tokio::select! {
                biased;
                _ = tick.tick() => self.tick(),
                message = inbox.recv() => {
                    // A burst of asks (a dashboard's `R` is one per session) is queued whole
                    // before any is sent, so that they go out together, in full batches.
                    let mut message = message;
                    loop {
                        match message {
                            Some(Inbox::Ask(request, reply)) => self.request(request, Waiter(reply)),
                            Some(Inbox::Shutdown) | None => break 'run,
                        }
                        match inbox.try_recv() {
                            Ok(next) => message = Some(next),
                            Err(_) => break,
                        }
                    }
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => match done {
                    Ok((id, done)) => {
                        self.running.remove(&id);
                        self.groups.remove(&id);
                        self.complete(done);
                    }
                    Err(e) => self.task_lost(e),
                },
                event = store_events.recv(), if store_open => match event {
                    Some(StoreEvent::Changed(changes)) => self.sync(changes),
                    Some(StoreEvent::Failed(e)) => self.emit(Event::Error(format!("store: {e}"))),
                    None => store_open = false,
                },
                progress = signin_step(&mut self.signin), if self.signin.is_some() => self.signin_progress(progress),
                _ = sleep_until(wake) => {}
            }
        }
        self.shutdown(inbox).await;
    }

    async fn shutdown(mut self, mut inbox: mpsc::UnboundedReceiver<Inbox>) {
        self.cancel_sign_in();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(Ok((id, done)))) => {
                    self.running.remove(&id);
                    self.groups.remove(&id);
                    self.complete(done);
                }
                Ok(Some(Err(e))) => self.task_lost(e),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(tasks = self.tasks.len(), "calls still running at shutdown were cancelled");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        self.store.flush().await;
        // Whatever is still asked or queued is answered: the engine stops.
        inbox.close();
        while let Ok(message) = inbox.try_recv() {
            if let Inbox::Ask(_, reply) = message {
                let _ = reply.send(Err(EngineError::Stopped));
            }
        }
        self.emit(Event::Stopped);
    }

    /// A task died without reporting (a panic): free what it held, say so, carry on.
    fn task_lost(&mut self, e: tokio::task::JoinError) {
        tracing::error!(error = %e, "an engine task failed");
        self.emit(Event::Error(format!("internal error: {e}")));
        if self.load_task == Some(e.id()) {
            let store = self.store.location().to_string();
            self.loaded(Err(StoreError::Backend { store, detail: "reading the sessions failed".into() }));
        }
        let lost: Vec<(Option<JobId>, Option<SessionKey>)> = match self.groups.remove(&e.id()) {
            Some(calls) => calls.into_iter().map(|(job, key)| (Some(job), Some(key))).collect(),
            None => self.running.remove(&e.id()).into_iter().collect(),
        };
        let now = Instant::now();
        for (job, key) in lost {
            if let Some(job) = job {
                self.dispatcher.finish(job, now, 1, Verdict::Other, 0.0);
                self.batching.check_lost(job);
            }
            if let Some(entry) = key.and_then(|k| self.entries.get_mut(&k)) {
                entry.busy = None;
                entry.removing = false;
                let delay = policy::backoff(entry.session.failures + 1, Duration::from_secs(300), self.rng.f64());
                if let Some(key) = key {
                    self.plan(key, delay);
                    self.run_parked(key);
                }
            }
        }
    }

    fn complete(&mut self, done: Done) {
        match done {
            Done::Group { calls, result } => self.group_done(calls, result),
            Done::Job { id, job, report, inserted } => self.job_done(id, *job, *report, inserted),
            Done::Inserted { waiters, result } => self.inserted(waiters, result),
            Done::Local { key, name, op, waiters, result } => self.local_done(key, &name, op, waiters, result),
            Done::Paused { paused, waiters, result } => {
                let answer = match result {
                    Ok(()) => {
                        self.set_paused(paused);
                        Ok(Reply::Done)
                    }
                    Err(e) => Err(EngineError::Store(e)),
                };
                handle::answer_all(waiters, &answer);
            }
            Done::Read { waiter, result } => waiter.answer(result.map_err(EngineError::Store)),
            Done::Reserved { want, asked, result } => {
                // Said once an outage: a keeper asks every second or so.
                let grant = match result {
                    Ok(grant) => {
                        if std::mem::take(&mut self.budget_unshared) {
                            tracing::info!("the shared request budget can be read again");
                            if std::mem::take(&mut self.said_cut_off) {
                                self.emit(Event::Note(
                                    "the store can be reached again; this keeper takes its turn with the others".into(),
                                ));
                            }
                        }
                        // Before anything starts on what was granted.
                        self.heed_holds(&grant.holds, grant.holds_seen);
                        Some(grant)
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut self.budget_unshared, true) {
                            tracing::warn!(error = %e, "the shared request budget cannot be read; this process spends only its own part of it for now");
                            if self.share.is_some() && !matches!(e, StoreError::Busy { .. }) {
                                // Said at once, not only once a write fails: a keeper on standby may write nothing for minutes.
                                self.said_cut_off = true;
                                self.emit(Event::Note(format!(
                                    "cut off from the store ({e}): this keeper goes on refreshing what it holds, on its own part of the request budget; once its leases lapse the other keepers take its workbooks over"
                                )));
                            }
                        }
                        None
                    }
                };
                self.dispatcher.reserved(asked, want, grant);
            }
            Done::Loaded(result) => {
                self.load_task = None;
                self.loaded(result)
            }
            Done::Keepers(result) => {
                match result {
                    Ok(keepers) => {
                        // Told when who keeps or what they hold changes, not when a heartbeat ages.
                        let seen: Vec<crate::store::KeeperInfo> = keepers
                            .iter()
                            .map(|k| crate::store::KeeperInfo { quiet_secs: None, ..k.clone() })
                            .collect();
                        if self.keepers_seen.as_ref() != Some(&seen) {
                            self.keepers_seen = Some(seen);
                            self.emit(Event::Keepers(keepers));
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "the store's keepers could not be read"),
                }
            }
            Done::Recorded { key, job, report, stored } => self.recorded(key, *job, &report, stored),
            Done::Passed { id, key, passed } => self.turn_done(id, key, passed),
        }
    }

    fn set_paused(&mut self, paused: bool) {
        if self.paused != paused {
            self.paused = paused;
            self.emit(Event::Paused(paused));
            // Automatic calls that came due while paused were let go: planned again by the rule.
            if !paused && self.driving {
                let idle: Vec<SessionKey> =
                    self.entries.iter().filter(|(_, e)| e.busy.is_none()).map(|(k, _)| *k).collect();
                for key in idle {
                    self.plan_from_state(key);
                }
            }
        }
    }

    // ---- sign-in --------------------------------------------------------------------------------

    fn start_sign_in(&mut self, waiter: Waiter) {
        self.cancel_sign_in();
        let Some(auth) = self.ctx.auth.clone() else {
            self.emit(Event::SignIn(Progress::Done(Err(EngineError::NoSignIn.to_string()))));
            waiter.answer(Err(EngineError::NoSignIn));
            return;
        };
        self.signin_waiters.push(waiter);
        let (steps, heard) = mpsc::unbounded_channel();
        self.signin = Some((tokio::spawn(auth.sign_in(steps)), heard));
    }

    fn cancel_sign_in(&mut self) {
        if let Some((task, _)) = self.signin.take() {
            task.abort();
        }
        handle::answer_all(std::mem::take(&mut self.signin_waiters), &Err(EngineError::Cancelled));
    }

    /// A step of the sign-in under way; `None` when it ended without saying so (it failed).
    fn signin_progress(&mut self, progress: Option<Progress>) {
        let progress =
            progress.unwrap_or_else(|| Progress::Done(Err("the sign-in stopped unexpectedly; see the log".into())));
        if let Progress::Done(result) = &progress {
            let answer = match result {
                Ok(user) => Ok(Reply::SignedIn(user.clone())),
                Err(why) => Err(EngineError::SignIn(why.clone())),
            };
            handle::answer_all(std::mem::take(&mut self.signin_waiters), &answer);
            self.signin = None;
        }
        let succeeded = matches!(progress, Progress::Done(Ok(_)));
        self.emit(Event::SignIn(progress));
        if succeeded {
            self.report_auth();
            // Sessions that failed for want of a token need not wait for their next retry.
            self.retry_signed_out();
        }
    }

    fn report_auth(&mut self) {
        let Some(auth) = &self.ctx.auth else { return };
        let state = auth.state();
        if self.auth_state.as_ref() != Some(&state) {
            self.auth_state = Some(state.clone());
            self.emit(Event::Auth(state));
        }
    }

    // ---- the tick -------------------------------------------------------------------------------

    fn tick(&mut self) {
        if let Some(auth) = &self.ctx.auth {
            auth.reload();
        }
        self.report_auth();
        // A read-only store is watched: this process can never drive it.
        let check = if self.store.read_only() { None } else { self.takeover.check() };
        match check {
            Some(true) if !self.driving => {
                self.driving = true;
                let keys: Vec<SessionKey> = self.entries.keys().copied().collect();
                for key in keys {
                    self.plan_from_state(key);
                }
                self.emit(Event::Driving);
            }
            Some(false) if self.driving => {
                // Another process took the role while this one was stopped: it drives now.
                self.driving = false;
                self.share = None;
                self.schedule.clear();
                let holder = self.takeover.holder();
                tracing::warn!(?holder, "another process took over the driver role; this one watches");
                self.emit(Event::Watching(holder));
            }
            _ => {}
        }
        if self.driving {
            self.follow_share();
        }
        self.read_keepers();
        if let Some(gap) = self.gap.check(self.ctx.clock.now(), Instant::now()) {
            self.refresh_overdue(gap);
        }
        self.lead = if self.driving && !self.paused { self.backlog_lead(Instant::now()) } else { Duration::ZERO };
    }

    // ---- other processes ------------------------------------------------------------------------

    fn sync(&mut self, changes: crate::store::Changes) {
        let paused = changes.paused;
        for synced in reconcile::reconcile(&mut self.entries, changes) {
            match synced {
                reconcile::Synced::Added(key) => {
                    self.plan_from_state(key);
                    if let Some(entry) = self.entries.get(&key) {
                        self.emit(Event::Added(entry.session.clone()));
                    }
                }
                reconcile::Synced::Changed(key) => {
                    if self.entries.get(&key).is_some_and(|e| e.busy.is_none()) {
                        self.plan_from_state(key);
                    }
                    if let Some(entry) = self.entries.get(&key) {
                        self.emit(Event::Changed(entry.session.clone()));
                    }
                }
                reconcile::Synced::Removed(key, name) => {
                    self.schedule.forget(key);
                    self.emit(Event::Removed { key, name });
                }
            }
        }
        self.set_paused(paused);
    }
}

/// The next step of the sign-in under way.
async fn signin_step(signin: &mut Option<(JoinHandle<()>, mpsc::UnboundedReceiver<Progress>)>) -> Option<Progress> {
    match signin {
        Some((_, steps)) => steps.recv().await,
        None => std::future::pending().await,
    }
}

impl Engine {
    /// Whether this engine keeps `session` alive: it drives, and the session's workbook is in its
    /// share where keepers share the store.
    fn keeps(&self, session: &crate::session::TrackedSession) -> bool {
        self.driving && self.share.as_ref().is_none_or(|share| share.covers(&share.unit_of(session)))
    }

    /// Writes what was learned of `$batch` to the store once, so that the next process starts
    /// from it instead of probing again.
    pub(super) fn share_batching(&mut self) {
        let learned = self.batching.learned();
        if learned.is_some() && learned != self.batching_told && !self.store.read_only() {
            self.batching_told = learned;
            let verdict = crate::store::BatchVerdict { keeps_alive: learned == Some(true), at: self.ctx.clock.now() };
            self.store.write(crate::store::Write::Batching(verdict));
        }
    }

    /// Reads who keeps the store, every few seconds and one read at a time, where keepers share
    /// its workbooks (the read blocks on the database, so it runs off the loop).
    fn read_keepers(&mut self) {
        const EVERY: Duration = Duration::from_secs(3);
        let now = Instant::now();
        if self.keepers_asked.is_some_and(|at| now.saturating_duration_since(at) < EVERY) {
            return;
        }
        let Some(role) = self.takeover.shared_role() else { return };
        self.keepers_asked = Some(now);
        let task = self.tasks.spawn_blocking(move || Done::Keepers(role.keepers()));
        self.running.insert(task.id(), (None, None));
    }

    /// Whether `session`'s workbook is only on standby here (`Share::standby`).
    pub(super) fn on_standby(&self, session: &crate::session::TrackedSession) -> bool {
        self.share.as_ref().is_some_and(|share| share.standby.contains(&share.unit_of(session)))
    }

    /// Follows this keeper's share of the workbooks: sessions of a workbook it gained are
    /// planned from what is known of them (an overdue one goes at once), those of a workbook it
    /// lost (to a keeper that took over while this one was cut off or stopped) are let go, and
    /// those of a workbook put on standby or back are planned again at their new pace.
    fn follow_share(&mut self) {
        let now_share = self.takeover.share();
        let same = match (&now_share, &self.share) {
            (Some(a), Some(b)) => a.same_units(b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if same {
            // Only the leases' end moved.
            self.share = now_share;
            return;
        }
        self.dispatcher.set_alone_share(now_share.as_ref().map_or(1.0, |s| s.budget));
        let before = std::mem::replace(&mut self.share, now_share);
        let state = |share: &Option<crate::store::Share>, session: &crate::session::TrackedSession| match share {
            None => Some(false),
            Some(share) => {
                let unit = share.unit_of(session);
                if share.kept.contains(&unit) {
                    Some(false)
                } else if share.standby.contains(&unit) {
                    Some(true)
                } else {
                    None
                }
            }
        };
        let keys: Vec<(SessionKey, Option<bool>, Option<bool>)> = self
            .entries
            .values()
            .map(|e| (e.session.key, state(&before, &e.session), state(&self.share, &e.session)))
            .collect();
        let (mut gained, mut lost, mut moved) = (0usize, 0usize, 0usize);
        for (key, was, is) in keys {
            if was != is {
                // Another keeper may have refreshed it meanwhile: batches alone no longer kept it
                // alive as far as this one knows, so it cannot vouch for them (`batching`).
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.batched_since = None;
                }
                self.batching.forget(key);
            }
            match (was, is) {
                (None, Some(_)) => {
                    gained += 1;
                    self.plan_from_state(key);
                }
                (Some(_), None) => {
                    lost += 1;
                    self.schedule.cancel(key);
                    self.emit(Event::Scheduled { key, at: None });
                }
                (Some(a), Some(b)) if a != b => {
                    moved += 1;
                    if self.entries.get(&key).is_some_and(|e| e.busy.is_none()) {
                        self.plan_from_state(key);
                    }
                }
                _ => {}
            }
        }
        if gained + lost + moved > 0 {
            let (workbooks, standby) = self.share.as_ref().map_or((0, 0), |s| (s.kept.len(), s.standby.len()));
            tracing::info!(
                workbooks,
                standby,
                sessions_gained = gained,
                sessions_let_go = lost,
                sessions_on_standby_or_back = moved,
                "this keeper's share of the workbooks changed"
            );
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
