//! Transport: the Unix socket, framing and the write path.
//!
//! Only this module does socket I/O. Two engines serve the same behaviour:
//! epoll through tokio ([`Engine::Epoll`], `epoll.rs`) and io_uring through
//! tokio-uring ([`Engine::Uring`], `uring.rs`). What they share lives here:
//! the per-connection frame loop (`Conn`), the batching writer queue
//! (`WriteQueue`), the reader/writer pairing (`run_both`), the accept loop
//! (`accept_loop`) and the connection count (`Tracker`).
//!
//! Per connection:
//! - SO_PEERCRED is read once at accept; it is the caller's identity. A uid
//!   holding `max_connections_per_uid` connections has its new ones closed
//!   at accept, so one user cannot take every slot.
//! - Deadlines (`ReadTimer`, the engines' writers): an idle connection, a
//!   frame whose last byte is late, and a write without progress each close
//!   the connection quietly.
//! - The read buffer grows with what arrived (`kms_proto::frame::make_room`),
//!   never with what a length prefix announces; frames zero themselves when
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
//! Shutdown: stop accepting, stop reading, let in-flight answers be written
//! for up to `shutdown_grace_secs`, close everything, remove the socket file.

pub mod socket;

mod epoll;
mod threads;
mod uring;

use crate::budget::{Budget, ConnBudget};
use crate::config::{IoMode, TransportConfig};
use crate::dispatch::{Admission, Dispatcher, Outgoing, Reply};
use crate::identity::Identity;
use bytes::BytesMut;
use kms_proto::frame::{FrameDecoder, FrameError};
use kms_proto::KmsError;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;

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
/// unavailable; [`IoMode::Epoll`] uses tokio. Runs on the calling thread
/// (blocking) and creates `config.io_threads` I/O threads of its own.
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
    let shared = Arc::new(Shared {
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
    });
    tracing::info!(
        socket = %socket_path.display(),
        ?engine,
        io_threads = config.io_threads,
        "listening"
    );
    let threads = config.io_threads.max(1);
    match engine {
        Engine::Epoll => epoll::run(listener, threads, shared, shutdown)?,
        Engine::Uring => uring::run(listener, threads, shared, shutdown)?,
    }
    // Every connection is closed and the listener is gone: only now does the
    // path go, and only if it still names our socket.
    file.remove();
    Ok(engine)
}

/// Whether io_uring works here (the probe runs once per process). Tests and
/// benches use it to decide whether to cover the io_uring engine.
pub fn uring_available() -> bool {
    uring::probe().is_ok()
}

/// What every connection of one server shares.
pub(crate) struct Shared {
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
}

impl Shared {
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

/// Per-connection limits beyond the connection count: the per-uid cap and
/// the deadlines (see `TransportConfig` for what each means).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Most connections one uid may hold (never more than
    /// `max_connections`).
    pub(crate) max_per_uid: usize,
    /// No bytes received and nothing in flight for this long: closed.
    pub(crate) idle: Duration,
    /// From a frame's first byte to its last.
    pub(crate) frame: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub(crate) write: Duration,
}

impl ConnLimits {
    fn new(config: &TransportConfig) -> ConnLimits {
        let ms = |v: u64| Duration::from_millis(v.max(1));
        ConnLimits {
            max_per_uid: config
                .max_connections_per_uid
                .clamp(1, config.max_connections.max(1)),
            idle: ms(config.idle_timeout_ms),
            frame: ms(config.frame_timeout_ms),
            write: ms(config.write_timeout_ms),
        }
    }
}

/// Counts open connections, in all and per uid, for the connection caps and
/// for draining.
#[derive(Default)]
pub(crate) struct Tracker {
    live: AtomicUsize,
    idle: Notify,
    /// Open connections per uid. A lock taken once at accept and once at
    /// close, never on the data path.
    per_uid: parking_lot::Mutex<HashMap<u32, usize>>,
}

/// Why a new connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` are open.
    Full,
    /// This uid holds `max_connections_per_uid`.
    UidFull,
}

impl Tracker {
    /// Open connections.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Counts a new connection of `uid` unless `max` are open or `uid`
    /// holds `max_per_uid`. Only the acceptor calls this, so check-then-add
    /// does not race with other adds.
    pub(crate) fn try_enter(
        self: &Arc<Self>,
        max: usize,
        uid: u32,
        max_per_uid: usize,
    ) -> Result<ConnGuard, Refused> {
        if self.live() >= max {
            return Err(Refused::Full);
        }
        {
            let mut per_uid = self.per_uid.lock();
            let n = per_uid.entry(uid).or_insert(0);
            if *n >= max_per_uid {
                return Err(Refused::UidFull);
            }
            *n += 1;
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        Ok(ConnGuard {
            tracker: Arc::clone(self),
            uid,
        })
    }

    /// Completes when no connection is open.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a close between the check and
            // the await is not missed.
            notified.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection; dropping it uncounts it.
pub(crate) struct ConnGuard {
    tracker: Arc<Tracker>,
    uid: u32,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        {
            let mut per_uid = self.tracker.per_uid.lock();
            if let Some(n) = per_uid.get_mut(&self.uid) {
                *n -= 1;
                if *n == 0 {
                    per_uid.remove(&self.uid);
                }
            }
        }
        if self.tracker.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

/// Completes once shutdown is requested (or its sender is gone).
pub(crate) async fn wait_shutdown(shutdown: &mut Shutdown) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections until shutdown, reading SO_PEERCRED and enforcing
/// the connection cap, and hands each one to `handoff`. Both engines accept
/// with a tokio listener (tokio-uring's own listener cannot bind on Linux
/// >= 6.12.9, see `uring.rs`).
pub(crate) async fn accept_loop(
    listener: tokio::net::UnixListener,
    shared: &Shared,
    mut shutdown: Shutdown,
    mut handoff: impl FnMut(tokio::net::UnixStream, Identity, ConnGuard),
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = wait_shutdown(&mut shutdown) => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_error(&e).await;
                continue;
            }
        };
        let peer = match socket::peer_of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "SO_PEERCRED failed; closing the connection");
                continue;
            }
        };
        // The per-uid cap keeps one user (root included: a daemon running
        // as root is no reason to let it crowd out everyone else) from
        // taking every slot.
        let limits = &shared.conn_limits;
        match shared
            .tracker
            .try_enter(shared.max_connections, peer.uid, limits.max_per_uid)
        {
            Ok(guard) => {
                tracing::debug!(?peer, "connection accepted");
                handoff(stream, peer, guard);
            }
            Err(Refused::Full) => tracing::debug!(
                ?peer,
                max_connections = shared.max_connections,
                "connection limit reached; closing a new connection"
            ),
            Err(Refused::UidFull) => tracing::debug!(
                ?peer,
                max_connections_per_uid = limits.max_per_uid,
                "per-uid connection limit reached; closing a new connection"
            ),
        }
    }
    tracing::debug!("stopped accepting");
}

