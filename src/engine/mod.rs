//! The refresh engine: a tokio task that owns the authoritative session list, takes `Command`s,
//! sends every Graph call through one dispatcher (`dispatch`), writes every change to the store,
//! and reports `Event`s. The dashboard, `wbsessions run` and the one-shot commands all drive it.
//!
//! `dispatch` decides which call may start, `policy` when a session is due again, `schedule`
//! holds the due times, `reconcile` adopts what other processes wrote, `takeover` makes a watcher
//! the driver, `ops` makes the calls; this module wires them.

mod batching;
pub mod dispatch;
pub mod keeper;
mod messages;
pub mod ops;
pub mod policy;
mod reconcile;
pub mod schedule;
pub mod settings;
mod takeover;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::auth::Tokens;
pub use crate::auth::signin::Progress as SignInProgress;
use crate::auth::signin::{Authority, NO_CLIENT_ID, Progress};
use crate::graph::{ErrorClass, GraphClient};
use crate::session::{
    MAX_INTERVAL, NewSession, Outcome, OutcomeKind, SessionKey, SettingsChange, Status, TrackedSession, WorkbookRef,
    check_interval, validate_name,
};
pub use crate::store::KEPT_OUTCOMES;
use crate::store::{Persist, StoreEvent, Write};
use crate::time::Clock;
use batching::{Batching, GATHER, MAX_BATCH, Route};
use dispatch::{Dispatcher, JobId, Ticket, Urgency};
pub use messages::{Command, Event, Finished, JobKind, SignInState};
pub use ops::{BatchResult, Failure, Graph, LiveGraph, Report};
use policy::{
    FailureRate, MANUAL_RETRIES, MANUAL_WAIT, Retry, Verdict, after_call, manual_retry, next_interval, safe_interval,
};
use reconcile::{Synced, reconcile};
use schedule::{GapWatch, Schedule};
pub use settings::EngineSettings;
use takeover::Takeover;

/// How long in-flight calls may finish after a shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What sign-in needs: the token source, where to sign in, the cache, and Graph for `/me`.
pub struct AuthSetup {
    pub tokens: Tokens,
    pub authority: Option<Authority>,
    pub cache: PathBuf,
    pub client: GraphClient,
}

/// What the engine calls out to; cheap to clone into tasks.
#[derive(Clone)]
pub struct Context {
    pub graph: Arc<dyn Graph>,
    pub clock: Clock,
    /// `None` where tokens do not matter (tests with a fake Graph).
    pub auth: Option<Arc<AuthSetup>>,
}

/// Who schedules automatic refreshes.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// This engine holds the store's driver lock.
    Driver,
    /// Another process drives; this one takes over once the lock at `take_over` is free.
    Watcher { take_over: Option<PathBuf> },
    /// Only what it is told: a one-shot command.
    OneShot,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub settings: EngineSettings,
    pub role: Role,
    /// Whether automatic refresh is paused for the store, as the store says.
    pub paused: bool,
    /// Seeds the jitter, for runs that must repeat exactly; `None` seeds it at random.
    pub seed: Option<u64>,
}

pub struct EngineHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub task: JoinHandle<()>,
}

/// Kinds of calls queued for a session, so that one is not queued twice.
mod queued {
    pub const REFRESH: u8 = 1;
    pub const CLOSE: u8 = 2;
    pub const RECREATE: u8 = 4;
}

/// A store-only change to a session; waits for a call on the session that is under way.
#[derive(Debug, Clone)]
enum Local {
    Edit(SettingsChange),
    SetAuto(bool),
    Remove,
}

impl Local {
    fn kind(&self) -> JobKind {
        match self {
            Local::Edit(_) => JobKind::Edit,
            Local::SetAuto(_) => JobKind::SetAuto,
            Local::Remove => JobKind::Remove,
        }
    }
}

pub(crate) struct Entry {
    /// Shared with the front ends' copies; changed through `Arc::make_mut`.
    session: Arc<TrackedSession>,
    /// The call on this session that runs now.
    busy: Option<JobId>,
    queued: u8,
    /// Store changes asked for while a call ran: done right after it.
    parked: VecDeque<Local>,
    /// How late the running automatic refresh started.
    late: Option<Duration>,
    /// Its removal is being written; nothing new starts on it.
    removing: bool,
    /// Since when only `$batch` refreshes have kept it alive (`batching`'s audit looks at it).
    batched_since: Option<Instant>,
}

impl Entry {
    fn new(session: Arc<TrackedSession>) -> Self {
        Entry {
            session,
            busy: None,
            queued: 0,
            parked: VecDeque::new(),
            late: None,
            removing: false,
            batched_since: None,
        }
    }
}

/// A Graph call waiting in the dispatcher.
#[derive(Debug, Clone)]
enum Job {
    /// `due` is set for automatic refreshes; `attempt` counts retries of asked-for calls.
    Refresh {
        key: SessionKey,
        due: Option<Instant>,
        attempt: u8,
    },
    Close {
        key: SessionKey,
        attempt: u8,
    },
    /// `asked`: someone asked for it, as opposed to an expired session being recreated.
    Recreate {
        key: SessionKey,
        attempt: u8,
        asked: bool,
    },
    Create {
        new: NewSession,
        attempt: u8,
    },
    /// Tracking a by-path workbook: it is resolved first.
    Track {
        new: NewSession,
        attempt: u8,
    },
    /// A session this engine created but could not store: closed so that nothing is left open.
    CloseOrphan {
        name: String,
        session: Box<TrackedSession>,
        why: String,
    },
}

impl Job {
    fn key(&self) -> Option<SessionKey> {
        match self {
            Job::Refresh { key, .. } | Job::Close { key, .. } | Job::Recreate { key, .. } => Some(*key),
            _ => None,
        }
    }

    fn kind(&self) -> JobKind {
        match self {
            Job::Refresh { .. } => JobKind::Refresh,
            Job::Close { .. } => JobKind::Close,
            Job::Recreate { .. } => JobKind::Recreate,
            Job::Create { .. } | Job::CloseOrphan { .. } => JobKind::Create,
            Job::Track { .. } => JobKind::Track,
        }
    }

    /// Whether someone waits for it (and so hears when it is done, and it is retried).
    fn asked(&self) -> bool {
        match self {
            Job::Refresh { due, .. } => due.is_none(),
            Job::Recreate { asked, .. } => *asked,
            _ => true,
        }
    }

