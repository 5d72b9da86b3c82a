//! systemd readiness (`Type=notify`) with the real daemon: the real `kmsd`
//! binary, a real datagram socket in a temporary directory as its
//! `NOTIFY_SOCKET`, and real connections to its socket.

use kms_proto::client::Client;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A kmsd started with `NOTIFY_SOCKET`, killed on drop if still running (a
/// failed assertion must not leave it behind).
struct Notified {
    dir: tempfile::TempDir,
    notify: UnixDatagram,
    child: Option<Child>,
}

impl Notified {
    /// Starts `kmsd serve --socket <socket> --data-dir <dir>/data` with
    /// `NOTIFY_SOCKET=<dir>/notify.sock` bound by the test.
    fn start(socket: impl FnOnce(&Path) -> PathBuf) -> (Notified, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("kmsd-notify-")
            .tempdir()
            .unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(TIMEOUT)).unwrap();
        let socket = socket(dir.path());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("kmsd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning kmsd");
        let n = Notified {
            dir,
            notify,
            child: Some(child),
        };
        (n, socket)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kmsd.log")).unwrap_or_default()
    }

    /// The next datagram (waits at most TIMEOUT).
    fn next_message(&self) -> String {
        let mut buf = [0u8; 256];
        match self.notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!(
                "no notification within {TIMEOUT:?}: {e}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Whether a datagram is waiting (without waiting for one).
    fn nothing_waiting(&self) -> bool {
        self.notify.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let r = self.notify.recv(&mut buf);
        self.notify.set_nonblocking(false).unwrap();
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) => panic!("reading the notify socket: {e}"),
            Ok(n) => {
                eprintln!("unexpected: {:?}", String::from_utf8_lossy(&buf[..n]));
                false
            }
        }
    }

    /// Waits (at most TIMEOUT) for kmsd to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("kmsd is not running");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "kmsd did not exit within {TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn ready_arrives_only_when_the_socket_answers_and_stopping_at_shutdown() {
    let (mut d, socket) = Notified::start(|dir| dir.join("kmsd.sock"));
    // The first datagram is READY=1 and, by the time it arrives, the socket
    // exists, accepts a connection and a request on it is answered.
    assert_eq!(d.next_message(), "READY=1", "log:\n{}", d.log());
    assert!(socket.exists(), "READY=1 before the socket existed");
    let mut c = Client::connect(&socket)
        .unwrap_or_else(|e| panic!("connect after READY=1: {e}; log:\n{}", d.log()));
    c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
    c.stream().set_write_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(c.generate_random(16).unwrap().len(), 16);
    drop(c);

    let child = d.child.as_ref().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(d.next_message(), "STOPPING=1", "log:\n{}", d.log());
    let status = d.wait_exit();
    assert!(status.success(), "{status}; log:\n{}", d.log());
    assert!(d.nothing_waiting(), "a second READY=1 or a stray message");
}

#[test]
fn a_daemon_that_fails_to_start_never_reports_ready() {
    // A regular file where the socket should be: kmsd never deletes one,
    // so the bind fails late in start-up, after the readiness probe began.
    let (mut d, _socket) = Notified::start(|dir| {
        let path = dir.join("kmsd.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    });
    let status = d.wait_exit();
    assert!(!status.success(), "kmsd started; log:\n{}", d.log());
    assert!(d.nothing_waiting(), "log:\n{}", d.log());
}