/// Accept failures are transient for a daemon (out of descriptors or
/// memory, a peer that gave up): log, pause briefly so that a persistent
/// condition does not spin the thread, and go on.
async fn accept_error(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
        _ => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Why a connection's reader stopped reading.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadStep {
    /// Every whole frame has been dispatched; read more.
    More,
    /// Shutdown, or a framing error that has been answered: stop reading.
    Stop,
}

/// The reading side of one connection: frames in, dispatches out. Owns the
/// connection's last sender of the answer queue that is not inside a reply,
/// so dropping it (when reading ends) lets the writer finish once every
/// in-flight answer has been written.
pub(crate) struct Conn {
    dispatcher: Arc<Dispatcher>,
    peer: Identity,
    decoder: FrameDecoder,
    permits: Arc<Semaphore>,
    budget: Arc<ConnBudget>,
    max_answer: usize,
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Conn {
    /// A connection for `peer`, returning the receiving end of its answer
    /// queue for the writer.
    pub(crate) fn new(shared: &Shared, peer: Identity) -> (Conn, WriteQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            dispatcher: Arc::clone(&shared.dispatcher),
            peer,
            decoder: FrameDecoder::new(shared.max_frame),
            permits: Arc::new(Semaphore::new(shared.max_in_flight)),
            budget: ConnBudget::new(shared.connection_budget, Arc::clone(&shared.budget)),
            max_answer: shared.max_answer,
            tx,
        };
        (conn, WriteQueue::new(rx))
    }

    /// The caller.
    pub(crate) fn peer(&self) -> Identity {
        self.peer
    }

    /// Whether a request is in flight or an answer not yet written: every
    /// taken permit holds a reference to the semaphore until its answer is
    /// written.
    pub(crate) fn busy(&self) -> bool {
        Arc::strong_count(&self.permits) > 1
    }

    /// Dispatches every whole frame at the front of `buf`. Waits for an
    /// in-flight permit before each, and for room in the byte budgets (its
    /// request bytes and its answer's bound) before it runs: those waits are
    /// the backpressure, during which the connection is not read. Stops on
    /// shutdown or a framing error.
    pub(crate) async fn drain(&self, buf: &mut BytesMut, shutdown: &mut Shutdown) -> ReadStep {
        loop {
            let frame = match self.decoder.decode(buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return ReadStep::More,
                Err(e) => {
                    self.frame_error(&e);
                    return ReadStep::Stop;
                }
            };
            let permit = match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => tokio::select! {
                    biased;
                    () = wait_shutdown(shutdown) => return ReadStep::Stop,
                    p = Arc::clone(&self.permits).acquire_owned() => {
                        p.expect("the semaphore is never closed")
                    }
                },
            };
            let reply = Reply::new(self.tx.clone(), Some(Admission::permit(permit)));
            if let Err(waiting) =
                self.dispatcher
                    .offer(frame, self.peer, reply, self.max_answer, &self.budget)
            {
                let charge = tokio::select! {
                    biased;
                    () = wait_shutdown(shutdown) => return ReadStep::Stop,
                    c = self.budget.charge(waiting.bytes()) => c,
                };
                self.dispatcher.resume(*waiting, charge);
            }
        }
    }

    /// Queues the one answer to a framing error (request id 0: the frame's
    /// own id cannot be trusted or even read).
    fn frame_error(&self, e: &FrameError) {
        tracing::debug!(peer = ?self.peer, error = %e, "framing error; closing the connection");
        let mut frame = Vec::new();
        kms_proto::codec::encode_error_response(
            0,
            &KmsError::validation(e.to_string()),
            &mut frame,
        );
        let _ = self.tx.send(Outgoing {
            frame,
            permit: None,
        });
    }

    /// Called when the peer closed its end, with what was left unframed.
    pub(crate) fn eof(&self, buf: &BytesMut) {
        if !buf.is_empty() {
            tracing::debug!(peer = ?self.peer, pending = buf.len(), "connection closed mid-frame");
        }
    }
}

/// Zeroes what is left of a read buffer: requests carry plaintext too.
pub(crate) fn wipe(buf: &mut BytesMut) {
    kms_proto::frame::wipe(buf);
}

/// What the read deadlines decided when their timer fired.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Nothing is wrong yet: wait until this instant and ask again.
    Rearm(Instant),
    /// Close the connection (already logged).
    Close,
}

