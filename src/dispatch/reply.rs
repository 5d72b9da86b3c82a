//! Where an answer goes: a connection's write queue, with the admission
//! (in-flight permit and byte charge) the answer releases once written.

use crate::audit::gate::Gate;
use crate::budget::Charge;
use crate::metrics::Stamp;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// What a frame holds until its answer has been written (or dropped): one
/// of the connection's in-flight permits and its byte charge.
#[derive(Default)]
pub struct Admission {
    /// One of the connection's `max_in_flight` permits: held, never read;
    /// dropping it frees the slot.
    #[allow(dead_code)]
    pub permit: Option<OwnedSemaphorePermit>,
    /// Request bytes plus the answer's bound, in the connection's and the
    /// global budget (see [`crate::budget`]).
    pub charge: Option<Charge>,
}

impl Admission {
    /// An admission holding only an in-flight permit.
    pub fn permit(permit: OwnedSemaphorePermit) -> Admission {
        Admission {
            permit: Some(permit),
            charge: None,
        }
    }
}

/// An encoded response frame on its way to a connection's writer, with the
/// admission it releases once written. The frame may carry plaintext: it is
/// zeroized on drop.
pub struct Outgoing {
    /// Length-prefixed response frame.
    pub frame: Vec<u8>,
    /// Released when the writer drops this after writing.
    pub permit: Option<Admission>,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        // memset behind an optimization barrier: the `zeroize` crate's
        // volatile byte loop cost about a tenth of the I/O threads' time on
        // 4 KiB Encrypt batches (docs/perf/zeroed-buffers.md).
        kms_proto::frame::zero(&mut self.frame);
    }
}

/// Where the answer to one request goes.
pub struct Reply {
    tx: mpsc::UnboundedSender<Outgoing>,
    permit: Option<Admission>,
    /// The gate of the connection the answer goes to, when its writes wait
    /// for the records (the HTTP API): the answer is then sent at once,
    /// its record holding the gate instead of the answer.
    gate: Option<Arc<Gate>>,
    /// When the frame was admitted, for its latency (recorded as the answer
    /// is queued; none outside the daemon's dispatch).
    stamp: Option<Stamp>,
}

/// A charge smaller than the answer bound by less than this is kept whole
/// after the answer is encoded: giving back the difference costs two
/// atomic operations on shared budgets, worth it only for large bounds.
const SHRINK_MIN: usize = 16 * 1024;

impl Reply {
    /// A reply slot on a connection's write queue. The channel is unbounded
    /// but admissions bound it: each entry holds one of the connection's
    /// in-flight permits and its byte charge until it is written.
    pub fn new(tx: mpsc::UnboundedSender<Outgoing>, permit: Option<Admission>) -> Self {
        Reply {
            tx,
            permit,
            gate: None,
            stamp: None,
        }
    }

    /// A reply to a connection whose writes wait at `gate` for the records
    /// of its answers (see [`crate::audit::gate`]).
    pub fn gated(tx: mpsc::UnboundedSender<Outgoing>, gate: Arc<Gate>) -> Self {
        Reply {
            gate: Some(gate),
            ..Reply::new(tx, None)
        }
    }

    /// Takes the connection's gate, if its writes wait for records.
    pub(super) fn take_gate(&mut self) -> Option<Arc<Gate>> {
        self.gate.take()
    }

    /// Takes the latency stamp (then [`Reply::send`] records none).
    pub(super) fn take_stamp(&mut self) -> Option<Stamp> {
        self.stamp.take()
    }

    /// Whether the connection is gone: nobody will read this answer, and
    /// the work for it may be dropped.
    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues the answer. A connection that has gone away drops it. The
    /// charge is cut down to the answer's real size.
    pub fn send(mut self, frame: Vec<u8>) {
        if let Some(c) = self.permit.as_mut().and_then(|a| a.charge.as_mut()) {
            if c.bytes() > frame.len() + SHRINK_MIN {
                c.shrink_to(frame.len());
            }
        }
        // Queued now: the frame's service time ends here, whichever thread
        // answered it.
        if let (Some(stamp), Some(m)) = (self.stamp, crate::metrics::get()) {
            stamp.record(m);
        }
        let _ = self.tx.send(Outgoing {
            frame,
            permit: self.permit.take(),
        });
    }
}

impl Reply {
    /// Whether the reply already carries a byte charge.
    pub(super) fn is_charged(&self) -> bool {
        self.permit.as_ref().is_some_and(|a| a.charge.is_some())
    }

    /// The frame's admission time, if it has one yet.
    pub(super) fn stamp_mut(&mut self) -> &mut Option<Stamp> {
        &mut self.stamp
    }

    /// Adds a byte charge to the reply (released with the answer).
    pub(super) fn attach(&mut self, charge: Charge) {
        self.permit.get_or_insert_with(Admission::default).charge = Some(charge);
    }
}
