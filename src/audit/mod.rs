//! The audit log: one record per request frame, refused, throttled and
//! failed ones included, written before the frame's answer is released
//! ("no record, no answer"). docs/audit.md has the format and the rules.
//!
//! - `record`: the record of a frame, built on the data path by hand
//!   (`json`), with what the service noted while it ran (`note`).
//! - `writer`: one thread; group commit: it drains what is queued, chains
//!   and hashes each record, writes the batch with one write(2), releases
//!   the held answers, then one fdatasync; seals, rotation, the failure
//!   policy.
//! - `files`: names and start-up's look at the end of the log (a torn
//!   record after a crash).
//! - `seal`: the seal key (wrapped by the root of trust) and the MACs.

pub(crate) mod files;
pub(crate) mod json;
pub mod note;
pub mod record;
pub mod seal;
mod writer;

use crate::config::{AuditConfig, AuditFailure};
use crate::dispatch::Reply;
use parking_lot::Mutex;
use seal::SealKey;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use writer::unavailable;

/// One frame's record on its way to the writer, with the answer it holds
/// back until the record is written.
pub struct Pending {
    /// The record without its closing brace (see `record`).
    pub record: Vec<u8>,
    /// The held answer and where it goes; `None` for a record with no
    /// answer (a framing error that closes its connection).
    pub answer: Option<(Reply, Vec<u8>)>,
    /// The frame's request id, for the error answer that replaces a held
    /// answer whose record could not be written.
    pub request_id: u64,
    /// When it was handed over (the writer's lag).
    pub at: Instant,
}

/// What the writer and the data path share.
pub(crate) struct Shared {
    /// False while the log cannot be written under `fail_closed`: new
    /// frames are refused unrun.
    writable: AtomicBool,
    /// The chain's head as last written: (sequence number, hash).
    head: Mutex<(u64, [u8; 32])>,
}

enum Entry {
    Record(Pending),
    /// Seal, sync and stop (clean shutdown).
    Stop,
}

/// The audit log of a running daemon.
pub struct AuditLog {
    tx: crossbeam_channel::Sender<Entry>,
    shared: Arc<Shared>,
    key: Arc<SealKey>,
    fail_closed: bool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens the log in `config`'s directory (made 0700 if missing),
    /// recovers its end (a torn last record is kept and named by a
    /// recovery record), seals, and starts the writer thread.
    pub fn open(
        config: &AuditConfig,
        data_dir: &std::path::Path,
        key: SealKey,
    ) -> anyhow::Result<Arc<AuditLog>> {
        let dir = config.dir(data_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow::anyhow!("creating the audit directory {}: {e}", dir.display()))?;
        let key = Arc::new(key);
        let tail = files::tail(&dir)?;
        let shared = Arc::new(Shared {
            writable: AtomicBool::new(true),
            head: Mutex::new((tail.seq, tail.hash)),
        });
        let (tx, rx) = crossbeam_channel::bounded(config.queue_records);
        let writer = writer::Writer::start(config, dir, tail, Arc::clone(&shared), Arc::clone(&key), rx)?;
        let thread = std::thread::Builder::new()
            .name("kmsd-audit".into())
            .spawn(move || writer.run())?;
        Ok(Arc::new(AuditLog {
            tx,
            shared,
            key,
            fail_closed: config.on_failure == AuditFailure::FailClosed,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Whether new frames must be refused unrun now: the log cannot be
    /// written and the policy is `fail_closed`.
    pub fn refusing(&self) -> bool {
        self.fail_closed && !self.shared.writable.load(Ordering::Relaxed)
    }

    /// Hands a record (and its held answer) to the writer. When the
    /// writer's queue is full (the disk is slower than the requests), a
    /// thread that may block waits for room: the back-pressure of "no
    /// record, no answer". An I/O thread never waits: the record goes to a
    /// thread of the rayon pool that does (its answer waits with it; the
    /// connection's in-flight permits bound how many do).
    pub fn submit(&self, p: Pending) {
        match self.tx.try_send(Entry::Record(p)) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(e)) => {
                metrics::counter!("kmsd_audit_queue_full_total").increment(1);
                if crate::thread_role::current() == crate::thread_role::Role::Io {
                    let tx = self.tx.clone();
                    rayon::spawn(move || send_blocking(&tx, e));
                } else {
                    send_blocking(&self.tx, e);
                }
            }
            Err(crossbeam_channel::TrySendError::Disconnected(e)) => closed(e),
        }
    }

    /// The chain's head as last written: (sequence number, SHA-256 of that
    /// record's line).
    pub fn head(&self) -> (u64, [u8; 32]) {
        *self.shared.head.lock()
    }

    /// Whether `mac` is a valid seal of the chain at `seq` after `prev`.
    pub fn verify_seal(&self, seq: u64, prev: &[u8; 32], mac: &[u8; 32]) -> bool {
        self.key.verify(seq, prev, mac)
    }

    /// Writes what is queued, seals, syncs and stops the writer (clean
    /// shutdown, after the last answer).
    pub fn close(&self) {
        let _ = self.tx.send(Entry::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits for room in the writer's queue.
fn send_blocking(tx: &crossbeam_channel::Sender<Entry>, e: Entry) {
    if let Err(crossbeam_channel::SendError(e)) = tx.send(e) {
        closed(e);
    }
}

/// The writer has stopped (shutdown): the answer cannot be recorded, so
/// it is not given.
fn closed(e: Entry) {
    if let Entry::Record(p) = e {
        if let Some((reply, _)) = p.answer {
            reply.send(writer::unavailable_answer(p.request_id, "the audit log is closed"));
        }
    }
}

use std::os::unix::fs::DirBuilderExt as _;
