//! The audit log: one record per request frame, refused, throttled and
//! failed ones included, written before the frame's answer is released
//! ("no record, no answer"). docs/audit.md has the format and the rules.
//!
//! - `record`: the record of a frame, built on the data path by hand
//!   (`json`), with what the service noted while it ran (`note`).
//! - `writer`: the log's state behind one lock, taken by the thread that
//!   answered a frame (combining: a thread that finds the lock taken
//!   queues its record for the holder, which writes it with its own);
//!   chains and hashes the records, writes them with one write(2), then
//!   the answers leave. The `kmsd-audit` thread does what must not wait
//!   on the data path: rotation, seals of an idle log, retries of a
//!   failed one, and the writes of queued records nobody else picked up.
//! - `files`: names and start-up's look at the end of the log (a torn
//!   record after a crash).
//! - `seal`: the seal key (wrapped by the root of trust) and the MACs.

pub(crate) mod files;
pub mod gate;
pub(crate) mod json;
pub mod note;
pub mod record;
pub mod seal;
mod local;
mod writer;

use crate::config::{AuditConfig, AuditFailure};
use crate::dispatch::Reply;
use crate::thread_role::{self, Role};
use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};
use seal::SealKey;
use sha2::{Digest as _, Sha256};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub use local::io_thread;
pub use writer::unavailable;

/// One frame's record on its way to the log, with the answer it holds
/// back until the record is written.
pub struct Pending {
    /// The record without its closing brace (see `record`).
    pub record: Vec<u8>,
    /// The held answer and where it goes, or the gate of the connection
    /// it already went to; `None` for a record with no answer (a framing
    /// error that closes its connection).
    pub answer: Option<Held>,
    /// The frame's request id, for the error answer that replaces a held
    /// answer whose record could not be written.
    pub request_id: u64,
    /// When it was handed over (the log's lag).
    pub at: Instant,
    /// SHA-256 over the record's whole 64-byte blocks, run by the thread
    /// that hands it over, outside the log's lock: the holder hashes only
    /// the last partial block and the chain fields (hashing whole records
    /// under the lock was about a third of its hold, and the HTTP API's
    /// two I/O threads spin for it; docs/perf/audit.md).
    hashed: Sha256,
}

impl Pending {
    /// A record handed over now, holding back `answer`.
    pub fn new(record: Vec<u8>, answer: Option<Held>, request_id: u64) -> Pending {
        Pending {
            hashed: Sha256::new_with_prefix(&record),
            record,
            answer,
            request_id,
            at: Instant::now(),
        }
    }
}

/// What a record holds back until it is written.
pub enum Held {
    /// An answer, sent once the record is written (or replaced by the
    /// refusal when it cannot be).
    Answer(Reply, Vec<u8>),
    /// An answer already given to a connection whose writes wait for the
    /// record (the HTTP API: see [`gate`]).
    Gated(gate::Ticket),
}

impl Held {
    /// Lets the answer go: its record is written.
    fn release(self) {
        match self {
            Held::Answer(reply, answer) => reply.send(answer),
            Held::Gated(t) => t.written(),
        }
    }

    /// What goes instead when the record cannot be written: the refusal,
    /// or for a gated connection its closing.
    fn refused(self, request_id: u64, why: &str) -> Option<Held> {
        match self {
            Held::Answer(reply, _) => Some(Held::Answer(reply, writer::unavailable_answer(request_id, why))),
            Held::Gated(t) => {
                t.failed();
                None
            }
        }
    }
}

/// What the writer and the data path share.
pub(crate) struct Shared {
    /// False while the log cannot be written under `fail_closed`: new
    /// frames are refused unrun. Read for every frame: on a cache line of
    /// its own, not `head`'s, which every write changes.
    writable: CachePadded<AtomicBool>,
    /// The chain's head as last written: (sequence number, hash).
    head: Mutex<(u64, [u8; 32])>,
}

/// The longest an I/O thread spins for the log's lock before it queues
/// its records for the holder.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// Answers released by a commit, sent after the log's lock is let go.
type Released = Vec<Held>;

