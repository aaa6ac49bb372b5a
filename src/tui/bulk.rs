//! Work asked of many sessions at once (`R`, or an action on marked rows): a counter in the
//! header while its answers come ("refreshing 3,400 of 10,000"), then one summary ("40
//! refreshed: 38 ok, 2 dead"), instead of a message per session that the next one hides. Each
//! failure goes to the log view, one key (`L`) away.

use std::collections::HashMap;

use crate::engine::JobKind;
use crate::session::SessionKey;
use crate::text::{summary, thousands};

#[derive(Debug, Clone)]
pub struct Bulk {
    pub kind: JobKind,
    pub total: usize,
    ok: usize,
    /// The word for each failure ("expired"), in the order they came.
    failed: Vec<&'static str>,
    /// Answers still to come, per session: one asked twice waits for two.
    waiting: HashMap<SessionKey, usize>,
}

impl Bulk {
    pub(super) fn new(kind: JobKind) -> Bulk {
        Bulk { kind, total: 0, ok: 0, failed: Vec::new(), waiting: HashMap::new() }
    }

    /// Answers to wait for, one per key.
    pub(super) fn expect(&mut self, keys: &[SessionKey]) {
        self.total += keys.len();
        for key in keys {
            *self.waiting.entry(*key).or_default() += 1;
        }
    }

    /// Whether an answer of `kind` for `key` is one this counts.
    pub(super) fn waits_for(&self, kind: JobKind, key: SessionKey) -> bool {
        self.kind == kind && self.waiting.contains_key(&key)
    }

    /// Counts an answer: `failure` is its word ("expired"), `None` when it went well.
    pub(super) fn answered(&mut self, key: SessionKey, failure: Option<&'static str>) {
        if let Some(left) = self.waiting.get_mut(&key) {
            *left -= 1;
            if *left == 0 {
                self.waiting.remove(&key);
            }
        }
        match failure {
            None => self.ok += 1,
            Some(word) => self.failed.push(word),
        }
    }

    pub(super) fn is_over(&self) -> bool {
        self.waiting.is_empty()
    }

    /// "40 refreshed: 38 ok, 2 dead", and whether anything failed.
    pub(super) fn summary(&self) -> (String, bool) {
        (summary(self.total, self.kind.past(), self.ok, self.failed.iter().copied()), !self.failed.is_empty())
    }

    pub fn done(&self) -> usize {
        self.ok + self.failed.len()
    }

    /// "refreshing 3,400 of 10,000", for the header.
    pub fn progress(&self) -> String {
        format!("{} {} of {}", self.kind.doing(), thousands(self.done()), thousands(self.total))
    }
}
