//! What the commands say about sessions is what Graph would say: stale sessions are not `ok`,
//! dead ids are not handed out, closed sessions are not refreshed, colour follows NO_COLOR.
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
fn a_session_left_past_its_idle_expiry_is_stale_and_its_id_is_not_handed_out() {
    let sim = SimThread::start(
        SimConfig { persistent_expiry: Duration::from_secs(3), ..sim_config(&[("W1", None)]) },
        Clock::system(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.config("persistent_expiry = \"3s\"\n");
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    let fresh = json(&cli.ok(&["list", "--json"]));
    assert_eq!(fresh[0]["status"], "ok");
    assert!(fresh[0]["expires_at"].is_string());
    let id = cli.ok(&["id", "a"]);
    assert!(id.len() > 100);

    // No keeper runs: three seconds on, the session is past its idle expiry.
    wait_for("the session to turn stale", Duration::from_secs(10), || {
        json(&cli.ok(&["list", "--json"]))[0]["status"] == "stale"
    });
    let stale = json(&cli.ok(&["list", "--json"]));
    assert_eq!(stale[0]["status"], "stale", "{stale}");
    let table = cli.ok(&["list"]);
    assert!(table.contains("stale") && !table.contains(" ok "), "{table}");
    let out = cli.output(&["id", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no id on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stale") && stderr.contains("--any") && stderr.lines().count() == 1, "{stderr}");
    assert_eq!(cli.ok(&["id", "--any", "a"]), id);
}

#[test]
fn a_closed_session_is_not_refreshed_and_graph_hears_nothing() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["create", "b", "--workbook", "me/drive/items/W1"]);
    let closed = cli.ok(&["close", "a"]);
    assert!(closed.contains(" a close ok 204"), "{closed}");
    let before = sim.sim.stats().requests;
    let out = cli.output(&["refresh", "a"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("closed") && stderr.contains("wbsessions recreate a"), "{stderr}");
    assert_eq!(sim.sim.stats().requests, before, "the simulator saw no request for it");
    // --all skips it, and says so.
    let out = cli.output(&["refresh", "--all"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 1 closed session: a"));
    assert_eq!(sim.sim.stats().requests, before + 1, "only b was refreshed");
    // Closing it again, or running a command with it, asks Graph nothing.
    assert_eq!(cli.ok(&["close", "a"]).trim(), "a is already closed");
    let exec = cli.output(&["exec", "a", "--", "sh", "-c", "echo RAN"]);
    assert_eq!(exec.status.code(), Some(1), "not alive, as for an expired session");
    assert!(!String::from_utf8_lossy(&exec.stdout).contains("RAN"));
    assert_eq!(sim.sim.stats().requests, before + 1);
    // A closed session's id is not handed out either; removing it says nothing of Graph.
    assert_eq!(cli.output(&["id", "a"]).status.code(), Some(1));
    let removed = cli.ok(&["remove", "a"]);
    assert_eq!(removed.trim(), "removed a");
    // And `recreate` starts it again.
    cli.ok(&["create", "c", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["close", "c"]);
    let recreated = cli.ok(&["recreate", "c"]);
    assert!(recreated.contains(" c create ok"), "{recreated}");
    assert_eq!(json(&cli.ok(&["show", "c", "--json"]))["status"], "ok");
}

#[test]
fn no_color_in_any_form_is_accepted_by_every_command() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    for value in ["1", "", "yes", "0", "false"] {
        let out = cli.command(&["list"]).env("NO_COLOR", value).output().unwrap();
        assert!(out.status.success(), "NO_COLOR={value:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(cli.output(&["--no-color", "list"]).status.success());
    // On a terminal (util-linux `script` gives one), `--no-color` reaches the parser's own errors.
    let bin = env!("CARGO_BIN_EXE_wbsessions");
    let on_a_terminal = |args: &str| {
        std::process::Command::new("script")
            .args(["-qec", &format!("'{bin}' {args}"), "/dev/null"])
            .env_remove("NO_COLOR")
            .output()
    };
    match on_a_terminal("nosuchcmd") {
        Ok(coloured) if String::from_utf8_lossy(&coloured.stdout).contains("\x1b[") => {
            let plain = on_a_terminal("--no-color nosuchcmd").unwrap();
            let text = String::from_utf8_lossy(&plain.stdout);
            assert!(text.contains("unrecognized subcommand") && !text.contains('\x1b'), "{text:?}");
        }
        _ => eprintln!("no terminal to be had through `script`: the colour of usage errors is not checked"),
    }
}

#[test]
fn run_counts_what_it_keeps_and_names_what_it_skips() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "live", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["create", "gone", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["close", "gone"]);
    let mut keeper =
        cli.command(&["run"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(keeper.stderr.as_mut().unwrap()), &mut first).unwrap();
    sigterm(&keeper);
    keeper.wait().unwrap();
    assert!(first.contains("keeping 1 session in") && first.contains("skipping gone (closed)"), "{first}");
}

#[test]
fn the_same_id_under_two_names_is_refused_naming_the_first() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let id = sim.sim.open_session("W1");
    cli.ok(&["add", "first", "--workbook", "me/drive/items/W1", "--session-id", &id]);
    let out = cli.output(&["add", "second", "--workbook", "me/drive/items/W1", "--session-id", &id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already tracked as \"first\""));
}

/// `list` does not claim a paused keeper keeps anything alive, and `show` counts in English.
#[test]
fn list_says_when_automatic_refresh_is_paused() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    let mut keeper =
        cli.command(&["run"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    wait_for("the keeper's lock", Duration::from_secs(5), || common::driver_pid(&cli.store).is_some());
    assert!(cli.ok(&["list"]).contains("(kept alive by wbsessions pid"));
    common::write_store(&cli.store, vec![wbsessions::store::Write::Paused(true)]);
    let listed = cli.ok(&["list"]);
    assert!(!listed.contains("kept alive") && listed.contains("automatic refresh is paused"), "{listed}");
    assert!(listed.lines().nth(1).is_some_and(|row| row.contains(" paused ")), "NEXT says paused: {listed}");
    let shown = cli.ok(&["show", "a"]);
    assert!(shown.contains("next refresh  paused") && shown.contains("paused for the whole store"), "{shown}");
    sigterm(&keeper);
    keeper.wait().unwrap();
    assert!(cli.ok(&["list"]).contains("(automatic refresh is paused: `p` in a dashboard resumes it)"));
    assert!(cli.ok(&["show", "a"]).contains("(0 failures in a row)"));
}

/// A token is one word: a trailing newline (`$(cat token.txt)`) is forgiven, one inside is said
/// up front instead of failing every call with a sign-in error.
#[test]
fn a_token_with_a_line_break_inside_is_refused_up_front() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    let refreshed = cli.command(&["refresh", "a"]).env("WBSESSIONS_TOKEN", format!("{TOKEN}\n")).output().unwrap();
    assert!(refreshed.status.success(), "{}", String::from_utf8_lossy(&refreshed.stderr));
    let before = sim.sim.stats().requests;
    let refused = cli.command(&["refresh", "a"]).env("WBSESSIONS_TOKEN", format!("{TOKEN}\nX")).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("one word") && stderr.lines().count() == 1, "{stderr}");
    assert_eq!(sim.sim.stats().requests, before, "nothing was sent");
}

#[test]
fn a_session_is_what_graph_said_of_it_not_what_a_caller_could_not_do() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    // Tracked but never refreshed: not known to be alive, so no id without --any.
    let id = sim.sim.open_session("W1");
    cli.ok(&["add", "fresh", "--workbook", "me/drive/items/W1", "--session-id", &id]);
    let out = cli.output(&["id", "fresh"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wbsessions refresh fresh"));
    assert_eq!(cli.ok(&["id", "fresh", "--any"]).trim(), id);

    // A caller's own token refused: that caller hears it; the session stays as it was.
    cli.ok(&["refresh", "fresh"]);
    let wrong = cli.output(&["--token", "WRONG", "refresh", "fresh"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(json(&cli.ok(&["show", "fresh", "--json"]))["status"], "ok", "not `auth` for everyone");

    // A closed session whose recreation fails stays closed.
    let closed = dir.path().join("closed.jsonl");
    std::fs::write(
        &closed,
        r#"{"name":"gone","workbook":"me/drive/items/NOPE","session_id":"S-gone","status":"closed"}"#,
    )
    .unwrap();
    cli.ok(&["import", closed.to_str().unwrap()]);
    let failed = cli.output(&["recreate", "gone"]);
    assert_eq!(failed.status.code(), Some(1), "{}", String::from_utf8_lossy(&failed.stderr));
    assert_eq!(json(&cli.ok(&["show", "gone", "--json"]))["status"], "closed");
}

/// Options the environment sets are not shown as required in a usage error.
#[test]
fn usage_errors_do_not_list_what_the_environment_set() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("http://127.0.0.1:9/v1.0", dir.path());
    for args in [&["refresh"][..], &["show"], &["close"], &["add", "a"]] {
        let out = cli.output(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let usage = stderr.lines().find(|l| l.starts_with("Usage:")).unwrap_or_default();
        assert!(!usage.contains("--store") && !usage.contains("--token"), "{args:?}: {usage}");
    }
}
