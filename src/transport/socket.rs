//! The socket file and the caller's identity.
//!
//! Binding is careful because the socket file is the daemon's front door:
//! a live daemon on the path is never displaced, a regular file is never
//! deleted, and the file is never reachable with looser permissions than
//! configured, not even for the microseconds between `bind` and `chmod`.
//!
//! The directory the socket lives in must be the daemon's own: owned by its
//! effective uid, writable by nobody else, and not a symlink. Whoever can
//! write to that directory can move the socket aside and bind their own, and
//! then receive every plaintext sent to "kmsd" (the default
//! `/tmp/kmsd-$UID` is a name any local user can create first).

use crate::config::TransportConfig;
use crate::identity::Identity;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The socket file this daemon bound. Dropping it removes the file, but only
/// if the path still names the inode we created: a second daemon that took
/// over the path after we stopped listening keeps its socket.
///
/// An `O_PATH` descriptor pins our inode: while it is open the filesystem
/// cannot hand the same inode number to a new file (tmpfs, for one, reuses
/// numbers at once), so comparing device and inode numbers is exact.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    _pin: std::os::fd::OwnedFd,
}

impl SocketFile {
    #[cfg(any(test, feature = "internals"))]
    /// The path of the socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the socket we bound.
    pub fn is_ours(&self) -> bool {
        fs::symlink_metadata(&self.path)
            .map(|m| m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false)
    }

    /// Removes the socket file now (if still ours).
    pub fn remove(self) {
        // Drop does the work; this name documents the intent at call sites.
        drop(self);
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if !self.is_ours() {
            tracing::debug!(path = %self.path.display(), "socket path no longer ours; leaving it");
            return;
        }
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket file");
        }
    }
}

/// Binds the listening socket at `path` following the rules in the module
/// documentation, applies `config.socket_mode` and `config.socket_group`, and
/// returns the (blocking) listener with the guard that removes the file.
///
/// Errors: another daemon serving on `path` (`AddrInUse`), a non-socket at
/// `path` (`AlreadyExists`), an unknown group (`NotFound`), or the
/// underlying system error.
///
/// The umask is process-wide: it is narrowed to 0o177 for the duration of
/// the `bind` call only. Files created by other threads in that window
/// (none of ours create files on the start-up path) would be created
/// *more* restrictive, never less, so the race is harmless.
pub fn bind(path: &Path, config: &TransportConfig) -> io::Result<(UnixListener, SocketFile)> {
    // Resolve the group first so that a typo fails before anything is created.
    let gid = config
        .socket_group
        .as_deref()
        .map(resolve_group)
        .transpose()?;
    prepare_dir(path)?;
    clear_stale(path)?;

    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;

    use rustix::fs::{Mode, OFlags};
    let pin = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&pin)?;
    // From here on, any failure removes the file again (the guard's Drop).
    let file = SocketFile {
        path: path.to_owned(),
        dev: stat.st_dev,
        ino: stat.st_ino,
        _pin: pin,
    };
    // chown before chmod: the other order would open the configured group
    // bits to the daemon's own group for the time between the two calls.
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot give {} to group {gid}: {e}", path.display()),
            )
        })?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(config.socket_mode & 0o777))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot chmod {}: {e}", path.display())))?;
    Ok((listener, file))
}

/// Creates the directory of the socket `path` (mode 0700) if it is missing,
/// and refuses one another user could write to (`check_socket_dir`). The
/// daemon calls it first thing, so that a refused directory fails start-up
/// before anything else is created; [`bind`] calls it again.
pub fn prepare_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if fs::symlink_metadata(parent).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display()))
            })?;
        // The mode again, umask aside: another thread's bind may have the
        // process umask at 0o177 just now (tests bind in parallel).
        fs::set_permissions(parent, fs::Permissions::from_mode(0o700))?;
    }
    check_socket_dir(parent)
}

/// Refuses a socket directory another user could write to (see the module
/// docs): a symlink (checked with lstat: the link could be re-pointed), a
/// directory not owned by the daemon's effective uid, or one writable by
/// group or others. Each error is one line saying what to do.
fn check_socket_dir(dir: &Path) -> io::Result<()> {
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing socket directory {}: {why}; another user could replace the socket",
                dir.display()
            ),
        ))
    };
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot inspect {}: {e}", dir.display())))?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        return refuse(format!(
            "it is a symlink (use the real directory, owned by uid {euid} with mode 0700)"
        ));
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".to_owned());
    }
    if meta.uid() != euid {
        return refuse(format!(
            "it is owned by uid {}, not by kmsd's uid {euid} (remove it and let kmsd create it, \
             or choose another --socket)",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(format!(
            "its mode {mode:04o} lets group or others write to it (chmod 700 it, or choose \
             another --socket)"
        ));
    }
    Ok(())
}

/// Makes `path` free for `bind`: nothing there, or a stale socket (removed).
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot inspect {}: {e}", path.display()),
            ))
        }
    };
    if !meta.file_type().is_socket() {
        // A symlink is refused too: following it could delete or shadow
        // something that is not ours.
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another kmsd is already serving on {}", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Nobody listens: the socket of a daemon that died without
            // cleaning up.
            tracing::info!(path = %path.display(), "removing a stale socket file");
            fs::remove_file(path)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} exists and cannot be checked for a live daemon: {e}",
                path.display()
            ),
        )),
    }
}

/// Resolves a group name or numeric gid through /etc/group (no NSS: the
/// daemon must not depend on a directory service at start-up).
pub fn resolve_group(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let table = fs::read_to_string("/etc/group")?;
    lookup_group(&table, group).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown group {group:?} in transport.socket_group (not in /etc/group)"),
        )
    })
}

