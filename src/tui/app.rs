//! The dashboard's state and how it changes: keys, mouse, paste, engine events, ticks, resizes.
//! No drawing and no I/O here: `update` returns the effects to carry out (engine commands,
//! copying, quitting), and `settle` leaves the state the view draws from computed: the order of
//! the rows, the scroll offset, the visible rows, the columns that fit.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyEvent, KeyEventKind, MouseEvent};

use super::dialog::{Dialog, SignInDialog};
use super::layout::{Areas, Col, Placed, areas, fit_columns};
use crate::auth::SignInState;
use crate::engine::{Answer, Event, JobKind, Request};
use crate::session::{Defaults, Outcome, SessionKey, SortBy, Status, TrackedSession};
use crate::text::natural_cmp;
use crate::time::{format_ago, format_until};

/// Who schedules automatic refreshes for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    This,
    /// Another process does; the pid if known.
    Other(Option<u32>),
    /// The store is read-only for this process: it only watches, and never drives.
    ReadOnly,
}

/// The proxy's calls and errors in the last minute, read when the header is drawn.
pub struct ProxyGauge {
    pub last_minute: Box<dyn Fn() -> (u64, u64) + Send>,
}

/// What the dashboard shows about where it is connected, and the user's display preferences.
#[derive(Debug, Clone)]
pub struct Info {
    pub store: String,
    pub endpoint: String,
    pub demo: bool,
    pub driver: Driver,
    /// Intervals and idle expiries for sessions without their own.
    pub defaults: Defaults,
    /// Where the log files are, for the log view.
    pub log_dir: String,
    /// Every colour on screen.
    pub palette: super::theme::Palette,
}

#[derive(Debug, Clone)]
pub struct Row {
    /// The engine's copy, shared until it changes its own.
    pub session: Arc<TrackedSession>,
    pub refreshing: bool,
}

/// The column a sort key shows in.
pub(crate) fn column_of(by: SortBy) -> Col {
    match by {
        SortBy::Name => Col::Name,
        SortBy::Workbook => Col::Workbook,
        SortBy::Mode => Col::Mode,
        SortBy::Status => Col::Status,
        SortBy::Last => Col::Last,
        SortBy::Next => Col::Next,
        SortBy::Expires => Col::Expires,
        SortBy::Latency => Col::Latency,
        SortBy::Failures => Col::Failures,
    }
}

pub(super) fn sort_of(col: Col) -> Option<SortBy> {
    SortBy::ALL.into_iter().find(|s| column_of(*s) == col)
}

/// Whether the order can change with time or with a session's calls (so the view is rebuilt
/// more often).
pub(super) fn moves(by: SortBy) -> bool {
    !matches!(by, SortBy::Name | SortBy::Workbook | SortBy::Mode)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub by: SortBy,
    pub reverse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
    pub at: DateTime<Utc>,
    /// The session it is about: an error about it goes once it succeeds.
    pub about: Option<SessionKey>,
}

/// Info flashes go after this long; errors stay until dismissed or replaced.
pub(super) const FLASH_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// The longest filter: longer than any name or reference it could match is of no use.
pub(super) const FILTER_MAX: usize = 256;

/// Lines the log view keeps.
pub(super) const LOG_LINES: usize = 500;

/// A line of the log view: a warning or an error the dashboard heard of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub text: String,
    pub error: bool,
}

/// An overlay over the table, scrolled by the movement keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    Help { scroll: usize },
    Log { scroll: usize },
}

/// Everything that can happen to the dashboard.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Paste(String),
    Engine(Event),
    Tick,
    Resize(u16, u16),
    /// The engine's reply to something this dashboard asked.
    Answer {
        kind: JobKind,
        key: Option<SessionKey>,
        about: String,
        answer: Answer,
    },
}

/// What the event loop carries out for the app.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Ask the engine; its reply comes back as `Msg::Answer`, saying `about` whom.
    Ask {
        request: Request,
        about: String,
    },
    /// Put text on the terminal's clipboard (OSC 52).
    Copy(String),
    Quit,
}

