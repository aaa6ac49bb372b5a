//! The dashboard idle: 100 sessions refreshed minutes ago, none due within the run, for 60 s in a real terminal (tmux).
//! Prints the frames drawn per minute and the CPU used.
//!
//!     cargo bench --bench idle          (BENCH_SECS=60 by default; needs tmux)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

use std::process::Command;
use std::time::{Duration, Instant};

use wbsessions::session::{Mode, Status, TrackedSession, WorkbookRef};

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let dir = tempfile::tempdir().expect("a folder");
    let store_path = dir.path().join("idle.db");
    let mut rows = Vec::new();
    let now = chrono::Utc::now();
    for i in 0..100 {
        let workbook = WorkbookRef::parse(&format!("me/drive/items/WB{i:03}")).expect("a ref");
        let id = wbsessions::session::SessionId::new(&format!("cluster=IDLE&session={i:0300}")).expect("an id");
        let mut s = TrackedSession::new(format!("idle-{i:03}"), workbook, id, Mode::Persistent, now);
        s.status = Status::Ok;
        // Refreshed some minutes ago, next due in an hour: the screen shows minutes only.
        s.last_refresh = Some(now - chrono::Duration::seconds(300 + 3 * i));
        s.interval = Some(Duration::from_secs(3600));
        rows.push(s);
    }
    store_sessions(&store_path, rows);
    let state = dir.path().join("state");
    let socket = format!("wbsessions-idle-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux").arg("-L").arg(&socket).args(args).output().expect("tmux (apt-get install tmux)")
    };
    let script = format!(
        "env WBSESSIONS_STORE={} WBSESSIONS_TOKEN=idle WBSESSIONS_GRAPH_URL=http://127.0.0.1:9/v1.0 XDG_STATE_HOME={} {} ; sleep 5",
        store_path.display(),
        state.display(),
        env!("CARGO_BIN_EXE_wbsessions")
    );
    tmux(&["new-session", "-d", "-s", "idle", "-x", "160", "-y", "50", &script]);
    let pid = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            let out = Command::new("pgrep")
                .args(["-f", &format!("{} *$", env!("CARGO_BIN_EXE_wbsessions"))])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse::<u32>().ok()
        })
        .expect("the dashboard started");
    std::thread::sleep(Duration::from_secs(2));
    let cpu_before = cpu_seconds(pid).expect("cpu");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds(pid).expect("cpu") - cpu_before;
    let wall = started.elapsed().as_secs_f64();
    tmux(&["send-keys", "-t", "idle", "q"]);
    std::thread::sleep(Duration::from_secs(2));
    tmux(&["kill-server"]);
    // One log file a day: every file's text, oldest first, so the newest line is last.
    let mut files: Vec<_> = std::fs::read_dir(state.join("wbsessions/logs"))
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let log: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect();
    let closed = log.lines().rev().find(|l| l.contains("dashboard closed")).unwrap_or("").to_string();
    let number =
        |key: &str| -> Option<f64> { closed.split(&format!("{key}=")).nth(1)?.split_whitespace().next()?.parse().ok() };
    let (draws, open_for) = (number("draws").unwrap_or(f64::NAN), number("seconds").unwrap_or(f64::NAN));
    println!("idle dashboard benchmark: 100 sessions, nothing due, {wall:.0} s measured");
    println!(
        "  frames drawn                 {draws:.0} in {open_for:.1} s = {:.1} per minute  (target <= 60)",
        draws * 60.0 / open_for
    );
    println!("  CPU                          {cpu:.2} s = {:.2} % of one core  (target <= 0.5 %)", 100.0 * cpu / wall);
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
