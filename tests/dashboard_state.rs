//! The dashboard's state and update logic, without a terminal.

mod common;

use common::dashboard::{app, now, sessions};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use wbsessions::engine::{Command, Event};
use wbsessions::session::{Outcome, OutcomeKind, Status};
use wbsessions::tui::Msg;
use wbsessions::tui::app::{Dialog, FormKind, SortBy};

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn chr(c: char) -> Msg {
    key(KeyCode::Char(c))
}

fn typed(app: &mut wbsessions::tui::App, text: &str) {
    for c in text.chars() {
        app.update(chr(c), now());
    }
}

fn name_of(app: &wbsessions::tui::App) -> String {
    app.selected_row().unwrap().session.name.clone()
}

#[test]
fn moves_through_the_sorted_list() {
    let mut app = app(false);
    assert_eq!(name_of(&app), "budget", "sorted by name, the first is selected");
    app.update(chr('j'), now());
    assert_eq!(name_of(&app), "finance");
    app.update(key(KeyCode::Down), now());
    app.update(chr('k'), now());
    assert_eq!(name_of(&app), "finance");
    app.update(chr('G'), now());
    assert_eq!(name_of(&app), "scratch");
    app.update(chr('j'), now());
    assert_eq!(name_of(&app), "scratch", "the end stays the end");
    app.update(chr('g'), now());
    assert_eq!(name_of(&app), "budget");
}

