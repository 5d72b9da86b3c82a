//! Transport: the Unix socket, framing and the write path.
//!
//! Only this module does socket I/O. Two engines serve the same behaviour:
//! epoll through tokio ([`Engine::Epoll`], `epoll.rs`) and io_uring through
//! tokio-uring ([`Engine::Uring`], `uring.rs`), both thread per core
//! (`threads.rs`). What they share is split by concern:
//!
//! - this file: [`serve`], [`Engine`], the state one server's connections
//!   share (`ServeState`) and the transport's constants;
//! - `accept.rs`: the accept loop, the connection caps (`Tracker`,
//!   `ConnGuard`) and the per-connection limits (`ConnLimits`);
//! - `conn.rs`: a connection's read side (`Conn`: frames in, dispatches
//!   out), its read deadlines (`ReadTimer`) and the reader/writer pairing
//!   (`run_both`);
//! - `write_queue.rs`: the batching writer queue (`WriteQueue`);
//! - `socket.rs`: the socket file's rules and SO_PEERCRED;
//! - `peer.rs`: the rest of the caller's identity from the kernel
//!   (supplementary groups, the cgroup read through a pidfd, the systemd
//!   unit).
//!
//! Per connection:
//! - SO_PEERCRED is read once at accept; it is the caller's identity. A uid
//!   holding `max_connections_per_uid` connections has its new ones closed
//!   at accept, so one user cannot take every slot.
//! - Deadlines (`ReadTimer`, the engines' writers): an idle connection, a
//!   frame whose last byte is late, and a write without progress each close
//!   the connection quietly.
//! - The read buffer grows with what arrived (`kms_proto::frame::make_room`),
//!   never with what a length prefix announces, and a read stops at the end
//!   of a large frame (`read_limit`); frames zero themselves when
//!   dropped, and nothing that held a request is freed unzeroed.
//! - Whole frames are cut out of the byte stream (sans-I/O `FrameDecoder`)
//!   and handed to [`Dispatcher::dispatch`], which never blocks.
//! - Each frame takes one of `max_in_flight` permits first, and is charged
//!   its request bytes and its answer's bound in the connection's and the
//!   global byte budget before it runs (`crate::budget`); both ride with
//!   the answer and are released only once the answer is written (or
//!   dropped: the connection is gone). A connection that sends too much or
//!   never reads its answers simply stops being read; nobody else is
//!   affected (a connection with nothing in flight always gets one small
//!   frame through: the budget's floor).
//! - Answers are at most `max_answer_bytes` (the service bounds them before
//!   running anything; see docs/protocol.md).
//! - Answers are gathered into one write of up to 256 KiB,
//!   then that buffer is zeroized (answers carry plaintext data keys).
//! - A framing error (too large, empty) is answered with one
//!   ValidationException and the connection is closed: a byte stream cannot
//!   be re-synchronized.
//!
//! Threads: the acceptor and the I/O threads are marked as I/O threads
//! (`crate::thread_role::enter_io`) when they start, so in debug builds a
//! store or PKCS#11 call on one of them panics.
//!
//! Shutdown: stop accepting, stop reading, let in-flight answers be written
//! for up to `shutdown_grace_secs`, close everything, remove the socket file.

pub mod peer;
pub mod socket;

mod accept;
mod conn;
mod epoll;
mod http;
mod threads;
mod uring;
mod write_queue;

#[cfg(test)]
mod tests;

use crate::budget::Budget;
use crate::config::{IoMode, TransportConfig};
use crate::dispatch::Dispatcher;
use accept::{ConnLimits, Tracker};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use http::{bind_http, bind_http_tcp, serve_http, serve_http_tcp};

/// Completes when shutdown is requested (SIGTERM/SIGINT are turned into this
/// by the caller): `true` means shut down. A dropped sender also counts as
/// shutdown, so that a server can never outlive the code that controls it.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Which engine actually ran (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// io_uring through tokio-uring.
    Uring,
    /// epoll through tokio.
    Epoll,
}

/// Largest write gathered from a connection's answer queue. Large enough to
/// amortize the syscall over hundreds of small answers, small enough to keep
/// one connection's burst from holding its I/O thread for long.
pub(crate) const WRITE_BATCH: usize = 256 * 1024;

