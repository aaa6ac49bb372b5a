//! The embedded default store: one SQLite file (WAL), its connection on a thread of its own
//! (`writer`), and the driver role as a lock on a file beside it (`lock`).

mod db;
mod lock;
mod rows;
mod writer;

use std::path::Path;
use std::sync::Arc;

use super::{Access, Opened, StoreError};
use db::Db;

pub fn open(path: &Path, access: Access) -> Result<Opened, StoreError> {
    let db = match access {
        Access::Write => Db::open(path)?,
        Access::Read => Db::open_for_reading(path)?,
        Access::Peek => Db::open_read_only(path)?,
    };
    let sessions = writer::SqliteStore::spawn(db, path.display().to_string())?;
    Ok(Opened { sessions: Arc::new(sessions), role: Arc::new(lock::FileRole { store: path.to_path_buf() }) })
}
