//! The dashboard's state and update logic, without a terminal: keys and events in, effects out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use common::dashboard::{app, history, now, sessions};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use wbsessions::auth::{Progress as SignInProgress, SignInState};
use wbsessions::engine::{EngineError, Event, JobKind, Reply, Request};
use wbsessions::session::SortBy;
use wbsessions::session::{Outcome, OutcomeKind, SettingsChange, Status};
use wbsessions::tui::app::{App, Effect, Msg, Overlay};
use wbsessions::tui::dialog::{Dialog, FormKind};

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn chr(c: char) -> Msg {
    key(KeyCode::Char(c))
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

/// The requests to the engine among effects.
fn commands(effects: Vec<Effect>) -> Vec<Request> {
    effects.into_iter().filter_map(|e| if let Effect::Ask { request, .. } = e { Some(request) } else { None }).collect()
}

fn press(app: &mut App, msg: Msg) -> Vec<Request> {
    commands(app.update(msg, now()))
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(chr(c), now());
    }
}

fn name_of(app: &App) -> String {
    app.selected_row().unwrap().session.name.clone()
}

fn done(kind: JobKind, key: Option<i64>, name: &str, result: Result<(), String>) -> Msg {
    let answer = result.map(|()| Reply::Done).map_err(EngineError::Refused);
    Msg::Answer { kind, key, about: name.into(), answer }
}

/// The stored outcomes of a session, as the engine answers a request for them.
fn history_of(key: i64, outcomes: Vec<Outcome>) -> Msg {
    Msg::Answer { kind: JobKind::History, key: Some(key), about: String::new(), answer: Ok(Reply::History(outcomes)) }
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
    assert!(matches!(press(&mut app, chr('r')).as_slice(), [Request::Refresh(k)] if *k == budget));
    app.update(chr(' '), now()); // marks budget, moves on
    app.update(chr(' '), now()); // marks finance
    assert_eq!(app.marks.len(), 2);
    match press(&mut app, chr('r')).as_slice() {
        [Request::Refresh(a), Request::Refresh(b)] => assert_ne!(a, b),
        other => panic!("{other:?}"),
    }
    // `R`: one refresh per session that is not closed, counted together in the header.
    let open = app.rows.values().filter(|r| r.session.status != Status::Closed).count();
    let all = press(&mut app, chr('R'));
    assert_eq!(all.len(), open);
    assert!(all.iter().all(|r| matches!(r, Request::Refresh(_))));
    app.update(key(KeyCode::Esc), now()); // the marks
    assert!(app.marks.is_empty());
    assert!(matches!(press(&mut app, chr('p')).as_slice(), [Request::PauseAll(true)]));
    assert!(matches!(press(&mut app, chr('a')).as_slice(), [Request::SetAuto { auto: false, .. }]));
}

#[test]
fn refreshing_a_closed_session_says_why_nothing_happens() {
    let mut app = app(false);
    app.update(chr('G'), now());
    assert_eq!(name_of(&app), "scratch");
    assert!(press(&mut app, chr('r')).is_empty(), "nothing is sent for a closed session");
    let flash = app.flash.clone().unwrap();
    assert!(flash.text.contains("closed") && flash.text.contains("recreate"), "{flash:?}");
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
    let failing: Vec<String> = app.view().iter().map(|k| app.rows[k].session.name.clone()).collect();
    assert_eq!(failing, ["finance", "forecast", "legacy", "pipeline", "sales"]);
    app.update(chr('f'), now());

    for _ in 0..3 {
        app.update(chr('s'), now());
    }
    assert_eq!(app.sort.by, SortBy::Status);
    let first = app.view()[0];
    assert!(app.status_of(&app.rows[&first]).is_failing(), "failing sessions come first");
    app.update(chr('S'), now());
    let last = *app.view().last().unwrap();
    assert!(app.status_of(&app.rows[&last]).is_failing(), "S reverses: failing sessions last");
}

