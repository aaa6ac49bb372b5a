//! The binary beside itself and among other users' files: several writers and a keeper on one
//! store, private files, planted symlinks, read-only stores, tokens on standard input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

fn sim() -> SimThread {
    SimThread::start(sim_config(&[("W1", None), ("W2", None), ("W3", None), ("W4", None)]), Clock::system())
}

#[test]
fn four_writers_and_a_keeper_share_one_store_without_a_lock_error() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "seed", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    let mut keeper = cli.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the keeper's lock", Duration::from_secs(5), || common::driver_pid(&cli.store).is_some());
    let ids: Vec<Vec<String>> = (0..4).map(|_| (0..50).map(|_| sim.sim.open_session("W2")).collect()).collect();
    let writers: Vec<_> = ids
        .into_iter()
        .enumerate()
        .map(|(w, ids)| {
            let cli = Cli::new(&cli.graph_url, dir.path());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let name = format!("w{w}-{i}");
                    let out = cli.output(&[
                        "add",
                        &name,
                        "--workbook",
                        "me/drive/items/W2",
                        "--session-id",
                        id,
                        "--interval",
                        "1m",
                    ]);
                    if !out.status.success() {
                        failures.push(format!("{name}: {}", String::from_utf8_lossy(&out.stderr)));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    sigterm(&keeper);
    assert!(keeper.wait().unwrap().success());
    assert!(failures.is_empty(), "{} failed, first: {:?}", failures.len(), failures.first());
    let list: serde_json::Value = serde_json::from_str(&cli.ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 201);
}

#[test]
fn parallel_creates_leave_nothing_open_that_nothing_tracks() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let loops: Vec<_> = (0..4)
        .map(|l| {
            let cli = Cli::new(&cli.graph_url, dir.path());
            std::thread::spawn(move || {
                for i in 0..10 {
                    let out = cli.output(&[
                        "create",
                        &format!("c{l}-{i}"),
                        "--workbook",
                        &format!("me/drive/items/W{}", l + 1),
                    ]);
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                }
            })
        })
        .collect();
    for l in loops {
        l.join().unwrap();
    }
    let tracked =
        serde_json::from_str::<serde_json::Value>(&cli.ok(&["list", "--json"])).unwrap().as_array().unwrap().len();
    let stats = sim.sim.stats();
    assert_eq!(stats.created, tracked as u64 + stats.closed, "every session created is tracked or was closed again");
}

#[cfg(unix)]
#[test]
fn the_store_and_the_log_are_private_and_no_file_beside_the_store_is_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    // A permissive umask must not matter.
    let out = cli
        .shell(&format!("umask 000; '{}' create a --workbook me/drive/items/W1", env!("CARGO_BIN_EXE_wbsessions")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cli.store), 0o600);
    let logs = cli.home.join("state/wbsessions/logs");
    assert_eq!(mode(&logs), 0o700);
    for log in std::fs::read_dir(&logs).unwrap().flatten() {
        assert_eq!(mode(&log.path()), 0o600, "{}", log.path().display());
    }

    // The driver role lives in the store itself: a link planted where a lock file once was is
    // never opened, and its target stays as it was.
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    let lock = cli.store.with_file_name(format!("{}.lock", cli.store.file_name().unwrap().to_string_lossy()));
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let mut keeper = cli.command(&["run"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for("the keeper to drive", Duration::from_secs(10), || driver_pid(&cli.store).is_some());
    sigterm(&keeper);
    assert!(keeper.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me", "the link's target is untouched");
}

#[cfg(unix)]
#[test]
fn one_driver_whatever_path_or_link_reaches_the_store() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    let mut first = cli.command(&["run"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for("the first keeper to drive", Duration::from_secs(10), || driver_pid(&cli.store).is_some());
    let symlink = dir.path().join("link.db");
    std::os::unix::fs::symlink(&cli.store, &symlink).unwrap();
    std::fs::create_dir(dir.path().join("up")).unwrap();
    let dotted = dir.path().join("up/../sessions.db");
    for other in [&symlink, &dotted] {
        let out = cli.output(&["--store", other.to_str().unwrap(), "run"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", other.display());
        assert!(stderr.contains("already drives the store"), "{stderr}");
    }
    // No lock file to delete: the role is in the store.
    let _ = std::fs::remove_file(cli.store.with_file_name("sessions.db.lock"));
    let out = cli.output(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    // `run --wait` waits for its turn, and drives once the first is gone.
    let mut waiting = cli.command(&["run", "--wait"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(driver_pid(&cli.store), Some(first.id()), "the first still drives");
    // A second name for the file is refused outright: SQLite would keep a log of its own for it.
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(&cli.store, &hard).unwrap();
    let out = cli.output(&["--store", hard.to_str().unwrap(), "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2 names (hard links)"), "{stderr}");
    std::fs::remove_file(&hard).unwrap();
    sigterm(&first);
    assert!(first.wait().unwrap().success());
    wait_for("the waiting keeper to drive", Duration::from_secs(10), || driver_pid(&cli.store) == Some(waiting.id()));
    sigterm(&waiting);
    assert!(waiting.wait().unwrap().success());
}

#[cfg(unix)]
#[test]
fn a_stopped_driver_is_replaced_and_steps_down_when_it_wakes() {
    use std::io::{BufRead, BufReader};
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    let mut first =
        cli.command(&["run"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = said.clone();
    let stderr = first.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    wait_for("the first keeper to drive", Duration::from_secs(10), || driver_pid(&cli.store) == Some(first.id()));
    let signal = |name: &str, pid: u32| {
        assert!(std::process::Command::new("kill").args([name, &pid.to_string()]).status().unwrap().success());
    };
    signal("-STOP", first.id());
    let stopped = std::time::Instant::now();
    let mut second = None;
    wait_for("another keeper to take over", Duration::from_secs(15), || {
        let child = cli
            .command(&["run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let took = driver_pid(&cli.store) == Some(child.id());
        if took {
            second = Some(child);
        } else {
            let mut child = child;
            let _ = child.wait();
        }
        took
    });
    assert!(stopped.elapsed() < Duration::from_secs(10), "taken over within 10 s: {:?}", stopped.elapsed());
    signal("-CONT", first.id());
    wait_for("the woken keeper to step down", Duration::from_secs(10), || {
        said.lock().unwrap().iter().any(|l| l.contains("drives the store now") && l.contains("watches"))
    });
    let mut second = second.unwrap();
    assert_eq!(driver_pid(&cli.store), Some(second.id()), "the new driver keeps the role");
    sigterm(&second);
    assert!(second.wait().unwrap().success());
    sigterm(&first);
    assert!(first.wait().unwrap().success());
}

#[cfg(unix)]
#[test]
fn a_loose_token_cache_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let cache = cli.home.join("data/wbsessions/token.json");
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    std::fs::write(&cache, "{}").unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli.command(&["whoami"]).env_remove("WBSESSIONS_TOKEN").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600") && stderr.lines().count() == 1, "{stderr}");
}

#[test]
fn bad_urls_and_refs_are_refused_before_anything_is_sent() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let userinfo = sim.url.replace("http://", "http://user:pass@");
    let out = cli
        .command(&["create", "a", "--workbook", "me/drive/items/W1"])
        .env("WBSESSIONS_GRAPH_URL", &userinfo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user name or password"));
    let out = cli.output(&["create", "a", "--workbook", "me/drive/items/.."]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(sim.sim.stats().requests, 0);
}

#[test]
fn a_token_can_come_from_standard_input() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let mut child = cli
        .command(&["--token", "-", "create", "a", "--workbook", "me/drive/items/W1"])
        .env_remove("WBSESSIONS_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{TOKEN}\n").as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// As a user who may read the store but not write it (root is not such a user, so the test
/// drops to `nobody` where it runs as root).
#[cfg(unix)]
#[test]
fn a_read_only_store_is_read_and_a_write_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let sim = sim();
    let dir = tempfile::Builder::new().prefix("wbs-ro").tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cli.store, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        std::fs::set_permissions(&cli.store, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let as_reader = |args: &[&str]| {
        let bin = env!("CARGO_BIN_EXE_wbsessions");
        let mut command = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        } else {
            std::process::Command::new(bin)
        };
        // The reader's own home: nobody may write the test's.
        let home = std::env::temp_dir().join(format!("wbs-ro-home-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join("state"))
            .env("WBSESSIONS_STORE", &cli.store)
            .env("WBSESSIONS_TOKEN", TOKEN)
            .env("WBSESSIONS_GRAPH_URL", &cli.graph_url);
        command.output().unwrap()
    };
    if root && std::process::Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("setpriv is missing: the read-only store check needs a user other than root");
        return;
    }
    // The folder must be reachable by the reader.
    let mut ancestor = dir.path().parent();
    while let Some(p) = ancestor {
        if std::fs::metadata(p).map(|m| m.permissions().mode() & 0o001 == 0).unwrap_or(false) {
            eprintln!("{} is not reachable by another user: skipping", p.display());
            return;
        }
        ancestor = p.parent();
    }
    let listed = as_reader(&["list"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("me/drive/items/W1"));
    let written = as_reader(&["add", "b", "--workbook", "me/drive/items/W1", "--session-id", "S"]);
    assert_eq!(written.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&written.stderr);
    assert!(stderr.contains("permission denied") && stderr.contains(&cli.store.display().to_string()), "{stderr}");
    assert!(!stderr.contains("not a wbsessions database"), "{stderr}");
    // Every command that would write says so up front, the same way, before Graph hears anything:
    // in a folder the reader cannot write, and with only the file write-protected (SQLite then
    // opens it read-only without a word).
    let before = sim.sim.stats().requests;
    // Root's files are 0644 in a 0755 folder, then a 0777 one; another user's are 0444 in a 0555
    // folder, then a 0755 one.
    let one_session = dir.path().join("one.csv");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&one_session, "i1,me/drive/items/W1,I-1\n").unwrap();
    std::fs::set_permissions(&one_session, std::fs::Permissions::from_mode(0o644)).unwrap();
    let folder_modes = if root { [0o755, 0o777] } else { [0o555, 0o755] };
    for folder_mode in folder_modes {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(folder_mode)).unwrap();
        for args in [
            &["refresh", "a"][..],
            &["create", "c", "--workbook", "me/drive/items/W1"],
            &["close", "a"],
            &["edit", "a", "--interval", "1m"],
            &["remove", "a"],
            &["import", one_session.to_str().unwrap()],
        ] {
            let out = as_reader(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("permission denied"), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        }
    }
    assert_eq!(sim.sim.stats().requests, before, "no Graph call was made for a store that cannot record it");
    // A store in a folder the user may not even look into: the same kind of line, exit 2.
    let hidden = dir.path().join("hidden");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(if root { 0o700 } else { 0o000 })).unwrap();
    let hidden_store = hidden.join("s.db");
    for args in [&["list"][..], &["add", "h", "--workbook", "me/drive/items/W1", "--session-id", "H"]] {
        let args: Vec<&str> = args.iter().copied().chain(["--store", hidden_store.to_str().unwrap()]).collect();
        let out = as_reader(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("wbsessions: permission denied") && !stderr.contains("os error"), "{stderr}");
    }
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_missing_store_is_not_created_by_a_command_that_only_reads() {
    let sim = SimThread::start(SimConfig { token: Some(TOKEN.into()), ..SimConfig::default() }, Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    for args in [&["list"][..], &["show", "a"], &["id", "a"]] {
        let out = cli.command(args).env("WBSESSIONS_STORE", dir.path().join("none/x.db")).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    }
    assert!(!dir.path().join("none").exists());
}

/// A file that is not a store is refused and left exactly as it was, mode included; an empty file
/// is refused by commands that only read, as a missing store is.
#[cfg(unix)]
#[test]
fn a_foreign_or_empty_file_is_left_unchanged_by_commands_that_refuse_it() {
    use std::os::unix::fs::PermissionsExt;
    let sim = SimThread::start(SimConfig { token: Some(TOKEN.into()), ..SimConfig::default() }, Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "shopping list\n").unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [&["list"][..], &["add", "a", "--workbook", "me/drive/items/W1", "--session-id", "S"]] {
        let out = cli.command(args).env("WBSESSIONS_STORE", &foreign).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a wbsessions database") && stderr.contains("left unchanged"), "{stderr}");
    }
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "shopping list\n");
    assert_eq!(std::fs::metadata(&foreign).unwrap().permissions().mode() & 0o777, 0o644, "not even its mode changed");

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    for args in [&["list"][..], &["list", "--json"], &["show", "a"], &["id", "a"]] {
        let out = cli.command(args).env("WBSESSIONS_STORE", &empty).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("empty file"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "a read did not make it a database");
    let added = cli
        .command(&["add", "a", "--workbook", "me/drive/items/W1", "--session-id", "S"])
        .env("WBSESSIONS_STORE", &empty)
        .output()
        .unwrap();
    assert!(added.status.success(), "a command that writes makes the empty file a store");
}
