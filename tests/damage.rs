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