/// The times one row shows, made in one place for drawing them and for deciding whether a tick
/// changes what is on screen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowTimes {
    pub last: String,
    pub next: String,
    pub(crate) expires: String,
}

pub struct App {
    pub info: Info,
    pub signin: Option<SignInState>,
    /// The mirror of the engine's list; changed only through `put` and `take`, which keep the
    /// counts and the view up to date.
    pub rows: BTreeMap<SessionKey, Row>,
    pub(super) counts: BTreeMap<Status, usize>,
    /// The visible order: filtered and sorted; rebuilt when what it depends on changed.
    pub(super) view: Vec<SessionKey>,
    pub(super) view_stale: bool,
    pub selected: Option<SessionKey>,
    pub(super) selected_pos: Option<usize>,
    /// Until the user moves, the selection stays on the top row as rows arrive.
    pub(super) moved: bool,
    /// The first row of the view on screen, the rows on screen and the columns that fit: set by
    /// `settle`.
    pub(crate) offset: usize,
    pub visible: Vec<SessionKey>,
    pub columns: Vec<Placed>,
    pub marks: HashSet<SessionKey>,
    pub filter: String,
    pub filtering: bool,
    pub sort: Sort,
    pub(crate) failing_only: bool,
    /// Absolute local times instead of "12s ago".
    pub(crate) absolute_times: bool,
    pub details: bool,
    /// The details pane has the focus: the movement keys scroll it.
    pub details_focus: bool,
    pub detail_scroll: usize,
    pub overlay: Option<Overlay>,
    pub dialog: Option<Dialog>,
    pub flash: Option<Flash>,
    pub paused: bool,
    /// Workbooks Graph asked to wait, and until when.
    pub holds: (usize, Option<DateTime<Utc>>),
    /// The keepers alive, where keepers share the store's workbooks (empty elsewhere).
    pub keepers: Vec<crate::store::KeeperInfo>,
    /// Recent warnings and errors, newest first.
    pub log: VecDeque<LogLine>,
    /// The terminal's size and where each part of the screen goes.
    pub size: (u16, u16),
    pub layout: Areas,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// The digest of `clock_texts` as of the last frame.
    pub(crate) drawn_clock: u64,
    /// Next automatic refreshes as the engine planned them.
    pub(super) scheduled: HashMap<SessionKey, Option<DateTime<Utc>>>,
    /// The stored outcomes of the session whose details are open, newest first.
    pub history: Option<(SessionKey, Vec<Outcome>)>,
    /// The clock as of the last update.
    pub(super) now: DateTime<Utc>,
    /// Only the first screenful is here; the engine is reading the rest.
    pub(crate) loading: bool,
    /// Work asked of many sessions at once, still answering.
    pub bulks: Vec<super::bulk::Bulk>,
    /// The store's recent failures as of the log view's opening (`None` while being read).
    pub problems: Option<Vec<LogLine>>,
    /// The proxy serving on this dashboard's engine (`--proxy`), as the header shows it.
    pub proxy: Option<ProxyGauge>,
}

impl App {
    pub fn new(info: Info, sessions: Vec<TrackedSession>, size: (u16, u16), now: DateTime<Utc>) -> App {
        let mut app = App {
            info,
            signin: None,
            rows: BTreeMap::new(),
            counts: BTreeMap::new(),
            view: Vec::new(),
            view_stale: true,
            selected: None,
            selected_pos: None,
            moved: false,
            offset: 0,
            visible: Vec::new(),
            columns: Vec::new(),
            marks: HashSet::new(),
            filter: String::new(),
            filtering: false,
            sort: Sort { by: SortBy::Name, reverse: false },
            failing_only: false,
            absolute_times: false,
            details: false,
            details_focus: false,
            detail_scroll: 0,
            overlay: None,
            dialog: None,
            flash: None,
            paused: false,
            holds: (0, None),
            keepers: Vec::new(),
            log: VecDeque::new(),
            size,
            layout: areas(size.0, size.1, false),
            dirty: true,
            drawn_clock: 0,
            scheduled: HashMap::new(),
            history: None,
            now,
            loading: false,
            bulks: Vec::new(),
            problems: None,
            proxy: None,
        };
        for session in sessions {
            app.put(Row { session: Arc::new(session), refreshing: false });
        }
        app.settle();
        app
    }

