//! What the dashboard draws, frozen: ratatui's TestBackend at 80x24, 120x40 and a tiny size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use common::dashboard::{app, now};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use wbsessions::auth::Progress as SignInProgress;
use wbsessions::engine::{Event, JobKind, Reply};
use wbsessions::tui::{App, Driver, Msg, view};

/// Lays the app out for the size (as a resize would), then draws it.
fn render(app: &mut App, width: u16, height: u16) -> Terminal<TestBackend> {
    app.update(Msg::Resize(width, height), now());
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| view::draw(frame, app, now())).unwrap();
    terminal
}

fn press(app: &mut App, c: char) {
    app.update(Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)), now());
}

fn press_code(app: &mut App, code: KeyCode) {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)), now());
}

#[test]
fn every_status_at_80x24() {
    insta::assert_snapshot!(render(&mut app(false), 80, 24).backend());
}

#[test]
fn every_status_at_120x40() {
    insta::assert_snapshot!(render(&mut app(false), 120, 40).backend());
}

#[test]
fn too_small_shows_a_message() {
    insta::assert_snapshot!(render(&mut app(false), 20, 5).backend());
}

#[test]
fn help_overlay() {
    let mut app = app(false);
    press(&mut app, '?');
    insta::assert_snapshot!(render(&mut app, 120, 40).backend());
}

#[test]
fn details_pane() {
    let mut app = app(false);
    press(&mut app, 'j');
    press(&mut app, 'j');
    press_code(&mut app, KeyCode::Enter);
    let key = app.selected.unwrap();
    app.update(
        Msg::Answer {
            kind: wbsessions::engine::JobKind::History,
            key: Some(key),
            about: String::new(),
            answer: Ok(wbsessions::engine::Reply::History(common::dashboard::history(key))),
        },
        now(),
    );
    insta::assert_snapshot!(render(&mut app, 120, 40).backend());
}

