//! The store on PostgreSQL, as people use it: the real binary with `--store postgres://…`
//! against the simulator, each test on a database of its own (`common::pg`). Without
//! `WBSESSIONS_TEST_POSTGRES` each test says SKIPPED and passes; `.ci/run` sets it and fails on
//! a skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::pg::{Relay, TestPg};
use common::*;
use wbsessions::time::Clock;

fn cli_on(sim_url: &str, dir: &std::path::Path, store: &str) -> Cli {
    Cli { store: store.into(), ..Cli::new(sim_url, dir) }
}

#[test]
fn every_command_works_on_postgres_as_on_sqlite() {
    let Some(pg) = TestPg::new("PostgreSQL store") else { return };
    let sim = SimThread::start(sim_config(&[("W1", None), ("W2", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = cli_on(&sim.url, dir.path(), &pg.url);
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    let id = sim.sim.open_session("W2");
    cli.ok(&["add", "b", "--workbook", "me/drive/items/W2", "--session-id", &id]);
    let listed = cli.ok(&["list"]);
    assert!(listed.contains('a') && listed.contains('b'), "{listed}");
    cli.ok(&["refresh", "a"]);
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "a", "--json"])).unwrap();
    assert_eq!(shown["status"], "ok", "{shown}");
    let actions: Vec<&str> =
        shown["outcomes"].as_array().unwrap().iter().filter_map(|o| o["action"].as_str()).collect();
    assert!(actions.contains(&"refresh") && actions.contains(&"create"), "{shown}");
    assert_eq!(cli.ok(&["id", "b", "--any"]).trim(), id);
    cli.ok(&["remove", "b"]);
    assert!(!cli.ok(&["list"]).contains(" b "), "removed");
    // A name taken is refused with the same words as on SQLite, and changes nothing.
    let taken = cli.output(&["add", "a", "--workbook", "me/drive/items/W2", "--session-id", "other-id"]);
    assert_eq!(taken.status.code(), Some(2), "{}", String::from_utf8_lossy(&taken.stderr));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already tracked"));

    // Import, and what another process wrote is seen by the next command.
    let lines: Vec<String> = (0..50)
        .map(|i| {
            serde_json::json!({ "name": format!("i{i:02}"), "workbook": "me/drive/items/W1", "session_id": format!("imported-{i}") })
                .to_string()
        })
        .collect();
    let file = dir.path().join("sessions.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    cli.ok(&["import", file.to_str().unwrap()]);
    let listed: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "list"])).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(51), "{listed}");
}

