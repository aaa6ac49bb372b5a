//! The headless commands as a user runs them: the real binary against the simulator over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

fn sim_with_expiry(expiry: Duration, clock: Clock) -> SimThread {
    let config =
        SimConfig { persistent_expiry: expiry, ..sim_config(&[("W1", None), ("W2", Some("Reports/Q1.xlsx"))]) };
    SimThread::start(config, clock)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `run` in the background, its stdout collected line by line.
struct Keeper {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Keeper {
    fn start(cli: &Cli, args: &[&str]) -> Keeper {
        let mut child =
            cli.command(&[&["run"], args].concat()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Keeper { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    fn stop(mut self) -> std::process::ExitStatus {
        sigterm(&self.child);
        self.child.wait().unwrap()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn create_list_refresh_id_show() {
    let sim = sim_with_expiry(Duration::from_secs(300), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let created = cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    assert!(created.contains("created a"), "{created}");
    let shown = json(&cli.ok(&["show", "a", "--json"]));
    assert_eq!(shown["outcomes"][0]["action"], "create", "the creation is the first stored outcome: {shown}");
    assert_eq!(shown["outcomes"][0]["http_status"], 201);
    let list = json(&cli.ok(&["list", "--json"]));
    assert_eq!(list[0]["name"], "a");
    assert_eq!(list[0]["status"], "ok");
    let id = list[0]["session_id"].as_str().unwrap().to_string();
    assert!(id.len() > 200);
    assert_eq!(cli.ok(&["id", "a"]).trim_end(), id);
    let refreshed = cli.ok(&["refresh", "a"]);
    assert!(refreshed.contains(" a refresh ok 204"), "{refreshed}");
    let shown = json(&cli.ok(&["show", "a", "--json"]));
    let outcomes = shown["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0]["action"], "refresh");
    assert_eq!(outcomes[1]["action"], "create");
    assert!(outcomes[0]["latency_secs"].is_f64() && outcomes[0]["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let table = cli.ok(&["list"]);
    assert!(table.contains("a ") && table.contains("ok") && table.contains("me/drive/items/W1"), "{table}");

    // A by-path workbook is resolved to its item id once.
    cli.ok(&["create", "p", "--workbook", "/me/drive/root:/Reports/Q1.xlsx:"]);
    assert_eq!(json(&cli.ok(&["show", "p", "--json"]))["workbook"], "me/drive/items/W2");

    // The same id under a second name is refused, naming the first.
    let twice = cli.output(&["add", "again", "--workbook", "me/drive/items/W1", "--session-id", &id]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already tracked as \"a\""));
    // Tracking an existing id, then removing it, leaves the session itself alone.
    let other = sim.sim.open_session("W1");
    cli.ok(&["add", "again", "--workbook", "me/drive/items/W1", "--session-id", &other]);
    let removed = cli.ok(&["remove", "again"]);
    assert!(removed.contains("stays open at Graph"), "{removed}");
    cli.ok(&["refresh", "a"]);
    assert!(cli.ok(&["completions", "bash"]).contains("wbsessions"));
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    let sim = sim_with_expiry(Duration::from_secs(300), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    let before = sim.sim.stats().requests;
    for args in [
        &["create", "a", "--workbook", "me/drive/items/W1"][..],
        &["create", "b", "--workbook", "nonsense"],
        &["create", "a b", "--workbook", "me/drive/items/W1"],
        &["create", "c", "--workbook", "me/drive/items/W1", "--interval", "soon"],
        &["add", "d", "--workbook", "me/drive/items/W1", "--session-id", " "],
        &["refresh", "a", "nope"],
        &["remove", "a", "nope"],
        &["show", "nope"],
        &["id", "nope"],
    ] {
        let out = cli.output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // One line of ours, or clap's line plus its pointer to --help.
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() == 1 || (lines.len() == 2 && lines[1].contains("--help")), "{args:?} printed {stderr}");
    }
    assert_eq!(sim.sim.stats().requests, before, "bad input sent nothing");
    assert_eq!(json(&cli.ok(&["list", "--json"])).as_array().unwrap().len(), 1);

    let insecure =
        cli.command(&["refresh", "a"]).env("WBSESSIONS_GRAPH_URL", "http://graph.example/v1.0").output().unwrap();
    assert_eq!(insecure.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&insecure.stderr).contains("https://"));
}

#[test]
fn a_corrupt_store_is_refused_by_every_command_and_left_unchanged() {
    let sim = sim_with_expiry(Duration::from_secs(300), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&cli.store, &garbage).unwrap();
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["show", "a"],
        &["id", "a"],
        &["refresh", "--all"],
        &["refresh", "a"],
        &["close", "a"],
        &["remove", "a"],
        &["run"],
        &["add", "a", "--workbook", "me/drive/items/W1", "--session-id", "S"],
        &["create", "a", "--workbook", "me/drive/items/W1"],
    ] {
        let out = cli.output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&cli.store.display().to_string()), "{stderr}");
    }
    assert_eq!(std::fs::read(&cli.store).unwrap(), garbage);
    assert_eq!(sim.sim.stats().requests, 0);
}

#[test]
fn run_keeps_sessions_alive_past_their_expiry_and_stops_on_sigterm() {
    let sim = sim_with_expiry(Duration::from_millis(1500), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    let keeper = Keeper::start(&cli, &["--json"]);
    // Three refreshes about a second apart outlast the 1.5 s expiry twice over.
    wait_for("three refreshes", Duration::from_secs(10), || keeper.count("\"refresh\"") >= 3);
    let lines = keeper.lines.clone();
    assert_eq!(keeper.stop().code(), Some(0));
    for line in lines.lock().unwrap().iter() {
        let line = json(line);
        assert_eq!((line["session"].as_str(), line["status"].as_str()), (Some("a"), Some("ok")), "{line}");
        assert!(line["late_secs"].as_f64().is_some_and(|l| l < 1.0), "{line}");
    }
    let out = cli.output(&["refresh", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = json(&cli.ok(&["show", "a", "--json"]));
    let outcomes = shown["outcomes"].as_array().unwrap();
    assert!(outcomes.len() >= 4, "every refresh of the keeper was stored");
    assert!(outcomes.iter().all(|o| o["status"] == "ok"));
}

#[test]
fn expired_sessions_are_reported_or_recreated_as_allowed() {
    let clock = Clock::manual(chrono::Utc::now());
    let sim = sim_with_expiry(Duration::from_secs(3), clock.clone());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    cli.ok(&["create", "b", "--workbook", "me/drive/items/W1", "--interval", "1s", "--recreate"]);
    let old_b = cli.ok(&["id", "b"]);
    clock.advance(Duration::from_secs(5));

    let out = cli.output(&["refresh", "a"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refresh expired 404") && stdout.contains("invalidSessionReCreatable"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));

    let keeper = Keeper::start(&cli, &[]);
    // `--any`: between finding it expired and recreating it, the keeper has it stored as expired.
    wait_for("b to get a new id", Duration::from_secs(20), || cli.ok(&["id", "b", "--any"]) != old_b);
    let shown = json(&cli.ok(&["show", "b", "--json"]));
    assert_eq!(shown["status"], "ok");
    let kinds: Vec<(&str, &str)> = shown["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|o| (o["action"].as_str().unwrap(), o["status"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("create", "ok"), ("refresh", "expired")]);
    // `a` may not be recreated: it stays expired and the keeper leaves it alone.
    assert_eq!(json(&cli.ok(&["show", "a", "--json"]))["status"], "expired");
    assert_eq!(keeper.stop().code(), Some(0));
}

#[test]
fn one_driver_per_store_and_it_picks_up_sessions_added_elsewhere() {
    let sim = sim_with_expiry(Duration::from_secs(300), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1m"]);
    let keeper = Keeper::start(&cli, &[]);
    wait_for("the lock", Duration::from_secs(5), || common::driver_pid(&cli.store).is_some());

    // Another driver is no usage error: exit 1, and the way to wait for a turn.
    let second = cli.output(&["run"]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains(&format!("pid {}", keeper.child.id())) && stderr.contains("--wait"), "{stderr}");

    let id = sim.sim.open_session("W1");
    cli.ok(&["add", "late", "--workbook", "me/drive/items/W1", "--session-id", &id, "--interval", "1m"]);
    // A newly tracked session is checked at once; the keeper must notice it within a second or so.
    wait_for("the keeper to refresh `late`", Duration::from_secs(3), || keeper.count(" late refresh ok") >= 1);
    cli.ok(&["remove", "late"]);
    assert_eq!(keeper.stop().code(), Some(0));
    assert!(common::driver_pid(&cli.store).is_none(), "the lock is released");
}

#[test]
fn killed_at_any_moment_nothing_acknowledged_is_lost() {
    let sim = sim_with_expiry(Duration::from_secs(300), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "seed", "--workbook", "me/drive/items/W1"]);
    // Kill within the time a whole command takes here, so that most kills land mid-way.
    let started = std::time::Instant::now();
    cli.ok(&["add", "calibrate", "--workbook", "me/drive/items/W1", "--session-id", &sim.sim.open_session("W1")]);
    let typical = started.elapsed().as_micros() as u64;
    let mut acknowledged = vec!["seed".to_string(), "calibrate".to_string()];
    let mut rng = fastrand::Rng::with_seed(42);
    let mut kills = 0;
    for round in 0..40 {
        let name = format!("s{round}");
        let id = sim.sim.open_session("W1");
        let args: Vec<&str> = if round % 3 == 2 {
            vec!["refresh", "--all"]
        } else {
            vec!["add", &name, "--workbook", "me/drive/items/W1", "--session-id", &id]
        };
        let mut child = cli.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.u64(0..typical)));
        let finished = child.try_wait().unwrap();
        if finished.is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        if status.success() && args[0] == "add" {
            assert!(stdout.contains("tracking"), "{stdout}");
            acknowledged.push(name);
        }
        let (sessions, histories) = common::block_on(async {
            let location = wbsessions::store::Location::Sqlite(cli.store.clone());
            let store = wbsessions::store::open(&location, wbsessions::store::Access::Write)
                .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"))
                .sessions;
            let sessions = store.sessions().await.unwrap();
            let mut histories = Vec::new();
            for s in &sessions {
                histories.push(store.history(s.key, 100).await.unwrap().len());
            }
            store.close().await;
            (sessions, histories)
        });
        let names: Vec<&str> = sessions.iter().map(|s| s.name.as_str()).collect();
        for name in &acknowledged {
            assert!(names.contains(&name.as_str()), "round {round}: acknowledged {name} is missing");
        }
        assert!(histories.iter().all(|n| *n <= 50));
    }
    assert!(kills >= 10, "only {kills} processes were killed mid-way; the test proves little");
}

/// A simulator whose `$batch` behaves as `mode`, with twelve sessions on workbooks of their own
/// that idle out after 3 s, imported into a store of their own.
fn batch_rig(mode: wbsessions::sim::SimBatch) -> (SimThread, tempfile::TempDir, Cli) {
    let workbooks: Vec<String> = (0..12).map(|i| format!("B{i:02}")).collect();
    let config = SimConfig {
        persistent_expiry: Duration::from_secs(3),
        batch: mode,
        ..sim_config(&workbooks.iter().map(|w| (w.as_str(), None)).collect::<Vec<_>>())
    };
    let sim = SimThread::start(config, Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.config("persistent_expiry = \"3s\"\n");
    let lines: Vec<String> =
        workbooks.iter().map(|w| format!("{w},me/drive/items/{w},{},1s", sim.sim.open_session(w))).collect();
    let file = dir.path().join("sessions.csv");
    std::fs::write(&file, format!("name,workbook,session_id,interval\n{}\n", lines.join("\n"))).unwrap();
    cli.ok(&["import", file.to_str().unwrap()]);
    (sim, dir, cli)
}

/// `run` until its stderr says one of `until` (15 s at most), then `then` longer; its stderr.
fn keep_until(cli: &Cli, until: &[&str], then: Duration) -> String {
    let mut child = cli.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let text = stderr.lock().unwrap().clone();
        if until.iter().any(|u| text.contains(u)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(then);
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    stderr.lock().unwrap().clone()
}

fn statuses(cli: &Cli) -> Vec<String> {
    json(&cli.ok(&["list", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect()
}

/// `run` against a simulator whose `$batch` behaves as `mode` (`batch_rig`) until batching is
/// decided, and an expiry longer; returns the keeper's stderr, the simulator's count of batch
/// requests, and the sessions' statuses at the end.
fn keep_with_batch(mode: wbsessions::sim::SimBatch) -> (String, u64, Vec<String>) {
    let (sim, _dir, cli) = batch_rig(mode);
    // The canary needs its 3 s expiry and a tenth more on batches alone before all are batched;
    // then longer than an expiry: every session must come through it alive.
    let said = keep_until(&cli, &["per request from now on", "one request per session"], Duration::from_secs(4));
    (said, sim.sim.stats().batches, statuses(&cli))
}

/// What one keeper learned of `$batch` is kept in the store: the next one starts from it,
/// batching at once without a probe or a canary.
#[test]
fn the_next_keeper_starts_from_what_the_last_one_learned_of_batch() {
    let (sim, _dir, cli) = batch_rig(wbsessions::sim::SimBatch::Honoured);
    let first = keep_until(&cli, &["per request from now on"], Duration::ZERO);
    assert!(first.contains("per request from now on"), "{first}");
    let batches = sim.sim.stats().batches;
    let second = keep_until(&cli, &["as a process on this store found"], Duration::from_secs(2));
    assert!(second.contains("$batch refreshes keep sessions alive, as a process on this store found at"), "{second}");
    assert!(!second.contains("Graph reads the session header"), "no probe again: {second}");
    // Twelve sessions due every second, in batches from the start: far fewer batches than calls.
    assert!(sim.sim.stats().batches > batches, "it batched");
    assert!(statuses(&cli).iter().all(|s| s == "ok"), "{second}");
}

#[test]
fn the_keeper_batches_refreshes_only_once_graph_has_shown_that_it_works() {
    let (said, batches, statuses) = keep_with_batch(wbsessions::sim::SimBatch::Honoured);
    assert!(said.contains("Graph reads the session header inside $batch"), "{said}");
    assert!(said.contains("refreshing up to 20 sessions per request from now on"), "{said}");
    assert!(batches >= 8, "{batches} batches");
    assert!(statuses.iter().all(|s| s == "ok"), "{statuses:?}\n{said}");

    let (said, batches, statuses) = keep_with_batch(wbsessions::sim::SimBatch::Ignored);
    assert!(said.contains("Graph ignores the session header inside $batch"), "{said}");
    assert_eq!(batches, 1, "the probe alone");
    assert!(statuses.iter().all(|s| s == "ok"), "{statuses:?}\n{said}");

    let (said, batches, statuses) = keep_with_batch(wbsessions::sim::SimBatch::Missing);
    assert!(said.contains("$batch is not available"), "{said}");
    assert_eq!(batches, 0);
    assert!(statuses.iter().all(|s| s == "ok"), "{statuses:?}\n{said}");
}

/// Many failures of one kind are said once in full and then by name, not a line each: the
/// stderr of a bulk run stays readable.
#[test]
fn many_alike_failures_are_said_once_and_counted() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    for i in 0..8 {
        cli.ok(&["add", &format!("gone{i}"), "--workbook", "me/drive/items/W1", "--session-id", &format!("X-{i}")]);
    }
    let out = cli.output(&["refresh", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with("wbsessions: gone0: refresh failed: session expired"), "{stderr}");
    assert_eq!(lines[1], "wbsessions: 7 more expired, alike: gone1, gone2, gone3, gone4, gone5 and 2 more");
    assert_eq!(lines[2], "wbsessions: 8 refreshed: 0 ok, 8 expired");
}

/// Ctrl-C stops a keeper as a shell reports an interrupt (130); a service manager's SIGTERM
/// is a planned stop (0).
#[test]
fn ctrl_c_stops_the_keeper_with_130_and_sigterm_with_0() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 0)] {
        let mut keeper = Keeper::start(&cli, &[]);
        wait_for("the keeper to drive", Duration::from_secs(10), || driver_pid(&cli.store).is_some());
        // SAFETY: signalling our own child.
        unsafe { libc::kill(keeper.child.id() as i32, signal) };
        assert_eq!(keeper.child.wait().unwrap().code(), Some(code), "signal {signal}");
        wait_for("the role to be free", Duration::from_secs(10), || driver_pid(&cli.store).is_none());
    }
}
