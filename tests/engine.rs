//! The refresh engine in-process, against the simulator over loopback: limits, throttling,
//! backoff, gaps, changes made by other processes, and shutdown.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use wbsessions::auth::Tokens;
use wbsessions::config::EngineSettings;
use wbsessions::engine::{self, Command, Context, EngineConfig, EngineHandle, Event};
use wbsessions::session::{Mode, OutcomeKind, SessionKey, Status, TrackedSession, WorkbookRef};
use wbsessions::sim::{RunningSim, SimConfig};
use wbsessions::store::{Store, StoreWriter};
use wbsessions::time::Clock;

struct Rig {
    sim: RunningSim,
    engine: EngineHandle,
    store_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    keys: Vec<SessionKey>,
}

/// Sessions `(name, workbook, interval)`, created through the simulator and stored.
async fn rig(config: SimConfig, sessions: &[(&str, &str, Duration)], settings: EngineSettings, clock: Clock) -> Rig {
    rig_as(config, sessions, settings, clock, None).await
}

/// As `rig`, but watching: another holder has the driver lock, which the engine may take over.
async fn rig_as(
    config: SimConfig,
    sessions: &[(&str, &str, Duration)],
    settings: EngineSettings,
    clock: Clock,
    watching_store: Option<&std::path::Path>,
) -> Rig {
    let sim = start_sim_with_clock(config, clock.clone()).await;
    let graph = client(&sim.graph_url());
    let dir = tempfile::tempdir().unwrap();
    let store_path = watching_store.map_or_else(|| dir.path().join("s.db"), std::path::Path::to_path_buf);
    let mut store = Store::open(&store_path).unwrap();
    let mut keys = Vec::new();
    for (name, workbook, interval) in sessions {
        let workbook = WorkbookRef::parse(&format!("me/drive/items/{workbook}")).unwrap();
        let id = graph.create_session(TOKEN, &workbook, Mode::Persistent).await.unwrap().value;
        let mut s = TrackedSession::new(name.to_string(), workbook, id, Mode::Persistent, clock.now());
        s.status = Status::Ok;
        s.last_refresh = Some(clock.now());
        s.interval = Some(*interval);
        store.insert(&mut s).unwrap();
        keys.push(s.key);
    }
    let initial = store.sessions(engine::MEMORY_OUTCOMES).unwrap();
    let writer = StoreWriter::spawn(store, Duration::from_millis(100), engine::MEMORY_OUTCOMES);
    let ctx = Context { client: graph, tokens: Tokens::fixed(TOKEN), clock };
    let engine = engine::spawn(
        ctx,
        writer.handle.clone(),
        writer.events,
        initial,
        EngineConfig {
            settings,
            driver: watching_store.is_none(),
            take_over: watching_store.map(std::path::Path::to_path_buf),
        },
    );
    Rig { sim, engine, store_path, _dir: dir, keys }
}

fn settings() -> EngineSettings {
    EngineSettings { request_timeout: Duration::from_secs(5), ..EngineSettings::default() }
}

fn books(n: usize) -> Vec<(String, Option<String>)> {
    (0..n).map(|i| (format!("W{i}"), None)).collect()
}

fn config_with(n: usize) -> SimConfig {
    SimConfig { token: Some(TOKEN.into()), workbooks: books(n), ..SimConfig::default() }
}

/// Collects events until `done` says enough, or fails after the deadline.
async fn collect(
    events: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    while !done(&seen) {
        match tokio::time::timeout_at(end, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the engine stopped early"),
            Err(_) => panic!("timed out; saw {} events: {seen:#?}", seen.len()),
        }
    }
    seen
}

