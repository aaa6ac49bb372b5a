//! The embedded default store: one SQLite file (WAL), its connection on a thread of its own
//! (`writer`), and the driver role kept in the file itself (`role`).

mod budget;
mod db;
mod role;
mod rows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Access, Opened, StoreError};
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

/// Whether a process of this host is still there (a pid another host wrote says nothing here).
pub(super) fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            return true;
        }
        std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

pub fn open(path: &Path, access: Access) -> Result<Opened, StoreError> {
    let real = real_path(path)?;
    let db = match access {
        Access::Write => Db::open(&real)?,
        Access::Read => Db::open_for_reading(&real)?,
        Access::Peek => Db::open_read_only(&real)?,
    };
    let sessions = writer::SqliteStore::spawn(db, path.display().to_string())?;
    Ok(Opened { sessions: Arc::new(sessions), role: Arc::new(role::StoreRole::new(real)) })
}
