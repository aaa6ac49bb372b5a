//! What a user asks for: a new session (checked once, by the one rule the command line, the
//! dashboard's form and the engine share) and a change to how one is kept.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Defaults, MAX_INTERVAL, MIN_INTERVAL, Mode, SessionId, TrackedSession, WorkbookRef};

/// What the user decides about a session, as opposed to what its calls change.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub name: String,
    pub interval: Option<Duration>,
    pub recreate: bool,
    pub auto: bool,
}

impl SessionSettings {
    pub fn of(s: &TrackedSession) -> Self {
        SessionSettings { name: s.name.clone(), interval: s.interval, recreate: s.recreate, auto: s.auto }
    }

    pub fn apply_to(&self, s: &mut TrackedSession) {
        s.name.clone_from(&self.name);
        s.interval = self.interval;
        s.recreate = self.recreate;
        s.auto = self.auto;
    }
}

/// What an edit changes; `None` leaves a setting as it stands in the store. An edit therefore
/// never undoes another process's change to a setting it did not touch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsChange {
    pub name: Option<String>,
    /// `Some(None)`: follow the default interval again.
    pub interval: Option<Option<Duration>>,
    pub recreate: Option<bool>,
    pub auto: Option<bool>,
}

impl SettingsChange {
    /// What a form that started from `before` and ends at `after` changed.
    pub fn between(before: &SessionSettings, after: &SessionSettings) -> Self {
        SettingsChange {
            name: (after.name != before.name).then(|| after.name.clone()),
            interval: (after.interval != before.interval).then_some(after.interval),
            recreate: (after.recreate != before.recreate).then_some(after.recreate),
            auto: (after.auto != before.auto).then_some(after.auto),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    /// The same checks a new session's settings get.
    pub fn check(&self) -> Result<(), String> {
        if let Some(name) = &self.name {
            validate_name(name).map_err(|e| e.to_string())?;
        }
        check_interval(self.interval.flatten())
    }

    pub fn apply_to(&self, s: &mut TrackedSession) {
        if let Some(name) = &self.name {
            s.name.clone_from(name);
        }
        if let Some(interval) = self.interval {
            s.interval = interval;
        }
        if let Some(recreate) = self.recreate {
            s.recreate = recreate;
        }
        if let Some(auto) = self.auto {
            s.auto = auto;
        }
    }
}

/// A session as the user describes it, before anything checked it.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub name: String,
    pub workbook: String,
    /// Set when tracking a session that exists; unset when creating one.
    pub session_id: Option<String>,
    pub non_persistent: bool,
    pub interval: Option<Duration>,
    /// `None` takes the default.
    pub recreate: Option<bool>,
}

/// The part of a new session a refusal is about, so that a form can say it under that field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftField {
    Name,
    Workbook,
    SessionId,
    Interval,
}

/// Why a draft is not a new session, and which part of it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DraftError {
    pub field: DraftField,
    pub message: String,
}

impl DraftError {
    fn of(field: DraftField) -> impl FnOnce(String) -> DraftError {
        move |message| DraftError { field, message }
    }
}

/// A new session that passed every check that needs neither the network nor the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub name: String,
    pub workbook: WorkbookRef,
    pub session_id: Option<SessionId>,
    pub mode: Mode,
    pub interval: Option<Duration>,
    pub recreate: bool,
    /// Said to the user, but not a reason to refuse.
    pub warning: Option<String>,
}

impl NewSession {
    /// The one check for a new session, used by the command line, the dashboard and the engine.
    pub fn check(draft: &Draft, defaults: &Defaults) -> Result<NewSession, DraftError> {
        validate_name(draft.name.trim()).map_err(|e| DraftError::of(DraftField::Name)(e.to_string()))?;
        let workbook =
            WorkbookRef::parse(&draft.workbook).map_err(|e| DraftError::of(DraftField::Workbook)(e.to_string()))?;
        let session_id = match &draft.session_id {
            Some(raw) => Some(SessionId::new(raw).map_err(|e| DraftError::of(DraftField::SessionId)(e.to_string()))?),
            None => None,
        };
        check_interval(draft.interval).map_err(DraftError::of(DraftField::Interval))?;
        let mode = if draft.non_persistent { Mode::NonPersistent } else { Mode::Persistent };
        Ok(NewSession {
            name: draft.name.trim().to_string(),
            warning: defaults.interval_warning(draft.interval, mode),
            workbook,
            session_id,
            mode,
            interval: draft.interval,
            recreate: draft.recreate.unwrap_or(defaults.recreate),
        })
    }

    /// The session to track, once its id is known.
    pub(crate) fn into_tracked(self, id: SessionId, now: DateTime<Utc>) -> TrackedSession {
        let mut session = TrackedSession::new(self.name, self.workbook, id, self.mode, now);
        session.interval = self.interval;
        session.recreate = self.recreate;
        session
    }
}

/// An interval of a session's own must not hammer Graph.
pub(crate) fn check_interval(interval: Option<Duration>) -> Result<(), String> {
    match interval {
        Some(i) if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&i) => Err(format!(
            "the interval must be {} to {}",
            crate::time::format_duration(MIN_INTERVAL),
            crate::time::format_duration(MAX_INTERVAL)
        )),
        _ => Ok(()),
    }
}

/// A session name must be typed on command lines and shown in narrow columns.
pub(crate) fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 64 {
        return Err(NameError::TooLong);
    }
    if name.starts_with('-') || !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(NameError::BadCharacters(name.to_string()));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    #[error("the name is empty; give the session a short name such as 'report'")]
    Empty,
    #[error("the name is longer than 64 characters; choose a shorter one")]
    TooLong,
    #[error("the name {0:?} may hold only letters, digits, '-', '_' and '.', and must not start with '-'")]
    BadCharacters(String),
}