#[test]
fn the_password_of_the_url_appears_nowhere() {
    let Some(pg) = TestPg::new("PostgreSQL store") else { return };
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    // The test server trusts loopback, so any password gets in: this one must never be shown.
    let secret = "hunter2-never-shown";
    let with_password = pg.url.replacen("://", &format!("://postgres:{secret}@"), 1).replacen("postgres@", "", 1);
    assert!(with_password.contains(secret), "{with_password}");
    let cli = cli_on(&sim.url, dir.path(), &with_password);
    let log = dir.path().join("wbs.log");
    let mut seen = String::new();
    for args in [
        vec!["-vv", "--log", log.to_str().unwrap(), "create", "a", "--workbook", "me/drive/items/W1"],
        vec!["list"],
        vec!["show", "a"],
        vec!["show", "nosuch"],
        vec!["doctor"],
    ] {
        let out = cli.output(&args);
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // A database that does not exist, and a URL that cannot be read: the errors name the URL.
    for bad in [
        with_password.replace(&pg.name, "no_such_database"),
        with_password.replace("sslmode", "x") + "?sslmode=sometimes",
    ] {
        let out = cli_on(&sim.url, dir.path(), &bad).output(&["list"]);
        assert_ne!(out.status.code(), Some(0));
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(said.contains("postgres://"), "the store is named: {said}");
        seen.push_str(&said);
    }
    seen.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
    assert!(!seen.is_empty());
    assert!(!seen.contains(secret), "the password was shown:\n{seen}");
}

#[test]
fn a_newer_schema_is_refused_and_left_as_it_is() {
    let Some(pg) = TestPg::new("PostgreSQL store") else { return };
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = cli_on(&sim.url, dir.path(), &pg.url);
    let id = sim.sim.open_session("W1");
    cli.ok(&["add", "a", "--workbook", "me/drive/items/W1", "--session-id", &id]);
    let mut client = pg.client();
    client.execute("UPDATE wbs_meta SET value = 99 WHERE key = 'schema'", &[]).unwrap();
    let out = cli.output(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer"), "{}", String::from_utf8_lossy(&out.stderr));
    let version: i64 = client.query_one("SELECT value FROM wbs_meta WHERE key = 'schema'", &[]).unwrap().get(0);
    assert_eq!(version, 99, "left as it was");
    // A version taken out by hand: damaged, and nothing is created over it.
    client.execute("DELETE FROM wbs_meta WHERE key = 'schema'", &[]).unwrap();
    let out = cli.output(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no schema version"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A database with no store in it is not created by a command that only reads.
    let empty = TestPg::new("PostgreSQL store").unwrap();
    let out = cli_on(&sim.url, dir.path(), &empty.url).output(&["list"]);
    assert_ne!(out.status.code(), Some(0));
    let tables: i64 = empty
        .client()
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'wbs_%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

/// Keepers on one database share its workbooks; one killed has its workbooks taken over by the
/// others within the lease, and `keepers --json` lists who is alive.
#[test]
fn keepers_share_the_workbooks_and_take_over_from_one_that_is_killed() {
    let Some(pg) = TestPg::new("PostgreSQL store") else { return };
    let six = SixWorkbooks::on(&pg);
    let (cli, keepers, start) = (&six.cli, || six.keepers(), || six.start());
    let mut first = start();
    wait_for("the first keeper", Duration::from_secs(15), || keepers().len() == 1);
    let mut second = start();
    wait_for("two keepers, three workbooks each", Duration::from_secs(15), || {
        let live = keepers();
        live.len() == 2 && live.iter().all(|k| k["workbooks"] == 3 && k["sessions"] == 3)
    });
    let last_refresh = |name: &str| -> String {
        let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", name, "--json"])).unwrap();
        shown["last_refresh"].as_str().unwrap_or_default().to_string()
    };
    let first_pid = first.id();
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = std::time::Instant::now();
    let before: Vec<String> = (0..6).map(|i| last_refresh(&format!("s{i}"))).collect();
    // Within the lease and a few seconds more, every session is refreshed again, the killed
    // keeper's too, and it is no longer listed.
    wait_for("every session refreshed after the kill", Duration::from_secs(8), || {
        (0..6).all(|i| last_refresh(&format!("s{i}")) > before[i])
    });
    assert!(killed.elapsed() <= Duration::from_secs(8), "{:?}", killed.elapsed());
    wait_for("the killed keeper gone from the list", Duration::from_secs(5), || {
        let live = keepers();
        live.len() == 1 && live[0]["pid"] != first_pid && live[0]["workbooks"] == 6
    });
    // Each session names whose sign-in it is (the simulator's /me), the keepers theirs, and
    // `show --json` the keeper that made each call: the survivor, for every newest refresh.
    assert_eq!(keepers()[0]["owner"], "user@sim.example");
    let survivor = format!(":{}", second.id());
    for i in 0..6 {
        let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", &format!("s{i}"), "--json"])).unwrap();
        assert_eq!(shown["owner"], "user@sim.example", "{shown}");
        let newest = shown["outcomes"].as_array().unwrap().iter().find(|o| o["action"] == "refresh").unwrap();
        assert!(newest["by"].as_str().unwrap_or_default().ends_with(&survivor), "{newest} by {survivor}");
    }
    second.kill().unwrap();
    second.wait().unwrap();
}

/// The connection to the database cut under a keeper: it goes on refreshing what it holds,
/// keeps its outcomes, connects again by itself, and afterwards every refresh Graph saw is in
/// the store.
#[test]
fn a_keeper_cut_off_from_the_database_keeps_refreshing_and_loses_no_outcome() {
    let Some(pg) = TestPg::new("PostgreSQL store") else { return };
    let relay = Relay::to(&pg.server());
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let direct = cli_on(&sim.url, dir.path(), &pg.url);
    direct.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    let cli = cli_on(&sim.url, dir.path(), &relay_url(&pg, &relay));
    let keeper =
        cli.command(&["run"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let refreshes = || -> usize {
        let shown: serde_json::Value = serde_json::from_str(&direct.ok(&["show", "a", "--json"])).unwrap();
        shown["outcomes"].as_array().unwrap().iter().filter(|o| o["action"] == "refresh").count()
    };
    wait_for("a refresh in the store", Duration::from_secs(15), || refreshes() >= 1);
    relay.cut();
    let during = sim.sim.stats().refreshed;
    wait_for("refreshes while the database is away", Duration::from_secs(15), || {
        sim.sim.stats().refreshed >= during + 4
    });
    relay.restore();
    let stored = refreshes();
    wait_for("the kept refreshes written", Duration::from_secs(30), || refreshes() > stored + 3);
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(libc::pid_t::try_from(keeper.id()).unwrap(), libc::SIGTERM) }, 0);
    let out = keeper.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("postgres://"), "the outage was said: {said}");
    let seen = usize::try_from(sim.sim.stats().refreshed).unwrap();
    assert!(seen < 50, "within the outcomes kept per session");
    let shown: serde_json::Value = serde_json::from_str(&direct.ok(&["show", "a", "--json"])).unwrap();
    let ok = shown["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "refresh" && o["status"] == "ok")
        .count();
    assert_eq!(ok, seen, "every refresh Graph saw is in the store: {shown}");
}

fn relay_url(pg: &TestPg, relay: &Relay) -> String {
    pg.url_via(relay)
}

/// A watcher on PostgreSQL is woken by the database (`LISTEN`/`NOTIFY`) rather than polling:
/// idle, it sends next to nothing; a change from another connection reaches it at once.
#[test]
fn a_watcher_is_woken_by_the_database_instead_of_polling() {
    let Some(pg) = TestPg::new("PostgreSQL store") else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let location = wbsessions::store::Location::parse(&pg.url).unwrap();
    let watcher = wbsessions::store::open(&location, wbsessions::store::Access::Write).unwrap().sessions;
    let writer = wbsessions::store::open(&location, wbsessions::store::Access::Write).unwrap().sessions;
    let rev = runtime.block_on(watcher.rev()).unwrap();
    let mut events = watcher.watch(rev);
    // What the database commits, every connection together: a watcher polling four times a
    // second commits four transactions a second.
    let mut stats = pg.client();
    let mut commits = || -> i64 {
        stats
            .query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()", &[])
            .unwrap()
            .get(0)
    };
    // Polling would commit sixteen in four seconds; listening, the store's look every 5 s and
    // these two queries, with room for the statistics' own delay under load.
    wait_for("a quiet watcher", Duration::from_secs(40), || {
        let before = commits();
        std::thread::sleep(Duration::from_secs(4));
        commits() - before <= 6
    });
    let session = wbsessions::session::TrackedSession::new(
        "woken".into(),
        wbsessions::session::WorkbookRef::parse("me/drive/items/W1").unwrap(),
        wbsessions::session::SessionId::new("woken-id").unwrap(),
        wbsessions::session::Mode::Persistent,
        chrono::Utc::now(),
    );
    let written = std::time::Instant::now();
    runtime.block_on(writer.insert(session, Vec::new())).unwrap();
    let heard = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                match events.recv().await {
                    Some(wbsessions::store::StoreEvent::Changed(changes))
                        if changes.sessions.iter().any(|s| s.name == "woken") =>
                    {
                        return true;
                    }
                    Some(_) => continue,
                    None => return false,
                }
            }
        })
        .await
    });
    assert_eq!(heard, Ok(true), "the change reached the watcher before its next poll (5 s)");
    assert!(written.elapsed() < Duration::from_secs(4));
    runtime.block_on(async {
        watcher.close().await;
        writer.close().await;
    });
}

