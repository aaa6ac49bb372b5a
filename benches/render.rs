//! One full dashboard frame at 200x50, with 100 and with 100,000 sessions.
//!
//!     cargo bench --bench render
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

use std::time::{Duration, Instant};

use chrono::Utc;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use wbsessions::engine::Event;
use wbsessions::session::{Action, Mode, Outcome, OutcomeKind, SessionId, Status, TrackedSession, WorkbookRef};
use wbsessions::tui::{App, Driver, Info, Msg, view};

fn outcome(now: chrono::DateTime<Utc>, k: i64) -> Outcome {
    Outcome {
        at: now - chrono::Duration::seconds(k * 60),
        action: Action::Refresh,
        kind: OutcomeKind::Ok,
        latency_ms: 20 + (k as u64 * 7) % 50,
        http_status: Some(204),
        codes: Vec::new(),
        request_id: Some("00000000-0000-0000-0000-000000000000".into()),
        client_request_id: None,
        message: None,
        by: None,
    }
}

fn sessions(n: usize) -> Vec<TrackedSession> {
    let now = Utc::now();
    let id = SessionId::new(&format!("cluster=PUS&session={}", "x".repeat(300))).expect("an id");
    (0..n)
        .map(|i| {
            let workbook = WorkbookRef::parse(&format!("me/drive/items/WB{:05}", i / 10)).expect("a ref");
            let mut s = TrackedSession::new(format!("session-{i:06}"), workbook, id.clone(), Mode::Persistent, now);
            s.key = i as i64;
            s.status = if i % 17 == 0 { Status::Error } else { Status::Ok };
            s.last_refresh = Some(now - chrono::Duration::seconds((i % 240) as i64));
            s.last_call = Some((&outcome(now, 0)).into());
            s
        })
        .collect()
}

fn info() -> Info {
    Info {
        store: "/home/user/.local/share/wbsessions/sessions.db".into(),
        endpoint: "https://graph.microsoft.com/v1.0".into(),
        demo: false,
        driver: Driver::This,
        defaults: wbsessions::session::Defaults::default(),
        log_dir: "/home/user/.local/state/wbsessions/logs".into(),
        palette: wbsessions::tui::theme::Palette::new(wbsessions::tui::theme::ThemePreset::Dark, &Default::default()),
    }
}

/// Mean time of one frame: `draw` only, and an engine event (a session changed) then `draw`.
fn measure(n: usize, details: bool) -> (Duration, Duration) {
    let list = sessions(n);
    let now = Utc::now();
    let mut app = App::new(info(), list.clone(), (200, 50), now);
    if details {
        // The details pane as it is once its history has come from the store.
        app.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)), now);
        let key = app.selected.expect("a selection");
        let outcomes = (0..50).map(|k| outcome(now, k)).collect();
        let answer = Ok(wbsessions::engine::Reply::History(outcomes));
        app.update(
            Msg::Answer { kind: wbsessions::engine::JobKind::History, key: Some(key), about: String::new(), answer },
            now,
        );
    }
    let mut terminal = Terminal::new(TestBackend::new(200, 50)).expect("a terminal");
    for _ in 0..20 {
        terminal.draw(|f| view::draw(f, &app, now)).expect("draw");
    }
    let frames = if n > 10_000 { 200 } else { 2000 };
    let started = Instant::now();
    for _ in 0..frames {
        terminal.draw(|f| view::draw(f, &app, now)).expect("draw");
    }
    let draw_only = started.elapsed() / frames;
    let started = Instant::now();
    for i in 0..frames {
        let mut changed = list[(i as usize * 7919) % n].clone();
        changed.last_refresh = Some(now);
        app.update(Msg::Engine(Event::Changed(std::sync::Arc::new(changed))), now);
        terminal.draw(|f| view::draw(f, &app, now)).expect("draw");
    }
    let with_update = started.elapsed() / frames;
    (draw_only, with_update)
}

fn main() {
    println!("render benchmark: one full frame at 200x50 (target <= 2 ms)");
    for n in [100, 100_000] {
        for details in [false, true] {
            let (draw, update) = measure(n, details);
            println!(
                "  {n:>7} sessions{}  draw {:>7.3} ms   event + draw {:>7.3} ms",
                if details { ", details pane" } else { "               " },
                draw.as_secs_f64() * 1e3,
                update.as_secs_f64() * 1e3
            );
        }
    }
}