    /// Sorts the view the way the user left it or chose in config.toml.
    pub(crate) fn set_sort(&mut self, sort: Sort) {
        self.sort = sort;
        self.changed();
        self.settle();
    }

    /// The status a row shows now: what is happening to it, else its stored status aged by time.
    pub fn status_of(&self, row: &Row) -> Status {
        if row.refreshing { Status::Refreshing } else { self.info.defaults.status_at(&row.session, self.now) }
    }

    pub(super) fn count(&mut self, status: Status, up: bool) {
        let n = self.counts.entry(status).or_default();
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
        if *n == 0 {
            self.counts.remove(&status);
        }
    }

    /// Adds or replaces a row. The view is rebuilt only if what it sorts or filters by changed.
    pub(super) fn put(&mut self, row: Row) {
        let shown = self.status_of(&row);
        self.count(shown, true);
        let key = row.session.key;
        match self.rows.insert(key, row) {
            None => self.view_stale = true,
            Some(old) => {
                let was = self.status_of(&old);
                self.count(was, false);
                let (a, b) = (&old.session, &self.rows[&key].session);
                let moved = a.name != b.name
                    || a.workbook != b.workbook
                    || ((self.failing_only || !self.filter.is_empty()) && was != shown)
                    || (moves(self.sort.by) && (was != shown || a != b));
                self.view_stale |= moved;
            }
        }
        self.dirty = true;
    }

    pub(super) fn take(&mut self, key: SessionKey) -> Option<Row> {
        let row = self.rows.remove(&key)?;
        let shown = self.status_of(&row);
        self.count(shown, false);
        self.view_stale = true;
        self.dirty = true;
        Some(row)
    }

    /// Recounts statuses when time may have turned an `ok` stale.
    pub(super) fn recount(&mut self) {
        let counts = self.rows.values().fold(BTreeMap::new(), |mut counts, row| {
            *counts.entry(self.status_of(row)).or_insert(0) += 1;
            counts
        });
        if counts != self.counts {
            self.counts = counts;
            self.view_stale |= self.failing_only || !self.filter.is_empty() || self.sort.by == SortBy::Status;
            self.dirty = true;
        }
    }

    pub(super) fn select(&mut self, key: Option<SessionKey>) {
        self.selected = key;
        self.selected_pos = None;
        self.moved = true;
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
        crate::engine::policy::next_due(s, &self.info.defaults, self.now)
    }

    /// A time as the user chose to see it: "12s ago" or "14:03:05".
    pub(super) fn when(&self, t: DateTime<Utc>, now: DateTime<Utc>, future: bool) -> String {
        if self.absolute_times {
            let local = t.with_timezone(&chrono::Local);
            if local.date_naive() == now.with_timezone(&chrono::Local).date_naive() {
                local.format("%H:%M:%S").to_string()
            } else {
                local.format("%b %d %H:%M").to_string()
            }
        } else if future {
            format_until(t, now)
        } else {
            format_ago(t, now)
        }
    }

    /// The one place the times of a row are made.
    pub fn row_times(&self, row: &Row, now: DateTime<Utc>) -> RowTimes {
        let s = &row.session;
        let last = s.last_refresh.map_or("never".to_string(), |t| self.when(t, now, false));
        let next = if row.refreshing {
            "now".to_string()
        } else if !s.auto {
            "manual".to_string()
        } else if self.paused && s.is_kept_alive() {
            // As `list` says it: nothing is due while the whole store is paused.
            "paused".to_string()
        } else {
            self.next_due(s).map_or("-".to_string(), |due| self.when(due, now, true))
        };
        let expires = match self.info.defaults.expires_at(s) {
            None => "-".to_string(),
            Some(at) if at <= now => "passed".to_string(),
            Some(at) if self.absolute_times => self.when(at, now, true),
            Some(at) => format_until(at, now).trim_start_matches("in ").to_string(),
        };
        RowTimes { last, next, expires }
    }

