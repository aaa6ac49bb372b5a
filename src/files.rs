//! Files that hold sessions, tokens, logs and locks: created readable by the user alone, in
//! folders only the user can enter, whatever the umask, and never through a planted symlink.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` and its missing parents; the folders this creates are 0700.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    options
}

/// Creates a new file that did not exist (no symlink, no race), mode 0600.
pub(crate) fn create_new_private(path: &Path) -> io::Result<File> {
    private_options().write(true).create_new(true).open(path)
}

/// Creates an empty file if none is there, so that a program that makes it later (SQLite) keeps
/// its mode; an existing one is left as it is.
pub(crate) fn ensure_private_file(path: &Path) -> io::Result<()> {
    match create_new_private(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tightens a path if it exists, is the user's and is no symlink; quietly does nothing otherwise.
/// It never opens the file: closing a descriptor of a file SQLite holds would drop SQLite's POSIX
/// locks for the whole process.
pub(crate) fn tighten_path(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.file_type().is_file() && meta.uid() == me && meta.mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o700));
        }
    }
}

/// Makes a file of ours readable and writable by us alone (0600): SQLite's -wal and -shm files
/// take the database's mode when made, so a store read while it was write-protected leaves them
/// read-only, and every later writer would be refused by them. Not ours, or not a plain file
/// (a symbolic link): left alone.
pub(crate) fn owner_read_write(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.file_type().is_file() && meta.uid() == me && meta.mode() & 0o777 != 0o600 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// A random suffix for temporary files, so that nobody can plant one in advance.
pub(crate) fn random_suffix() -> String {
    let mut rng = fastrand::Rng::new();
    (0..12).map(|_| rng.alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn files_are_private_and_symlinks_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        private_dir(&nested).unwrap();
        assert_eq!(std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777, 0o700);
        let file = nested.join("f");
        create_new_private(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_new_private(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        tighten_path(&target);
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
