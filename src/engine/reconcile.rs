//! Store sync: adopting what other processes wrote to the store (new sessions, removals, edits,
//! outcomes), without undoing what this engine is in the middle of.

use std::collections::{HashMap, HashSet};

use super::jobs::Entry;
use crate::session::{SessionKey, SessionSettings, Status, TrackedSession};
use crate::store::Changes;

/// What reconciling did to one session.
#[derive(Debug, PartialEq)]
pub(crate) enum Synced {
    Added(SessionKey),
    Changed(SessionKey),
    Removed(SessionKey, String),
}

pub(crate) fn reconcile(entries: &mut HashMap<SessionKey, Entry>, changes: Changes) -> Vec<Synced> {
    let mut done = Vec::new();
    let mut gone: Vec<SessionKey> = changes.removed;
    if changes.full {
        let present: HashSet<SessionKey> = changes.sessions.iter().map(|s| s.key).collect();
        gone.extend(entries.keys().filter(|k| !present.contains(k)).copied());
    }
    for key in gone {
        if let Some(entry) = entries.remove(&key) {
            done.push(Synced::Removed(key, entry.session.name.clone()));
        }
    }
    for stored in changes.sessions {
        let key = stored.key;
        match entries.get_mut(&key) {
            None => {
                entries.insert(key, Entry::new(std::sync::Arc::new(stored)));
                done.push(Synced::Added(key));
            }
            Some(entry) => {
                if merge(entry, stored) {
                    done.push(Synced::Changed(key));
                }
            }
        }
    }
    done
}

/// Takes the other process's settings; takes its call results only when they are newer than this
/// engine's and no call of this engine's on the session is under way.
fn merge(entry: &mut Entry, stored: TrackedSession) -> bool {
    let theirs = SessionSettings::of(&stored);
    let at = |s: &TrackedSession| s.last_call.map(|c| c.at);
    let settings_differ = SessionSettings::of(&entry.session) != theirs || entry.session.mode != stored.mode;
    // A row that cannot be read whole (edited by hand, say) is never acted on as it is, and one
    // repaired is taken as it now reads, whatever this engine held.
    let damage_changed = (stored.status == Status::Damaged) != (entry.session.status == Status::Damaged);
    let results_newer = damage_changed || (entry.busy.is_none() && at(&stored) > at(&entry.session));
    if !settings_differ && !results_newer {
        // Unchanged: the copy the front ends share stays shared.
        return false;
    }
    let mine = std::sync::Arc::make_mut(&mut entry.session);
    if settings_differ {
        theirs.apply_to(mine);
        mine.mode = stored.mode;
    }
    if results_newer {
        mine.status = stored.status;
        mine.last_refresh = stored.last_refresh;
        mine.failures = stored.failures;
        mine.session_id = stored.session_id;
        mine.workbook = stored.workbook;
        mine.last_call = stored.last_call;
        mine.created_at = stored.created_at;
    }
    true
}
