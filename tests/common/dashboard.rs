//! A fixed set of sessions and a frozen clock, for the dashboard's state and snapshot tests.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use wbsessions::session::{Action, Mode, Outcome, OutcomeKind, SessionId, Status, TrackedSession, WorkbookRef};
use wbsessions::tui::theme::{Palette, ThemePreset};
use wbsessions::tui::{App, Driver, Info};

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

pub fn palette(preset: ThemePreset) -> Palette {
    Palette::new(preset, &Default::default())
}

pub fn info(no_color: bool) -> Info {
    Info {
        store: "/home/ana/.local/share/wbsessions/sessions.db".into(),
        endpoint: "https://graph.microsoft.com/v1.0".into(),
        demo: false,
        driver: Driver::This,
        defaults: wbsessions::session::Defaults::default(),
        log_dir: "/home/ana/.local/state/wbsessions/logs".into(),
        palette: palette(if no_color { ThemePreset::Mono } else { ThemePreset::Dark }),
    }
}

fn outcome(seconds_ago: i64, kind: OutcomeKind, latency_ms: u64, status: u16, codes: &[&str]) -> Outcome {
    Outcome {
        at: now() - chrono::Duration::seconds(seconds_ago),
        action: Action::Refresh,
        kind,
        latency_ms,
        http_status: Some(status),
        codes: codes.iter().map(|c| c.to_string()).collect(),
        request_id: Some(format!("req-{seconds_ago:04}")),
        client_request_id: None,
        message: None,
        by: None,
    }
}

/// name, workbook, status, seconds since the last call, its kind, its HTTP status, its codes
type Spec = (&'static str, &'static str, Status, i64, OutcomeKind, u16, &'static [&'static str]);

/// One session per status, with its newest outcome.
pub fn sessions() -> Vec<TrackedSession> {
    specs_with_history().into_iter().map(|(s, _)| s).collect()
}

/// The stored history of the session with `key`, newest first.
pub fn history(key: i64) -> Vec<Outcome> {
    specs_with_history().into_iter().find(|(s, _)| s.key == key).map(|(_, h)| h).unwrap_or_default()
}

fn specs_with_history() -> Vec<(TrackedSession, Vec<Outcome>)> {
    let specs: [Spec; 8] = [
        ("budget", "me/drive/items/01BUDGET", Status::Ok, 12, OutcomeKind::Ok, 204, &[]),
        (
            "sales",
            "drives/b!Xy/items/01SALES",
            Status::Expired,
            400,
            OutcomeKind::Expired,
            404,
            &["itemNotFound", "invalidSessionReCreatable"],
        ),
        (
            "legacy",
            "me/drive/items/01LEGACY",
            Status::Dead,
            90,
            OutcomeKind::Dead,
            400,
            &["badRequest", "invalidSessionUnsupportedWorkbook"],
        ),
        (
            "pipeline",
            "sites/contoso,1,2/drive/items/01PIPE",
            Status::Throttled,
            5,
            OutcomeKind::Throttled,
            429,
            &["TooManyRequests"],
        ),
        ("finance", "me/drive/items/01FIN", Status::Auth, 30, OutcomeKind::Auth, 401, &["InvalidAuthenticationToken"]),
        (
            "forecast",
            "me/drive/items/01FORECAST",
            Status::Error,
            8,
            OutcomeKind::Error,
            500,
            &["internalServerError", "generalException"],
        ),
        ("scratch", "me/drive/items/01SCRATCH", Status::Closed, 600, OutcomeKind::Ok, 204, &[]),
        ("fresh", "me/drive/items/01FRESH", Status::New, 0, OutcomeKind::Ok, 204, &[]),
    ];
    specs
        .iter()
        .enumerate()
        .map(|(i, (name, workbook, status, ago, kind, code, codes))| {
            let id = SessionId::new(&format!("cluster=PUS{i}&session={}", "AbCdEf0123456789".repeat(12))).unwrap();
            let mode = if i == 6 { Mode::NonPersistent } else { Mode::Persistent };
            let mut s = TrackedSession::new(
                name.to_string(),
                WorkbookRef::parse(workbook).unwrap(),
                id,
                mode,
                now() - chrono::Duration::hours(1),
            );
            s.key = i as i64 + 1;
            s.status = *status;
            let mut history = Vec::new();
            if *status != Status::New {
                history = (0..6)
                    .map(|n| {
                        outcome(
                            ago + 60 * n,
                            if n == 0 { *kind } else { OutcomeKind::Ok },
                            40 + 13 * n as u64 * (i as u64 + 1),
                            if n == 0 { *code } else { 204 },
                            if n == 0 { codes } else { &[] },
                        )
                    })
                    .collect();
                let last_ok = history.iter().find(|o| o.kind == OutcomeKind::Ok).map(|o| o.at);
                s.last_refresh = last_ok;
                s.last_call = history.first().map(Into::into);
                s.failures = if *kind == OutcomeKind::Ok { 0 } else { 1 };
            }
            if *name == "pipeline" {
                s.interval = Some(Duration::from_secs(90));
            }
            (s, history)
        })
        .collect()
}

pub fn app(no_color: bool) -> App {
    let mut app = App::new(info(no_color), sessions(), (120, 40), now());
    app.signin = Some(wbsessions::auth::SignInState::Source("fixed token"));
    app
}
