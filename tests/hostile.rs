//! The real binary against a hostile server and a hostile environment: throttling without end,
//! endless and huge bodies, escape sequences in messages, redirects, slow answers, absurd sign-in
//! answers, closed and full standard output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hostile::HostileThread;
use common::*;

fn hostile_cli(dir: &std::path::Path) -> (HostileThread, Cli) {
    let server = HostileThread::start();
    let cli = Cli::new(&server.graph_url(), dir);
    cli.config("request_timeout = \"2s\"\n");
    (server, cli)
}

fn add(cli: &Cli, name: &str, item: &str, interval: &str) {
    cli.ok(&[
        "add",
        name,
        "--workbook",
        &format!("me/drive/items/{item}"),
        "--session-id",
        &format!("ID-{name}"),
        "--interval",
        interval,
    ]);
}

#[test]
fn a_workbook_held_for_a_billion_seconds_holds_back_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = hostile_cli(dir.path());
    add(&cli, "held", "THROTTLED", "1s");
    add(&cli, "dated", "DATEHOLD", "1s");
    for name in ["a", "b", "c"] {
        add(&cli, name, &format!("W-{name}"), "1s");
    }
    let mut child = cli.command(&["run", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let ok_for = |name: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&format!("\"session\":\"{name}\"")) && l.contains("\"ok\""))
            .count()
    };
    // Every second, each of the three keeps being refreshed while the other two wait out their holds.
    wait_for("five refreshes of each other session", Duration::from_secs(20), || {
        ["a", "b", "c"].iter().all(|n| ok_for(n) >= 5)
    });
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    // The holds are capped at 180 s, so in these seconds each held workbook was asked exactly once.
    assert_eq!(server.seen.count("THROTTLED"), 1);
    assert_eq!(server.seen.count("DATEHOLD"), 1);
}

#[test]
fn a_one_shot_refresh_reports_a_long_retry_after_instead_of_sitting_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = hostile_cli(dir.path());
    add(&cli, "held", "THROTTLED", "1m");
    add(&cli, "held-too", "THROTTLED", "1m");
    add(&cli, "dated", "DATEHOLD", "1m");
    let started = std::time::Instant::now();
    let out = cli.output(&["refresh", "held", "held-too", "dated"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(stdout.contains("retry after a day or more"), "the wait is named as the server gave it: {stdout}");
    assert_eq!(server.seen.count("THROTTLED"), 1, "asked once, not retried into the hold, nor the second session");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("held-too") && stderr.contains("not waited for"), "{stderr}");
    assert_eq!(server.seen.count("DATEHOLD"), 1);
}

#[test]
fn a_create_waits_out_a_short_retry_after_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = hostile_cli(dir.path());
    let out = cli.output(&["create", "brief", "--workbook", "me/drive/items/BRIEFHOLD"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(server.seen.count("BRIEFHOLD"), 4, "one try and three retries, as the Graph SDK does");
    assert!(stderr.contains("brief: create failed; trying again in 1s (attempt 2 of 4)"), "not silent: {stderr}");
    assert_eq!(stderr.matches("trying again").count(), 3, "one line per retry made: {stderr}");
    assert!(stderr.lines().last().is_some_and(|l| l.contains("throttled")), "{stderr}");
}

#[test]
fn an_endless_body_ends_the_call_quickly_and_memory_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = hostile_cli(dir.path());
    add(&cli, "endless", "ENDLESS", "1m");
    let started = std::time::Instant::now();
    let (code, stdout, stderr, peak_kib) = cli.measured(&["refresh", "endless"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by the request timeout");
    assert!(stdout.contains("64 KiB"), "{stdout}");
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn escape_sequences_and_newlines_from_a_server_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = hostile_cli(dir.path());
    add(&cli, "esc", "ESCAPES", "1m");
    let out = cli.output(&["refresh", "esc"]);
    assert_eq!(out.status.code(), Some(1));
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !stream.contains(&0x1b) && !stream.contains(&0x07) && !stream.contains(&b'\r'),
            "{}",
            String::from_utf8_lossy(stream)
        );
        let text = String::from_utf8_lossy(stream);
        assert!(!text.lines().any(|l| l.starts_with("FORGED")), "a server newline forged a line: {text}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("first FORGED"), "the text itself is kept");
    let shown = cli.output(&["show", "esc"]);
    assert!(!shown.stdout.contains(&0x1b) && !shown.stdout.contains(&0x07));
    let listed = cli.output(&["show", "esc", "--json"]);
    assert!(!listed.stdout.contains(&0x1b), "JSON holds the cleaned text too");
}

#[test]
fn huge_messages_are_cut_before_they_are_stored_or_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = hostile_cli(dir.path());
    add(&cli, "huge", "HUGE", "1m");
    add(&cli, "long", "LONGMESSAGE", "1m");
    for _ in 0..3 {
        cli.output(&["refresh", "huge", "long"]);
    }
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "long", "--json"])).unwrap();
    let message = shown["outcomes"][0]["message"].as_str().unwrap();
    assert!(message.chars().count() <= 1001, "{} characters kept", message.len());
    let huge: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "huge", "--json"])).unwrap();
    assert!(huge["outcomes"][0]["message"].as_str().unwrap().contains("larger than 64 KiB"));
    let size = std::fs::metadata(&cli.store).unwrap().len()
        + std::fs::metadata(cli.store.with_extension("db-wal")).map_or(0, |m| m.len());
    assert!(size < 2 * 1024 * 1024, "the store grew to {size} bytes");
}

