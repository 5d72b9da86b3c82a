//! One connection's read side: frames in, dispatches out (`Conn`), the read
//! deadlines (`ReadTimer`), and the pairing of reader and writer in one task
//! (`run_both`).
//!
//! Engine-independent on purpose: the epoll and io_uring engines differ only
//! in how bytes come off the socket and go back onto it, so everything a
//! connection decides (admission of each frame, backpressure, deadlines)
//! lives here once and both engines' read loops call it.

use super::accept::ConnLimits;
use super::write_queue::WriteQueue;
use super::{wait_shutdown, ServeState, Shutdown};
use crate::budget::ConnBudget;
use crate::dispatch::{Admission, Dispatcher, Outgoing, Reply};
use crate::identity::Identity;
use bytes::BytesMut;
use kms_proto::frame::{FrameDecoder, FrameError};
use kms_proto::KmsError;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

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
    pub(crate) fn new(state: &ServeState, peer: Identity) -> (Conn, WriteQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            dispatcher: Arc::clone(&state.dispatcher),
            peer,
            decoder: FrameDecoder::new(state.max_frame),
            permits: Arc::new(Semaphore::new(state.max_in_flight)),
            budget: ConnBudget::new(state.connection_budget, Arc::clone(&state.budget)),
            max_answer: state.max_answer,
            tx,
        };
        (conn, WriteQueue::new(rx))
    }

    /// The caller.
    pub(crate) fn peer(&self) -> &Identity {
        &self.peer
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
                    .offer(frame, self.peer.clone(), reply, self.max_answer, &self.budget)
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