/// The log's state and its queue.
struct Core {
    writer: Mutex<writer::Writer>,
    /// Records of threads that found the lock taken (bounded:
    /// `audit.queue_records`); whoever holds the lock next writes them.
    tx: crossbeam_channel::Sender<Pending>,
    rx: crossbeam_channel::Receiver<Pending>,
    shared: Arc<Shared>,
    /// Whether I/O threads write records themselves (not with
    /// `sync_before_answer`: they never wait for an fdatasync).
    io_writes: bool,
    stop: AtomicBool,
    /// The `kmsd-audit` thread, woken for rotation and for queued records
    /// no data-path thread may write.
    housekeeper: OnceLock<std::thread::Thread>,
}

/// The audit log of a running daemon.
pub struct AuditLog {
    core: Arc<Core>,
    key: Arc<SealKey>,
    fail_closed: bool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens the log in `config`'s directory (made 0700 if missing),
    /// recovers its end (a torn last record is kept and named by a
    /// recovery record), seals, and starts the `kmsd-audit` thread.
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
            writable: CachePadded::new(AtomicBool::new(true)),
            head: Mutex::new((tail.seq, tail.hash)),
        });
        let (tx, rx) = crossbeam_channel::bounded(config.queue_records);
        let writer = writer::Writer::start(config, dir, tail, Arc::clone(&shared), Arc::clone(&key))?;
        let core = Arc::new(Core {
            writer: Mutex::new(writer),
            tx,
            rx,
            shared,
            io_writes: !config.sync_before_answer,
            stop: AtomicBool::new(false),
            housekeeper: OnceLock::new(),
        });
        let c = Arc::clone(&core);
        let thread = std::thread::Builder::new()
            .name("kmsd-audit".into())
            .spawn(move || c.housekeep())?;
        let _ = core.housekeeper.set(thread.thread().clone());
        Ok(Arc::new(AuditLog {
            core,
            key,
            fail_closed: config.on_failure == AuditFailure::FailClosed,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Whether new frames must be refused unrun now: the log cannot be
    /// written and the policy is `fail_closed`.
    pub fn refusing(&self) -> bool {
        self.fail_closed && !self.core.shared.writable.load(Ordering::Relaxed)
    }

    /// Writes a record, then releases its held answer. The calling thread
    /// writes it itself when the log's lock is free (no hand-off to
    /// another thread, no wake-up: handing each record to a writer thread
    /// cost about a tenth of batched GenerateDataKey's throughput and half
    /// of single GenerateDataKey's, docs/perf/audit.md); an I/O thread
    /// gathers its records and writes them once per turn of its event loop
    /// (`local`). When the lock is taken, the record is queued and the
    /// holder writes it before letting go. A full queue (the disk
    /// is slower than the requests) makes a thread that may block wait
    /// for the lock; an I/O thread never waits: its record goes to a rayon
    /// thread that does (its answer waits with it; the connection's
    /// in-flight permits bound how many do).
    pub fn submit(&self, p: Pending) {
        self.core.submit(p);
    }

    /// The chain's head as last written: (sequence number, SHA-256 of that
    /// record's line).
    pub fn head(&self) -> (u64, [u8; 32]) {
        *self.core.shared.head.lock()
    }

    /// Whether `mac` is a valid seal of the chain at `seq` after `prev`.
    pub fn verify_seal(&self, seq: u64, prev: &[u8; 32], mac: &[u8; 32]) -> bool {
        self.key.verify(seq, prev, mac)
    }

    /// Writes what is queued, seals, syncs and stops (clean shutdown,
    /// after the last answer). Records submitted later are answered
    /// ServiceUnavailableException, unwritten.
    pub fn close(&self) {
        self.core.stop.store(true, Ordering::SeqCst);
        self.core.wake();
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

impl Core {
    fn submit(self: &Arc<Core>, p: Pending) {
        if self.stop.load(Ordering::Relaxed) {
            // Shutting down: the writer answers it ServiceUnavailable.
            return self.combine(self.writer.lock(), Some(p));
        }
        let io = thread_role::current() == Role::Io;
        if io && self.io_writes {
            if let Some(p) = local::defer(self, p) {
                self.submit_all(Some(p), io);
            }
        } else {
            self.submit_all(Some(p), io);
        }
    }

    /// Writes `records` now if the lock is free (else queues them for its
    /// holder). `io`: the caller is an I/O thread (never waits for the
    /// lock).
    fn submit_all(self: &Arc<Core>, records: impl IntoIterator<Item = Pending>, io: bool) {
        let may_write = !io || self.io_writes;
        if may_write {
            // Only an I/O thread spins: a queued record's answer is sent by
            // the holder, which for an I/O thread's own answer means waking
            // that thread; a worker's answers go to an I/O thread either
            // way, so it loses nothing by queueing at once.
            let free = if io {
                self.try_lock_briefly()
            } else {
                self.writer.try_lock()
            };
            if let Some(w) = free {
                return self.combine(w, records);
            }
        }
        for p in records {
            match self.tx.try_send(p) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(p)) => {
                    metrics::counter!("kmsd_audit_queue_full_total").increment(1);
                    if io {
                        let c = Arc::clone(self);
                        rayon::spawn(move || c.combine(c.writer.lock(), Some(p)));
                    } else {
                        self.combine(self.writer.lock(), Some(p));
                    }
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    unreachable!("the log holds its queue's receiver")
                }
            }
        }
        if !may_write {
            return self.wake();
        }
        // The holder checks the queue after letting go of the lock, and we
        // try the lock after queueing: one of the two sees the other (the
        // fences order each side's write before its read), so no record is
        // left in the queue with nobody to write it.
        fence(Ordering::SeqCst);
        if let Some(w) = self.writer.try_lock() {
            self.combine(w, None);
        }
    }

    /// The lock, if it is free now or within [`SPIN`] of spinning (I/O
    /// threads). A holder keeps it for one write(2) into the page cache
    /// (microseconds), so waiting that long is cheaper than queueing: a
    /// queued record's answer is sent by the holder, a wake-up of this
    /// thread from another (with the HTTP API's frequent small writes,
    /// those wake-ups cost more than the writes: docs/perf/audit.md). A
    /// holder that is slower (a disk that holds back writes) gets the
    /// records queued.
    fn try_lock_briefly(&self) -> Option<MutexGuard<'_, writer::Writer>> {
        if let Some(w) = self.writer.try_lock() {
            return Some(w);
        }
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if let Some(w) = self.writer.try_lock() {
                return Some(w);
            }
            if start.elapsed() >= SPIN {
                return None;
            }
        }
    }

    /// With the lock held: writes `first` and everything queued, lets go of
    /// the lock, then sends the answers; again while records are queued
    /// and the lock is free.
    fn combine<'a>(
        &'a self,
        mut w: MutexGuard<'a, writer::Writer>,
        first: impl IntoIterator<Item = Pending>,
    ) {
        let mut first = Some(first);
        loop {
            let mut released = Released::new();
            let wake = w.commit_queued(first.take().into_iter().flatten(), &self.rx, &mut released);
            drop(w);
            if wake {
                self.wake();
            }
            for h in released {
                h.release();
            }
            match self.queued_and_free() {
                Some(g) => w = g,
                None => return,
            }
        }
    }

    /// After letting go of the lock: records queued meanwhile by threads
    /// that found it taken are written now, unless another thread holds
    /// it again (that one writes them). Every holder does this.
    fn pick_up(&self) {
        if let Some(w) = self.queued_and_free() {
            self.combine(w, None);
        }
    }

    /// The lock, if records are queued and it is free.
    fn queued_and_free(&self) -> Option<MutexGuard<'_, writer::Writer>> {
        fence(Ordering::SeqCst);
        if self.rx.is_empty() {
            return None;
        }
        self.writer.try_lock()
    }

    fn wake(&self) {
        if let Some(t) = self.housekeeper.get() {
            t.unpark();
        }
    }

    /// The `kmsd-audit` thread: sleeps until a seal, a retry or a rotation
    /// is due (or it is woken), then does it with the lock held.
    fn housekeep(&self) {
        loop {
            let wait = self.writer.lock().next_wait();
            // Every holder picks up what was queued while it held the lock.
            self.pick_up();
            std::thread::park_timeout(wait);
            let stop = self.stop.load(Ordering::SeqCst);
            let mut released = Released::new();
            {
                let mut w = self.writer.lock();
                w.commit_queued([], &self.rx, &mut released);
                w.housekeep();
                if stop {
                    w.commit_queued([], &self.rx, &mut released);
                    w.close();
                }
            }
            for h in released {
                h.release();
            }
            // Records queued while this thread held the lock.
            self.pick_up();
            if stop {
                return;
            }
        }
    }
}