/// Read granularity: one read takes up to this many bytes off the socket.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Binds the socket file (see [`socket::bind`] for the rules), then serves
/// until `shutdown` turns true; then stops accepting, stops reading new
/// frames, lets in-flight requests finish and their answers be written for up
/// to `config.shutdown_grace_secs`, closes all connections, removes the
/// socket file, and returns the engine that ran.
///
/// [`IoMode::Auto`] probes io_uring and falls back to epoll with an info
/// log; [`IoMode::Uring`] fails with a clear error if io_uring is
/// unavailable; [`IoMode::Epoll`] uses tokio. Blocks the calling thread,
/// which it leaves unmarked (see `threads.rs`), and creates an acceptor and
/// `config.io_threads` I/O threads of its own.
pub fn serve(
    socket_path: &Path,
    config: &TransportConfig,
    dispatcher: Arc<Dispatcher>,
    max_frame: usize,
    shutdown: Shutdown,
) -> io::Result<Engine> {
    let engine = match config.io {
        IoMode::Epoll => Engine::Epoll,
        IoMode::Uring => {
            uring::probe().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "io_uring requested (transport.io = \"uring\") but unavailable: {e}; \
                         containers and seccomp profiles often forbid it, use \"epoll\" or \"auto\""
                    ),
                )
            })?;
            Engine::Uring
        }
        IoMode::Auto => match uring::probe() {
            Ok(()) => Engine::Uring,
            Err(e) => {
                tracing::info!(error = %e, "io_uring unavailable; serving with epoll");
                Engine::Epoll
            }
        },
    };
    let (listener, file) = socket::bind(socket_path, config)?;
    let state = Arc::new(ServeState::new(config, dispatcher, max_frame));
    tracing::info!(
        socket = %socket_path.display(),
        ?engine,
        io_threads = config.io_threads,
        "listening"
    );
    let threads = config.io_threads.max(1);
    match engine {
        Engine::Epoll => epoll::run(listener, threads, state, shutdown)?,
        Engine::Uring => uring::run(listener, threads, state, shutdown)?,
    }
    // Every connection is closed and the listener is gone: only now does the
    // path go, and only if it still names our socket.
    file.remove();
    Ok(engine)
}

#[cfg(any(test, feature = "internals"))]
/// Whether io_uring works here (the probe runs once per process). Tests and
/// benches use it to decide whether to cover the io_uring engine.
pub fn uring_available() -> bool {
    uring::probe().is_ok()
}

/// What the acceptor and every connection of one [`serve`] call share:
/// the dispatcher, the limits, the global byte budget and the connection
/// count. (Named for what it is; the key loader has state of its own.)
pub(crate) struct ServeState {
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) max_frame: usize,
    pub(crate) max_in_flight: usize,
    /// Largest answer frame (`transport.max_answer_bytes`).
    pub(crate) max_answer: usize,
    /// Each connection's byte budget (`transport.connection_budget_bytes`).
    pub(crate) connection_budget: usize,
    /// Every connection's bytes together (`transport.total_budget_bytes`).
    pub(crate) budget: Arc<Budget>,
    pub(crate) max_connections: usize,
    pub(crate) grace: Duration,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) conn_limits: ConnLimits,
    /// The HTTP API's state, on its listener only.
    pub(crate) http: Option<Arc<http::HttpState>>,
}

impl ServeState {
    /// The state for one `serve` call with `config`.
    pub(crate) fn new(
        config: &TransportConfig,
        dispatcher: Arc<Dispatcher>,
        max_frame: usize,
    ) -> ServeState {
        ServeState {
            dispatcher,
            max_frame,
            max_in_flight: config.max_in_flight.max(1),
            max_answer: config.max_answer_bytes,
            connection_budget: config.connection_budget_bytes,
            budget: Arc::new(Budget::new(config.total_budget_bytes)),
            max_connections: config.max_connections.max(1),
            grace: Duration::from_secs(config.shutdown_grace_secs),
            tracker: Arc::new(Tracker::default()),
            conn_limits: ConnLimits::new(config),
            http: None,
        }
    }

    /// After shutdown: waits until every connection has closed, at most the
    /// grace period. Returns how many were still open.
    pub(crate) async fn drain(&self) -> usize {
        if tokio::time::timeout(self.grace, self.tracker.idle())
            .await
            .is_err()
        {
            let left = self.tracker.live();
            tracing::warn!(
                connections = left,
                grace_secs = self.grace.as_secs(),
                "grace period over; closing connections with answers still pending"
            );
            return left;
        }
        0
    }
}

/// A new connection's byte budget, within the listener's.
pub(crate) fn budget_for(state: &ServeState) -> Arc<crate::budget::ConnBudget> {
    crate::budget::ConnBudget::new(state.connection_budget, Arc::clone(&state.budget))
}

/// Completes once shutdown is requested (or its sender is gone).
pub(crate) async fn wait_shutdown(shutdown: &mut Shutdown) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
