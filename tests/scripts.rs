//! What scripts use: `exec` hands a command a live session, `edit` and `recreate` change one,
//! completions name the sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::time::Duration;

use common::*;
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn exec_runs_a_command_with_a_live_session_and_returns_its_code() {
    let clock = Clock::manual(chrono::Utc::now());
    let sim = SimThread::start(
        SimConfig { persistent_expiry: Duration::from_secs(60), ..sim_config(&[("W1", None)]) },
        clock.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    let id = cli.ok(&["id", "a"]).trim().to_string();
    let printed = cli.ok(&[
        "exec",
        "a",
        "--",
        "sh",
        "-c",
        "echo \"$WBSESSIONS_SESSION_ID|$WBSESSIONS_NAME|$WBSESSIONS_WORKBOOK_URL\"",
    ]);
    assert_eq!(printed.trim(), format!("{id}|a|{}/me/drive/items/W1/workbook", sim.url));
    let refreshes = sim.sim.stats().refreshed;
    assert!(refreshes >= 1, "exec refreshed the session before running the command");
    let missing = cli.output(&["exec", "a", "--", "no-such-command-anywhere"]);
    assert_eq!(missing.status.code(), Some(127), "as a shell says a command is not there");
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("wbsessions: cannot run no-such-command-anywhere"));
    let out = cli.output(&["exec", "a", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // The token is exported only when asked.
    assert_eq!(cli.ok(&["exec", "a", "--", "sh", "-c", "echo \"[$WBSESSIONS_ACCESS_TOKEN]\""]).trim(), "[]");
    assert_eq!(
        cli.ok(&["exec", "a", "--export-token", "--", "sh", "-c", "echo \"[$WBSESSIONS_ACCESS_TOKEN]\""]).trim(),
        format!("[{TOKEN}]")
    );

    // Expired and not recreatable: exit 1 and the command never runs.
    clock.advance(Duration::from_secs(120));
    let marker = dir.path().join("ran");
    let out = cli.output(&["exec", "a", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!marker.exists(), "the command ran on an expired session");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not alive"));
    // Allowed to recreate, it gets a new id and the command runs with it.
    cli.ok(&["edit", "a", "--recreate"]);
    let printed = cli.ok(&["exec", "a", "--", "sh", "-c", "echo \"$WBSESSIONS_SESSION_ID\""]);
    assert_ne!(printed.trim(), id);
    assert_eq!(printed.trim(), cli.ok(&["id", "a"]).trim());
}

#[test]
fn edit_and_recreate_change_a_session_from_the_command_line() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["edit", "a", "--interval", "30s", "--no-auto"]);
    let shown = json(&cli.ok(&["show", "a", "--json"]));
    assert_eq!((shown["interval_secs"].as_f64(), shown["auto"].as_bool()), (Some(30.0), Some(false)));
    cli.ok(&["edit", "a", "--rename", "b", "--auto", "--default-interval"]);
    let shown = json(&cli.ok(&["show", "b", "--json"]));
    assert_eq!((shown["interval_secs"].as_f64(), shown["auto"].as_bool()), (Some(240.0), Some(true)));
    let out = cli.output(&["edit", "b"]);
    assert_eq!(out.status.code(), Some(2), "nothing to change is bad input");
    let warned = cli.output(&["edit", "b", "--interval", "6m"]);
    assert!(warned.status.success());
    assert!(String::from_utf8_lossy(&warned.stderr).contains("expire first"));
    // Setting what is already set is no mistake: scripts can say what they want every time.
    assert!(cli.ok(&["edit", "b", "--interval", "6m"]).starts_with("saved: b on me/drive/items/W1"));
    // Two edits of different settings, each from its own process: neither undoes the other.
    cli.ok(&["edit", "b", "--recreate"]);
    let shown = json(&cli.ok(&["show", "b", "--json"]));
    assert_eq!((shown["interval_secs"].as_f64(), shown["recreate"].as_bool()), (Some(360.0), Some(true)));

    let old = cli.ok(&["id", "b"]);
    let out = cli.ok(&["recreate", "b"]);
    assert!(out.contains(" b create ok 201"), "{out}");
    let new = cli.ok(&["id", "b"]);
    assert_ne!(old, new);
    // The simulator accepts the new id.
    assert!(cli.ok(&["refresh", "b"]).contains(" b refresh ok 204"));
}

#[test]
fn completion_names_the_tracked_sessions() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "budget-live", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["create", "budget-old", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["create", "sales", "--workbook", "me/drive/items/W1"]);
    for shell in ["bash", "zsh", "fish"] {
        let script = cli.ok(&["completions", shell]);
        assert!(script.contains("WBSESSIONS_COMPLETE"), "{shell}: {script}");
    }
    // What the shell asks through the registered script: complete `wbsessions show bud`.
    let out = cli.command(&["--", "wbsessions", "show", "bud"]).env("WBSESSIONS_COMPLETE", "fish").output().unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.contains("budget-live") && names.contains("budget-old") && !names.contains("sales"), "{names}");
    // A --store on the line being completed is the store the names come from.
    let other = dir.path().join("other.db");
    cli.ok(&["--store", other.to_str().unwrap(), "create", "budget-elsewhere", "--workbook", "me/drive/items/W1"]);
    let out = cli
        .command(&["--", "wbsessions", "--store", other.to_str().unwrap(), "show", "bud"])
        .env("WBSESSIONS_COMPLETE", "fish")
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.contains("budget-elsewhere") && !names.contains("budget-live"), "{names}");
    // The script calls the binary by name, not by where this build happens to be.
    let script = cli.ok(&["completions", "bash"]);
    assert!(!script.contains(env!("CARGO_BIN_EXE_wbsessions")), "{script}");
}