#[test]
fn redirects_are_not_followed_and_slow_answers_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = hostile_cli(dir.path());
    add(&cli, "moved", "REDIRECT", "1m");
    add(&cli, "slow", "SLOW", "1m");
    let out = cli.output(&["refresh", "moved"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 302 "), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!server.seen.paths().iter().any(|p| p.contains("stolen")));
    let started = std::time::Instant::now();
    let out = cli.output(&["refresh", "slow"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no answer within 2s"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn an_absurd_device_code_lifetime_does_not_panic_login() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = hostile_cli(dir.path());
    let mut command = cli.command(&["login", "--client-id", "X", "--login-url", &server.login_url()]);
    command.env_remove("WBSESSIONS_TOKEN");
    let out = command.stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("declined") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn closed_or_full_standard_output_ends_quietly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = hostile_cli(dir.path());
    add(&cli, "a", "W1", "1m");
    let bin = env!("CARGO_BIN_EXE_wbsessions");
    for args in ["whoami", "id a", "completions bash", "list", "list --json", "show a", "--help"] {
        // A reader that closes at once, then standard output on a full device.
        for redirect in ["| head -c 0", "> /dev/full"] {
            let script = format!("'{bin}' {args} {redirect}; echo \"exit=${{PIPESTATUS[0]}}\" >&2");
            let out = cli.shell(&script).stdin(Stdio::null()).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked") && !stderr.contains("exit=101"), "{args} {redirect}: {stderr}");
            if redirect.contains("full") {
                assert!(!stderr.contains("exit=0"), "{args} {redirect}: a full disk is not success: {stderr}");
            }
        }
    }
    // The keeper stops when its reader goes, and says by its exit that the ending was not asked for.
    add(&cli, "soon", "W2", "1s");
    let script = format!("'{bin}' run --json | head -n 1 >/dev/null; echo \"exit=${{PIPESTATUS[0]}}\" >&2");
    let out = cli.shell(&script).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exit=1") && !stderr.contains("panicked"), "{stderr}");
    // With nothing due for a minute, a reader that went away is still noticed within seconds.
    let quiet = dir.path().join("quiet.db");
    cli.command(&["add", "q", "--workbook", "me/drive/items/W3", "--session-id", "Q", "--interval", "1m"])
        .env("WBSESSIONS_STORE", &quiet)
        .output()
        .unwrap();
    let script = format!(
        "WBSESSIONS_STORE='{}' timeout 20 '{bin}' run 2>/dev/null | sleep 2; echo \"exit=${{PIPESTATUS[0]}}\" >&2",
        quiet.display()
    );
    let started = std::time::Instant::now();
    let out = cli.shell(&script).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exit=1"), "stopped by itself, not by the timeout: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}