/// The idle timeout and the frame deadline of one connection's reader,
/// behind one timer that is re-armed lazily: it is reset only when a frame
/// starts and the timer is set later than that frame's deadline, or when it
/// fires; not on every read (each reset is a timer-wheel update).
///
/// - Frame deadline: from the first byte of a frame (as seen by the reader)
///   to its last, at most `frame`.
/// - Idle: no byte received for `idle` and nothing in flight. Activity only
///   sets a flag; when the timer fires after activity it is re-armed a full
///   `idle` ahead, so an idle connection is closed between `idle` and twice
///   that after its last byte.
pub(crate) struct ReadTimer {
    limits: ConnLimits,
    /// When the bytes of the partial frame held began to arrive.
    frame_started: Option<Instant>,
    /// Bytes arrived since the timer was last armed.
    active: bool,
    /// When the timer fires.
    armed: Instant,
}

impl ReadTimer {
    /// A timer armed for the idle timeout from now.
    pub(crate) fn new(limits: ConnLimits) -> ReadTimer {
        ReadTimer {
            limits,
            frame_started: None,
            active: false,
            armed: Instant::now() + limits.idle,
        }
    }

    /// When the timer fires.
    pub(crate) fn deadline(&self) -> Instant {
        self.armed
    }

    /// Before a read, with the bytes of a partial frame the reader holds
    /// (what is left after every whole frame was taken). Returns the new
    /// deadline when the timer must be reset.
    pub(crate) fn before_read(&mut self, partial: usize) -> Option<Instant> {
        if partial == 0 {
            self.frame_started = None;
            return None;
        }
        if self.frame_started.is_some() {
            return None;
        }
        let now = Instant::now();
        let due = now + self.limits.frame;
        self.frame_started = Some(now);
        if due < self.armed {
            self.armed = due;
            return Some(due);
        }
        None
    }

    /// Bytes arrived.
    pub(crate) fn on_read(&mut self) {
        self.active = true;
    }

    /// The timer fired: close, or the instant to fire again.
    pub(crate) fn expired(&mut self, conn: &Conn, partial: usize) -> Expiry {
        let now = Instant::now();
        let next = if let Some(started) = self.frame_started.filter(|_| partial > 0) {
            let due = started + self.limits.frame;
            if due <= now {
                tracing::debug!(
                    peer = ?conn.peer(),
                    pending = partial,
                    frame_timeout_ms = self.limits.frame.as_millis() as u64,
                    "frame not complete within the frame deadline; closing the connection"
                );
                return Expiry::Close;
            }
            due
        } else if self.active || conn.busy() {
            now + self.limits.idle
        } else {
            tracing::debug!(
                peer = ?conn.peer(),
                idle_timeout_ms = self.limits.idle.as_millis() as u64,
                "idle; closing the connection"
            );
            return Expiry::Close;
        };
        self.active = false;
        self.armed = next;
        Expiry::Rearm(next)
    }
}

/// The error a write without progress for `limit` ends with.
pub(crate) fn write_timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no write progress for {} ms (transport.write_timeout_ms)",
            limit.as_millis()
        ),
    )
}

/// What the writer should write next.
pub(crate) enum Chunk {
    /// [`WriteQueue::buf`] holds gathered answers; call
    /// [`WriteQueue::written`] once they are written.
    Gathered,
    /// One answer larger than the gather buffer, to be written on its own.
    Large(Outgoing),
}

/// The receiving end of a connection's answer queue, with the gather buffer.
///
/// The buffer is allocated once at [`WRITE_BATCH`] bytes and never grown, so
/// it is never reallocated (a reallocation would free a copy of plaintext
/// without zeroizing it); answers that do not fit wait for the next write,
/// and answers larger than the whole buffer are written from their own
/// allocation.
pub(crate) struct WriteQueue {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    pending: Option<Outgoing>,
    /// Gathered answer bytes (see [`Chunk::Gathered`]).
    pub(crate) buf: Vec<u8>,
    /// Admissions of the gathered answers, returned once they are written.
    /// The answers themselves are dropped (zeroized) as soon as they are
    /// copied into `buf`, so a gathered answer is held once, not twice.
    held: Vec<Admission>,
}

impl WriteQueue {
    fn new(rx: mpsc::UnboundedReceiver<Outgoing>) -> WriteQueue {
        WriteQueue {
            rx,
            pending: None,
            buf: Vec::with_capacity(WRITE_BATCH),
            held: Vec::new(),
        }
    }

    /// Waits for the next answer, then gathers every answer already queued
    /// behind it that fits. `None` once every sender is gone and everything
    /// has been handed out: the connection has nothing left to say.
    pub(crate) async fn next(&mut self) -> Option<Chunk> {
        let first = match self.pending.take() {
            Some(o) => o,
            None => self.rx.recv().await?,
        };
        if first.frame.len() > self.buf.capacity() {
            return Some(Chunk::Large(first));
        }
        self.push(first);
        while let Ok(o) = self.rx.try_recv() {
            if o.frame.len() > self.buf.capacity() - self.buf.len() {
                self.pending = Some(o);
                break;
            }
            self.push(o);
        }
        Some(Chunk::Gathered)
    }

    fn push(&mut self, mut o: Outgoing) {
        self.buf.extend_from_slice(&o.frame);
        if let Some(a) = o.permit.take() {
            self.held.push(a);
        }
    }

    /// The gathered bytes have been written (or failed): wipe the buffer and
    /// release the answers, which zeroizes them and returns their permits.
    pub(crate) fn written(&mut self) {
        kms_proto::frame::zero(&mut self.buf);
        self.buf.clear();
        self.held.clear();
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        // A write cancelled at shutdown leaves gathered plaintext behind.
        kms_proto::frame::zero(&mut self.buf);
    }
}

/// Runs a connection's reader and writer side by side in one task and
/// returns when the connection is finished: the writer has written every
/// answer after the reader stopped (its queue closed), or the writer failed
/// (then the reader is dropped too).
///
/// One task rather than two: a connection's reads and writes never need two
/// threads at once, and one task saves a cross-thread wake-up per answer.
/// Writes are asynchronous, so a slow reader of answers blocks only itself.
pub(crate) async fn run_both<R, W>(peer: Identity, reader: R, writer: W)
where
    R: Future<Output = ()>,
    W: Future<Output = io::Result<()>>,
{
    tokio::pin!(reader, writer);
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            r = &mut writer => {
                if let Err(e) = r {
                    tracing::debug!(?peer, error = %e, "write failed; closing the connection");
                }
                break;
            }
            () = &mut reader, if reading => reading = false,
        }
    }
    tracing::debug!(?peer, "connection closed");
}

