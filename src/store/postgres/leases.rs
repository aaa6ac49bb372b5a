//! Workbooks leased to keepers, for several keepers on one database: each workbook is kept by
//! one keeper at a time (all of its sessions together, so Microsoft's one request at a time per
//! workbook holds across hosts), for a time lease renewed while the keeper works, with a fencing
//! number that grows with every new holder, so that a keeper that lost a workbook cannot
//! overwrite what the new holder wrote. Keepers spread the workbooks between them: each takes up
//! to its share (the workbooks over the live keepers) of those free or lapsed, and lets go of
//! what is over its share for the others to take (`role` takes a keeper's turn each second).
//!
//! What is leased is a workbook for one owner (`UNIT`): a keeper takes only its own sign-in's
//! sessions and those of no known owner, so several people's keepers share one database.

use std::collections::BTreeMap;
use std::time::Duration;

use postgres::GenericClient;

/// Who takes a keeper's turn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Keeper {
    pub id: String,
    pub pid: u32,
    pub host: String,
    /// Whose sign-in it refreshes with (`None`: unknown; it keeps only sessions of no owner).
    pub owner: Option<String>,
}

/// A keeper as the database knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeeperRow {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub owner: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds since its last turn, on the database's clock.
    pub quiet_secs: f64,
    pub workbooks: i64,
    pub sessions: i64,
}

/// The condition under which a keeper's outcome may change a session's row: no other keeper
/// holds its workbook now. A keeper that lost the workbook (cut off, stopped, its lease lapsed)
/// cannot overwrite what the new holder wrote; `$KEEPER` is the writer's id, or NULL for a
/// process that is not a keeper (a one-shot command the user asked for).
pub(crate) const NOT_ANOTHERS: &str = "(KEEPER::text IS NULL OR NOT EXISTS (SELECT 1 FROM wbs_leases l \
     WHERE l.workbook = coalesce(wbs_sessions.owner, \
       (SELECT min(o.owner) FROM wbs_sessions o WHERE o.workbook = wbs_sessions.workbook), '') \
       || ' ' || wbs_sessions.workbook \
     AND l.keeper <> KEEPER::text AND l.until > now()))";

/// Every session's keeping unit, what `wbs_leases.workbook` holds: its workbook for its owner.
/// A session of no known owner goes with the owned sessions of its workbook where there are any
/// (the first owner's, by name), so that one sign-in's keepers never send two requests to one
/// workbook at once; alone, a workbook's unowned sessions make a unit of their own. The engine
/// learns the first kind from `Turn::riders` (`TrackedSession::keeping_unit` gives the rest).
const UNITS: &str = "WITH firsts AS (SELECT workbook, min(owner) AS owner FROM wbs_sessions GROUP BY workbook), \
     units AS (SELECT s.id, s.workbook, coalesce(s.owner, f.owner) AS owner, \
       coalesce(s.owner, f.owner, '') || ' ' || s.workbook AS unit \
       FROM wbs_sessions s JOIN firsts f ON f.workbook = s.workbook)";

/// The units a keeper of `$OWNER` may keep: its own sign-in's (owners compared as Entra compares
/// them, without regard to case), and those of no known owner.
const MAY_KEEP: &str = "(u.owner IS NULL OR lower(u.owner) = lower(OWNER::text))";

/// The part of the budget a keeper spends on workbooks it keeps on standby, at most: where
/// the others took them over, this is what the keepers together may send over the budget
/// (the store holds it back from the others while the keeper is silent, `absent_share`); where
/// the database is away for every keeper, it is what keeps each one's sessions alive (a tenth
/// of 1,500 requests per 10 s refreshes 4,000 sessions in the 4.5 min before Graph's 5 min).
pub(crate) const STANDBY_BUDGET: f64 = 0.1;

/// A keeper that took no turn for this long may be cut off, spending on its own.
const SILENT_AFTER: f64 = 3.0;
/// A silent keeper is held to be spending for this long at most (a cut-off keeper keeps
/// sessions on standby through ten minutes of outage; a killed one spends nothing, and its
/// part comes back to the others after that).
const ABSENT_FOR: f64 = 600.0;

/// What a keeper holds after its turn: each workbook with its fencing number.
pub(crate) type Held = BTreeMap<String, i64>;

