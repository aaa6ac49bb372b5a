//! The refresh engine: a tokio task that owns the authoritative session list, takes `Command`s,
//! runs calls in tasks within the limits, writes every change to the store, and reports `Event`s.
//! The dashboard and `wbsessions run` are both views onto it.

pub mod ops;
pub mod schedule;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::config::EngineSettings;
use crate::graph::ErrorClass;
use crate::session::{Mode, Outcome, SessionKey, Status, TrackedSession, WorkbookRef};
use crate::store::{SessionSettings, StoreEvent, Write, WriterHandle};
pub use ops::{Context, Failure, Report};
use schedule::{Budget, backoff, next_interval};

/// Outcomes each session keeps in memory (the store keeps more).
pub const MEMORY_OUTCOMES: usize = 16;

/// How long in-flight calls may finish after a shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Wall-clock time running ahead of monotonic time by more than this means the machine slept.
const GAP_THRESHOLD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub enum Command {
    Refresh(Vec<SessionKey>),
    RefreshAll,
    Create {
        name: String,
        workbook: WorkbookRef,
        mode: Mode,
        interval: Option<Duration>,
        recreate: bool,
    },
    /// Track a session that already exists.
    Track(Box<TrackedSession>),
    Edit {
        key: SessionKey,
        settings: SessionSettings,
    },
    SetAuto {
        keys: Vec<SessionKey>,
        auto: bool,
    },
    PauseAll(bool),
    Close(Vec<SessionKey>),
    Remove(Vec<SessionKey>),
    Shutdown,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A call for this session started.
    Started {
        key: SessionKey,
    },
    /// One call finished. `late` is how long after its due time an automatic refresh started.
    Outcome {
        key: SessionKey,
        name: String,
        outcome: Outcome,
        late: Option<Duration>,
    },
    Added(Box<TrackedSession>),
    Changed(Box<TrackedSession>),
    Removed {
        key: SessionKey,
        name: String,
    },
    /// When the next automatic refresh of a session is due (`None`: none is planned).
    Scheduled {
        key: SessionKey,
        at: Option<DateTime<Utc>>,
    },
    /// Graph asked to wait: nothing is sent until then (`None`: the wait is over).
    Throttled {
        until: Option<DateTime<Utc>>,
    },
    Paused(bool),
    /// The driver of the store went away and this engine schedules automatic refreshes now.
    Driving,
    /// Something failed that belongs to no single call (a store write, a bad edit).
    Error(String),
    Stopped,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub settings: EngineSettings,
    /// Schedule automatic refreshes; without it the engine only does what it is told (watch mode).
    pub driver: bool,
    /// In watch mode: the store whose driver lock to take over once its holder is gone.
    pub take_over: Option<std::path::PathBuf>,
}

pub struct EngineHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Refresh,
    Close,
}

#[derive(Debug)]
struct Queued {
    key: SessionKey,
    job: Job,
    /// Set for automatic refreshes: when it was due.
    due: Option<Instant>,
}

struct Entry {
    session: TrackedSession,
    generation: u64,
    in_flight: bool,
    queued: bool,
}

enum TaskDone {
    Job { key: SessionKey, job: Job, workbook: String, report: Report },
    Added(Result<TrackedSession, String>),
    Edited { key: SessionKey, settings: SessionSettings, result: Result<(), String> },
    Removed { key: SessionKey, name: String, result: Result<(), String> },
}

pub fn spawn(
    ctx: Context,
    writer: WriterHandle,
    store_events: mpsc::UnboundedReceiver<StoreEvent>,
    initial: Vec<TrackedSession>,
    config: EngineConfig,
) -> EngineHandle {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut engine = Engine {
        budget: Budget::new(config.settings.request_budget),
        wall_anchor: (ctx.clock.now(), Instant::now()),
        ctx,
        writer,
        config,
        events: events_tx,
        entries: HashMap::new(),
        heap: BinaryHeap::new(),
        ready: VecDeque::new(),
        waiting: HashMap::new(),
        busy: HashSet::new(),
        tasks: JoinSet::new(),
        in_flight: 0,
        hold_until: None,
        throttle_streak: 0,
        paused: false,
        rng: fastrand::Rng::new(),
        late: HashMap::new(),
        taken_over: None,
        calls: HashMap::new(),
    };
    for session in initial {
        engine.add_entry(session);
    }
    let task = tokio::spawn(engine.run(command_rx, store_events));
    EngineHandle { commands, events, task }
}

