//! The dashboard's dialogs: the session form (create, track, edit), confirmations, sign-in. Text
//! fields are `tui-input` inputs: cursor keys, home/end, ctrl-u, ctrl-w and paste work as in a
//! shell.

use chrono::{DateTime, Utc};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent};
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler;

use crate::engine::Request;
use crate::session::{
    Defaults, Draft, Mode, NewSession, SessionKey, SessionSettings, SettingsChange, TrackedSession, check_interval,
    validate_name,
};
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
}

impl Field {
    fn text(label: &'static str, value: &str, hint: &'static str) -> Field {
        Field { label, value: FieldValue::Text(Input::new(value.to_string())), hint }
    }

    fn toggle(label: &'static str, on: bool) -> Field {
        Field { label, value: FieldValue::Toggle(on), hint: "space toggles" }
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

#[derive(Debug, Clone)]
pub struct Form {
    pub kind: FormKind,
    pub fields: Vec<Field>,
    pub(crate) focus: usize,
    pub error: Option<String>,
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
            Field::text("name", "", "letters, digits, - _ ."),
            Field::text("workbook", "", "me/drive/items/ID or /me/drive/root:/path.xlsx:"),
            Field::text("interval", "", "blank for the default, or e.g. 90s, 4m"),
            Field::toggle("non-persistent", false),
            Field::toggle("recreate", defaults.recreate),
        ];
        if kind == FormKind::Track {
            fields.insert(2, Field::text("session id", "", "the id createSession returned"));
        }
        Form { kind, fields, focus: 0, error: None, warning: None, mode: Mode::Persistent, original: None }
    }

    pub fn edit(s: &TrackedSession) -> Form {
        let interval = s.interval.map(format_duration).unwrap_or_default();
        Form {
            kind: FormKind::Edit(s.key),
            fields: vec![
                Field::text("name", &s.name, "letters, digits, - _ ."),
                Field::text("interval", &interval, "blank for the default, or e.g. 90s, 4m"),
                Field::toggle("recreate", s.recreate),
                Field::toggle("automatic", s.auto),
            ],
            focus: 0,
            error: None,
            warning: None,
            mode: s.mode,
            original: Some(SessionSettings::of(s)),
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

    pub(crate) fn paste(&mut self, text: &str) {
        if let Some(FieldValue::Text(input)) = self.fields.get_mut(self.focus).map(|f| &mut f.value) {
            for c in text.chars().filter(|c| !c.is_control()) {
                input.handle(tui_input::InputRequest::InsertChar(c));
            }
            self.edited();
        }
    }

    pub fn key(&mut self, key: KeyEvent, defaults: &Defaults, taken: &[(SessionKey, String)]) -> Submitted {
        let count = self.fields.len();
        match key.code {
            KeyCode::Esc => return Submitted::Cancel,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % count,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + count - 1) % count,
            KeyCode::Enter => match self.submit(defaults, taken) {
                Ok(Some(command)) => return Submitted::Yes(command),
                Ok(None) => {}
                Err(why) => {
                    self.warning = None;
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
    fn submit(&mut self, defaults: &Defaults, taken: &[(SessionKey, String)]) -> Result<Option<Request>, String> {
        let name = self.value("name").to_string();
        let own = match self.kind {
            FormKind::Edit(key) => Some(key),
            _ => None,
        };
        if taken.iter().any(|(key, n)| *n == name && Some(*key) != own) {
            return Err(format!("a session named {name:?} is already tracked"));
        }
        let interval = match self.value("interval") {
            "" => None,
            text => Some(parse_duration(text).map_err(|e| format!("interval: {e}"))?),
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
                let new = NewSession::check(&draft, defaults)?;
                let warning = new.warning.clone();
                let command = if self.kind == FormKind::Create { Request::Create(new) } else { Request::Track(new) };
                (command, warning)
            }
            FormKind::Edit(key) => {
                validate_name(&name).map_err(|e| e.to_string())?;
                check_interval(interval)?;
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
    },
    /// A device-code sign-in in progress.
    SignIn(SignInDialog),
}