    /// Every relative time on screen: the visible rows', the open details', the header's waits.
    pub(crate) fn clock_texts(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut texts = Vec::new();
        for row in self.visible.iter().filter_map(|k| self.rows.get(k)) {
            let RowTimes { last, next, expires } = self.row_times(row, now);
            texts.extend([last, next, expires]);
        }
        if self.details
            && let Some((_, outcomes)) = &self.history
        {
            texts.extend(outcomes.iter().map(|o| self.when(o.at, now, false)));
        }
        if let Some(until) = self.holds.1 {
            texts.push(format_until(until, now));
        }
        if let Some(Dialog::SignIn(SignInDialog { deadline: Some(deadline), .. })) = &self.dialog {
            texts.push(deadline.signed_duration_since(now).num_seconds().to_string());
        }
        texts
    }

    pub(crate) fn clock_digest(&self, now: DateTime<Utc>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.clock_texts(now).hash(&mut hasher);
        hasher.finish()
    }

    /// Whether anything on screen reads differently with time, so that ticks are needed.
    pub(crate) fn needs_ticks(&self) -> bool {
        !self.visible.is_empty()
            || self.flash.is_some()
            || self.holds.1.is_some()
            || matches!(self.dialog, Some(Dialog::SignIn(_)))
    }

    /// The filtered, sorted keys.
    pub fn view(&self) -> &[SessionKey] {
        &self.view
    }

    pub(super) fn rebuild_view(&mut self) {
        self.view_stale = false;
        let filter = super::filter::Filter::parse(&self.filter);
        let now = self.now;
        let rows: Vec<&Row> = self
            .rows
            .values()
            .filter(|r| {
                let status = self.status_of(r);
                (!self.failing_only || status.is_failing())
                    && (filter.is_empty() || filter.matches(&r.session.name, status, || r.session.workbook.to_string()))
            })
            .collect();
        // Keys computed once per row, not once per comparison: a rebuild of 100,000 rows stays
        // a few milliseconds.
        let far = DateTime::<Utc>::MAX_UTC;
        let mut keyed: Vec<(i128, String, &Row)> = rows
            .into_iter()
            .map(|r| {
                let s = &r.session;
                let (number, text): (i128, String) = match self.sort.by {
                    SortBy::Name => (0, String::new()),
                    SortBy::Workbook => (0, s.workbook.to_string()),
                    SortBy::Mode => (i128::from(s.mode != crate::session::Mode::Persistent), String::new()),
                    SortBy::Status => {
                        let status = self.status_of(r);
                        (i128::from(!status.is_failing()) * 100 + status as i128, String::new())
                    }
                    SortBy::Last => {
                        (s.last_refresh.map_or(i128::MIN, |t| i128::from(t.timestamp_millis())), String::new())
                    }
                    SortBy::Next => (i128::from(self.next_due(s).unwrap_or(far).timestamp_millis()), String::new()),
                    SortBy::Expires => {
                        let at = self.info.defaults.expires_at(s).unwrap_or(far);
                        (i128::from(at.signed_duration_since(now).num_milliseconds()), String::new())
                    }
                    SortBy::Latency => (s.last_call.map_or(-1, |c| i128::from(c.latency_ms)), String::new()),
                    SortBy::Failures => (-i128::from(s.failures), String::new()),
                };
                (number, text, r)
            })
            .collect();
        keyed.sort_by(|(na, ta, a), (nb, tb, b)| {
            na.cmp(nb).then_with(|| ta.cmp(tb)).then_with(|| natural_cmp(&a.session.name, &b.session.name))
        });
        if self.sort.reverse {
            keyed.reverse();
        }
        self.view = keyed.into_iter().map(|(_, _, r)| r.session.key).collect();
        self.selected_pos = None;
        if !self.moved || self.selected.is_none_or(|k| !self.rows.contains_key(&k) || !self.view.contains(&k)) {
            self.selected = self.view.first().copied();
        }
    }

