//! The rest of the caller's identity from the kernel: what a connection's
//! peer is beyond SO_PEERCRED (`socket::peer_of`). docs/identity.md says
//! what kmsd reads and why; in short:
//!
//! - **Supplementary groups** (SO_PEERGROUPS, Linux 4.13+): the groups of
//!   the peer's credentials as of `connect()`, like SO_PEERCRED's uid and
//!   gid. Sorted and deduplicated; empty if the kernel does not offer them.
//! - **The cgroup v2 path**, read through a pidfd (SO_PEERPIDFD, Linux
//!   6.5+) so that a reused pid can never lend its cgroup to the caller:
//!   the pid is read from the pidfd (its fdinfo), `/proc/<pid>/cgroup` is
//!   read, and the pidfd is asked for its pid again; the path counts only
//!   if the process still holds that same pid. A process holds its pid until
//!   it is reaped, and a reaped process never gets it back, so the same pid
//!   before and after the read means the file read was that process's.
//!   Without SO_PEERPIDFD, or for a peer that has gone, the cgroup is
//!   `None`: never a `/proc` read by SO_PEERCRED's pid, which may name
//!   another process by now.
//! - **The systemd unit** the path names ([`unit_of`], systemd's rule
//!   simplified), if it is a service.
//!
//! The cgroup is the peer's cgroup *now* (at accept), not at `connect()`:
//! the kernel records none at connect. A process moved between cgroups in
//! between (by its manager, or by itself where it may write `cgroup.procs`)
//! is seen where it is now.
//!
//! **Unsafe:** two `libc::getsockopt` calls (SO_PEERGROUPS and SO_PEERPIDFD:
//! rustix has no wrappers for either option) and taking ownership of the
//! pidfd the kernel installs. Everything else goes through rustix and std.
//!
//! Cost: once per accepted connection, on the acceptor thread; a few system
//! calls and three small `/proc` reads (measured in the tests:
//! `peer_details_cost`, and docs/identity.md).

use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub use crate::identity::PeerDetails;

/// Reads [`PeerDetails`] of the connected Unix socket `fd`. Never fails: what
/// the kernel cannot say is left empty (`groups`) or `None` (`cgroup`,
/// `unit`), and logged at debug level.
pub fn peer_details(fd: BorrowedFd<'_>) -> PeerDetails {
    let groups = peer_groups(fd);
    let cgroup = match peer_pidfd(fd) {
        Ok(pidfd) => cgroup_through_pidfd(pidfd.as_fd()),
        Err(e) => {
            // ENOPROTOOPT: a kernel before 6.5; ENODATA: no peer; EINVAL:
            // a kernel that makes no pidfd for a peer already reaped (6.18
            // makes one, whose pid reads -1).
            tracing::debug!(error = %e, "SO_PEERPIDFD failed; no cgroup for this peer");
            None
        }
    };
    let unit = cgroup.as_deref().and_then(unit_of);
    PeerDetails {
        groups,
        cgroup,
        unit,
    }
}

/// The kernel's bound on supplementary groups (NGROUPS_MAX).
const NGROUPS_MAX: usize = 65536;
/// The longest cgroup file read (`/proc/<pid>/cgroup`): longer is `None`.
const CGROUP_FILE_MAX: usize = 8 * 1024;
/// The longest cgroup path kept: longer is `None`.
const CGROUP_PATH_MAX: usize = 4 * 1024;
/// The longest fdinfo read: a pidfd's is about 100 bytes.
const FDINFO_MAX: usize = 1024;

/// SO_PEERGROUPS: sorted, deduplicated; empty on any error but ERANGE, which
/// is retried once with the length the kernel asks for (at most
/// NGROUPS_MAX groups).
fn peer_groups(fd: BorrowedFd<'_>) -> Vec<u32> {
    // Most callers have a handful of groups: one call.
    let mut buf = vec![0u32; 32];
    loop {
        match getsockopt_u32s(fd, libc::SO_PEERGROUPS, &mut buf) {
            Ok(bytes) => {
                buf.truncate(bytes / size_of::<u32>());
                buf.sort_unstable();
                buf.dedup();
                return buf;
            }
            Err((e, needed)) if e.raw_os_error() == Some(libc::ERANGE) => {
                let needed = needed.div_ceil(size_of::<u32>());
                // The peer's groups were fixed at connect(), so the length
                // cannot grow between calls; anything else is a kernel we
                // do not understand.
                if needed <= buf.len() || needed > NGROUPS_MAX {
                    tracing::debug!(needed, "SO_PEERGROUPS: unexpected length; no groups");
                    return Vec::new();
                }
                buf.resize(needed, 0);
            }
            Err((e, _)) => {
                tracing::debug!(error = %e, "SO_PEERGROUPS failed; no groups");
                return Vec::new();
            }
        }
    }
}

