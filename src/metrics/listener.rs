//! The `kmsd-metrics` thread: folds histogram samples every second and,
//! when `[metrics] listen` is set, serves `GET /metrics` (the Prometheus
//! text format) on a Unix socket or a loopback TCP address.
//!
//! A plain std thread with its own small HTTP/1.1 reader, not the
//! exporter's built-in listener: that one needs hyper and a multi-threaded
//! tokio runtime (build time and threads for a page fetched every 15 s or
//! so), cannot apply kmsd's socket rules (the directory the daemon owns,
//! the file's mode and group: `transport::socket::bind`), and allows
//! addresses by IP allowlist only. One request per connection, read with a
//! deadline and a size cap, answered, closed: a slow scraper delays other
//! scrapes, never an I/O thread (nothing here is shared with them but the
//! recorder's atomics).

use super::Metrics;
use crate::config::{MetricsConfig, MetricsListen, TransportConfig};
use crate::transport::socket::{self, SocketFile};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The content type of the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How often histogram samples are folded into their summaries.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
/// A scraper gets this long to send its request and to read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

enum Listener {
    /// The socket file's guard removes it (if still ours) when the thread
    /// ends.
    Unix(UnixListener, #[allow(dead_code)] SocketFile),
    Tcp(TcpListener),
}

/// The running thread; dropping it stops the thread (within a second) and
/// removes the socket file.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The bound TCP address, if any (port 0 picks one: tests).
    pub tcp_addr: Option<std::net::SocketAddr>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds the listener `config` names (if any) and starts the thread.
/// Errors name the address: start-up fails on them.
pub fn start(
    metrics: &'static Metrics,
    config: &MetricsConfig,
    transport: &TransportConfig,
) -> io::Result<MetricsServer> {
    let listener = match config.listen()? {
        None => None,
        Some(MetricsListen::Unix(path)) => {
            // The data socket's rules: a directory the daemon owns, no
            // symlink, a stale socket replaced, a live one refused; its own
            // mode, the data socket's group.
            socket::prepare_dir(&path)?;
            let rules = TransportConfig {
                socket_mode: config.socket_mode,
                ..transport.clone()
            };
            let (l, file) = socket::bind(&path, &rules)?;
            l.set_nonblocking(true)?;
            Some(Listener::Unix(l, file))
        }
        Some(MetricsListen::Tcp(addr)) => {
            let l = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            l.set_nonblocking(true)?;
            Some(Listener::Tcp(l))
        }
    };
    let tcp_addr = match &listener {
        Some(Listener::Tcp(l)) => Some(l.local_addr()?),
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("kmsd-metrics".into())
        .spawn(move || serve(metrics, listener, &flag))?;
    Ok(MetricsServer {
        stop,
        thread: Some(thread),
        tcp_addr,
    })
}

fn serve(metrics: &Metrics, listener: Option<Listener>, stop: &AtomicBool) {
    let mut next_upkeep = Instant::now() + UPKEEP_EVERY;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next_upkeep {
            metrics.upkeep();
            next_upkeep = now + UPKEEP_EVERY;
        }
        let wait = next_upkeep.saturating_duration_since(Instant::now());
        let Some(l) = &listener else {
            std::thread::sleep(wait);
            continue;
        };
        if !readable(l, wait) {
            continue;
        }
        let outcome = match l {
            Listener::Unix(l, _) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                answer(metrics, s)
            }),
            Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                answer(metrics, s)
            }),
        };
        match outcome {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!(error = %e, "metrics scrape failed"),
        }
    }
}

/// Waits up to `wait` for a connection to accept.
fn readable(l: &Listener, wait: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let fd = match l {
        Listener::Unix(l, _) => l.as_fd(),
        Listener::Tcp(l) => l.as_fd(),
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// Reads one request head and answers it: `GET /metrics` the exposition,
/// anything else 404 or 405.
fn answer(metrics: &Metrics, mut s: impl Read + Write) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return respond(&mut s, "431 Request Header Fields Too Large", "text/plain", b"");
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => {
            let body = metrics.render();
            respond(&mut s, "200 OK", CONTENT_TYPE, body.as_bytes())
        }
        (b"GET", _) => respond(&mut s, "404 Not Found", "text/plain", b"GET /metrics\n"),
        _ => respond(&mut s, "405 Method Not Allowed", "text/plain", b"GET /metrics\n"),
    }
}

fn respond(s: &mut impl Write, status: &str, content_type: &str, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_metrics_and_refuses_the_rest() {
        let m = Box::leak(Box::new(Metrics::new()));
        m.requests(0, 3);
        let mut out = std::io::Cursor::new(Vec::new());
        struct Duplex<'a>(&'a [u8], &'a mut std::io::Cursor<Vec<u8>>);
        impl Read for Duplex<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0.read(b)
            }
        }
        impl Write for Duplex<'_> {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1.write(b)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        answer(m, Duplex(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &mut out)).unwrap();
        let text = String::from_utf8(out.into_inner()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains(CONTENT_TYPE), "{text}");
        assert!(
            text.contains("kmsd_requests_total{operation=\"CreateKey\"} 3"),
            "{text}"
        );
        for (req, status) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "404"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405"),
        ] {
            let mut out = std::io::Cursor::new(Vec::new());
            answer(m, Duplex(req, &mut out)).unwrap();
            let text = String::from_utf8(out.into_inner()).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        }
    }
}