#[test]
fn refresh_targets_the_selection_or_the_marks() {
    let mut app = app(false);
    let budget = app.selected.unwrap();
    assert!(matches!(app.update(chr('r'), now()).as_slice(), [Command::Refresh(keys)] if keys == &vec![budget]));
    app.update(chr(' '), now()); // marks budget, moves on
    app.update(chr(' '), now()); // marks finance
    let marked = app.marks.clone();
    assert_eq!(marked.len(), 2);
    match app.update(chr('r'), now()).as_slice() {
        [Command::Refresh(keys)] => assert_eq!(keys.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(app.update(chr('R'), now()).as_slice(), [Command::RefreshAll]));
    app.update(key(KeyCode::Esc), now()); // the flash first
    app.update(key(KeyCode::Esc), now()); // then the marks
    assert!(app.marks.is_empty());
    assert!(matches!(app.update(chr('p'), now()).as_slice(), [Command::PauseAll(true)]));
    assert!(matches!(app.update(chr('a'), now()).as_slice(), [Command::SetAuto { auto: false, .. }]));
}

#[test]
fn filter_sort_and_failing_only_narrow_the_view() {
    let mut app = app(false);
    app.update(chr('/'), now());
    typed(&mut app, "01f");
    assert_eq!(app.view().len(), 3, "finance, forecast, fresh by workbook");
    app.update(key(KeyCode::Enter), now());
    assert!(!app.filtering);
    app.update(chr('/'), now());
    app.update(key(KeyCode::Esc), now());
    assert_eq!(app.view().len(), 8);

    app.update(chr('f'), now());
    let failing: Vec<String> = app.view().to_vec().iter().map(|k| app.rows[k].session.name.clone()).collect();
    assert_eq!(failing, ["finance", "forecast", "legacy", "pipeline", "sales"]);
    app.update(chr('f'), now());

    app.update(chr('s'), now());
    assert_eq!(app.sort, SortBy::Status);
    let first = app.view()[0];
    assert!(app.rows[&first].session.status.is_failing(), "failing sessions come first");
}

#[test]
fn the_create_dialog_validates_inline_and_then_sends_the_command() {
    let mut app = app(false);
    app.update(chr('n'), now());
    typed(&mut app, "budget");
    app.update(key(KeyCode::Tab), now());
    typed(&mut app, "me/drive/items/NEW");
    app.update(key(KeyCode::Enter), now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!("the dialog closed on a bad name") };
    assert!(form.error.as_deref().unwrap().contains("already tracked"), "{:?}", form.error);

    // Fix the name, break the interval.
    app.update(key(KeyCode::BackTab), now());
    for _ in 0..6 {
        app.update(key(KeyCode::Backspace), now());
    }
    typed(&mut app, "brand-new");
    app.update(key(KeyCode::Tab), now());
    app.update(key(KeyCode::Tab), now());
    typed(&mut app, "soon");
    assert!(app.update(key(KeyCode::Enter), now()).is_empty());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert!(form.error.as_deref().unwrap().starts_with("interval"), "{:?}", form.error);

    for _ in 0..4 {
        app.update(key(KeyCode::Backspace), now());
    }
    typed(&mut app, "90s");
    app.update(key(KeyCode::Tab), now());
    app.update(chr(' '), now()); // non-persistent on
    match app.update(key(KeyCode::Enter), now()).as_slice() {
        [Command::Create { name, workbook, mode, interval, recreate }] => {
            assert_eq!(name, "brand-new");
            assert_eq!(workbook.to_string(), "me/drive/items/NEW");
            assert_eq!(*mode, wbsessions::session::Mode::NonPersistent);
            assert_eq!(*interval, Some(std::time::Duration::from_secs(90)));
            assert!(!recreate);
        }
        other => panic!("{other:?}"),
    }
    assert!(app.dialog.is_none());
}

#[test]
fn track_and_edit_dialogs() {
    let mut app = app(false);
    app.update(chr('i'), now());
    typed(&mut app, "tracked");
    app.update(key(KeyCode::Tab), now());
    typed(&mut app, "me/drive/items/X");
    app.update(key(KeyCode::Tab), now());
    app.update(key(KeyCode::Enter), now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert!(form.error.as_deref().unwrap().contains("session id"), "{:?}", form.error);
    typed(&mut app, "cluster=X&session=Y");
    assert!(
        matches!(app.update(key(KeyCode::Enter), now()).as_slice(), [Command::Track(s)] if s.session_id.as_str() == "cluster=X&session=Y")
    );

    let selected = app.selected.unwrap();
    app.update(chr('e'), now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.kind, FormKind::Edit(selected));
    assert_eq!(form.fields[0].value, "budget");
    typed(&mut app, "-2");
    match app.update(key(KeyCode::Enter), now()).as_slice() {
        [Command::Edit { key, settings }] => {
            assert_eq!(*key, selected);
            assert_eq!(settings.name, "budget-2");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_and_remove_ask_first() {
    let mut app = app(false);
    app.update(chr('x'), now());
    assert!(matches!(app.dialog, Some(Dialog::Confirm { .. })));
    assert!(app.update(chr('n'), now()).is_empty());
    assert!(app.dialog.is_none());
    app.update(chr('c'), now());
    assert!(matches!(app.update(chr('y'), now()).as_slice(), [Command::Close(keys)] if keys.len() == 1));
    app.update(chr('x'), now());
    assert!(matches!(app.update(key(KeyCode::Enter), now()).as_slice(), [Command::Remove(_)]));
}

#[test]
fn engine_events_update_the_mirror() {
    let mut app = app(false);
    let key = app.selected.unwrap();
    app.update(chr('r'), now());
    app.update(Msg::Engine(Event::Started { key }), now());
    assert!(app.rows[&key].refreshing);
    assert_eq!(app.counts().get(&Status::Refreshing), Some(&1));

    let mut session = app.rows[&key].session.clone();
    session.status = Status::Expired;
    let outcome = Outcome {
        kind: OutcomeKind::Expired,
        codes: vec!["invalidSessionReCreatable".into()],
        ..session.outcomes[0].clone()
    };
    app.update(Msg::Engine(Event::Outcome { key, name: session.name.clone(), outcome, late: None }), now());
    app.update(Msg::Engine(Event::Changed(Box::new(session))), now());
    assert!(!app.rows[&key].refreshing);
    assert_eq!(app.rows[&key].session.status, Status::Expired);
    let flash = app.flash.clone().unwrap();
    assert!(flash.error && flash.text.contains("expired"), "a manual refresh that failed says so: {flash:?}");

    // The engine's plan wins over the estimate: an expired session that may not be recreated waits for nothing.
    let planned = now() + chrono::Duration::seconds(7);
    app.update(Msg::Engine(Event::Scheduled { key, at: Some(planned) }), now());
    assert_eq!(app.next_due(&app.rows[&key].session.clone()), Some(planned));
    app.update(Msg::Engine(Event::Scheduled { key, at: None }), now());
    assert_eq!(app.next_due(&app.rows[&key].session.clone()), None);

    app.update(Msg::Engine(Event::Removed { key, name: "budget".into() }), now());
    assert!(!app.rows.contains_key(&key));
    assert_eq!(name_of(&app), "finance", "the selection moves to the next row");

    let mut added = sessions()[0].clone();
    added.key = 99;
    added.name = "zeta".into();
    app.update(Msg::Engine(Event::Added(Box::new(added))), now());
    assert_eq!(app.rows.len(), 8);

    app.update(Msg::Engine(Event::Error("store: disk full".into())), now());
    app.update(Msg::Tick, now() + chrono::Duration::seconds(60));
    assert!(app.flash.is_some(), "errors stay until dismissed");
    app.update(key_esc(), now());
    assert!(app.flash.is_none());
    app.update(Msg::Engine(Event::Paused(true)), now());
    app.update(Msg::Tick, now() + chrono::Duration::seconds(60));
    assert!(app.flash.is_none(), "info flashes go by themselves");
    assert!(app.paused);
    app.update(Msg::Engine(Event::Stopped), now());
    assert!(app.quit);
}

fn key_esc() -> Msg {
    key(KeyCode::Esc)
}

#[test]
fn help_mouse_and_quit() {
    let mut app = app(false);
    app.update(chr('?'), now());
    assert!(app.help);
    assert!(app.update(chr('r'), now()).is_empty(), "any key closes the help and does nothing else");
    assert!(!app.help);

    app.table_rows = Rect::new(0, 4, 80, 10);
    app.update(
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 5,
            row: 6,
            modifiers: KeyModifiers::NONE,
        }),
        now(),
    );
    assert_eq!(name_of(&app), "forecast", "the third row");
    app.update(
        Msg::Mouse(MouseEvent { kind: MouseEventKind::ScrollDown, column: 5, row: 6, modifiers: KeyModifiers::NONE }),
        now(),
    );
    assert_eq!(name_of(&app), "fresh");

    app.update(Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), now());
    assert!(app.quit);
}

fn draw(app: &mut wbsessions::tui::App, at: chrono::DateTime<chrono::Utc>) {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 40)).unwrap();
    terminal.draw(|frame| wbsessions::tui::view::draw(frame, app, at)).unwrap();
    app.dirty = false;
}

