//! The keeper under load: N sessions (default 10,000) at a 60 s interval against the simulator.
//! The keeper first refreshes with one request per session while it checks that `$batch` keeps
//! sessions alive (a canary outlives its 5-minute idle expiry on batches alone: about six
//! minutes); the cost is measured over that warm-up and then over `BENCH_SECS` (default 120) of
//! batching. Prints how punctual the refreshes were and what the keeper cost.
//!
//!     cargo bench --bench keeper
//!     BENCH_SESSIONS=2000 BENCH_SECS=60 BENCH_EXPIRY_SECS=90 cargo bench --bench keeper  (quicker)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wbsessions::graph::{ClientOptions, GraphClient};
use wbsessions::session::{Mode, Status, TrackedSession, WorkbookRef};
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

mod common;

use common::{env_number, usage};

const TOKEN: &str = "bench-token";
const SESSIONS_PER_WORKBOOK: usize = 10;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The same rate of refreshes through `GraphClient` alone: no engine, no store, no output. Runs
/// in a child process (this benchmark run again with `BENCH_FLOOR_URL`), so that its CPU is
/// counted apart from the simulator's. Prints the CPU seconds it used.
fn floor(url: &str) {
    let rate = env_number("BENCH_FLOOR_RATE", 167).max(1);
    let seconds = env_number("BENCH_FLOOR_SECS", 30);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        let client = GraphClient::new(url, ClientOptions::default()).expect("a client");
        let mut ids = Vec::new();
        for i in 0..200 {
            let workbook =
                WorkbookRef::parse(&format!("me/drive/items/WB{:05}", i / SESSIONS_PER_WORKBOOK)).expect("a ref");
            let id = client.create_session(TOKEN, &workbook, Mode::Persistent).await.expect("create").value;
            ids.push((workbook, id));
        }
        let before = usage(std::process::id()).expect("usage").0;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
        let mut calls = tokio::task::JoinSet::new();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(seconds) {
            tick.tick().await;
            let (workbook, id) = ids[n % ids.len()].clone();
            let client = client.clone();
            calls.spawn(async move { client.refresh_session(TOKEN, &workbook, &id).await.is_ok() });
            n += 1;
            while calls.try_join_next().is_some() {}
        }
        while calls.join_next().await.is_some() {}
        let cpu = usage(std::process::id()).expect("usage").0 - before;
        println!("{cpu} {}", started.elapsed().as_secs_f64());
    });
}

