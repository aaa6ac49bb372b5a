//! The connection to PostgreSQL and the schema: connecting (again, after the server or the
//! network went away), the tables created and migrated on first use under an advisory lock, a
//! newer schema refused untouched, and write transactions that take the store's next revision.

use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};

use super::url::{PgUrl, SslMode};
use crate::store::{Access, StoreError};

/// Each entry moves the schema one version up; the index + 1 is the version it produces. Times
/// are RFC 3339 text, as on SQLite, so that both are read by the same lenient rules
/// (`store::stored`).
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE wbs_sessions (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        workbook text NOT NULL,
        session_id text NOT NULL,
        mode text NOT NULL,
        interval_ms bigint,
        recreate boolean NOT NULL,
        auto boolean NOT NULL,
        status text NOT NULL,
        last_refresh text,
        failures bigint NOT NULL DEFAULT 0,
        created_at text NOT NULL,
        rev bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX wbs_sessions_by_rev ON wbs_sessions(rev);
    CREATE INDEX wbs_sessions_by_session_id ON wbs_sessions(session_id);
    CREATE TABLE wbs_outcomes (
        id bigserial PRIMARY KEY,
        session bigint NOT NULL REFERENCES wbs_sessions(id) ON DELETE CASCADE,
        at text NOT NULL,
        action text NOT NULL,
        kind text NOT NULL,
        latency_ms bigint NOT NULL,
        http_status integer,
        codes text,
        request_id text,
        client_request_id text,
        message text
    );
    CREATE INDEX wbs_outcomes_by_session ON wbs_outcomes(session, id);
    -- A batch whose commit was not confirmed (the connection cut at that moment) is written again;
    -- each call's outcome still lands once.
    CREATE UNIQUE INDEX wbs_outcomes_once ON wbs_outcomes(session, client_request_id)
        WHERE client_request_id IS NOT NULL;
    CREATE TABLE wbs_tombstones (session bigint NOT NULL, rev bigint NOT NULL);
    CREATE INDEX wbs_tombstones_by_rev ON wbs_tombstones(rev);
    CREATE TABLE wbs_intents (
        id bigint PRIMARY KEY,
        name text NOT NULL,
        workbook text NOT NULL,
        started_at text NOT NULL,
        pid bigint NOT NULL,
        host text NOT NULL
    );
    CREATE TABLE wbs_budget (id bigserial PRIMARY KEY, at_ms bigint NOT NULL, used bigint NOT NULL);
    CREATE INDEX wbs_budget_by_time ON wbs_budget(at_ms);
    INSERT INTO wbs_meta (key, value) VALUES ('rev', 0), ('tombstones_from', 0), ('paused', 0);
",
    "
    -- Keepers on several hosts: who is alive, and which workbooks each holds (`leases`).
    CREATE TABLE wbs_keepers (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid bigint NOT NULL,
        since timestamptz NOT NULL DEFAULT now(),
        beat timestamptz NOT NULL DEFAULT now(),
        workbooks bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE wbs_leases (
        workbook text PRIMARY KEY,
        keeper text NOT NULL,
        fence bigint NOT NULL,
        until timestamptz NOT NULL
    );
    CREATE INDEX wbs_leases_by_keeper ON wbs_leases(keeper);
    CREATE SEQUENCE wbs_fences;
",
    "
    -- Which process made each call (`HOST:PID`): which keeper, where several share the store.
    ALTER TABLE wbs_outcomes ADD COLUMN made_by text;
    -- Whose sign-in each session belongs to; keepers lease a workbook per owner (`leases::UNITS`),
    -- which every outcome's write looks up (`leases::NOT_ANOTHERS`).
    ALTER TABLE wbs_sessions ADD COLUMN owner text;
    CREATE INDEX wbs_sessions_by_workbook ON wbs_sessions(workbook, owner);
    ALTER TABLE wbs_keepers ADD COLUMN owner text;
    DELETE FROM wbs_leases;
    -- Workbooks Graph asked a process to wait on, for every process on the store to wait.
    CREATE TABLE wbs_holds (id bigserial PRIMARY KEY, workbook text NOT NULL, until_ms bigint NOT NULL);
    -- The keepers each keeper saw alive at its last turn: a silent one may be spending its part
    -- of the budget (one over these) without the store counting it.
    ALTER TABLE wbs_keepers ADD COLUMN live bigint NOT NULL DEFAULT 1;
",
];

pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Advisory lock keys: one process migrates at a time; one takes from the budget at a time.
pub(super) const MIGRATION_LOCK: i64 = 0x7762_7365_0001;
pub(super) const BUDGET_LOCK: i64 = 0x7762_7365_0002;

/// Why a write was not made: the store's refusal (a taken name), or the database's trouble.
pub(super) enum Refusal {
    Clash(StoreError),
    Db(postgres::Error),
}

impl From<postgres::Error> for Refusal {
    fn from(e: postgres::Error) -> Self {
        Refusal::Db(e)
    }
}

/// One connection to the database; lives on the store's thread.
pub(crate) struct PgDb {
    pub(super) url: PgUrl,
    client: Option<Client>,
    /// Revisions this connection's commits took: the revision less these moves only when
    /// another process commits (`others_mark`).
    pub(super) own_revs: i64,
    /// This process's id as a keeper, while it is one: its outcomes are written only for
    /// workbooks no other keeper holds (`leases::NOT_ANOTHERS`).
    pub(super) keeper: super::KeeperId,
    /// Wakes the store's watcher when another connection commits (`listen`).
    pub(super) listener: Option<super::listen::Listener>,
}

/// Connects to `url`, encrypted as its `sslmode` says.
pub(super) fn connect(url: &PgUrl) -> Result<Client, StoreError> {
    let mut config = postgres::Config::new();
    if url.host.starts_with('/') {
        config.host_path(&url.host);
    } else {
        config.host(&url.host);
    }
    config.port(url.port).user(&url.user).dbname(&url.dbname).connect_timeout(url.connect_timeout);
    config.application_name("wbsessions");
    if let Some(password) = &url.password {
        config.password(password);
    }
    if let Some(options) = &url.options {
        config.options(options);
    }
    // Dead peers are noticed by the keepalive, not only when a statement times out.
    config.keepalives(true).keepalives_idle(Duration::from_secs(10));
    let shown = url.to_string();
    let failed = |e: postgres::Error| unavailable(&shown, &e);
    match url.sslmode {
        SslMode::Disable => config.ssl_mode(postgres::config::SslMode::Disable).connect(NoTls).map_err(failed),
        mode => {
            let tls =
                super::tls::config(url).map_err(|detail| StoreError::Unavailable { store: shown.clone(), detail })?;
            let ssl = if mode == SslMode::Prefer {
                postgres::config::SslMode::Prefer
            } else {
                postgres::config::SslMode::Require
            };
            config.ssl_mode(ssl).connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)).map_err(failed)
        }
    }
}

