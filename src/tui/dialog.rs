//! The dashboard's dialogs: the session form (create, track, edit), confirmations, sign-in. Text
//! fields are `tui-input` inputs: cursor keys, home/end, ctrl-u, ctrl-w and paste work as in a
//! shell.

use chrono::{DateTime, Utc};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent};
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler;

use crate::engine::Request;
use crate::engine::{EngineError, JobKind};
use crate::session::{
    Defaults, Draft, DraftField, Mode, NewSession, SessionId, SessionKey, SessionSettings, SettingsChange,
    TrackedSession, WorkbookRef, check_interval, validate_name,
};
use crate::store::StoreError;
use crate::time::{format_duration, parse_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormKind {
    Create,
    Track,
    Edit(SessionKey),
}

#[derive(Debug, Clone)]
pub enum FieldValue {
    Text(Input),
    Toggle(bool),
}

#[derive(Debug, Clone)]
pub struct Field {
    pub label: &'static str,
    pub value: FieldValue,
    pub(crate) hint: &'static str,
    /// The most a text field holds, in bytes: what the value may be, so that a runaway paste
    /// is refused at once instead of being edited character by character.
    max: usize,
}

/// The longest a name, an interval, a workbook reference and a session id may be.
const NAME_MAX: usize = 64;
const INTERVAL_MAX: usize = 32;

impl Field {
    fn text(label: &'static str, value: &str, hint: &'static str, max: usize) -> Field {
        Field { label, value: FieldValue::Text(Input::new(value.to_string())), hint, max }
    }

    fn toggle(label: &'static str, on: bool) -> Field {
        Field { label, value: FieldValue::Toggle(on), hint: "space toggles", max: 0 }
    }

    pub fn text_value(&self) -> Option<&str> {
        match &self.value {
            FieldValue::Text(input) => Some(input.value()),
            FieldValue::Toggle(_) => None,
        }
    }
}

/// What a key did to the form.
pub enum Submitted {
    No,
    Cancel,
    Yes(Request),
}

/// What was refused, said under the field it is about (`None`: below the form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    pub field: Option<&'static str>,
    pub text: String,
}

impl FormError {
    fn at(field: &'static str, text: impl Into<String>) -> FormError {
        FormError { field: Some(field), text: text.into() }
    }
}

/// The label of the field a draft's refusal is about.
fn label_of(field: DraftField) -> &'static str {
    match field {
        DraftField::Name => "name",
        DraftField::Workbook => "workbook",
        DraftField::SessionId => "session id",
        DraftField::Interval => "interval",
    }
}

#[derive(Debug, Clone)]
pub struct Form {
    pub kind: FormKind,
    pub fields: Vec<Field>,
    pub(crate) focus: usize,
    pub error: Option<FormError>,
    /// Sent to the engine: the form stays, as typed, until the answer comes.
    pub sent: bool,
    /// A warning shown once; enter again saves anyway.
    pub warning: Option<String>,
    /// The session's mode, when editing (its interval warning depends on it).
    mode: Mode,
    /// The settings the edit form started from: only what differs from them is saved.
    original: Option<SessionSettings>,
}

impl Form {
    /// The fields of a new session, starting from the defaults; tracking one adds its id.
    pub fn new_session(kind: FormKind, defaults: &Defaults) -> Form {
        let mut fields = vec![
            Field::text("name", "", "letters, digits, - _ .", NAME_MAX),
            Field::text("workbook", "", "me/drive/items/ID or /me/drive/root:/path.xlsx:", WorkbookRef::MAX_LEN),
            Field::text("interval", "", "blank for the default, or e.g. 90s, 4m", INTERVAL_MAX),
            Field::toggle("non-persistent", false),
            Field::toggle("recreate", defaults.recreate),
        ];
        if kind == FormKind::Track {
            fields.insert(2, Field::text("session id", "", "the id createSession returned", SessionId::MAX_LEN));
        }
        Form { kind, fields, focus: 0, error: None, sent: false, warning: None, mode: Mode::Persistent, original: None }
    }

