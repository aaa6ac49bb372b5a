//! The keeper under faults: 1000 sessions on 100 workbooks with a 60 s idle expiry, refreshed
//! every 40 s, for five minutes against the simulator, with 20 % of requests throttled and 20 %
//! failing (first with every session due at once, as after adding them together, then with last
//! refreshes spread), then behind a rate limit of 1.5 times what the sessions need. Counts sessions
//! that expired (target 0), refreshes per session, and how much of the time any workbook was
//! held back.
//!
//!     cargo bench --bench faults
//!     BENCH_SECS=60 cargo bench --bench faults       (a quicker look)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark code: a panic is a failed run

use std::time::{Duration, Instant};

use wbsessions::auth::Tokens;
use wbsessions::engine::keeper::{Keeper, KeeperRole, Start};
use wbsessions::engine::{Context, EngineSettings, Event, LiveGraph};
use wbsessions::graph::{ClientOptions, GraphClient};
use wbsessions::session::{Defaults, Mode, OutcomeKind, SessionId, Status, TrackedSession, WorkbookRef};
use wbsessions::sim::SimConfig;
use wbsessions::store::{Access, Location};
use wbsessions::time::Clock;

const TOKEN: &str = "bench-token";
const SESSIONS: usize = 1000;
const WORKBOOKS: usize = 100;
const INTERVAL: Duration = Duration::from_secs(40);
const EXPIRY: Duration = Duration::from_secs(60);

struct Figures {
    expired_calls: u64,
    dead_at_end: usize,
    refreshes_ok: u64,
    refresh_calls: u64,
    held: Duration,
    /// Workbook-seconds held back, summed over the workbooks.
    held_workbook_secs: f64,
    wall: Duration,
    /// `$batch` requests the simulator answered.
    batches: u64,
}