use std::os::unix::fs::DirBuilderExt as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Outgoing;
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn pending(id: u64, tx: &mpsc::UnboundedSender<Outgoing>) -> Pending {
        let record = format!("{{\"eventName\":\"Test\",\"requestID\":\"{id}\"").into_bytes();
        Pending::new(record, Some(Held::Answer(Reply::new(tx.clone(), None), id.to_le_bytes().to_vec())), id)
    }

    /// Records from every kind of thread at once (threads that may block,
    /// I/O threads with a flusher and without one), with the lock
    /// contended: every answer leaves promptly (a record left in the queue
    /// with no holder to write it would wait for the hour-long seal
    /// interval), and every record is in the chain exactly once, across
    /// the many rotations of small files (the `kmsd-audit` thread takes the
    /// lock for each).
    fn every_record_is_written_and_answered(sync_before_answer: bool) {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            seal_interval_ms: 3_600_000,
            seal_records: 1_000_000,
            max_file_bytes: 16 * 1024,
            queue_records: 64,
            sync_before_answer,
            ..AuditConfig::default()
        };
        let log = AuditLog::open(&config, dir.path(), SealKey::from_bytes([3; 32])).unwrap();
        const PER_THREAD: u64 = 2_000;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut threads = Vec::new();
        for t in 0..6u64 {
            let (log, tx) = (Arc::clone(&log), tx.clone());
            threads.push(std::thread::spawn(move || {
                let ids = (t * PER_THREAD)..((t + 1) * PER_THREAD);
                match t % 3 {
                    0 => ids.for_each(|i| log.submit(pending(i, &tx))),
                    1 => {
                        thread_role::enter_io();
                        ids.for_each(|i| log.submit(pending(i, &tx)));
                    }
                    _ => {
                        thread_role::enter_io();
                        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                        rt.block_on(io_thread(async {
                            for i in ids {
                                log.submit(pending(i, &tx));
                                if i % 7 == 0 {
                                    tokio::task::yield_now().await;
                                }
                            }
                        }));
                    }
                }
            }));
        }
        drop(tx);
        for t in threads {
            t.join().unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let mut answered = std::collections::HashSet::new();
        rt.block_on(async {
            for _ in 0..6 * PER_THREAD {
                let o = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                    .await
                    .expect("an answer held back")
                    .expect("an answer dropped");
                answered.insert(u64::from_le_bytes(o.frame[..8].try_into().unwrap()));
            }
        });
        assert_eq!(answered.len() as u64, 6 * PER_THREAD);
        log.close();
        let mut seen = std::collections::HashSet::new();
        let mut prev = [0u8; 32];
        let mut seq = 0;
        for (_, path) in files::list(&config.dir(dir.path())).unwrap() {
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                seq += 1;
                assert_eq!(v["sequenceNumber"], seq);
                assert_eq!(v["previousHash"].as_str().unwrap(), hex::encode(prev));
                prev = files::line_hash(line.as_bytes());
                if v["eventName"] == "Test" {
                    assert!(seen.insert(v["requestID"].as_str().unwrap().to_owned()), "{line}");
                }
            }
        }
        assert_eq!(seen.len() as u64, 6 * PER_THREAD);
    }

    #[test]
    fn every_record_is_written_once_and_answered_promptly_from_every_kind_of_thread() {
        every_record_is_written_and_answered(false);
    }

    #[test]
    fn the_same_with_sync_before_answer() {
        every_record_is_written_and_answered(true);
    }
}
