//! Targets that are other processes: kmsd started with a temporary data
//! directory (`--spawn`), the echo server, and what /proc says about them.

use anyhow::{bail, Context as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process serving a Unix socket in a temporary directory; stopped
/// (SIGTERM, then SIGKILL after 5 s) and cleaned up on drop.
pub struct Spawned {
    child: Child,
    /// The socket it serves.
    pub socket: PathBuf,
    /// A spawned kmsd's HTTP API socket (`kmsd-http.sock` beside `socket`
    /// unless the config says otherwise); None when the config disables
    /// the API, and for the echo server.
    pub http_socket: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Starts kmsd from `kmsd` with a fresh data directory; `io` is passed as
    /// `--io` and `config` as `--config`.
    pub fn kmsd(kmsd: &Path, io: Option<&str>, config: Option<&Path>) -> anyhow::Result<Spawned> {
        Spawned::kmsd_with(kmsd, io, config, false)
    }

    /// [`Spawned::kmsd`], and with `bypass_authorization` a kmsd that
    /// decides nothing (`access.benchmark_bypass_authorization` and
    /// `--benchmark-allow-unauthorized`): to measure what authorization
    /// costs. Not with `config` (the bypass writes its own).
    pub fn kmsd_with(
        kmsd: &Path,
        io: Option<&str>,
        config: Option<&Path>,
        bypass_authorization: bool,
    ) -> anyhow::Result<Spawned> {
        let dir = tempfile::Builder::new().prefix("kms-loadgen-").tempdir()?;
        let socket = dir.path().join("kmsd.sock");
        let mut cmd = Command::new(kmsd);
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        if let Some(io) = io {
            cmd.arg("--io").arg(io);
        }
        if bypass_authorization && config.is_some() {
            bail!("the authorization bypass writes its own config; give no --config");
        }
        // The daemon's default quotas (100,000 cryptographic operations a
        // second per uid) would throttle the load: this run's own uid gets
        // a limit it never reaches, added to the given config (or to an
        // empty one), so the quota check runs on every item without
        // refusing any.
        let mut text = match config {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => String::new(),
        };
        text.push_str(&format!(
            "\n[[quotas.limit]]\nprincipal = \"uid:{}\"\nclass = \"cryptographic\"\nrate = 1e9\n",
            rustix::process::geteuid().as_raw()
        ));
        if bypass_authorization {
            text.push_str("\n[access]\nbenchmark_bypass_authorization = true\n");
            cmd.arg("--benchmark-allow-unauthorized");
        }
        let path = dir.path().join("kms-loadgen.toml");
        std::fs::write(&path, text)?;
        // Where the daemon will serve its HTTP API, by its own rule
        // (`[http] socket`, else beside the binary socket). A config it
        // cannot read fails the start below, with its message.
        let http_socket = match kmsd::config::Config::load(&path) {
            Ok(c) if !c.http.enabled => None,
            Ok(c) => Some(c.http.socket_path(&socket)),
            Err(_) => Some(socket.with_file_name("kmsd-http.sock")),
        };
        cmd.arg("--config").arg(path);
        // The daemon logs to stderr; keep only warnings so a run's output
        // stays readable.
        cmd.env("KMSD_LOG", "warn");
        let mut spawned = Spawned::start(cmd, dir, socket, "kmsd")?;
        spawned.http_socket = http_socket;
        Ok(spawned)
    }

    /// Starts this program's echo server (`kms-loadgen echo-server`).
    pub fn echo() -> anyhow::Result<Spawned> {
        let dir = tempfile::Builder::new().prefix("kms-echo-").tempdir()?;
        let socket = dir.path().join("echo.sock");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("echo-server").arg("--socket").arg(&socket);
        Spawned::start(cmd, dir, socket, "echo server")
    }

    fn start(
        mut cmd: Command,
        dir: tempfile::TempDir,
        socket: PathBuf,
        what: &str,
    ) -> anyhow::Result<Spawned> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({:?})", cmd.get_program()))?;
        let mut spawned = Spawned {
            child,
            socket,
            http_socket: None,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if UnixStream::connect(&spawned.socket).is_ok() {
                return Ok(spawned);
            }
            if let Some(status) = spawned.child.try_wait()? {
                bail!("{what} exited before serving its socket ({status})");
            }
            if Instant::now() > deadline {
                bail!("{what} did not serve its socket within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kmsd binary: `explicit`, else the one beside this program (cargo
/// puts both in `target/<profile>/`).
pub fn find_kmsd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("kmsd");
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "no kmsd beside {} (build it: cargo build --release --bin kmsd), or pass --kmsd PATH",
        me.display()
    )
}

/// CPU and memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStat {
    /// User plus system CPU seconds so far.
    pub cpu_secs: f64,
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// Peak resident set, bytes.
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; None if the process is
/// gone or /proc is not there.
pub fn proc_stat(pid: Option<i32>) -> Option<ProcStat> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15 (1-based).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let kib = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    Some(ProcStat {
        cpu_secs: (utime + stime) / ticks,
        rss_bytes: kib("VmRSS:").unwrap_or(0) * 1024,
        peak_rss_bytes: kib("VmHWM:").unwrap_or(0) * 1024,
    })
}

/// The pid of the process at the other end of a Unix socket (SO_PEERCRED),
/// so a daemon reached by `--socket` can be measured too.
pub fn peer_pid(stream: &UnixStream) -> Option<i32> {
    let cred = rustix::net::sockopt::socket_peercred(stream).ok()?;
    Some(cred.pid.as_raw_nonzero().get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_this_process() {
        let s = proc_stat(None).expect("/proc/self");
        assert!(s.rss_bytes > 0);
        assert!(s.peak_rss_bytes >= s.rss_bytes);
    }

    #[test]
    fn peer_pid_names_the_other_end() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_pid(&a), Some(std::process::id() as i32));
    }
}
