//! One request budget for every process on a store: two `refresh --all` at once against a
//! simulator that throttles past the budget meet no `429`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use common::*;
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

const BUDGET: u32 = 50;
const SESSIONS: usize = 40;

/// The issue's full size, run by hand (`cargo test --release --test budget -- --ignored
/// --nocapture`, WBSESSIONS_TEST_POSTGRES set for the PostgreSQL half): 10,000 sessions, two
/// `refresh --all` at once, a simulator that throttles past Graph's 1,500 per 10 s.
#[test]
#[ignore = "minutes long: the full-size run for docs/benchmarks.md"]
fn ten_thousand_sessions_two_refresh_all_at_once_on_each_store() {
    let started = std::time::Instant::now();
    two_together_on(None, 10_000, 1_500);
    eprintln!("SQLite: 2 x 10,000 refreshes within the budget in {:?}", started.elapsed());
    if let Some(pg) = common::pg::TestPg::new("PostgreSQL budget") {
        let started = std::time::Instant::now();
        two_together_on(Some(&pg.url), 10_000, 1_500);
        eprintln!("PostgreSQL: 2 x 10,000 refreshes within the budget in {:?}", started.elapsed());
    }
}

#[test]
fn two_one_shot_commands_together_stay_within_the_budget() {
    two_together_on(None, SESSIONS, BUDGET);
}

#[test]
fn two_one_shot_commands_together_stay_within_the_budget_on_postgres() {
    let Some(pg) = common::pg::TestPg::new("PostgreSQL budget") else { return };
    two_together_on(Some(&pg.url), SESSIONS, BUDGET);
}

/// Two `refresh --all` at once on one store (SQLite, or the PostgreSQL database at `store`):
/// `sessions` each, against a simulator whose limit is the budget.
fn two_together_on(store: Option<&str>, sessions: usize, budget: u32) {
    let workbooks: Vec<(String, Option<String>)> = (0..sessions).map(|i| (format!("W{i}"), None)).collect();
    let config = SimConfig { rate_limit: Some(budget), workbooks, ..sim_config(&[]) };
    let sim = SimThread::start(config, Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let mut cli = Cli::new(&sim.url, dir.path());
    if let Some(store) = store {
        cli.store = store.into();
    }
    cli.config(&format!("request_budget = {budget}\n"));

    // The sessions are opened at the simulator directly: opening them costs the budget nothing.
    let lines: Vec<String> = (0..sessions)
        .map(|i| {
            let id = sim.sim.open_session(&format!("W{i}"));
            serde_json::json!({ "name": format!("s{i}"), "workbook": format!("me/drive/items/W{i}"), "session_id": id })
                .to_string()
        })
        .collect();
    let file = dir.path().join("sessions.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    cli.ok(&["import", file.to_str().unwrap()]);
    let throttled_before = sim.sim.stats().throttled;

    // Each alone fits the budget at once (40 of 50); together they do not (80).
    let both: Vec<std::process::Child> = (0..2)
        .map(|_| {
            cli.command(&["--json", "refresh", "--all"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut refreshed = 0;
    for child in both {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        refreshed += String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(r#""status":"ok""#)).count();
    }
    assert_eq!(refreshed, 2 * sessions);
    assert_eq!(sim.sim.stats().throttled - throttled_before, 0, "no request went past the simulator's limit");
}