/// SO_PEERPIDFD: a pidfd for the peer process as of `connect()`.
fn peer_pidfd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut buf = [0u32; 1];
    let bytes = getsockopt_u32s(fd, libc::SO_PEERPIDFD, &mut buf).map_err(|(e, _)| e)?;
    let raw = buf[0] as libc::c_int;
    if bytes != size_of::<libc::c_int>() || raw < 0 {
        return Err(io::Error::other(format!(
            "SO_PEERPIDFD returned {bytes} bytes, fd {raw}"
        )));
    }
    #[allow(unsafe_code)]
    // SAFETY: a successful getsockopt(SO_PEERPIDFD) has just installed `raw`
    // in our descriptor table for us; nothing else knows it, so we own it
    // and the OwnedFd closes it once.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    Ok(pidfd)
}

/// getsockopt(SOL_SOCKET, `option`) into `buf`: the number of bytes the
/// kernel wrote, or the error with the length the kernel reported (for
/// SO_PEERGROUPS' ERANGE, the length it needs).
fn getsockopt_u32s(
    fd: BorrowedFd<'_>,
    option: libc::c_int,
    buf: &mut [u32],
) -> Result<usize, (io::Error, usize)> {
    use std::os::fd::AsRawFd;
    let capacity = size_of_val(buf);
    let mut len = libc::socklen_t::try_from(capacity).expect("buffer at most NGROUPS_MAX gids");
    #[allow(unsafe_code)]
    // SAFETY: `fd` is a descriptor borrowed for the call; the kernel writes
    // at most `len` bytes to `buf`, which is `len` bytes of writable,
    // 4-aligned memory we hold exclusively (gid_t and int are both 4 bytes,
    // any bit pattern valid), and writes the length to `len`, a live local.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            buf.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    let len = len as usize;
    if rc == 0 {
        Ok(len.min(capacity))
    } else {
        Err((io::Error::last_os_error(), len))
    }
}

/// The cgroup v2 path of the process `pidfd` refers to, if it is alive, its
/// pid is visible in our `/proc`, and it kept that pid across the read (see
/// the module docs).
fn cgroup_through_pidfd(pidfd: BorrowedFd<'_>) -> Option<String> {
    let Some(pid) = pidfd_pid(pidfd) else {
        tracing::debug!("the peer has exited (or is outside our pid namespace); no cgroup");
        return None;
    };
    let mut file = [0u8; CGROUP_FILE_MAX + 1];
    let n = match read_bounded(&format!("/proc/{pid}/cgroup"), &mut file) {
        Ok(n) => n,
        Err(Unread::Open(Errno::NOENT | Errno::ACCESS | Errno::PERM))
            if pidfd_pid(pidfd) == Some(pid) =>
        {
            warn_hidden_once(pid);
            return None;
        }
        Err(_) => return None,
    };
    // Only now that the read is over: does the pidfd's process still hold
    // `pid`? Then the file was its own.
    if pidfd_pid(pidfd) != Some(pid) {
        tracing::debug!(pid, "the peer exited while its cgroup was read; no cgroup");
        return None;
    }
    cgroup_v2_path(&file[..n])
}

/// A live peer whose cgroup file cannot be read: most likely /proc hides
/// other users' processes from kmsd (mounted with `hidepid`, which is what
/// systemd's `ProtectProc=invisible` does), and then no caller of another
/// uid has a cgroup. Said once, at warning level; each case at debug.
fn warn_hidden_once(pid: i32) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            pid,
            "cannot read /proc/<pid>/cgroup of a live peer: callers' cgroups and systemd units \
             are unknown (is /proc mounted with hidepid, e.g. systemd's ProtectProc=invisible? \
             docs/identity.md); said once"
        );
    }
}

