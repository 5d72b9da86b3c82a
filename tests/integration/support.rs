//! Test harness: the real `kmsd` binary in a temporary directory, and the real
//! `kmsctl` binary pointed at it.
//!
//! Every [`Daemon`] has its own directory (socket, data dir, log), so tests
//! run in parallel without sharing state. The daemon's stderr goes to
//! `<dir>/kmsd.log` (appended across restarts); failures quote it.
#![allow(dead_code)]

use bytes::BytesMut;
use kms_proto::client::Client;
use kms_proto::frame::FrameDecoder;
use kms_proto::{decode_response, Response};
use std::fs::OpenOptions;
use std::io::Read;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What ARNs start with on a daemon with the default `[aws]`.
pub const ARN_BASE: &str = "arn:aws:kms:us-east-1:000000000000:";

/// The key ARN of `key_id` on a daemon with the default `[aws]` (what the
/// cryptographic operations answer as KeyId).
pub fn key_arn(key_id: &str) -> String {
    format!("{ARN_BASE}key/{key_id}")
}

/// How long start-up and shutdown may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) kmsd with its own socket and data directory.
pub struct Daemon {
    /// Holds the socket, the data dir and the log; removed on drop.
    pub dir: tempfile::TempDir,
    /// `<dir>/kmsd.sock`.
    pub socket: PathBuf,
    /// `<dir>/data`.
    pub data_dir: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Extra environment of every start (e.g. `KMSD_TEST_CLOCK_FILE`).
    envs: Vec<(String, std::ffi::OsString)>,
}