    fn attempt(&self) -> u8 {
        match self {
            Job::Refresh { attempt, .. }
            | Job::Close { attempt, .. }
            | Job::Recreate { attempt, .. }
            | Job::Create { attempt, .. }
            | Job::Track { attempt, .. } => *attempt,
            Job::CloseOrphan { .. } => MANUAL_RETRIES,
        }
    }

    fn retried(mut self) -> Job {
        match &mut self {
            Job::Refresh { attempt, .. }
            | Job::Close { attempt, .. }
            | Job::Recreate { attempt, .. }
            | Job::Create { attempt, .. }
            | Job::Track { attempt, .. } => *attempt += 1,
            Job::CloseOrphan { .. } => {}
        }
        self
    }

    fn bit(&self) -> u8 {
        match self {
            Job::Refresh { .. } => queued::REFRESH,
            Job::Close { .. } => queued::CLOSE,
            Job::Recreate { .. } => queued::RECREATE,
            _ => 0,
        }
    }
}

enum Done {
    Job {
        id: JobId,
        job: Box<Job>,
        report: Box<Report>,
        inserted: Option<Result<TrackedSession, String>>,
    },
    Inserted {
        name: String,
        result: Result<TrackedSession, String>,
    },
    Local {
        key: SessionKey,
        name: String,
        op: Local,
        result: Result<(), String>,
    },
    Paused {
        paused: bool,
        result: Result<(), String>,
    },
    History {
        key: SessionKey,
        result: Result<Vec<Outcome>, String>,
    },
    Loaded(Result<Vec<TrackedSession>, String>),
    /// Refreshes that went out together (`ops::refresh_group`), with what each found.
    Group {
        calls: Vec<(JobId, Job)>,
        result: ops::GroupResult,
    },
}

/// Starts the engine. `initial`: the sessions to start from; `None` reads them from the store
/// in the background (commands that come meanwhile wait for them), so that a front end can show
/// its first screen at once.
pub fn spawn(
    ctx: Context,
    store: Arc<dyn Persist>,
    store_events: Option<mpsc::UnboundedReceiver<StoreEvent>>,
    initial: Option<Vec<TrackedSession>>,
    config: EngineConfig,
) -> EngineHandle {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (signin_tx, signin_rx) = mpsc::unbounded_channel();
    let takeover = Takeover::new(match &config.role {
        Role::Watcher { take_over } => take_over.clone(),
        _ => None,
    });
    let batch = config.settings.batch;
    let mut engine = Engine {
        dispatcher: Dispatcher::new(config.settings.concurrency, config.settings.request_budget),
        gap: GapWatch::new(ctx.clock.now(), Instant::now()),
        driving: config.role == Role::Driver,
        paused: config.paused,
        settings: config.settings,
        ctx,
        store,
        events: events_tx,
        entries: HashMap::with_capacity(initial.as_ref().map_or(0, Vec::len)),
        loading: initial.is_none(),
        waiting: VecDeque::new(),
        schedule: Schedule::default(),
        later: BTreeMap::new(),
        later_seq: 0,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        groups: HashMap::new(),
        batching: Batching::new(batch, Instant::now()),
        takeover,
        rng: config.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
        signin: None,
        signin_tx,
        auth_state: None,
        holds: (0, None),
        failure_rate: FailureRate::default(),
        asked_since_holds: false,
    };
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
            let task = engine.tasks.spawn(async move { Done::Loaded(store.load().await.map_err(|e| e.to_string())) });
            engine.running.insert(task.id(), (None, None));
        }
    }
    let task = tokio::spawn(engine.run(command_rx, store_events, signin_rx));
    EngineHandle { commands, events, task }
}

struct Engine {
    ctx: Context,
    store: Arc<dyn Persist>,
    /// The sessions are being read from the store; commands wait for them in `waiting`.
    loading: bool,
    waiting: VecDeque<Command>,
    settings: EngineSettings,
    events: mpsc::UnboundedSender<Event>,
    driving: bool,
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
    signin: Option<JoinHandle<()>>,
    signin_tx: mpsc::UnboundedSender<Progress>,
    auth_state: Option<SignInState>,
    /// The holds last reported.
    holds: (usize, Option<Instant>),
    /// How often refreshes fail lately: sessions are refreshed earlier when it is high.
    failure_rate: FailureRate,
    /// An asked-for call was queued, or a hold set, since long holds were last looked at: the
    /// look costs a pass over the held lanes, so it is made only then.
    asked_since_holds: bool,
}

