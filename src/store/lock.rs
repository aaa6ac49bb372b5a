//! The driver lock: exactly one process schedules automatic refreshes for a store.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("wbsessions pid {} (a keeper or a dashboard) already drives the store {store}; stop it first, or open a dashboard, which watches it", .pid.map_or("unknown".to_string(), |p| p.to_string()))]
    Held { pid: Option<u32>, store: PathBuf },
    #[error(
        "the lock file {path} is a symbolic link, which is refused (what is written to it would land in its target); remove it and start again"
    )]
    Link { path: PathBuf },
    #[error("cannot use the lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl LockError {
    /// Whether the fault is the user's to fix rather than a failed operation.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, LockError::Held { .. } | LockError::Link { .. })
    }
}

/// Held for as long as this value lives; the OS releases it if the process dies.
#[derive(Debug)]
pub struct DriverLock {
    _file: File,
    path: PathBuf,
}

pub fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    store.with_file_name(name)
}

/// The lock file is the user's alone and never a symlink: a planted link must not get the pid
/// written into its target.
fn open(path: &Path) -> Result<File, LockError> {
    crate::files::open_private(path).map_err(|source| {
        // O_NOFOLLOW answers a symbolic link with ELOOP.
        #[cfg(unix)]
        if source.raw_os_error() == Some(libc::ELOOP) {
            return LockError::Link { path: path.to_path_buf() };
        }
        LockError::Io { path: path.to_path_buf(), source }
    })
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    // A pid is a few digits; whatever else sits there is not read whole.
    Read::take(&mut *file, 32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl DriverLock {
    pub fn acquire(store: &Path) -> Result<DriverLock, LockError> {
        Self::acquire_with_patience(store, 5)
    }

    /// One try, no waiting: for a process that checks again and again anyway.
    pub fn acquire_now(store: &Path) -> Result<DriverLock, LockError> {
        Self::acquire_with_patience(store, 0)
    }

    fn acquire_with_patience(store: &Path, patience: u32) -> Result<DriverLock, LockError> {
        let path = lock_path(store);
        let mut file = open(&path)?;
        let io = |source| LockError::Io { path: path.clone(), source };
        // A watcher peeks with a brief shared lock; give it a moment before calling the lock held.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < patience => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Held { pid: read_pid(&mut file), store: store.to_path_buf() });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DriverLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of the process that drives this store, if one does.
pub fn read_holder(store: &Path) -> Option<u32> {
    let path = lock_path(store);
    let mut file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => read_pid(&mut file).or(Some(0)),
        Err(TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, lock_path(&store)).unwrap();
        assert!(matches!(DriverLock::acquire(&store), Err(LockError::Link { .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn one_driver_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        assert_eq!(read_holder(&store), None);
        let first = DriverLock::acquire(&store).unwrap();
        assert_eq!(read_holder(&store), Some(std::process::id()));
        match DriverLock::acquire(&store) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert_eq!(read_holder(&store), None);
        DriverLock::acquire(&store).unwrap();
    }
}