    pub fn edit(s: &TrackedSession) -> Form {
        let interval = s.interval.map(format_duration).unwrap_or_default();
        Form {
            kind: FormKind::Edit(s.key),
            fields: vec![
                Field::text("name", &s.name, "letters, digits, - _ .", NAME_MAX),
                Field::text("interval", &interval, "blank for the default, or e.g. 90s, 4m", INTERVAL_MAX),
                Field::toggle("recreate", s.recreate),
                Field::toggle("automatic", s.auto),
            ],
            focus: 0,
            error: None,
            sent: false,
            warning: None,
            mode: s.mode,
            original: Some(SessionSettings::of(s)),
        }
    }

    /// Whether an answer to `kind` about `key` is the answer to this form.
    pub(crate) fn awaits(&self, kind: JobKind, key: Option<SessionKey>) -> bool {
        self.sent
            && match self.kind {
                FormKind::Create => kind == JobKind::Create,
                FormKind::Track => kind == JobKind::Track,
                FormKind::Edit(own) => kind == JobKind::Edit && key == Some(own),
            }
    }

    /// The engine refused what the form sent: said under the field it is about, with what was
    /// typed kept for the user to correct.
    pub(crate) fn refused(&mut self, why: &EngineError) {
        self.sent = false;
        self.warning = None;
        let field = match why {
            EngineError::Store(StoreError::NameTaken(_)) => Some("name"),
            EngineError::Store(StoreError::IdTaken(_)) => Some("session id"),
            EngineError::Unresolved { .. } => Some("workbook"),
            // Graph's 404 to a createSession is about the workbook it names.
            EngineError::Dead(_) if self.kind == FormKind::Create => Some("workbook"),
            _ => None,
        };
        if let Some(index) = field.and_then(|f| self.fields.iter().position(|x| x.label == f)) {
            self.focus = index;
        }
        self.error = Some(FormError { field, text: why.to_string() });
    }

    /// What the form is waiting for, as its last line says it.
    pub(crate) fn doing(&self) -> String {
        let name = self.value("name");
        match self.kind {
            FormKind::Create => format!("creating {name}"),
            FormKind::Track => format!("tracking {name}"),
            FormKind::Edit(_) => format!("saving {name}"),
        }
    }