impl Daemon {
    /// Starts the real kmsd binary: `kmsd serve --socket <dir>/kmsd.sock
    /// --data-dir <dir>/data` plus `args`, with stderr captured to
    /// `<dir>/kmsd.log`; waits until the socket accepts a connection
    /// (timeout 20 s; on timeout, or if kmsd exits first, panics with the
    /// log contents).
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_env(args, &[])
    }

    /// [`Daemon::start`] with `envs` added to the daemon's environment (at
    /// every start).
    pub fn start_env(args: &[&str], envs: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("kmsd-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let socket = dir.path().join("kmsd.sock");
        let data_dir = dir.path().join("data");
        let mut d = Daemon {
            dir,
            socket,
            data_dir,
            child: None,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_os_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("kmsd.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "kmsd is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening kmsd.log");
        let child = Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .arg("serve")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning kmsd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "kmsd exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "kmsd did not accept connections on {} within {TIMEOUT:?}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new blocking client connection (with 20 s read/write timeouts, so a
    /// hung daemon fails the test instead of hanging it).
    pub fn client(&self) -> Client {
        let c = Client::connect(&self.socket).unwrap_or_else(|e| {
            panic!(
                "connecting to {}: {e}; log:\n{}",
                self.socket.display(),
                self.log()
            )
        });
        c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
        c.stream().set_write_timeout(Some(TIMEOUT)).unwrap();
        c
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon process is running (as far as this harness knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM, wait for exit (timeout 20 s), assert exit status 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("kmsd is not running");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .expect("sending SIGTERM");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for kmsd") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kmsd did not exit within {TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "kmsd exited with {status} after SIGTERM; log:\n{}",
            self.log()
        );
    }

    /// SIGKILL (a real crash): no drain, the socket file stays behind.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("kmsd is not running");
        child.kill().expect("sending SIGKILL");
        child.wait().expect("waiting for kmsd");
    }

    /// Starts again on the same socket and data dir with the same args
    /// (stopping it with SIGTERM first if it is still running).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Restarts with other extra arguments (same socket and data dir).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// Runs the real kmsctl binary with `--socket <socket>` prepended and
    /// `stdin` (empty when None) as its standard input.
    pub fn kmsctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(kmsctl_bin());
        cmd.arg("--socket").arg(&self.socket).args(args);
        run_with_stdin(cmd, stdin)
    }

    /// The daemon's log so far (stderr and stdout of every start).
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<no log: {e}>"))
    }
}

/// The real `kmsctl` binary, built (once per test process) into the target
/// directory and profile that `kmsd` was built into.
///
/// kmsctl is a crate of its own (`kmsctl/`), and Cargo defines
/// `CARGO_BIN_EXE_<name>` only for binaries of the package under test, so
/// the tests build it themselves rather than run whatever `kmsctl` an
/// earlier build left next to kmsd: `cargo build -p kmsctl` is a no-op when
/// it is fresh, rebuilds it when it is stale, and builds it on a clean
/// clone. Cargo releases the target directory's lock before it runs test
/// binaries, so the nested build does not wait for the outer one.
pub fn kmsctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let kmsd = Path::new(env!("CARGO_BIN_EXE_kmsd"));
        // <target dir>/<profile dir>/kmsd; the profile directory is "debug"
        // for the dev and test profiles and the profile's name otherwise.
        let profile_dir = kmsd.parent().expect("kmsd's directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args([
            "build",
            "--locked",
            "--quiet",
            "-p",
            "kmsctl",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
            None => panic!("unexpected kmsd path {}", kmsd.display()),
        }
        let out = cmd.output().expect("running cargo build -p kmsctl");
        assert!(
            out.status.success(),
            "cargo build -p kmsctl failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("kmsctl");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// Runs `cmd` with `stdin` fed from a thread (so a large input cannot
/// deadlock against a full stdout pipe) and collects its output.
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning the command");
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        // The child may exit without reading everything (e.g. a usage error);
        // a broken pipe then is not the test's failure.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("waiting for the command");
    if let Some(f) = feeder {
        f.join().expect("stdin feeder");
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a kmsd config file `<dir>/kmsd-pkcs11.toml` whose root of trust is
/// the PKCS#11 token `token_label` in `module`, with root key `key_label` and
/// the user PIN read from `pin_file` (which must be mode 0600); returns its
/// path. For `Daemon::start(&["--config", path])` and `kmsd hsm ...`.
pub fn write_pkcs11_config(
    dir: &std::path::Path,
    module: &std::path::Path,
    token_label: &str,
    key_label: &str,
    pin_file: &std::path::Path,
) -> PathBuf {
    let path = dir.join("kmsd-pkcs11.toml");
    let text = format!(
        "[root]\nkind = \"pkcs11\"\n\n[root.pkcs11]\nmodule = {:?}\ntoken_label = {:?}\n\
         key_label = {:?}\npin_file = {:?}\n",
        module.display().to_string(),
        token_label,
        key_label,
        pin_file.display().to_string(),
    );
    std::fs::write(&path, text).expect("writing the pkcs11 config");
    path
}

/// A config file for a daemon on the PKCS#11 root, with a root key created
/// (once per test run) in the token that scripts/test.sh prepared
/// (KMSD_TEST_PKCS11_MODULE, KMSD_TEST_TOKEN_LABEL, KMSD_TEST_PIN). None
/// when no token was prepared, unless KMSD_REQUIRE_HSM=1 (CI), where that
/// is a failure: the end-to-end suite must run on the HSM root too.
pub fn hsm_root_config() -> Option<&'static std::path::Path> {
    static CONFIG: std::sync::OnceLock<Option<(tempfile::TempDir, PathBuf)>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty() && v != "none");
            let (Some(module), Some(token), Some(pin)) = (
                var("KMSD_TEST_PKCS11_MODULE"),
                var("KMSD_TEST_TOKEN_LABEL"),
                var("KMSD_TEST_PIN"),
            ) else {
                assert!(
                    std::env::var("KMSD_REQUIRE_HSM").as_deref() != Ok("1"),
                    "KMSD_REQUIRE_HSM=1 but no SoftHSM token was prepared (run scripts/test.sh)"
                );
                eprintln!("NOTE: no SoftHSM token (scripts/test.sh prepares one): the end-to-end suite runs on the file root only");
                return None;
            };
            // Inside the throwaway token's directory, which scripts/test.sh
            // removes on exit: a static is never dropped, so a directory
            // of its own (with the PIN file) would outlive every run.
            let base = std::env::var_os("SOFTHSM2_CONF")
                .map(PathBuf::from)
                .and_then(|conf| conf.parent().map(std::path::Path::to_path_buf))
                .unwrap_or_else(std::env::temp_dir);
            let dir = tempfile::Builder::new()
                .prefix("kmsd-e2e-hsm-")
                .tempdir_in(base)
                .expect("temporary directory");
            let pin_file = dir.path().join("pin");
            std::fs::write(&pin_file, &pin).expect("writing the PIN file");
            std::fs::set_permissions(&pin_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("PIN file mode");
            let label = format!("e2e-root-{}", std::process::id());
            let config = write_pkcs11_config(
                dir.path(),
                std::path::Path::new(&module),
                &token,
                &label,
                &pin_file,
            );
            let out = Command::new(env!("CARGO_BIN_EXE_kmsd"))
                .args(["hsm", "init", "--config"])
                .arg(&config)
                .env("KMSD_LOG", "warn")
                .output()
                .expect("running kmsd hsm init");
            assert!(
                out.status.success(),
                "kmsd hsm init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some((dir, config))
        })
        .as_ref()
        .map(|(_, c)| c.as_path())
}

/// A raw connection to the daemon (answers within 20 s or the read fails).
pub fn raw(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one response frame; None on EOF.
pub fn read_response(s: &mut UnixStream, buf: &mut BytesMut) -> Option<Response> {
    let dec = FrameDecoder::default();
    loop {
        if let Some(frame) = dec.decode(buf).unwrap() {
            return Some(decode_response(&frame, dec.max_frame()).unwrap());
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).unwrap();
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
