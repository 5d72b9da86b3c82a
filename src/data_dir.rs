//! The data directory: checked, and held by one process at a time.
//!
//! Every process that uses a data directory (the daemon, `kmsd
//! migrate-root`) goes through [`DataDir`], which
//!
//! - creates it with mode 0700 if it is missing (daemon only);
//! - refuses a directory that is not owned by the effective uid: its owner
//!   could read or replace the store;
//! - takes group and other permissions away from the directory and from
//!   `keys.db`, `keys.db-wal` and `keys.db-shm` (kmsd before the umask
//!   created them 0644, and an operator-made directory is often 0755), and
//!   logs that it did;
//! - takes an exclusive `flock` on `<dir>/kmsd.lock`, held until the
//!   [`DataDir`] is dropped (the kernel releases it if the process dies). A
//!   second daemon, or a `migrate-root` while a daemon runs, fails at once
//!   with one line naming the holder: two processes on one store would count
//!   HSM usage and cache keys independently, and a daemon running through a
//!   migration would keep wrapping new keys with the old root.
//!
//! The holder writes its pid and role into the lock file so that the loser
//! can name it; the file's contents are only ever informative.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "kmsd.lock";

/// Files of the store whose permissions are narrowed to the owner.
const STORE_FILES: [&str; 3] = ["keys.db", "keys.db-wal", "keys.db-shm"];

/// Why a data directory cannot be used. Each is one line saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A system call failed.
    #[error("data directory {path}: {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The directory does not exist (offline commands never create one).
    #[error("no data directory {0}")]
    Missing(PathBuf),
    /// The path is not a directory.
    #[error("data directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Another user owns the directory.
    #[error(
        "data directory {path} is owned by uid {owner}, not by kmsd's uid {euid}; its owner \
         could read or replace the store: use a directory of uid {euid} (mode 0700)"
    )]
    NotOwned {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        euid: u32,
    },
    /// Another process holds the directory.
    #[error(
        "data directory {path} is in use by {holder}; stop it first (one data directory \
         serves one process at a time)"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// Who holds it, as the holder wrote it ("pid N (kmsd serve)").
        holder: String,
    },
}

/// A checked data directory, locked for this process while the value lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Opens `path` for the daemon: creates it (mode 0700) if missing, then
    /// checks and locks it (see the module docs). `role` names this process
    /// in the lock file, e.g. `kmsd serve`.
    pub fn create_or_open(path: &Path, role: &str) -> Result<DataDir, DataDirError> {
        if !path.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io_err("creating it", path))?;
        }
        DataDir::open_existing(path, role)
    }

    /// Opens an existing data directory (offline commands: a missing one is
    /// a mistake, not something to create), checks and locks it.
    pub fn open_existing(path: &Path, role: &str) -> Result<DataDir, DataDirError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DataDirError::Missing(path.to_owned()))
            }
            Err(e) => return Err(io_err("inspecting it", path)(e)),
        };
        if !meta.is_dir() {
            return Err(DataDirError::NotADirectory(path.to_owned()));
        }
        let euid = rustix::process::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(DataDirError::NotOwned {
                path: path.to_owned(),
                owner: meta.uid(),
                euid,
            });
        }
        // Lock before touching anything inside: the holder may be using it.
        let lock = lock(path, role)?;
        narrow(path, meta.mode())?;
        for name in STORE_FILES {
            let file = path.join(name);
            match fs::symlink_metadata(&file) {
                Ok(m) if m.is_file() => narrow(&file, m.mode())?,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("inspecting", &file)(e)),
            }
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataDirError {
    let path = path.to_owned();
    move |source| DataDirError::Io { what, path, source }
}

/// Takes group and other permissions away from `path` (keeping the
/// owner's), logging it.
fn narrow(path: &Path, mode: u32) -> Result<(), DataDirError> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let new = mode & 0o700;
    fs::set_permissions(path, fs::Permissions::from_mode(new))
        .map_err(io_err("narrowing its permissions", path))?;
    tracing::warn!(
        path = %path.display(),
        "mode {:04o} let group or others in; changed to {new:04o}",
        mode & 0o7777
    );
    Ok(())
}

/// Takes the exclusive lock, or names its holder.
fn lock(dir: &Path, role: &str) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(io_err("opening its lock file", &path))?;
    use rustix::fs::{flock, FlockOperation};
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            // Informative only: an unreadable or empty file still means locked.
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(DataDirError::Locked {
                path: dir.to_owned(),
                holder: if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    holder.to_owned()
                },
            });
        }
        Err(e) => return Err(io_err("locking it", &path)(e.into())),
    }
    let who = format!("pid {} ({role})\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(who.as_bytes()))
        .map_err(io_err("writing its lock file", &path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn one_holder_at_a_time_and_the_loser_learns_who() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::create_or_open(tmp.path(), "kmsd serve").unwrap();
        let err = DataDir::open_existing(tmp.path(), "kmsd migrate-root").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "in use by pid {} (kmsd serve)",
                std::process::id()
            )),
            "{msg}"
        );
        drop(first);
        DataDir::open_existing(tmp.path(), "kmsd migrate-root").unwrap();
    }

    #[test]
    fn created_0700_and_loose_modes_are_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/data");
        drop(DataDir::create_or_open(&dir, "test").unwrap());
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join(LOCK_FILE)), 0o600);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("keys.db"), b"").unwrap();
        fs::set_permissions(dir.join("keys.db"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join("keys.db-wal"), b"").unwrap();
        fs::set_permissions(dir.join("keys.db-wal"), fs::Permissions::from_mode(0o660)).unwrap();
        drop(DataDir::open_existing(&dir, "test").unwrap());
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join("keys.db")), 0o600);
        assert_eq!(mode_of(&dir.join("keys.db-wal")), 0o600);
    }

    #[test]
    fn missing_and_foreign_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("none");
        assert!(matches!(
            DataDir::open_existing(&missing, "test"),
            Err(DataDirError::Missing(_))
        ));
        assert!(!missing.exists());
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            DataDir::open_existing(&file, "test"),
            Err(DataDirError::NotADirectory(_))
        ));
        if !rustix::process::geteuid().is_root() {
            eprintln!("NOTE: not root: the other-owner case is not exercised");
            return;
        }
        let theirs = tmp.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = DataDir::create_or_open(&theirs, "test").unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        assert!(!theirs.join(LOCK_FILE).exists());
    }
}