struct Engine {
    ctx: Context,
    writer: WriterHandle,
    config: EngineConfig,
    events: mpsc::UnboundedSender<Event>,
    entries: HashMap<SessionKey, Entry>,
    heap: BinaryHeap<Reverse<(Instant, u64, SessionKey)>>,
    ready: VecDeque<Queued>,
    waiting: HashMap<String, VecDeque<Queued>>,
    busy: HashSet<String>,
    tasks: JoinSet<TaskDone>,
    in_flight: usize,
    budget: Budget,
    hold_until: Option<Instant>,
    throttle_streak: u32,
    paused: bool,
    wall_anchor: (DateTime<Utc>, Instant),
    rng: fastrand::Rng,
    /// How late each running automatic refresh started.
    late: HashMap<SessionKey, Duration>,
    /// The driver lock this engine took over from a driver that went away.
    taken_over: Option<crate::store::DriverLock>,
    /// The session and workbook of each running call, to free them if its task dies.
    calls: HashMap<tokio::task::Id, (SessionKey, String)>,
}

impl Engine {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut store_events: mpsc::UnboundedReceiver<StoreEvent>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut store_open = true;
        loop {
            self.dispatch();
            let wake = self.next_wake();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.command(command),
                },
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => match done {
                    Ok((id, done)) => {
                        self.calls.remove(&id);
                        self.complete(done);
                    }
                    Err(e) => {
                        // A panicking call must not take the engine down: free what it held.
                        tracing::error!(error = %e, "a call task failed");
                        self.emit(Event::Error(format!("internal error in a call: {e}")));
                        if let Some((key, workbook)) = self.calls.remove(&e.id()) {
                            self.call_lost(key, &workbook);
                        }
                    }
                },
                event = store_events.recv(), if store_open => match event {
                    Some(StoreEvent::External(list)) => self.reconcile(list),
                    Some(StoreEvent::Failed(e)) => self.emit(Event::Error(format!("store: {e}"))),
                    None => store_open = false,
                },
                _ = sleep_until(wake) => {}
                _ = tick.tick() => {
                    self.check_for_gap();
                    self.try_take_over();
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok(done))) => self.complete(done),
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(tasks = self.tasks.len(), "calls still running at shutdown were cancelled");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        self.writer.flush().await;
        self.emit(Event::Stopped);
    }

    fn interval_of(&self, session: &TrackedSession) -> Duration {
        self.config.settings.interval_of(session)
    }

    fn schedule_in(&mut self, key: SessionKey, delay: Duration) {
        let driver = self.config.driver;
        let Some(entry) = self.entries.get_mut(&key) else { return };
        entry.generation += 1;
        if !driver {
            return;
        }
        let at = entry.session.is_kept_alive().then(|| {
            self.heap.push(Reverse((Instant::now() + delay, entry.generation, key)));
            self.ctx.clock.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero())
        });
        self.emit(Event::Scheduled { key, at });
    }

    /// No automatic refresh for this session until something changes.
    fn unschedule(&mut self, key: SessionKey) {
        let Some(entry) = self.entries.get_mut(&key) else { return };
        entry.generation += 1;
        if self.config.driver {
            self.emit(Event::Scheduled { key, at: None });
        }
    }

    /// The first schedule of a session: one interval after its last activity, at once if that
    /// has passed or the session was never refreshed by this tool.
    fn initial_delay(&mut self, session: &TrackedSession) -> Duration {
        if session.status == Status::New {
            return Duration::ZERO;
        }
        let interval = next_interval(self.interval_of(session), self.rng.f64());
        let due = session.last_activity() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        (due - self.ctx.clock.now()).to_std().unwrap_or(Duration::ZERO)
    }

    fn add_entry(&mut self, mut session: TrackedSession) {
        session.outcomes.truncate(MEMORY_OUTCOMES);
        let key = session.key;
        let delay = self.initial_delay(&session);
        self.entries.insert(key, Entry { session, generation: 0, in_flight: false, queued: false });
        self.schedule_in(key, delay);
    }

    fn enqueue(&mut self, key: SessionKey, job: Job) {
        let Some(entry) = self.entries.get_mut(&key) else { return };
        if entry.in_flight || entry.queued {
            return;
        }
        entry.queued = true;
        self.ready.push_back(Queued { key, job, due: None });
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Refresh(keys) => keys.into_iter().for_each(|k| self.enqueue(k, Job::Refresh)),
            Command::RefreshAll => {
                let mut keys: Vec<SessionKey> =
                    self.entries.iter().filter(|(_, e)| e.session.status != Status::Closed).map(|(k, _)| *k).collect();
                keys.sort_unstable();
                keys.into_iter().for_each(|k| self.enqueue(k, Job::Refresh));
            }
            Command::Close(keys) => keys.into_iter().for_each(|k| self.enqueue(k, Job::Close)),
            Command::Remove(keys) => {
                for key in keys {
                    let Some(entry) = self.entries.get(&key) else { continue };
                    let name = entry.session.name.clone();
                    let writer = self.writer.clone();
                    self.tasks.spawn(async move {
                        let result = writer.write_acked(vec![Write::Remove { key }]).await.map_err(|e| e.to_string());
                        TaskDone::Removed { key, name, result }
                    });
                }
            }
            Command::Create { name, workbook, mode, interval, recreate } => {
                let ctx = self.ctx.clone();
                let writer = self.writer.clone();
                self.tasks.spawn(async move {
                    let report = ops::create(&ctx, &workbook, mode).await;
                    let Some(id) = report.new_session_id.clone() else {
                        let why = report.failure.map_or_else(|| "no session id".to_string(), |f| f.to_string());
                        return TaskDone::Added(Err(format!("creating {name} failed: {why}")));
                    };
                    let mut session = TrackedSession::new(name, workbook, id, mode, ctx.clock.now());
                    session.interval = interval;
                    session.recreate = recreate;
                    report.apply_to(&mut session, MEMORY_OUTCOMES);
                    TaskDone::Added(writer.insert(session).await.map_err(|e| e.to_string()))
                });
            }
            Command::Track(session) => {
                let writer = self.writer.clone();
                let ctx = self.ctx.clone();
                self.tasks.spawn(async move {
                    let mut session = *session;
                    match ops::resolve(&ctx, &session.workbook).await {
                        Ok(workbook) => session.workbook = workbook,
                        Err(e) => return TaskDone::Added(Err(format!("cannot resolve {}: {e}", session.workbook))),
                    }
                    TaskDone::Added(writer.insert(session).await.map_err(|e| e.to_string()))
                });
            }
            Command::Edit { key, settings } => {
                let writer = self.writer.clone();
                self.tasks.spawn(async move {
                    let result = writer
                        .write_acked(vec![Write::Settings { key, settings: settings.clone() }])
                        .await
                        .map_err(|e| e.to_string());
                    TaskDone::Edited { key, settings, result }
                });
            }
            Command::SetAuto { keys, auto } => {
                for key in keys {
                    let Some(entry) = self.entries.get_mut(&key) else { continue };
                    entry.session.auto = auto;
                    let settings = SessionSettings::of(&entry.session);
                    let session = entry.session.clone();
                    self.writer.write(Write::Settings { key, settings });
                    let delay = self.initial_delay(&session);
                    self.schedule_in(key, delay);
                    self.emit(Event::Changed(Box::new(session)));
                }
            }
            Command::PauseAll(paused) => {
                self.paused = paused;
                self.emit(Event::Paused(paused));
            }
            // Stopping ends the loop in `run`; it never gets here.
            Command::Shutdown => {}
        }
    }

    /// Moves due refreshes to the ready queue and starts what the limits allow.
    fn dispatch(&mut self) {
        let now = Instant::now();
        if let Some(hold) = self.hold_until {
            if hold > now {
                return;
            }
            self.hold_until = None;
            self.emit(Event::Throttled { until: None });
        }
        if self.config.driver && !self.paused {
            while let Some(Reverse((due, generation, key))) = self.heap.peek().copied() {
                if due > now {
                    break;
                }
                self.heap.pop();
                let Some(entry) = self.entries.get_mut(&key) else { continue };
                if entry.generation != generation || entry.in_flight || entry.queued {
                    continue;
                }
                entry.queued = true;
                self.ready.push_back(Queued { key, job: Job::Refresh, due: Some(due) });
            }
        }
        while self.in_flight < self.config.settings.concurrency {
            let Some(queued) = self.ready.pop_front() else { break };
            let Some(entry) = self.entries.get(&queued.key) else { continue };
            if queued.job == Job::Refresh && entry.session.status == Status::Closed {
                if let Some(e) = self.entries.get_mut(&queued.key) {
                    e.queued = false;
                }
                continue;
            }
            let workbook = entry.session.workbook.to_string();
            if self.busy.contains(&workbook) {
                self.waiting.entry(workbook).or_default().push_back(queued);
                continue;
            }
            if !self.budget.try_take(now) {
                self.ready.push_front(queued);
                break;
            }
            self.start(queued, workbook, now);
        }
    }

    fn start(&mut self, queued: Queued, workbook: String, now: Instant) {
        let Some(entry) = self.entries.get_mut(&queued.key) else { return };
        entry.queued = false;
        entry.in_flight = true;
        self.in_flight += 1;
        self.busy.insert(workbook.clone());
        let session = entry.session.clone();
        let key = queued.key;
        let late = queued.due.map(|due| now.saturating_duration_since(due));
        if let Some(late) = late {
            self.late.insert(key, late);
        }
        self.emit(Event::Started { key });
        let ctx = self.ctx.clone();
        let job = queued.job;
        let held = workbook.clone();
        let task = self.tasks.spawn(async move {
            let report = match job {
                Job::Refresh => ops::refresh(&ctx, &session).await,
                Job::Close => ops::close(&ctx, &session).await,
            };
            TaskDone::Job { key, job, workbook, report }
        });
        self.calls.insert(task.id(), (key, held));
    }

    fn next_wake(&mut self) -> Option<Instant> {
        let now = Instant::now();
        if let Some(hold) = self.hold_until {
            return Some(hold);
        }
        let mut wake: Option<Instant> = None;
        if !self.ready.is_empty() && self.in_flight < self.config.settings.concurrency {
            wake = self.budget.next_free(now);
        }
        if self.config.driver && !self.paused {
            // Drop stale heap entries so the wake-up is real.
            while let Some(Reverse((_, generation, key))) = self.heap.peek().copied() {
                if self.entries.get(&key).is_some_and(|e| e.generation == generation) {
                    break;
                }
                self.heap.pop();
            }
            if let Some(Reverse((due, _, _))) = self.heap.peek() {
                wake = Some(wake.map_or(*due, |w| w.min(*due)));
            }
        }
        wake
    }

    fn complete(&mut self, done: TaskDone) {
        match done {
            TaskDone::Job { key, job, workbook, report } => self.job_done(key, job, workbook, report),
            TaskDone::Added(Ok(session)) => {
                if !self.entries.contains_key(&session.key) {
                    self.add_entry(session.clone());
                    self.emit(Event::Added(Box::new(session)));
                }
            }
            TaskDone::Added(Err(e)) => self.emit(Event::Error(e)),
            TaskDone::Edited { key, settings, result } => match result {
                Ok(()) => {
                    let Some(entry) = self.entries.get_mut(&key) else { return };
                    entry.session.name = settings.name;
                    entry.session.interval = settings.interval;
                    entry.session.recreate = settings.recreate;
                    entry.session.auto = settings.auto;
                    let session = entry.session.clone();
                    let delay = self.initial_delay(&session);
                    self.schedule_in(key, delay);
                    self.emit(Event::Changed(Box::new(session)));
                }
                Err(e) => self.emit(Event::Error(e)),
            },
            TaskDone::Removed { key, name, result } => match result {
                Ok(()) => {
                    self.entries.remove(&key);
                    self.emit(Event::Removed { key, name });
                }
                Err(e) => self.emit(Event::Error(e)),
            },
        }
    }

    fn job_done(&mut self, key: SessionKey, job: Job, workbook: String, report: Report) {
        self.release(&workbook);
        let late = self.late.remove(&key);
        let Some(entry) = self.entries.get_mut(&key) else { return };
        entry.in_flight = false;
        report.apply_to(&mut entry.session, MEMORY_OUTCOMES);
        let session = entry.session.clone();
        for write in report.records(&session) {
            self.writer.write(write);
        }
        for (i, outcome) in report.outcomes.iter().enumerate() {
            if outcome.kind != crate::session::OutcomeKind::Ok {
                // What Microsoft support asks for: the ids of the failed request.
                tracing::warn!(session = %session.name, action = outcome.action.as_str(), kind = outcome.kind.as_str(),
                    http_status = ?outcome.http_status, codes = ?outcome.codes, request_id = ?outcome.request_id,
                    client_request_id = ?outcome.client_request_id, "call failed");
            }
            let late = if i == 0 { late } else { None };
            self.emit(Event::Outcome { key, name: session.name.clone(), outcome: outcome.clone(), late });
        }
        let interval = self.interval_of(&session);
        let now = Instant::now();
        let delay = match (&job, report.failure.as_ref().map(Failure::class)) {
            (Job::Close, _) => None,
            (_, None) => {
                self.throttle_streak = 0;
                Some(next_interval(interval, self.rng.f64()))
            }
            (_, Some(ErrorClass::Throttled)) => {
                self.throttle_streak += 1;
                let wait = report
                    .failure
                    .as_ref()
                    .and_then(Failure::retry_after)
                    .unwrap_or_else(|| backoff(self.throttle_streak, Duration::from_secs(60), self.rng.f64()));
                let until = now + wait;
                if self.hold_until.is_none_or(|h| h < until) {
                    self.hold_until = Some(until);
                    let wall =
                        self.ctx.clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
                    self.emit(Event::Throttled { until: Some(wall) });
                }
                Some(wait)
            }
            (_, Some(ErrorClass::Transient | ErrorClass::Failed)) => {
                Some(backoff(session.failures, interval.min(Duration::from_secs(300)), self.rng.f64()))
            }
            (_, Some(ErrorClass::Expired)) if session.recreate => {
                Some(backoff(session.failures, interval.min(Duration::from_secs(300)), self.rng.f64()))
            }
            // A sign-in in another shell fixes this without telling us: look again now and then.
            (_, Some(ErrorClass::Auth)) => {
                Some(backoff(session.failures + 4, Duration::from_secs(300), self.rng.f64()))
            }
            (_, Some(ErrorClass::Expired | ErrorClass::Dead)) => None,
        };
        match delay {
            Some(delay) => self.schedule_in(key, delay),
            None => self.unschedule(key),
        }
        self.emit(Event::Changed(Box::new(session)));
    }

    /// Lets the next call on this workbook start.
    fn release(&mut self, workbook: &str) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.busy.remove(workbook);
        if let Some(mut waiting) = self.waiting.remove(workbook) {
            while let Some(q) = waiting.pop_back() {
                self.ready.push_front(q);
            }
        }
    }

    /// A call's task died without reporting: free its workbook and try the session again later.
    fn call_lost(&mut self, key: SessionKey, workbook: &str) {
        self.release(workbook);
        self.late.remove(&key);
        let Some(entry) = self.entries.get_mut(&key) else { return };
        entry.in_flight = false;
        let delay = backoff(entry.session.failures + 1, Duration::from_secs(300), self.rng.f64());
        self.schedule_in(key, delay);
    }

    /// Another process changed the store: adopt what it changed.
    fn reconcile(&mut self, list: Vec<TrackedSession>) {
        let mut seen = HashSet::with_capacity(list.len());
        for stored in list {
            seen.insert(stored.key);
            let Some(entry) = self.entries.get_mut(&stored.key) else {
                self.add_entry(stored.clone());
                self.emit(Event::Added(Box::new(stored)));
                continue;
            };
            let mine = &mut entry.session;
            let mut changed = false;
            if (&mine.name, &mine.workbook, mine.mode, mine.interval, mine.recreate, mine.auto)
                != (&stored.name, &stored.workbook, stored.mode, stored.interval, stored.recreate, stored.auto)
            {
                mine.name = stored.name.clone();
                mine.mode = stored.mode;
                mine.interval = stored.interval;
                mine.recreate = stored.recreate;
                mine.auto = stored.auto;
                if !entry.in_flight {
                    mine.workbook = stored.workbook.clone();
                }
                changed = true;
            }
            let newer = |o: &[Outcome]| o.first().map(|o| o.at);
            if !entry.in_flight && newer(&stored.outcomes) > newer(&mine.outcomes) {
                mine.status = stored.status;
                mine.last_refresh = stored.last_refresh;
                mine.failures = stored.failures;
                mine.session_id = stored.session_id.clone();
                mine.workbook = stored.workbook.clone();
                mine.outcomes = stored.outcomes.clone();
                mine.outcomes.truncate(MEMORY_OUTCOMES);
                changed = true;
            }
            if changed {
                let session = mine.clone();
                let delay = self.initial_delay(&session);
                self.schedule_in(session.key, delay);
                self.emit(Event::Changed(Box::new(session)));
            }
        }
        let gone: Vec<SessionKey> = self.entries.keys().filter(|k| !seen.contains(k)).copied().collect();
        for key in gone {
            if let Some(entry) = self.entries.remove(&key) {
                self.emit(Event::Removed { key, name: entry.session.name });
            }
        }
    }

    /// In watch mode, become the driver once the old one has let go of the lock.
    fn try_take_over(&mut self) {
        if self.config.driver {
            return;
        }
        let Some(store) = self.config.take_over.clone() else { return };
        let Ok(lock) = crate::store::DriverLock::acquire_now(&store) else { return };
        tracing::info!("the driver went away; this process schedules automatic refreshes now");
        self.taken_over = Some(lock);
        self.config.driver = true;
        let keys: Vec<SessionKey> = self.entries.keys().copied().collect();
        for key in keys {
            if let Some(session) = self.entries.get(&key).map(|e| e.session.clone()) {
                let delay = self.initial_delay(&session);
                self.schedule_in(key, delay);
            }
        }
        self.emit(Event::Driving);
    }

    /// After a sleep or a stall, refresh at once every session whose interval has passed in wall time.
    fn check_for_gap(&mut self) {
        let (wall0, mono0) = self.wall_anchor;
        let (wall, mono) = (self.ctx.clock.now(), Instant::now());
        self.wall_anchor = (wall, mono);
        let wall_elapsed = (wall - wall0).to_std().unwrap_or(Duration::ZERO);
        if wall_elapsed <= mono.saturating_duration_since(mono0) + GAP_THRESHOLD {
            return;
        }
        let overdue: Vec<SessionKey> = self
            .entries
            .values()
            .filter(|e| !e.in_flight && e.session.is_kept_alive())
            .filter(|e| {
                (wall - e.session.last_activity()).to_std().unwrap_or(Duration::ZERO) >= self.interval_of(&e.session)
            })
            .map(|e| e.session.key)
            .collect();
        tracing::info!(gap = ?wall_elapsed, sessions = overdue.len(), "the clock jumped (sleep?); refreshing overdue sessions now");
        for key in overdue {
            self.schedule_in(key, Duration::ZERO);
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
