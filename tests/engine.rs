//! The refresh engine against a fake Graph and an in-memory store, under tokio's paused time:
//! every assertion about timing reads the start times of calls on tokio's clock, so nothing here
//! waits for real and nothing passes by luck of a fast machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fake::{Answer, BatchMode, FakeGraph, MemoryStore};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use wbsessions::engine::{
    self, Context, EngineConfig, EngineError, EngineSettings, Event, Handle, JobKind, Reply, Request, Role, Spawned,
};
use wbsessions::session::{
    Defaults, Draft, Mode, NewSession, SessionId, SessionKey, SettingsChange, Status, TrackedSession, WorkbookRef,
};
use wbsessions::store::{BUDGET_WINDOW, Changes, GRANT_COUNTED, StoreEvent};
use wbsessions::time::Clock;

/// One answer as the tests look at it: what was asked, about which session, and how it went.
#[derive(Debug, Clone)]
struct Finished {
    kind: JobKind,
    key: Option<SessionKey>,
    name: String,
    result: Result<(), String>,
    error: Option<EngineError>,
}

/// What the tests ask, several sessions at a time.
enum Command {
    Refresh(Vec<SessionKey>),
    /// Every session the rig started with, as the dashboard's `R` asks for them: one by one.
    RefreshAll,
    Close(Vec<SessionKey>),
    Recreate(Vec<SessionKey>),
    Remove(Vec<SessionKey>),
    SetAuto {
        keys: Vec<SessionKey>,
        auto: bool,
    },
    Edit {
        key: SessionKey,
        change: SettingsChange,
    },
    Create(NewSession),
    Track(NewSession),
    PauseAll(bool),
}

impl Command {
    fn requests(self) -> Vec<Request> {
        match self {
            Command::Refresh(keys) => keys.into_iter().map(Request::Refresh).collect(),
            Command::RefreshAll => unreachable!("the rig turns it into one refresh per session"),
            Command::Close(keys) => keys.into_iter().map(Request::Close).collect(),
            Command::Recreate(keys) => keys.into_iter().map(Request::Recreate).collect(),
            Command::Remove(keys) => keys.into_iter().map(Request::Remove).collect(),
            Command::SetAuto { keys, auto } => keys.into_iter().map(|key| Request::SetAuto { key, auto }).collect(),
            Command::Edit { key, change } => vec![Request::Edit { key, change }],
            Command::Create(new) => vec![Request::Create(new)],
            Command::Track(new) => vec![Request::Track(new)],
            Command::PauseAll(paused) => vec![Request::PauseAll(paused)],
        }
    }
}

struct Rig {
    handle: Handle,
    events: mpsc::UnboundedReceiver<Event>,
    pending: FuturesUnordered<BoxFuture<'static, Vec<Finished>>>,
    names: HashMap<SessionKey, String>,
    graph: std::sync::Arc<FakeGraph>,
    store: std::sync::Arc<MemoryStore>,
    keys: Vec<SessionKey>,
    clock: Clock,
    external: mpsc::UnboundedSender<StoreEvent>,
    t0: Instant,
}

fn settings() -> EngineSettings {
    // Plain calls: batching has tests of its own.
    EngineSettings { request_timeout: Duration::from_secs(5), batch: false, ..EngineSettings::default() }
}

fn tracked(key: SessionKey, name: &str, workbook: &str, interval: Duration, clock: &Clock) -> TrackedSession {
    let workbook = WorkbookRef::parse(&format!("me/drive/items/{workbook}")).unwrap();
    let id = SessionId::new(&format!("live-{name}")).unwrap();
    let mut s = TrackedSession::new(name.into(), workbook, id, Mode::Persistent, clock.now());
    s.key = key;
    s.status = Status::Ok;
    s.last_refresh = Some(clock.now());
    s.interval = Some(interval);
    s
}

/// Sessions `(name, workbook, interval)`, alive at the fake, refreshed just now.
fn rig_with(specs: &[(&str, &str, Duration)], settings: EngineSettings, role: Role, clock: Clock) -> Rig {
    let sessions: Vec<TrackedSession> = specs
        .iter()
        .enumerate()
        .map(|(i, (name, workbook, interval))| tracked(i as i64 + 1, name, workbook, *interval, &clock))
        .collect();
    rig_from(sessions, settings, role, clock)
}

fn rig_from(sessions: Vec<TrackedSession>, settings: EngineSettings, role: Role, clock: Clock) -> Rig {
    let graph = FakeGraph::new();
    for s in &sessions {
        graph.open(s.session_id.as_str());
    }
    let store = MemoryStore::new(&sessions);
    let (external, store_events) = mpsc::unbounded_channel();
    let ctx = Context { graph: graph.clone(), clock: clock.clone(), auth: None };
    let Spawned { handle, events, .. } = engine::spawn(
        ctx,
        store.clone(),
        Some(store_events),
        Some(sessions.clone()),
        EngineConfig { settings, role, paused: false, batching: None, seed: Some(1) },
    );
    Rig {
        handle,
        events,
        pending: FuturesUnordered::new(),
        names: sessions.iter().map(|s| (s.key, s.name.clone())).collect(),
        graph,
        store,
        keys: sessions.iter().map(|s| s.key).collect(),
        clock,
        external,
        t0: Instant::now(),
    }
}

fn rig(specs: &[(&str, &str, Duration)], settings: EngineSettings) -> Rig {
    rig_with(specs, settings, Role::Driver, Clock::following_tokio(chrono::Utc::now()))
}

const HOUR: Duration = Duration::from_secs(3600);

