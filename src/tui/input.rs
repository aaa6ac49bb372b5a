//! What the user does to the dashboard: keys, through the one key map (`keymap`), in the table,
//! an overlay or a dialog, and the mouse. Each becomes state and, where the engine must act,
//! requests (`Effect::Ask`).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};

use super::app::{App, Effect, Overlay, Sort, sort_of};
use super::bulk::Bulk;
use super::dialog::{Confirm, Dialog, Form, FormKind, SignInDialog, Submitted};
use super::keymap::{Action, action_for};
use crate::engine::{EngineError, Request};
use crate::session::{SessionKey, Status};
use chrono::{DateTime, Utc};

impl App {
    pub(super) fn key(&mut self, key: KeyEvent, now: DateTime<Utc>) -> Vec<Effect> {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return vec![Effect::Quit];
        }
        if self.dialog.is_some() {
            return self.dialog_key(key, now);
        }
        if self.filtering {
            match key.code {
                KeyCode::Esc => {
                    self.filtering = false;
                    self.filter.clear();
                }
                KeyCode::Enter => self.filtering = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => self.filter.clear(),
                KeyCode::Char(c)
                    if !key.modifiers.contains(KeyModifiers::CONTROL)
                        && self.filter.chars().count() < super::app::FILTER_MAX =>
                {
                    self.filter.push(c)
                }
                _ => {}
            }
            self.changed();
            return Vec::new();
        }
        if let Some(overlay) = self.overlay {
            self.overlay_key(overlay, key);
            return Vec::new();
        }
        if key.code == KeyCode::Esc {
            if self.flash.is_some() {
                self.flash = None;
            } else if !self.filter.is_empty() {
                self.filter.clear();
                self.changed();
            } else if !self.marks.is_empty() {
                self.marks.clear();
            } else {
                self.details = false;
                self.details_focus = false;
            }
            return Vec::new();
        }
        let Some(action) = action_for(&key) else { return Vec::new() };
        self.action(action, now)
    }

    /// The movement keys scroll an overlay; esc, q and the key that opened it close it.
    pub(super) fn overlay_key(&mut self, overlay: Overlay, key: KeyEvent) {
        let (Overlay::Help { scroll } | Overlay::Log { scroll }) = overlay;
        let page = usize::from(self.size.1.saturating_sub(4).max(1));
        let scroll = match action_for(&key) {
            Some(Action::Down) => scroll + 1,
            Some(Action::Up) => scroll.saturating_sub(1),
            Some(Action::PageDown | Action::HalfDown) => scroll + page,
            Some(Action::PageUp | Action::HalfUp) => scroll.saturating_sub(page),
            Some(Action::First) => 0,
            Some(Action::Last) => usize::MAX / 2,
            _ => {
                self.overlay = None;
                return;
            }
        };
        // Never past the last page, or the next step up would seem to do nothing.
        let scroll = scroll.min(self.overlay_max_scroll(&overlay));
        self.overlay = Some(match overlay {
            Overlay::Help { .. } => Overlay::Help { scroll },
            Overlay::Log { .. } => Overlay::Log { scroll },
        });
    }

    /// How far an overlay scrolls: its lines less the rows it shows, as the view lays it out.
    pub(super) fn overlay_max_scroll(&self, overlay: &Overlay) -> usize {
        let lines = match overlay {
            Overlay::Help { .. } => super::keymap::help_len(),
            Overlay::Log { .. } => {
                let inner = usize::from(self.size.0.min(120).saturating_sub(2));
                let lines = self.log_lines();
                let entries: usize =
                    lines.iter().map(|e| super::layout::wrap(&e.text, inner.saturating_sub(10)).len()).sum();
                let folder = super::layout::wrap(&self.info.log_dir, inner.saturating_sub(11)).len();
                folder + usize::from(lines.is_empty() || self.problems.is_none()) + entries
            }
        };
        lines.saturating_sub(usize::from(self.size.1.saturating_sub(2)))
    }

    /// How far the details scroll: their lines as the pane wraps them (an estimate that errs
    /// long, so that the end can always be reached), less the rows it shows.
    pub(super) fn detail_max_scroll(&self) -> usize {
        let Some(row) = self.selected_row() else { return 0 };
        let s = &row.session;
        let width = usize::from(self.layout.detail.width.saturating_sub(24)).max(1);
        let rows = |chars: usize| chars.div_ceil(width).max(1);
        let history = self.history.as_ref().filter(|(k, _)| *k == s.key).map_or(&[][..], |(_, h)| h.as_slice());
        let mut lines =
            rows(11 + s.session_id.as_str().len()) + rows(11 + s.workbook.url(&self.info.endpoint).len()) + rows(100);
        lines += history
            .iter()
            .map(|o| {
                let extra = o.message.as_ref().map_or(0, String::len)
                    + o.request_id.as_ref().map_or(0, String::len)
                    + o.codes.iter().map(|c| c.len() + 1).sum::<usize>();
                rows(60 + extra)
            })
            .sum::<usize>()
            .max(1);
        lines.saturating_sub(usize::from(self.layout.detail.height.saturating_sub(1)))
    }

    /// A request as an effect, with the name of the session it is about for its answer.
    pub fn ask(&self, request: Request) -> Effect {
        let about = match &request {
            Request::Create(new) | Request::Track(new) => new.name.clone(),
            Request::PauseAll(paused) => if *paused { "pause" } else { "resume" }.to_string(),
            other => other.key().and_then(|k| self.rows.get(&k)).map_or_else(String::new, |r| r.session.name.clone()),
        };
        Effect::Ask { request, about }
    }

    /// "2 of them hidden by the filter": marked rows the view does not show, about to be acted
    /// on, are said so rather than touched silently.
    pub(super) fn hidden_note(&self, keys: &[SessionKey]) -> Option<String> {
        if self.marks.is_empty() {
            return None;
        }
        let shown: std::collections::HashSet<&SessionKey> = self.view.iter().collect();
        let hidden: Vec<String> = self.names(&keys.iter().copied().filter(|k| !shown.contains(k)).collect::<Vec<_>>());
        match hidden.len() {
            0 => None,
            n if n <= 3 => Some(format!("{} hidden by the filter", hidden.join(", "))),
            n => Some(format!("{n} of them hidden by the filter")),
        }
    }

    pub(super) fn action(&mut self, action: Action, now: DateTime<Utc>) -> Vec<Effect> {
        // With the focus on the details, the movement keys scroll them.
        if self.details && self.details_focus {
            let half = usize::from(self.layout.detail.height / 2).max(1);
            let scrolled = match action {
                Action::Down => Some(self.detail_scroll + 1),
                Action::Up => Some(self.detail_scroll.saturating_sub(1)),
                Action::PageDown | Action::HalfDown => Some(self.detail_scroll + half),
                Action::PageUp | Action::HalfUp => Some(self.detail_scroll.saturating_sub(half)),
                Action::First => Some(0),
                Action::Last => Some(usize::MAX / 2),
                _ => None,
            };
            if let Some(scroll) = scrolled {
                self.detail_scroll = scroll.min(self.detail_max_scroll());
                return Vec::new();
            }
        }
        match action {
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-self.page()),
            Action::PageDown => self.move_by(self.page()),
            Action::HalfUp => self.move_by(-(self.page() / 2).max(1)),
            Action::HalfDown => self.move_by((self.page() / 2).max(1)),
            Action::First => {
                let first = self.view.first().copied();
                self.select(first);
            }
            Action::Last => {
                let last = self.view.last().copied();
                self.select(last);
            }
            Action::Refresh => {
                let keys = self.targets();
                let (closed, open): (Vec<SessionKey>, Vec<SessionKey>) = keys
                    .into_iter()
                    .partition(|k| self.rows.get(k).is_some_and(|r| r.session.status == Status::Closed));
                if !closed.is_empty() {
                    let name = self.names(&closed).join(", ");
                    self.flash_info(super::heard::refusal(&EngineError::Closed { name }), now);
                }
                if !open.is_empty() {
                    if let Some(note) = self.hidden_note(&open) {
                        self.flash_info(format!("refreshing {} marked ({note})", open.len()), now);
                    }
                    return self.ask_each(open, Request::Refresh);
                }
            }
            // One request per session, so that the header can count them as they end.
            Action::RefreshAll => {
                let open: Vec<SessionKey> =
                    self.rows.values().filter(|r| r.session.status != Status::Closed).map(|r| r.session.key).collect();
                return self.ask_each(open, Request::Refresh);
            }
            Action::Mark => {
                if let Some(key) = self.selected {
                    if !self.marks.remove(&key) {
                        self.marks.insert(key);
                    }
                    self.move_by(1);
                }
            }
            Action::MarkAll => {
                let shown: Vec<SessionKey> = self.view.clone();
                if shown.iter().all(|k| self.marks.contains(k)) {
                    for key in &shown {
                        self.marks.remove(key);
                    }
                } else {
                    self.marks.extend(shown);
                }
            }
            Action::InvertMarks => {
                for key in self.view.clone() {
                    if !self.marks.remove(&key) {
                        self.marks.insert(key);
                    }
                }
            }
            Action::ClearMarks => self.marks.clear(),
            Action::ToggleAuto => {
                let keys = self.targets();
                let Some(first) = keys.first().and_then(|k| self.rows.get(k)) else { return Vec::new() };
                let auto = !first.session.auto;
                return self.ask_each(keys, |key| Request::SetAuto { key, auto });
            }
            Action::PauseAll => return vec![self.ask(Request::PauseAll(!self.paused))],
            Action::Create => {
                self.dialog = Some(Dialog::Form(Form::new_session(FormKind::Create, &self.info.defaults)))
            }
            Action::Track => self.dialog = Some(Dialog::Form(Form::new_session(FormKind::Track, &self.info.defaults))),
            Action::Edit => {
                let Some(row) = self.selected_row() else { return Vec::new() };
                self.dialog = Some(Dialog::Form(Form::edit(&row.session)));
            }
            Action::Close | Action::Remove | Action::Recreate => {
                let keys = self.targets();
                if !keys.is_empty() {
                    let names = self.names(&keys);
                    let hidden = self.hidden_note(&keys);
                    let what = match action {
                        Action::Close => Confirm::Close,
                        Action::Recreate => Confirm::Recreate,
                        _ => Confirm::Remove {
                            all_closed: keys
                                .iter()
                                .all(|k| self.rows.get(k).is_some_and(|r| r.session.status == Status::Closed)),
                        },
                    };
                    self.dialog = Some(Dialog::Confirm { what, keys, names, hidden });
                }
            }
            Action::CopyId | Action::CopyUrl => {
                let Some(row) = self.selected_row() else { return Vec::new() };
                let s = &row.session;
                let (text, what) = if action == Action::CopyId {
                    (s.session_id.to_string(), "session id")
                } else {
                    (s.workbook.url(&self.info.endpoint), "workbook URL")
                };
                self.flash_info(format!("copied the {what} of {} to the clipboard (OSC 52)", s.name), now);
                return vec![Effect::Copy(text)];
            }
            Action::Filter => {
                self.filtering = true;
                self.changed();
            }
            Action::Sort => {
                self.sort = Sort { by: self.sort.by.next(), reverse: false };
                self.changed();
            }
            Action::Reverse => {
                self.sort.reverse = !self.sort.reverse;
                self.changed();
            }
            Action::FailingOnly => {
                self.failing_only = !self.failing_only;
                self.changed();
            }
            Action::Times => {
                self.absolute_times = !self.absolute_times;
                self.dirty = true;
            }
            Action::Details => {
                self.details = !self.details;
                self.details_focus = false;
                self.detail_scroll = 0;
                self.history = None;
                if self.details
                    && let Some(key) = self.selected
                {
                    return vec![self.ask(Request::History(key))];
                }
            }
            Action::Focus => self.details_focus = self.details && !self.details_focus,
            Action::Log => {
                self.overlay = Some(Overlay::Log { scroll: 0 });
                self.problems = None;
                return vec![self.ask(Request::Problems)];
            }
            Action::SignIn => return self.start_sign_in(),
            Action::Help => self.overlay = Some(Overlay::Help { scroll: 0 }),
            Action::Quit => return vec![Effect::Quit],
        }
        Vec::new()
    }

    /// Opens the sign-in dialog and asks the engine to start the flow.
    pub(crate) fn start_sign_in(&mut self) -> Vec<Effect> {
        self.dialog = Some(Dialog::SignIn(SignInDialog { code: None, deadline: None, error: None }));
        self.dirty = true;
        vec![self.ask(Request::SignIn)]
    }

    pub(super) fn dialog_key(&mut self, key: KeyEvent, now: DateTime<Utc>) -> Vec<Effect> {
        let Some(dialog) = self.dialog.as_mut() else { return Vec::new() };
        match dialog {
            Dialog::SignIn(_) => {
                if key.code == KeyCode::Esc {
                    self.dialog = None;
                    return vec![self.ask(Request::CancelSignIn)];
                }
            }
            Dialog::Confirm { what, keys, names, .. } => match key.code {
                // Destructive: only `y` confirms, never a stray enter.
                KeyCode::Char('y') => {
                    let (what, keys, names) = (*what, keys.clone(), crate::text::names_line(names));
                    self.dialog = None;
                    self.marks.clear();
                    let (doing, request): (&str, fn(SessionKey) -> Request) = match what {
                        Confirm::Close => ("closing", Request::Close),
                        Confirm::Remove { .. } => ("removing", Request::Remove),
                        Confirm::Recreate => ("recreating", Request::Recreate),
                    };
                    self.flash_info(format!("{doing} {names}…"), now);
                    return self.ask_each(keys, request);
                }
                KeyCode::Char('n' | 'q') | KeyCode::Esc => self.dialog = None,
                _ => {}
            },
            Dialog::Form(form) => {
                let taken: Vec<(SessionKey, String)> =
                    self.rows.values().map(|r| (r.session.key, r.session.name.clone())).collect();
                match form.key(key, &self.info.defaults, &taken) {
                    Submitted::No => {}
                    Submitted::Cancel => self.dialog = None,
                    // The form stays as typed until the engine answers: a refusal is said under
                    // its field, and nothing typed is lost.
                    Submitted::Yes(request) => {
                        form.sent = true;
                        return vec![self.ask(request)];
                    }
                }
            }
        }
        Vec::new()
    }

    pub(super) fn mouse(&mut self, mouse: MouseEvent) -> Vec<Effect> {
        // A dialog or an overlay takes every mouse event: nothing reaches the table behind it.
        if self.dialog.is_some() || self.overlay.is_some() {
            return Vec::new();
        }
        let inside = |area: ratatui::layout::Rect| {
            mouse.column >= area.x && mouse.column < area.right() && mouse.row >= area.y && mouse.row < area.bottom()
        };
        match mouse.kind {
            MouseEventKind::ScrollDown if self.details && inside(self.layout.detail) => {
                self.detail_scroll = (self.detail_scroll + 1).min(self.detail_max_scroll());
            }
            MouseEventKind::ScrollUp if self.details && inside(self.layout.detail) => {
                self.detail_scroll = self.detail_scroll.saturating_sub(1)
            }
            MouseEventKind::ScrollDown => self.move_by(1),
            MouseEventKind::ScrollUp => self.move_by(-1),
            MouseEventKind::Down(MouseButton::Left) if inside(self.layout.table_header) => {
                // A click on a column header sorts by it; on the sorted one, reverses it.
                let x = mouse.column.saturating_sub(self.layout.table_header.x);
                let clicked = self.columns.iter().find(|p| x >= p.x && x < p.x + p.width.max(1)).map(|p| p.col);
                if let Some(by) = clicked.and_then(sort_of) {
                    self.sort = if self.sort.by == by {
                        Sort { by, reverse: !self.sort.reverse }
                    } else {
                        Sort { by, reverse: false }
                    };
                    self.changed();
                }
            }
            MouseEventKind::Down(MouseButton::Left) if inside(self.layout.table_rows) => {
                let index = self.offset + usize::from(mouse.row - self.layout.table_rows.y);
                if let Some(key) = self.view.get(index).copied() {
                    self.select(Some(key));
                }
            }
            _ => return Vec::new(),
        }
        self.dirty = true;
        Vec::new()
    }
}

impl App {
    /// One request per session; more than one are counted together and said once, at the end.
    pub(super) fn ask_each(&mut self, keys: Vec<SessionKey>, request: impl Fn(SessionKey) -> Request) -> Vec<Effect> {
        let requests: Vec<Request> = keys.iter().map(|key| request(*key)).collect();
        if let [first, _, ..] = requests.as_slice() {
            let kind = first.kind();
            let index = match self.bulks.iter().position(|b| b.kind == kind) {
                Some(index) => index,
                None => {
                    self.bulks.push(Bulk::new(kind));
                    self.bulks.len() - 1
                }
            };
            self.bulks[index].expect(&keys);
            self.dirty = true;
        }
        requests.into_iter().map(|r| self.ask(r)).collect()
    }
}
