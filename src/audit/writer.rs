//! The log's state behind its lock: group commit, the chain, seals,
//! rotation, and the failure policy.
//!
//! Whoever holds the lock (a thread that answered a frame, or the
//! `kmsd-audit` thread) writes its record and everything queued meanwhile
//! (up to [`BATCH_MAX`] records a round): appends each record's chain
//! fields (its `eventID`, `sequenceNumber` and the `previousHash` of the
//! record before it), hashes the line (SHA-256), and writes them with one
//! write(2). Then the answers leave; the `kmsd-audit-sync` thread makes the
//! fdatasyncs (or the holder syncs before the answers with
//! `audit.sync_before_answer`). A write that fails is cut off (the file is
//! truncated back to its last good length, so no half record stays), and
//! the policy applies: `fail_closed` answers the held requests
//! ServiceUnavailableException and refuses new ones until a retry (every
//! [`RETRY`], by the `kmsd-audit` thread) succeeds; `buffer` answers them
//! and keeps their records in memory, up to its bound.

use super::files::{self, Tail};
use super::json;
use super::seal::SealKey;
use super::{Pending, Released, Shared};
use crate::config::{AuditConfig, AuditFailure};
use kms_proto::{ErrorKind, KmsError};
use sha2::{Digest as _, Sha256};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most records in one write.
const BATCH_MAX: usize = 4096;
/// How often a log that could not be written is tried again.
const RETRY: Duration = Duration::from_millis(150);

/// The answer that replaces a held one whose record could not be written.
pub fn unavailable_answer(request_id: u64, why: &str) -> Vec<u8> {
    let mut out = Vec::new();
    kms_proto::codec::encode_error_response(request_id, &unavailable(why), &mut out);
    out
}

/// ServiceUnavailableException: retryable, and apart from the daemon's
/// internal errors (docs/audit.md).
pub fn unavailable(why: &str) -> KmsError {
    KmsError::new(
        ErrorKind::ServiceUnavailable,
        format!("the audit log cannot be written ({why}); no request is answered without its record: retry later"),
    )
}

