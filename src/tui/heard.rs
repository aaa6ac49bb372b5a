//! What the dashboard hears from the engine: the answer to each thing it asked, and the events
//! that say what changed, turned into rows, flashes and the log.

use super::app::{App, Driver, Effect, Flash, LOG_LINES, LogLine, Row};
use super::dialog::Dialog;
use crate::auth::Progress;
use crate::engine::{Answer, EngineError, Event, JobKind, KEPT_OUTCOMES, Reply};
use crate::session::{Outcome, OutcomeKind, SessionKey, SortBy};
use chrono::{DateTime, Utc};

impl App {
    /// The newest message wins, whatever came before.
    pub(crate) fn flash_info(&mut self, text: impl Into<String>, now: DateTime<Utc>) {
        self.flash = Some(Flash { text: text.into(), error: false, at: now, about: None });
        self.dirty = true;
    }

    pub(crate) fn flash_error(&mut self, text: impl Into<String>, now: DateTime<Utc>) {
        self.flash_error_about(text, None, now);
    }

    pub(super) fn flash_error_about(&mut self, text: impl Into<String>, about: Option<SessionKey>, now: DateTime<Utc>) {
        let text = text.into();
        self.remember(&text, true, now);
        self.flash = Some(Flash { text, error: true, at: now, about });
        self.dirty = true;
    }

    /// Keeps a line for the log view.
    pub(super) fn remember(&mut self, text: &str, error: bool, now: DateTime<Utc>) {
        self.log.push_front(LogLine { at: now, text: text.to_string(), error });
        self.log.truncate(LOG_LINES);
    }

    /// What the log view lists, newest first: the store's recent failures, whichever process
    /// met them, and what this dashboard said.
    pub fn log_lines(&self) -> Vec<&LogLine> {
        let mut lines: Vec<&LogLine> = self.log.iter().chain(self.problems.iter().flatten()).collect();
        lines.sort_by_key(|line| std::cmp::Reverse(line.at));
        lines
    }

    pub(super) fn sign_in_progress(&mut self, progress: Progress, now: DateTime<Utc>) {
        match progress {
            Progress::Done(Ok(user)) => {
                if matches!(self.dialog, Some(Dialog::SignIn(_))) {
                    self.dialog = None;
                }
                self.flash_info(format!("signed in as {user}"), now);
            }
            other => {
                let Some(Dialog::SignIn(dialog)) = self.dialog.as_mut() else { return };
                match other {
                    Progress::Code { verification_uri, user_code, expires_in } => {
                        dialog.code = Some((verification_uri, user_code));
                        dialog.deadline =
                            Some(crate::time::add(now, std::time::Duration::from_secs(expires_in.min(3600))));
                    }
                    Progress::Done(Err(e)) => dialog.error = Some(e),
                    Progress::Done(Ok(_)) => {}
                }
            }
        }
    }