/// A keeper stopped (`SIGSTOP`) past its lease sends nothing of its own when it runs again,
/// until its next turn says what is still its own: the other keeper took its workbooks.
#[test]
fn a_keeper_stopped_past_its_lease_sends_nothing_of_its_own_when_it_runs_again() {
    let Some(pg) = TestPg::new("PostgreSQL store") else { return };
    let six = SixWorkbooks::on(&pg);
    let (cli, keepers, start) = (&six.cli, || six.keepers(), || six.start());
    let mut stopped = start();
    wait_for("the first keeper", Duration::from_secs(15), || keepers().len() == 1);
    let mut other = start();
    wait_for("two keepers, three workbooks each", Duration::from_secs(15), || {
        let live = keepers();
        live.len() == 2 && live.iter().all(|k| k["workbooks"] == 3)
    });
    let pid = libc::pid_t::try_from(stopped.id()).unwrap();
    // SAFETY: signals to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_for("the other keeper holding all six", Duration::from_secs(15), || {
        let live = keepers();
        live.len() == 1 && live[0]["workbooks"] == 6
    });
    // Long enough for every session to fall due for the stopped keeper.
    std::thread::sleep(Duration::from_secs(2));
    let resumed = chrono::Utc::now();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let by_stopped = format!(":{}", stopped.id());
    wait_for("both keepers again", Duration::from_secs(15), || keepers().len() == 2);
    let mut early = Vec::new();
    for i in 0..6 {
        let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", &format!("s{i}"), "--json"])).unwrap();
        for o in shown["outcomes"].as_array().unwrap() {
            let at = chrono::DateTime::parse_from_rfc3339(o["at"].as_str().unwrap()).unwrap();
            let after = at.signed_duration_since(resumed);
            if o["by"].as_str().unwrap_or_default().ends_with(&by_stopped)
                && after >= chrono::TimeDelta::zero()
                && after < chrono::TimeDelta::milliseconds(500)
            {
                early.push(o.clone());
            }
        }
    }
    assert!(early.is_empty(), "refreshes sent before its turn, on workbooks another keeper held: {early:?}");
    stopped.kill().unwrap();
    stopped.wait().unwrap();
    other.kill().unwrap();
    other.wait().unwrap();
}

/// Six sessions on six workbooks of their own, refreshed every second, on a PostgreSQL store
/// whose keepers hold leases of 3 s.
struct SixWorkbooks {
    _sim: SimThread,
    _dir: tempfile::TempDir,
    cli: Cli,
}

impl SixWorkbooks {
    fn on(pg: &TestPg) -> SixWorkbooks {
        let workbooks: Vec<(String, Option<String>)> = (0..6).map(|i| (format!("W{i}"), None)).collect();
        let sim = SimThread::start(wbsessions::sim::SimConfig { workbooks, ..sim_config(&[]) }, Clock::system());
        let dir = tempfile::tempdir().unwrap();
        let cli = cli_on(&sim.url, dir.path(), &pg.url);
        cli.config("keeper_lease = \"3s\"\n");
        for i in 0..6 {
            cli.ok(&["create", &format!("s{i}"), "--workbook", &format!("me/drive/items/W{i}"), "--interval", "1s"]);
        }
        SixWorkbooks { _sim: sim, _dir: dir, cli }
    }

    /// `keepers --json`.
    fn keepers(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.cli.ok(&["--json", "keepers"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// A keeper (`run`), quiet.
    fn start(&self) -> std::process::Child {
        self.cli.command(&["run"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }
}