/// The pid of a pidfd's process in our `/proc`'s pid namespace (the
/// "Pid:" line of its fdinfo): `None` if it has been reaped (-1), is not
/// visible from here (0), or the fdinfo cannot be read.
fn pidfd_pid(pidfd: BorrowedFd<'_>) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; FDINFO_MAX + 1];
    let n = read_bounded(
        &format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()),
        &mut info,
    )
    .ok()?;
    let pid = info[..n]
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Pid:\t"))?;
    let pid: i32 = std::str::from_utf8(pid).ok()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// Why [`read_bounded`] read nothing (each case is logged at debug level).
#[derive(Debug, PartialEq, Eq)]
enum Unread {
    /// The file could not be opened.
    Open(Errno),
    /// It could not be read.
    Read(Errno),
    /// It is longer than the limit.
    TooLong,
}

/// Reads the file at `path` into `buf`: its length, or why not; a file
/// that does not fit in `buf.len() - 1` bytes is [`Unread::TooLong`] (the
/// last byte only detects that).
fn read_bounded(path: &str, buf: &mut [u8]) -> Result<usize, Unread> {
    use rustix::fs::{Mode, OFlags};
    let file = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| {
        tracing::debug!(path, error = %e, "cannot open");
        Unread::Open(e)
    })?;
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::io::read(&file, &mut buf[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => {
                tracing::debug!(path, error = %e, "cannot read");
                return Err(Unread::Read(e));
            }
        }
    }
    tracing::debug!(path, limit = buf.len() - 1, "longer than the limit; ignored");
    Err(Unread::TooLong)
}

/// The cgroup v2 path in the text of a `/proc/<pid>/cgroup` file: the
/// `0::<path>` line. `None` if there is none (a cgroup-v1-only host), or the
/// path is not UTF-8, longer than 4 KiB, not absolute, has a `..` component
/// (a cgroup outside our cgroup namespace), or is marked " (deleted)" (the
/// process is in a removed cgroup: it is on its way out).
fn cgroup_v2_path(file: &[u8]) -> Option<String> {
    let path = file
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"0::"))?;
    if path.len() > CGROUP_PATH_MAX {
        return None;
    }
    let path = std::str::from_utf8(path).ok()?;
    if !path.starts_with('/') || path.ends_with(" (deleted)") || path.split('/').any(|c| c == "..")
    {
        return None;
    }
    Some(path.to_owned())
}

/// Unit types systemd knows (the suffixes of unit names).
const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// The systemd service a cgroup v2 path names: systemd's
/// `cg_path_get_unit`, simplified. From the root, `*.slice` components are
/// skipped (each a valid slice name); the next component, unescaped (a
/// leading `_` removed, systemd's `cg_unescape`), must be a valid unit name,
/// and it is the unit. `Some` only if that unit is a `.service`: a scope
/// (`init.scope`, `session-3.scope`, a container's `docker-….scope`), the
/// root or a path that is not systemd's gives `None`.
///
/// A user's services live below their user manager:
/// `/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service`
/// names `user@1000.service`, the manager, never `foo.service`. A policy
/// for one user service must name its cgroup (`cgroup:`), not a unit.
///
/// Names stay in systemd's escaped form (`\x2d` for a `-` in a path
/// component, as `systemctl` shows them).
pub fn unit_of(cgroup: &str) -> Option<String> {
    let mut components = cgroup.split('/').filter(|c| !c.is_empty());
    let unit = components.find(|c| !is_slice(c))?;
    let unit = cg_unescape(unit);
    (unit_name_is_valid(unit) && unit.ends_with(".service")).then(|| unit.to_owned())
}

/// A cgroup component that is a valid slice (skipped by [`unit_of`]).
fn is_slice(component: &str) -> bool {
    let name = cg_unescape(component);
    name.ends_with(".slice") && unit_name_is_valid(name) && !name.contains('@')
}

/// systemd's `cg_unescape`: a component systemd had to escape (one that
/// would clash with a cgroup file name) carries a leading `_`.
fn cg_unescape(component: &str) -> &str {
    component.strip_prefix('_').unwrap_or(component)
}