    /// What the engine answered: said in the footer (errors stay until dismissed or replaced).
    pub(super) fn answered(
        &mut self,
        kind: JobKind,
        key: Option<SessionKey>,
        about: String,
        answer: Answer,
        now: DateTime<Utc>,
    ) {
        let name = key.and_then(|k| self.rows.get(&k)).map_or(about, |r| r.session.name.clone());
        if let Some(Dialog::Form(form)) = self.dialog.as_mut()
            && form.awaits(kind, key)
        {
            match &answer {
                Err(why) => {
                    form.refused(why);
                    self.dirty = true;
                    return;
                }
                Ok(_) => self.dialog = None,
            }
        }
        if self.bulk_answered(kind, key, &name, &answer, now) {
            return;
        }
        match answer {
            Ok(Reply::History(outcomes)) => {
                if let Some(key) = key.filter(|k| self.selected == Some(*k)) {
                    self.history = Some((key, outcomes));
                }
            }
            Ok(Reply::Problems(problems)) => {
                self.problems = Some(
                    problems
                        .into_iter()
                        .map(|(name, outcome)| LogLine {
                            at: outcome.at,
                            text: outcome_line(&name, &outcome),
                            error: false,
                        })
                        .collect(),
                );
            }
            // Sign-in speaks through its dialog.
            _ if kind == JobKind::SignIn => {}
            Ok(_) => {
                let text = match kind {
                    JobKind::Refresh => format!("{name}: refreshed"),
                    JobKind::Close => format!("closed {name}"),
                    JobKind::Recreate => format!("{name}: a new session replaces the old one"),
                    JobKind::Create => format!("created {name}"),
                    JobKind::Track => format!("now tracking {name}"),
                    JobKind::Edit => format!("saved {name}"),
                    JobKind::Remove => format!("removed {name}"),
                    JobKind::SetAuto => {
                        let auto = key.and_then(|k| self.rows.get(&k)).is_some_and(|r| r.session.auto);
                        format!("automatic refresh {} for {name}", if auto { "on" } else { "off" })
                    }
                    JobKind::Pause | JobKind::History | JobKind::SignIn | JobKind::Pass => return,
                };
                self.flash_info(text, now);
            }
            Err(closed @ EngineError::Closed { .. }) => self.flash_info(refusal(&closed), now),
            Err(why) if kind == JobKind::History && key.is_none() => {
                self.problems = Some(Vec::new());
                self.flash_error(format!("cannot read the store's recent failures: {why}"), now);
            }
            Err(why) if kind == JobKind::Pause => {
                self.flash_error(format!("cannot {name} automatic refresh: {why}"), now)
            }
            Err(why) => self.flash_error_about(format!("{name}: {} failed: {why}", kind.verb()), key, now),
        }
        self.dirty = true;
    }

    pub(super) fn engine_event(&mut self, event: Event, now: DateTime<Utc>) -> Vec<Effect> {
        match event {
            Event::Started { key, .. } => {
                if let Some(mut row) = self.rows.get(&key).cloned() {
                    row.refreshing = true;
                    self.put(row);
                }
            }
            Event::Outcome { key, name, outcome, .. } => {
                // The store has every failure, whoever met it: the log view reads them from
                // there when it opens, and adds those heard while it is open.
                if outcome.kind != OutcomeKind::Ok
                    && let Some(problems) = &mut self.problems
                {
                    problems.insert(0, LogLine { at: outcome.at, text: outcome_line(&name, &outcome), error: false });
                    problems.truncate(super::app::LOG_LINES);
                }
                if self.details
                    && let Some((shown, history)) = &mut self.history
                    && *shown == key
                {
                    history.insert(0, outcome);
                    history.truncate(KEPT_OUTCOMES);
                    self.dirty = true;
                }
            }
            Event::Changed(session) => {
                let key = session.key;
                // An error about this session is stale once it works again.
                if self.flash.as_ref().is_some_and(|f| f.error && f.about == Some(key)) && session.failures == 0 {
                    self.flash = None;
                }
                self.put(Row { session, refreshing: false });
            }
            Event::Added(session) => self.put(Row { session, refreshing: false }),
            Event::Loaded(sessions) => {
                self.loading = false;
                for session in sessions {
                    // A row the first screen or an event brought is at least as fresh.
                    if !self.rows.contains_key(&session.key) {
                        self.put(Row { session, refreshing: false });
                    }
                }
            }
            Event::Removed { key, .. } => {
                if self.selected == Some(key) {
                    // Select the row that takes the removed one's place.
                    let index = self.selected_index().unwrap_or(0);
                    let rest: Vec<SessionKey> = self.view.iter().copied().filter(|k| *k != key).collect();
                    self.selected = rest.get(index).or(rest.last()).copied();
                    self.selected_pos = None;
                }
                self.take(key);
                self.scheduled.remove(&key);
                self.marks.remove(&key);
                self.changed();
            }
            Event::Scheduled { key, at } => {
                self.scheduled.insert(key, at);
                if self.sort.by == SortBy::Next {
                    self.view_stale = true;
                }
            }
            Event::Keepers(keepers) => self.keepers = keepers,
            Event::Holds { workbooks, until } => self.holds = (workbooks, until.filter(|_| workbooks > 0)),
            Event::Paused(paused) => {
                self.paused = paused;
                let whose = if self.info.driver == Driver::This { "" } else { " (the driver follows within a second)" };
                let text = if paused { "automatic refresh paused" } else { "automatic refresh resumed" };
                self.flash_info(format!("{text}{whose}"), now);
            }
            Event::Watching(holder) => {
                self.info.driver = Driver::Other(holder.as_ref().and_then(|h| h.pid));
                let who = holder.map_or_else(|| "another process".to_string(), |h| h.to_string());
                self.flash_info(
                    format!("{who} drives the store now (this one had stopped); this dashboard watches and takes over when it goes"),
                    now,
                );
            }
            Event::Driving => {
                self.info.driver = Driver::This;
                self.flash_info(
                    if self.paused {
                        "the driver went away: this dashboard drives now, with automatic refresh paused (p resumes it)"
                    } else {
                        "the driver went away: this dashboard refreshes automatically now"
                    },
                    now,
                );
            }
            Event::SignIn(progress) => self.sign_in_progress(progress, now),
            Event::Auth(state) => self.signin = Some(state),
            Event::Retrying { kind, name, after, .. } => self.flash_info(
                format!("{} {name}: trying again in {}", kind.verb(), crate::time::format_duration(after)),
                now,
            ),
            Event::Error(e) => self.flash_error(e, now),
            Event::Note(note) => {
                // Longer than a flash line can show: `L` has it whole.
                self.remember(&note, false, now);
                self.flash_info(note, now);
            }
            Event::Stopped => return vec![Effect::Quit],
        }
        self.dirty = true;
        Vec::new()
    }
}

