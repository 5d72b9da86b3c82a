//! Who the daemon behind a socket is: the server's uid (SO_PEERCRED of the
//! connected socket) checked against the uid the caller expects, and the
//! default socket path that daemon and clients share.
//!
//! Why a client checks: whoever can replace the socket file (a user who
//! created the socket's directory first, for one) can bind their own
//! listener there and receive every plaintext sent to "kmsd", or hand out
//! data keys they know. The kernel names the process that listens on the
//! other end of a connected Unix socket; a client that knows which uid its
//! daemon runs as refuses any other before it sends a byte.
//!
//! **Unsafe:** the one `getsockopt(SO_PEERCRED)` call and `geteuid`/`getuid`
//! are libc calls. std's `UnixStream::peer_cred` is unstable, and rustix's
//! `socket_peercred` stores the pid in a non-zero type although the kernel
//! reports pid 0 for a server outside the caller's pid namespace (a daemon on
//! the host seen from a container), which would be undefined behaviour. The
//! crate is otherwise `deny(unsafe_code)`.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

/// Which uid the daemon on the other end of a connection must run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerUid {
    /// Any uid: no check (a socket path the caller chose and trusts).
    Any,
    /// Exactly this uid (`kmsctl --expect-uid`).
    Exactly(u32),
    /// The caller's own effective uid or root (0): the default for the
    /// default socket path, whose directory another user could have made.
    SelfOrRoot,
}

impl ServerUid {
    /// The check [`crate::client::Client::connect`] applies to `path`:
    /// [`ServerUid::SelfOrRoot`] for the default socket path
    /// ([`default_socket_path`]), [`ServerUid::Any`] for any other.
    pub fn default_for(path: &Path) -> ServerUid {
        if path == default_socket_path() {
            ServerUid::SelfOrRoot
        } else {
            ServerUid::Any
        }
    }

    /// Whether a daemon running as `uid` passes this check for a caller
    /// whose effective uid is `caller`.
    pub fn accepts(self, uid: u32, caller: u32) -> bool {
        match self {
            ServerUid::Any => true,
            ServerUid::Exactly(want) => uid == want,
            ServerUid::SelfOrRoot => uid == caller || uid == 0,
        }
    }
}

/// The daemon on a socket runs as a uid the caller did not expect. Carried
/// inside an [`io::Error`] of kind `PermissionDenied` (find it with
/// `io::Error::get_ref` and `downcast_ref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedServer {
    /// The socket path.
    pub path: PathBuf,
    /// The uid the server runs as (SO_PEERCRED).
    pub uid: u32,
    /// What was expected.
    pub expected: ServerUid,
    /// The caller's effective uid.
    pub caller: u32,
}

impl fmt::Display for UnexpectedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let want = match self.expected {
            ServerUid::Any => "any uid".to_owned(),
            ServerUid::Exactly(u) => format!("uid {u}"),
            ServerUid::SelfOrRoot => format!("your own uid {} or root", self.caller),
        };
        write!(
            f,
            "the server on {} runs as uid {}, not {want}: another user may have taken over \
             the socket; refusing to talk to it",
            self.path.display(),
            self.uid
        )
    }
}

impl std::error::Error for UnexpectedServer {}

/// Checks the server of a connected Unix socket against `expected`; an
/// [`UnexpectedServer`] (kind `PermissionDenied`) if it fails.
pub fn check_server(stream: &impl AsFd, path: &Path, expected: ServerUid) -> io::Result<()> {
    if expected == ServerUid::Any {
        return Ok(());
    }
    check_uid(server_uid(stream)?, path, expected)
}

/// Checks an already known server uid (the async client reads it through
/// tokio) against `expected`.
pub fn check_uid(uid: u32, path: &Path, expected: ServerUid) -> io::Result<()> {
    let caller = effective_uid();
    if expected.accepts(uid, caller) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        UnexpectedServer {
            path: path.to_owned(),
            uid,
            expected,
            caller,
        },
    ))
}

/// The effective uid of the server at the other end of a connected Unix
/// stream socket, as the kernel recorded it when the server called
/// `listen` (SO_PEERCRED).
pub fn server_uid(stream: &impl AsFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is borrowed for the call; `cred` and `len` are valid,
    // writable and sized for SO_PEERCRED's `struct ucred`, whose every bit
    // pattern (including pid 0) is a valid value of the plain C struct.
    let r = unsafe {
        libc::getsockopt(
            stream.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The calling process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The default socket path of daemon and clients:
/// `$XDG_RUNTIME_DIR/kmsd/kmsd.sock`, else `/tmp/kmsd-$UID/kmsd.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("kmsd").join("kmsd.sock"),
        _ => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            PathBuf::from(format!("/tmp/kmsd-{uid}")).join("kmsd.sock")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn the_rules() {
        assert!(ServerUid::Any.accepts(1234, 1000));
        assert!(ServerUid::Exactly(7).accepts(7, 1000));
        assert!(!ServerUid::Exactly(7).accepts(0, 1000));
        assert!(ServerUid::SelfOrRoot.accepts(1000, 1000));
        assert!(ServerUid::SelfOrRoot.accepts(0, 1000));
        assert!(!ServerUid::SelfOrRoot.accepts(65534, 1000));
    }

    #[test]
    fn only_the_default_path_is_checked_by_default() {
        assert_eq!(
            ServerUid::default_for(&default_socket_path()),
            ServerUid::SelfOrRoot
        );
        assert_eq!(
            ServerUid::default_for(Path::new("/run/other/kmsd.sock")),
            ServerUid::Any
        );
    }

    #[test]
    fn a_server_of_our_own_uid_passes_and_another_expected_uid_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = UnixListener::bind(&path).unwrap();
        let c = UnixStream::connect(&path).unwrap();
        let me = effective_uid();
        assert_eq!(server_uid(&c).unwrap(), me);
        check_server(&c, &path, ServerUid::SelfOrRoot).unwrap();
        check_server(&c, &path, ServerUid::Exactly(me)).unwrap();
        let err = check_server(&c, &path, ServerUid::Exactly(me + 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<UnexpectedServer>())
            .expect("an UnexpectedServer inside");
        assert_eq!(inner.uid, me);
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}