fn scenario(name: &str, sim_config: SimConfig, seconds: u64, together: bool) -> Figures {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let sim = wbsessions::sim::start(sim_config, Clock::system(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.db");
        let opened = wbsessions::store::open(&Location::Sqlite(path.clone()), Access::Write).unwrap();
        let now = chrono::Utc::now();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut ids = Vec::new();
        let sessions: Vec<TrackedSession> = (0..SESSIONS)
            .map(|i| {
                let item = format!("WB{:03}", i % WORKBOOKS);
                let id = sim.sim.open_session(&item);
                ids.push(id.clone());
                let workbook = WorkbookRef::parse(&format!("me/drive/items/{item}")).unwrap();
                let mut s = TrackedSession::new(
                    format!("s{i:04}"),
                    workbook,
                    SessionId::new(&id).unwrap(),
                    Mode::Persistent,
                    now,
                );
                s.status = Status::Ok;
                s.interval = Some(INTERVAL);
                // Opened just now at the simulator; the first refreshes spread over half the
                // interval, or (the hardest case: sessions added at once) all due together.
                let age = if together { 0 } else { rng.u64(0..INTERVAL.as_millis() as u64 / 2) };
                s.last_refresh = Some(now - chrono::Duration::milliseconds(age as i64));
                s.created_at = s.last_refresh.unwrap();
                s
            })
            .collect();
        opened.sessions.insert_all(sessions).await.unwrap();
        let lease = opened.role.acquire().unwrap();
        let client = GraphClient::new(&sim.graph_url(), ClientOptions::default()).unwrap();
        let ctx = Context { graph: LiveGraph::new(client, Tokens::fixed(TOKEN)), clock: Clock::system(), auth: None };
        let settings = EngineSettings {
            defaults: Defaults { persistent_expiry: EXPIRY, ..Defaults::default() },
            request_timeout: Duration::from_secs(10),
            ..EngineSettings::default()
        };
        let mut keeper = Keeper::start(
            opened.sessions,
            KeeperRole::Drive { lease, role: opened.role },
            ctx,
            settings,
            Start::Stored,
        )
        .await
        .unwrap();
        eprintln!("{name}: running the keeper for {seconds}s...");
        let started = Instant::now();
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let (mut expired_calls, mut refreshes_ok, mut refresh_calls) = (0, 0, 0);
        let (mut held_since, mut held) = (None::<Instant>, Duration::ZERO);
        let (mut held_count, mut counted_at, mut held_workbook_secs) = (0usize, Instant::now(), 0.0f64);
        while let Ok(Some(event)) = tokio::time::timeout_at(end, keeper.events.recv()).await {
            match event {
                Event::Outcome { outcome, .. } if outcome.action == wbsessions::session::Action::Refresh => {
                    refresh_calls += 1;
                    match outcome.kind {
                        OutcomeKind::Ok => refreshes_ok += 1,
                        OutcomeKind::Expired => expired_calls += 1,
                        _ => {}
                    }
                }
                Event::Note(note) => eprintln!("  keeper: {note}"),
                Event::Holds { workbooks, .. } => {
                    held_workbook_secs += held_count as f64 * counted_at.elapsed().as_secs_f64();
                    (held_count, counted_at) = (workbooks, Instant::now());
                    match (workbooks > 0, held_since) {
                        (true, None) => held_since = Some(Instant::now()),
                        (false, Some(since)) => {
                            held += since.elapsed();
                            held_since = None;
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        held_workbook_secs += held_count as f64 * counted_at.elapsed().as_secs_f64();
        if let Some(since) = held_since {
            held += since.elapsed();
        }
        let wall = started.elapsed();
        keeper.stop().await;
        // Whatever the keeper believed, the simulator decides who is alive.
        let stats = sim.sim.stats();
        let dead_at_end = ids.len() - stats.live_sessions.min(ids.len());
        sim.stop().await;
        Figures {
            expired_calls,
            dead_at_end,
            refreshes_ok,
            refresh_calls,
            held,
            held_workbook_secs,
            wall,
            batches: stats.batches,
        }
    })
}

fn report(name: &str, f: &Figures) {
    let secs = f.wall.as_secs_f64();
    println!("{name} ({secs:.0} s)");
    println!(
        "  sessions that expired        {} refreshes found one expired; {} of {SESSIONS} not alive at the end  (target 0)",
        f.expired_calls, f.dead_at_end
    );
    println!(
        "  refreshes per session        {:.1} ok of {:.1} sent (one per {:.1} s; the interval is {} s)",
        f.refreshes_ok as f64 / SESSIONS as f64,
        f.refresh_calls as f64 / SESSIONS as f64,
        secs * SESSIONS as f64 / f.refreshes_ok.max(1) as f64,
        INTERVAL.as_secs()
    );
    println!("  $batch requests              {}", f.batches);
    println!(
        "  time any workbook was held   {:.1} %  (each workbook held {:.1} % of the time on average)",
        100.0 * f.held.as_secs_f64() / secs,
        100.0 * f.held_workbook_secs / (secs * WORKBOOKS as f64)
    );
}

fn main() {
    let seconds = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let base = SimConfig {
        token: Some(TOKEN.into()),
        workbooks: (0..WORKBOOKS).map(|i| (format!("WB{i:03}"), None)).collect(),
        persistent_expiry: EXPIRY,
        seed: Some(11),
        ..SimConfig::default()
    };
    println!(
        "fault benchmark: {SESSIONS} sessions on {WORKBOOKS} workbooks, {}s idle expiry, {}s interval",
        EXPIRY.as_secs(),
        INTERVAL.as_secs()
    );
    let faulty = SimConfig { throttle_rate: 0.2, error_rate: 0.2, ..base.clone() };
    let figures = scenario("throttle 0.2, errors 0.2, all due together", faulty.clone(), seconds, true);
    report("--throttle-rate 0.2 --error-rate 0.2, sessions added at once (all due together)", &figures);
    let figures = scenario("throttle 0.2, errors 0.2", faulty, seconds, false);
    report("--throttle-rate 0.2 --error-rate 0.2, last refreshes spread", &figures);
    // 1000 sessions every 40 s need 250 requests per 10 s.
    let need = (SESSIONS as f64 * 10.0 / INTERVAL.as_secs_f64()).round() as u32;
    let limited = SimConfig { rate_limit: Some(need * 3 / 2), ..base };
    let figures = scenario("rate limit", limited, seconds, false);
    report(&format!("--rate-limit {} (1.5 x the {need} per 10 s the sessions need)", need * 3 / 2), &figures);
}
