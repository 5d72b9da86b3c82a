//! The write side shared by both engines: a connection's answer queue with
//! its gather buffer (`WriteQueue`), and the error a stalled write ends with.
//!
//! The engines own the actual writes (tokio writes borrowed slices,
//! tokio-uring owned buffers); what to write next, how answers are gathered
//! without ever growing a buffer that held plaintext, and when permits and
//! budget charges go back, is decided here once.

use super::WRITE_BATCH;
use crate::dispatch::{Admission, Outgoing};
use std::io;
use std::time::Duration;
use tokio::sync::mpsc;

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
    pub(super) fn new(rx: mpsc::UnboundedReceiver<Outgoing>) -> WriteQueue {
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