#[test]
fn a_tick_redraws_only_when_a_time_on_screen_reads_differently() {
    let mut app = app(false);
    draw(&mut app, now());
    app.update(Msg::Tick, now());
    assert!(!app.dirty, "nothing on screen changed");
    app.update(Msg::Tick, now() + chrono::Duration::seconds(1));
    assert!(app.dirty, "'12s ago' became '13s ago'");

    // Sessions refreshed minutes ago: a minute passes between redraws.
    let mut sessions = common::dashboard::sessions();
    for s in &mut sessions {
        s.last_refresh = Some(now() - chrono::Duration::seconds(330));
        s.interval = Some(std::time::Duration::from_secs(3600));
    }
    let mut app = wbsessions::tui::App::new(common::dashboard::info(false), sessions);
    draw(&mut app, now());
    let redraws = (1..=59)
        .filter(|s| {
            let at = now() + chrono::Duration::seconds(*s);
            app.update(Msg::Tick, at);
            let dirty = app.dirty;
            if dirty {
                draw(&mut app, at);
            }
            dirty
        })
        .count();
    assert!(redraws <= 2, "{redraws} redraws in a minute of minutes-only times");

    let mut empty = wbsessions::tui::App::new(common::dashboard::info(false), Vec::new());
    draw(&mut empty, now());
    empty.update(Msg::Tick, now() + chrono::Duration::seconds(5));
    assert!(!empty.dirty);
}

#[test]
fn signing_in_from_the_dashboard() {
    use wbsessions::tui::app::SignInEvent;
    let mut app = app(false);
    app.update(chr('l'), now());
    assert!(app.sign_in_requested, "the event loop is asked to start the flow");
    assert!(matches!(app.dialog, Some(Dialog::SignIn(_))));
    app.update(
        Msg::SignIn(SignInEvent::Code {
            verification_uri: "https://microsoft.com/devicelogin".into(),
            user_code: "ABCD1234".into(),
            expires_in: 900,
        }),
        now(),
    );
    let Some(Dialog::SignIn(dialog)) = &app.dialog else { panic!() };
    assert_eq!(dialog.code.as_ref().map(|(_, c)| c.as_str()), Some("ABCD1234"));
    // Sessions that failed for want of a token are refreshed as soon as the sign-in is done.
    let finance = app.rows.values().find(|r| r.session.status == Status::Auth).unwrap().session.key;
    match app.update(Msg::SignIn(SignInEvent::Done(Ok("Ana".into()))), now()).as_slice() {
        [Command::Refresh(keys)] => assert_eq!(keys, &vec![finance]),
        other => panic!("{other:?}"),
    }
    assert!(app.dialog.is_none());
    assert!(app.flash.as_ref().unwrap().text.contains("Ana"));

    app.update(chr('l'), now());
    app.update(Msg::SignIn(SignInEvent::Done(Err("the sign-in was declined".into()))), now());
    let Some(Dialog::SignIn(dialog)) = &app.dialog else { panic!() };
    assert_eq!(dialog.error.as_deref(), Some("the sign-in was declined"));
    app.update(key(KeyCode::Esc), now());
    assert!(app.dialog.is_none());
}
