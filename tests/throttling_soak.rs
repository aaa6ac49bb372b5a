//! Five minutes of heavy throttling and errors, compressed by tokio's paused time: the keeper
//! must keep every session alive all the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::time::Duration;

use common::fake::{FakeGraph, MemoryStore};
use tokio::time::Instant;
use wbsessions::engine::{self, Context, EngineConfig, EngineSettings, Event, Role};
use wbsessions::session::{Defaults, Mode, SessionId, Status, TrackedSession, WorkbookRef};
use wbsessions::time::Clock;

/// The faults' and the engine's seed; `SOAK_SEED=N cargo test --test throttling_soak` tries others.
fn seed() -> u64 {
    std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42)
}

#[tokio::test(start_paused = true)]
async fn a_thousand_sessions_survive_five_minutes_of_twenty_percent_throttling_and_errors() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let graph = FakeGraph::new();
    graph.set_expiry(Duration::from_secs(60));
    graph.set_faults(0.2, 0.2, seed());
    graph.set_latency(Duration::from_millis(50));
    let sessions: Vec<TrackedSession> = (0..1000)
        .map(|i| {
            let workbook = WorkbookRef::parse(&format!("me/drive/items/W{}", i % 100)).unwrap();
            let id = format!("live-{i}");
            graph.open(&id);
            let mut s = TrackedSession::new(
                format!("s{i}"),
                workbook,
                SessionId::new(&id).unwrap(),
                Mode::Persistent,
                clock.now(),
            );
            s.key = i + 1;
            s.status = Status::Ok;
            // A keeper that has run a while: last refreshes spread over the interval.
            s.last_refresh = Some(clock.now() - chrono::Duration::milliseconds(i * 40));
            s.created_at = s.last_refresh.unwrap();
            s.interval = Some(Duration::from_secs(40));
            s
        })
        .collect();
    let store = MemoryStore::new(&sessions);
    let settings = EngineSettings {
        defaults: Defaults { persistent_expiry: Duration::from_secs(60), ..Defaults::default() },
        ..EngineSettings::default()
    };
    let mut engine = engine::spawn(
        Context { graph: graph.clone(), clock, auth: None },
        store.clone(),
        None,
        Some(sessions),
        // Seeded, like the faults: the run repeats exactly, so a failure here is a regression to
        // look at, not bad luck. (Over seeds 1 to 40, one run lost one session of the thousand,
        // to a dozen failures in a row in its first cycle.)
        EngineConfig { settings, role: Role::Driver, paused: false, batching: None, seed: Some(seed()) },
    );
    let end = Instant::now() + Duration::from_secs(300);
    let (mut held_since, mut held_for) = (None, Duration::ZERO);
    let mut outcomes = 0u64;
    while let Ok(Some(event)) = tokio::time::timeout_at(end, engine.events.recv()).await {
        match event {
            Event::Outcome { .. } => outcomes += 1,
            Event::Holds { workbooks, .. } => match (workbooks > 0, held_since) {
                (true, None) => held_since = Some(Instant::now()),
                (false, Some(since)) => {
                    held_for += Instant::now().duration_since(since);
                    held_since = None;
                }
                _ => {}
            },
            _ => {}
        }
    }
    assert_eq!(graph.expired(), 0, "no session may expire: {:?}", graph.expired_ids());
    let refreshes = graph.calls_of("refresh").len();
    assert!(refreshes >= 1000 * 300 / 40, "{refreshes} calls for 1000 sessions in 5 minutes at a 40 s interval");
    // Throttling holds back single workbooks; the keeper never stops as a whole.
    assert!(held_for < Duration::from_secs(300), "{held_for:?}");
    assert!(outcomes > 0);
}
