//! The request budget every process on a SQLite store shares: one row per grant (or per count of
//! extra requests), by when, in the `budget` table. A grant is taken in a write transaction of
//! its own that takes no revision, so watchers are not woken for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::db::Db;
use crate::store::{BUDGET_WINDOW, GRANT_LIFE, Grant, StoreError, grant_of};

/// How long grants are counted.
fn counted() -> Duration {
    BUDGET_WINDOW + GRANT_LIFE
}

impl Db {
    pub(crate) fn reserve(
        &mut self,
        want: u32,
        budget: u32,
        extra: u32,
        now: DateTime<Utc>,
    ) -> Result<Grant, StoreError> {
        // Nobody writes a store opened read-only; there is nothing to share.
        if self.read_only {
            return Ok(Grant { granted: want, retry_in: None });
        }
        let now_ms = now.timestamp_millis();
        let window_ms = i64::try_from(counted().as_millis()).unwrap_or(i64::MAX);
        let (granted, oldest) = self.transact(false, |tx, _| {
            tx.prepare_cached("DELETE FROM budget WHERE at_ms <= ?1")?.execute([now_ms.saturating_sub(window_ms)])?;
            let (used, oldest): (i64, Option<i64>) = tx
                .prepare_cached("SELECT coalesce(sum(used), 0), min(at_ms) FROM budget")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((0, None));
            let granted = grant_of(u64::try_from(used).unwrap_or(0), want, budget);
            let recorded = i64::from(granted) + i64::from(extra);
            if recorded > 0 {
                tx.prepare_cached("INSERT INTO budget (at_ms, used) VALUES (?1, ?2)")?.execute([now_ms, recorded])?;
            }
            Ok((granted, oldest))
        })?;
        // None left: some are again when the oldest grant counted leaves the window.
        let retry_in = (granted == 0 && want > 0).then(|| {
            let free_at = oldest.unwrap_or(now_ms).saturating_add(window_ms);
            Duration::from_millis(u64::try_from(free_at.saturating_sub(now_ms)).unwrap_or(0).clamp(10, 11_000))
        });
        Ok(Grant { granted, retry_in })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::milliseconds(1_800_000_000_000 + ms)
    }

    /// Two processes on one file share the budget: what one took, the other cannot.
    #[test]
    fn two_connections_share_one_budget_over_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut one = Db::open(&path).unwrap();
        let mut two = Db::open(&path).unwrap();
        assert_eq!(one.reserve(60, 100, 0, at(0)).unwrap(), Grant { granted: 60, retry_in: None });
        assert_eq!(two.reserve(60, 100, 0, at(500)).unwrap().granted, 40);
        let refused = one.reserve(10, 100, 0, at(1_000)).unwrap();
        assert_eq!(refused.granted, 0);
        assert_eq!(refused.retry_in, Some(Duration::from_millis(10_000)), "the first grant leaves at 11 s");
        // Extra requests count like grants.
        assert_eq!(two.reserve(0, 100, 5, at(2_000)).unwrap().granted, 0);
        // The first grant has left the window; the second and the extra still count.
        assert_eq!(one.reserve(100, 100, 0, at(11_000)).unwrap().granted, 55);
        assert_eq!(two.reserve(100, 100, 0, at(30_000)).unwrap().granted, 100, "everything old is gone");
    }

    #[test]
    fn a_read_only_store_grants_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Db::open(&path).unwrap());
        let mut reader = Db::open_read_only(&path).unwrap();
        assert_eq!(reader.reserve(7, 1, 0, at(0)).unwrap().granted, 7);
    }
}