/// systemd's `unit_name_is_valid` for a plain name (`foo.service`) or an
/// instance (`getty@tty1.service`), not a template (`getty@.service`): at
/// most 255 bytes of `[A-Za-z0-9:_.\-\\@]`, a non-empty prefix, at most one
/// `@`, and a known unit type after the last `.`.
fn unit_name_is_valid(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    {
        return false;
    }
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    if !UNIT_TYPES.contains(&suffix) {
        return false;
    }
    match stem.split_once('@') {
        None => !stem.is_empty(),
        Some((prefix, instance)) => {
            !prefix.is_empty() && !instance.is_empty() && !instance.contains('@')
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // fork, setgroups, waitpid in the tests' children
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::{Duration, Instant};

    #[test]
    fn units_from_cgroup_paths() {
        let table: &[(&str, Option<&str>)] = &[
            ("/system.slice/nginx.service", Some("nginx.service")),
            (
                "/system.slice/system-getty.slice/getty@tty1.service",
                Some("getty@tty1.service"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
                Some("user@1000.service"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/init.scope",
                Some("user@1000.service"),
            ),
            ("/init.scope", None),
            ("/", None),
            ("", None),
            ("/machine.slice/docker-abc.scope", None),
            ("/user.slice/user-1000.slice/session-3.scope", None),
            // Only slices: no unit.
            ("/system.slice", None),
            ("/user.slice/user-1000.slice", None),
            // A service's delegated sub-cgroups are still the service.
            ("/system.slice/foo.service/worker", Some("foo.service")),
            ("/system.slice/foo.service/a.service", Some("foo.service")),
            // Not systemd's: the first non-slice component is no unit.
            ("/docker/abc123", None),
            ("/kubepods/burstable/pod1/abc", None),
            ("/foo/bar.service", None),
            // systemd's escapes: a leading "_" (cg_escape), "\x2d" kept.
            ("/system.slice/_cpu.service", Some("cpu.service")),
            ("/_system.slice/foo.service", Some("foo.service")),
            (
                r"/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-disk-by\x2duuid-12ab.service",
                Some(r"systemd-fsck@dev-disk-by\x2duuid-12ab.service"),
            ),
            // Invalid unit names.
            ("/system.slice/.service", None),
            ("/system.slice/foo@.service", None),
            ("/system.slice/@foo.service", None),
            ("/system.slice/a@b@c.service", None),
            ("/system.slice/foo bar.service", None),
            ("/system.slice/föö.service", None),
            ("/system.slice/foo.servic", None),
            ("/system.slice/foo", None),
            // A slice that is no valid unit name stops the walk there.
            ("/bad slice.slice/foo.service", None),
            ("/a@b.slice/foo.service", None),
            // Other unit types are units, but not services.
            ("/system.slice/foo.socket", None),
            ("/system.slice/foo.mount", None),
            // Repeated slashes are harmless.
            ("//system.slice//nginx.service/", Some("nginx.service")),
        ];
        for &(path, want) in table {
            assert_eq!(unit_of(path).as_deref(), want, "{path:?}");
        }
        let long = format!("/system.slice/{}.service", "a".repeat(247));
        assert_eq!(unit_of(&long).map(|u| u.len()), Some(255));
        let too_long = format!("/system.slice/{}.service", "a".repeat(248));
        assert_eq!(unit_of(&too_long), None);
    }

    #[test]
    fn cgroup_v2_lines() {
        let hybrid = b"9:name=systemd:/\n4:memory:/x\n0::/system.slice/a.service\n";
        assert_eq!(
            cgroup_v2_path(hybrid).as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(cgroup_v2_path(b"0::/\n").as_deref(), Some("/"));
        assert_eq!(cgroup_v2_path(b"0::/a b/c\n").as_deref(), Some("/a b/c"));
        // v1 only, deleted, outside our namespace, not UTF-8, not absolute.
        assert_eq!(cgroup_v2_path(b"4:memory:/x\n1:cpu:/\n"), None);
        assert_eq!(cgroup_v2_path(b"0::/gone (deleted)\n"), None);
        assert_eq!(cgroup_v2_path(b"0::/../../other.slice/x.service\n"), None);
        assert_eq!(cgroup_v2_path(b"0::/\xff.service\n"), None);
        assert_eq!(cgroup_v2_path(b"0::x\n"), None);
        assert_eq!(cgroup_v2_path(b""), None);
        let max = format!("0::/{}\n", "a".repeat(CGROUP_PATH_MAX - 1));
        assert_eq!(
            cgroup_v2_path(max.as_bytes()).map(|p| p.len()),
            Some(CGROUP_PATH_MAX)
        );
        let over = format!("0::/{}\n", "a".repeat(CGROUP_PATH_MAX));
        assert_eq!(cgroup_v2_path(over.as_bytes()), None);
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let path = path.to_str().unwrap();
        std::fs::write(path, [b'x'; 16]).unwrap();
        assert_eq!(read_bounded(path, &mut [0; 17]), Ok(16));
        assert_eq!(
            read_bounded(path, &mut [0; 16]),
            Err(Unread::TooLong),
            "one byte too long"
        );
        assert_eq!(
            read_bounded("/nonexistent/kmsd-test", &mut [0; 16]),
            Err(Unread::Open(Errno::NOENT))
        );
    }

    /// This thread's supplementary groups (getgroups), sorted, deduplicated.
    fn own_groups() -> Vec<u32> {
        let mut groups = vec![0 as libc::gid_t; NGROUPS_MAX];
        // SAFETY: the buffer holds NGROUPS_MAX gids; getgroups writes at
        // most that many.
        let n = unsafe { libc::getgroups(NGROUPS_MAX as libc::c_int, groups.as_mut_ptr()) };
        assert!(n >= 0, "getgroups: {}", io::Error::last_os_error());
        groups.truncate(n as usize);
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// The cgroup v2 path of this process, or `None` (with a note) on a
    /// host whose /proc/self/cgroup has no `0::` line.
    fn own_cgroup() -> Option<String> {
        let file = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = file
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_owned);
        if path.is_none() {
            eprintln!("NOTE: /proc/self/cgroup has no 0:: line (cgroup v1 only): not compared");
        }
        path
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A listener in a fresh directory, and the sockaddr a forked child
    /// connects to (built before the fork: the child only makes system
    /// calls).
    fn listener() -> (tempfile::TempDir, UnixListener, libc::sockaddr_un) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        // SAFETY: sockaddr_un is plain data; all zeroes is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.to_str().unwrap().as_bytes();
        assert!(bytes.len() < addr.sun_path.len());
        for (d, &s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = s as libc::c_char;
        }
        (dir, listener, addr)
    }

    /// What a forked child does after connecting.
    #[derive(Clone, Copy)]
    enum Then {
        /// Blocks reading until the parent closes its end.
        Wait,
        /// Exits at once.
        Exit,
    }

    /// Forks a child that sets its supplementary groups to `groups` (if
    /// given; needs root), connects to `addr`, then does `then`. The child
    /// makes raw system calls only (the parent has other threads) and exits
    /// with a code that says which step failed.
    fn fork_peer(addr: &libc::sockaddr_un, groups: Option<&[u32]>, then: Then) -> libc::pid_t {
        // SAFETY: the child runs only async-signal-safe system calls on
        // memory prepared before the fork, then _exit; it never returns
        // into Rust code that could allocate or take a lock.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
            if pid > 0 {
                return pid;
            }
            if let Some(groups) = groups {
                // The raw call: this (only) thread's credentials, no libc
                // machinery to reach other threads.
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                    libc::_exit(10);
                }
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                libc::_exit(11);
            }
            let len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(s, (addr as *const libc::sockaddr_un).cast(), len) != 0 {
                libc::_exit(12);
            }
            if let Then::Wait = then {
                let mut b = 0u8;
                libc::read(s, (&mut b as *mut u8).cast(), 1);
            }
            libc::_exit(0)
        }
    }

    /// Accepts the child's connection (bounded: a child that failed before
    /// connecting is reported with its exit code).
    fn accept_from(listener: &UnixListener, child: libc::pid_t) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((s, _)) => return s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut status = 0;
                    // SAFETY: waitpid on our own child, status a live local.
                    let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
                    assert!(r != child, "the child exited before connecting: {status:#x}");
                    assert!(Instant::now() < deadline, "no connection from the child");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Waits for the child; asserts it exited 0.
    fn reap(child: libc::pid_t) {
        let mut status = 0;
        // SAFETY: waitpid on our own child, status a live local.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(r, child, "waitpid: {}", io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child failed: {status:#x}"
        );
    }

    #[test]
    fn own_groups_and_cgroup_through_a_socket_pair() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let details = peer_details(ours.as_fd());
        assert_eq!(details.groups, own_groups());
        if is_root() {
            // A thread of our own with a known list (raw setgroups changes
            // this thread's credentials only), creating the pair itself: the
            // list may be empty for the test process (it is for root here).
            std::thread::spawn(|| {
                let groups: [u32; 3] = [7001, 7000, 7001];
                // SAFETY: the raw system call reads 3 gids from a live local.
                let r = unsafe { libc::syscall(libc::SYS_setgroups, 3, groups.as_ptr()) };
                assert_eq!(r, 0, "setgroups: {}", io::Error::last_os_error());
                assert_eq!(own_groups(), [7000, 7001]);
                let (ours, _theirs) = UnixStream::pair().unwrap();
                assert_eq!(peer_details(ours.as_fd()).groups, [7000, 7001]);
            })
            .join()
            .unwrap();
        } else {
            eprintln!("NOTE: not root: only this process's own group list is compared");
        }
        match own_cgroup() {
            Some(cgroup) => {
                assert_eq!(details.cgroup.as_deref(), Some(cgroup.as_str()));
                assert_eq!(details.unit, unit_of(&cgroup));
            }
            None => assert_eq!(details.cgroup, None),
        }
    }

    #[test]
    fn own_groups_and_cgroup_through_a_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let details = peer_details(accepted.as_fd());
        assert_eq!(details.groups, own_groups());
        if let Some(cgroup) = own_cgroup() {
            assert_eq!(details.cgroup, Some(cgroup));
        }
    }

    #[test]
    fn the_pidfd_is_close_on_exec_and_names_the_peer() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let pidfd = peer_pidfd(ours.as_fd()).expect("SO_PEERPIDFD (Linux 6.5+)");
        let flags = rustix::io::fcntl_getfd(&pidfd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert_eq!(pidfd_pid(pidfd.as_fd()), Some(std::process::id() as i32));
    }

    #[test]
    fn a_forked_peer_is_seen_with_its_own_groups() {
        let (_dir, listener, addr) = listener();
        let want: &[u32] = &[4343, 4242, 4343];
        let root = is_root();
        let child = fork_peer(&addr, root.then_some(want), Then::Wait);
        let accepted = accept_from(&listener, child);
        let details = peer_details(accepted.as_fd());
        if root {
            assert_eq!(details.groups, [4242, 4343], "the child's setgroups list");
        } else {
            assert_eq!(
                details.groups,
                own_groups(),
                "not root: the child keeps our groups (setgroups not exercised)"
            );
        }
        // The child inherited our cgroup.
        if let Some(cgroup) = own_cgroup() {
            assert_eq!(details.cgroup, Some(cgroup));
        }
        drop(accepted);
        reap(child);
    }

    #[test]
    fn a_peer_that_has_exited_has_no_cgroup() {
        let (_dir, listener, addr) = listener();
        let root = is_root();
        let child = fork_peer(&addr, root.then_some(&[4242][..]), Then::Exit);
        // Connected, exited and reaped before we look: its pid is free and
        // may already be another process's.
        reap(child);
        let accepted = accept_from(&listener, child);
        match peer_pidfd(accepted.as_fd()) {
            Ok(pidfd) => assert_eq!(pidfd_pid(pidfd.as_fd()), None, "a reaped peer's pidfd"),
            Err(e) => eprintln!("NOTE: SO_PEERPIDFD for a reaped peer fails here: {e}"),
        }
        let details = peer_details(accepted.as_fd());
        assert_eq!(details.cgroup, None, "never a stale /proc read");
        assert_eq!(details.unit, None);
        // The credentials were recorded at connect(): still there.
        if root {
            assert_eq!(details.groups, [4242]);
        } else {
            assert_eq!(details.groups, own_groups(), "not root: no setgroups");
        }
    }

    #[test]
    fn a_peer_that_has_exited_unreaped_still_names_its_cgroup() {
        // A zombie still holds its pid (no other process can have it), so
        // the read is its own: exited is not the same as gone.
        let (_dir, listener, addr) = listener();
        let child = fork_peer(&addr, None, Then::Exit);
        // SAFETY: waitid on our own child, siginfo a live local; WNOWAIT
        // leaves it a zombie.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                child as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(r, 0, "waitid: {}", io::Error::last_os_error());
        let accepted = accept_from(&listener, child);
        let details = peer_details(accepted.as_fd());
        if let Some(cgroup) = own_cgroup() {
            assert_eq!(details.cgroup, Some(cgroup));
        }
        reap(child);
        assert_eq!(peer_details(accepted.as_fd()).cgroup, None, "once reaped");
    }

    #[test]
    fn a_peer_hidden_by_hidepid_has_no_cgroup() {
        // systemd's ProtectProc=invisible (the shipped unit) mounts /proc
        // with hidepid=invisible: kmsd, not root, cannot see another uid's
        // /proc/<pid>. The peer is alive, so nothing is stale, but there is
        // nothing to read either: None, never a guess.
        if !is_root() {
            eprintln!("NOTE: not root: hidepid is not exercised (needs a mount namespace)");
            return;
        }
        let (_dir, listener, addr) = listener();
        let child = fork_peer(&addr, Some(&[4242]), Then::Wait);
        let accepted = accept_from(&listener, child);
        let seen = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // This thread only: its own mount namespace with a
                    // hidepid /proc, then uid and gid 65534 and no groups
                    // (raw system calls: this thread's credentials only).
                    // SAFETY: plain system calls on C strings that live
                    // for the calls.
                    unsafe {
                        if libc::unshare(libc::CLONE_NEWNS) != 0 {
                            return Err(format!("unshare: {}", io::Error::last_os_error()));
                        }
                        let private = libc::MS_REC | libc::MS_PRIVATE;
                        if libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), private, std::ptr::null()) != 0 {
                            return Err(format!("mount --make-rprivate: {}", io::Error::last_os_error()));
                        }
                        if libc::mount(
                            c"proc".as_ptr(),
                            c"/proc".as_ptr(),
                            c"proc".as_ptr(),
                            0,
                            c"hidepid=invisible".as_ptr().cast(),
                        ) != 0
                        {
                            return Err(format!("mount proc: {}", io::Error::last_os_error()));
                        }
                        // Group 0 too would see everything: hidepid's
                        // exempt group (gid=) is 0 unless mounted otherwise.
                        let empty: [libc::gid_t; 0] = [];
                        let r = libc::syscall(libc::SYS_setgroups, 0, empty.as_ptr());
                        assert_eq!(r, 0, "setgroups: {}", io::Error::last_os_error());
                        let r = libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534);
                        assert_eq!(r, 0, "setresgid: {}", io::Error::last_os_error());
                        let r = libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534);
                        assert_eq!(r, 0, "setresuid: {}", io::Error::last_os_error());
                    }
                    let hidden = std::fs::metadata(format!("/proc/{child}")).is_err();
                    // Our own fdinfo is still readable: the peer is known
                    // alive, only its /proc entry is out of sight.
                    let pidfd = peer_pidfd(accepted.as_fd()).unwrap();
                    let pid = pidfd_pid(pidfd.as_fd());
                    Ok((hidden, pid, peer_details(accepted.as_fd())))
                })
                .join()
                .unwrap()
        });
        drop(accepted);
        reap(child);
        match seen {
            Ok((hidden, pid, details)) => {
                assert!(hidden, "hidepid=invisible hides another uid's process");
                assert_eq!(pid, Some(child));
                assert_eq!(details.cgroup, None);
                assert_eq!(details.unit, None);
                assert_eq!(details.groups, [4242], "SO_PEERGROUPS needs no /proc");
            }
            Err(e) => eprintln!("NOTE: no mount namespace here ({e}): hidepid is not exercised"),
        }
    }

    #[test]
    fn an_unconnected_socket_has_nothing() {
        use rustix::net::{socket, AddressFamily, SocketType};
        let s = socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
        assert_eq!(peer_details(s.as_fd()), PeerDetails::default());
    }

    #[test]
    fn a_listening_socket_names_its_own_process() {
        // The kernel's rule (as for SO_PEERCRED): listen() records the
        // listener itself as the "peer". kmsd asks accepted sockets only.
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s.sock")).unwrap();
        let details = peer_details(listener.as_fd());
        assert_eq!(details.groups, own_groups());
        if let Some(cgroup) = own_cgroup() {
            assert_eq!(details.cgroup, Some(cgroup));
        }
    }

}