    pub fn selected_index(&mut self) -> Option<usize> {
        let selected = self.selected?;
        if self.selected_pos.is_none() {
            self.selected_pos = self.view.iter().position(|k| *k == selected);
        }
        self.selected_pos
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.selected.and_then(|k| self.rows.get(&k))
    }

    /// Computes what the view draws from: the layout, the order, the scroll offset that keeps
    /// the selection on screen, the visible rows and the columns that fit them. `update` calls
    /// it, except after an engine event: a burst of those settles once, before the next frame.
    pub(crate) fn settle(&mut self) {
        self.layout = areas(self.size.0, self.size.1, self.details);
        if self.view_stale {
            self.rebuild_view();
        }
        let height = usize::from(self.layout.table_rows.height);
        let len = self.view.len();
        let index = self.selected_index().unwrap_or(0);
        if height > 0 {
            if index < self.offset {
                self.offset = index;
            } else if index >= self.offset + height {
                self.offset = index + 1 - height;
            }
        }
        self.offset = self.offset.min(len.saturating_sub(height));
        let visible: Vec<SessionKey> = self.view.iter().skip(self.offset).take(height).copied().collect();
        if visible != self.visible {
            self.visible = visible;
            self.dirty = true;
        }
        let columns = self.fit_columns();
        if columns != self.columns {
            self.columns = columns;
            self.dirty = true;
        }
    }

    /// Widths from the content on screen and the terminal's width.
    pub(super) fn fit_columns(&self) -> Vec<Placed> {
        let rows: Vec<&Row> = self.visible.iter().filter_map(|k| self.rows.get(k)).collect();
        let widest = |text: &dyn Fn(&Row) -> usize| rows.iter().map(|r| text(r)).max().unwrap_or(0);
        let sorted = column_of(self.sort.by);
        let first_owner = rows.first().map(|r| &r.session.owner);
        let owners_differ = rows.iter().any(|r| Some(&r.session.owner) != first_owner);
        let natural = |col: Col| -> u16 {
            if col == Col::Owner && !owners_differ {
                return 0;
            }
            let title = col.title().chars().count() + usize::from(col == sorted);
            let content = match col {
                Col::Mark => 1,
                Col::Name => widest(&|r| r.session.name.chars().count()).min(32),
                Col::Workbook => widest(&|r| r.session.workbook.to_string().chars().count()).min(60),
                Col::Owner => widest(&|r| r.session.owner.as_deref().map_or(1, |o| o.chars().count())).min(30),
                Col::Mode => 7,
                Col::Status => 10,
                // As wide as what the rows on screen say ("1m40s ago", "Dec 06 14:03").
                Col::Last => widest(&|r| self.row_times(r, self.now).last.chars().count()).max(8),
                Col::Next => widest(&|r| self.row_times(r, self.now).next.chars().count()).max(7),
                Col::Expires => widest(&|r| self.row_times(r, self.now).expires.chars().count()).max(6),
                Col::Latency => 7,
                Col::Failures => 5,
            };
            u16::try_from(title.max(content)).unwrap_or(u16::MAX)
        };
        fit_columns(self.layout.table_rows.width, natural)
    }

    /// The marked sessions, or the selected one when nothing is marked.
    pub(super) fn targets(&self) -> Vec<SessionKey> {
        if self.marks.is_empty() {
            self.selected.into_iter().collect()
        } else {
            let mut keys: Vec<SessionKey> = self.marks.iter().copied().collect();
            keys.sort_unstable();
            keys
        }
    }

    pub(super) fn names(&self, keys: &[SessionKey]) -> Vec<String> {
        keys.iter().filter_map(|k| self.rows.get(k)).map(|r| r.session.name.clone()).collect()
    }