/// Whether a call starts within `wait` (other events are passed over).
async fn call_starts_within(events: &mut mpsc::UnboundedReceiver<Event>, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        loop {
            match events.recv().await {
                Some(Event::Started { .. }) | None => return,
                Some(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn outcomes(events: &[Event]) -> Vec<(SessionKey, OutcomeKind)> {
    events
        .iter()
        .filter_map(|e| if let Event::Outcome { key, outcome, .. } = e { Some((*key, outcome.kind)) } else { None })
        .collect()
}

#[tokio::test]
async fn one_call_per_workbook_and_a_global_concurrency_limit() {
    let config = SimConfig { latency: Some((Duration::from_millis(30), Duration::from_millis(30))), ..config_with(6) };
    let long = Duration::from_secs(3600);
    let sessions: Vec<(String, String)> = (0..12).map(|i| (format!("s{i}"), format!("W{}", i % 6))).collect();
    let specs: Vec<(&str, &str, Duration)> = sessions.iter().map(|(n, w)| (n.as_str(), w.as_str(), long)).collect();
    let mut rig = rig(config, &specs, EngineSettings { concurrency: 3, ..settings() }, Clock::system()).await;
    let workbook_of: HashMap<SessionKey, usize> = rig.keys.iter().enumerate().map(|(i, k)| (*k, i % 6)).collect();
    rig.engine.commands.send(Command::RefreshAll).unwrap();
    let events = collect(&mut rig.engine.events, Duration::from_secs(10), |e| outcomes(e).len() == 12).await;
    let mut running: Vec<SessionKey> = Vec::new();
    let mut peak = 0;
    for event in &events {
        match event {
            Event::Started { key } => {
                assert!(
                    running.iter().all(|r| workbook_of[r] != workbook_of[key]),
                    "two calls on workbook W{} at once",
                    workbook_of[key]
                );
                running.push(*key);
                peak = peak.max(running.len());
            }
            Event::Outcome { key, .. } => running.retain(|r| r != key),
            _ => {}
        }
    }
    assert_eq!(peak, 3, "the concurrency limit is used and never passed");
    assert!(outcomes(&events).iter().all(|(_, k)| *k == OutcomeKind::Ok));
}

#[tokio::test]
async fn the_request_budget_holds_back_calls() {
    let long = Duration::from_secs(3600);
    let specs: Vec<(&str, &str, Duration)> =
        vec![("a", "W0", long), ("b", "W1", long), ("c", "W2", long), ("d", "W3", long)];
    let mut rig =
        rig(config_with(4), &specs, EngineSettings { request_budget: 3, ..settings() }, Clock::system()).await;
    rig.engine.commands.send(Command::RefreshAll).unwrap();
    let events = collect(&mut rig.engine.events, Duration::from_secs(5), |e| outcomes(e).len() == 3).await;
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Started { .. })).count(), 3);
    // The fourth waits for the ten-second window; nothing more starts within the next second.
    assert!(
        !call_starts_within(&mut rig.engine.events, Duration::from_secs(1)).await,
        "a fourth call started inside the budget window"
    );
}

#[tokio::test]
async fn retry_after_holds_back_all_traffic_until_it_passes() {
    let long = Duration::from_secs(3600);
    let mut rig = rig(
        config_with(2),
        &[("a", "W0", long), ("b", "W1", long)],
        EngineSettings { concurrency: 1, ..settings() },
        Clock::system(),
    )
    .await;
    rig.sim.sim.set_rates(1.0, 0.0);
    rig.engine.commands.send(Command::Refresh(vec![rig.keys[0]])).unwrap();
    let events = collect(&mut rig.engine.events, Duration::from_secs(5), |e| {
        e.iter().any(|e| matches!(e, Event::Throttled { until: Some(_) }))
    })
    .await;
    let until = events.iter().find_map(|e| if let Event::Throttled { until } = e { *until } else { None }).unwrap();
    assert_eq!(outcomes(&events), [(rig.keys[0], OutcomeKind::Throttled)]);
    rig.sim.sim.set_rates(0.0, 0.0);
    rig.engine.commands.send(Command::Refresh(vec![rig.keys[1]])).unwrap();
    let events = collect(&mut rig.engine.events, Duration::from_secs(10), |e| outcomes(e).len() == 2).await;
    let started_at = chrono::Utc::now();
    assert!(started_at >= until, "calls went out before the Retry-After passed");
    // Both the held manual refresh and the throttled session's retry succeed after the wait.
    let mut done = outcomes(&events);
    done.sort_by_key(|(k, _)| *k);
    assert_eq!(done, [(rig.keys[0], OutcomeKind::Ok), (rig.keys[1], OutcomeKind::Ok)]);
}

#[tokio::test]
async fn transient_failures_back_off_and_then_recover() {
    let mut rig = rig(config_with(1), &[("a", "W0", Duration::from_secs(3600))], settings(), Clock::system()).await;
    rig.sim.sim.set_rates(0.0, 1.0);
    rig.engine.commands.send(Command::Refresh(vec![rig.keys[0]])).unwrap();
    let first = collect(&mut rig.engine.events, Duration::from_secs(5), |e| outcomes(e).len() == 1).await;
    assert_eq!(outcomes(&first)[0].1, OutcomeKind::Error);
    let failed_at = std::time::Instant::now();
    rig.sim.sim.set_rates(0.0, 0.0);
    let retry = collect(&mut rig.engine.events, Duration::from_secs(5), |e| {
        outcomes(e).len() == 1 && matches!(e.last(), Some(Event::Changed(_)))
    })
    .await;
    assert_eq!(outcomes(&retry)[0].1, OutcomeKind::Ok, "the retry came without being asked");
    assert!(failed_at.elapsed() >= Duration::from_millis(900), "the first backoff is 1-2 s");
    let changed =
        retry.iter().rev().find_map(|e| if let Event::Changed(s) = e { Some(s.clone()) } else { None }).unwrap();
    assert_eq!((changed.status, changed.failures), (Status::Ok, 0));
}

#[tokio::test]
async fn after_a_gap_in_wall_time_overdue_sessions_are_refreshed_at_once() {
    let clock = Clock::manual(chrono::Utc::now());
    let mut rig = rig(config_with(1), &[("a", "W0", Duration::from_secs(240))], settings(), clock.clone()).await;
    // Nothing is due for four minutes...
    assert!(!call_starts_within(&mut rig.engine.events, Duration::from_millis(1500)).await, "nothing is due yet");
    // ...until the machine "sleeps" for ten minutes of wall time.
    clock.advance(Duration::from_secs(600));
    let events = collect(&mut rig.engine.events, Duration::from_secs(4), |e| outcomes(e).len() == 1).await;
    // The simulator's clock jumped too, so the session is gone: exactly what a keeper must notice.
    assert_eq!(outcomes(&events), [(rig.keys[0], OutcomeKind::Expired)]);
}

#[tokio::test]
async fn changes_from_other_processes_arrive_and_shutdown_flushes() {
    let long = Duration::from_secs(3600);
    let mut rig = rig(config_with(1), &[("a", "W0", long)], settings(), Clock::system()).await;
    let mut other = Store::open(&rig.store_path).unwrap();
    let template = other.session("a").unwrap();
    let mut added = TrackedSession::new(
        "b".into(),
        template.workbook.clone(),
        template.session_id.clone(),
        Mode::Persistent,
        chrono::Utc::now(),
    );
    added.interval = Some(long);
    other.insert(&mut added).unwrap();
    let events =
        collect(&mut rig.engine.events, Duration::from_secs(2), |e| e.iter().any(|e| matches!(e, Event::Added(_))))
            .await;
    assert!(events.iter().any(|e| matches!(e, Event::Added(s) if s.name == "b")));
    // A new session is refreshed at once, to learn whether it lives.
    collect(&mut rig.engine.events, Duration::from_secs(2), |e| outcomes(e).iter().any(|(k, _)| *k == added.key)).await;

    other.apply(&[wbsessions::store::Write::Remove { key: added.key }]).unwrap();
    collect(&mut rig.engine.events, Duration::from_secs(2), |e| e.iter().any(|e| matches!(e, Event::Removed { .. })))
        .await;

    rig.engine.commands.send(Command::Refresh(vec![rig.keys[0]])).unwrap();
    rig.engine.commands.send(Command::Shutdown).unwrap();
    let tail =
        collect(&mut rig.engine.events, Duration::from_secs(6), |e| e.iter().any(|e| matches!(e, Event::Stopped)))
            .await;
    let finished = outcomes(&tail).len();
    let stored = other.session("a").unwrap().outcomes.len();
    assert_eq!(stored, finished, "every outcome reported before Stopped is in the store");
}

#[tokio::test]
async fn a_watcher_takes_over_when_the_driver_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("watched.db");
    let held = wbsessions::store::DriverLock::acquire(&store).unwrap();
    let mut rig =
        rig_as(config_with(1), &[("a", "W0", Duration::from_secs(1))], settings(), Clock::system(), Some(&store)).await;
    // While the lock is held, nothing is scheduled here, though the session is due every second.
    assert!(
        !call_starts_within(&mut rig.engine.events, Duration::from_millis(2500)).await,
        "a watcher refreshed on its own"
    );
    drop(held);
    let events = collect(&mut rig.engine.events, Duration::from_secs(4), |e| !outcomes(e).is_empty()).await;
    assert!(events.iter().any(|e| matches!(e, Event::Driving)));
    assert_eq!(wbsessions::store::read_holder(&store), Some(std::process::id()));
}
