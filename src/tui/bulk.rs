//! Work asked of many sessions at once (`R`, or an action on marked rows): a counter in the
//! header while its answers come ("refreshing 3,400 of 10,000"), then one summary ("40
//! refreshed: 38 ok, 2 dead"), instead of a message per session that the next one hides. Each
//! failure goes to the log view, one key (`L`) away.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::app::{App, Effect};
use crate::engine::{Answer, JobKind, Request};
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
    pub fn done(&self) -> usize {
        self.ok + self.failed.len()
    }

    /// "refreshing 3,400 of 10,000", for the header.
    pub fn progress(&self) -> String {
        format!("{} {} of {}", self.kind.doing(), thousands(self.done()), thousands(self.total))
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
                    self.bulks.push(Bulk { kind, total: 0, ok: 0, failed: Vec::new(), waiting: HashMap::new() });
                    self.bulks.len() - 1
                }
            };
            let bulk = &mut self.bulks[index];
            bulk.total += keys.len();
            for key in keys {
                *bulk.waiting.entry(key).or_default() += 1;
            }
            self.dirty = true;
        }
        requests.into_iter().map(|r| self.ask(r)).collect()
    }

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
        let Some(index) = self.bulks.iter().position(|b| b.kind == kind && b.waiting.contains_key(&key)) else {
            return false;
        };
        let bulk = &mut self.bulks[index];
        if let Some(left) = bulk.waiting.get_mut(&key) {
            *left -= 1;
            if *left == 0 {
                bulk.waiting.remove(&key);
            }
        }
        match answer {
            Ok(_) => bulk.ok += 1,
            Err(why) => {
                bulk.failed.push(why.word());
                self.remember(&format!("{name}: {} failed: {why}", kind.verb()), true, now);
            }
        }
        if self.bulks[index].waiting.is_empty() {
            let bulk = self.bulks.remove(index);
            let text = summary(bulk.total, kind.past(), bulk.ok, bulk.failed.iter().copied());
            if bulk.failed.is_empty() {
                self.flash_info(text, now);
            } else {
                self.flash_error(text, now);
            }
        }
        self.dirty = true;
        true
    }
}
