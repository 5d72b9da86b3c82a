//! Service-manager readiness: `READY=1` and `STOPPING=1` to systemd's
//! `$NOTIFY_SOCKET` (`Type=notify` units; see `docs/running.md`).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the `AF_UNIX`
//! datagram socket named by `NOTIFY_SOCKET`: a path, or an abstract name
//! written with a leading `@`. That is small enough to write by hand with
//! std's `UnixDatagram` (abstract names through `SocketAddrExt`), which
//! keeps a dependency and its unsafe code out of the daemon; the crates
//! that do it (`sd-notify`, `libsystemd`) add nothing kmsd needs (no
//! watchdog, no file-descriptor store).
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`)
//! nothing is sent and nothing is opened. A failure to notify is logged and
//! otherwise ignored: the daemon serves either way, and systemd reports a
//! unit that never became ready by its own timeout.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or None when it is unset or empty.
    /// An address kmsd cannot use (neither absolute path nor `@name`) is an
    /// error.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier sending to `addr` in `NOTIFY_SOCKET`'s syntax: an
    /// absolute path, or `@` followed by an abstract socket name.
    pub fn new(addr: &OsStr) -> io::Result<Notifier> {
        let bytes = addr.as_bytes();
        let addr = match bytes.first() {
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])?
            }
            Some(b'/') => SocketAddr::from_pathname(addr)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET={} is neither an absolute path nor an abstract name (@name)",
                        addr.to_string_lossy()
                    ),
                ))
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one state string (`"READY=1"`, `"STOPPING=1"`, ...).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to NOTIFY_SOCKET",
            ));
        }
        Ok(())
    }

    /// Sends `state`, logging (not returning) a failure: readiness is
    /// advisory to the daemon itself.
    pub fn notify_or_log(&self, state: &str) {
        match self.notify(state) {
            Ok(()) => tracing::debug!(state, "notified the service manager"),
            Err(e) => tracing::warn!(state, error = %e, "cannot notify the service manager"),
        }
    }
}

/// Sends `READY=1` once the daemon's socket at `socket` accepts connections,
/// from a thread of its own ("kmsd-ready"); gives up when `stop` is set
/// (start-up failed after all).
///
/// Why a probe and not a call from the transport: `transport::serve` binds
/// and then serves until shutdown, and the first moment a client can
/// connect is best observed the way a client observes it. A connect that
/// succeeds proves the socket is bound and listening (the acceptor takes the
/// connection from the backlog once it runs, so a request sent then is
/// answered). The server's uid (SO_PEERCRED) must be ours, so another
/// user's listener on a path we are about to refuse does not count; the
/// data directory's lock, taken before this starts, already keeps a second
/// kmsd of the same unit out. The probe polls every 2 ms: the bind
/// follows within milliseconds, and this runs once per start-up, never on
/// the data path. The probe's connection is closed at once; the daemon sees
/// a client that left without a frame.
pub fn ready_when_accepting(
    notifier: Arc<Notifier>,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let me = kms_proto::peer::effective_uid();
    std::thread::Builder::new()
        .name("kmsd-ready".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Ok(conn) = UnixStream::connect(&socket) {
                    if kms_proto::peer::server_uid(&conn).is_ok_and(|uid| uid == me) {
                        drop(conn);
                        notifier.notify_or_log("READY=1");
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn received(r: &UnixDatagram) -> String {
        let mut buf = [0u8; 64];
        let n = r.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let r = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.notify("READY=1").unwrap();
        assert_eq!(received(&r), "READY=1");
    }

    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        // Unique per test process: abstract names are global to the network
        // namespace.
        let name = format!("kmsd-notify-test-{}", std::process::id());
        let r = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        let n = Notifier::new(OsStr::from_bytes(format!("@{name}").as_bytes())).unwrap();
        n.notify("STOPPING=1").unwrap();
        assert_eq!(received(&r), "STOPPING=1");
    }

    #[test]
    fn a_relative_address_is_refused() {
        let err = Notifier::new(OsStr::new("notify.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
