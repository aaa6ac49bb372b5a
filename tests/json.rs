//! `--json` on every command that prints sessions or outcomes, in one vocabulary: `status` for
//! how a session or a call stands, times RFC 3339 in UTC to the millisecond, durations in
//! seconds under a `_secs` key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use common::*;
use serde_json::Value;
use wbsessions::time::Clock;

fn values(text: &str) -> Vec<Value> {
    let text = text.trim();
    // An array (`list`), one object over several lines (`show`), or JSON lines.
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => return items,
        Ok(value) => return vec![value],
        Err(_) => {}
    }
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

/// Every key of every object, at any depth, follows the vocabulary.
fn check_vocabulary(value: &Value, context: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                assert_ne!(key, "kind", "{context}: `status`, not `kind`");
                assert!(!key.ends_with("_ms") && !key.ends_with("_ns"), "{context}: {key} is not in seconds");
                if key.ends_with("_at") || key == "at" || key == "last_refresh" {
                    if let Some(t) = v.as_str() {
                        let parsed = chrono::DateTime::parse_from_rfc3339(t)
                            .unwrap_or_else(|e| panic!("{context}: {key} = {t} is not RFC 3339: {e}"));
                        assert_eq!(parsed.offset().local_minus_utc(), 0, "{context}: {key} = {t} is not UTC");
                        assert!(t.ends_with('Z') && t.len() == 24, "{context}: {key} = {t}: milliseconds, Z");
                    } else {
                        assert!(v.is_null(), "{context}: {key} = {v}");
                    }
                }
                if key.ends_with("_secs") {
                    assert!(v.is_number(), "{context}: {key} = {v}");
                }
                check_vocabulary(v, context);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| check_vocabulary(v, context)),
        _ => {}
    }
}

fn json_of(cli: &Cli, args: &[&str]) -> Vec<Value> {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let out = cli.output(&with_json);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let values = values(&stdout);
    for value in &values {
        check_vocabulary(value, &format!("{args:?}"));
    }
    values
}

#[test]
fn every_command_speaks_one_json_vocabulary() {
    let sim = SimThread::start(sim_config(&[("W1", None), ("W2", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());

    let created = json_of(&cli, &["create", "a", "--workbook", "me/drive/items/W1", "--interval", "90s"]);
    assert_eq!(created.len(), 1);
    assert_eq!((created[0]["name"].as_str(), created[0]["status"].as_str()), (Some("a"), Some("ok")));
    assert_eq!(created[0]["own_interval_secs"].as_f64(), Some(90.0));
    assert_eq!(created[0]["interval_secs"].as_f64(), Some(90.0));

    let id = created[0]["session_id"].as_str().unwrap().to_string();
    cli.ok(&["close", "a"]);
    let added = json_of(&cli, &["add", "b", "--workbook", "me/drive/items/W2", "--session-id", "B-1"]);
    assert_eq!(added[0]["status"], "new");
    assert!(added[0].get("own_interval_secs").is_none(), "the default interval is not the session's own");
    cli.ok(&["recreate", "a"]);

    let refreshed = json_of(&cli, &["refresh", "a"]);
    assert_eq!(refreshed.len(), 1);
    assert_eq!(refreshed[0]["session"], "a");
    assert_eq!(refreshed[0]["action"], "refresh");
    assert_eq!(refreshed[0]["status"], "ok");
    assert!(refreshed[0]["latency_secs"].as_f64().is_some_and(|l| l < 10.0));

    let listed = json_of(&cli, &["list"]);
    assert_eq!(listed.len(), 2);
    let shown = json_of(&cli, &["show", "a"]);
    assert!(shown[0]["outcomes"].as_array().is_some_and(|o| o.len() >= 3), "{}", shown[0]);
    assert_ne!(shown[0]["session_id"].as_str(), Some(id.as_str()), "recreated: a new id");
    assert_eq!(json_of(&cli, &["id", "a"])[0]["session_id"], shown[0]["session_id"]);

    let edited = json_of(&cli, &["edit", "a", "--interval", "2m"]);
    assert_eq!(edited[0]["own_interval_secs"].as_f64(), Some(120.0));

    let closed = json_of(&cli, &["close", "a"]);
    assert_eq!((closed[0]["action"].as_str(), closed[0]["status"].as_str()), (Some("close"), Some("ok")));
    // Closing again asks Graph nothing: no record, and the note goes to stderr.
    assert!(json_of(&cli, &["close", "a"]).is_empty());

    let file = dir.path().join("export.json");
    std::fs::write(&file, cli.ok(&["list", "--json"])).unwrap();
    let other = Cli::new(&sim.url, &dir.path().join("other"));
    let imported = json_of(&other, &["import", file.to_str().unwrap()]);
    assert_eq!(imported[0]["imported"], 2);

    let removed = json_of(&cli, &["remove", "a", "b"]);
    assert_eq!(removed.len(), 2);
    assert!(removed.iter().all(|r| r["action"] == "remove" && r["status"] == "ok"));

    let who = json_of(&cli, &["whoami"]);
    assert_eq!(who[0]["source"], "token");
    let out = json_of(&cli, &["logout"]);
    assert_eq!(out[0]["signed_out"], false);
}

#[test]
fn the_keeper_writes_outcomes_in_the_same_words() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    let mut child = cli
        .command(&["--json", "run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let line = lines.next().unwrap().unwrap();
    let value: Value = serde_json::from_str(&line).unwrap();
    check_vocabulary(&value, "run");
    assert_eq!((value["session"].as_str(), value["status"].as_str()), (Some("a"), Some("ok")), "{line}");
    assert!(value["late_secs"].is_number(), "{line}");
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn commands_without_json_output_refuse_the_flag_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("http://127.0.0.1:9/v1.0", dir.path());
    for args in [&["--json", "demo"][..], &["--json", "exec", "a", "--", "true"], &["--json"]] {
        let out = cli.output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("has no JSON output") && stderr.lines().count() == 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    assert!(!cli.store.exists(), "nothing was created");
}