    pub(super) fn changed(&mut self) {
        self.view_stale = true;
        self.dirty = true;
    }

    pub(super) fn move_by(&mut self, delta: isize) {
        let len = self.view.len();
        if len == 0 {
            return;
        }
        let index = self.selected_index().unwrap_or(0) as isize;
        let next = (index + delta).clamp(0, len as isize - 1) as usize;
        self.selected = self.view.get(next).copied();
        self.selected_pos = Some(next);
        self.moved = true;
    }

    pub(super) fn page(&self) -> isize {
        isize::try_from(self.layout.table_rows.height.max(1)).unwrap_or(1)
    }

    /// The details follow the selection: its stored history is asked for.
    pub(super) fn selection_moved(&mut self) -> Option<Effect> {
        self.dirty = true;
        self.detail_scroll = 0;
        if !self.details {
            return None;
        }
        let key = self.selected?;
        if self.history.as_ref().is_some_and(|(k, _)| *k == key) {
            return None;
        }
        self.history = None;
        Some(self.ask(Request::History(key)))
    }

    pub fn update(&mut self, msg: Msg, now: DateTime<Utc>) -> Vec<Effect> {
        self.now = now;
        let selected_before = self.selected;
        let engine_event = matches!(msg, Msg::Engine(_));
        let mut effects = match msg {
            Msg::Key(key) if key.kind != KeyEventKind::Release => {
                self.dirty = true;
                self.key(key, now)
            }
            Msg::Key(_) => Vec::new(),
            Msg::Paste(text) => {
                if let Some(Dialog::Form(form)) = &mut self.dialog {
                    form.paste(&text);
                    self.dirty = true;
                } else if self.filtering {
                    let room = FILTER_MAX.saturating_sub(self.filter.chars().count());
                    self.filter.extend(text.chars().filter(|c| !c.is_control()).take(room));
                    self.changed();
                }
                Vec::new()
            }
            Msg::Mouse(mouse) => self.mouse(mouse),
            Msg::Engine(event) => self.engine_event(event, now),
            Msg::Answer { kind, key, about, answer } => {
                self.answered(kind, key, about, answer, now);
                Vec::new()
            }
            Msg::Tick => {
                if self.flash.as_ref().is_some_and(|f| !f.error && now.signed_duration_since(f.at) >= FLASH_FOR) {
                    self.flash = None;
                    self.dirty = true;
                }
                if self.holds.1.is_some_and(|t| t <= now) {
                    self.holds = (0, None);
                    self.dirty = true;
                }
                self.recount();
                if moves(self.sort.by) && matches!(self.sort.by, SortBy::Next | SortBy::Expires | SortBy::Status) {
                    // Time moves these orders; a tick re-sorts (cheap: keys once per row).
                    self.view_stale = true;
                }
                Vec::new()
            }
            Msg::Resize(width, height) => {
                self.size = (width, height);
                self.dirty = true;
                Vec::new()
            }
        };
        if !engine_event {
            self.settle();
        }
        if self.selected != selected_before
            && let Some(effect) = self.selection_moved()
        {
            effects.push(effect);
        }
        // Redraw on a tick only if a time on screen reads differently now.
        if !self.dirty && self.clock_digest(now) != self.drawn_clock {
            self.dirty = true;
        }
        effects
    }

    /// The event loop calls this once it has drawn the state as of `now`.
    pub fn drawn(&mut self, now: DateTime<Utc>) {
        self.dirty = false;
        self.drawn_clock = self.clock_digest(now);
    }

    pub fn counts(&self) -> &BTreeMap<Status, usize> {
        &self.counts
    }

    /// Whether every session that should be kept alive fails for want of a sign-in.
    pub(crate) fn signed_out(&self) -> bool {
        let mut kept = self.rows.values().filter(|r| r.session.is_kept_alive()).peekable();
        kept.peek().is_some() && kept.all(|r| r.session.status == Status::Auth)
    }
}
