//! The driver role of a SQLite store: an advisory lock on a file beside it, which the OS lets go
//! of when the process dies.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::{DriverRole, Holder, Lease, RoleError};

/// The driver role of the store at `store`.
pub(crate) struct FileRole {
    pub store: PathBuf,
}

impl DriverRole for FileRole {
    fn acquire(&self) -> Result<Box<dyn Lease>, RoleError> {
        Ok(Box::new(DriverLock::acquire_with_patience(&self.store, 5)?))
    }

    fn try_acquire(&self) -> Result<Box<dyn Lease>, RoleError> {
        Ok(Box::new(DriverLock::acquire_with_patience(&self.store, 0)?))
    }

    fn holder(&self) -> Option<Holder> {
        read_holder(&self.store)
    }
}

impl Lease for DriverLock {
    /// The OS holds the lock for as long as the process lives; nothing to renew.
    fn renew(&self) -> Result<(), RoleError> {
        Ok(())
    }
}

/// Held for as long as this value lives; the OS releases it if the process dies.
#[derive(Debug)]
struct DriverLock {
    _file: File,
}

fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    store.with_file_name(name)
}

/// The lock file is the user's alone and never a symlink: a planted link must not get the pid
/// written into its target.
fn open(path: &Path) -> Result<File, RoleError> {
    crate::files::open_private(path).map_err(|source| {
        // O_NOFOLLOW answers a symbolic link with ELOOP.
        #[cfg(unix)]
        if source.raw_os_error() == Some(libc::ELOOP) {
            return RoleError::Refused(format!(
                "the lock file {} is a symbolic link, which is refused (what is written to it would land in its target); remove it and start again",
                path.display()
            ));
        }
        failed(path, &source)
    })
}

fn failed(path: &Path, e: &std::io::Error) -> RoleError {
    RoleError::Failed(format!("cannot use the lock file {}: {e}", path.display()))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    // A pid is a few digits; whatever else sits there is not read whole.
    Read::take(&mut *file, 32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl DriverLock {
    fn acquire_with_patience(store: &Path, patience: u32) -> Result<DriverLock, RoleError> {
        let path = lock_path(store);
        let mut file = open(&path)?;
        let io = |source: std::io::Error| failed(&path, &source);
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
                    let holder = Holder { pid: read_pid(&mut file), since: since(&file) };
                    return Err(RoleError::Held { holder, store: store.display().to_string() });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DriverLock { _file: file })
    }
}

/// When the holder took the lock: it wrote its pid then.
fn since(file: &File) -> Option<chrono::DateTime<chrono::Utc>> {
    file.metadata().and_then(|m| m.modified()).ok().map(chrono::DateTime::<chrono::Utc>::from)
}

/// The process that drives this store, if one does.
fn read_holder(store: &Path) -> Option<Holder> {
    let path = lock_path(store);
    let mut file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => Some(Holder { pid: read_pid(&mut file), since: since(&file) }),
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
        let role = FileRole { store };
        assert!(matches!(role.acquire(), Err(RoleError::Refused(_))));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn one_driver_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let role = FileRole { store: dir.path().join("s.db") };
        assert_eq!(role.holder(), None);
        let first = role.acquire().unwrap();
        assert_eq!(role.holder().and_then(|h| h.pid), Some(std::process::id()));
        assert!(role.holder().and_then(|h| h.since).is_some(), "since when it drives");
        match role.acquire() {
            Err(RoleError::Held { holder, .. }) => assert_eq!(holder.pid, Some(std::process::id())),
            Err(other) => panic!("expected Held, got {other:?}"),
            Ok(_) => panic!("a second driver"),
        }
        drop(first);
        assert_eq!(role.holder(), None);
        role.try_acquire().unwrap();
    }
}
