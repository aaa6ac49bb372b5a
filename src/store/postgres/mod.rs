//! A store on PostgreSQL, for keepers on several hosts that share one set of sessions: the same
//! tables and rules as the SQLite store (`db`, `rows`), the driver role in a row with a
//! heartbeat on the database's clock (`role`), and the connection's address read as `psql`
//! reads it, its password never shown (`url`). The connection lives on the store's thread
//! (`store::thread`), like SQLite's; a watcher's store listens for others' commits on a second
//! one (`listen`).

mod db;
mod leases;
mod listen;
mod role;
mod rows;
mod tls;
mod url;

use std::sync::Arc;

pub(crate) use url::without_password;
pub use url::{BadUrl, DEFAULT_LEASE, PgUrl};

use super::thread::ThreadStore;
use super::{Access, Opened, StoreError};

/// This process's id among the store's keepers, while it is one; shared by its role (which
/// sets it) and its store thread (which writes under it).
pub(crate) type KeeperId = Arc<std::sync::Mutex<Option<String>>>;

pub fn open(url: &PgUrl, access: Access) -> Result<Opened, StoreError> {
    // The client runs a runtime of its own, which may not start inside the caller's.
    let mut db = std::thread::scope(|scope| {
        scope.spawn(|| db::PgDb::open(url.clone(), access)).join().unwrap_or_else(|_| {
            Err(StoreError::Unavailable { store: url.to_string(), detail: "the connection thread failed".into() })
        })
    })?;
    let keeper = KeeperId::default();
    db.keeper = keeper.clone();
    let sessions = ThreadStore::spawn(db, url.to_string())?;
    Ok(Opened { sessions: Arc::new(sessions), role: Arc::new(role::PgRole::new(url.clone(), keeper)) })
}