/// What went wrong, in words without the password (PostgreSQL's own messages never carry it).
pub(super) fn detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

pub(super) fn unavailable(shown: &str, e: &postgres::Error) -> StoreError {
    StoreError::Unavailable { store: shown.to_string(), detail: detail(e) }
}

impl PgDb {
    /// Connects, and creates or migrates the schema where `access` allows it.
    pub(crate) fn open(url: PgUrl, access: Access) -> Result<PgDb, StoreError> {
        let mut client = connect(&url)?;
        let shown = url.to_string();
        let mut db = PgDb { url, client: None, own_revs: 0, keeper: super::KeeperId::default(), listener: None };
        let version = schema_version(&mut client).map_err(|e| db.err(&e))?;
        match version {
            Some(found) if found < 0 => {
                return Err(StoreError::Corrupt {
                    store: shown,
                    detail: "its wbs_meta table holds no schema version".into(),
                });
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::Newer { store: shown, found, supported: SCHEMA_VERSION });
            }
            Some(found) if found == SCHEMA_VERSION => {}
            None if access != Access::Write => return Err(StoreError::Missing { store: shown }),
            _ if access == Access::Peek => return Err(StoreError::Missing { store: shown }),
            _ => migrate(&mut client).map_err(|e| db.err(&e))?.map_err(|found| StoreError::Newer {
                store: shown.clone(),
                found,
                supported: SCHEMA_VERSION,
            })?,
        }
        db.client = Some(client);
        Ok(db)
    }

    /// The connection, made again if it was lost.
    pub(super) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = connect(&self.url)?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or(StoreError::Closed)
    }

    pub(super) fn err(&mut self, e: &postgres::Error) -> StoreError {
        let shown = self.url.to_string();
        if e.is_closed() || e.as_db_error().is_none() {
            // The connection is suspect: the next call makes a new one.
            self.client = None;
            return unavailable(&shown, e);
        }
        match e.code() {
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE || *c == SqlState::READ_ONLY_SQL_TRANSACTION => {
                StoreError::ReadOnly { store: shown }
            }
            Some(c) if *c == SqlState::DISK_FULL => StoreError::DiskFull { store: shown },
            _ => StoreError::Backend { store: shown, detail: detail(e) },
        }
    }

    /// Runs `work` in a write transaction that takes the next revision, and commits; a refusal
    /// rolls all of it back.
    pub(super) fn write<T>(
        &mut self,
        work: impl FnOnce(&mut Transaction<'_>, i64) -> Result<T, Refusal>,
    ) -> Result<T, StoreError> {
        let client = self.client()?;
        let outcome = (|| {
            let mut tx = client.transaction()?;
            let rev: i64 =
                // Watchers listening on the channel are told as this commits (`listen`).
                tx.query_one(
                    "UPDATE wbs_meta SET value = value + 1 WHERE key = 'rev' \
                     RETURNING value, pg_notify('wbs_changes', '')::text",
                    &[],
                )?
                .get(0);
            let value = work(&mut tx, rev)?;
            tx.commit()?;
            Ok(value)
        })();
        match outcome {
            Ok(value) => {
                self.own_revs += 1;
                Ok(value)
            }
            Err(Refusal::Clash(e)) => Err(e),
            Err(Refusal::Db(e)) => Err(self.err(&e)),
        }
    }

    /// Runs `work` in a transaction that takes no revision (the budget's bookkeeping), or on one
    /// consistent view of the store, writing nothing (`reading`).
    pub(super) fn transact<T>(
        &mut self,
        reading: bool,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = self.client()?;
        let outcome = (|| {
            let mut tx = if reading {
                client
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?
            } else {
                client.transaction()?
            };
            let value = work(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })();
        outcome.map_err(|e| self.err(&e))
    }

    pub(super) fn read<T>(
        &mut self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.transact(true, work)
    }

    pub(super) fn meta(&mut self, key: &'static str) -> Result<i64, StoreError> {
        let result = self.client()?.query_opt("SELECT value FROM wbs_meta WHERE key = $1", &[&key]);
        match result {
            Ok(row) => Ok(row.map_or(0, |r| r.get(0))),
            Err(e) => Err(self.err(&e)),
        }
    }
}

/// The schema's version, `None` where there is none yet.
fn schema_version(client: &mut Client) -> Result<Option<i64>, postgres::Error> {
    let exists: bool = client.query_one("SELECT to_regclass('wbs_meta') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(None);
    }
    // The tables and their version are written in one transaction: a `wbs_meta` without a
    // version was changed by hand, and is read as version -1 (damaged), never migrated over.
    Ok(Some(client.query_opt("SELECT value FROM wbs_meta WHERE key = 'schema'", &[])?.map_or(-1, |r| r.get(0))))
}

/// Brings the schema up to this build's, one process at a time; `Err(found)` for a schema newer
/// than this build's (another process upgraded it meanwhile).
fn migrate(client: &mut Client) -> Result<Result<(), i64>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS wbs_meta (key text PRIMARY KEY, value bigint NOT NULL)")?;
    let found: i64 = tx.query_opt("SELECT value FROM wbs_meta WHERE key = 'schema'", &[])?.map_or(0, |r| r.get(0));
    if found > SCHEMA_VERSION {
        return Ok(Err(found));
    }
    let from = usize::try_from(found).unwrap_or(0);
    for migration in MIGRATIONS.iter().skip(from) {
        tx.batch_execute(migration)?;
    }
    tx.execute(
        "INSERT INTO wbs_meta (key, value) VALUES ('schema', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
        &[&SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(Ok(()))
}