#[test]
fn the_create_dialog_checks_with_the_one_rule_and_then_sends_the_command() {
    let mut app = app(false);
    app.update(chr('n'), now());
    typed(&mut app, "budget");
    app.update(key(KeyCode::Tab), now());
    typed(&mut app, "me/drive/items/NEW");
    app.update(key(KeyCode::Enter), now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!("the dialog closed on a taken name") };
    let error = form.error.as_ref().unwrap();
    assert_eq!(error.field, Some("name"), "said under the field it is about");
    assert!(error.text.contains("already tracked"), "{error:?}");

    // The focus went to the name: fix it with the editing keys a shell has (ctrl-u clears).
    app.update(ctrl('u'), now());
    typed(&mut app, "brand-new");
    app.update(key(KeyCode::Tab), now());
    app.update(key(KeyCode::Tab), now());
    typed(&mut app, "soon");
    assert!(press(&mut app, key(KeyCode::Enter)).is_empty());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.error.as_ref().unwrap().field, Some("interval"), "{:?}", form.error);

    // An interval longer than the idle expiry is warned about once, like the command line does.
    app.update(ctrl('u'), now());
    typed(&mut app, "10m");
    assert!(press(&mut app, key(KeyCode::Enter)).is_empty());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert!(form.warning.as_deref().unwrap().contains("expire first"), "{:?}", form.warning);

    app.update(ctrl('w'), now());
    typed(&mut app, "90s");
    app.update(key(KeyCode::Tab), now());
    app.update(chr(' '), now()); // non-persistent on
    match press(&mut app, key(KeyCode::Enter)).as_slice() {
        [Request::Create(new)] => {
            assert_eq!(new.name, "brand-new");
            assert_eq!(new.workbook.to_string(), "me/drive/items/NEW");
            assert_eq!(new.mode, wbsessions::session::Mode::NonPersistent);
            assert_eq!(new.interval, Some(std::time::Duration::from_secs(90)));
            assert!(!new.recreate, "the default, as on the command line");
        }
        other => panic!("{other:?}"),
    }
    // The form waits for the answer with what was typed; keys but esc do nothing meanwhile.
    let Some(Dialog::Form(form)) = &app.dialog else { panic!("the form closed before the answer") };
    assert!(form.sent);
    assert!(press(&mut app, chr('x')).is_empty());

    // Graph does not know the workbook: said under it, everything typed kept.
    let failure = wbsessions::engine::Failure::Graph(wbsessions::graph::GraphError {
        class: wbsessions::graph::ErrorClass::Dead,
        meta: wbsessions::graph::CallMeta {
            http_status: Some(404),
            request_id: Some("req-1".into()),
            client_request_id: "client".into(),
            latency: std::time::Duration::ZERO,
            requests: 1,
        },
        codes: vec!["itemNotFound".into()],
        message: Some("The resource could not be found.".into()),
        retry_after: None,
    });
    let refused = Err(EngineError::Dead(Box::new(failure)));
    app.update(Msg::Answer { kind: JobKind::Create, key: None, about: "brand-new".into(), answer: refused }, now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!("a refusal closed the form") };
    assert_eq!(form.error.as_ref().unwrap().field, Some("workbook"));
    assert_eq!(form.fields[0].text_value(), Some("brand-new"));
    assert_eq!(form.fields[1].text_value(), Some("me/drive/items/NEW"));
    assert!(app.flash.is_none(), "said in the form, not in a toast");

    // Sent again, and this time it works: the form closes and the footer says so.
    assert_eq!(press(&mut app, key(KeyCode::Enter)).len(), 1);
    let created = Ok(Reply::Done);
    app.update(Msg::Answer { kind: JobKind::Create, key: None, about: "brand-new".into(), answer: created }, now());
    assert!(app.dialog.is_none());
    assert!(app.flash.as_ref().unwrap().text.contains("created brand-new"), "{:?}", app.flash);
}