impl Rig {
    /// Asks; the answers are read by `finished`.
    fn send(&mut self, command: Command) {
        let command = match command {
            Command::RefreshAll => {
                let mut keys: Vec<SessionKey> = self.names.keys().copied().collect();
                keys.sort_unstable();
                Command::Refresh(keys)
            }
            other => other,
        };
        for request in command.requests() {
            let (kind, key) = (request.kind(), request.key());
            let name = match &request {
                Request::Create(new) | Request::Track(new) => new.name.clone(),
                _ => key.and_then(|k| self.names.get(&k).cloned()).unwrap_or_default(),
            };
            let answer = self.handle.send(request);
            self.pending.push(
                async move {
                    let finished = |key, name, error: Option<EngineError>| Finished {
                        kind,
                        key,
                        name,
                        result: error.as_ref().map_or(Ok(()), |e| Err(e.to_string())),
                        error,
                    };
                    match answer.await {
                        Ok(Reply::Session(s)) => vec![finished(Some(s.key), s.name.clone(), None)],
                        Ok(_) => vec![finished(key, name, None)],
                        Err(e) => vec![finished(key, name, Some(e))],
                    }
                }
                .boxed(),
            );
        }
    }

    /// Events until `done` holds, or a panic after `deadline` of (virtual) time.
    async fn until(&mut self, deadline: Duration, mut done: impl FnMut(&[Event]) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        let end = Instant::now() + deadline;
        while !done(&seen) {
            match tokio::time::timeout_at(end, self.events.recv()).await {
                Ok(Some(event)) => seen.push(event),
                Ok(None) => panic!("the engine stopped early"),
                Err(_) => panic!("timed out; saw {} events: {seen:#?}", seen.len()),
            }
        }
        seen
    }

    /// The next `n` answers, in the order they came.
    async fn finished(&mut self, n: usize) -> Vec<Finished> {
        let mut done = Vec::new();
        let end = Instant::now() + Duration::from_secs(600);
        while done.len() < n {
            match tokio::time::timeout_at(end, self.pending.next()).await {
                Ok(Some(answers)) => done.extend(answers),
                Ok(None) => panic!("{} answers of {n} came, and nothing more was asked", done.len()),
                Err(_) => panic!("timed out with {} answers of {n}: {done:#?}", done.len()),
            }
        }
        done
    }

    /// How long after the rig started each call of `kind` on `workbook` started.
    fn starts(&self, kind: &str, workbook: &str) -> Vec<Duration> {
        self.graph
            .calls_of(kind)
            .iter()
            .filter(|c| c.workbook.ends_with(workbook))
            .map(|c| c.at.duration_since(self.t0))
            .collect()
    }
}