fn instant_after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay.min(MAX_INTERVAL)).unwrap_or(now)
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Engine {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Calls the dispatcher's `accept` ended without making them.
    fn emit_finished(&self, ended: &mut Vec<Finished>) {
        for finished in ended.drain(..) {
            self.emit(Event::Finished(finished));
        }
    }

    fn finished(&self, kind: JobKind, key: Option<SessionKey>, name: &str, result: Result<(), String>) {
        self.emit(Event::Finished(Finished { kind, key, name: name.to_string(), result }));
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        store_events: Option<mpsc::UnboundedReceiver<StoreEvent>>,
        mut signin_rx: mpsc::UnboundedReceiver<Progress>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut store_events, mut store_open) = match store_events {
            Some(rx) => (rx, true),
            None => (mpsc::unbounded_channel().1, false),
        };
        self.report_auth();
        loop {
            self.pump();
            let wake = self.next_wake();
            // A fixed order rather than tokio's random one, so that a run under paused time
            // repeats exactly; every branch is cheap and `pump` runs whichever fired.
            tokio::select! {
                biased;
                _ = tick.tick() => self.tick(),
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.command(command),
                },
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
                Some(progress) = signin_rx.recv() => self.signin_progress(progress),
                _ = sleep_until(wake) => {}
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        if let Some(signin) = self.signin.take() {
            signin.abort();
        }
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
        self.emit(Event::Stopped);
    }

    /// A task died without reporting (a panic): free what it held, say so, carry on.
    fn task_lost(&mut self, e: tokio::task::JoinError) {
        tracing::error!(error = %e, "an engine task failed");
        self.emit(Event::Error(format!("internal error: {e}")));
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
                }
            }
        }
    }

    // ---- scheduling ---------------------------------------------------------------------------

    /// The interval in force: the session's, shortened while calls fail often (`safe_interval`).
    fn interval_of(&self, session: &TrackedSession) -> Duration {
        let defaults = &self.settings.defaults;
        safe_interval(defaults.interval_of(session), defaults.expiry(session.mode), self.failure_rate.value())
    }

    /// Plans the next automatic refresh `delay` from now, if this engine drives and the session
    /// is kept alive; tells the front ends either way.
    fn plan(&mut self, key: SessionKey, delay: Duration) {
        let Some(entry) = self.entries.get(&key) else { return };
        if !self.driving {
            return;
        }
        let at = entry.session.is_kept_alive().then(|| {
            self.schedule.plan(key, instant_after(delay));
            crate::time::add(self.ctx.clock.now(), delay)
        });
        if at.is_none() {
            self.schedule.cancel(key);
        }
        self.emit(Event::Scheduled { key, at });
    }

    /// Plans from what is known of the session: at once if it is new or its interval has passed
    /// since its last activity, otherwise one (jittered) interval after that activity.
    fn plan_from_state(&mut self, key: SessionKey) {
        let Some(entry) = self.entries.get(&key) else { return };
        let session = &entry.session;
        let delay = if session.status == Status::New {
            Duration::ZERO
        } else {
            let interval = next_interval(self.interval_of(session), self.rng.f64());
            // An activity "in the future" (a clock set back, another machine's clock) counts as
            // now: Graph's idle timer started no later than that.
            let now = self.ctx.clock.now();
            let due = crate::time::add(session.last_activity().min(now), interval);
            crate::time::until(now, due)
        };
        self.plan(key, delay);
    }

    /// How soon the session must be refreshed: the sooner it would expire, the sooner it goes.
    fn urgency_of(&self, session: &TrackedSession) -> Urgency {
        match self.settings.defaults.expires_at(session) {
            Some(at) => Urgency::By(instant_after(crate::time::until(self.ctx.clock.now(), at))),
            None => Urgency::By(Instant::now()),
        }
    }

    /// The session a job is about, by name, and the workbook it calls; `None` when its session is
    /// no longer tracked.
    fn subject<'a>(&'a self, job: &'a Job) -> Option<(&'a str, &'a WorkbookRef)> {
        match job {
            Job::Create { new, .. } | Job::Track { new, .. } => Some((&new.name, &new.workbook)),
            Job::CloseOrphan { name, session, .. } => Some((name, &session.workbook)),
            _ => job.key().and_then(|k| self.entries.get(&k)).map(|e| (e.session.name.as_str(), &e.session.workbook)),
        }
    }

    /// The subject's name and its dispatcher lane, owned.
    fn name_and_lane(&self, job: &Job) -> Option<(String, String)> {
        self.subject(job).map(|(name, workbook)| (name.to_string(), workbook.to_string()))
    }

    /// Queues a call, unless the same kind is queued for the session already.
    fn submit(&mut self, job: Job) {
        self.asked_since_holds |= job.asked();
        let Some(lane) = self.subject(&job).map(|(_, workbook)| workbook.to_string()) else { return };
        let urgency = match (&job, job.key().and_then(|k| self.entries.get(&k))) {
            (Job::Refresh { due: Some(_), .. } | Job::Recreate { asked: false, .. }, Some(entry)) => {
                self.urgency_of(&entry.session)
            }
            _ => Urgency::Now,
        };
        if let Some(entry) = job.key().and_then(|k| self.entries.get_mut(&k)) {
            let bit = job.bit();
            if entry.queued & bit != 0 {
                return;
            }
            entry.queued |= bit;
        }
        self.dispatcher.submit(&lane, urgency, job);
    }

    /// Moves due work to the dispatcher and starts what the limits allow.
    fn pump(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.submit(job);
        }
        if self.dispatcher.release_holds(now) {
            self.report_holds();
        }
        if self.driving && !self.paused {
            // Gathered only once the first is due: a pass that ran for another reason (a call
            // ended) would otherwise send the few that just came within reach, in small batches.
            let gather = self.batching.gathers() && self.schedule.next_due().is_some_and(|due| due <= now);
            let horizon = if gather { now + GATHER } else { now };
            for (key, due) in self.schedule.due(horizon) {
                let Some(entry) = self.entries.get(&key) else { continue };
                // Early by a twentieth of its interval at most: a session refreshed every second
                // must not be refreshed ever sooner.
                if due > now && due - now > self.interval_of(&entry.session) / 20 {
                    self.schedule.plan(key, due);
                    continue;
                }
                if entry.busy.is_none() && !entry.removing {
                    self.submit(Job::Refresh { key, due: Some(due), attempt: 0 });
                }
            }
        }
        if std::mem::take(&mut self.asked_since_holds) {
            self.refuse_long_holds(now);
        }
        let auto_allowed = self.driving && !self.paused;
        let mut ended: Vec<Finished> = Vec::new();
        loop {
            let entries = &mut self.entries;
            let ticket = self.dispatcher.start(now, |job| accept(entries, auto_allowed, job, &mut ended));
            self.emit_finished(&mut ended);
            let Some(ticket) = ticket else { break };
            match self.route(&ticket, now) {
                Route::Plain | Route::Check => {
                    self.start(ticket, now);
                    continue;
                }
                Route::Alone { probe } => {
                    self.start_group(vec![ticket], probe, now);
                    continue;
                }
                Route::Group => {}
            }
            // Refreshes on other workbooks that may start now go with it, in one request.
            let mut group = vec![ticket];
            while group.len() < MAX_BATCH {
                let entries = &mut self.entries;
                let joined = self.dispatcher.join(
                    now,
                    group[0].id,
                    |job| matches!(job, Job::Refresh { .. }),
                    |job| accept(entries, auto_allowed, job, &mut ended),
                );
                self.emit_finished(&mut ended);
                match joined {
                    Some(ticket) => group.push(ticket),
                    None => break,
                }
            }
            if group.len() > 1 {
                self.start_group(group, false, now);
            } else if let Some(alone) = group.pop() {
                // A batch of one would save nothing.
                self.start(alone, now);
            }
        }
    }

    /// How a call goes out: only refreshes travel in `$batch`, and until batching is trusted only
    /// the automatic ones of the probe and the canary do (`batching`).
    fn route(&mut self, ticket: &Ticket<Job>, now: Instant) -> Route {
        let Job::Refresh { key, due, .. } = &ticket.payload else { return Route::Plain };
        if due.is_none() {
            return if self.batching.gathers() { Route::Group } else { Route::Plain };
        }
        if let Some(canary) = self.batching.canary()
            && !self.entries.get(&canary).is_some_and(|e| e.session.is_kept_alive() && !e.removing)
        {
            self.batching.forget(canary);
        }
        let Some(entry) = self.entries.get(key) else { return Route::Plain };
        let expiry = self.settings.defaults.expiry(entry.session.mode);
        let route = self.batching.route(ticket.id, *key, entry.batched_since, expiry, now);
        if route == Route::Check {
            tracing::info!(session = %entry.session.name, "checking with a plain refresh that $batch refreshes kept it alive");
        }
        route
    }

    /// Calls someone waits for on a workbook Graph asked to leave alone for longer than
    /// `MANUAL_WAIT` end now, saying so; the keeper's own calls wait for the hold.
    fn refuse_long_holds(&mut self, now: Instant) {
        let taken =
            self.dispatcher.take_held(now + MANUAL_WAIT, |job| job.asked() && !matches!(job, Job::CloseOrphan { .. }));
        for (until, job) in taken {
            let Some((name, workbook)) = self.name_and_lane(&job) else { continue };
            if let Some(entry) = job.key().and_then(|k| self.entries.get_mut(&k)) {
                entry.queued &= !job.bit();
            }
            let wait = crate::time::format_duration(until.saturating_duration_since(now));
            self.finished(
                job.kind(),
                job.key(),
                &name,
                Err(format!("throttled: Graph asked to leave {workbook} alone for {wait} more; not waited for")),
            );
        }
    }

    fn next_wake(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut wake = self.dispatcher.wake_at(now);
        if self.driving
            && !self.paused
            && let Some(due) = self.schedule.next_due()
        {
            wake = Some(wake.map_or(due, |w| w.min(due)));
        }
        if let Some(((at, _), _)) = self.later.first_key_value() {
            wake = Some(wake.map_or(*at, |w| w.min(*at)));
        }
        wake
    }

    fn report_holds(&mut self) {
        let holds = self.dispatcher.holds();
        if (holds.workbooks, holds.until) == self.holds {
            return;
        }
        self.holds = (holds.workbooks, holds.until);
        let now = Instant::now();
        let until = holds.until.map(|t| crate::time::add(self.ctx.clock.now(), t.saturating_duration_since(now)));
        self.emit(Event::Holds { workbooks: holds.workbooks, until });
    }

    // ---- calls ----------------------------------------------------------------------------------

    fn start(&mut self, ticket: Ticket<Job>, now: Instant) {
        let Ticket { id, payload: job, .. } = ticket;
        let session = match job.key().and_then(|k| self.entries.get_mut(&k)) {
            Some(entry) => {
                entry.busy = Some(id);
                entry.late = late_by(&job, now);
                Some(entry.session.clone())
            }
            None => None,
        };
        if let Some(key) = job.key() {
            self.emit(Event::Started { key, kind: job.kind() });
        }
        let graph = self.ctx.graph.clone();
        let clock = self.ctx.clock.clone();
        let store = self.store.clone();
        let key = job.key();
        let task = self.tasks.spawn(async move {
            let graph = &*graph;
            let (report, inserted) = match (&job, &session) {
                (Job::Refresh { .. }, Some(s)) => (ops::refresh(graph, s, &clock).await, None),
                (Job::Close { .. }, Some(s)) => (ops::close(graph, s, &clock).await, None),
                (Job::Recreate { .. }, Some(s)) => (ops::create(graph, &s.workbook, s.mode, &clock).await, None),
                (Job::CloseOrphan { session, .. }, _) => (ops::close(graph, session, &clock).await, None),
                (Job::Create { new, .. }, _) => {
                    let report = ops::create(graph, &new.workbook, new.mode, &clock).await;
                    let inserted = match &report.new_session_id {
                        Some(id) => {
                            let mut session = new.clone().into_tracked(id.clone(), clock.now());
                            report.apply_to(&mut session);
                            let history = report.outcomes.clone();
                            Some(store.insert(session, history).await.map_err(|e| e.to_string()))
                        }
                        None => None,
                    };
                    (report, inserted)
                }
                (Job::Track { new, .. }, _) => {
                    let (resolved, requests) = ops::resolve(graph, &new.workbook).await;
                    let mut report = Report { requests, ..Report::default() };
                    let inserted = match (resolved, &new.session_id) {
                        (Ok(workbook), Some(id)) => {
                            let mut session = new.clone().into_tracked(id.clone(), clock.now());
                            session.workbook = workbook;
                            Some(store.insert(session, Vec::new()).await.map_err(|e| e.to_string()))
                        }
                        (Err(failure), _) => {
                            report.failure = Some(failure);
                            None
                        }
                        (Ok(_), None) => Some(Err("no session id to track".to_string())),
                    };
                    (report, inserted)
                }
                // The session went away between the dispatcher's check and here: nothing to do.
                (_, None) => (Report::default(), None),
            };
            Done::Job { id, job: Box::new(job), report: Box::new(report), inserted }
        });
        self.running.insert(task.id(), (Some(id), key));
    }

    /// Refreshes on different workbooks, sent together (`ops::refresh_group`).
    fn start_group(&mut self, group: Vec<Ticket<Job>>, probe: bool, now: Instant) {
        let mut calls = Vec::with_capacity(group.len());
        let mut members = Vec::with_capacity(group.len());
        for Ticket { id, payload: job, .. } in group {
            let Some(key) = job.key() else { continue };
            let Some(entry) = self.entries.get_mut(&key) else {
                // `accept` saw the session a moment ago; should it be gone, the call is simply not made.
                self.dispatcher.finish(id, now, 0, Verdict::Other, 0.0);
                continue;
            };
            entry.busy = Some(id);
            entry.late = late_by(&job, now);
            calls.push((id, job, entry.session.clone()));
            members.push((id, key));
            self.emit(Event::Started { key, kind: JobKind::Refresh });
        }
        if calls.is_empty() {
            return;
        }
        let graph = self.ctx.graph.clone();
        let clock = self.ctx.clock.clone();
        let task = self.tasks.spawn(async move {
            let sessions: Vec<&TrackedSession> = calls.iter().map(|(_, _, s)| &**s).collect();
            let result = ops::refresh_group(&*graph, &sessions, probe, &clock).await;
            Done::Group { calls: calls.into_iter().map(|(id, job, _)| (id, job)).collect(), result }
        });
        self.groups.insert(task.id(), members);
    }

    fn group_done(&mut self, calls: Vec<(JobId, Job)>, result: ops::GroupResult) {
        let now = Instant::now();
        let first = calls.first().and_then(|(_, job)| job.key()).and_then(|k| Some(k).zip(self.entries.get(&k)));
        let probed = match (&result.probe, first) {
            (Some(probe), Some((key, entry))) => {
                let expiry = self.settings.defaults.expiry(entry.session.mode);
                let name = entry.session.name.clone();
                self.batching.probed(probe, key, &name, expiry, now)
            }
            _ => None,
        };
        let batched = result.batch == ops::Batch::Answered;
        let mut notes = vec![
            probed,
            match &result.batch {
                ops::Batch::NotSent => None,
                ops::Batch::Answered => {
                    self.batching.answered();
                    None
                }
                ops::Batch::DidNotWork(why) => self.batching.refused(why),
                ops::Batch::Unanswered(why) => self.batching.unanswered(why),
            },
        ];
        let wall = self.ctx.clock.now();
        for ((id, job), report) in calls.into_iter().zip(result.reports) {
            let key = job.key();
            let mut kept_since = None;
            if let Some(entry) = key.and_then(|k| self.entries.get(&k)) {
                kept_since = entry.batched_since;
                // Kept alive by batches alone, and found expired within its idle expiry of the
                // last of them: batches do not keep sessions alive here.
                let expiry = self.settings.defaults.expiry(entry.session.mode);
                let ago = entry.session.last_refresh.map(|at| crate::time::until(at, wall));
                if batched
                    && kept_since.is_some()
                    && report.failure.as_ref().is_some_and(|f| f.class() == ErrorClass::Expired)
                    && let Some(ago) = ago.filter(|ago| *ago < expiry)
                {
                    notes.push(self.batching.expired_in_batch(&entry.session.name, ago));
                }
            }
            let worked = report.failure.is_none();
            self.job_done(id, job, report, None);
            if batched
                && worked
                && let Some(entry) = key.and_then(|k| self.entries.get_mut(&k))
            {
                entry.batched_since = Some(kept_since.unwrap_or(now));
            }
        }
        for note in notes.into_iter().flatten() {
            self.note(note);
        }
    }

    /// How refreshes travel changed: said in the log and to the front ends.
    fn note(&self, note: String) {
        tracing::info!("{note}");
        self.emit(Event::Note(note));
    }

    fn complete(&mut self, done: Done) {
        match done {
            Done::Group { calls, result } => self.group_done(calls, result),
            Done::Job { id, job, report, inserted } => self.job_done(id, *job, *report, inserted),
            Done::Inserted { name, result } => self.inserted(JobKind::Track, &name, result),
            Done::Local { key, name, op, result } => self.local_done(key, &name, op, result),
            Done::Paused { paused, result } => match result {
                Ok(()) => self.set_paused(paused),
                Err(e) => self.emit(Event::Error(format!(
                    "cannot {} automatic refresh: {e}",
                    if paused { "pause" } else { "resume" }
                ))),
            },
            Done::History { key, result } => match result {
                Ok(outcomes) => self.emit(Event::History { key, outcomes }),
                Err(e) => self.emit(Event::Error(format!("cannot read the history: {e}"))),
            },
            Done::Loaded(result) => self.loaded(result),
        }
    }

    /// The sessions an engine started without have been read: plan them, tell the front ends,
    /// and do what was asked meanwhile.
    fn loaded(&mut self, result: Result<Vec<TrackedSession>, String>) {
        self.loading = false;
        match result {
            Ok(sessions) => {
                let mut shared = Vec::with_capacity(sessions.len());
                for session in sessions {
                    let key = session.key;
                    // A session other processes wrote meanwhile is known already; keep that copy.
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.entries.entry(key) {
                        let session = Arc::new(session);
                        slot.insert(Entry::new(session.clone()));
                        self.plan_from_state(key);
                        shared.push(session);
                    }
                }
                self.emit(Event::Loaded(shared));
            }
            Err(e) => self.emit(Event::Error(format!("cannot read the sessions: {e}"))),
        }
        for command in std::mem::take(&mut self.waiting) {
            self.command(command);
        }
    }

    fn job_done(&mut self, id: JobId, job: Job, report: Report, inserted: Option<Result<TrackedSession, String>>) {
        let now = Instant::now();
        let failure = report.failure.as_ref();
        let verdict = Verdict::of(failure.map(Failure::class), failure.and_then(Failure::retry_after));
        if self.dispatcher.finish(id, now, report.requests, verdict, self.rng.f64()) {
            self.asked_since_holds = true;
            self.report_holds();
        }
        if self.batching.is_check(id) {
            let checked = job
                .key()
                .and_then(|k| self.entries.get(&k))
                .and_then(|e| Some(e.session.name.clone()).zip(e.batched_since));
            match checked {
                Some((name, since)) => {
                    let alone = now.saturating_duration_since(since);
                    if let Some(note) = self.batching.checked(&name, alone, failure.map(Failure::class), now) {
                        self.note(note);
                    }
                }
                None => self.batching.check_lost(id),
            }
        }
        if job.asked()
            && let Some(failure) = failure
            && job.attempt() < MANUAL_RETRIES
            && let Some(retry) = manual_retry(
                failure.class(),
                failure.http_status(),
                failure.retry_after(),
                job.attempt(),
                self.rng.f64(),
            )
        {
            // Record what happened, then try again; whoever asked hears only the last word.
            if let Some(key) = job.key() {
                self.record(key, &report);
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.busy = None;
                }
            }
            tracing::info!(
                call = job.kind().verb(),
                attempt = job.attempt() + 1,
                "trying again after a {}",
                failure.http_status().map_or("failure".into(), |s| s.to_string())
            );
            let (name, lane) = self.name_and_lane(&job).unwrap_or_default();
            let after = match retry {
                Retry::Now => {
                    self.dispatcher.held_until(&lane).map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
                }
                Retry::After(pause) => pause,
            };
            self.emit(Event::Retrying { kind: job.kind(), name, attempt: job.attempt() + 1, after });
            let key = job.key();
            match retry {
                Retry::Now => self.submit(job.retried()),
                Retry::After(pause) => {
                    self.later_seq += 1;
                    self.later.insert((now + pause, self.later_seq), job.retried());
                }
            }
            if let Some(key) = key {
                self.run_parked(key);
            }
            return;
        }
        match job {
            Job::Refresh { key, .. } | Job::Close { key, .. } | Job::Recreate { key, .. } => {
                self.session_call_done(key, &job, &report)
            }
            Job::Create { new, .. } => match (inserted, &report.new_session_id) {
                (Some(Ok(session)), _) => self.inserted(JobKind::Create, &new.name, Ok(session)),
                (Some(Err(why)), Some(id)) => {
                    // Nothing may be left open at Graph that nothing tracks: close it.
                    let mut orphan = new.clone().into_tracked(id.clone(), self.ctx.clock.now());
                    report.apply_to(&mut orphan);
                    tracing::warn!(session = %new.name, error = %why, "a created session could not be stored; closing it");
                    self.submit(Job::CloseOrphan { name: new.name, session: Box::new(orphan), why });
                }
                _ => {
                    let why =
                        report.failure.as_ref().map_or_else(|| "no session id came back".into(), |f| f.to_string());
                    self.log_failures(&new.name, &report);
                    self.finished(JobKind::Create, None, &new.name, Err(why));
                }
            },
            Job::Track { new, .. } => match inserted {
                Some(result) => self.inserted(JobKind::Track, &new.name, result),
                None => {
                    let why =
                        report.failure.as_ref().map_or_else(|| "it could not be resolved".into(), |f| f.to_string());
                    self.finished(
                        JobKind::Track,
                        None,
                        &new.name,
                        Err(format!("cannot resolve {}: {why}", new.workbook)),
                    );
                }
            },
            Job::CloseOrphan { name, session, why } => {
                let result = match &report.failure {
                    None => format!("{why}; the session it opened at Graph was closed again"),
                    Some(failure) => format!(
                        "{why}; the session it opened at Graph could not be closed either ({failure}): it stays open until it expires; its id is {}",
                        session.session_id
                    ),
                };
                self.finished(JobKind::Create, None, &name, Err(result));
            }
        }
    }

    /// Writes a report's outcomes and the session's new state, and tells the front ends.
    fn record(&mut self, key: SessionKey, report: &Report) {
        let Some(entry) = self.entries.get_mut(&key) else { return };
        report.apply_to(Arc::make_mut(&mut entry.session));
        let late = entry.late.take();
        let session = entry.session.clone();
        for write in report.records(&session) {
            self.store.write(write);
        }
        self.log_failures(&session.name, report);
        for (i, outcome) in report.outcomes.iter().enumerate() {
            let late = if i == 0 { late } else { None };
            self.emit(Event::Outcome { key, name: session.name.clone(), outcome: outcome.clone(), late });
        }
        self.emit(Event::Changed(session));
    }

    /// What Microsoft support asks for: the ids of each failed request.
    fn log_failures(&self, name: &str, report: &Report) {
        for outcome in report.outcomes.iter().filter(|o| o.kind != OutcomeKind::Ok) {
            tracing::warn!(session = %name, action = outcome.action.as_str(), kind = outcome.kind.as_str(),
                http_status = ?outcome.http_status, codes = ?outcome.codes, request_id = ?outcome.request_id,
                client_request_id = ?outcome.client_request_id, "call failed");
        }
    }

    fn session_call_done(&mut self, key: SessionKey, job: &Job, report: &Report) {
        let Some(entry) = self.entries.get_mut(&key) else {
            if job.asked() {
                self.finished(job.kind(), Some(key), "", Err("the session was removed meanwhile".into()));
            }
            return;
        };
        entry.busy = None;
        // A call that worked outside a batch: batches alone no longer keep it alive
        // (`group_done` marks those that did).
        if report.failure.is_none() {
            entry.batched_since = None;
        }
        let closing = entry.queued & queued::CLOSE != 0;
        self.record(key, report);
        let Some(session) = self.entries.get(&key).map(|e| e.session.clone()) else { return };
        let class = report.failure.as_ref().map(Failure::class);
        if matches!(job, Job::Refresh { .. }) {
            self.failure_rate.record(report.failure.is_some());
        }
        // An expired session that may be recreated is, at once, unless it is being closed; whoever
        // asked for the refresh hears how the recreation went.
        let recreate =
            matches!(job, Job::Refresh { .. }) && class == Some(ErrorClass::Expired) && session.recreate && !closing;
        if job.asked() && !recreate {
            let result = match &report.failure {
                None => Ok(()),
                Some(failure) => Err(failure.to_string()),
            };
            self.finished(job.kind(), Some(key), &session.name, result);
        }
        match (job, class) {
            (Job::Close { .. }, None) => {
                self.schedule.cancel(key);
                self.emit(Event::Scheduled { key, at: None });
            }
            _ if recreate => {
                tracing::info!(session = %session.name, "session expired; creating a new one as allowed");
                self.submit(Job::Recreate { key, attempt: 0, asked: job.asked() });
            }
            _ => {
                let hold = self.dispatcher_hold_for(&session);
                let life_left =
                    self.settings.defaults.expires_at(&session).map(|at| crate::time::until(self.ctx.clock.now(), at));
                let delay = after_call(class, &session, self.interval_of(&session), hold, life_left, self.rng.f64());
                match delay {
                    Some(delay) => self.plan(key, delay),
                    None => {
                        self.schedule.cancel(key);
                        if self.driving {
                            self.emit(Event::Scheduled { key, at: None });
                        }
                    }
                }
            }
        }
        self.run_parked(key);
    }

    /// How long the session's workbook is held back, if it is.
    fn dispatcher_hold_for(&self, session: &TrackedSession) -> Option<Duration> {
        let lane = session.workbook.to_string();
        if !self.dispatcher.is_held(&lane) {
            return None;
        }
        let until = self.dispatcher.holds().until?;
        Some(until.saturating_duration_since(Instant::now()))
    }

    fn inserted(&mut self, kind: JobKind, name: &str, result: Result<TrackedSession, String>) {
        match result {
            Ok(session) => {
                let key = session.key;
                if let std::collections::hash_map::Entry::Vacant(slot) = self.entries.entry(key) {
                    let session = Arc::new(session);
                    slot.insert(Entry::new(session.clone()));
                    self.plan_from_state(key);
                    self.emit(Event::Added(session));
                }
                self.finished(kind, Some(key), name, Ok(()));
            }
            Err(e) => self.finished(kind, None, name, Err(e)),
        }
    }

    // ---- store-only changes ---------------------------------------------------------------------

    fn local(&mut self, key: SessionKey, op: Local) {
        let Some(entry) = self.entries.get_mut(&key) else {
            self.finished(op.kind(), Some(key), "", Err("no such session".into()));
            return;
        };
        if entry.busy.is_some() {
            entry.parked.push_back(op);
            return;
        }
        let name = entry.session.name.clone();
        let write = match &op {
            Local::Edit(change) => Write::Settings { key, change: change.clone() },
            Local::SetAuto(auto) => {
                Write::Settings { key, change: SettingsChange { auto: Some(*auto), ..SettingsChange::default() } }
            }
            Local::Remove => {
                entry.removing = true;
                Write::Remove { key }
            }
        };
        if matches!(op, Local::Remove) {
            self.schedule.cancel(key);
        }
        let store = self.store.clone();
        let task = self.tasks.spawn(async move {
            let result = store.write_acked(vec![write]).await.map_err(|e| e.to_string());
            Done::Local { key, name, op, result }
        });
        self.running.insert(task.id(), (None, Some(key)));
    }

    fn run_parked(&mut self, key: SessionKey) {
        let parked: Vec<Local> = match self.entries.get_mut(&key) {
            Some(entry) => entry.parked.drain(..).collect(),
            None => return,
        };
        for op in parked {
            self.local(key, op);
        }
    }

    fn local_done(&mut self, key: SessionKey, name: &str, op: Local, result: Result<(), String>) {
        let kind = op.kind();
        if let Err(e) = result {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.removing = false;
            }
            if matches!(op, Local::Remove) {
                self.plan_from_state(key);
            }
            self.finished(kind, Some(key), name, Err(e));
            return;
        }
        match op {
            Local::Remove => {
                self.schedule.forget(key);
                if let Some(entry) = self.entries.remove(&key) {
                    self.emit(Event::Removed { key, name: entry.session.name.clone() });
                }
            }
            Local::Edit(change) => self.adopt_settings(key, |s| change.apply_to(s)),
            Local::SetAuto(auto) => self.adopt_settings(key, |s| s.auto = auto),
        }
        self.finished(kind, Some(key), name, Ok(()));
    }

    fn adopt_settings(&mut self, key: SessionKey, change: impl FnOnce(&mut TrackedSession)) {
        let Some(entry) = self.entries.get_mut(&key) else { return };
        change(Arc::make_mut(&mut entry.session));
        let session = entry.session.clone();
        self.plan_from_state(key);
        self.emit(Event::Changed(session));
    }

    fn set_paused(&mut self, paused: bool) {
        if self.paused != paused {
            self.paused = paused;
            self.emit(Event::Paused(paused));
        }
    }

    // ---- commands -----------------------------------------------------------------------------

    fn command(&mut self, command: Command) {
        if self.loading && !matches!(command, Command::SignIn | Command::CancelSignIn) {
            self.waiting.push_back(command);
            return;
        }
        match command {
            Command::Refresh(keys) => {
                for key in keys {
                    self.submit(Job::Refresh { key, due: None, attempt: 0 });
                }
            }
            Command::RefreshAll => {
                let mut keys: Vec<SessionKey> =
                    self.entries.iter().filter(|(_, e)| e.session.status != Status::Closed).map(|(k, _)| *k).collect();
                keys.sort_unstable();
                for key in keys {
                    self.submit(Job::Refresh { key, due: None, attempt: 0 });
                }
            }
            Command::Close(keys) => {
                for key in keys {
                    self.submit(Job::Close { key, attempt: 0 });
                }
            }
            Command::Recreate(keys) => {
                for key in keys {
                    self.submit(Job::Recreate { key, attempt: 0, asked: true });
                }
            }
            Command::Create(new) => {
                if let Err(why) = check_new(&new) {
                    self.finished(JobKind::Create, None, &new.name, Err(why));
                } else {
                    self.submit(Job::Create { new, attempt: 0 });
                }
            }
            Command::Track(new) => match (check_new(&new), new.session_id.clone()) {
                (Err(why), _) => self.finished(JobKind::Track, None, &new.name, Err(why)),
                (Ok(()), None) => self.finished(JobKind::Track, None, &new.name, Err("no session id to track".into())),
                (Ok(()), Some(_)) if new.workbook.is_by_path() => self.submit(Job::Track { new, attempt: 0 }),
                (Ok(()), Some(id)) => {
                    // Nothing to ask Graph: straight to the store.
                    let name = new.name.clone();
                    let session = new.into_tracked(id, self.ctx.clock.now());
                    let store = self.store.clone();
                    let task = self.tasks.spawn(async move {
                        let result = store.insert(session, Vec::new()).await.map_err(|e| e.to_string());
                        Done::Inserted { name, result }
                    });
                    self.running.insert(task.id(), (None, None));
                }
            },
            Command::Edit { key, change } => match change.check() {
                Err(why) => {
                    let name = self.entries.get(&key).map(|e| e.session.name.clone()).unwrap_or_default();
                    self.finished(JobKind::Edit, Some(key), &name, Err(why));
                }
                Ok(()) => self.local(key, Local::Edit(change)),
            },
            Command::SetAuto { keys, auto } => {
                for key in keys {
                    self.local(key, Local::SetAuto(auto));
                }
            }
            Command::Remove(keys) => {
                for key in keys {
                    self.local(key, Local::Remove);
                }
            }
            Command::PauseAll(paused) => {
                let store = self.store.clone();
                let task = self.tasks.spawn(async move {
                    let result = store.write_acked(vec![Write::Paused(paused)]).await.map_err(|e| e.to_string());
                    Done::Paused { paused, result }
                });
                self.running.insert(task.id(), (None, None));
            }
            Command::History(key) => {
                let store = self.store.clone();
                let task = self.tasks.spawn(async move {
                    let result = store.history(key, KEPT_OUTCOMES).await.map_err(|e| e.to_string());
                    Done::History { key, result }
                });
                self.running.insert(task.id(), (None, None));
            }
            Command::SignIn => self.start_sign_in(),
            Command::CancelSignIn => {
                if let Some(task) = self.signin.take() {
                    task.abort();
                }
            }
            // Stopping ends the loop in `run`; it never gets here.
            Command::Shutdown => {}
        }
    }

    // ---- sign-in --------------------------------------------------------------------------------

    fn start_sign_in(&mut self) {
        if let Some(task) = self.signin.take() {
            task.abort();
        }
        let Some(auth) = self.ctx.auth.clone() else {
            self.emit(Event::SignIn(Progress::Done(Err("signing in is not available here".into()))));
            return;
        };
        let Some(authority) = auth.authority.clone() else {
            self.emit(Event::SignIn(Progress::Done(Err(NO_CLIENT_ID.into()))));
            return;
        };
        let progress = self.signin_tx.clone();
        self.signin = Some(tokio::spawn(async move {
            crate::auth::signin::sign_in(authority, &auth.client, &auth.cache, &auth.tokens, |p| {
                let _ = progress.send(p);
            })
            .await;
        }));
    }

    fn signin_progress(&mut self, progress: Progress) {
        let succeeded = matches!(progress, Progress::Done(Ok(_)));
        self.emit(Event::SignIn(progress));
        if succeeded {
            self.report_auth();
            // Sessions that failed for want of a token need not wait for their next retry.
            let waiting: Vec<SessionKey> =
                self.entries.values().filter(|e| e.session.status == Status::Auth).map(|e| e.session.key).collect();
            for key in waiting {
                self.submit(Job::Refresh { key, due: None, attempt: 0 });
            }
        }
    }

    fn report_auth(&mut self) {
        let Some(auth) = &self.ctx.auth else { return };
        let tokens = &auth.tokens;
        let state = if !tokens.is_sign_in() {
            SignInState::Source(tokens.describe())
        } else if let Some(problem) = tokens.problem() {
            SignInState::Unusable(problem)
        } else {
            match tokens.status() {
                Some(status) if status.ended.is_some() => SignInState::Ended,
                Some(status) => SignInState::SignedIn { user: status.user, until: status.expires_at },
                None => SignInState::NotSignedIn,
            }
        };
        if self.auth_state.as_ref() != Some(&state) {
            self.auth_state = Some(state.clone());
            self.emit(Event::Auth(state));
        }
    }

    // ---- the tick -------------------------------------------------------------------------------

    fn tick(&mut self) {
        if let Some(auth) = &self.ctx.auth {
            auth.tokens.reload();
        }
        self.report_auth();
        if !self.driving && self.takeover.try_now() {
            self.driving = true;
            let keys: Vec<SessionKey> = self.entries.keys().copied().collect();
            for key in keys {
                self.plan_from_state(key);
            }
            self.emit(Event::Driving);
        }
        if let Some(gap) = self.gap.check(self.ctx.clock.now(), Instant::now()) {
            let now = self.ctx.clock.now();
            let overdue: Vec<SessionKey> = self
                .entries
                .values()
                .filter(|e| e.busy.is_none() && e.session.is_kept_alive())
                .filter(|e| crate::time::until(e.session.last_activity(), now) >= self.interval_of(&e.session))
                .map(|e| e.session.key)
                .collect();
            tracing::info!(gap = ?gap, sessions = overdue.len(), "the clock jumped (sleep?); refreshing overdue sessions now");
            for key in overdue {
                self.plan(key, Duration::ZERO);
            }
        }
    }

    // ---- other processes ------------------------------------------------------------------------

    fn sync(&mut self, changes: crate::store::Changes) {
        let paused = changes.paused;
        for synced in reconcile(&mut self.entries, changes) {
            match synced {
                Synced::Added(key) => {
                    self.plan_from_state(key);
                    if let Some(entry) = self.entries.get(&key) {
                        self.emit(Event::Added(entry.session.clone()));
                    }
                }
                Synced::Changed(key) => {
                    if self.entries.get(&key).is_some_and(|e| e.busy.is_none()) {
                        self.plan_from_state(key);
                    }
                    if let Some(entry) = self.entries.get(&key) {
                        self.emit(Event::Changed(entry.session.clone()));
                    }
                }
                Synced::Removed(key, name) => {
                    self.schedule.forget(key);
                    self.emit(Event::Removed { key, name });
                }
            }
        }
        self.set_paused(paused);
    }
}