/// A failed call as the log view says it, with the request id to quote to Microsoft.
fn outcome_line(name: &str, outcome: &Outcome) -> String {
    let mut line = format!("{name}: {} {}", outcome.action.as_str(), outcome.kind.as_str());
    if let Some(status) = outcome.http_status {
        line.push_str(&format!(" {status}"));
    }
    if !outcome.codes.is_empty() {
        line.push_str(&format!(" {}", outcome.codes.join("/")));
    }
    if let Some(id) = &outcome.request_id {
        line.push_str(&format!(" request-id {id}"));
    }
    if let Some(message) = &outcome.message {
        line.push_str(&format!(": {message}"));
    }
    line
}

/// A refusal in the engine's words, with what to do about it in this dashboard.
pub(super) fn refusal(e: &EngineError) -> String {
    match e {
        EngineError::Closed { .. } => format!("{e}; N recreates it as a new session"),
        other => other.to_string(),
    }
}

impl App {
    /// Counts an answer that belongs to bulk work, and says the summary after the last one.
    /// `false`: it belongs to none, and is said on its own.
    pub(super) fn bulk_answered(
        &mut self,
        kind: JobKind,
        key: Option<SessionKey>,
        name: &str,
        answer: &Answer,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(key) = key else { return false };
        let Some(index) = self.bulks.iter().position(|b| b.waits_for(kind, key)) else { return false };
        let failure = answer.as_ref().err().map(EngineError::word);
        self.bulks[index].answered(key, failure);
        if let Err(why) = answer {
            self.remember(&format!("{name}: {} failed: {why}", kind.verb()), true, now);
        }
        if self.bulks[index].is_over() {
            let (text, failed) = self.bulks.remove(index).summary();
            if failed {
                self.flash_error(text, now);
            } else {
                self.flash_info(text, now);
            }
        }
        self.dirty = true;
        true
    }
}
