//! 100,000 sessions: bulk import, a refresh of every one through the simulator, then what a user
//! waits for and what it costs: the dashboard's first frame and memory, `list --json`, `show`.
//!
//!     cargo bench --bench scale                              (needs tmux)
//!     BENCH_SESSIONS=10000 cargo bench --bench scale         (a quicker look)
//!
//! Every command runs as a child process of the release binary, as a user runs it; times are wall
//! clock from spawn to exit, peak RSS comes from wait4 (what `/usr/bin/time -f %M` reports).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wbsessions::graph::{ClientOptions, GraphClient};
use wbsessions::session::{Mode, WorkbookRef};
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

const TOKEN: &str = "bench-token";
const SESSIONS_PER_WORKBOOK: usize = 10;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    seconds: f64,
    peak_rss_mb: f64,
}

/// Runs the binary to its end under `/usr/bin/time -f %M`: wall time from spawn to exit, and
/// the peak RSS that `time` reads from wait4. (wait4 from here would count this process's
/// memory too: a child shares its parent's pages until it execs.)
fn run(env: &[(&str, String)], args: &[&str]) -> Run {
    use std::io::Read;
    let started = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", env!("CARGO_BIN_EXE_wbsessions")])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let mut stderr = String::new();
    let _ = err.read_to_string(&mut stderr);
    let status = child.wait().expect("the child exits");
    let seconds = started.elapsed().as_secs_f64();
    // time's own line comes last.
    let (stderr, peak_kb) =
        stderr.trim_end().rsplit_once('\n').map_or(("", stderr.trim()), |(rest, last)| (rest, last));
    Run {
        code: status.code(),
        stdout: reader.join().expect("the reader"),
        peak_rss_mb: peak_kb.trim().parse::<f64>().unwrap_or(f64::NAN) * 1024.0 / 1e6,
        stderr: stderr.lines().filter(|l| !l.starts_with("Command exited with")).collect::<Vec<_>>().join("\n"),
        seconds,
    }
}

fn rss_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(f64::NAN);
    kb * 1024.0 / 1e6
}

/// The JSON lines `list --json` writes: an array, one session per line.
fn write_sessions(path: &Path, created: &[(usize, String, String)], interval_secs: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("the file"));
    writeln!(file, "[").expect("write");
    for (n, (i, workbook, id)) in created.iter().enumerate() {
        let line = serde_json::json!({
            "name": format!("s{i:06}"), "workbook": workbook, "session_id": id, "mode": "persistent",
            "own_interval_secs": interval_secs as f64, "auto": true, "recreate": false,
        });
        writeln!(file, "{}{line}", if n == 0 { "" } else { "," }).expect("write");
    }
    writeln!(file, "]").expect("write");
}

/// Copies every stored outcome until each session has `depth` of them: as deep a history as a
/// store that has been kept a while, without hours of refreshing. The copies are real outcomes
/// the simulator gave, only repeated.
fn deepen_history(store: &Path, depth: u64) {
    let conn = rusqlite::Connection::open(store).expect("the store");
    let columns = "session, at, action, kind, latency_ms, http_status, codes, request_id, client_request_id, message";
    let tx = conn.unchecked_transaction().expect("a transaction");
    tx.execute_batch(&format!("CREATE TEMP TABLE round AS SELECT {columns} FROM outcomes")).expect("copy");
    for _ in 1..depth {
        tx.execute_batch(&format!("INSERT INTO outcomes ({columns}) SELECT {columns} FROM round")).expect("copy");
    }
    tx.commit().expect("commit");
}

struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.0).args(args).output().expect("tmux (apt-get install tmux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn main() {
    let sessions = env_number("BENCH_SESSIONS", 100_000) as usize;
    let depth = env_number("BENCH_HISTORY", 20);
    let workbooks = sessions.div_ceil(SESSIONS_PER_WORKBOOK);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = dir.path().join("scale.db");
    let config = dir.path().join("config.toml");
    // Graph's limit is 1,500 calls per 10 s per tenant; the refresh round goes as fast as allowed.
    std::fs::write(&config, "request_budget = 5000\nconcurrency = 64\n").expect("the config");

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let sim_config = SimConfig {
        token: Some(TOKEN.into()),
        workbooks: (0..workbooks).map(|i| (format!("WB{i:05}"), None)).collect(),
        ..SimConfig::default()
    };
    let sim = runtime
        .block_on(wbsessions::sim::start(sim_config, Clock::system(), "127.0.0.1:0".parse().expect("an address")))
        .expect("the simulator starts");
    let env: Vec<(&str, String)> = vec![
        ("WBSESSIONS_STORE", store.display().to_string()),
        ("WBSESSIONS_CONFIG", config.display().to_string()),
        ("WBSESSIONS_GRAPH_URL", sim.graph_url()),
        ("WBSESSIONS_TOKEN", TOKEN.into()),
        ("XDG_STATE_HOME", dir.path().join("state").display().to_string()),
        ("HOME", dir.path().display().to_string()),
    ];

    eprintln!("creating {sessions} sessions in the simulator...");
    let client = GraphClient::new(&sim.graph_url(), ClientOptions::default()).expect("a client");
    let mut created: Vec<(usize, String, String)> = runtime.block_on(
        futures_util::stream::iter(0..sessions)
            .map(|i| {
                let client = client.clone();
                async move {
                    let workbook = format!("me/drive/items/WB{:05}", i / SESSIONS_PER_WORKBOOK);
                    let parsed = WorkbookRef::parse(&workbook).expect("a ref");
                    let id = client.create_session(TOKEN, &parsed, Mode::Persistent).await.expect("create").value;
                    (i, workbook, id.as_str().to_string())
                }
            })
            .buffer_unordered(64)
            .collect(),
    );
    created.sort_by_key(|(i, ..)| *i);
    let file = dir.path().join("sessions.json");
    // Due in half an hour: nothing falls due while the dashboard is measured.
    write_sessions(&file, &created, 1800);
    drop(created);

    let import = run(&env, &["import", file.to_str().expect("a path")]);
    assert_eq!(import.code, Some(0), "import: {}", import.stderr);
    assert_eq!(import.stdout.trim(), format!("imported {sessions} sessions"));
    let again = run(&env, &["import", file.to_str().expect("a path")]);
    assert_eq!(again.code, Some(2), "a second import is refused");
    assert!(again.stderr.contains("line 2 of") && again.stderr.contains("already tracked"), "{}", again.stderr);

    eprintln!("refreshing every session once through the simulator...");
    let round = run(&env, &["refresh", "--all", "--json"]);
    let ok = round.stdout.lines().filter(|l| l.contains(r#""status":"ok""#)).count();
    assert_eq!(round.code, Some(0), "refresh --all: {}", round.stderr);
    assert_eq!(ok, sessions, "every refresh worked");
    deepen_history(&store, depth);

    let list = run(&env, &["list", "--json"]);
    assert_eq!(list.code, Some(0));
    let listed = list.stdout.lines().filter(|l| l.contains("\"session_id\"")).count();
    assert_eq!(listed, sessions, "list --json lists every session");
    let table = run(&env, &["list"]);
    assert_eq!(table.code, Some(0));
    let show = run(&env, &["show", &format!("s{:06}", sessions / 2)]);
    assert_eq!(show.code, Some(0), "{}", show.stderr);

    // The dashboard in a 200x50 terminal: how long until rows are on screen, until every session
    // is read, and what it holds once it has been open 10 s.
    let tmux = Tmux(format!("wbsessions-scale-{}", std::process::id()));
    let exports: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
    let script = format!("exec env {exports} {}", env!("CARGO_BIN_EXE_wbsessions"));
    let launched = Instant::now();
    tmux.run(&["new-session", "-d", "-s", "scale", "-x", "200", "-y", "50", &script]);
    let mut first_rows = None;
    let mut all_read = None;
    while launched.elapsed() < Duration::from_secs(60) && all_read.is_none() {
        let screen = tmux.run(&["capture-pane", "-p", "-t", "scale"]);
        if first_rows.is_none() && screen.contains("s000000") {
            first_rows = Some(launched.elapsed());
        }
        if screen.lines().nth(1).is_some_and(|l| l.starts_with(&format!("{sessions} sessions:"))) {
            all_read = Some(launched.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid: u32 = tmux.run(&["list-panes", "-t", "scale", "-F", "#{pane_pid}"]).trim().parse().expect("a pid");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(launched.elapsed()));
    let (rss_10s, peak) = (rss_mb(pid, "VmRSS:"), rss_mb(pid, "VmHWM:"));
    let (anon, file_backed) = (rss_mb(pid, "RssAnon:"), rss_mb(pid, "RssFile:"));
    let screen = tmux.run(&["capture-pane", "-p", "-t", "scale"]);
    tmux.run(&["send-keys", "-t", "scale", "q"]);
    runtime.block_on(sim.stop());

    let ms = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
    println!("scale benchmark: {sessions} sessions, {depth} outcomes each");
    println!(
        "  import                 {:.2} s, peak RSS {:.1} MB  (target <= 5 s)",
        import.seconds, import.peak_rss_mb
    );
    println!("  import again           refused in {:.2} s: {}", again.seconds, again.stderr.trim());
    println!("  refresh --all          {:.1} s ({ok} ok, request_budget 5000)", round.seconds);
    println!("  list --json            {:.2} s, peak RSS {:.1} MB  (target <= 50 MB)", list.seconds, list.peak_rss_mb);
    println!("  list                   {:.2} s, peak RSS {:.1} MB", table.seconds, table.peak_rss_mb);
    println!("  show                   {:.3} s, peak RSS {:.1} MB", show.seconds, show.peak_rss_mb);
    println!("  dashboard first rows   {}  (target <= 300 ms)", ms(first_rows));
    println!("  dashboard all read     {}", ms(all_read));
    println!(
        "  dashboard RSS at 10 s  {rss_10s:.1} MB ({anon:.1} anonymous, {file_backed:.1} file), peak {peak:.1} MB  (target <= 150 MB)"
    );
    println!("  screen at 10 s (first lines):");
    for line in screen.lines().take(6) {
        println!("    {line}");
    }
}