#[test]
fn form_fields_take_cursor_keys_and_paste() {
    let mut app = app(false);
    app.update(chr('n'), now());
    typed(&mut app, "abd");
    app.update(key(KeyCode::Left), now());
    typed(&mut app, "c");
    app.update(key(KeyCode::Home), now());
    typed(&mut app, "x-");
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.fields[0].text_value(), Some("x-abcd"));
    app.update(key(KeyCode::Tab), now());
    app.update(Msg::Paste("me/drive/items/PASTED\n".into()), now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.fields[1].text_value(), Some("me/drive/items/PASTED"), "control characters are not pasted");
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
    assert_eq!(form.error.as_ref().unwrap().field, Some("session id"), "{:?}", form.error);
    typed(&mut app, "cluster=X&session=Y");
    assert!(matches!(
        press(&mut app, key(KeyCode::Enter)).as_slice(),
        [Request::Track(new)] if new.session_id.as_ref().map(|i| i.as_str()) == Some("cluster=X&session=Y")
    ));
    // The id is tracked already: said under the id, the form kept; then a good answer closes it.
    let taken = Err(EngineError::Store(wbsessions::store::StoreError::IdTaken("budget".into())));
    app.update(Msg::Answer { kind: JobKind::Track, key: None, about: "tracked".into(), answer: taken }, now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!("a refusal closed the form") };
    assert_eq!(form.error.as_ref().unwrap().field, Some("session id"));
    assert!(form.error.as_ref().unwrap().text.contains("budget"));
    assert_eq!(press(&mut app, key(KeyCode::Enter)).len(), 1);
    app.update(
        Msg::Answer { kind: JobKind::Track, key: None, about: "tracked".into(), answer: Ok(Reply::Done) },
        now(),
    );
    assert!(app.dialog.is_none());

    let selected = app.selected.unwrap();
    app.update(chr('e'), now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.kind, FormKind::Edit(selected));
    assert_eq!(form.fields[0].text_value(), Some("budget"));
    typed(&mut app, "-2");
    match press(&mut app, key(KeyCode::Enter)).as_slice() {
        [Request::Edit { key, change }] => {
            assert_eq!(*key, selected);
            let renamed = SettingsChange { name: Some("budget-2".into()), ..SettingsChange::default() };
            assert_eq!(*change, renamed, "only what the form changed is sent");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_and_remove_ask_first_and_only_y_confirms() {
    let mut app = app(false);
    app.update(chr('x'), now());
    assert!(matches!(app.dialog, Some(Dialog::Confirm { .. })));
    assert!(press(&mut app, key(KeyCode::Enter)).is_empty(), "enter does not confirm a destructive action");
    assert!(press(&mut app, chr('n')).is_empty());
    assert!(app.dialog.is_none());
    app.update(chr('c'), now());
    assert!(matches!(press(&mut app, chr('y')).as_slice(), [Request::Close(_)]));
    assert!(app.flash.as_ref().unwrap().text.contains("closing budget"));
    app.update(chr('x'), now());
    assert!(matches!(press(&mut app, chr('y')).as_slice(), [Request::Remove(_)]));
}

#[test]
fn the_user_sees_a_close_through_to_its_end() {
    let mut app = app(false);
    let key = app.selected.unwrap();
    app.update(chr('c'), now());
    app.update(chr('y'), now());
    assert_eq!(app.flash.as_ref().unwrap().text, "closing budget…");
    app.update(done(JobKind::Close, Some(key), "budget", Ok(())), now());
    assert_eq!(app.flash.as_ref().unwrap().text, "closed budget");
}

#[test]
fn engine_events_update_the_mirror_and_messages_follow_the_newest() {
    let mut app = app(false);
    let key = app.selected.unwrap();
    app.update(chr('r'), now());
    app.update(Msg::Engine(Event::Started { key, kind: JobKind::Refresh }), now());
    assert!(app.rows[&key].refreshing);
    assert_eq!(app.counts().get(&Status::Refreshing), Some(&1));

    let mut session = (*app.rows[&key].session).clone();
    session.status = Status::Expired;
    session.failures = 1;
    let outcome = Outcome {
        kind: OutcomeKind::Expired,
        codes: vec!["invalidSessionReCreatable".into()],
        ..common::dashboard::history(key)[0].clone()
    };
    app.update(Msg::Engine(Event::Outcome { key, name: session.name.clone(), outcome, late: None }), now());
    app.update(Msg::Engine(Event::Changed(std::sync::Arc::new(session.clone()))), now());
    app.update(done(JobKind::Refresh, Some(key), "budget", Err("session expired (HTTP 404)".into())), now());
    assert!(!app.rows[&key].refreshing);
    assert_eq!(app.rows[&key].session.status, Status::Expired);
    let flash = app.flash.clone().unwrap();
    assert!(flash.error && flash.text.contains("expired"), "a refresh that failed says so: {flash:?}");

    // A success elsewhere is still said: the newest message wins.
    app.update(done(JobKind::Refresh, Some(5), "finance", Ok(())), now());
    assert_eq!(app.flash.as_ref().map(|f| (f.error, f.text.as_str())), Some((false, "finance: refreshed")));
    // An error about a session goes once that session works again.
    app.update(done(JobKind::Refresh, Some(key), "budget", Err("session expired".into())), now());
    session.status = Status::Ok;
    session.failures = 0;
    app.update(Msg::Engine(Event::Changed(std::sync::Arc::new(session))), now());
    assert!(app.flash.is_none(), "{:?}", app.flash);

    // The engine's plan wins over the estimate: a session that will not be refreshed waits for nothing.
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
    app.update(Msg::Engine(Event::Added(std::sync::Arc::new(added))), now());
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
    let row = app.rows.values().find(|r| r.session.auto && r.session.is_kept_alive()).unwrap();
    assert_eq!(app.row_times(row, now()).next, "paused", "NEXT says so, as `list` does");
    assert!(matches!(app.update(Msg::Engine(Event::Stopped), now()).as_slice(), [Effect::Quit]));
}

fn key_esc() -> Msg {
    key(KeyCode::Esc)
}

#[test]
fn a_session_past_its_idle_expiry_is_stale_not_ok() {
    let mut app = app(false);
    let key = app.selected.unwrap();
    assert_eq!(app.status_of(&app.rows[&key]), Status::Ok, "budget was refreshed 12 s ago");
    // Five minutes on without a refresh: Graph has likely expired it.
    let later = now() + chrono::Duration::seconds(300);
    app.update(Msg::Tick, later);
    assert_eq!(app.status_of(&app.rows[&key]), Status::Stale);
    assert_eq!(app.counts().get(&Status::Stale), Some(&1));
    assert_eq!(app.counts().get(&Status::Ok), None);
}

#[test]
fn help_mouse_and_quit() {
    let mut app = app(false);
    app.update(chr('?'), now());
    assert_eq!(app.overlay, Some(Overlay::Help { scroll: 0 }));
    app.update(chr('j'), now());
    app.update(key(KeyCode::PageDown), now());
    assert!(matches!(app.overlay, Some(Overlay::Help { scroll }) if scroll > 1), "the help scrolls");
    assert!(app.update(chr('r'), now()).is_empty(), "another key closes the help and does nothing else");
    assert_eq!(app.overlay, None);

    let rows = app.layout.table_rows;
    let click = |row: u16, kind| Msg::Mouse(MouseEvent { kind, column: 5, row, modifiers: KeyModifiers::NONE });
    app.update(click(rows.y + 2, MouseEventKind::Down(MouseButton::Left)), now());
    assert_eq!(name_of(&app), "forecast", "the third row");
    app.update(click(rows.y + 2, MouseEventKind::ScrollDown), now());
    assert_eq!(name_of(&app), "fresh");

    // Behind a dialog the table hears nothing.
    app.update(chr('c'), now());
    app.update(click(rows.y, MouseEventKind::Down(MouseButton::Left)), now());
    app.update(click(rows.y, MouseEventKind::ScrollDown), now());
    assert_eq!(name_of(&app), "fresh");
    app.update(key_esc(), now());

    assert!(matches!(app.update(ctrl('c'), now()).as_slice(), [Effect::Quit]));
}

#[test]
fn copy_keys_put_the_id_or_the_url_on_the_clipboard() {
    let mut app = app(false);
    let id = app.selected_row().unwrap().session.session_id.to_string();
    match app.update(chr('y'), now()).as_slice() {
        [Effect::Copy(text)] => assert_eq!(text, &id),
        other => panic!("{other:?}"),
    }
    assert!(app.flash.as_ref().unwrap().text.contains("copied the session id of budget"));
    match app.update(chr('Y'), now()).as_slice() {
        [Effect::Copy(text)] => assert_eq!(text, "https://graph.microsoft.com/v1.0/me/drive/items/01BUDGET/workbook"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn page_keys_clicks_on_headers_and_natural_names() {
    let mut sessions = common::dashboard::sessions();
    let template = sessions[0].clone();
    for i in 1..=120 {
        let mut s = template.clone();
        s.key = 1000 + i;
        s.name = format!("s{i}");
        sessions.push(s);
    }
    let mut app = App::new(common::dashboard::info(false), sessions, (120, 40), now());
    let names: Vec<String> = app.view().iter().map(|k| app.rows[k].session.name.clone()).collect();
    let s2 = names.iter().position(|n| n == "s2").unwrap();
    let s10 = names.iter().position(|n| n == "s10").unwrap();
    assert!(s2 < s10, "s2 before s10");
    let page = usize::from(app.layout.table_rows.height);
    app.update(key(KeyCode::PageDown), now());
    assert_eq!(app.selected_index(), Some(page));
    app.update(ctrl('u'), now());
    assert_eq!(app.selected_index(), Some(page - page / 2));
    app.update(key(KeyCode::End), now());
    assert_eq!(app.selected_index(), Some(app.view().len() - 1));
    app.update(key(KeyCode::Home), now());
    assert_eq!(app.selected_index(), Some(0));

    // A click on the FAILS header sorts by failures; a second click reverses.
    let fails = app.columns.iter().find(|p| p.col == wbsessions::tui::layout::Col::Failures).unwrap().x;
    let header = app.layout.table_header;
    let click = Msg::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: header.x + fails,
        row: header.y,
        modifiers: KeyModifiers::NONE,
    });
    app.update(click.clone(), now());
    assert_eq!((app.sort.by, app.sort.reverse), (SortBy::Failures, false));
    app.update(click, now());
    assert_eq!((app.sort.by, app.sort.reverse), (SortBy::Failures, true));
}

#[test]
fn times_details_focus_log_and_recreate() {
    let mut app = app(false);
    assert!(app.row_times(app.selected_row().unwrap(), now()).last.ends_with("ago"));
    app.update(chr('t'), now());
    let absolute = app.row_times(app.selected_row().unwrap(), now()).last;
    assert!(absolute.len() == 8 && absolute.matches(':').count() == 2, "{absolute}");

    let budget = app.selected.unwrap();
    app.update(key(KeyCode::Enter), now());
    // More outcomes than the pane shows, so that there is something to scroll.
    let outcomes: Vec<Outcome> = std::iter::repeat_with(|| history(budget)).take(20).flatten().collect();
    app.update(history_of(budget, outcomes), now());
    app.update(key(KeyCode::Tab), now());
    assert!(app.details_focus);
    app.update(chr('j'), now());
    app.update(chr('j'), now());
    assert_eq!((app.detail_scroll, app.selected), (2, Some(budget)), "j scrolls the details, not the table");
    app.update(key(KeyCode::Tab), now());
    app.update(chr('j'), now());
    assert_ne!(app.selected, Some(budget));

    app.update(Msg::Engine(Event::Error("store: disk full".into())), now());
    app.update(chr('L'), now());
    assert_eq!(app.overlay, Some(Overlay::Log { scroll: 0 }));
    assert!(app.log.front().unwrap().text.contains("disk full"));
    app.update(key(KeyCode::Esc), now());
    // How refreshes travel is said in a flash, and kept whole in the log.
    let note = "$batch refreshes keep sessions alive (a lived on them alone for 5m33s): refreshing up to 20 sessions per request from now on";
    app.update(Msg::Engine(Event::Note(note.into())), now());
    assert_eq!(app.flash.as_ref().map(|f| (f.text.as_str(), f.error)), Some((note, false)));
    assert_eq!(app.log.front().unwrap().text, note);

    app.update(chr('g'), now());
    app.update(chr('N'), now());
    assert!(matches!(app.dialog, Some(Dialog::Confirm { .. })));
    assert!(matches!(press(&mut app, chr('y')).as_slice(), [Request::Recreate(k)] if *k == budget));
}

fn draw(app: &mut App, at: chrono::DateTime<chrono::Utc>) {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 40)).unwrap();
    terminal.draw(|frame| wbsessions::tui::view::draw(frame, app, at)).unwrap();
    app.drawn(at);
}

#[test]
fn a_tick_redraws_only_when_a_time_on_screen_reads_differently() {
    let mut app = app(false);
    draw(&mut app, now());
    app.update(Msg::Tick, now());
    assert!(!app.dirty, "nothing on screen changed");
    app.update(Msg::Tick, now() + chrono::Duration::seconds(1));
    assert!(app.dirty, "'12s ago' became '13s ago'");

    // Sessions refreshed more than ten minutes ago: their times read in minutes only.
    let mut sessions = common::dashboard::sessions();
    for s in &mut sessions {
        s.last_refresh = Some(now() - chrono::Duration::seconds(700));
        // Failing ones failed as long ago: their retries are due already, and say "now".
        s.last_call = s.last_refresh.map(|at| wbsessions::session::LastCall { at, latency_ms: 40 });
        s.interval = Some(std::time::Duration::from_secs(3600));
    }
    let mut app = App::new(common::dashboard::info(false), sessions, (120, 40), now());
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
    // Each time on screen changes once in such a minute, at moments the jitter spreads apart:
    // a few redraws, never one a second.
    assert!(redraws <= 8, "{redraws} redraws in a minute of minutes-only times");

    let mut empty = App::new(common::dashboard::info(false), Vec::new(), (120, 40), now());
    draw(&mut empty, now());
    empty.update(Msg::Tick, now() + chrono::Duration::seconds(5));
    assert!(!empty.dirty);
}

#[test]
fn the_details_pane_asks_for_the_history_and_follows_the_selection() {
    let mut app = app(false);
    let budget = app.selected.unwrap();
    assert!(matches!(press(&mut app, key(KeyCode::Enter)).as_slice(), [Request::History(k)] if *k == budget));
    app.update(history_of(budget, history(budget)), now());
    assert_eq!(app.history.as_ref().map(|(_, h)| h.len()), Some(6));
    let next = press(&mut app, chr('j'));
    assert!(matches!(next.as_slice(), [Request::History(k)] if *k != budget), "{next:?}");
}

#[test]
fn signing_in_from_the_dashboard() {
    let mut app = app(false);
    assert!(matches!(press(&mut app, chr('l')).as_slice(), [Request::SignIn]));
    assert!(matches!(app.dialog, Some(Dialog::SignIn(_))));
    app.update(
        Msg::Engine(Event::SignIn(SignInProgress::Code {
            verification_uri: "https://microsoft.com/devicelogin".into(),
            user_code: "ABCD1234".into(),
            expires_in: 900,
        })),
        now(),
    );
    let Some(Dialog::SignIn(dialog)) = &app.dialog else { panic!() };
    assert_eq!(dialog.code.as_ref().map(|(_, c)| c.as_str()), Some("ABCD1234"));
    app.update(Msg::Engine(Event::SignIn(SignInProgress::Done(Ok("Ana".into())))), now());
    assert!(app.dialog.is_none());
    assert!(app.flash.as_ref().unwrap().text.contains("Ana"));
    app.update(Msg::Engine(Event::Auth(SignInState::SignedIn { user: Some("Ana".into()), until: now() })), now());
    assert!(app.signin.is_some());

    app.update(chr('l'), now());
    app.update(Msg::Engine(Event::SignIn(SignInProgress::Done(Err("the sign-in was declined".into())))), now());
    let Some(Dialog::SignIn(dialog)) = &app.dialog else { panic!() };
    assert_eq!(dialog.error.as_deref(), Some("the sign-in was declined"));
    assert!(matches!(press(&mut app, key_esc()).as_slice(), [Request::CancelSignIn]));
    assert!(app.dialog.is_none());
}

/// The help and the details stop at their last page: the first step back always moves.
#[test]
fn scrolling_stops_at_the_last_page_and_the_first_step_back_moves() {
    let mut app = app(false);
    app.update(Msg::Resize(80, 24), now());
    assert_eq!(wbsessions::tui::view::help_lines(&app).len(), wbsessions::tui::keymap::help_len());
    app.update(chr('?'), now());
    app.update(chr('G'), now());
    let Some(Overlay::Help { scroll: last }) = app.overlay else { panic!("{:?}", app.overlay) };
    assert_eq!(last, wbsessions::tui::keymap::help_len() - 22, "the last page of the help, not beyond");
    app.update(chr('k'), now());
    assert!(matches!(app.overlay, Some(Overlay::Help { scroll }) if scroll == last - 1));
    app.update(key(KeyCode::Esc), now());

    app.update(key(KeyCode::Enter), now());
    let selected = app.selected_row().unwrap().session.key;
    let mut long = history(selected);
    while long.len() < 40 {
        long.extend(history(selected));
    }
    app.update(history_of(selected, long), now());
    app.update(key(KeyCode::Tab), now());
    app.update(chr('G'), now());
    let bottom = app.detail_scroll;
    assert!(bottom > 0 && bottom < 100, "{bottom}");
    app.update(chr('k'), now());
    assert_eq!(app.detail_scroll, bottom - 1);
}

fn typed_filter(app: &mut App, text: &str) {
    app.update(chr('/'), now());
    typed(app, text);
    app.update(key(KeyCode::Enter), now());
}

fn shown_names(app: &App) -> Vec<String> {
    app.view().iter().map(|k| app.rows[k].session.name.clone()).collect()
}

#[test]
fn a_status_word_narrows_the_filter_and_esc_clears_a_kept_filter() {
    let mut app = app(false);
    typed_filter(&mut app, "status:expired");
    assert_eq!(shown_names(&app), ["sales"]);
    // A prefix is enough, several are any of them, and words still match names.
    app.update(key(KeyCode::Esc), now());
    typed_filter(&mut app, "status:dea status:exp");
    assert_eq!(shown_names(&app), ["legacy", "sales"]);
    app.update(key(KeyCode::Esc), now());
    typed_filter(&mut app, "status:ok bud");
    assert_eq!(shown_names(&app), ["budget"]);
    // No status has that word: nothing matches, rather than everything.
    app.update(key(KeyCode::Esc), now());
    typed_filter(&mut app, "status:happy");
    assert!(app.view().is_empty());
    // Esc outside the filter line clears the kept filter.
    app.update(key(KeyCode::Esc), now());
    assert!(app.filter.is_empty());
    assert_eq!(app.view().len(), 8);
}

#[test]
fn a_status_filter_follows_a_session_whose_status_changes() {
    let mut app = app(false);
    typed_filter(&mut app, "status:expired");
    let budget = app.rows.values().find(|r| r.session.name == "budget").unwrap().session.clone();
    let mut expired = (*budget).clone();
    expired.status = Status::Expired;
    app.update(Msg::Engine(Event::Changed(std::sync::Arc::new(expired))), now());
    app.update(Msg::Tick, now());
    assert_eq!(shown_names(&app), ["budget", "sales"]);
}

#[test]
fn mark_all_invert_and_clear_act_on_the_shown_rows_and_hidden_marks_are_named() {
    let mut app = app(false);
    app.update(chr('A'), now());
    assert_eq!(app.marks.len(), 8, "A marks every shown session");
    app.update(chr('A'), now());
    assert!(app.marks.is_empty(), "A again unmarks them");
    typed_filter(&mut app, "status:exp status:dead");
    app.update(chr('A'), now());
    assert_eq!(app.marks.len(), 2, "only the shown ones");
    app.update(key(KeyCode::Esc), now()); // the filter goes, the marks stay
    assert!(app.filter.is_empty());
    app.update(chr('*'), now());
    assert_eq!(app.marks.len(), 6, "inverted over every shown row");
    // Filter so that most marks are hidden, and ask to close: the dialog names them.
    typed_filter(&mut app, "budget");
    app.update(chr('c'), now());
    let Some(Dialog::Confirm { hidden, names, .. }) = &app.dialog else { panic!("{:?}", app.dialog) };
    assert_eq!(names.len(), 6);
    assert_eq!(hidden.as_deref(), Some("5 of them hidden by the filter"));
    app.update(chr('n'), now());
    app.update(chr('U'), now());
    assert!(app.marks.is_empty(), "U clears every mark, hidden or not");
}

#[test]
fn work_on_many_sessions_is_counted_in_the_header_and_said_once() {
    let mut app = app(false);
    let asked = press(&mut app, chr('R'));
    assert_eq!(asked.len(), 7, "every session but the closed one");
    assert_eq!(app.bulks.len(), 1);
    assert_eq!(app.bulks[0].progress(), "refreshing 0 of 7");
    let keys: Vec<i64> = asked.iter().map(|r| r.key().unwrap()).collect();
    for (i, key) in keys.iter().enumerate() {
        let name = app.rows[key].session.name.clone();
        let answer = if i < 2 { Err(EngineError::Closed { name: name.clone() }) } else { Ok(Reply::Done) };
        app.update(Msg::Answer { kind: JobKind::Refresh, key: Some(*key), about: name, answer }, now());
        if i == 3 {
            assert_eq!(app.bulks[0].progress(), "refreshing 4 of 7");
            assert!(app.flash.is_none(), "no message per session");
        }
    }
    assert!(app.bulks.is_empty());
    let flash = app.flash.as_ref().unwrap();
    assert_eq!(flash.text, "7 refreshed: 5 ok, 2 closed");
    assert!(flash.error);
    assert!(app.log.iter().filter(|l| l.text.contains("refresh failed")).count() == 2, "{:?}", app.log);
    // One session alone is said on its own.
    let one = press(&mut app, chr('r'));
    assert_eq!(one.len(), 1);
    assert!(app.bulks.is_empty());
}

#[test]
fn the_log_view_reads_the_stores_recent_failures_and_merges_them() {
    let mut app = app(false);
    app.update(Msg::Engine(Event::Error("store: disk full".into())), now());
    assert!(matches!(press(&mut app, chr('L')).as_slice(), [Request::Problems]));
    assert!(app.problems.is_none(), "being read");
    let sales = app.rows.values().find(|r| r.session.name == "sales").unwrap().session.key;
    let mut failed = history(sales)[0].clone();
    failed.kind = OutcomeKind::Expired;
    failed.request_id = Some("req-from-another-keeper".into());
    app.update(
        Msg::Answer {
            kind: JobKind::History,
            key: None,
            about: String::new(),
            answer: Ok(Reply::Problems(vec![("sales".into(), failed)])),
        },
        now(),
    );
    let lines: Vec<&str> = app.log_lines().iter().map(|l| l.text.as_str()).collect();
    assert!(
        lines.iter().any(|l| l.contains("sales: refresh expired") && l.contains("req-from-another-keeper")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("disk full")), "{lines:?}");
}

/// A runaway paste (a megabyte, say) is refused whole and at once: the form never edits it
/// character by character, and the engine beside it keeps running.
#[test]
fn a_paste_longer_than_the_field_is_refused_at_once() {
    let mut app = app(false);
    app.update(chr('n'), now());
    let huge = "漢😀".repeat(50_000) + "\u{1b}[2J" + &"a".repeat(100_000);
    let started = std::time::Instant::now();
    app.update(Msg::Paste(huge), now());
    assert!(started.elapsed() < std::time::Duration::from_millis(200), "{:?}", started.elapsed());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.fields[0].text_value(), Some(""), "nothing was pasted");
    assert_eq!(form.error.as_ref().unwrap().field, Some("name"));
    // A paste that fits goes in at the cursor, in one piece.
    typed(&mut app, "ab");
    app.update(key(KeyCode::Left), now());
    app.update(Msg::Paste("XY".into()), now());
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.fields[0].text_value(), Some("aXYb"));
    // Typed past the limit: refused with a word, not silently.
    typed(&mut app, &"z".repeat(100));
    let Some(Dialog::Form(form)) = &app.dialog else { panic!() };
    assert_eq!(form.fields[0].text_value().map(str::len), Some(64));
    assert!(form.error.as_ref().unwrap().text.contains("at most 64"));
    // The filter line is bounded too.
    app.update(key(KeyCode::Esc), now());
    app.update(chr('/'), now());
    app.update(Msg::Paste("x".repeat(1_000_000)), now());
    assert_eq!(app.filter.len(), 256);
}
