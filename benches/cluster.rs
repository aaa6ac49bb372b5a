//! Three keepers on one PostgreSQL store: 10,000 sessions at a 30 s interval on 1,000 workbooks
//! against the simulator (idle expiry 60 s), for 5 minutes; one keeper is killed (`kill -9`) at
//! minute 2, another is cut off from the database for 60 s at minute 3 (through a relay this
//! benchmark controls: the server is never stopped). Needs a server: `WBSESSIONS_TEST_POSTGRES`
//! (an admin URL; the benchmark makes a database of its own and drops it).
//!
//!     WBSESSIONS_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench cluster
//!     BENCH_SESSIONS=2000 BENCH_SECS=150 ... (quicker; the kill and the cut move to 40 % and 60 %)
//!     BENCH_BUDGET=4000 ... (request_budget and the simulator's limit; default 6,000)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wbsessions::graph::{ClientOptions, GraphClient};
use wbsessions::session::{Mode, Status, TrackedSession, WorkbookRef};
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)] // the tests' database helpers; the benchmark uses their relay
mod pg;

use pg::Relay;

mod common;

use common::{env_number, usage};

const TOKEN: &str = "bench-token";
const SESSIONS_PER_WORKBOOK: usize = 10;
const KEEPERS: usize = 3;
const LEASE_SECS: u64 = 15;

/// One refresh a keeper printed: when it said so, which session, how late.
struct Printed {
    at: Instant,
    keeper: usize,
    session: String,
    late: Option<f64>,
}