#[test]
fn exec_keeps_the_session_alive_for_the_job_without_handing_it_the_credentials() {
    // Sessions die after 3 s idle here; the job runs three times as long.
    let sim = SimThread::start(
        SimConfig { persistent_expiry: Duration::from_secs(3), ..sim_config(&[("W1", None)]) },
        Clock::system(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.config("persistent_expiry = \"3s\"\n");
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "2s"]);
    let seen = cli.ok(&[
        "exec",
        "a",
        "--",
        "sh",
        "-c",
        "echo \"[${WBSESSIONS_TOKEN-unset}][${WBSESSIONS_TOKEN_COMMAND-unset}]\"; sleep 9",
    ]);
    assert_eq!(seen.trim(), "[unset][unset]", "the job gets the session, not the credentials");
    let after = cli.ok(&["refresh", "a"]);
    assert!(after.contains(" a refresh ok 204"), "alive after 9 s with a 3 s expiry: {after}");
}

#[cfg(unix)]
#[test]
fn a_signal_to_exec_reaches_the_job() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    let marker = dir.path().join("started");
    let script = format!("touch {}; sleep 60", marker.display());
    let mut exec = cli.command(&["exec", "a", "--", "sh", "-c", &script]).spawn().unwrap();
    wait_for("the job to start", Duration::from_secs(10), || marker.exists());
    sigterm(&exec);
    let started = std::time::Instant::now();
    let status = exec.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "the job ended with exec, not after its minute");
    assert_eq!(status.code(), Some(128 + 15), "the job's own end, by SIGTERM");
}

#[test]
fn the_service_file_is_a_valid_systemd_unit() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/wbsessions.service")).unwrap();
    assert!(unit.contains("run --wait"), "the service waits for its turn: {unit}");
    let Ok(probe) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze is not installed, so the unit was not verified");
        return;
    };
    assert!(probe.status.success());
    // Verified as installed, with the binary where the unit expects it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wbsessions.service");
    std::fs::write(&path, unit.replace("%h/.cargo/bin/wbsessions", env!("CARGO_BIN_EXE_wbsessions"))).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("wbsessions.service:"), "no complaint about the unit: {said}");
}
