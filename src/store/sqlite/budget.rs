//! The request budget every process on a SQLite store shares: one row per grant (or per count of
//! extra requests), by when, in the `budget` table. A grant is taken in a write transaction of
//! its own that takes no revision, so watchers are not woken for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::db::Db;
use crate::store::{GRANT_COUNTED, Grant, GrantToken, Reservation, StoreError, grant_of};

impl Db {
    pub(crate) fn reserve(&mut self, ask: Reservation, budget: u32, now: DateTime<Utc>) -> Result<Grant, StoreError> {
        let Reservation { want, extra, unused, holds_seen } = ask;
        // Nobody writes a store opened read-only; there is nothing to share.
        if self.read_only {
            return Ok(Grant { granted: want, ..Grant::default() });
        }
        let now_ms = now.timestamp_millis();
        let window_ms = i64::try_from(GRANT_COUNTED.as_millis()).unwrap_or(i64::MAX);
        let (granted, oldest, row, holds) = self.transact(false, |tx, _| {
            if let Some((token, n)) = unused {
                tx.prepare_cached("UPDATE budget SET used = max(used - ?3, 0) WHERE rowid = ?1 AND at_ms = ?2")?
                    .execute([token.row, token.at_ms, i64::from(n)])?;
            }
            tx.prepare_cached("DELETE FROM budget WHERE at_ms <= ?1")?.execute([now_ms.saturating_sub(window_ms)])?;
            let (used, oldest): (i64, Option<i64>) = tx
                .prepare_cached("SELECT coalesce(sum(used), 0), min(at_ms) FROM budget")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((0, None));
            let granted = grant_of(u64::try_from(used).unwrap_or(0), want, budget);
            let recorded = i64::from(granted) + i64::from(extra);
            let mut row = None;
            if recorded > 0 {
                tx.prepare_cached("INSERT INTO budget (at_ms, used) VALUES (?1, ?2)")?.execute([now_ms, recorded])?;
                row = Some(tx.last_insert_rowid());
            }
            // The holds Graph gave any process on the store that this one has not heard of.
            tx.prepare_cached("DELETE FROM holds WHERE until_ms <= ?1")?.execute([now_ms])?;
            let holds = tx
                .prepare_cached("SELECT id, workbook, until_ms FROM holds WHERE id > ?1 ORDER BY id LIMIT 10000")?
                .query_map([holds_seen], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((granted, oldest, row, holds))
        })?;
        // None left: some are again when the oldest grant counted leaves the window.
        let retry_in = (granted == 0 && want > 0).then(|| {
            let free_at = oldest.unwrap_or(now_ms).saturating_add(window_ms);
            Duration::from_millis(u64::try_from(free_at.saturating_sub(now_ms)).unwrap_or(0).clamp(10, 11_000))
        });
        let token = row.filter(|_| granted > 0).map(|row| GrantToken { row, at_ms: now_ms });
        let (holds, holds_seen) = crate::store::stored::shared_holds(holds, holds_seen);
        Ok(Grant { granted, retry_in, token, holds, holds_seen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::milliseconds(1_800_000_000_000 + ms)
    }

    fn want(n: u32) -> Reservation {
        Reservation { want: n, ..Reservation::default() }
    }

    /// Two processes on one file share the budget: what one took, the other cannot.
    #[test]
    fn two_connections_share_one_budget_over_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut one = Db::open(&path).unwrap();
        let mut two = Db::open(&path).unwrap();
        let first = one.reserve(want(60), 100, at(0)).unwrap();
        assert_eq!((first.granted, first.retry_in), (60, None));
        assert_eq!(two.reserve(want(60), 100, at(500)).unwrap().granted, 40);
        let refused = one.reserve(want(10), 100, at(1_000)).unwrap();
        assert_eq!(refused.granted, 0);
        assert_eq!(refused.retry_in, Some(Duration::from_millis(10_250)), "the first grant leaves at 11.25 s");
        // Extra requests count like grants.
        assert_eq!(two.reserve(Reservation { extra: 5, ..want(0) }, 100, at(2_000)).unwrap().granted, 0);
        // The first grant has left the window; the second and the extra still count.
        assert_eq!(one.reserve(want(100), 100, at(11_500)).unwrap().granted, 55);
        assert_eq!(two.reserve(want(100), 100, at(30_000)).unwrap().granted, 100, "everything old is gone");
    }

    #[test]
    fn a_read_only_store_grants_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Db::open(&path).unwrap());
        let mut reader = Db::open_read_only(&path).unwrap();
        assert_eq!(reader.reserve(want(7), 1, at(0)).unwrap().granted, 7);
    }

    /// What a grant left unused stops counting once it is given back, and only that grant's
    /// rest: giving back more than it had takes nothing from anyone else's grants.
    #[test]
    fn unused_starts_given_back_are_free_for_everyone_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut one = Db::open(&path).unwrap();
        let mut two = Db::open(&path).unwrap();
        let big = one.reserve(want(80), 100, at(0)).unwrap();
        assert_eq!(two.reserve(want(50), 100, at(100)).unwrap().granted, 20);
        let token = big.token.expect("a grant is named");
        // Thirty of the eighty were used; fifty go back with the next ask.
        let back = Reservation { unused: Some((token, 50)), ..want(0) };
        assert_eq!(one.reserve(back, 100, at(1_200)).unwrap().granted, 0);
        assert_eq!(two.reserve(want(100), 100, at(1_300)).unwrap().granted, 50);
        // Given back again, or more than was left: the row never goes below nothing.
        let again = Reservation { unused: Some((token, 500)), ..want(0) };
        one.reserve(again, 100, at(1_400)).unwrap();
        assert_eq!(
            two.reserve(want(100), 100, at(1_500)).unwrap().granted,
            30,
            "the other process's 20 and 50 stay counted"
        );
    }
}