fn main() {
    let Some(admin) = std::env::var("WBSESSIONS_TEST_POSTGRES").ok().filter(|v| !v.is_empty()) else {
        eprintln!(
            "SKIPPED: the cluster benchmark needs WBSESSIONS_TEST_POSTGRES (postgres://postgres@127.0.0.1:5432/postgres)"
        );
        return;
    };
    let sessions = env_number("BENCH_SESSIONS", 10_000) as usize;
    // The keepers' steady demand is 3,333 requests per 10 s: the budget leaves room for the part
    // the store holds back for a keeper that went silent (docs/benchmarks.md).
    let budget = env_number("BENCH_BUDGET", 6_000) as u32;
    let seconds = env_number("BENCH_SECS", 300);
    let interval = Duration::from_secs(30);
    let expiry = Duration::from_secs(60);
    let workbooks = sessions.div_ceil(SESSIONS_PER_WORKBOOK);
    let (kill_at, cut_at) = if seconds >= 300 { (120, 180) } else { (seconds * 2 / 5, seconds * 3 / 5) };
    let cut_for = 60.min(seconds / 5);

    // A database of its own.
    let name = format!("wbs_cluster_{}", std::process::id());
    let mut admin_client = postgres::Client::connect(&admin, postgres::NoTls).expect("the database server");
    admin_client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
    admin_client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    let server = format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5432));
    let store_url = url.to_string();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = SimConfig {
        token: Some(TOKEN.into()),
        workbooks: (0..workbooks).map(|i| (format!("WB{i:05}"), None)).collect(),
        persistent_expiry: expiry,
        rate_limit: Some(budget),
        ..SimConfig::default()
    };
    let sim =
        runtime.block_on(wbsessions::sim::start(config, Clock::system(), "127.0.0.1:0".parse().unwrap())).unwrap();
    let graph_url = sim.graph_url();
    eprintln!("creating {sessions} sessions on {workbooks} workbooks...");
    let client = GraphClient::new(&graph_url, ClientOptions::default()).unwrap();
    let pace_from = tokio::time::Instant::now() + Duration::from_millis(100);
    let created: Vec<_> = runtime.block_on(
        futures_util::stream::iter(0..sessions)
            .map(|i| {
                let client = client.clone();
                async move {
                    // Paced under the simulator's limit: the creates are not what is measured.
                    let at = pace_from + Duration::from_millis(i as u64 * 10_500 / u64::from(budget));
                    tokio::time::sleep_until(at).await;
                    let workbook =
                        WorkbookRef::parse(&format!("me/drive/items/WB{:05}", i / SESSIONS_PER_WORKBOOK)).unwrap();
                    let id = client.create_session(TOKEN, &workbook, Mode::Persistent).await.expect("create").value;
                    (i, workbook, id, chrono::Utc::now())
                }
            })
            .buffer_unordered(256)
            .collect(),
    );
    // Each session as Graph knows it: last active when it was created.
    let rows: Vec<TrackedSession> = created
        .into_iter()
        .map(|(i, workbook, id, at)| {
            let mut s = TrackedSession::new(format!("s{i:05}"), workbook, id, Mode::Persistent, at);
            s.interval = Some(interval);
            s.status = Status::Ok;
            s.last_refresh = Some(at);
            s
        })
        .collect();
    runtime.block_on(async {
        let location = wbsessions::store::Location::parse(&store_url).unwrap();
        let store = wbsessions::store::open(&location, wbsessions::store::Access::Write).unwrap().sessions;
        store.insert_all(rows).await.unwrap();
        store.close().await;
    });
    let throttled_before = sim.sim.stats().throttled;

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "request_budget = {budget}\npersistent_expiry = \"{}s\"\nkeeper_lease = \"{LEASE_SECS}s\"\n",
            expiry.as_secs()
        ),
    )
    .unwrap();
    let relays: Vec<Relay> = (0..KEEPERS).map(|_| Relay::to(&server)).collect();
    let printed = Arc::new(Mutex::new(Vec::<Printed>::new()));
    let transactions = |client: &mut postgres::Client| -> i64 {
        client
            .query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", &[&name])
            .map(|r| r.get(0))
            .unwrap_or(0)
    };
    let xact_before = transactions(&mut admin_client);
    let mut keepers: Vec<Child> = (0..KEEPERS)
        .map(|k| {
            let mut via = url.clone();
            via.set_host(Some("127.0.0.1")).unwrap();
            via.set_port(Some(relays[k].address.port())).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_wbsessions"))
                .args(["run", "--json"])
                .env("WBSESSIONS_STORE", via.as_str())
                .env("WBSESSIONS_CONFIG", &config_path)
                .env("WBSESSIONS_GRAPH_URL", &graph_url)
                .env("WBSESSIONS_TOKEN", TOKEN)
                .env("XDG_STATE_HOME", std::env::temp_dir().join(format!("wbs-cluster-state{k}")))
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(std::env::temp_dir().join(format!("wbs-cluster-keeper{k}.err"))).unwrap())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let printed = printed.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                    if v["action"] == "refresh" && v["status"] == "ok" {
                        printed.lock().unwrap().push(Printed {
                            at: Instant::now(),
                            keeper: k,
                            session: v["session"].as_str().unwrap_or_default().to_string(),
                            late: v["late_secs"].as_f64(),
                        });
                    }
                }
            });
            child
        })
        .collect();
    let pids: Vec<u32> = keepers.iter().map(Child::id).collect();
    eprintln!("three keepers running for {seconds}s; kill -9 at {kill_at}s, database cut at {cut_at}s for {cut_for}s");

    let started = Instant::now();
    let mut peak: Vec<(f64, u64)> = vec![(0.0, 0); KEEPERS];
    let mut killed: Option<(Instant, Vec<String>)> = None;
    let mut taken_over: Option<Duration> = None;
    let mut cut = false;
    let mut restored = false;
    let mut db = postgres::Client::connect(&store_url, postgres::NoTls).unwrap();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(250));
        for (k, pid) in pids.iter().enumerate() {
            if let Some(u) = usage(*pid) {
                peak[k] = (u.0, peak[k].1.max(u.1));
            }
        }
        let t = started.elapsed().as_secs();
        if killed.is_none() && t >= kill_at {
            let held: Vec<String> = db
                .query(
                    "SELECT l.workbook FROM wbs_leases l JOIN wbs_keepers k ON k.id = l.keeper WHERE k.pid = $1",
                    &[&i64::from(pids[0])],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let _ = keepers[0].kill();
            let _ = keepers[0].wait();
            eprintln!("killed keeper 0 (pid {}), which held {} workbooks", pids[0], held.len());
            killed = Some((Instant::now(), held));
        }
        if let Some((at, held)) = &killed
            && taken_over.is_none()
        {
            let others: i64 = db
                .query_one(
                    "SELECT count(*) FROM wbs_leases l JOIN wbs_keepers k ON k.id = l.keeper \
                     WHERE l.workbook = ANY($1) AND k.pid <> $2 AND l.until > now()",
                    &[held, &i64::from(pids[0])],
                )
                .unwrap()
                .get(0);
            if others as usize == held.len() {
                taken_over = Some(at.elapsed());
                eprintln!("its workbooks were all held by the others after {:.1}s", at.elapsed().as_secs_f64());
            }
        }
        if !cut && t >= cut_at {
            relays[1].cut();
            cut = true;
            eprintln!("cut keeper 1 (pid {}) off from the database", pids[1]);
        }
        if cut && !restored && t >= cut_at + cut_for {
            relays[1].restore();
            restored = true;
            eprintln!("keeper 1's database connection restored");
        }
    }
    let wall = started.elapsed().as_secs_f64();
    for (k, child) in keepers.iter_mut().enumerate().skip(1) {
        let _ = Command::new("kill").args(["-TERM", &pids[k].to_string()]).status();
        let _ = child.wait();
    }
    let xact = transactions(&mut admin_client) - xact_before;

    // What the killed keeper held: how late its sessions' refreshes were once the others had them.
    let printed = printed.lock().unwrap();
    let (kill_instant, held) = killed.clone().unwrap_or((Instant::now(), Vec::new()));
    let held_names: std::collections::HashSet<String> = {
        // What is leased is a workbook for one owner (`coalesce(owner, '') || ' ' || workbook`).
        let rows = db
            .query("SELECT name FROM wbs_sessions WHERE coalesce(owner, '') || ' ' || workbook = ANY($1)", &[&held])
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };
    let after_kill_late = printed
        .iter()
        .filter(|p| p.at > kill_instant && p.keeper != 0 && held_names.contains(&p.session))
        .filter_map(|p| p.late)
        .fold(0.0f64, f64::max);
    let first_after_kill = printed
        .iter()
        .filter(|p| p.at > kill_instant && p.keeper != 0 && held_names.contains(&p.session))
        .map(|p| p.at.duration_since(kill_instant).as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    // Twice: a session refreshed by two keepers within five seconds of each other.
    let mut last: HashMap<&str, (Instant, usize)> = HashMap::new();
    let mut twice = 0;
    for p in printed.iter() {
        if let Some((at, keeper)) = last.get(p.session.as_str())
            && *keeper != p.keeper
            && p.at.duration_since(*at) < Duration::from_secs(5)
        {
            twice += 1;
        }
        last.insert(&p.session, (p.at, p.keeper));
    }
    let refreshes = printed.len();
    let live = sim.sim.stats().live_sessions;
    let throttled = sim.sim.stats().throttled - throttled_before;
    runtime.block_on(sim.stop());
    drop(db);
    let _ = admin_client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));

    println!(
        "cluster benchmark: {sessions} sessions on {workbooks} workbooks, {KEEPERS} keepers, {}s interval, {}s idle expiry, {wall:.0}s",
        interval.as_secs(),
        expiry.as_secs()
    );
    println!("  sessions expired at the simulator   {}  (target 0)", sessions.saturating_sub(live));
    println!(
        "  killed keeper's workbooks held by others after {}  (lease {LEASE_SECS}s; target <= lease + 5 s)",
        taken_over.map_or_else(|| "never".into(), |d| format!("{:.1}s", d.as_secs_f64()))
    );
    println!(
        "  its sessions: first refreshed by another {first_after_kill:.1}s after the kill, latest refresh {after_kill_late:.1}s after due"
    );
    println!("  refreshes printed                   {refreshes}; refreshed by two keepers within 5 s: {twice}");
    println!("  requests past the budget ({budget} per 10 s; the simulator's 429s)  {throttled}  (target 0)");
    for (k, (cpu, rss)) in peak.iter().enumerate() {
        println!("  keeper {k}: CPU {:.2} % of one core, peak RSS {:.1} MB", 100.0 * cpu / wall, *rss as f64 / 1e6);
    }
    println!("  database transactions               {xact} ({:.2} per refresh)", xact as f64 / refreshes.max(1) as f64);
}
