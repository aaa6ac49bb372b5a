//! What comes in from outside cannot take a store out of action: impossible values are refused
//! on the way in, and a row damaged some other way (by hand, by another program) is read as
//! damaged, shown with its name, and can be removed, while every other session works as before.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use common::*;
use wbsessions::time::Clock;

#[test]
fn a_time_before_1970_is_refused_on_import_and_changes_nothing() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "a", "--workbook", "me/drive/items/W1"]);
    for line in [
        r#"{"name":"e","workbook":"me/drive/items/W1","session_id":"x","created_at":"-0001-01-01T00:00:00Z"}"#,
        r#"{"name":"e","workbook":"me/drive/items/W1","session_id":"x","last_refresh":"-0001-01-01T00:00:00Z"}"#,
    ] {
        let file = dir.path().join("bad.jsonl");
        std::fs::write(&file, line).unwrap();
        let out = cli.output(&["import", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("before 1970") && stderr.contains("line 1"), "{stderr}");
    }
    let listed = cli.ok(&["list"]);
    assert!(listed.contains("a ") && !listed.contains("\ne "), "{listed}");
}

#[test]
fn a_row_damaged_by_hand_is_shown_as_damaged_and_can_be_removed() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "good", "--workbook", "me/drive/items/W1"]);
    cli.ok(&["create", "bad", "--workbook", "me/drive/items/W1"]);
    {
        let conn = rusqlite::Connection::open(&cli.store).unwrap();
        conn.execute(
            "UPDATE sessions SET created_at = '-0001-01-01T00:00:00.000Z', interval_ms = 'abc' WHERE name = 'bad'",
            [],
        )
        .unwrap();
    }
    let listed = cli.ok(&["list"]);
    let row = |name: &str| listed.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or("").to_string();
    assert!(row("bad").contains("damaged"), "{listed}");
    assert!(row("good").contains("ok"), "{listed}");
    assert!(cli.ok(&["show", "bad"]).contains("damaged"));
    assert!(cli.ok(&["list", "--json"]).contains("\"damaged\""));
    // Nothing is sent for it as it is; the good one is refreshed as ever.
    let refused = cli.output(&["refresh", "bad"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be read whole") && stderr.contains("wbsessions remove bad"), "{stderr}");
    assert!(cli.ok(&["refresh", "--all"]).contains(" good refresh ok"));
    cli.ok(&["remove", "bad"]);
    let listed = cli.ok(&["list"]);
    assert!(!listed.contains("bad") && listed.contains("good"), "{listed}");
}

#[test]
fn an_overlong_line_is_refused_as_soon_as_it_is_seen() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let file = dir.path().join("huge.jsonl");
    let mut line = String::from(r#"{"name":"e","workbook":"me/drive/items/W1","session_id":""#);
    line.push_str(&"x".repeat(2 * 1024 * 1024));
    line.push_str("\"}\n");
    std::fs::write(&file, line).unwrap();
    let out = cli.output(&["import", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 1") && stderr.contains("longer than 1 MiB"), "{stderr}");
    assert!(!cli.store.exists(), "nothing was written, not even a store");
}

#[test]
fn an_overlong_workbook_or_invisible_characters_are_refused_in_one_line() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let long = format!("me/drive/items/{}", "W".repeat(5000));
    let hidden = "me/drive/items/W1\u{202e}";
    for workbook in [long.as_str(), hidden] {
        let out = cli.output(&["add", "a", "--workbook", workbook, "--session-id", "S"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.len() < 600, "the refusal does not repeat what it refuses: {} bytes", stderr.len());
        assert!(!stderr.contains('\u{202e}'));
    }
}

/// `recreate` on a damaged row opens a new session and writes the row whole again: it reads as
/// a session like any other afterwards, kept alive, not left damaged beside a leaked session.
#[test]
fn recreate_repairs_a_damaged_row_and_json_says_what_cannot_be_read() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "bad", "--workbook", "me/drive/items/W1", "--interval", "90s"]);
    {
        let conn = rusqlite::Connection::open(&cli.store).unwrap();
        conn.execute("UPDATE sessions SET created_at = 'yesterday' WHERE name = 'bad'", []).unwrap();
    }
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "bad", "--json"])).unwrap();
    assert_eq!(shown["status"], "damaged");
    assert!(shown["created_at"].is_null(), "unknown, not 1970: {shown}");
    let open_before = sim.sim.live_sessions().len();
    cli.ok(&["recreate", "bad"]);
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "bad", "--json"])).unwrap();
    assert_eq!(shown["status"], "ok", "{shown}");
    assert!(shown["created_at"].is_string());
    assert_eq!(shown["own_interval_secs"].as_f64(), Some(90.0), "what could be read is kept");
    let live: Vec<String> = sim.sim.live_sessions().into_iter().map(|(id, _)| id).collect();
    assert!(live.iter().any(|id| shown["session_id"] == *id), "the new id is the one open at Graph");
    assert_eq!(live.len(), open_before + 1);
    assert!(cli.ok(&["refresh", "bad"]).contains(" bad refresh ok"), "kept alive like any other");
}

/// A keeper that drives sees a row damaged under it as damaged, and stops calling on it.
#[test]
fn a_driving_keeper_adopts_damage_done_under_it() {
    let sim = SimThread::start(sim_config(&[("W1", None)]), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.ok(&["create", "bad", "--workbook", "me/drive/items/W1", "--interval", "1s"]);
    let mut keeper = cli.command(&["--json", "run"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = keeper.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    wait_for("a refresh", std::time::Duration::from_secs(10), || !lines.lock().unwrap().is_empty());
    {
        let conn = rusqlite::Connection::open(&cli.store).unwrap();
        conn.execute("UPDATE sessions SET created_at = 'yesterday', rev = rev + 1000 WHERE name = 'bad'", []).unwrap();
        conn.execute("UPDATE meta SET value = value + 1000 WHERE key = 'rev'", []).unwrap();
    }
    // Within a second or two the keeper has read it; after that, no refresh goes out for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut quiet_since = lines.lock().unwrap().len();
    let mut stable = 0;
    while std::time::Instant::now() < deadline && stable < 4 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = lines.lock().unwrap().len();
        if now == quiet_since {
            stable += 1
        } else {
            stable = 0;
            quiet_since = now;
        }
    }
    assert_eq!(stable, 4, "the keeper kept refreshing a damaged row: {:?}", lines.lock().unwrap());
    sigterm(&keeper);
    assert!(keeper.wait().unwrap().success());
}