fn new_session(name: &str, workbook: &str, session_id: Option<&str>) -> NewSession {
    let draft = Draft {
        name: name.into(),
        workbook: workbook.into(),
        session_id: session_id.map(str::to_string),
        ..Draft::default()
    };
    NewSession::check(&draft, &Defaults::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_call_per_workbook_and_a_global_concurrency_limit() {
    let names: Vec<(String, String)> = (0..12).map(|i| (format!("s{i}"), format!("W{}", i % 6))).collect();
    let specs: Vec<(&str, &str, Duration)> = names.iter().map(|(n, w)| (n.as_str(), w.as_str(), HOUR)).collect();
    let mut rig = rig(&specs, EngineSettings { concurrency: 3, ..settings() });
    rig.graph.set_latency(Duration::from_millis(30));
    rig.send(Command::RefreshAll);
    let done = rig.finished(12).await;
    assert!(done.iter().all(|f| f.result.is_ok()));
    assert_eq!(rig.graph.peaks(), (1, 3), "never two on one workbook; the limit is used and never passed");
}

#[tokio::test(start_paused = true)]
async fn the_request_budget_holds_back_calls_for_its_window() {
    let specs = [("a", "W0", HOUR), ("b", "W1", HOUR), ("c", "W2", HOUR), ("d", "W3", HOUR)];
    let mut rig = rig(&specs, EngineSettings { request_budget: 3, ..settings() });
    rig.send(Command::RefreshAll);
    rig.finished(4).await;
    let mut starts: Vec<Duration> = rig.graph.calls().iter().map(|c| c.at.duration_since(rig.t0)).collect();
    starts.sort();
    assert_eq!(&starts[..3], &[Duration::ZERO; 3]);
    // The store counts a grant for the window and a grant's life, so that starts granted late
    // in their life never put any ten seconds over the budget.
    assert_eq!(starts[3], GRANT_COUNTED, "the fourth waits for the window");
}

/// Two processes on one store (a keeper and a one-shot `refresh --all`, say) spend from one
/// budget: together they never start more than it allows in a window.
#[tokio::test(start_paused = true)]
async fn engines_on_one_store_share_one_request_budget() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let sessions: Vec<TrackedSession> =
        (0..40).map(|i| tracked(i + 1, &format!("s{i}"), &format!("W{i}"), HOUR, &clock)).collect();
    let graph = FakeGraph::new();
    for s in &sessions {
        graph.open(s.session_id.as_str());
    }
    let store = MemoryStore::new(&sessions);
    let budget = EngineSettings { request_budget: 10, ..settings() };
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let ctx = Context { graph: graph.clone(), clock: clock.clone(), auth: None };
            let config = EngineConfig {
                settings: budget.clone(),
                role: Role::OneShot,
                paused: false,
                batching: None,
                seed: Some(1),
            };
            engine::spawn(ctx, store.clone(), None, Some(sessions.clone()), config).handle
        })
        .collect();
    let asked: Vec<_> = handles
        .iter()
        .flat_map(|handle| sessions.iter().map(|s| handle.send(Request::Refresh(s.key))).collect::<Vec<_>>())
        .collect();
    futures_util::future::join_all(asked).await;
    let mut starts: Vec<Instant> = graph.calls_of("refresh").iter().map(|c| c.at).collect();
    starts.sort();
    assert!(starts.len() >= 40, "{} refreshes", starts.len());
    for (i, first) in starts.iter().enumerate() {
        let within = starts[i..].iter().take_while(|t| t.duration_since(*first) < BUDGET_WINDOW).count();
        assert!(within <= 10, "{within} starts in the ten seconds from the {i}th: the budget is 10");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_holds_back_its_workbook_only_and_is_capped_at_three_minutes() {
    let specs = [("a", "W0", HOUR), ("b", "W1", HOUR), ("c", "W2", HOUR)];
    let mut rig = rig(&specs, settings());
    rig.graph.script("me/drive/items/W0", &[Answer::Throttled(Some(Duration::from_millis(2500)))]);
    rig.graph.script("me/drive/items/W2", &[Answer::Throttled(Some(Duration::from_secs(1_000_000_000)))]);
    rig.send(Command::Refresh(rig.keys.clone()));
    let done = rig.finished(3).await;
    let held = done.iter().find(|f| f.name == "c").unwrap();
    assert!(
        held.result.as_ref().is_err_and(|e| e.contains("retry after")),
        "whoever asked is told of a long wait instead of sitting through it: {held:?}"
    );
    assert!(done.iter().filter(|f| f.name != "c").all(|f| f.result.is_ok()), "{done:?}");
    assert_eq!(rig.starts("refresh", "W1"), [Duration::ZERO], "another workbook is not held");
    assert_eq!(rig.starts("refresh", "W0"), [Duration::ZERO, Duration::from_millis(2500)], "exactly the Retry-After");
    // The hold stays on the workbook (capped at 180 s): the next asked-for call is told so at
    // once and sends nothing.
    let c = rig.keys[2];
    rig.send(Command::Refresh(vec![c]));
    let refused = rig.finished(1).await;
    assert!(
        refused[0].result.as_ref().is_err_and(|e| e.contains("alone for 2m57s more; not waited for")),
        "{refused:?}"
    );
    assert_eq!(rig.starts("refresh", "W2"), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn a_zero_or_missing_retry_after_backs_off_from_a_second() {
    let mut rig = rig(&[("a", "W0", HOUR)], settings());
    rig.graph.script("me/drive/items/W0", &[Answer::Throttled(Some(Duration::ZERO)), Answer::Throttled(None)]);
    rig.send(Command::Refresh(rig.keys.clone()));
    assert!(rig.finished(1).await[0].result.is_ok());
    let starts = rig.starts("refresh", "W0");
    assert_eq!(starts.len(), 3);
    let (first, second) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(first >= Duration::from_secs(1) && first < Duration::from_secs(2), "{first:?}");
    assert!(second >= Duration::from_secs(2) && second < Duration::from_secs(4), "{second:?}");
}

#[tokio::test(start_paused = true)]
async fn asked_for_calls_retry_429_503_504_three_times_then_report() {
    let mut rig = rig(&[("a", "W0", HOUR)], settings());
    rig.graph.script("me/drive/items/W0", &[Answer::Status(504), Answer::Status(504)]);
    rig.send(Command::Refresh(rig.keys.clone()));
    assert!(rig.finished(1).await[0].result.is_ok(), "two 504s, then a success");
    rig.graph.always("me/drive/items/W0", Answer::Status(504));
    rig.send(Command::Refresh(rig.keys.clone()));
    let failed = rig.finished(1).await;
    assert!(failed[0].result.as_ref().is_err_and(|e| e.contains("504")), "{failed:?}");
    assert_eq!(rig.starts("refresh", "W0").len(), 3 + 4, "one try and three retries the second time");
    // A plain 500 is not retried by the caller's request; the keeper's backoff takes it.
    rig.graph.always("me/drive/items/W0", Answer::Status(500));
    rig.send(Command::Refresh(rig.keys.clone()));
    assert!(rig.finished(1).await[0].result.is_err());
    assert_eq!(rig.starts("refresh", "W0").len(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_close_asked_for_during_a_refresh_runs_right_after_it() {
    let mut rig = rig(&[("a", "W0", HOUR)], settings());
    rig.graph.set_latency(Duration::from_secs(3));
    let key = rig.keys[0];
    rig.send(Command::Refresh(vec![key]));
    rig.until(Duration::from_secs(1), |e| e.iter().any(|e| matches!(e, Event::Started { .. }))).await;
    rig.send(Command::Close(vec![key]));
    let done = rig.finished(2).await;
    assert_eq!(
        done.iter().map(|f| (f.kind, f.result.is_ok())).collect::<Vec<_>>(),
        [(JobKind::Refresh, true), (JobKind::Close, true)]
    );
    assert_eq!(rig.starts("close", "W0"), [Duration::from_secs(3)], "the close starts when the refresh ends");
    assert_eq!(rig.store.session(key).unwrap().status, Status::Closed);
    assert!(!rig.graph.is_live("live-a"), "the fake saw the session closed");
    // A closed session is not refreshed: asked to, the engine says why.
    rig.send(Command::Refresh(vec![key]));
    let refused = rig.finished(1).await;
    assert!(refused[0].result.as_ref().is_err_and(|e| e.contains("closed")), "{refused:?}");
    assert_eq!(rig.graph.calls_of("refresh").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_edit_or_removal_during_a_call_waits_for_it_and_is_not_lost() {
    let mut rig = rig(&[("a", "W0", HOUR), ("b", "W1", HOUR)], settings());
    rig.graph.set_latency(Duration::from_secs(2));
    let (a, b) = (rig.keys[0], rig.keys[1]);
    rig.send(Command::Refresh(vec![a, b]));
    rig.until(Duration::from_secs(1), |e| e.iter().filter(|e| matches!(e, Event::Started { .. })).count() == 2).await;
    let renamed = SettingsChange { name: Some("a2".into()), ..SettingsChange::default() };
    rig.send(Command::Edit { key: a, change: renamed });
    rig.send(Command::Remove(vec![b]));
    let done = rig.finished(4).await;
    assert!(done.iter().all(|f| f.result.is_ok()), "{done:#?}");
    let position = |k: JobKind, key| done.iter().position(|f| f.kind == k && f.key == Some(key)).unwrap();
    assert!(position(JobKind::Edit, a) > position(JobKind::Refresh, a), "the edit came after the call");
    assert!(position(JobKind::Remove, b) > position(JobKind::Refresh, b));
    assert_eq!(rig.store.session(a).unwrap().name, "a2");
    assert!(rig.store.session(b).is_none());
    let events = rig.until(Duration::from_secs(1), |e| e.iter().any(|e| matches!(e, Event::Removed { .. }))).await;
    assert!(events.iter().any(|e| matches!(e, Event::Removed { key, .. } if *key == b)));
}

#[tokio::test(start_paused = true)]
async fn create_and_track_go_through_the_dispatcher_and_the_store() {
    let mut rig = rig(&[], settings());
    rig.send(Command::Create(new_session("made", "me/drive/items/NEW", None)));
    let done = rig.finished(1).await;
    assert_eq!((done[0].kind, &done[0].result), (JobKind::Create, &Ok(())));
    let key = done[0].key.unwrap();
    let made = rig.store.session(key).unwrap();
    assert_eq!((made.status, made.session_id.as_str()), (Status::Ok, "fake-1"));
    assert_eq!(rig.graph.calls_of("create").len(), 1);

    // A by-path workbook is resolved first, and the item id is what is stored.
    rig.send(Command::Track(new_session("by-path", "/me/drive/root:/a/b.xlsx:", Some("S-1"))));
    let done = rig.finished(1).await;
    let tracked = rig.store.session(done[0].key.unwrap()).unwrap();
    assert_eq!(tracked.workbook.to_string(), "me/drive/items/RESOLVED");
    assert_eq!(rig.graph.calls_of("resolve").len(), 1);
    // An item id needs nothing from Graph: no call at all, straight to the store.
    rig.send(Command::Track(new_session("by-id", "me/drive/items/X", Some("S-2"))));
    assert!(rig.finished(1).await[0].result.is_ok());
    let kinds: Vec<&str> = rig.graph.calls().iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        ["create", "resolve", "refresh", "refresh"],
        "tracked sessions are checked at once, nothing more"
    );
}

#[tokio::test(start_paused = true)]
async fn a_created_session_the_store_refuses_is_closed_at_graph() {
    let mut rig = rig(&[], settings());
    rig.store.state.lock().unwrap().fail_inserts = true;
    rig.send(Command::Create(new_session("orphan", "me/drive/items/NEW", None)));
    let done = rig.finished(1).await;
    let why = done[0].result.clone().unwrap_err();
    assert!(why.contains("closed again"), "{why}");
    assert_eq!(rig.graph.calls_of("close").len(), 1);
    assert!(!rig.graph.is_live("fake-1"), "nothing is left open that nothing tracks");
}

#[tokio::test(start_paused = true)]
async fn automatic_refreshes_follow_the_interval_and_stop_when_switched_off_or_paused() {
    let mut rig = rig(&[("a", "W0", Duration::from_secs(60)), ("b", "W1", Duration::from_secs(60))], settings());
    tokio::time::sleep(Duration::from_secs(130)).await;
    let starts = rig.starts("refresh", "W0");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(
        starts[0] > Duration::from_secs(53) && starts[0] <= Duration::from_secs(60),
        "up to 10 % early, never late"
    );
    rig.send(Command::SetAuto { keys: vec![rig.keys[0]], auto: false });
    rig.send(Command::PauseAll(true));
    let done = rig.finished(2).await;
    assert!(done.iter().any(|f| f.kind == JobKind::SetAuto && f.result.is_ok()), "{done:?}");
    rig.until(Duration::from_secs(5), |e| e.iter().any(|e| matches!(e, Event::Paused(true)))).await;
    assert!(rig.store.state.lock().unwrap().paused, "the pause lives in the store, for every process");
    let before = rig.graph.calls().len();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(rig.graph.calls().len(), before, "paused: nothing automatic");
    rig.send(Command::PauseAll(false));
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(rig.starts("refresh", "W1").len() > 2, "b resumed");
    assert_eq!(rig.starts("refresh", "W0").len(), 2, "a stays manual");
}

#[tokio::test(start_paused = true)]
async fn an_expired_session_is_recreated_only_where_allowed_and_recreate_replaces_the_id() {
    let mut rig =
        rig(&[("keep", "W0", Duration::from_secs(30)), ("let-go", "W1", Duration::from_secs(30))], settings());
    let (keep, let_go) = (rig.keys[0], rig.keys[1]);
    let allowed = SettingsChange { recreate: Some(true), ..SettingsChange::default() };
    rig.send(Command::Edit { key: keep, change: allowed });
    rig.finished(1).await;
    rig.graph.script("me/drive/items/W0", &[Answer::Expired]);
    rig.graph.script("me/drive/items/W1", &[Answer::Expired]);
    tokio::time::sleep(Duration::from_secs(31)).await;
    let kept = rig.store.session(keep).unwrap();
    assert_eq!((kept.status, kept.session_id.as_str()), (Status::Ok, "fake-1"), "recreated at once");
    assert_eq!(rig.store.session(let_go).unwrap().status, Status::Expired);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(rig.starts("refresh", "W1").len(), 1, "an expired session that may not be recreated waits for the user");

    rig.send(Command::Recreate(vec![let_go]));
    let done = rig.finished(1).await;
    assert_eq!((done[0].kind, &done[0].result), (JobKind::Recreate, &Ok(())));
    let back = rig.store.session(let_go).unwrap();
    assert_eq!((back.status, back.session_id.as_str()), (Status::Ok, "fake-2"));
}

#[tokio::test(start_paused = true)]
async fn when_the_budget_is_short_the_sessions_closest_to_expiry_go_first() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    // All overdue at once; older last refreshes expire sooner: s3, then s1, s5, s0, s4, s2.
    let ages = [90i64, 110, 70, 130, 80, 100];
    let sessions: Vec<TrackedSession> = ages
        .iter()
        .enumerate()
        .map(|(i, age)| {
            let mut s = tracked(i as i64 + 1, &format!("s{i}"), &format!("W{i}"), Duration::from_secs(60), &clock);
            s.last_refresh = Some(clock.now() - chrono::Duration::seconds(*age));
            s.created_at = s.last_refresh.unwrap();
            s
        })
        .collect();
    let rig = rig_from(sessions, EngineSettings { request_budget: 1, ..settings() }, Role::Driver, clock);
    // One start per `GRANT_COUNTED` (11.25 s): the sixth at 56 s.
    tokio::time::sleep(Duration::from_secs(66)).await;
    let order: Vec<String> = rig.graph.calls_of("refresh").iter().map(|c| c.workbook.clone()).collect();
    let expected: Vec<String> = [3, 1, 5, 0, 4, 2].iter().map(|i| format!("me/drive/items/W{i}")).collect();
    assert_eq!(order, expected, "one request per window, soonest expiry first");
}

#[tokio::test(start_paused = true)]
async fn what_other_processes_write_arrives_added_removed_and_paused() {
    let mut rig = rig(&[("a", "W0", HOUR)], settings());
    let mut added = tracked(42, "b", "W9", HOUR, &rig.clock);
    added.status = Status::New;
    rig.graph.open("live-b");
    rig.external
        .send(StoreEvent::Changed(Changes { sessions: vec![added], paused: false, ..Changes::default() }))
        .unwrap();
    let events =
        rig.until(Duration::from_secs(5), |e| e.iter().any(|e| matches!(e, Event::Outcome { key: 42, .. }))).await;
    assert!(events.iter().any(|e| matches!(e, Event::Added(s) if s.name == "b")), "a new session is checked at once");
    rig.external.send(StoreEvent::Changed(Changes { removed: vec![42], paused: true, ..Changes::default() })).unwrap();
    let events = rig.until(Duration::from_secs(5), |e| e.iter().any(|e| matches!(e, Event::Paused(true)))).await;
    assert!(events.iter().any(|e| matches!(e, Event::Removed { key: 42, .. })));
}

#[tokio::test(start_paused = true)]
async fn a_watcher_refreshes_nothing_by_itself_and_takes_over_when_the_driver_goes() {
    let dir = tempfile::tempdir().unwrap();
    let location = wbsessions::store::Location::Sqlite(dir.path().join("watched.db"));
    let role = wbsessions::store::open(&location, wbsessions::store::Access::Write).unwrap().role;
    let held = role.acquire().unwrap();
    let clock = Clock::following_tokio(chrono::Utc::now());
    let mut rig = rig_with(&[("a", "W0", Duration::from_secs(1))], settings(), Role::Watcher(role.clone()), clock);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(rig.graph.calls().is_empty(), "a watcher refreshed on its own");
    drop(held);
    let events = rig.until(Duration::from_secs(5), |e| e.iter().any(|e| matches!(e, Event::Outcome { .. }))).await;
    assert!(events.iter().any(|e| matches!(e, Event::Driving)));
    assert_eq!(role.holder().and_then(|h| h.pid), Some(std::process::id()));
}

#[tokio::test(start_paused = true)]
async fn after_a_gap_in_wall_time_overdue_sessions_are_refreshed_at_once() {
    let clock = Clock::manual(chrono::Utc::now());
    let mut rig = rig_with(&[("a", "W0", Duration::from_secs(240))], settings(), Role::Driver, clock.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rig.graph.calls().is_empty(), "nothing is due yet");
    // The machine "sleeps" for ten minutes of wall time; monotonic time hardly moves.
    clock.advance(Duration::from_secs(600));
    rig.until(Duration::from_secs(3), |e| e.iter().any(|e| matches!(e, Event::Outcome { .. }))).await;
    assert_eq!(rig.graph.calls_of("refresh").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_last_refresh_in_the_future_counts_as_now() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let mut s = tracked(1, "skew", "W0", Duration::from_secs(60), &clock);
    // Written by a machine whose clock ran an hour ahead.
    s.last_refresh = Some(clock.now() + chrono::Duration::hours(1));
    let rig = rig_from(vec![s], settings(), Role::Driver, clock);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let starts = rig.starts("refresh", "W0");
    assert_eq!(starts.len(), 1, "refreshed within one interval, not an hour later: {starts:?}");
}

#[tokio::test(start_paused = true)]
async fn closing_a_closed_session_asks_graph_nothing() {
    let mut rig = rig(&[("a", "W0", HOUR)], settings());
    rig.send(Command::Close(rig.keys.clone()));
    assert!(rig.finished(1).await[0].result.is_ok());
    rig.send(Command::Close(rig.keys.clone()));
    assert!(rig.finished(1).await[0].result.is_ok(), "the end wished for is there already");
    assert_eq!(rig.starts("close", "W0").len(), 1, "one close call, not two");
}

// ---- $batch ---------------------------------------------------------------------------------------

/// `n` sessions on workbooks of their own, refreshed every minute, at a fake whose sessions
/// expire after five idle minutes, as Graph's persistent ones do.
fn batching_rig(n: usize, mode: BatchMode) -> Rig {
    let specs: Vec<(String, String)> = (0..n).map(|i| (format!("s{i:02}"), format!("W{i:02}"))).collect();
    let specs: Vec<(&str, &str, Duration)> =
        specs.iter().map(|(name, wb)| (name.as_str(), wb.as_str(), Duration::from_secs(60))).collect();
    let rig = rig(&specs, EngineSettings { batch: true, ..settings() });
    rig.graph.set_expiry(Duration::from_secs(300));
    rig.graph.set_batch(mode);
    rig
}

fn notes(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| if let Event::Note(n) = e { Some(n.clone()) } else { None }).collect()
}

#[tokio::test(start_paused = true)]
async fn batching_starts_with_a_probe_and_a_canary_and_then_takes_twenty_per_request() {
    let mut rig = batching_rig(30, BatchMode::Honoured);
    let events = rig.until(Duration::from_secs(900), |e| notes(e).len() >= 2).await;
    let notes = notes(&events);
    assert!(notes[0].contains("reads the session header inside $batch"), "{notes:?}");
    assert!(notes[1].contains("keep sessions alive") && notes[1].contains("20 sessions per request"), "{notes:?}");
    let trusted_at = Instant::now();

    let calls = rig.graph.calls_of("refresh");
    let probes: Vec<_> =
        calls.iter().filter(|c| c.session.as_deref().unwrap_or("").starts_with("wbsessions-probe-")).collect();
    assert_eq!(probes.len(), 1, "one probe");
    assert!(probes[0].in_batch);
    // Until trusted, only the canary went in batches: every other session had plain calls.
    let early_batched: std::collections::HashSet<_> = calls
        .iter()
        .filter(|c| c.in_batch && !probes.iter().any(|p| p.session == c.session))
        .map(|c| c.session.clone())
        .collect();
    assert_eq!(early_batched.len(), 1, "only the canary: {early_batched:?}");

    // Two more minutes: everything goes in full batches, one call at a time per workbook.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let later: Vec<_> = rig.graph.calls_of("refresh").into_iter().filter(|c| c.at > trusted_at).collect();
    assert!(later.len() >= 50, "{} refreshes in two minutes", later.len());
    // A refresh with nothing else due within a second goes alone, as a plain call: a batch of
    // one would save nothing. Sessions fall due spread over the minute, so that is a few of them.
    let plain = later.iter().filter(|c| !c.in_batch).count();
    assert!(plain * 3 < later.len(), "most refreshes in batches once trusted: {plain} plain of {}", later.len());
    // Asked for all at once, thirty go in two requests: Graph takes twenty per batch.
    let before = rig.graph.batches().len();
    rig.send(Command::RefreshAll);
    rig.finished(30).await;
    assert_eq!(rig.graph.batches()[before..], [20, 10]);
    assert_eq!(rig.graph.peaks().0, 1, "never two calls at once on one workbook");
    assert_eq!(rig.graph.expired(), 0, "nothing expired on the way");
    let stored = rig.store.state.lock().unwrap();
    assert!(stored.sessions.values().all(|s| s.status == Status::Ok));
}

#[tokio::test(start_paused = true)]
async fn batches_that_keep_nothing_alive_cost_only_the_canary() {
    let mut rig = batching_rig(10, BatchMode::NoRefresh);
    let events = rig.until(Duration::from_secs(900), |e| notes(e).len() >= 2).await;
    let notes = notes(&events);
    assert!(notes[1].contains("expired although $batch refreshed it"), "{notes:?}");
    // Let the keeper go on for a while with plain calls.
    let off_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(240)).await;
    let expired = rig.graph.expired_ids();
    assert_eq!(expired.len(), 1, "the canary alone: {expired:?}");
    let others = rig
        .store
        .state
        .lock()
        .unwrap()
        .sessions
        .values()
        .filter(|s| s.session_id.as_str() != expired[0])
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(others.len(), 9);
    for s in others {
        assert_eq!(s.status, Status::Ok, "{}", s.name);
        assert!(rig.graph.is_live(s.session_id.as_str()), "{} is alive at Graph", s.name);
    }
    let after: Vec<_> = rig.graph.calls_of("refresh").into_iter().filter(|c| c.at > off_at).collect();
    assert!(!after.is_empty() && after.iter().all(|c| !c.in_batch), "plain calls once batching is off");
}

#[tokio::test(start_paused = true)]
async fn batches_that_stop_working_once_trusted_are_given_up_at_the_first_sign() {
    for (mode, said) in [
        (BatchMode::NoRefresh, "expired although $batch refreshed it"),
        (BatchMode::Unanswered, "3 $batch requests in a row went unanswered"),
    ] {
        let mut rig = batching_rig(30, BatchMode::Honoured);
        rig.until(Duration::from_secs(900), |e| notes(e).len() >= 2).await;
        rig.graph.set_batch(mode);
        let changed_at = Instant::now();
        let events = rig.until(Duration::from_secs(900), |e| !notes(e).is_empty()).await;
        assert!(notes(&events)[0].contains(said), "{mode:?}: {:?}", notes(&events));
        let off_at = Instant::now();
        assert!(off_at - changed_at <= Duration::from_secs(400), "{mode:?}: within an expiry and an interval");
        tokio::time::sleep(Duration::from_secs(120)).await;
        let after: Vec<_> = rig.graph.calls_of("refresh").into_iter().filter(|c| c.at > off_at).collect();
        assert!(after.len() >= 30 && after.iter().all(|c| !c.in_batch), "{mode:?}: plain calls from then on");
    }
}

#[tokio::test(start_paused = true)]
async fn graph_that_ignores_the_header_or_has_no_batch_gets_plain_calls() {
    for (mode, said, batches) in
        [(BatchMode::Ignored, "ignores the session header", 1), (BatchMode::Missing, "$batch is not available", 0)]
    {
        let mut rig = batching_rig(5, mode);
        let events = rig.until(Duration::from_secs(300), |e| !notes(e).is_empty()).await;
        assert!(notes(&events)[0].contains(said), "{mode:?}: {:?}", notes(&events));
        tokio::time::sleep(Duration::from_secs(360)).await;
        assert_eq!(rig.graph.batches().len(), batches, "{mode:?}: the probe only");
        let real: Vec<_> = rig.graph.calls_of("refresh").into_iter().filter(|c| !c.in_batch).collect();
        assert!(real.len() >= 5 * 6, "{mode:?}: {} plain refreshes", real.len());
        assert_eq!(rig.graph.expired(), 0, "{mode:?}: nothing expired");
    }
}

// ---- asks that join, and holds per workbook ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_ask_for_a_refresh_already_queued_joins_it_and_is_answered_once_after_one_call() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let mut held = tracked(1, "h", "W0", HOUR, &clock);
    // New: refreshed at once, and Graph holds its workbook back for 5 s.
    held.status = Status::New;
    let asked = tracked(2, "a", "W0", Duration::from_secs(2), &clock);
    let mut rig = rig_from(vec![held, asked], settings(), Role::Driver, clock);
    rig.graph.script("me/drive/items/W0", &[Answer::Throttled(Some(Duration::from_secs(5)))]);
    // a's automatic refresh falls due at about 2 s and waits behind the hold; the user presses r.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rig.graph.calls_of("refresh").iter().all(|c| c.session.as_deref() != Some("live-a")));
    rig.send(Command::Refresh(vec![2]));
    let done = rig.finished(1).await;
    assert!(done[0].result.is_ok(), "{done:?}");
    let calls: Vec<Duration> = rig
        .graph
        .calls_of("refresh")
        .iter()
        .filter(|c| c.session.as_deref() == Some("live-a"))
        .map(|c| c.at.duration_since(rig.t0))
        .collect();
    assert_eq!(calls.len(), 1, "one Graph call for the keeper's refresh and the user's: {calls:?}");
    assert!(calls[0] >= Duration::from_secs(5) && calls[0] < Duration::from_secs(6), "after the hold: {calls:?}");
    // Nothing else is answered later: the one reply was the only one.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(rig.pending.is_empty(), "every ask was answered, once");
}

#[tokio::test(start_paused = true)]
async fn a_held_workbook_holds_back_its_own_sessions_only_for_its_own_wait() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let mut short = tracked(1, "short", "W0", Duration::from_secs(30), &clock);
    let mut long = tracked(2, "long", "W1", Duration::from_secs(30), &clock);
    short.status = Status::New;
    long.status = Status::New;
    let rig = rig_from(vec![short, long], settings(), Role::Driver, clock);
    rig.graph.script("me/drive/items/W0", &[Answer::Throttled(Some(Duration::from_secs(5)))]);
    rig.graph.script("me/drive/items/W1", &[Answer::Throttled(Some(Duration::from_secs(170)))]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let starts = rig.starts("refresh", "W0");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(
        starts[1] >= Duration::from_secs(5) && starts[1] <= Duration::from_secs(6),
        "refreshed within a second of its own 5 s, not after the other workbook's 170 s: {starts:?}"
    );
    assert_eq!(rig.starts("refresh", "W1"), [Duration::ZERO], "the other still waits");
}

#[tokio::test(start_paused = true)]
async fn a_refresh_of_a_closed_session_is_refused_by_kind_not_by_text() {
    let mut rig = rig(&[("a", "W0", HOUR)], settings());
    rig.send(Command::Close(rig.keys.clone()));
    assert!(rig.finished(1).await[0].result.is_ok());
    rig.send(Command::Refresh(rig.keys.clone()));
    let refused = rig.finished(1).await;
    assert!(matches!(refused[0].error, Some(EngineError::Closed { ref name }) if name == "a"), "{refused:?}");
    rig.send(Command::Refresh(vec![99]));
    assert!(matches!(rig.finished(1).await[0].error, Some(EngineError::NotFound)));
}

#[tokio::test(start_paused = true)]
async fn the_engine_plans_each_session_when_list_and_show_say_it_is_due() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let defaults = settings().defaults;
    // Three states that are planned differently: alive, failing, new.
    let ok = tracked(1, "ok", "W0", Duration::from_secs(60), &clock);
    let mut failing = tracked(2, "failing", "W1", Duration::from_secs(60), &clock);
    failing.status = Status::Error;
    failing.failures = 3;
    failing.last_call = Some(wbsessions::session::LastCall { at: clock.now(), latency_ms: 5 });
    let mut new = tracked(3, "new", "W2", Duration::from_secs(60), &clock);
    new.status = Status::New;
    let sessions = vec![ok, failing, new];
    let expected: HashMap<SessionKey, Option<chrono::DateTime<chrono::Utc>>> =
        sessions.iter().map(|s| (s.key, wbsessions::engine::policy::next_due(s, &defaults, clock.now()))).collect();
    let mut rig = rig_from(sessions, settings(), Role::Driver, clock);
    let events = rig
        .until(Duration::from_secs(1), |e| e.iter().filter(|e| matches!(e, Event::Scheduled { .. })).count() >= 3)
        .await;
    for event in events {
        if let Event::Scheduled { key, at } = event {
            let (planned, shown) = (at.unwrap(), expected[&key].unwrap());
            let apart = (planned - shown).num_milliseconds().abs();
            assert!(apart < 1000, "session {key}: planned {planned}, shown {shown}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_watcher_hears_what_changed() {
    let mut rig = rig(&[("a", "W0", HOUR)], settings());
    let mut second = rig.handle.subscribe();
    rig.send(Command::Refresh(rig.keys.clone()));
    assert!(rig.finished(1).await[0].result.is_ok());
    let first = rig.until(Duration::from_secs(1), |e| e.iter().any(|e| matches!(e, Event::Outcome { .. }))).await;
    let mut heard = Vec::new();
    while let Ok(event) = second.try_recv() {
        heard.push(event);
    }
    let outcomes = |events: &[Event]| events.iter().filter(|e| matches!(e, Event::Outcome { .. })).count();
    assert_eq!((outcomes(&first), outcomes(&heard)), (1, 1), "both watchers heard the one outcome");
}

/// A store this process may only read is shown and followed; every ask that would change it
/// is refused before anything is sent to Graph.
#[tokio::test(start_paused = true)]
async fn a_read_only_store_is_watched_and_changed_by_nothing() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let sessions = vec![tracked(1, "a", "W1", Duration::from_secs(1), &clock)];
    let graph = FakeGraph::new();
    graph.open(sessions[0].session_id.as_str());
    let store = MemoryStore::new(&sessions);
    store.state.lock().unwrap().read_only = true;
    let ctx = Context { graph: graph.clone(), clock: clock.clone(), auth: None };
    let config =
        EngineConfig { settings: settings(), role: Role::Driver, paused: false, batching: None, seed: Some(1) };
    let handle = engine::spawn(ctx, store.clone(), None, Some(sessions.clone()), config).handle;
    for request in [Request::Refresh(1), Request::Close(1), Request::Recreate(1), Request::PauseAll(true)] {
        match handle.ask(request).await {
            Err(EngineError::Store(wbsessions::store::StoreError::ReadOnly { .. })) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(handle.ask(Request::History(1)).await, Ok(Reply::History(_))));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(graph.calls().is_empty(), "nothing was sent: {:?}", graph.calls().len());
}

#[tokio::test(start_paused = true)]
async fn a_turn_holds_its_workbook_and_what_it_found_counts_for_the_session() {
    use wbsessions::engine::{Choice, Passed, TurnAsk};
    let clock = Clock::following_tokio(chrono::Utc::now());
    let mut a = tracked(1, "a", "W0", HOUR, &clock);
    a.status = Status::Ok;
    let rig = rig_from(vec![a], settings(), Role::Driver, clock.clone());
    let workbook = wbsessions::session::WorkbookRef::parse("me/drive/items/W0").unwrap();
    let turn = |choice: Choice| {
        let ask = TurnAsk { workbook: workbook.clone(), choice };
        rig.handle.send(Request::Turn(ask))
    };
    let Ok(Reply::Turn(first)) = turn(Choice::OnlyLive).await else { panic!("no turn") };
    assert_eq!(first.session.as_ref().map(|c| c.name.as_str()), Some("a"));
    // While it is held, the workbook's next call waits: a refresh asked for now, and a second turn.
    let refresh = rig.handle.send(Request::Refresh(1));
    let second = turn(Choice::Without);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rig.graph.calls_of("refresh").is_empty(), "a refresh ran beside a turn on its workbook");
    // The call worked: activity for `a`, then the refresh goes.
    let before = clock.now();
    first.end(Passed { sent: true, http_status: Some(200), ..Passed::default() });
    assert!(refresh.await.is_ok());
    assert_eq!(rig.graph.calls_of("refresh").len(), 1);
    let history = rig.handle.ask(Request::History(1)).await;
    let Ok(Reply::History(outcomes)) = history else { panic!("no history") };
    assert!(outcomes.iter().any(|o| o.action == wbsessions::session::Action::Call && o.at >= before), "{outcomes:?}");
    // A turn answered 429 holds the workbook for its Retry-After, for everyone.
    let Ok(Reply::Turn(second)) = second.await else { panic!("no second turn") };
    let t = Instant::now();
    second.end(Passed {
        sent: true,
        http_status: Some(429),
        class: Some(wbsessions::graph::ErrorClass::Throttled),
        retry_after: Some(Duration::from_secs(4)),
        ..Passed::default()
    });
    assert!(rig.handle.ask(Request::Refresh(1)).await.is_ok());
    let last = rig.graph.calls_of("refresh").last().map(|c| c.at.duration_since(t)).unwrap();
    assert!(last >= Duration::from_secs(4), "refreshed {last:?} after a 4 s hold");
    // A turn dropped unused frees the workbook without holding it.
    let Ok(Reply::Turn(third)) = turn(Choice::Named("a".into())).await else { panic!("no third turn") };
    drop(third);
    let Ok(Reply::Turn(_fourth)) = turn(Choice::Without).await else { panic!("the workbook stayed taken") };
    // Asking for a session that is not there says so by kind.
    assert!(matches!(turn(Choice::Named("nobody".into())).await, Err(EngineError::NotFound)));
}
