//! What the filter line means. `status:WORD` keeps the sessions in a status whose word starts
//! with WORD (`status:exp` is enough; several are any of them); every other word must appear in
//! the name or the workbook, in any case.

use crate::session::Status;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// `None`: any status.
    statuses: Option<Vec<Status>>,
    words: Vec<String>,
}

const STATUS: &str = "status:";

impl Filter {
    pub(crate) fn parse(text: &str) -> Filter {
        let mut filter = Filter::default();
        for word in text.split_whitespace().map(str::to_lowercase) {
            match word.strip_prefix(STATUS) {
                // Still being typed: no narrowing yet.
                Some("") => {}
                Some(prefix) => filter
                    .statuses
                    .get_or_insert_with(Vec::new)
                    .extend(Status::ALL.into_iter().filter(|s| s.as_str().starts_with(prefix))),
                None => filter.words.push(word),
            }
        }
        filter
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.statuses.is_none() && self.words.is_empty()
    }

    /// `workbook` is asked for only when a word needs it: turning a reference into text for
    /// each of 100,000 rows is the costly part.
    pub(crate) fn matches(&self, name: &str, status: Status, workbook: impl FnOnce() -> String) -> bool {
        if self.statuses.as_ref().is_some_and(|wanted| !wanted.contains(&status)) {
            return false;
        }
        let name = name.to_lowercase();
        let rest: Vec<&String> = self.words.iter().filter(|w| !name.contains(w.as_str())).collect();
        if rest.is_empty() {
            return true;
        }
        let workbook = workbook().to_lowercase();
        rest.iter().all(|w| workbook.contains(w.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(text: &str, name: &str, status: Status, workbook: &str) -> bool {
        Filter::parse(text).matches(name, status, || workbook.to_string())
    }

    #[test]
    fn words_match_the_name_or_the_workbook_and_all_must_match() {
        assert!(matches("budget", "Budget-live", Status::Ok, "me/drive/items/X"));
        assert!(matches("items/x", "budget", Status::Ok, "me/drive/items/X"));
        assert!(matches("bud items", "budget", Status::Ok, "me/drive/items/X"));
        assert!(!matches("bud sales", "budget", Status::Ok, "me/drive/items/X"));
        assert!(matches("", "budget", Status::Expired, "w"));
    }

    #[test]
    fn status_words_pick_statuses_by_their_start() {
        assert!(matches("status:expired", "a", Status::Expired, "w"));
        assert!(matches("status:exp", "a", Status::Expired, "w"));
        assert!(!matches("status:exp", "a", Status::Ok, "w"));
        assert!(matches("status:ok status:dead", "a", Status::Dead, "w"));
        assert!(matches("STATUS:Dead", "a", Status::Dead, "w"));
        assert!(!matches("status:dead budget", "a", Status::Dead, "w"));
        // A word that is no status matches nothing; one not typed yet, everything.
        assert!(!matches("status:happy", "a", Status::Ok, "w"));
        assert!(matches("status:", "a", Status::Ok, "w"));
        assert!(Filter::parse("status:").is_empty());
    }
}
