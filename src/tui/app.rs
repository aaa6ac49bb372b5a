//! The dashboard's state and how it changes: keys, mouse, engine events, ticks. No drawing and no
//! I/O here; `update` returns the engine commands to send.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;

use super::keymap::{Action, action_for};
use crate::engine::{Command, Event};
use crate::session::{MIN_INTERVAL, Mode, SessionId, SessionKey, Status, TrackedSession, WorkbookRef, validate_name};
use crate::store::SessionSettings;
use crate::time::{format_ago, format_duration, format_until, parse_duration};

/// Who schedules automatic refreshes for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    This,
    /// Another process does; the pid if known.
    Other(Option<u32>),
}

/// What the header shows about where the dashboard is connected.
#[derive(Debug, Clone)]
pub struct Info {
    pub store: String,
    pub endpoint: String,
    pub demo: bool,
    pub signin: String,
    pub driver: Driver,
    /// The default intervals, for sessions without their own.
    pub defaults: crate::config::EngineSettings,
    pub no_color: bool,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub session: TrackedSession,
    pub refreshing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    Status,
    LastRefresh,
    Workbook,
}

impl SortBy {
    pub fn next(self) -> SortBy {
        match self {
            SortBy::Name => SortBy::Status,
            SortBy::Status => SortBy::LastRefresh,
            SortBy::LastRefresh => SortBy::Workbook,
            SortBy::Workbook => SortBy::Name,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortBy::Name => "name",
            SortBy::Status => "status",
            SortBy::LastRefresh => "last refresh",
            SortBy::Workbook => "workbook",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
    pub at: DateTime<Utc>,
}

/// Info flashes go after this long; errors stay until dismissed or replaced.
const FLASH_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormKind {
    Create,
    Track,
    Edit(SessionKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
    pub toggle: bool,
    pub hint: &'static str,
}

impl Field {
    fn text(label: &'static str, value: &str, hint: &'static str) -> Field {
        Field { label, value: value.to_string(), toggle: false, hint }
    }
    fn toggle(label: &'static str, on: bool) -> Field {
        Field { label, value: if on { "yes" } else { "no" }.to_string(), toggle: true, hint: "space toggles" }
    }
    pub fn is_on(&self) -> bool {
        self.value == "yes"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub kind: FormKind,
    pub fields: Vec<Field>,
    pub focus: usize,
    pub error: Option<String>,
}

impl Form {
    /// The fields of a new session; tracking an existing one adds its id.
    fn new_session(kind: FormKind) -> Form {
        let mut fields = vec![
            Field::text("name", "", "letters, digits, - _ ."),
            Field::text("workbook", "", "me/drive/items/ID or /me/drive/root:/path.xlsx:"),
            Field::text("interval", "", "blank for the default, or e.g. 90s, 4m"),
            Field::toggle("non-persistent", false),
            Field::toggle("recreate", false),
        ];
        if kind == FormKind::Track {
            fields.insert(2, Field::text("session id", "", "the id createSession returned"));
        }
        Form { kind, fields, focus: 0, error: None }
    }

    pub fn title(&self) -> &'static str {
        match self.kind {
            FormKind::Create => "Create a session",
            FormKind::Track => "Track an existing session",
            FormKind::Edit(_) => "Edit session",
        }
    }

    fn value(&self, label: &str) -> &str {
        self.fields.iter().find(|f| f.label == label).map_or("", |f| f.value.trim())
    }

    fn on(&self, label: &str) -> bool {
        self.fields.iter().any(|f| f.label == label && f.is_on())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Close,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialog {
    Form(Form),
    Confirm {
        what: Confirm,
        keys: Vec<SessionKey>,
        names: Vec<String>,
    },
    /// A device-code sign-in in progress.
    SignIn(SignInDialog),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInDialog {
    /// Where to go and what to type, once the code has come.
    pub code: Option<(String, String)>,
    pub deadline: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// How a sign-in started from the dashboard goes.
#[derive(Debug, Clone)]
pub enum SignInEvent {
    Code { verification_uri: String, user_code: String, expires_in: u64 },
    Done(Result<String, String>),
}

/// Everything that can happen to the dashboard.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Engine(Event),
    SignIn(SignInEvent),
    Tick,
    Resize,
}

pub struct App {
    pub info: Info,
    /// The mirror of the engine's list; changed only through `put` and `take`, which keep the
    /// counts and the view up to date.
    pub rows: BTreeMap<SessionKey, Row>,
    counts: BTreeMap<Status, usize>,
    /// Where the selection sits in the view, once looked up.
    selected_pos: Option<usize>,
    /// The visible order: filtered and sorted; rebuilt lazily.
    view: Vec<SessionKey>,
    view_stale: bool,
    pub selected: Option<SessionKey>,
    pub offset: usize,
    pub marks: HashSet<SessionKey>,
    pub filter: String,
    pub filtering: bool,
    pub sort: SortBy,
    pub failing_only: bool,
    pub details: bool,
    pub help: bool,
    pub dialog: Option<Dialog>,
    pub flash: Option<Flash>,
    pub paused: bool,
    pub throttled_until: Option<DateTime<Utc>>,
    /// Sessions whose manual action the user waits to hear about.
    awaiting: HashSet<SessionKey>,
    pub quit: bool,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// Where the table's rows were drawn, for mouse clicks.
    pub table_rows: Rect,
    /// `clock_text` as of the last frame.
    pub drawn_clock_text: u64,
    /// Next automatic refreshes as the engine planned them.
    scheduled: std::collections::HashMap<SessionKey, Option<DateTime<Utc>>>,
    /// The user asked for a sign-in; the event loop starts it and clears this.
    pub sign_in_requested: bool,
}

impl App {
    pub fn new(info: Info, sessions: Vec<TrackedSession>) -> App {
        let mut app = App {
            info,
            rows: BTreeMap::new(),
            counts: BTreeMap::new(),
            selected_pos: None,
            view: Vec::new(),
            view_stale: true,
            selected: None,
            offset: 0,
            marks: HashSet::new(),
            filter: String::new(),
            filtering: false,
            sort: SortBy::Name,
            failing_only: false,
            details: false,
            help: false,
            dialog: None,
            flash: None,
            paused: false,
            throttled_until: None,
            awaiting: HashSet::new(),
            quit: false,
            dirty: true,
            table_rows: Rect::default(),
            drawn_clock_text: 0,
            scheduled: std::collections::HashMap::new(),
            sign_in_requested: false,
        };
        for session in sessions {
            app.put(Row { session, refreshing: false });
        }
        app.selected = app.view().first().copied();
        app
    }

    fn shown(row: &Row) -> Status {
        if row.refreshing { Status::Refreshing } else { row.session.status }
    }

    fn count(&mut self, status: Status, up: bool) {
        let n = self.counts.entry(status).or_default();
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
        if *n == 0 {
            self.counts.remove(&status);
        }
    }

    /// Adds or replaces a row. The view is rebuilt only if what it sorts or filters by changed.
    fn put(&mut self, row: Row) {
        self.count(Self::shown(&row), true);
        let key = row.session.key;
        match self.rows.insert(key, row) {
            None => self.view_stale = true,
            Some(old) => {
                self.count(Self::shown(&old), false);
                let (a, b) = (&old.session, &self.rows[&key].session);
                let moved = a.name != b.name
                    || a.workbook != b.workbook
                    || ((self.failing_only || self.sort == SortBy::Status) && a.status != b.status)
                    || (self.sort == SortBy::LastRefresh && a.last_refresh != b.last_refresh);
                self.view_stale |= moved;
            }
        }
        self.dirty = true;
    }

    fn take(&mut self, key: SessionKey) -> Option<Row> {
        let row = self.rows.remove(&key)?;
        self.count(Self::shown(&row), false);
        self.view_stale = true;
        self.dirty = true;
        Some(row)
    }

    fn select(&mut self, key: Option<SessionKey>) {
        self.selected = key;
        self.selected_pos = None;
    }

    pub fn interval_of(&self, s: &TrackedSession) -> Duration {
        self.info.defaults.interval_of(s)
    }

    /// When the next automatic refresh is expected; `None` when none will come. The engine says
    /// when it drives; a watching dashboard estimates from the last refresh and the interval.
    pub fn next_due(&self, s: &TrackedSession) -> Option<DateTime<Utc>> {
        if self.paused {
            return None;
        }
        if self.info.driver == Driver::This
            && let Some(at) = self.scheduled.get(&s.key)
        {
            return *at;
        }
        s.next_refresh_estimate(self.interval_of(s))
    }

    /// The filtered, sorted keys, rebuilt only when something changed.
    pub fn view(&mut self) -> &[SessionKey] {
        if self.view_stale {
            self.view_stale = false;
            let needle = self.filter.to_lowercase();
            let mut view: Vec<&Row> = self
                .rows
                .values()
                .filter(|r| !self.failing_only || r.session.status.is_failing())
                .filter(|r| {
                    needle.is_empty()
                        || r.session.name.to_lowercase().contains(&needle)
                        || r.session.workbook.to_string().to_lowercase().contains(&needle)
                })
                .collect();
            match self.sort {
                SortBy::Name => view.sort_by(|a, b| a.session.name.cmp(&b.session.name)),
                SortBy::Status => view.sort_by(|a, b| {
                    (b.session.status.is_failing(), a.session.status, &a.session.name).cmp(&(
                        a.session.status.is_failing(),
                        b.session.status,
                        &b.session.name,
                    ))
                }),
                SortBy::LastRefresh => view.sort_by(|a, b| {
                    (a.session.last_refresh, &a.session.name).cmp(&(b.session.last_refresh, &b.session.name))
                }),
                SortBy::Workbook => view.sort_by(|a, b| {
                    (a.session.workbook.to_string(), &a.session.name)
                        .cmp(&(b.session.workbook.to_string(), &b.session.name))
                }),
            }
            self.view = view.into_iter().map(|r| r.session.key).collect();
            self.selected_pos = None;
            if self.selected.is_none_or(|k| !self.rows.contains_key(&k) || !self.view.contains(&k)) {
                self.selected = self.view.first().copied();
            }
        }
        &self.view
    }

    pub fn selected_index(&mut self) -> Option<usize> {
        let selected = self.selected?;
        if self.view_stale || self.selected_pos.is_none() {
            let position = self.view().iter().position(|k| *k == selected);
            self.selected_pos = position;
        }
        self.selected_pos
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.selected.and_then(|k| self.rows.get(&k))
    }

    /// The marked sessions, or the selected one when nothing is marked.
    fn targets(&self) -> Vec<SessionKey> {
        if self.marks.is_empty() {
            self.selected.into_iter().collect()
        } else {
            let mut keys: Vec<SessionKey> = self.marks.iter().copied().collect();
            keys.sort_unstable();
            keys
        }
    }

    fn names(&self, keys: &[SessionKey]) -> Vec<String> {
        keys.iter().filter_map(|k| self.rows.get(k)).map(|r| r.session.name.clone()).collect()
    }

    pub fn flash_info(&mut self, text: impl Into<String>, now: DateTime<Utc>) {
        self.flash = Some(Flash { text: text.into(), error: false, at: now });
    }

    pub fn flash_error(&mut self, text: impl Into<String>, now: DateTime<Utc>) {
        self.flash = Some(Flash { text: text.into(), error: true, at: now });
    }

    fn changed(&mut self) {
        self.view_stale = true;
        self.dirty = true;
    }

    fn move_by(&mut self, delta: isize) {
        let len = self.view().len();
        if len == 0 {
            return;
        }
        let index = self.selected_index().unwrap_or(0) as isize;
        let next = (index + delta).clamp(0, len as isize - 1) as usize;
        self.selected = self.view().get(next).copied();
        self.selected_pos = Some(next);
    }

    pub fn update(&mut self, msg: Msg, now: DateTime<Utc>) -> Vec<Command> {
        match msg {
            Msg::Key(key) if key.kind != KeyEventKind::Release => {
                self.dirty = true;
                self.key(key, now)
            }
            Msg::Key(_) => Vec::new(),
            Msg::Mouse(mouse) => {
                self.mouse(mouse);
                Vec::new()
            }
            Msg::Engine(event) => {
                self.engine_event(event, now);
                Vec::new()
            }
            Msg::SignIn(event) => {
                self.dirty = true;
                self.sign_in_event(event, now)
            }
            Msg::Tick => {
                if self.flash.as_ref().is_some_and(|f| !f.error && now - f.at >= FLASH_FOR) {
                    self.flash = None;
                    self.dirty = true;
                }
                if self.throttled_until.is_some_and(|t| t <= now) {
                    self.throttled_until = None;
                    self.dirty = true;
                }
                // Redraw only if a relative time on screen reads differently now.
                if self.clock_text(now) != self.drawn_clock_text {
                    self.dirty = true;
                }
                Vec::new()
            }
            Msg::Resize => {
                self.dirty = true;
                Vec::new()
            }
        }
    }

    fn key(&mut self, key: KeyEvent, now: DateTime<Utc>) -> Vec<Command> {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return Vec::new();
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
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.changed();
            return Vec::new();
        }
        if self.help {
            self.help = false;
            return Vec::new();
        }
        if key.code == KeyCode::Esc {
            if self.flash.is_some() {
                self.flash = None;
            } else if !self.marks.is_empty() {
                self.marks.clear();
            } else {
                self.details = false;
            }
            return Vec::new();
        }
        let Some(action) = action_for(&key) else { return Vec::new() };
        self.action(action, now)
    }

    fn action(&mut self, action: Action, now: DateTime<Utc>) -> Vec<Command> {
        match action {
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::First => {
                let first = self.view().first().copied();
                self.select(first);
            }
            Action::Last => {
                let last = self.view().last().copied();
                self.select(last);
            }
            Action::Refresh => {
                let keys = self.targets();
                if keys.is_empty() {
                    return Vec::new();
                }
                self.awaiting.extend(keys.iter().copied());
                return vec![Command::Refresh(keys)];
            }
            Action::RefreshAll => {
                self.flash_info(format!("refreshing all {} sessions", self.rows.len()), now);
                return vec![Command::RefreshAll];
            }
            Action::Mark => {
                if let Some(key) = self.selected {
                    if !self.marks.remove(&key) {
                        self.marks.insert(key);
                    }
                    self.move_by(1);
                }
            }
            Action::ToggleAuto => {
                let keys = self.targets();
                let Some(first) = keys.first().and_then(|k| self.rows.get(k)) else { return Vec::new() };
                let auto = !first.session.auto;
                self.flash_info(
                    format!(
                        "automatic refresh {} for {}",
                        if auto { "on" } else { "off" },
                        self.names(&keys).join(", ")
                    ),
                    now,
                );
                return vec![Command::SetAuto { keys, auto }];
            }
            Action::PauseAll => return vec![Command::PauseAll(!self.paused)],
            Action::Create => self.dialog = Some(Dialog::Form(Form::new_session(FormKind::Create))),
            Action::Track => self.dialog = Some(Dialog::Form(Form::new_session(FormKind::Track))),
            Action::Edit => {
                let Some(row) = self.selected_row() else { return Vec::new() };
                let s = &row.session;
                let interval = s.interval.map(format_duration).unwrap_or_default();
                self.dialog = Some(Dialog::Form(Form {
                    kind: FormKind::Edit(s.key),
                    fields: vec![
                        Field::text("name", &s.name, "letters, digits, - _ ."),
                        Field::text("interval", &interval, "blank for the default, or e.g. 90s, 4m"),
                        Field::toggle("recreate", s.recreate),
                    ],
                    focus: 0,
                    error: None,
                }))
            }
            Action::Close | Action::Remove => {
                let keys = self.targets();
                if !keys.is_empty() {
                    let names = self.names(&keys);
                    let what = if action == Action::Close { Confirm::Close } else { Confirm::Remove };
                    self.dialog = Some(Dialog::Confirm { what, keys, names });
                }
            }
            Action::Filter => {
                self.filtering = true;
                self.changed();
            }
            Action::Sort => {
                self.sort = self.sort.next();
                self.flash_info(format!("sorted by {}", self.sort.label()), now);
                self.changed();
            }
            Action::FailingOnly => {
                self.failing_only = !self.failing_only;
                self.changed();
            }
            Action::Details => self.details = !self.details,
            Action::SignIn => self.start_sign_in(),
            Action::Help => self.help = true,
            Action::Quit => self.quit = true,
        }
        Vec::new()
    }

    /// Opens the sign-in dialog; the event loop sees the request and starts the flow.
    pub fn start_sign_in(&mut self) {
        self.dialog = Some(Dialog::SignIn(SignInDialog { code: None, deadline: None, error: None }));
        self.sign_in_requested = true;
        self.dirty = true;
    }

    fn sign_in_event(&mut self, event: SignInEvent, now: DateTime<Utc>) -> Vec<Command> {
        let Some(Dialog::SignIn(dialog)) = self.dialog.as_mut() else { return Vec::new() };
        match event {
            SignInEvent::Code { verification_uri, user_code, expires_in } => {
                dialog.code = Some((verification_uri, user_code));
                dialog.deadline = Some(now + chrono::Duration::seconds(expires_in.min(3600) as i64));
                Vec::new()
            }
            SignInEvent::Done(Err(e)) => {
                dialog.error = Some(e);
                Vec::new()
            }
            SignInEvent::Done(Ok(user)) => {
                self.dialog = None;
                self.flash_info(format!("signed in as {user}"), now);
                // Sessions that failed for want of a token need not wait for their next retry.
                let waiting: Vec<SessionKey> =
                    self.rows.values().filter(|r| r.session.status == Status::Auth).map(|r| r.session.key).collect();
                if waiting.is_empty() { Vec::new() } else { vec![Command::Refresh(waiting)] }
            }
        }
    }

    fn dialog_key(&mut self, key: KeyEvent, now: DateTime<Utc>) -> Vec<Command> {
        let Some(dialog) = self.dialog.as_mut() else { return Vec::new() };
        match dialog {
            Dialog::SignIn(_) => {
                if key.code == KeyCode::Esc {
                    self.dialog = None;
                }
            }
            Dialog::Confirm { what, keys, names } => match key.code {
                KeyCode::Char('y') | KeyCode::Enter => {
                    let (what, keys, names) = (*what, keys.clone(), names.join(", "));
                    self.dialog = None;
                    self.marks.clear();
                    return match what {
                        Confirm::Close => {
                            self.awaiting.extend(keys.iter().copied());
                            self.flash_info(format!("closing {names}"), now);
                            vec![Command::Close(keys)]
                        }
                        Confirm::Remove => {
                            self.flash_info(format!("removed {names} (the sessions stay open at Graph)"), now);
                            vec![Command::Remove(keys)]
                        }
                    };
                }
                KeyCode::Char('n') | KeyCode::Esc => self.dialog = None,
                _ => {}
            },
            Dialog::Form(form) => match key.code {
                KeyCode::Esc => self.dialog = None,
                KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % form.fields.len(),
                KeyCode::BackTab | KeyCode::Up => form.focus = (form.focus + form.fields.len() - 1) % form.fields.len(),
                KeyCode::Enter => {
                    let form = form.clone();
                    match self.submit(&form) {
                        Ok(command) => {
                            self.dialog = None;
                            return vec![command];
                        }
                        Err(why) => {
                            if let Some(Dialog::Form(f)) = self.dialog.as_mut() {
                                f.error = Some(why);
                            }
                        }
                    }
                }
                KeyCode::Backspace => {
                    let field = &mut form.fields[form.focus];
                    if !field.toggle {
                        field.value.pop();
                    }
                    form.error = None;
                }
                KeyCode::Char(c) => {
                    let field = &mut form.fields[form.focus];
                    if field.toggle {
                        if c == ' ' || c == 'y' || c == 'n' {
                            let on = if c == ' ' { !field.is_on() } else { c == 'y' };
                            field.value = if on { "yes" } else { "no" }.into();
                        }
                    } else {
                        field.value.push(c);
                    }
                    form.error = None;
                }
                _ => {}
            },
        }
        Vec::new()
    }

    /// Checks a form the way the command line checks its flags; the error names the field.
    fn submit(&self, form: &Form) -> Result<Command, String> {
        let name = form.value("name").to_string();
        validate_name(&name).map_err(|e| e.to_string())?;
        let own_key = match form.kind {
            FormKind::Edit(key) => Some(key),
            _ => None,
        };
        if self.rows.values().any(|r| r.session.name == name && Some(r.session.key) != own_key) {
            return Err(format!("a session named {name:?} is already tracked"));
        }
        let interval = match form.value("interval") {
            "" => None,
            text => {
                let d = parse_duration(text).map_err(|e| format!("interval: {e}"))?;
                if d < MIN_INTERVAL {
                    return Err(format!("interval: at least {}", format_duration(MIN_INTERVAL)));
                }
                Some(d)
            }
        };
        let mode = if form.on("non-persistent") { Mode::NonPersistent } else { Mode::Persistent };
        let recreate = form.on("recreate");
        match form.kind {
            FormKind::Create => {
                let workbook = WorkbookRef::parse(form.value("workbook")).map_err(|e| e.to_string())?;
                Ok(Command::Create { name, workbook, mode, interval, recreate })
            }
            FormKind::Track => {
                let workbook = WorkbookRef::parse(form.value("workbook")).map_err(|e| e.to_string())?;
                let id = SessionId::new(form.value("session id")).map_err(|e| e.to_string())?;
                let mut session = TrackedSession::new(name, workbook, id, mode, Utc::now());
                session.interval = interval;
                session.recreate = recreate;
                Ok(Command::Track(Box::new(session)))
            }
            FormKind::Edit(key) => {
                let auto = self.rows.get(&key).is_none_or(|r| r.session.auto);
                Ok(Command::Edit { key, settings: SessionSettings { name, interval, recreate, auto } })
            }
        }
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        match mouse.kind {
            MouseEventKind::ScrollDown => self.move_by(1),
            MouseEventKind::ScrollUp => self.move_by(-1),
            MouseEventKind::Down(MouseButton::Left) => {
                let area = self.table_rows;
                if mouse.column >= area.x
                    && mouse.column < area.right()
                    && mouse.row >= area.y
                    && mouse.row < area.bottom()
                {
                    let index = self.offset + usize::from(mouse.row - area.y);
                    if let Some(key) = self.view().get(index).copied() {
                        self.select(Some(key));
                    }
                }
            }
            _ => return,
        }
        self.dirty = true;
    }

    fn engine_event(&mut self, event: Event, now: DateTime<Utc>) {
        match event {
            Event::Started { key } => {
                if let Some(mut row) = self.rows.get(&key).cloned() {
                    row.refreshing = true;
                    self.put(row);
                }
            }
            Event::Outcome { key, name, outcome, .. } => {
                if self.awaiting.contains(&key) && outcome.kind != crate::session::OutcomeKind::Ok {
                    let codes =
                        if outcome.codes.is_empty() { String::new() } else { format!(" {}", outcome.codes.join("/")) };
                    let message = outcome.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                    self.flash_error(
                        format!("{name}: {} {}{codes}{message}", outcome.action.as_str(), outcome.kind.as_str()),
                        now,
                    );
                }
            }
            Event::Changed(session) => {
                let key = session.key;
                let was_awaited = self.awaiting.remove(&key);
                let error_showing = self.flash.as_ref().is_some_and(|f| f.error);
                if was_awaited && !session.status.is_failing() && !error_showing {
                    self.flash_info(format!("{}: {}", session.name, session.status), now);
                }
                self.put(Row { session: *session, refreshing: false });
            }
            Event::Added(session) => {
                self.flash_info(format!("now tracking {}", session.name), now);
                self.put(Row { session: *session, refreshing: false });
            }
            Event::Removed { key, .. } => {
                if self.selected == Some(key) {
                    // Select the row that takes the removed one's place.
                    let index = self.selected_index().unwrap_or(0);
                    let rest: Vec<SessionKey> = self.view().iter().copied().filter(|k| *k != key).collect();
                    self.select(rest.get(index).or(rest.last()).copied());
                }
                self.take(key);
                self.scheduled.remove(&key);
                self.marks.remove(&key);
                self.awaiting.remove(&key);
                self.changed();
            }
            Event::Scheduled { key, at } => {
                self.scheduled.insert(key, at);
            }
            Event::Throttled { until } => self.throttled_until = until,
            Event::Paused(paused) => {
                self.paused = paused;
                self.flash_info(if paused { "automatic refresh paused" } else { "automatic refresh resumed" }, now);
            }
            Event::Driving => {
                self.info.driver = Driver::This;
                self.flash_info("the driver went away: this dashboard refreshes automatically now", now);
            }
            Event::Error(e) => self.flash_error(e, now),
            Event::Stopped => self.quit = true,
        }
        self.dirty = true;
    }

    /// Keeps the selection inside a window of `height` rows.
    pub fn scroll_to_selection(&mut self, height: usize) {
        let len = self.view().len();
        let index = self.selected_index().unwrap_or(0);
        if height == 0 {
            return;
        }
        if index < self.offset {
            self.offset = index;
        } else if index >= self.offset + height {
            self.offset = index + 1 - height;
        }
        self.offset = self.offset.min(len.saturating_sub(height));
    }

    /// A digest of every relative time on screen ("12s ago", "in 3m", countdowns).
    pub fn clock_text(&mut self, now: DateTime<Utc>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let height = usize::from(self.table_rows.height).max(1);
        let offset = self.offset;
        let visible: Vec<SessionKey> = self.view().iter().skip(offset).take(height).copied().collect();
        for key in visible {
            if let Some(row) = self.rows.get(&key) {
                row.session.last_refresh.map(|t| format_ago(t, now)).hash(&mut hasher);
                self.next_due(&row.session).map(|t| format_until(t, now)).hash(&mut hasher);
            }
        }
        if self.details
            && let Some(row) = self.selected_row()
        {
            for outcome in &row.session.outcomes {
                format_ago(outcome.at, now).hash(&mut hasher);
            }
        }
        self.throttled_until.map(|t| format_until(t, now)).hash(&mut hasher);
        if let Some(Dialog::SignIn(SignInDialog { deadline: Some(deadline), .. })) = &self.dialog {
            (*deadline - now).num_seconds().hash(&mut hasher);
        }
        hasher.finish()
    }

    pub fn counts(&self) -> &BTreeMap<Status, usize> {
        &self.counts
    }
}