/// The fdatasync of request batches, off the writer's path: the writer
/// writes a batch, releases its answers and goes on with the next batch
/// while this thread syncs what has been written (several batches per
/// fdatasync when the disk is slow). With the writer waiting for each
/// fdatasync itself, batched GenerateDataKey ran at half its rate
/// (docs/perf/audit.md): answers were released promptly but the next
/// batch's write waited for the disk.
struct Syncer {
    state: Arc<(parking_lot::Mutex<SyncState>, parking_lot::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct SyncState {
    file: File,
    /// The sync thread waits for a batch (not for its interval): a new
    /// batch must wake it.
    idle: bool,
    /// Batches written, and synced, so far.
    written: u64,
    synced: u64,
    error: Option<std::io::Error>,
    stop: bool,
    /// Where the file's pages are out of the page cache up to
    /// (`drop_synced`), and how many files the log has moved on from (a
    /// mark taken before a switch is not the new file's).
    dropped: u64,
    switches: u64,
}

impl Syncer {
    fn start(file: &File, interval: Duration) -> std::io::Result<Syncer> {
        let state = Arc::new((
            parking_lot::Mutex::new(SyncState {
                idle: false,
                file: file.try_clone()?,
                written: 0,
                synced: 0,
                error: None,
                stop: false,
                dropped: 0,
                switches: 0,
            }),
            parking_lot::Condvar::new(),
        ));
        let s = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("kmsd-audit-sync".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut g = lock.lock();
                let mut last = Instant::now();
                loop {
                    while g.written == g.synced && !g.stop {
                        g.idle = true;
                        cv.wait(&mut g);
                        g.idle = false;
                    }
                    if g.written == g.synced && g.stop {
                        return;
                    }
                    // At most one fdatasync per interval: the batches
                    // written meanwhile share it (each fdatasync costs the
                    // kernel a journal commit; one per batch took ~4% of
                    // batched GenerateDataKey's CPU, docs/perf/audit.md).
                    let next = last + interval;
                    while !g.stop && Instant::now() < next {
                        cv.wait_until(&mut g, next);
                    }
                    last = Instant::now();
                    let target = g.written;
                    let f = match g.file.try_clone() {
                        Ok(f) => f,
                        Err(e) => {
                            g.error = Some(e);
                            g.synced = target;
                            continue;
                        }
                    };
                    let (switches, dropped) = (g.switches, g.dropped);
                    drop(g);
                    // Bytes written before the sync are durable after it.
                    let end = f.metadata().map_or(0, |m| m.len());
                    let r = f.sync_data();
                    let dropped = match r {
                        Ok(()) => drop_synced(&f, dropped, end),
                        Err(_) => dropped,
                    };
                    g = lock.lock();
                    if g.switches == switches {
                        g.dropped = dropped;
                    }
                    g.synced = target;
                    if let Err(e) = r {
                        g.error = Some(e);
                    }
                }
            })?;
        Ok(Syncer {
            state,
            thread: Some(thread),
        })
    }

    /// A batch was written: sync it soon (within the interval).
    fn written(&self) {
        let mut g = self.state.0.lock();
        g.written += 1;
        if g.idle {
            self.state.1.notify_one();
        }
    }

    /// An fdatasync that failed since the last call.
    fn take_error(&self) -> Option<std::io::Error> {
        self.state.0.lock().error.take()
    }

    /// Syncs the rest of the old file and follows `file` from now on.
    fn switch(&self, file: &File) -> std::io::Result<()> {
        let mut g = self.state.0.lock();
        g.file.sync_data()?;
        let _ = rustix::fs::fadvise(&g.file, 0, None, rustix::fs::Advice::DontNeed);
        g.file = file.try_clone()?;
        g.switches += 1;
        g.dropped = 0;
        Ok(())
    }
}

/// Large folios are at most this big and aligned to their size: a
/// boundary aligned to it never cuts the folio being appended to.
const FOLIO_MOST: u64 = 2 << 20;

/// Takes the log's synced pages out of the page cache, whole 2 MiB
/// stretches from `dropped` up to `end` (synced); returns the new mark.
/// Written once and not read back, they are of no use there, and the pages
/// they free become the next appends' pages, just used. A log that only
/// grows otherwise takes pages nobody touched lately, and ext4's zeroing
/// of each new block's tail in them cost 13% of an HTTP run's CPU
/// (docs/perf/audit.md). PostgreSQL drops its WAL's pages the same way.
/// The folio being appended to stays: dropping it would make the next
/// append read it back from the disk.
fn drop_synced(f: &File, dropped: u64, end: u64) -> u64 {
    match droppable(dropped, end) {
        Some((from, len)) => {
            // Advice only: a failure leaves the pages cached, nothing else.
            let _ = rustix::fs::fadvise(f, from, Some(len), rustix::fs::Advice::DontNeed);
            from + len.get()
        }
        None => dropped,
    }
}

/// The stretch `drop_synced` drops: from `dropped` to the last 2 MiB
/// boundary at or before `end`, if that is further.
fn droppable(dropped: u64, end: u64) -> Option<(u64, std::num::NonZeroU64)> {
    let to = end & !(FOLIO_MOST - 1);
    std::num::NonZeroU64::new(to.saturating_sub(dropped)).map(|len| (dropped, len))
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.state.0.lock().stop = true;
        self.state.1.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why the log is not being written, since when.
struct Outage {
    since: SystemTime,
    error: String,
    /// The last write tried (the next retry is [`RETRY`] after it).
    tried: Instant,
}

pub(super) struct Writer {
    dir: PathBuf,
    file: File,
    index: u64,
    /// Bytes of the current file known written (a failed write is
    /// truncated back to it).
    len: u64,
    seq: u64,
    hash: [u8; 32],
    max_file_bytes: u64,
    seal_interval: Duration,
    seal_records: u64,
    policy: AuditFailure,
    buffer_records: usize,
    shared: Arc<Shared>,
    key: Arc<SealKey>,
    /// The first half of every eventID (random per start); the second is
    /// the sequence number.
    id_prefix: [u8; 8],
    since_seal: u64,
    last_seal: Instant,
    buf: Vec<u8>,
    outage: Option<Outage>,
    /// `buffer` mode: records waiting for the log to come back.
    held: VecDeque<Vec<u8>>,
    /// `buffer` mode: records dropped past the bound since the outage.
    dropped: u64,
    /// `fail_closed`: requests answered unrecorded-and-refused since the
    /// outage (their records could not be written).
    refused: u64,
    /// Syncs request batches (`None` with `sync_before_answer`: the
    /// writer syncs before it answers).
    syncer: Option<Syncer>,
    /// Records of one round (kept for its capacity).
    batch: Vec<Pending>,
    /// Shut down: nothing more is written.
    closed: bool,
    records_total: metrics::Counter,
    batches_total: metrics::Counter,
    lag: metrics::Gauge,
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Writer {
    /// Opens the last file and writes start-up's records: a recovery
    /// record after a torn one, then a seal.
    pub(super) fn start(
        config: &AuditConfig,
        dir: PathBuf,
        tail: Tail,
        shared: Arc<Shared>,
        key: Arc<SealKey>,
    ) -> anyhow::Result<Writer> {
        let path = dir.join(files::name(tail.index));
        let mut file = open_append(&path)
            .map_err(|e| anyhow::anyhow!("opening audit file {}: {e}", path.display()))?;
        if tail.needs_newline {
            file.write_all(b"\n")?;
        }
        let len = file.metadata()?.len();
        let mut w = Writer {
            dir,
            file,
            index: tail.index,
            len,
            seq: tail.seq,
            hash: tail.hash,
            max_file_bytes: config.max_file_bytes,
            seal_interval: Duration::from_millis(config.seal_interval_ms),
            seal_records: config.seal_records,
            policy: config.on_failure,
            buffer_records: config.buffer_records,
            shared,
            key,
            id_prefix: rand::random(),
            since_seal: 0,
            last_seal: Instant::now(),
            buf: Vec::with_capacity(1 << 20),
            outage: None,
            held: VecDeque::new(),
            dropped: 0,
            refused: 0,
            syncer: None,
            batch: Vec::new(),
            closed: false,
            records_total: metrics::counter!("kmsd_audit_records_total"),
            batches_total: metrics::counter!("kmsd_audit_batches_total"),
            lag: metrics::gauge!("kmsd_audit_lag_seconds"),
        };
        if !config.sync_before_answer {
            w.syncer = Some(Syncer::start(
                &w.file,
                Duration::from_millis(config.sync_interval_ms),
            )?);
        }
        if let Some(t) = &tail.torn {
            tracing::warn!(
                file = %t.file,
                offset = t.offset,
                length = t.length,
                "the audit log ends with a torn record (a crash mid-write): kept, and named by a recovery record"
            );
            let mut r = w.event("AuditLogRecovered");
            r.extend_from_slice(b",\"additionalEventData\":{\"tornRecord\":{\"file\":");
            json::string(&mut r, &t.file);
            json::field_u64(&mut r, "offset", t.offset);
            json::field_u64(&mut r, "length", t.length);
            r.extend_from_slice(b",\"sha256\":\"");
            json::hex(&mut r, &t.sha256);
            r.extend_from_slice(b"\"}}");
            w.write_records(&[&r])
                .map_err(|e| anyhow::anyhow!("writing the audit recovery record: {e}"))?;
        }
        w.seal("start")
            .map_err(|e| anyhow::anyhow!("sealing the audit log at start: {e}"))?;
        Ok(w)
    }

    /// The head of a record kmsd writes of itself (no request).
    fn event(&self, name: &str) -> Vec<u8> {
        let mut r = Vec::with_capacity(256);
        r.extend_from_slice(b"{\"eventVersion\":\"1.08\",\"eventTime\":");
        json::time(&mut r, SystemTime::now());
        r.extend_from_slice(b",\"eventSource\":\"kmsd\",\"eventType\":\"kmsdAuditEvent\"");
        json::field_str(&mut r, "eventName", name);
        r.extend_from_slice(b",\"readOnly\":true");
        r
    }

    /// Appends `record` closed with its chain fields and a newline to
    /// `buf`; advances the chain (the caller rolls it back on failure).
    /// `hashed`: SHA-256 already run over `record` (`Pending::hashed`).
    fn chain(&mut self, record: &[u8], mut hashed: Sha256) {
        let start = self.buf.len();
        self.buf.extend_from_slice(record);
        let seq = self.seq + 1;
        self.buf.extend_from_slice(b",\"eventID\":\"");
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.id_prefix);
        id[8..].copy_from_slice(&seq.to_be_bytes());
        let mut text = [0u8; 36];
        self.buf.extend_from_slice(
            uuid::Uuid::from_bytes(id)
                .hyphenated()
                .encode_lower(&mut text)
                .as_bytes(),
        );
        self.buf.extend_from_slice(b"\",\"sequenceNumber\":");
        json::uint(&mut self.buf, seq);
        self.buf.extend_from_slice(b",\"previousHash\":\"");
        json::hex(&mut self.buf, &self.hash);
        self.buf.extend_from_slice(b"\"}");
        // The line's hash, as `files::line_hash` computes it.
        hashed.update(&self.buf[start + record.len()..]);
        self.hash = hashed.finalize().into();
        self.seq = seq;
        self.buf.push(b'\n');
    }

    /// Writes `buf` at the end of the file with one write(2) (looping only
    /// on a short write); on failure the file is cut back to its last good
    /// length and the chain rolled back to (`seq`, `hash`).
    fn flush(&mut self, seq: u64, hash: [u8; 32]) -> std::io::Result<()> {
        let r = self.file.write_all(&self.buf);
        match r {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                *self.shared.head.lock() = (self.seq, self.hash);
                Ok(())
            }
            Err(e) => {
                // No half record stays: the next writer (or verify) would
                // see a torn line in the middle of the log.
                let _ = self.file.set_len(self.len);
                self.seq = seq;
                self.hash = hash;
                Err(e)
            }
        }
    }

    /// Writes kmsd's own records (not requests) and syncs.
    fn write_records(&mut self, records: &[&[u8]]) -> std::io::Result<()> {
        self.write_own(records)?;
        self.file.sync_data()
    }

    /// Writes kmsd's own records; the sync thread makes them durable with
    /// the requests' (without one, this syncs).
    fn write_own(&mut self, records: &[&[u8]]) -> std::io::Result<()> {
        let (seq, hash) = (self.seq, self.hash);
        self.buf.clear();
        for r in records {
            self.chain(r, Sha256::new_with_prefix(r));
        }
        self.flush(seq, hash)?;
        self.since_seal += records.len() as u64;
        match &self.syncer {
            Some(s) => {
                s.written();
                Ok(())
            }
            None => self.file.sync_data(),
        }
    }

    /// A seal: the MAC of (its own sequence number, the hash before it).
    /// Synced at once at start, rotation and shutdown; an interval's seal
    /// is synced by the sync thread like the requests' records (an
    /// fdatasync here would hold every answer waiting for the writer: with
    /// a flood's records, about three seals a second, it tripled another
    /// caller's p99; docs/perf/fairness.md).
    fn seal(&mut self, reason: &str) -> std::io::Result<()> {
        let mac = self.key.seal(self.seq + 1, &self.hash);
        let mut r = self.event("AuditSeal");
        r.extend_from_slice(b",\"additionalEventData\":{\"seal\":\"");
        json::hex(&mut r, &mac);
        r.extend_from_slice(b"\"");
        json::field_str(&mut r, "reason", reason);
        r.push(b'}');
        if reason == "interval" {
            self.write_own(&[&r])?;
        } else {
            self.write_records(&[&r])?;
        }
        self.since_seal = 0;
        self.last_seal = Instant::now();
        Ok(())
    }

    /// Writes `first` and the queued records (rounds of up to
    /// [`BATCH_MAX`] until the queue is empty), putting their answers in
    /// `released`; seals when enough records are unsealed. True when the
    /// `kmsd-audit` thread must be woken: the first record since the last
    /// seal (the interval's seal is now due at a time), a write that
    /// failed (retries), or a file due for rotation (its fdatasyncs are
    /// not for a data-path thread).
    pub(super) fn commit_queued(
        &mut self,
        first: impl IntoIterator<Item = Pending>,
        queue: &crossbeam_channel::Receiver<Pending>,
        released: &mut Released,
    ) -> bool {
        let sealed = self.since_seal == 0;
        let mut batch = std::mem::take(&mut self.batch);
        batch.extend(first);
        loop {
            while batch.len() < BATCH_MAX {
                match queue.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.commit(&mut batch, released);
        }
        self.batch = batch;
        if self.outage.is_none()
            && self.since_seal >= self.seal_records
            && !self.closed
        {
            if let Err(e) = self.seal("interval") {
                self.fail(e);
            }
        }
        !self.closed
            && ((sealed && self.since_seal > 0)
                || self.outage.is_some()
                || self.len >= self.max_file_bytes)
    }

    /// How long the `kmsd-audit` thread may sleep: until the next seal or
    /// retry is due.
    pub(super) fn next_wait(&self) -> Duration {
        if let Some(o) = &self.outage {
            RETRY.saturating_sub(o.tried.elapsed())
        } else if self.since_seal > 0 {
            self.seal_interval.saturating_sub(self.last_seal.elapsed())
        } else {
            Duration::from_secs(3600)
        }
    }

    /// The `kmsd-audit` thread's round: a retry of a failed log, a seal
    /// when one is due, rotation of a full file.
    pub(super) fn housekeep(&mut self) {
        if self.closed {
            return;
        }
        if self.outage.as_ref().is_some_and(|o| o.tried.elapsed() >= RETRY) {
            self.retry();
        }
        if self.outage.is_none()
            && self.since_seal > 0
            && (self.since_seal >= self.seal_records
                || self.last_seal.elapsed() >= self.seal_interval)
        {
            if let Err(e) = self.seal("interval") {
                self.fail(e);
            }
        }
        if self.outage.is_none() && self.len >= self.max_file_bytes {
            self.rotate();
        }
    }

    /// Shutdown, after the queued records: a log whose last record is a
    /// seal needs no other; nothing is written after this.
    pub(super) fn close(&mut self) {
        if self.closed {
            return;
        }
        if self.outage.is_none() && self.since_seal > 0 {
            if let Err(e) = self.seal("shutdown") {
                tracing::error!(error = %e, "the audit log could not be sealed at shutdown");
            }
        }
        self.syncer = None;
        self.closed = true;
    }

    /// Writes a batch of request records; their answers go to `released`.
    fn commit(&mut self, batch: &mut Vec<Pending>, released: &mut Released) {
        let n = batch.len() as u64;
        if self.closed {
            for p in batch.drain(..) {
                released.extend(p.answer.and_then(|h| h.refused(p.request_id, "the audit log is closed")));
            }
            return;
        }
        if let Some(oldest) = batch.iter().map(|p| p.at).min() {
            self.lag.set(oldest.elapsed().as_secs_f64());
        }
        if self.outage.is_some() {
            // Still failing: the `kmsd-audit` thread retries.
            return self.unwritten(batch, released);
        }
        let (seq, hash) = (self.seq, self.hash);
        self.buf.clear();
        for p in batch.iter() {
            self.chain(&p.record, p.hashed.clone());
        }
        if let Err(e) = self.flush(seq, hash) {
            self.fail(e);
            return self.unwritten(batch, released);
        }
        self.records_total.increment(n);
        self.batches_total.increment(1);
        self.since_seal += n;
        if let Some(s) = &self.syncer {
            // Answers now; the sync thread makes the batch durable.
            s.written();
            release(batch, released);
            if let Some(e) = s.take_error() {
                self.fail(e);
            }
            return;
        }
        if let Err(e) = self.file.sync_data() {
            // Written but maybe not durable: the log is treated as failing.
            self.fail(e);
            return self.unwritten(batch, released);
        }
        release(batch, released);
    }

    /// A batch whose records could not be written: by the policy, error
    /// answers (`fail_closed`) or answers and records held in memory
    /// (`buffer`).
    fn unwritten(&mut self, batch: &mut Vec<Pending>, released: &mut Released) {
        match self.policy {
            AuditFailure::FailClosed => {
                let why = self.outage.as_ref().map_or("", |o| o.error.as_str()).to_owned();
                self.refused += batch.len() as u64;
                metrics::counter!("kmsd_audit_refused_total").increment(batch.len() as u64);
                for p in batch.drain(..) {
                    released.extend(p.answer.and_then(|h| h.refused(p.request_id, &why)));
                }
            }
            AuditFailure::Buffer => {
                for p in batch.drain(..) {
                    if self.held.len() < self.buffer_records {
                        self.held.push_back(p.record);
                    } else {
                        self.dropped += 1;
                        metrics::counter!("kmsd_audit_dropped_records_total").increment(1);
                    }
                    if let Some(a) = p.answer {
                        released.push(a);
                    }
                }
                metrics::gauge!("kmsd_audit_buffered_records").set(self.held.len() as f64);
            }
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        metrics::counter!("kmsd_audit_write_failures_total").increment(1);
        if self.outage.is_none() {
            tracing::error!(
                error = %e,
                policy = ?self.policy,
                "the audit log cannot be written; retrying every {} ms",
                RETRY.as_millis()
            );
            self.outage = Some(Outage {
                since: SystemTime::now(),
                error: e.to_string(),
                tried: Instant::now(),
            });
            if self.policy == AuditFailure::FailClosed {
                self.shared.writable.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Tries the log again: writes the outage's record (and, in `buffer`
    /// mode, the records held meanwhile); on success the log is writable
    /// again.
    fn retry(&mut self) {
        let Some(o) = &self.outage else { return };
        let mut r = self.event(match self.policy {
            AuditFailure::FailClosed => "AuditLogUnavailable",
            AuditFailure::Buffer => "AuditRecordsDropped",
        });
        r.extend_from_slice(b",\"additionalEventData\":{\"since\":");
        json::time(&mut r, o.since);
        json::field_str(&mut r, "error", &o.error);
        json::field_u64(&mut r, "refusedRequests", self.refused);
        json::field_u64(&mut r, "droppedRecords", self.dropped);
        r.push(b'}');
        let held: Vec<Vec<u8>> = self.held.iter().cloned().collect();
        let mut all: Vec<&[u8]> = vec![&r];
        all.extend(held.iter().map(Vec::as_slice));
        // The file may be gone or replaced: reopen it.
        if let Ok(f) = open_append(&self.dir.join(files::name(self.index))) {
            if let Ok(m) = f.metadata() {
                if let Some(s) = &self.syncer {
                    let _ = s.switch(&f);
                }
                self.len = m.len();
                self.file = f;
            }
        }
        match self.write_records(&all) {
            Ok(()) => {
                tracing::info!(
                    refused = self.refused,
                    dropped = self.dropped,
                    written_from_memory = self.held.len(),
                    "the audit log is writable again"
                );
                self.outage = None;
                self.held.clear();
                self.dropped = 0;
                self.refused = 0;
                metrics::gauge!("kmsd_audit_buffered_records").set(0.0);
                self.shared.writable.store(true, Ordering::Relaxed);
            }
            Err(_) => {
                metrics::counter!("kmsd_audit_write_failures_total").increment(1);
                if let Some(o) = &mut self.outage {
                    o.tried = Instant::now();
                }
            }
        }
    }

    /// Seals the full file and starts the next one: its first record
    /// carries the hash of this file's last (the seal).
    fn rotate(&mut self) {
        if let Err(e) = self.seal("rotation") {
            return self.fail(e);
        }
        let next = self.index + 1;
        match open_append(&self.dir.join(files::name(next))) {
            Ok(f) => {
                if let Some(s) = &self.syncer {
                    if let Err(e) = s.switch(&f) {
                        return self.fail(e);
                    }
                }
                self.file = f;
                self.index = next;
                self.len = 0;
                // The new file's name must survive a crash.
                if let Ok(d) = File::open(&self.dir) {
                    let _ = d.sync_all();
                }
            }
            Err(e) => self.fail(e),
        }
    }
}

fn release(batch: &mut Vec<Pending>, released: &mut Released) {
    for p in batch.drain(..) {
        super::record::recycle(p.record);
        released.extend(p.answer);
    }
}

#[cfg(test)]
mod tests {
    use super::{droppable, FOLIO_MOST};

    /// The page cache is dropped in whole 2 MiB stretches behind the
    /// write head, each once: the folio being appended to (at `end`) is
    /// never in the stretch, and a synced end short of the next boundary
    /// drops nothing.
    #[test]
    fn synced_pages_are_dropped_in_whole_stretches_behind_the_end() {
        let mb2 = FOLIO_MOST;
        assert_eq!(droppable(0, 0), None);
        assert_eq!(droppable(0, mb2 - 1), None);
        let (from, len) = droppable(0, mb2 + 4096).unwrap();
        assert_eq!((from, len.get()), (0, mb2));
        assert_eq!(droppable(mb2, mb2 + 4096), None);
        let (from, len) = droppable(mb2, 5 * mb2 + 17).unwrap();
        assert_eq!((from, len.get()), (mb2, 4 * mb2));
        for end in [1, 4095, mb2, 3 * mb2 + 1, 7 * mb2 - 1] {
            if let Some((from, len)) = droppable(0, end) {
                assert!(from + len.get() <= end);
                assert_eq!((from + len.get()) % mb2, 0);
            }
        }
    }
}