/// How late an automatic refresh starts; one gathered ahead of its time is not late.
fn late_by(job: &Job, now: Instant) -> Option<Duration> {
    match job {
        Job::Refresh { due: Some(due), .. } => Some(now.saturating_duration_since(*due)),
        _ => None,
    }
}

/// The engine's side of the one rule for new sessions: what a `NewSession` guarantees, checked
/// again because a front end may have built one by hand.
fn check_new(new: &NewSession) -> Result<(), String> {
    validate_name(&new.name).map_err(|e| e.to_string())?;
    check_interval(new.interval)
}

/// The dispatcher's last word on a candidate call: is its session still there and still wanting it?
fn accept(entries: &mut HashMap<SessionKey, Entry>, auto_allowed: bool, job: &Job, ended: &mut Vec<Finished>) -> bool {
    let Some(key) = job.key() else { return true };
    let refuse = |ended: &mut Vec<Finished>, name: &str, why: String| {
        if job.asked() {
            ended.push(Finished { kind: job.kind(), key: Some(key), name: name.to_string(), result: Err(why) });
        }
        false
    };
    let Some(entry) = entries.get_mut(&key) else {
        return refuse(ended, "", "the session is no longer tracked".into());
    };
    entry.queued &= !job.bit();
    if entry.removing {
        return refuse(ended, &entry.session.name, "the session is being removed".into());
    }
    let session = &entry.session;
    match job {
        Job::Refresh { due, .. } => {
            if session.status == Status::Closed {
                return refuse(
                    ended,
                    &session.name,
                    format!(
                        "{} is closed; nothing to refresh (`wbsessions recreate {}` starts a new session)",
                        session.name, session.name
                    ),
                );
            }
            due.is_none() || (auto_allowed && session.is_kept_alive())
        }
        // Closing twice asks Graph nothing: the end wished for is there already.
        Job::Close { .. } if session.status == Status::Closed => {
            if job.asked() {
                ended.push(Finished { kind: job.kind(), key: Some(key), name: session.name.clone(), result: Ok(()) });
            }
            false
        }
        // An expired session about to be closed is not recreated first.
        Job::Recreate { asked: false, .. } => entry.queued & queued::CLOSE == 0,
        _ => true,
    }
}