/// A keeper's turn, as it ended.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    pub held: Held,
    /// Keepers alive, this one included.
    pub live: i64,
    /// Workbooks whose sessions of no known owner go with an owner's unit (`UNITS`): the unit.
    pub riders: BTreeMap<String, String>,
}

fn secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

/// One keeper's turn, in one transaction: it says it is alive, renews what it holds, takes up
/// to its share of the free or lapsed workbooks, and lets go of what is over its share.
pub(crate) fn claim(
    client: &mut impl GenericClient,
    keeper: &Keeper,
    lease: Duration,
) -> Result<Turn, postgres::Error> {
    let mut tx = client.transaction()?;
    let lease = secs(lease);
    let Keeper { id: keeper, pid, host, owner } = keeper;
    tx.execute(
        "INSERT INTO wbs_keepers (id, host, pid, owner) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET beat = now()",
        &[keeper, host, &i64::from(*pid), owner],
    )?;
    let mut held: Held = tx
        .query(
            "UPDATE wbs_leases SET until = now() + make_interval(secs => $2) WHERE keeper = $1 AND until > now() \
             RETURNING workbook, fence",
            &[&keeper, &lease],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // A lease that lapsed while this keeper was away is not its own any more, even if no one
    // has taken it yet: it is taken again below, under a new fencing number.
    tx.execute("DELETE FROM wbs_leases WHERE keeper = $1 AND until <= now()", &[&keeper])?;
    // Keepers of the same sign-in share its units (and those of no owner) between them.
    let live: i64 = tx
        .query_one(
            "SELECT count(*) FROM wbs_keepers WHERE beat > now() - make_interval(secs => $1) \
             AND lower(owner) IS NOT DISTINCT FROM lower($2::text)",
            &[&lease, owner],
        )?
        .get(0);
    let may_keep = MAY_KEEP.replace("OWNER", "$1");
    let workbooks: i64 =
        tx.query_one(&format!("{UNITS} SELECT count(DISTINCT u.unit) FROM units u WHERE {may_keep}"), &[owner])?.get(0);
    let share = usize::try_from((workbooks + live.max(1) - 1) / live.max(1)).unwrap_or(0);
    if held.len() < share {
        let free: Vec<String> = tx
            .query(
                &format!(
                    "{UNITS} SELECT w.unit FROM (SELECT DISTINCT u.unit FROM units u WHERE {may_keep}) w \
                     LEFT JOIN wbs_leases l ON l.workbook = w.unit \
                     WHERE l.workbook IS NULL OR l.until <= now() ORDER BY w.unit LIMIT $2"
                ),
                &[owner, &i64::try_from(share - held.len()).unwrap_or(0)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for workbook in free {
            // Taken only if still free or lapsed when this transaction gets to it: a keeper
            // claiming the same one at the same moment waits here, then finds it taken.
            let taken = tx.query_opt(
                "INSERT INTO wbs_leases (workbook, keeper, fence, until) \
                 VALUES ($1, $2, nextval('wbs_fences'), now() + make_interval(secs => $3)) \
                 ON CONFLICT (workbook) DO UPDATE SET keeper = $2, fence = nextval('wbs_fences'), \
                 until = now() + make_interval(secs => $3) WHERE wbs_leases.until <= now() \
                 RETURNING fence",
                &[&workbook, &keeper, &lease],
            )?;
            if let Some(row) = taken {
                held.insert(workbook, row.get(0));
            }
        }
    } else if held.len() > share {
        let over: Vec<String> = held.keys().skip(share).cloned().collect();
        tx.execute("DELETE FROM wbs_leases WHERE keeper = $1 AND workbook = ANY($2)", &[&keeper, &over])?;
        for workbook in over {
            held.remove(&workbook);
        }
    }
    tx.execute(
        "UPDATE wbs_keepers SET workbooks = $2, live = $3 WHERE id = $1",
        &[keeper, &i64::try_from(held.len()).unwrap_or(i64::MAX), &live.max(1)],
    )?;
    let riders = tx
        .query(
            "SELECT workbook, min(owner) || ' ' || workbook FROM wbs_sessions GROUP BY workbook \
             HAVING count(owner) > 0 AND count(*) > count(owner)",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    tx.commit()?;
    Ok(Turn { held, live: live.max(1), riders })
}

/// The part of the budget silent keepers may be spending without the store counting it: one
/// cut off spends its part (one over the keepers it last saw) while its leases may hold and for
/// a counting window after (`window`), then at most `STANDBY_BUDGET` while it could still be
/// keeping sessions on standby.
pub(crate) fn absent_share(
    client: &mut impl GenericClient,
    lease: Duration,
    window: Duration,
) -> Result<f64, postgres::Error> {
    Ok(client
        .query_one(
            "SELECT coalesce(sum(CASE WHEN beat > now() - make_interval(secs => $1::float8) \
             THEN 1.0::float8 / greatest(live, 1) ELSE $2::float8 END), 0)::float8 FROM wbs_keepers \
             WHERE beat <= now() - make_interval(secs => $3::float8) AND beat > now() - make_interval(secs => $4::float8)",
            &[&(secs(lease) + secs(window)), &STANDBY_BUDGET, &SILENT_AFTER, &ABSENT_FOR],
        )?
        .get(0))
}

/// A keeper that stops lets go of everything at once rather than after its lease.
pub(crate) fn release(client: &mut impl GenericClient, keeper: &str) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("DELETE FROM wbs_leases WHERE keeper = $1", &[&keeper])?;
    tx.execute("DELETE FROM wbs_keepers WHERE id = $1", &[&keeper])?;
    tx.commit()
}

/// The keepers seen within `lease`, in order of arrival.
pub(crate) fn keepers(client: &mut impl GenericClient, lease: Duration) -> Result<Vec<KeeperRow>, postgres::Error> {
    Ok(client
        .query(
            &format!(
                "{UNITS} SELECT k.id, k.host, k.pid, k.since, extract(epoch FROM now() - k.beat)::float8, k.workbooks, \
             (SELECT count(*) FROM units u JOIN wbs_leases l ON l.workbook = u.unit WHERE l.keeper = k.id), k.owner \
             FROM wbs_keepers k WHERE k.beat > now() - make_interval(secs => $1) ORDER BY k.since, k.id"
            ),
            &[&secs(lease)],
        )?
        .iter()
        .map(|r| KeeperRow {
            id: r.get(0),
            host: r.get(1),
            pid: u32::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            since: r.get::<_, Option<std::time::SystemTime>>(3).map(chrono::DateTime::<chrono::Utc>::from),
            quiet_secs: r.get(4),
            workbooks: r.get(5),
            sessions: r.get(6),
            owner: r.get(7),
        })
        .collect())
}

/// A refresh's new state, written under `NOT_ANOTHERS`; whether it was written.
#[cfg(test)]
fn fenced_status(
    client: &mut impl GenericClient,
    session: i64,
    keeper: &str,
    status: &str,
) -> Result<bool, postgres::Error> {
    let sql = format!("UPDATE wbs_sessions SET status = $2 WHERE id = $1 AND {}", NOT_ANOTHERS.replace("KEEPER", "$3"));
    Ok(client.execute(&sql, &[&session, &status, &keeper])? == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres::{Client, NoTls};

    /// A database of the test's own, dropped after; `None` where no server is named.
    struct Scratch {
        admin: String,
        name: String,
    }

    impl Scratch {
        fn new() -> Option<(Scratch, Client)> {
            let admin = std::env::var("WBSESSIONS_TEST_POSTGRES").ok().filter(|v| !v.is_empty())?;
            let name = format!("wbs_unit_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let mut client = Client::connect(&admin, NoTls).ok()?;
            client.batch_execute(&format!("CREATE DATABASE {name}")).ok()?;
            let mut url = url::Url::parse(&admin).ok()?;
            url.set_path(&name);
            let pg = super::super::PgUrl::parse(url.as_str()).ok()?;
            drop(super::super::db::PgDb::open(pg, crate::store::Access::Write).ok()?);
            let client = Client::connect(url.as_str(), NoTls).ok()?;
            Some((Scratch { admin, name }, client))
        }
    }

    impl Scratch {
        /// A scratch database, or one SKIPPED line where no server is named.
        fn or_skip() -> Option<(Scratch, Client)> {
            let made = Scratch::new();
            if made.is_none() {
                // Straight to stderr, past the harness's capture, so that the skip is seen.
                use std::io::Write as _;
                let _ =
                    writeln!(std::io::stderr(), "SKIPPED: workbook leases tests: WBSESSIONS_TEST_POSTGRES is not set");
            }
            made
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Ok(mut client) = Client::connect(&self.admin, NoTls) {
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
            }
        }
    }

    fn who(id: &str, pid: u32, owner: Option<&str>) -> Keeper {
        Keeper { id: id.into(), pid, host: "h".into(), owner: owner.map(str::to_string) }
    }

    /// Each keeper takes only its own sign-in's sessions and those of no known owner; one
    /// workbook with sessions of two owners is kept by a keeper of each.
    #[test]
    fn a_keeper_takes_only_its_own_owners_sessions_and_those_of_nobody() {
        let Some((_scratch, mut client)) = Scratch::or_skip() else { return };
        add_sessions(&mut client, 6);
        client
            .batch_execute(
                "UPDATE wbs_sessions SET owner = 'ada@x' WHERE workbook = 'me/drive/items/W00' OR name = 's1-0'; \
                 UPDATE wbs_sessions SET owner = 'Bob@X' WHERE workbook = 'me/drive/items/W02'; \
                 UPDATE wbs_sessions SET owner = 'bob@x' WHERE name = 's0-1';",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let lease = Duration::from_secs(15);
        let (ada, bob) = (who("ka", 1, Some("ada@x")), who("kb", 2, Some("bob@x")));
        let mut turn = |k: &Keeper| claim(&mut client, k, lease).unwrap_or_else(|e| panic!("{e}"));
        let (mut a, mut b) = (turn(&ada), turn(&bob));
        for _ in 0..3 {
            a = turn(&ada);
            b = turn(&bob);
        }
        // W01's session of no owner goes with ada's unit there, not in a unit of its own.
        assert_eq!(a.riders.get("me/drive/items/W01").map(String::as_str), Some("ada@x me/drive/items/W01"));
        let (a, b) = (a.held, b.held);
        let units = |held: &Held| held.keys().cloned().collect::<Vec<_>>();
        assert!(a.keys().all(|u| u.starts_with("ada@x ") || u.starts_with(' ')), "{a:?}");
        // Owners are told apart without regard to case, as Entra does.
        assert!(b.keys().all(|u| u.to_lowercase().starts_with("bob@x ") || u.starts_with(' ')), "{b:?}");
        for mine in ["ada@x me/drive/items/W00", "ada@x me/drive/items/W01"] {
            assert!(a.contains_key(mine), "{mine} in {:?}", units(&a));
        }
        for mine in ["bob@x me/drive/items/W00", "Bob@X me/drive/items/W02"] {
            assert!(b.contains_key(mine), "{mine} in {:?}", units(&b));
        }
        assert!(!a.contains_key(" me/drive/items/W01") && !b.contains_key(" me/drive/items/W01"));
        // Every unit of nobody's (W03..W05) is kept by one of them, none by both.
        let nobodys: Vec<String> = (3..6).map(|i| format!(" me/drive/items/W{i:02}")).collect();
        for unit in &nobodys {
            assert!(a.contains_key(unit) != b.contains_key(unit), "{unit}: a {:?} b {:?}", units(&a), units(&b));
        }
        let rows = keepers(&mut client, lease).unwrap_or_default();
        let owners: Vec<Option<&str>> = rows.iter().map(|k| k.owner.as_deref()).collect();
        assert_eq!(owners, [Some("ada@x"), Some("bob@x")]);
    }

    fn add_sessions(client: &mut Client, workbooks: usize) {
        for i in 0..workbooks {
            for s in 0..2 {
                client
                    .execute(
                        "INSERT INTO wbs_sessions (name, workbook, session_id, mode, recreate, auto, status, created_at) \
                         VALUES ($1, $2, $3, 'persistent', false, true, 'ok', '2026-12-06T00:00:00.000Z')",
                        &[&format!("s{i}-{s}"), &format!("me/drive/items/W{i:02}"), &format!("id-{i}-{s}")],
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// What a silent keeper may be spending is held back from the others: its part while its
    /// leases may hold and a window after, then the standby part, then (ten minutes on) nothing.
    #[test]
    fn a_silent_keepers_part_of_the_budget_is_held_back_for_a_while() {
        let Some((_scratch, mut client)) = Scratch::or_skip() else { return };
        add_sessions(&mut client, 4);
        let (lease, window) = (Duration::from_secs(15), Duration::from_secs(11));
        for keeper in ["a", "b", "a", "b"] {
            claim(&mut client, &who(keeper, 1, None), lease).unwrap_or_else(|e| panic!("{e}"));
        }
        let absent = |client: &mut Client| absent_share(client, lease, window).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(absent(&mut client), 0.0, "both take their turns");
        let quiet_for = |client: &mut Client, secs: i64| {
            client
                .execute(
                    "UPDATE wbs_keepers SET beat = now() - make_interval(secs => $1::float8) WHERE id = 'a'",
                    &[&(secs as f64)],
                )
                .unwrap_or_else(|e| panic!("{e}"));
        };
        quiet_for(&mut client, 5);
        assert_eq!(absent(&mut client), 0.5, "a saw two keepers: half of the budget may be its own");
        quiet_for(&mut client, 60);
        assert_eq!(absent(&mut client), STANDBY_BUDGET, "past its leases: what it keeps on standby");
        quiet_for(&mut client, 1200);
        assert_eq!(absent(&mut client), 0.0, "gone for good");
    }

    #[test]
    fn keepers_share_the_workbooks_and_take_over_a_silent_ones_under_a_new_fence() {
        let Some((_scratch, mut client)) = Scratch::or_skip() else { return };
        add_sessions(&mut client, 10);
        let lease = Duration::from_millis(1500);
        let mut turn = |keeper: &str, pid: u32| {
            claim(&mut client, &who(keeper, pid, None), lease).unwrap_or_else(|e| panic!("{e}")).held
        };
        // The first alone takes everything; once the second is live they settle at five each.
        assert_eq!(turn("a", 1).len(), 10);
        assert_eq!(turn("b", 2).len(), 0, "nothing is free yet");
        let mut a = turn("a", 1);
        let mut b = turn("b", 2);
        for _ in 0..3 {
            a = turn("a", 1);
            b = turn("b", 2);
        }
        assert_eq!((a.len(), b.len()), (5, 5), "a {a:?} b {b:?}");
        assert!(a.keys().all(|w| !b.contains_key(w)), "no workbook held twice");

        // `a` goes quiet: once its lease lapses, `b` takes its workbooks under new fences.
        std::thread::sleep(lease + Duration::from_millis(300));
        let b_all = turn("b", 2);
        assert_eq!(b_all.len(), 10, "{b_all:?}");
        for (workbook, fence) in &a {
            assert!(b_all[workbook] > *fence, "{workbook}: the new holder's fence is higher");
        }
        // What `a` would write under its old fence is refused; `b`'s goes in.
        let (workbook, old) = a.iter().next().map(|(w, f)| (w.clone(), *f)).unwrap_or_default();
        let session: i64 = client
            .query_one("SELECT id FROM wbs_sessions WHERE workbook = $1 LIMIT 1", &[&workbook.trim_start()])
            .map(|r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!fenced_status(&mut client, session, "a", "expired").unwrap_or(true), "fence {old} is no longer a's");
        assert!(fenced_status(&mut client, session, "b", "ok").unwrap_or(false));

        // `a` comes back: it holds nothing it lost, and the two share again.
        let back = claim(&mut client, &who("a", 1, None), lease).unwrap_or_else(|e| panic!("{e}")).held;
        assert!(back.is_empty(), "{back:?}");
        let live = keepers(&mut client, lease).unwrap_or_default();
        assert_eq!(live.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let mut turn = |keeper: &str, pid: u32| {
            claim(&mut client, &who(keeper, pid, None), lease).unwrap_or_else(|e| panic!("{e}")).held
        };
        let mut a = turn("a", 1);
        for _ in 0..3 {
            turn("b", 2);
            a = turn("a", 1);
        }
        assert_eq!(a.len(), 5);
        release(&mut client, "a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keepers(&mut client, lease).unwrap_or_default().len(), 1, "a let go at once");
    }
}