    pub(crate) fn title(&self) -> &'static str {
        match self.kind {
            FormKind::Create => "Create a session",
            FormKind::Track => "Track an existing session",
            FormKind::Edit(_) => "Edit session",
        }
    }

    fn value(&self, label: &str) -> &str {
        self.fields.iter().find(|f| f.label == label).and_then(Field::text_value).map_or("", str::trim)
    }

    fn on(&self, label: &str) -> bool {
        self.fields.iter().any(|f| f.label == label && matches!(f.value, FieldValue::Toggle(true)))
    }

    /// Something changed: an earlier error or warning no longer applies.
    fn edited(&mut self) {
        self.error = None;
        self.warning = None;
    }

    /// Inserts pasted text at the cursor in one step; a paste that would make the value longer
    /// than the field holds is refused whole, with a word under the field.
    pub(crate) fn paste(&mut self, text: &str) {
        let Some(field) = self.fields.get_mut(self.focus) else { return };
        let (label, max) = (field.label, field.max);
        let FieldValue::Text(input) = &mut field.value else { return };
        let pasted: String = text.chars().filter(|c| !c.is_control()).take(max.saturating_add(1)).collect();
        if input.value().len() + pasted.len() > max {
            self.error =
                Some(FormError::at(label, format!("the {label} holds at most {max} characters; nothing was pasted")));
            return;
        }
        let cursor = input.cursor();
        let mut value = input.value().to_string();
        let at = value.char_indices().nth(cursor).map_or(value.len(), |(i, _)| i);
        value.insert_str(at, &pasted);
        *input = Input::new(value).with_cursor(cursor + pasted.chars().count());
        self.edited();
    }

    pub fn key(&mut self, key: KeyEvent, defaults: &Defaults, taken: &[(SessionKey, String)]) -> Submitted {
        let count = self.fields.len();
        if self.sent && key.code != KeyCode::Esc {
            return Submitted::No;
        }
        match key.code {
            KeyCode::Esc => return Submitted::Cancel,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % count,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + count - 1) % count,
            KeyCode::Enter => match self.submit(defaults, taken) {
                Ok(Some(command)) => return Submitted::Yes(command),
                Ok(None) => {}
                Err(why) => {
                    self.warning = None;
                    if let Some(index) = why.field.and_then(|f| self.fields.iter().position(|x| x.label == f)) {
                        self.focus = index;
                    }
                    self.error = Some(why);
                }
            },
            _ => {
                let Some(field) = self.fields.get_mut(self.focus) else { return Submitted::No };
                match &mut field.value {
                    FieldValue::Toggle(on) => match key.code {
                        KeyCode::Char(' ') => *on = !*on,
                        KeyCode::Char('y') => *on = true,
                        KeyCode::Char('n') => *on = false,
                        _ => return Submitted::No,
                    },
                    FieldValue::Text(input) => {
                        if matches!(key.code, KeyCode::Char(_)) && input.value().len() >= field.max {
                            let (label, max) = (field.label, field.max);
                            self.error =
                                Some(FormError::at(label, format!("the {label} holds at most {max} characters")));
                            return Submitted::No;
                        }
                        if input.handle_event(&TermEvent::Key(key)).is_none() {
                            return Submitted::No;
                        }
                    }
                }
                self.edited();
            }
        }
        Submitted::No
    }

    /// Checks the form with the one rule the command line uses too; a warning is shown once and
    /// the next enter saves anyway (`Ok(None)` while it is shown).
    fn submit(&mut self, defaults: &Defaults, taken: &[(SessionKey, String)]) -> Result<Option<Request>, FormError> {
        let name = self.value("name").to_string();
        let own = match self.kind {
            FormKind::Edit(key) => Some(key),
            _ => None,
        };
        if taken.iter().any(|(key, n)| *n == name && Some(*key) != own) {
            return Err(FormError::at("name", format!("a session named {name:?} is already tracked")));
        }
        let interval = match self.value("interval") {
            "" => None,
            text => Some(parse_duration(text).map_err(|e| FormError::at("interval", e.to_string()))?),
        };
        let (command, warning) = match self.kind {
            FormKind::Create | FormKind::Track => {
                let draft = Draft {
                    name,
                    workbook: self.value("workbook").to_string(),
                    session_id: (self.kind == FormKind::Track).then(|| self.value("session id").to_string()),
                    non_persistent: self.on("non-persistent"),
                    interval,
                    recreate: Some(self.on("recreate")),
                };
                let new = NewSession::check(&draft, defaults)
                    .map_err(|e| FormError { field: Some(label_of(e.field)), text: e.message })?;
                let warning = new.warning.clone();
                let command = if self.kind == FormKind::Create { Request::Create(new) } else { Request::Track(new) };
                (command, warning)
            }
            FormKind::Edit(key) => {
                validate_name(&name).map_err(|e| FormError::at("name", e.to_string()))?;
                check_interval(interval).map_err(|e| FormError::at("interval", e))?;
                let settings =
                    SessionSettings { name, interval, recreate: self.on("recreate"), auto: self.on("automatic") };
                let change = match &self.original {
                    Some(original) => SettingsChange::between(original, &settings),
                    None => SettingsChange {
                        name: Some(settings.name),
                        interval: Some(settings.interval),
                        recreate: Some(settings.recreate),
                        auto: Some(settings.auto),
                    },
                };
                (Request::Edit { key, change }, defaults.interval_warning(interval, self.mode))
            }
        };
        match warning {
            Some(warning) if self.warning.as_ref() != Some(&warning) => {
                self.warning = Some(warning);
                Ok(None)
            }
            _ => Ok(Some(command)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Close,
    /// `all_closed`: every session to remove is closed already, so nothing stays open at Graph.
    Remove {
        all_closed: bool,
    },
    Recreate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInDialog {
    /// Where to go and what to type, once the code has come.
    pub code: Option<(String, String)>,
    pub deadline: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Dialog {
    Form(Form),
    Confirm {
        what: Confirm,
        keys: Vec<SessionKey>,
        names: Vec<String>,
        /// Marked sessions the filter hides, named: the user acts on them unseen.
        hidden: Option<String>,
    },
    /// A device-code sign-in in progress.
    SignIn(SignInDialog),
}