/// End to end over a real socket, with a real dispatcher and service, on
/// every engine this machine can run.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DispatchConfig;
    use crate::service::Service;
    use kms_proto::client::Client;
    use kms_proto::frame::DEFAULT_MAX_FRAME;
    use kms_proto::{ErrorKind, Operation, Response, ResponseBody};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::time::Instant;

    const MAX_FRAME: usize = 64 * 1024;

    fn engines() -> Vec<IoMode> {
        let mut v = vec![IoMode::Epoll];
        if uring_available() {
            v.push(IoMode::Uring);
        }
        v
    }

    fn expected(io: IoMode) -> Engine {
        match io {
            IoMode::Uring => Engine::Uring,
            _ => Engine::Epoll,
        }
    }

    struct Server {
        socket: PathBuf,
        dispatcher: Arc<Dispatcher>,
        stop: tokio::sync::watch::Sender<bool>,
        thread: Option<std::thread::JoinHandle<io::Result<Engine>>>,
        _dir: tempfile::TempDir,
    }

    impl Server {
        fn start(io: IoMode, tweak: impl FnOnce(&mut TransportConfig)) -> Server {
            Server::start_in(tempfile::tempdir().unwrap(), io, 0, tweak)
        }

        /// A server whose store holds `keys` keys.
        fn start_with_keys(
            io: IoMode,
            keys: usize,
            tweak: impl FnOnce(&mut TransportConfig),
        ) -> Server {
            Server::start_in(tempfile::tempdir().unwrap(), io, keys, tweak)
        }

        /// A server whose socket every uid can reach (mode 0o666 in
        /// directories of mode 0o711), for tests with a second uid.
        fn start_for_all(io: IoMode, tweak: impl FnOnce(&mut TransportConfig)) -> Server {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let traverse = || std::fs::Permissions::from_mode(0o711);
            std::fs::set_permissions(dir.path(), traverse()).unwrap();
            std::fs::create_dir(dir.path().join("run")).unwrap();
            std::fs::set_permissions(dir.path().join("run"), traverse()).unwrap();
            Server::start_in(dir, io, 0, |c| {
                c.socket_mode = 0o666;
                tweak(c);
            })
        }

        fn start_in(
            dir: tempfile::TempDir,
            io: IoMode,
            keys: usize,
            tweak: impl FnOnce(&mut TransportConfig),
        ) -> Server {
            let socket = dir.path().join("run/kmsd.sock");
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).unwrap();
            let mut config = TransportConfig {
                io,
                io_threads: 2,
                ..TransportConfig::default()
            };
            tweak(&mut config);
            let root = Arc::new(crate::root::FileRoot::from_key(
                crate::crypto::KeyMaterial::from_bytes([7; 32]),
            ));
            let limits = kms_proto::DecodeLimits {
                max_frame: MAX_FRAME,
                ..kms_proto::DecodeLimits::default()
            };
            let service = Arc::new(Service::open(&data, root, limits, 1000).unwrap());
            for _ in 0..keys {
                service
                    .call(
                        &Operation::CreateKey(kms_proto::CreateKey::default()),
                        &Identity {
                            uid: 0,
                            gid: 0,
                            pid: 0,
                        },
                    )
                    .unwrap();
            }
            let dispatch = DispatchConfig {
                queue_capacity: 1024,
                workers: 1,
                inline_small: true,
                control_threads: 2,
            };
            let dispatcher = Arc::new(Dispatcher::new(service, &dispatch).unwrap());
            let (stop, rx) = tokio::sync::watch::channel(false);
            let path = socket.clone();
            let d = Arc::clone(&dispatcher);
            let thread = std::thread::spawn(move || serve(&path, &config, d, MAX_FRAME, rx));
            // bind() listens at once, so the file's existence means
            // connections will be queued; no probe connection is needed
            // (it would count against max_connections).
            let start = Instant::now();
            while !socket.exists() {
                assert!(!thread.is_finished(), "serve returned early");
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "socket never appeared"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Server {
                socket,
                dispatcher,
                stop,
                thread: Some(thread),
                _dir: dir,
            }
        }

        fn client(&self) -> Client {
            let c = Client::connect(&self.socket).unwrap();
            c.stream()
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            c
        }

        fn raw(&self) -> UnixStream {
            let s = UnixStream::connect(&self.socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        }

        /// Requests shutdown and waits for serve to return.
        fn shutdown(mut self) -> (io::Result<Engine>, Duration) {
            let start = Instant::now();
            self.stop.send(true).unwrap();
            let r = self.thread.take().unwrap().join().unwrap();
            (r, start.elapsed())
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.stop.send(true);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Reads one response frame off a raw stream; `None` on EOF.
    fn read_response(s: &mut UnixStream, buf: &mut BytesMut) -> Option<Response> {
        let dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        loop {
            if let Some(frame) = dec.decode(buf).unwrap() {
                return Some(kms_proto::decode_response(&frame, DEFAULT_MAX_FRAME).unwrap());
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after the server closed with unread input.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn random_request(id: u64, n: u32, out: &mut Vec<u8>) {
        let req = kms_proto::Request {
            request_id: id,
            body: kms_proto::RequestBody::Single(Ok(Operation::GenerateRandom(
                kms_proto::GenerateRandom { number_of_bytes: n },
            ))),
        };
        kms_proto::codec::encode_request(&mut flatbuffers::FlatBufferBuilder::new(), &req, out);
    }

    /// A connection that has sent 2,000 GenerateRandom(1024), about 2 MiB of
    /// answers, and reads none of them.
    fn flood_unread(server: &Server) -> UnixStream {
        let mut s = server.raw();
        let mut frames = Vec::new();
        for id in 1..=2000 {
            random_request(id, 1024, &mut frames);
        }
        s.write_all(&frames).unwrap();
        s
    }

    /// A batch of `items` GenerateRandom(1024): a small request whose
    /// answer is about 1.3 KiB per item (bound: about 1.8 KiB per item).
    fn random_batch(id: u64, items: usize, out: &mut Vec<u8>) {
        let req = kms_proto::Request {
            request_id: id,
            body: kms_proto::RequestBody::Batch(
                (0..items)
                    .map(|_| {
                        Ok(Operation::GenerateRandom(kms_proto::GenerateRandom {
                            number_of_bytes: 1024,
                        }))
                    })
                    .collect(),
            ),
        };
        kms_proto::codec::encode_request(&mut flatbuffers::FlatBufferBuilder::new(), &req, out);
    }

    /// Writes `frame` over and over on a non-blocking `s` without reading
    /// anything, until `limit` bytes are sent or the daemon has taken
    /// nothing for 2 s; returns the bytes sent. (The daemon reads a chunk of
    /// frames and runs them all before it reads again: in a debug build 40
    /// batches of random bytes take about half a second.)
    fn flood(s: &UnixStream, frame: &[u8], limit: usize) -> usize {
        let mut s = s.try_clone().unwrap();
        s.set_nonblocking(true).unwrap();
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * (256 * 1024 / frame.len()).max(1))
            .collect();
        let (mut sent, mut pos) = (0usize, 0usize);
        let mut last_progress = Instant::now();
        while sent < limit && last_progress.elapsed() < Duration::from_secs(2) {
            match s.write(&batch[pos..]) {
                Ok(n) => {
                    sent += n;
                    pos = (pos + n) % batch.len();
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        // The clone shares the file description, and so its mode.
        s.set_nonblocking(false).unwrap();
        sent
    }

    #[test]
    fn a_peer_over_its_byte_budget_stops_being_read() {
        for io in engines() {
            // The count of requests in flight would allow 4096 batches
            // (about 350 MB of answers); the byte budget stops at 1 MiB.
            let server = Server::start(io, |c| {
                c.max_in_flight = 4096;
                c.connection_budget_bytes = 1 << 20;
            });
            let mut frame = Vec::new();
            random_batch(1, 64, &mut frame);
            let s = server.raw();
            let sent = flood(&s, &frame, 4 << 20);
            // About 8 batches in the budget, a few answers in the socket
            // buffer, the rest of what was sent in the other socket buffer.
            assert!(
                sent < 2 << 20,
                "{io:?}: the daemon kept reading ({sent} bytes, {} frames)",
                sent / frame.len()
            );
            // Everyone else is unaffected.
            let mut other = server.client();
            assert_eq!(other.generate_random(4).unwrap().expose().len(), 4);
            let outcomes = other
                .batch(
                    (0..64)
                        .map(|_| {
                            Operation::GenerateRandom(kms_proto::GenerateRandom {
                                number_of_bytes: 1024,
                            })
                        })
                        .collect(),
                )
                .unwrap();
            assert!(outcomes.iter().all(Result::is_ok), "{io:?}");
            // The flooder's answers are all there once it reads.
            let mut buf = BytesMut::new();
            let mut s = s;
            let r = read_response(&mut s, &mut buf).expect("an answer");
            assert!(matches!(r.body, ResponseBody::Batch(_)), "{io:?}: {r:?}");
        }
    }

    #[test]
    fn peers_that_never_read_hold_at_most_the_global_budget_and_others_are_served() {
        for io in engines() {
            let server = Server::start(io, |c| {
                c.max_in_flight = 4096;
                c.total_budget_bytes = 1 << 20;
            });
            let mut frame = Vec::new();
            random_batch(1, 64, &mut frame);
            let hostile: Vec<UnixStream> = (0..8).map(|_| server.raw()).collect();
            let sent: Vec<usize> = std::thread::scope(|scope| {
                let handles: Vec<_> = hostile
                    .iter()
                    .map(|s| scope.spawn(|| flood(s, &frame, 1 << 20)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            // The global budget is about 8 batches, the floor none (a batch
            // is over it): what was sent beyond that sits in socket buffers.
            assert!(
                sent.iter().all(|&n| n < 1 << 20),
                "{io:?}: the daemon kept reading ({sent:?})"
            );
            // A small request still runs on the connection's floor, and a
            // normal client's ListKeys too.
            let mut c = server.client();
            assert_eq!(c.generate_random(32).unwrap().expose().len(), 32, "{io:?}");
            c.list_keys(0, None).unwrap();
            assert_eq!(c.generate_random(32).unwrap().expose().len(), 32, "{io:?}");
        }
    }

    #[test]
    fn the_work_of_a_closed_connection_is_dropped_and_others_are_served_at_once() {
        for io in engines() {
            let server = Server::start_with_keys(io, 300, |_| {});
            let mut frame = Vec::new();
            let req = kms_proto::Request {
                request_id: 1,
                body: kms_proto::RequestBody::Single(Ok(Operation::ListKeys(
                    kms_proto::ListKeys {
                        limit: 1000,
                        marker: None,
                    },
                ))),
            };
            for _ in 0..2000 {
                kms_proto::codec::encode_request(
                    &mut flatbuffers::FlatBufferBuilder::new(),
                    &req,
                    &mut frame,
                );
            }
            // Pipelined pages of 300 keys, then gone without reading.
            for _ in 0..4 {
                let s = server.raw();
                flood(&s, &frame, frame.len());
                drop(s);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while server.dispatcher.dropped_frames() == 0 {
                assert!(
                    Instant::now() < deadline,
                    "{io:?}: the work of closed connections was not dropped"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut c = server.client();
            let page = c.list_keys(10, None).unwrap();
            assert_eq!(page.keys.len(), 10, "{io:?}");
        }
    }

    #[test]
    fn round_trip_and_pipelining_on_every_engine() {
        for io in engines() {
            let server = Server::start(io, |_| {});
            let mut c = server.client();
            assert_eq!(c.generate_random(32).unwrap().expose().len(), 32, "{io:?}");
            // Many in flight at once: answers are gathered into few writes.
            for _ in 0..500 {
                c.send(Operation::GenerateRandom(kms_proto::GenerateRandom {
                    number_of_bytes: 16,
                }));
            }
            let mut ids: Vec<u64> = (0..500).map(|_| c.recv().unwrap().request_id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 500, "{io:?}: every request answered once");
            let (r, _) = server.shutdown();
            assert_eq!(r.unwrap(), expected(io));
        }
    }

    #[test]
    fn in_flight_cap_stalls_only_that_connection() {
        for io in engines() {
            let server = Server::start(io, |c| c.max_in_flight = 2);
            // 300 requests written before any answer is read: the daemon
            // stops reading at 2 in flight and resumes as answers drain.
            let mut s = server.raw();
            let mut frames = Vec::new();
            for id in 1..=300 {
                random_request(id, 1024, &mut frames);
            }
            let writer = {
                let mut s = s.try_clone().unwrap();
                std::thread::spawn(move || s.write_all(&frames).unwrap())
            };
            // Meanwhile another connection is served normally.
            let mut other = server.client();
            assert_eq!(other.generate_random(8).unwrap().expose().len(), 8);
            let mut buf = BytesMut::new();
            for _ in 0..300 {
                let r = read_response(&mut s, &mut buf).expect("answer");
                assert!(
                    matches!(r.body, ResponseBody::Single(Ok(_))),
                    "{io:?}: {r:?}"
                );
            }
            writer.join().unwrap();
        }
    }

    #[test]
    fn a_peer_that_never_reads_its_answers_stops_being_read() {
        for io in engines() {
            let server = Server::start(io, |c| c.max_in_flight = 8);
            let mut frame = Vec::new();
            random_request(1, 1, &mut frame);
            // Offer 8 MiB of requests without reading a single answer. Once
            // the answers fill the socket and 8 are in flight, the daemon
            // must stop reading, so only about two socket buffers' worth
            // can ever be written.
            let mut s = server.raw();
            s.set_nonblocking(true).unwrap();
            let batch: Vec<u8> = frame
                .iter()
                .copied()
                .cycle()
                .take(frame.len() * 1000)
                .collect();
            let (mut sent, mut pos) = (0usize, 0usize);
            let mut last_progress = Instant::now();
            while sent < 8 << 20 && last_progress.elapsed() < Duration::from_millis(500) {
                match s.write(&batch[pos..]) {
                    Ok(n) => {
                        sent += n;
                        pos = (pos + n) % batch.len();
                        last_progress = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("{io:?}: {e}"),
                }
            }
            assert!(
                sent < 2 << 20,
                "{io:?}: the daemon kept reading ({sent} bytes)"
            );
            // Everyone else is unaffected.
            assert_eq!(
                server.client().generate_random(4).unwrap().expose().len(),
                4,
                "{io:?}"
            );
        }
    }

    fn frame_error_closes_only_that_connection(io: IoMode, prefix: [u8; 4]) {
        let server = Server::start(io, |_| {});
        let mut bystander = server.client();
        assert_eq!(bystander.generate_random(4).unwrap().expose().len(), 4);

        let mut s = server.raw();
        s.write_all(&prefix).unwrap();
        let mut buf = BytesMut::new();
        let r = read_response(&mut s, &mut buf).expect("a frame-level answer");
        assert_eq!(r.request_id, 0);
        match r.body {
            ResponseBody::Error(e) => assert_eq!(e.kind, ErrorKind::Validation, "{io:?}: {e}"),
            other => panic!("{io:?}: expected a frame-level error, got {other:?}"),
        }
        assert!(
            read_response(&mut s, &mut buf).is_none(),
            "{io:?}: connection closed"
        );
        assert_eq!(
            bystander.generate_random(4).unwrap().expose().len(),
            4,
            "{io:?}"
        );
    }

    #[test]
    fn oversized_frame_is_refused_and_the_connection_closed() {
        for io in engines() {
            let len = u32::try_from(MAX_FRAME + 1).unwrap();
            frame_error_closes_only_that_connection(io, len.to_le_bytes());
        }
    }

    #[test]
    fn empty_frame_is_refused_and_the_connection_closed() {
        for io in engines() {
            frame_error_closes_only_that_connection(io, [0; 4]);
        }
    }

    #[test]
    fn eof_mid_frame_just_closes() {
        for io in engines() {
            let server = Server::start(io, |_| {});
            let mut s = server.raw();
            s.write_all(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            assert!(
                read_response(&mut s, &mut BytesMut::new()).is_none(),
                "{io:?}"
            );
            assert_eq!(
                server.client().generate_random(4).unwrap().expose().len(),
                4
            );
        }
    }

    #[test]
    fn connections_beyond_the_cap_are_closed_at_once() {
        for io in engines() {
            let server = Server::start(io, |c| c.max_connections = 1);
            let mut first = server.client();
            assert_eq!(first.generate_random(4).unwrap().expose().len(), 4);
            let mut second = server.raw();
            let mut req = Vec::new();
            random_request(1, 4, &mut req);
            // The write may already fail if the close was quick.
            let _ = second.write_all(&req);
            assert!(
                read_response(&mut second, &mut BytesMut::new()).is_none(),
                "{io:?}"
            );
            drop(first);
            // Once the first is gone, a new connection is served.
            let start = Instant::now();
            loop {
                let mut s = server.raw();
                let _ = s.write_all(&req);
                if read_response(&mut s, &mut BytesMut::new()).is_some() {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{io:?}: slot never freed"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn shutdown_closes_idle_connections_removes_the_socket_and_returns() {
        for io in engines() {
            let server = Server::start(io, |c| c.shutdown_grace_secs = 30);
            let socket = server.socket.clone();
            let mut idle = server.raw();
            let mut c = server.client();
            assert_eq!(c.generate_random(4).unwrap().expose().len(), 4);
            let (r, took) = server.shutdown();
            assert_eq!(r.unwrap(), expected(io));
            // Idle connections have nothing in flight: no waiting for grace.
            assert!(took < Duration::from_secs(10), "{io:?}: took {took:?}");
            assert!(!socket.exists(), "{io:?}: socket file removed");
            assert!(
                read_response(&mut idle, &mut BytesMut::new()).is_none(),
                "{io:?}"
            );
            assert!(UnixStream::connect(&socket).is_err());
        }
    }

    #[test]
    fn shutdown_gives_up_on_a_peer_that_never_reads_after_the_grace_period() {
        for io in engines() {
            let server = Server::start(io, |c| {
                c.shutdown_grace_secs = 1;
                c.max_in_flight = 4096;
            });
            // The writer is stuck on a full socket buffer.
            let _unread = flood_unread(&server);
            std::thread::sleep(Duration::from_millis(300));
            let socket = server.socket.clone();
            let (r, took) = server.shutdown();
            assert_eq!(r.unwrap(), expected(io));
            assert!(
                took >= Duration::from_millis(900),
                "{io:?}: waited {took:?}"
            );
            assert!(took < Duration::from_secs(8), "{io:?}: waited {took:?}");
            assert!(!socket.exists());
        }
    }

    #[test]
    fn second_server_on_a_live_socket_is_refused() {
        let server = Server::start(IoMode::Epoll, |_| {});
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let dir = tempfile::tempdir().unwrap();
        let service = Arc::new(
            Service::open(
                dir.path(),
                Arc::new(crate::root::FileRoot::from_key(
                    crate::crypto::KeyMaterial::from_bytes([7; 32]),
                )),
                kms_proto::DecodeLimits::default(),
                10,
            )
            .unwrap(),
        );
        let d = Arc::new(Dispatcher::new(service, &DispatchConfig::default()).unwrap());
        let err = serve(
            &server.socket,
            &TransportConfig::default(),
            d,
            MAX_FRAME,
            rx,
        )
        .unwrap_err();
        assert!(err.to_string().contains("already serving"), "{err}");
        assert_eq!(
            server.client().generate_random(4).unwrap().expose().len(),
            4
        );
    }

    #[test]
    fn auto_picks_uring_when_available_and_uring_mode_fails_clearly_otherwise() {
        let server = Server::start(IoMode::Auto, |_| {});
        let (r, _) = server.shutdown();
        let want = if uring_available() {
            Engine::Uring
        } else {
            Engine::Epoll
        };
        assert_eq!(r.unwrap(), want);
        if !uring_available() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let service = Arc::new(
                Service::open(
                    dir.path(),
                    Arc::new(crate::root::FileRoot::from_key(
                        crate::crypto::KeyMaterial::from_bytes([7; 32]),
                    )),
                    kms_proto::DecodeLimits::default(),
                    10,
                )
                .unwrap(),
            );
            let d = Arc::new(Dispatcher::new(service, &DispatchConfig::default()).unwrap());
            let config = TransportConfig {
                io: IoMode::Uring,
                ..TransportConfig::default()
            };
            let err = serve(&path, &config, d, MAX_FRAME, rx).unwrap_err();
            assert!(err.to_string().contains("io_uring"), "{err}");
            assert!(
                !path.exists(),
                "nothing bound when the engine is unavailable"
            );
        }
    }

    #[test]
    fn write_queue_gathers_and_never_grows_its_buffer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut q = WriteQueue::new(rx);
            let cap = q.buf.capacity();
            let small = |n: usize| Outgoing {
                frame: vec![1; n],
                permit: None,
            };
            for _ in 0..3 {
                tx.send(small(100)).unwrap();
            }
            tx.send(small(cap - 200)).unwrap(); // does not fit behind 300
            tx.send(small(cap + 1)).unwrap(); // larger than the buffer
            assert!(matches!(q.next().await, Some(Chunk::Gathered)));
            assert_eq!(q.buf.len(), 300);
            q.written();
            assert!(matches!(q.next().await, Some(Chunk::Gathered)));
            assert_eq!(q.buf.len(), cap - 200);
            q.written();
            match q.next().await {
                Some(Chunk::Large(o)) => assert_eq!(o.frame.len(), cap + 1),
                _ => panic!("expected the large answer on its own"),
            }
            assert_eq!(q.buf.capacity(), cap);
            drop(tx);
            assert!(q.next().await.is_none());
        });
    }

    #[test]
    fn permits_return_only_after_the_answer_is_written() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let sem = Arc::new(Semaphore::new(1));
            let (tx, rx) = mpsc::unbounded_channel();
            let mut q = WriteQueue::new(rx);
            Reply::new(
                tx,
                Some(Admission::permit(
                    Arc::clone(&sem).try_acquire_owned().unwrap(),
                )),
            )
            .send(vec![9; 10]);
            assert!(matches!(q.next().await, Some(Chunk::Gathered)));
            assert_eq!(sem.available_permits(), 0, "held while being written");
            q.written();
            assert_eq!(sem.available_permits(), 1);
        });
    }

    /// Waits (at most 20 s) until the daemon has closed its end of `s`,
    /// without reading: answers may still be queued unread.
    fn wait_closed_by_daemon(s: &UnixStream) -> bool {
        closed_within(s, 20)
    }

    /// Whether the daemon closes its end of `s` within `secs` seconds.
    fn closed_within(s: &UnixStream, secs: i64) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(s, PollFlags::RDHUP)];
        let timeout = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&timeout)).unwrap() == 1
            && fds[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP)
    }

    #[test]
    fn an_idle_connection_is_closed_after_the_idle_timeout() {
        for io in engines() {
            let server = Server::start(io, |c| c.idle_timeout_ms = 100);
            // Served once, then idle: closed.
            let mut c = server.client();
            assert_eq!(c.generate_random(4).unwrap().expose().len(), 4);
            assert!(wait_closed_by_daemon(c.stream()), "{io:?}");
            // Never a byte: closed too.
            let s = server.raw();
            assert!(wait_closed_by_daemon(&s), "{io:?}");
        }
    }

    #[test]
    fn a_half_sent_frame_is_closed_after_the_frame_deadline() {
        for io in engines() {
            let server = Server::start(io, |c| {
                c.idle_timeout_ms = 600_000;
                c.frame_timeout_ms = 100;
            });
            let mut s = server.raw();
            // Seven bytes of a 100-byte frame, then silence.
            s.write_all(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
            assert!(wait_closed_by_daemon(&s), "{io:?}");
            assert!(read_response(&mut s, &mut BytesMut::new()).is_none());
            // Others are served.
            assert_eq!(
                server.client().generate_random(4).unwrap().expose().len(),
                4,
                "{io:?}"
            );
        }
    }

    #[test]
    fn a_slow_but_steady_sender_of_whole_frames_is_not_closed() {
        for io in engines() {
            let server = Server::start(io, |c| {
                c.idle_timeout_ms = 300;
                c.frame_timeout_ms = 300;
            });
            let mut c = server.client();
            // Requests in a row, each well inside both deadlines: the
            // timers re-arm rather than close.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1000) {
                assert_eq!(c.generate_random(4).unwrap().expose().len(), 4, "{io:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    #[test]
    fn a_peer_that_never_reads_is_closed_after_the_write_deadline() {
        for io in engines() {
            let server = Server::start(io, |c| {
                c.write_timeout_ms = 100;
                c.idle_timeout_ms = 600_000;
                c.max_in_flight = 4096;
            });
            // The writer makes no progress once the socket buffers are full.
            let mut s = flood_unread(&server);
            assert!(wait_closed_by_daemon(&s), "{io:?}");
            // What was written before the deadline can be read, then EOF:
            // not every answer.
            let mut buf = BytesMut::new();
            let mut answers = 0;
            while read_response(&mut s, &mut buf).is_some() {
                answers += 1;
            }
            assert!(answers < 2000, "{io:?}: {answers} answers");
            assert_eq!(
                server.client().generate_random(4).unwrap().expose().len(),
                4,
                "{io:?}"
            );
        }
    }

    /// Runs `f` on a new thread whose credentials (only the thread's: Linux
    /// keeps them per thread, and rustix's calls are the raw syscalls) are
    /// uid and gid `id`.
    fn as_uid<T: Send + 'static>(id: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            use rustix::process::{Gid, Uid};
            use rustix::thread::{set_thread_res_gid, set_thread_res_uid};
            let gid = Gid::from_raw(id);
            set_thread_res_gid(gid, gid, gid).unwrap();
            let uid = Uid::from_raw(id);
            set_thread_res_uid(uid, uid, uid).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn one_uid_flooding_idle_and_half_frame_connections_does_not_lock_out_another() {
        const OTHER: u32 = 65534;
        // A second uid needs root (to switch a thread's credentials); as
        // another user only the cap on the flooding uid is checked.
        let root = rustix::process::geteuid().is_root();
        if !root {
            eprintln!("not root: the second uid's part of this test is not run");
        }
        for io in engines() {
            let server = Server::start_for_all(io, |c| {
                c.max_connections = 8;
                c.max_connections_per_uid = 4;
            });
            // The flood: 20 connections from this uid, half idle, half
            // holding half a frame, all accepted before the other uid's.
            let mut flood = Vec::new();
            for i in 0..20 {
                let mut s = server.raw();
                if i % 2 == 1 {
                    let _ = s.write_all(&[100, 0, 0, 0, 1, 2, 3]);
                }
                flood.push(s);
            }
            if root {
                other_uid_is_served(&server, OTHER, io);
            }
            // The flooding uid got no more than its share: its extra
            // connections were closed at accept, which (first come, first
            // accepted) happened before the last connection was accepted.
            if !root {
                assert_eq!(
                    server.client().generate_random(8).unwrap().expose().len(),
                    8
                );
            }
            let closed = flood.iter().filter(|s| closed_within(s, 0)).count();
            assert_eq!(closed, 16, "{io:?}");
        }
    }

    fn other_uid_is_served(server: &Server, other: u32, io: IoMode) {
        {
            // The kernel names the other uid as the peer of its
            // connections (checked here with the daemon's own reader).
            let check = tempfile::tempdir().unwrap();
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(check.path(), std::fs::Permissions::from_mode(0o777))
                    .unwrap();
            }
            let path = check.path().join("peercred.sock");
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            std::fs::set_permissions(&path, {
                use std::os::unix::fs::PermissionsExt;
                std::fs::Permissions::from_mode(0o777)
            })
            .unwrap();
            let probe = as_uid(other, move || UnixStream::connect(&path).unwrap());
            let (accepted, _) = listener.accept().unwrap();
            let accepted = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let s = tokio::net::UnixStream::from_std({
                        accepted.set_nonblocking(true).unwrap();
                        accepted
                    })
                    .unwrap();
                    socket::peer_of(&s).unwrap()
                });
            assert_eq!((accepted.uid, accepted.gid), (other, other));
            drop(probe);

            // The other uid is served.
            let socket = server.socket.clone();
            let served = as_uid(other, move || {
                let mut c = Client::connect(&socket).unwrap();
                c.stream()
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                c.generate_random(8).map(|r| r.expose().len())
            });
            assert_eq!(served.unwrap(), 8, "{io:?}");
        }
    }
}