#[test]
fn create_dialog_with_an_error() {
    let mut app = app(false);
    press(&mut app, 'n');
    for c in "bad name".chars() {
        press(&mut app, c);
    }
    press_code(&mut app, KeyCode::Enter);
    insta::assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn track_dialog() {
    let mut app = app(false);
    press(&mut app, 'i');
    insta::assert_snapshot!(render(&mut app, 120, 40).backend());
}

#[test]
fn edit_dialog() {
    let mut app = app(false);
    press(&mut app, 'e');
    insta::assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn confirm_close_and_remove() {
    let mut app = app(false);
    press(&mut app, 'c');
    insta::assert_snapshot!("confirm_close", render(&mut app, 80, 24).backend());
    press(&mut app, 'n');
    press(&mut app, ' ');
    press(&mut app, ' ');
    press(&mut app, 'x');
    insta::assert_snapshot!("confirm_remove", render(&mut app, 80, 24).backend());
}

#[test]
fn watching_paused_filtered_and_failing_only() {
    let mut app = app(false);
    app.info.driver = Driver::Other(Some(4242));
    press(&mut app, 'f');
    press(&mut app, '/');
    for c in "fore".chars() {
        press(&mut app, c);
    }
    insta::assert_snapshot!(render(&mut app, 120, 40).backend());
}

#[test]
fn no_color_keeps_the_words_and_drops_the_colours() {
    let mut plain = app(true);
    let terminal = render(&mut plain, 120, 40);
    let buffer = terminal.backend().buffer();
    for cell in buffer.content() {
        assert_eq!(cell.fg, Color::Reset, "a coloured cell under NO_COLOR: {cell:?}");
        assert_eq!(cell.bg, Color::Reset, "a coloured cell under NO_COLOR: {cell:?}");
    }
    let coloured = render(&mut app(false), 120, 40);
    assert_eq!(terminal.backend().to_string(), coloured.backend().to_string(), "the same words either way");
    assert!(coloured.backend().buffer().content().iter().any(|c| c.fg == Color::Green), "statuses are coloured");
}

#[test]
fn only_visible_rows_are_built_and_a_big_list_scrolls() {
    let mut sessions = common::dashboard::sessions();
    let template = sessions[0].clone();
    for i in 0..5000 {
        let mut s = template.clone();
        s.key = 1000 + i;
        s.name = format!("bulk-{i:05}");
        sessions.push(s);
    }
    let mut app = App::new(common::dashboard::info(false), sessions, (80, 24), now());
    press(&mut app, 'G');
    let screen = render(&mut app, 80, 24).backend().to_string();
    assert!(screen.contains("scratch"), "the last row is on screen after G:\n{screen}");
}

#[test]
fn sign_in_dialog() {
    let mut app = app(false);
    press(&mut app, 'l');
    app.update(
        Msg::Engine(Event::SignIn(SignInProgress::Code {
            verification_uri: "https://microsoft.com/devicelogin".into(),
            user_code: "FJ3K7MPQX".into(),
            expires_in: 900,
        })),
        now(),
    );
    insta::assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn dialogs_keep_their_action_line_and_errors_at_40x12() {
    let mut app = app(false);
    press(&mut app, 'l');
    app.update(
        Msg::Engine(Event::SignIn(SignInProgress::Done(Err(wbsessions::auth::signin::NO_CLIENT_ID.into())))),
        now(),
    );
    let screen = render(&mut app, 40, 12).backend().to_string();
    assert!(screen.contains("docs/configuration.md"), "the part that says what to do is shown:\n{screen}");
    insta::assert_snapshot!("sign_in_error_40x12", screen);
    press_code(&mut app, KeyCode::Esc);

    press(&mut app, 'i');
    for c in "tracked".chars() {
        press(&mut app, c);
    }
    press_code(&mut app, KeyCode::Tab);
    press_code(&mut app, KeyCode::Tab);
    app.update(Msg::Paste(format!("cluster=PUS&session={}", "AbCdEf0123456789".repeat(20))), now());
    press_code(&mut app, KeyCode::Enter);
    let screen = render(&mut app, 40, 12).backend().to_string();
    assert!(screen.contains("workbook reference"), "the form's error stays in the box:\n{screen}");
    insta::assert_snapshot!("track_error_40x12", screen);
    press_code(&mut app, KeyCode::Esc);

    press(&mut app, 'c');
    insta::assert_snapshot!("confirm_close_40x12", render(&mut app, 40, 12).backend());
}

#[test]
fn the_table_at_60x20_and_40x12() {
    let mut sessions = common::dashboard::sessions();
    sessions[0].workbook = wbsessions::session::WorkbookRef::parse("me/drive/items/01BUDGET2026").unwrap();
    let mut app = App::new(common::dashboard::info(false), sessions, (60, 20), now());
    let screen = render(&mut app, 60, 20).backend().to_string();
    let budget = screen.lines().find(|l| l.contains("budget")).unwrap();
    assert!(budget.contains('…') && budget.contains("2026"), "the item id end of the workbook stays: {budget}");
    insta::assert_snapshot!("table_60x20", screen);
    insta::assert_snapshot!("table_40x12", render(&mut app, 40, 12).backend());
}

#[test]
fn help_at_80x24_scrolls_to_the_legend() {
    let mut app = app(false);
    press(&mut app, '?');
    insta::assert_snapshot!("help_80x24", render(&mut app, 80, 24).backend());
    for _ in 0..3 {
        press_code(&mut app, KeyCode::PageDown);
    }
    let screen = render(&mut app, 80, 24).backend().to_string();
    assert!(screen.contains("statuses") || screen.contains("likely expired"), "{screen}");
    insta::assert_snapshot!("help_80x24_legend", screen);
}

#[test]
fn the_log_view_and_a_sorted_reversed_table() {
    let mut app = app(false);
    app.update(Msg::Engine(Event::Error("store: disk full".into())), now());
    press(&mut app, 'L');
    let problems = Ok(Reply::Problems(Vec::new()));
    app.update(Msg::Answer { kind: JobKind::History, key: None, about: String::new(), answer: problems }, now());
    insta::assert_snapshot!("log_view", render(&mut app, 80, 24).backend());
    // At 40 columns the log folder wraps instead of being cut.
    let narrow = render(&mut app, 40, 12).backend().to_string();
    let folder: String = narrow.lines().flat_map(|l| l.trim_matches(['│', ' ', '"']).split_whitespace()).collect();
    assert!(folder.contains(&app.info.log_dir.replace(' ', "")), "{narrow}");
    press_code(&mut app, KeyCode::Esc);
    press_code(&mut app, KeyCode::Esc);
    for _ in 0..6 {
        press(&mut app, 's');
    }
    press(&mut app, 'S');
    insta::assert_snapshot!("sorted_by_expiry_reversed", render(&mut app, 120, 40).backend());
}

#[test]
fn a_sign_in_refused_for_every_session_shows_a_banner() {
    let mut sessions = common::dashboard::sessions();
    for s in sessions.iter_mut().filter(|s| s.is_kept_alive()) {
        s.status = wbsessions::session::Status::Auth;
    }
    let mut app = App::new(common::dashboard::info(false), sessions, (80, 24), now());
    let screen = render(&mut app, 80, 24);
    let second_line: String = (0..80).map(|x| screen.backend().buffer()[(x, 1)].symbol().to_string()).collect();
    assert!(second_line.starts_with("signed out: press l or run wbsessions login"), "{second_line}");
    insta::assert_snapshot!(screen.backend());
}

/// Colour 8 is Solarized Dark's background and too pale on white: the light and Solarized
/// presets never use it, on any screen.
#[test]
fn light_and_solarized_themes_use_no_colour_8() {
    use wbsessions::tui::theme::ThemePreset;
    for preset in [ThemePreset::Light, ThemePreset::SolarizedDark] {
        let mut app = app(false);
        app.info.palette = common::dashboard::palette(preset);
        app.update(Msg::Engine(Event::Error("store: disk full".into())), now());
        let mut screens = vec![render(&mut app, 80, 24)];
        press(&mut app, ' ');
        press_code(&mut app, KeyCode::Enter);
        screens.push(render(&mut app, 80, 24));
        press(&mut app, '?');
        screens.push(render(&mut app, 120, 40));
        press_code(&mut app, KeyCode::Esc);
        press(&mut app, 'n');
        screens.push(render(&mut app, 80, 24));
        for screen in screens {
            for cell in screen.backend().buffer().content() {
                assert_ne!(cell.fg, Color::DarkGray, "{preset:?}: {cell:?}");
                assert_ne!(cell.bg, Color::DarkGray, "{preset:?}: {cell:?}");
            }
        }
    }
}

#[test]
fn a_status_filter_with_its_count_and_a_bulk_refresh_in_the_header() {
    let mut app = app(false);
    press(&mut app, '/');
    for c in "status:exp".chars() {
        press(&mut app, c);
    }
    press_code(&mut app, KeyCode::Enter);
    press(&mut app, 'A');
    insta::assert_snapshot!("status_filter_80x24", render(&mut app, 80, 24).backend());
    press_code(&mut app, KeyCode::Esc);
    press(&mut app, 'R');
    insta::assert_snapshot!("bulk_refresh_80x24", render(&mut app, 80, 24).backend());
}

#[test]
fn the_header_shows_the_proxy_it_serves() {
    let mut app = app(false);
    app.proxy = Some(wbsessions::tui::ProxyGauge { last_minute: Box::new(|| (1200, 3)) });
    insta::assert_snapshot!(render(&mut app, 120, 12).backend());
}

#[test]
fn the_header_shows_the_keepers_sharing_the_store() {
    let mut app = app(false);
    let keeper = |host: &str, pid: u32, workbooks: u64| wbsessions::store::KeeperInfo {
        host: host.into(),
        pid: Some(pid),
        since: None,
        quiet_secs: Some(0.4),
        workbooks: Some(workbooks),
        sessions: Some(workbooks * 10),
        owner: Some("ada@contoso.example".into()),
    };
    app.update(Msg::Engine(Event::Keepers(vec![keeper("web1", 4242, 334), keeper("web2", 977, 333)])), now());
    // Sessions of two sign-ins: an OWNER column tells them apart (one sign-in shows none).
    let mut keys: Vec<i64> = app.rows.keys().copied().collect();
    keys.sort_unstable();
    for (i, key) in keys.iter().enumerate() {
        let mut session = (*app.rows[key].session).clone();
        session.owner = Some(if i % 2 == 0 { "ada@contoso.example" } else { "bob@contoso.example" }.into());
        app.update(Msg::Engine(Event::Changed(std::sync::Arc::new(session))), now());
    }
    insta::assert_snapshot!(render(&mut app, 120, 12).backend());
}