fn main() {
    if let Ok(url) = std::env::var("BENCH_FLOOR_URL") {
        return floor(&url);
    }
    let sessions = env_number("BENCH_SESSIONS", 10_000) as usize;
    let seconds = env_number("BENCH_SECS", 120);
    let interval = Duration::from_secs(env_number("BENCH_INTERVAL_SECS", 60));
    let expiry = Duration::from_secs(env_number("BENCH_EXPIRY_SECS", 300));
    let workbooks = sessions.div_ceil(SESSIONS_PER_WORKBOOK);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store_path = dir.path().join("bench.db");

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let config = SimConfig {
        token: Some(TOKEN.into()),
        workbooks: (0..workbooks).map(|i| (format!("WB{i:05}"), None)).collect(),
        persistent_expiry: expiry,
        ..SimConfig::default()
    };
    let sim = runtime
        .block_on(wbsessions::sim::start(config, Clock::system(), "127.0.0.1:0".parse().expect("an address")))
        .expect("the simulator starts");
    let graph_url = sim.graph_url();

    eprintln!("creating {sessions} sessions on {workbooks} workbooks...");
    let setup = Instant::now();
    let client = GraphClient::new(&graph_url, ClientOptions::default()).expect("a client");
    let created: Vec<_> = runtime.block_on(
        futures_util::stream::iter(0..sessions)
            .map(|i| {
                let client = client.clone();
                async move {
                    let workbook = WorkbookRef::parse(&format!("me/drive/items/WB{:05}", i / SESSIONS_PER_WORKBOOK))
                        .expect("a ref");
                    let id = client.create_session(TOKEN, &workbook, Mode::Persistent).await.expect("create").value;
                    (i, workbook, id)
                }
            })
            .buffer_unordered(64)
            .collect(),
    );
    // A keeper that has run for a while sees last refreshes spread over the interval.
    let mut rows = Vec::new();
    let now = chrono::Utc::now();
    let mut rng = fastrand::Rng::with_seed(1);
    for (i, workbook, id) in created {
        let mut s =
            TrackedSession::new(format!("s{i:05}"), workbook, id, Mode::Persistent, now - chrono::Duration::minutes(2));
        s.interval = Some(interval);
        s.status = Status::Ok;
        s.last_refresh = Some(now - chrono::Duration::milliseconds(rng.i64(0..interval.as_millis() as i64)));
        rows.push(s);
    }
    store_sessions(&store_path, rows);
    let config_path = dir.path().join("config.toml");
    // Graph's own Excel limit is 1500 per 10 s per tenant; 10,000 sessions a minute need about 1,700.
    std::fs::write(&config_path, format!("request_budget = 2500\npersistent_expiry = \"{}s\"\n", expiry.as_secs()))
        .expect("the config");
    eprintln!("set up in {:.1}s; running the keeper for {seconds}s...", setup.elapsed().as_secs_f64());

    let mut keeper = Command::new(env!("CARGO_BIN_EXE_wbsessions"))
        .args(["run", "--json"])
        .env("WBSESSIONS_STORE", &store_path)
        .env("WBSESSIONS_CONFIG", &config_path)
        .env("WBSESSIONS_GRAPH_URL", &graph_url)
        .env("WBSESSIONS_TOKEN", TOKEN)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keeper starts");
    // The keeper says on stderr when it batches: the second measurement starts there.
    let batching = Arc::new(Mutex::new(None::<(Instant, String)>));
    let said = {
        let batching = batching.clone();
        let stderr = keeper.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  keeper: {line}");
                if line.contains("per request from now on") || line.contains("one request per session") {
                    *batching.lock().expect("lock") = Some((Instant::now(), line));
                }
            }
        })
    };
    let pid = keeper.id();
    let lateness = Arc::new(Mutex::new(Vec::<f64>::new()));
    let failures = Arc::new(Mutex::new(0u64));
    let reader = {
        let (lateness, failures) = (lateness.clone(), failures.clone());
        let stdout = keeper.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if value["status"] != "ok" {
                    *failures.lock().expect("lock") += 1;
                }
                if let Some(late) = value["late_secs"].as_f64() {
                    lateness.lock().expect("lock").push(late * 1000.0);
                }
            }
        })
    };
    let started = Instant::now();
    let mut peak_rss = 0;
    let mut cpu = 0.0;
    // (wall, cpu, refreshes started) when batching began, and the verdict the keeper gave.
    let mut switched: Option<(Instant, f64, usize, String)> = None;
    let warmup_limit = expiry * 2 + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if let Some((c, rss)) = usage(pid) {
            cpu = c;
            peak_rss = peak_rss.max(rss);
        }
        if switched.is_none()
            && let Some((at, line)) = batching.lock().expect("lock").clone()
        {
            eprintln!("measuring {seconds}s from here...");
            switched = Some((at, cpu, lateness.lock().expect("lock").len(), line));
        }
        let measured = switched.as_ref().is_some_and(|(at, ..)| at.elapsed() >= Duration::from_secs(seconds));
        if measured || (switched.is_none() && started.elapsed() > warmup_limit) {
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = keeper.wait().expect("the keeper exits");
    let _ = reader.join();
    let _ = said.join();
    let batch_requests = sim.sim.stats().batches;

    // What the same rate costs with nothing but the HTTP calls: the floor under the keeper.
    let rate = (sessions as f64 / interval.as_secs_f64()).round() as u64;
    let floor_run = Command::new(std::env::current_exe().expect("this benchmark"))
        .env("BENCH_FLOOR_URL", &graph_url)
        .env("BENCH_FLOOR_RATE", rate.to_string())
        .output()
        .expect("the floor run");
    let floor_text = String::from_utf8_lossy(&floor_run.stdout);
    let mut floor_numbers = floor_text.split_whitespace().filter_map(|n| n.parse::<f64>().ok());
    let (floor_cpu, floor_wall) = (floor_numbers.next().unwrap_or(f64::NAN), floor_numbers.next().unwrap_or(f64::NAN));
    runtime.block_on(sim.stop());

    let mut late = lateness.lock().expect("lock").clone();
    late.sort_by(f64::total_cmp);
    let on_time = late.iter().filter(|l| **l <= 1000.0).count();
    let expected = sessions as f64 * wall / interval.as_secs_f64();
    println!(
        "keeper benchmark: {sessions} sessions, {}s interval, {}s idle expiry, {wall:.0}s run",
        interval.as_secs(),
        expiry.as_secs()
    );
    println!("  automatic refreshes started  {} (about {expected:.0} expected)", late.len());
    println!(
        "  started within 1 s of due    {:.3} %  (target >= 99.9 %)",
        100.0 * on_time as f64 / late.len().max(1) as f64
    );
    println!(
        "  lateness p50 / p99 / max     {:.1} ms / {:.1} ms / {:.1} ms",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN)
    );
    println!("  failed calls                 {}", failures.lock().expect("lock"));
    match &switched {
        Some((at, cpu_then, refreshes_then, line)) => {
            let warm = at.duration_since(started).as_secs_f64();
            let after = wall - warm;
            let refreshes_after = late.len().saturating_sub(*refreshes_then);
            println!("  keeper said                  {line}");
            println!(
                "  keeper CPU, one request each {:.2} % of one core over the first {warm:.0}s",
                100.0 * cpu_then / warm
            );
            println!(
                "  keeper CPU, batching         {:.2} % of one core over the last {after:.0}s  (target <= 3 %)",
                100.0 * (cpu - cpu_then) / after
            );
            println!(
                "  $batch requests              {batch_requests} for {refreshes_after} refreshes ({:.1} per request)",
                refreshes_after as f64 / batch_requests.max(1) as f64
            );
        }
        None => println!(
            "  keeper CPU                   {cpu:.2} s = {:.2} % of one core; it never batched  (target <= 3 %)",
            100.0 * cpu / wall
        ),
    }
    println!("  keeper peak RSS              {:.1} MB  (target <= 150 MB)", peak_rss as f64 / 1e6);
    println!(
        "  bare GraphClient, {rate}/s     {:.2} % of one core (the same refreshes, one request each, with no engine, store or output)",
        100.0 * floor_cpu / floor_wall,
    );
    println!("  keeper exit                  {status}");
}

/// Writes the sessions into a new store at `path`, as `import` would.
fn store_sessions(path: &std::path::Path, sessions: Vec<TrackedSession>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let location = wbsessions::store::Location::Sqlite(path.to_path_buf());
        let store = wbsessions::store::open(&location, wbsessions::store::Access::Write).expect("the store").sessions;
        store.insert_all(sessions).await.expect("insert");
        store.close().await;
    });
}