/// Finds `name` in the text of an /etc/group file (`name:x:gid:members`).
fn lookup_group(table: &str, name: &str) -> Option<u32> {
    table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let n = fields.next()?;
            let gid = fields.nth(1)?;
            (n == name).then(|| gid.trim().parse().ok()).flatten()
        })
}

/// The caller's identity (SO_PEERCRED) of an accepted connection.
///
/// Takes a tokio stream rather than a raw fd on purpose: rustix's
/// `socket_peercred` stores the pid in a non-zero type, and the kernel
/// reports pid 0 for a peer outside our pid namespace, which would make
/// that call undefined behaviour. tokio's accessor reads a plain `ucred`.
/// Both engines accept through a tokio listener, so both use this.
/// A pid the kernel cannot name in our namespace is reported as 0. The
/// supplementary groups, cgroup and unit come from
/// [`peer_details`](super::peer::peer_details), once per connection.
pub fn peer_of(stream: &tokio::net::UnixStream) -> io::Result<Identity> {
    let cred = stream.peer_cred()?;
    Ok(Identity::accepted(
        cred.uid(),
        cred.gid(),
        cred.pid().unwrap_or(0),
        super::peer::peer_details(std::os::fd::AsFd::as_fd(stream)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        TransportConfig::default()
    }

    #[test]
    fn fresh_path_in_a_new_directory_gets_0700_dir_and_0660_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/kmsd/kmsd.sock");
        let (_l, file) = bind(&path, &config()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        assert!(fs::metadata(&path).unwrap().file_type().is_socket());
        let parent = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent & 0o777, 0o700);
        drop(file);
        assert!(!path.exists(), "dropping the guard removes our socket");
    }

    #[test]
    fn socket_directories_others_could_write_to_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Group- or world-writable (even with the sticky bit, like /tmp).
        for mode in [0o777, 0o770, 0o1777, 0o720, 0o702] {
            let d = dir.path().join(format!("m{mode:o}"));
            fs::create_dir(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
            let err = bind(&d.join("s.sock"), &config()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{mode:o}");
            assert!(err.to_string().contains("chmod 700"), "{err}");
            assert!(!d.join("s.sock").exists());
        }
        // Read and search by others is fine (e.g. /run/kmsd 0755).
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        bind(&open.join("s.sock"), &config()).unwrap();
        // A symlink to a good directory is refused too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let err = bind(&link.join("t.sock"), &config()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!open.join("t.sock").exists());
    }

    #[test]
    fn socket_directory_of_another_uid_is_refused() {
        if !rustix::process::geteuid().is_root() {
            // Only root can give a directory to another user.
            eprintln!("NOTE: not root: the other-owner case is not exercised");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("theirs");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        let err = bind(&d.join("s.sock"), &config()).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        assert!(!d.join("s.sock").exists());
    }

    #[test]
    fn configured_mode_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut c = config();
        c.socket_mode = 0o600;
        let (_l, _f) = bind(&path, &c).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A socket file with nobody listening: bind, then close the listener.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (l, file) = bind(&path, &config()).unwrap();
        assert!(file.is_ours());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        // And it is a working listener.
        let _c = UnixStream::connect(&path).unwrap();
        l.accept().unwrap();
    }

    #[test]
    fn live_socket_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (live, _file) = bind(&path, &config()).unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        let err = bind(&path, &config()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains("another kmsd is already serving"),
            "{err}"
        );
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
        drop(live);
    }

    #[test]
    fn regular_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        fs::write(&path, b"precious").unwrap();
        let err = bind(&path, &config()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.sock");
        drop(UnixListener::bind(&target).unwrap());
        let path = dir.path().join("s.sock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(bind(&path, &config()).is_err());
        assert!(target.exists());
    }

    #[test]
    fn removal_only_if_still_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (l, file) = bind(&path, &config()).unwrap();
        drop(l);
        // Someone else took the path over.
        fs::remove_file(&path).unwrap();
        let _other = UnixListener::bind(&path).unwrap();
        assert!(!file.is_ours());
        file.remove();
        assert!(
            path.exists(),
            "another daemon's socket must survive our shutdown"
        );
    }

    #[test]
    fn groups_resolve_by_number_and_name_and_unknown_fails() {
        assert_eq!(resolve_group("1234").unwrap(), 1234);
        let table = "# comment\nroot:x:0:\nkmsd-users:x:977:alice,bob\nbad:x:\n";
        assert_eq!(lookup_group(table, "kmsd-users"), Some(977));
        assert_eq!(lookup_group(table, "root"), Some(0));
        assert_eq!(lookup_group(table, "kmsd"), None);
        assert_eq!(lookup_group(table, "bad"), None);
        let err = resolve_group("no-such-group-kmsd-test").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn unknown_group_fails_before_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut c = config();
        c.socket_group = Some("no-such-group-kmsd-test".into());
        assert!(bind(&path, &c).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn own_group_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let gid = rustix::process::getegid().as_raw();
        let mut c = config();
        c.socket_group = Some(gid.to_string());
        let (_l, _f) = bind(&path, &c).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().gid(), gid);
    }

    #[test]
    fn peer_cred_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (l, _f) = bind(&path, &config()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let peer = rt.block_on(async {
            l.set_nonblocking(true).unwrap();
            let l = tokio::net::UnixListener::from_std(l).unwrap();
            let _c = tokio::net::UnixStream::connect(&path).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            peer_of(&s).unwrap()
        });
        assert_eq!(
            (peer.uid, peer.gid, peer.pid),
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
                std::process::id() as i32
            )
        );
        assert_ne!(peer.conn, 0, "an accepted connection has its number");
    }
}
