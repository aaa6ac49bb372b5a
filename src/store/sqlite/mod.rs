//! The embedded default store: one SQLite file (WAL), its connection on a thread of its own
//! (`writer`), and the driver role kept in the file itself (`role`).

mod budget;
mod db;
mod role;
mod rows;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::thread::{Backend, ThreadStore};
use super::{Access, Changes, Grant, Opened, Reservation, Rev, StoreError, Unfinished, Write};
use crate::session::{Outcome, SessionId, SessionKey, SortBy, TrackedSession};
use db::Db;

/// The store's file itself: symbolic links and `..` resolved, so that SQLite names its `-wal`
/// file after the one real path. A file with a second hard link is refused: through the other
/// name, SQLite would keep a second `-wal` file, and writes made through one would be lost to
/// the other.
fn real_path(path: &Path) -> Result<PathBuf, StoreError> {
    let shown = path.display().to_string();
    let unavailable = |e: std::io::Error| StoreError::Unavailable { store: shown.clone(), detail: e.to_string() };
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Ok(link) = std::fs::read_link(path) {
                return Err(StoreError::Unavailable {
                    store: shown,
                    detail: format!(
                        "it is a symbolic link to {}, which does not exist; fix or remove the link",
                        link.display()
                    ),
                });
            }
            // A store yet to be created: its folder may not exist either.
            return Ok(path.to_path_buf());
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(StoreError::Unreadable { store: shown });
        }
        Err(e) => return Err(unavailable(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(&real)
            && meta.is_file()
            && meta.nlink() > 1
        {
            return Err(StoreError::Linked { store: shown, names: meta.nlink() });
        }
    }
    Ok(real)
}

pub fn open(path: &Path, access: Access) -> Result<Opened, StoreError> {
    let real = real_path(path)?;
    let db = match access {
        Access::Write => Db::open(&real)?,
        Access::Read => Db::open_for_reading(&real)?,
        Access::Peek => Db::open_read_only(&real)?,
    };
    let sessions = ThreadStore::spawn(db, path.display().to_string())?;
    Ok(Opened { sessions: Arc::new(sessions), role: Arc::new(role::StoreRole::new(real)) })
}

impl Backend for Db {
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn snapshot(&mut self) -> Result<(Vec<TrackedSession>, Rev), StoreError> {
        Db::snapshot(self)
    }
    fn each_session(
        &mut self,
        each: &mut dyn FnMut(TrackedSession) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        Db::each_session(self, each)
    }
    fn session(&mut self, name: &str) -> Result<TrackedSession, StoreError> {
        Db::session(self, name)
    }
    fn name_of_id(&mut self, id: &SessionId) -> Result<Option<String>, StoreError> {
        Db::name_of_id(self, id)
    }
    fn first_page(&mut self, sort: SortBy, reverse: bool, limit: usize) -> Result<Vec<TrackedSession>, StoreError> {
        Db::first_page(self, sort, reverse, limit)
    }
    fn names(&mut self) -> Result<Vec<String>, StoreError> {
        Db::names(self)
    }
    fn outcomes(&mut self, key: SessionKey, limit: usize) -> Result<Vec<Outcome>, StoreError> {
        Db::outcomes(self, key, limit)
    }
    fn problems(&mut self, limit: usize) -> Result<Vec<(String, Outcome)>, StoreError> {
        Db::problems(self, limit)
    }
    fn reserve(&mut self, ask: Reservation, budget: u32, now: DateTime<Utc>) -> Result<Grant, StoreError> {
        Db::reserve(self, ask, budget, now)
    }
    fn paused(&mut self) -> Result<bool, StoreError> {
        Db::paused(self)
    }
    fn batching(&mut self) -> Result<Option<super::BatchVerdict>, StoreError> {
        Ok(super::BatchVerdict::from_meta(self.meta_i64("batching")?))
    }
    fn rev(&mut self) -> Result<Rev, StoreError> {
        Db::rev(self)
    }
    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        Db::apply(self, writes)
    }
    fn insert_with_history(&mut self, session: &mut TrackedSession, history: &[Outcome]) -> Result<(), StoreError> {
        Db::insert_with_history(self, session, history)
    }
    fn insert_all(&mut self, sessions: &[TrackedSession]) -> Result<Vec<SessionKey>, StoreError> {
        Db::insert_all(self, sessions)
    }
    fn take_unfinished(&mut self) -> Result<Vec<Unfinished>, StoreError> {
        Db::take_unfinished(self)
    }
    fn changes_since(&mut self, since: Rev) -> Result<Changes, StoreError> {
        Db::changes_since(self, since)
    }
    /// SQLite's `data_version`: it moves for other connections' commits only.
    fn others_mark(&mut self) -> Result<i64, StoreError> {
        Db::data_version(self)
    }
    fn set_durable(&mut self, durable: bool) {
        let _ = Db::set_durable(self, durable);
    }
    fn set_busy(&mut self, busy: bool) {
        let _ = Db::set_busy(self, busy);
    }
    fn sync(&mut self) {
        Db::sync(self);
    }
}
