//! The key loader: the only place cache misses are served. It owns the
//! threads that read wrapped backing keys from the store and unwrap them
//! through the root of trust (for an HSM, the threads that own the PKCS#11
//! sessions), so a miss never blocks an I/O thread.
//!
//! - **Single flight**: concurrent misses for one key wait on one unwrap
//!   (`pending` holds the waiters by key id; only the first enqueues it).
//! - **Batches**: the store stage (`kmsd-loader-store`) takes up to
//!   `batch_max` queued keys at once and reads their records in one read
//!   transaction; a loader thread then unwraps them one after another on
//!   its session. The two stages overlap, so the threads that own the
//!   sessions spend their time in the HSM (reading records on them took
//!   ~10% of their time; see ARCHITECTURE.md).
//! - **Deadlines**: every waiter has one; waiters past it are answered
//!   KeyUnavailableException (swept every 20 ms), and a key nobody waits
//!   for any more is not unwrapped.
//! - **Negative entries**: a key that failed to load is answered from a
//!   short-lived memo (100 ms), so a frame re-run after a failed prefetch,
//!   or a flood for an unknown key, does not go back to the HSM at once.
//!
//! - **HSM frames**: whole request frames that use HSM-only keys (every
//!   operation an AES-GCM call in the HSM) run here too, so every PKCS#11
//!   data-path call is made by the threads that own the sessions, back to
//!   back, instead of by workers queueing for a session. The queue of such
//!   frames is bounded (`run_frame` refuses when it is full) and has its own
//!   deadline per frame (answered KeyUnavailableException by the sweep if
//!   it has not started by then). Key batches go first: a loader thread
//!   takes a queued frame only when no key batch is waiting, so queued HSM
//!   frames never delay the loads of other keys.
//! - **Results to the frame**: a prefetch hands its caller every key's
//!   outcome ([`Prefetched`]), loaded or failed or timed out, and the frame
//!   runs with them: a key whose load failed is answered with that error
//!   at once, item by item, and never loaded again by the worker that runs
//!   the frame (a worker waiting a second `load_timeout` for a slow root
//!   froze the pool).
//!
//! With `batching = false` every miss is its own job and its own unwrap,
//! and frames run one per wake-up, which is what the batching figures in
//! ARCHITECTURE.md compare against.

use super::{internal, Core, LoadedKey};
use crate::root::RootError;
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use kms_proto::{ErrorKind, KmsError};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often waiters' deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(20);
/// How long a failed load is remembered.
const NEGATIVE_TTL: Duration = Duration::from_millis(100);

type Notify = Box<dyn FnOnce(Result<Arc<LoadedKey>, KmsError>) + Send>;
/// A prefetch's outcomes so far and its completion, called by whichever of
/// its keys finishes last.
type DoneOnce = Arc<Mutex<(Vec<KeyOutcome>, Option<Box<dyn FnOnce(Prefetched) + Send>>)>>;
/// One key's load: the key, or why it is not there.
type KeyOutcome = ([u8; 16], Result<Arc<LoadedKey>, KmsError>);

/// What a prefetch got for each of its keys (loaded, failed, or timed
/// out), for the frame that waited for them.
#[derive(Default)]
pub struct Prefetched {
    // Sorted by key id.
    keys: Vec<KeyOutcome>,
}

impl Prefetched {
    fn new(mut keys: Vec<KeyOutcome>) -> Prefetched {
        keys.sort_unstable_by_key(|k| k.0);
        Prefetched { keys }
    }

    /// The outcome for `id`, if this prefetch loaded it.
    pub fn get(&self, id: &[u8; 16]) -> Option<Result<Arc<LoadedKey>, KmsError>> {
        let i = self.keys.binary_search_by(|k| k.0.cmp(id)).ok()?;
        Some(self.keys[i].1.clone())
    }

    /// Whether a loaded key is HSM-only (the frame goes to the HSM
    /// executor).
    pub fn any_hsm(&self) -> bool {
        self.keys
            .iter()
            .any(|(_, k)| matches!(k, Ok(k) if k.origin() == kms_proto::Origin::Hsm))
    }
}

/// A request frame queued for the HSM executor: run with `None`, or with
/// the error to answer when it did not start before its deadline.
struct QueuedFrame {
    deadline: Instant,
    run: Box<dyn FnOnce(Option<KmsError>) + Send>,
}

struct Waiter {
    deadline: Instant,
    notify: Notify,
}

struct KeyJob {
    id: [u8; 16],
    // Only without batching: the job's own waiter (no single flight).
    waiter: Option<Waiter>,
}

thread_local! {
    // Set on loader threads: a frame running here that finds a key evicted
    // loads it on this thread instead of queueing behind itself.
    static ON_LOADER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Counters of what the loader did, for tests and measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Batches processed.
    pub batches: u64,
    /// Keys unwrapped and cached.
    pub loaded: u64,
    /// Keys that failed to load (not found, root errors).
    pub failed: u64,
    /// Waiters answered KeyUnavailableException at their deadline.
    pub expired: u64,
    /// Largest batch so far.
    pub max_batch: u64,
    /// HSM frames run.
    pub frames: u64,
    /// HSM frames answered KeyUnavailableException at their deadline,
    /// unrun.
    pub frames_expired: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    loaded: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    max_batch: AtomicU64,
    frames: AtomicU64,
    frames_expired: AtomicU64,
}

struct Shared {
    core: Arc<Core>,
    pending: Mutex<HashMap<[u8; 16], Vec<Waiter>>>,
    negative: Mutex<HashMap<[u8; 16], (KmsError, Instant)>>,
    batching: bool,
    batch_max: usize,
    /// HSM frames queued and not yet started, and their bound.
    frames: Mutex<VecDeque<QueuedFrame>>,
    frame_queue: usize,
    counters: Counters,
    stop: std::sync::atomic::AtomicBool,
}

/// Loader settings.
#[derive(Clone, Copy, Debug)]
pub struct LoaderConfig {
    /// Loader threads (one per HSM session).
    pub threads: usize,
    /// Most keys per batch.
    pub batch_max: usize,
    /// Single flight and batches on (false: one unwrap per miss).
    pub batching: bool,
    /// Most HSM frames queued at once.
    pub frame_queue: usize,
}

/// The loader threads and the queue to them. Dropping it stops them.
pub struct KeyLoader {
    tx: Option<Sender<KeyJob>>,
    /// One token per queued HSM frame, to wake a loader thread.
    wake: Option<Sender<()>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn unavailable(what: &str) -> KmsError {
    KmsError::new(ErrorKind::KeyUnavailable, what.to_owned())
}

fn timed_out() -> KmsError {
    unavailable("the key could not be loaded in time (the root of trust is slow or down); retry")
}

fn frame_timed_out() -> KmsError {
    unavailable("the HSM did not take the request in time (it is slow, down or overloaded); retry")
}

impl KeyLoader {
    pub(super) fn start(core: Arc<Core>, config: LoaderConfig) -> std::io::Result<KeyLoader> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            core,
            pending: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            batching: config.batching,
            batch_max: config.batch_max.max(1),
            frames: Mutex::new(VecDeque::new()),
            frame_queue: config.frame_queue.max(1),
            counters: Counters::default(),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        // Two stages: one thread reads the queued keys' records from the
        // store, the loader threads (one per HSM session) unwrap them, so
        // the threads that own the sessions spend their time in the HSM.
        let (staged_tx, staged_rx) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = crossbeam_channel::unbounded();
        let mut threads = (0..config.threads.max(1))
            .map(|i| {
                let (shared, rx) = (Arc::clone(&shared), staged_rx.clone());
                let wake = wake_rx.clone();
                std::thread::Builder::new()
                    .name(format!("kmsd-loader-{i}"))
                    .spawn(move || unwrap_stage(&shared, &rx, &wake))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let reader = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("kmsd-loader-store".into())
                .spawn(move || read_stage(&reader, &rx, &staged_tx))?,
        );
        // Deadlines are kept by a thread of their own: a loader thread may
        // be stuck in an HSM call for longer than any deadline.
        let sweeper = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("kmsd-loader-deadlines".into())
                .spawn(move || sweep(&sweeper))?,
        );
        Ok(KeyLoader {
            tx: Some(tx),
            wake: Some(wake_tx),
            shared,
            threads,
        })
    }

    /// Loads every key of `ids` into the cache, then calls `done` once with
    /// every key's outcome (on a loader thread or the deadline sweep,
    /// whatever the outcome: the caller runs its request with them, see
    /// [`Service::handle_frame_prefetched`](super::Service::handle_frame_prefetched)).
    pub fn prefetch(
        &self,
        ids: &[[u8; 16]],
        timeout: Duration,
        done: impl FnOnce(Prefetched) + Send + 'static,
    ) {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            done(Prefetched::default());
            return;
        }
        let deadline = Instant::now() + timeout;
        let n = ids.len();
        let done: DoneOnce = Arc::new(Mutex::new((
            Vec::with_capacity(n),
            Some(Box::new(done) as Box<dyn FnOnce(Prefetched) + Send>),
        )));
        for id in ids {
            let done = Arc::clone(&done);
            self.submit(
                id,
                Waiter {
                    deadline,
                    notify: Box::new(move |r| {
                        let mut state = done.lock();
                        state.0.push((id, r));
                        if state.0.len() == n {
                            let keys = std::mem::take(&mut state.0);
                            let f = state.1.take();
                            drop(state);
                            if let Some(f) = f {
                                f(Prefetched::new(keys));
                            }
                        }
                    }),
                },
            );
        }
    }

    /// Loads one key, waiting at most `timeout` (workers and the control
    /// plane only: this blocks the calling thread).
    pub fn load_blocking(
        &self,
        id: &[u8; 16],
        timeout: Duration,
    ) -> Result<Arc<LoadedKey>, KmsError> {
        if let Some(e) = self.remembered_failure(id) {
            return Err(e);
        }
        if ON_LOADER.get() {
            // An HSM frame on a loader thread: waiting for the queue could
            // mean waiting for this very thread.
            let result = load_many(&self.shared.core, std::slice::from_ref(id))
                .pop()
                .expect("one result per key");
            settle(&self.shared, id, &result, Instant::now() + NEGATIVE_TTL);
            return result;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            *id,
            Waiter {
                deadline: Instant::now() + timeout,
                notify: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            },
        );
        // The sweep answers a waiter at its deadline; the margin covers the
        // sweep interval.
        rx.recv_timeout(timeout + 2 * SWEEP_EVERY)
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// Queues `run(frame, None)` (a request that uses HSM-only keys) to run
    /// on a loader thread; gives `frame` back when the queue is full, so the
    /// caller can answer ThrottlingException. A frame not started
    /// within `timeout` is not run: the sweep calls `run(frame,
    /// Some(KeyUnavailableException))` instead, for the caller to answer.
    /// At shutdown queued frames get the "stopping" error the same way.
    pub fn run_frame<T: Send + 'static>(
        &self,
        frame: T,
        timeout: Duration,
        run: fn(T, Option<KmsError>),
    ) -> Result<(), T> {
        let Some(wake) = &self.wake else {
            return Err(frame);
        };
        {
            let mut frames = self.shared.frames.lock();
            if frames.len() >= self.shared.frame_queue {
                return Err(frame);
            }
            frames.push_back(QueuedFrame {
                deadline: Instant::now() + timeout,
                run: Box::new(move |e| run(frame, e)),
            });
        }
        // The loader threads outlive this sender (they exit once it is
        // dropped), so the token always arrives.
        let _ = wake.send(());
        Ok(())
    }

    /// A load of `id` that failed within the last 100 ms.
    pub fn remembered_failure(&self, id: &[u8; 16]) -> Option<KmsError> {
        let negative = self.shared.negative.lock();
        let (e, until) = negative.get(id)?;
        (Instant::now() < *until).then(|| e.clone())
    }

    /// Forgets a remembered failure (a key was just created or changed).
    pub fn forget_failure(&self, id: &[u8; 16]) {
        self.shared.negative.lock().remove(id);
    }

    /// What the loader has done so far.
    pub fn stats(&self) -> LoaderStats {
        let c = &self.shared.counters;
        LoaderStats {
            batches: c.batches.load(Ordering::Relaxed),
            loaded: c.loaded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            max_batch: c.max_batch.load(Ordering::Relaxed),
            frames: c.frames.load(Ordering::Relaxed),
            frames_expired: c.frames_expired.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, id: [u8; 16], waiter: Waiter) {
        let Some(tx) = &self.tx else {
            (waiter.notify)(Err(unavailable("the daemon is stopping")));
            return;
        };
        let job = if self.shared.batching {
            let mut pending = self.shared.pending.lock();
            if let Some(waiters) = pending.get_mut(&id) {
                waiters.push(waiter);
                return;
            }
            pending.insert(id, vec![waiter]);
            KeyJob { id, waiter: None }
        } else {
            KeyJob {
                id,
                waiter: Some(waiter),
            }
        };
        if let Err(e) = tx.send(job) {
            // Only when the threads are gone (shutdown).
            let job = e.0;
            let waiters = match job.waiter {
                Some(w) => vec![w],
                None => self.shared.pending.lock().remove(&id).unwrap_or_default(),
            };
            for w in waiters {
                (w.notify)(Err(unavailable("the daemon is stopping")));
            }
        }
    }
}

impl Drop for KeyLoader {
    fn drop(&mut self) {
        // Closing the channels ends the loader threads once the key queue
        // is empty; the flag ends the sweeper, which answers the frames
        // still queued.
        self.tx = None;
        self.wake = None;
        self.shared.stop.store(true, Ordering::Release);
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // The last reference to the service can be dropped by a loader
            // thread itself (a finished prefetch's callback); it cannot join
            // itself, and it exits on its own once the channel is closed.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// A batch of key jobs whose records have been read, on its way to a
/// loader thread.
struct ReadBatch {
    ids: Vec<[u8; 16]>,
    stored: Vec<Result<Stored, KmsError>>,
    // Only without batching: each job's own waiter.
    own: Vec<Option<Waiter>>,
}

/// The store stage: takes queued key jobs in batches, reads the records
/// of the keys still wanted (one read transaction per batch) and passes
/// them on to the loader threads.
fn read_stage(shared: &Shared, rx: &Receiver<KeyJob>, tx: &Sender<ReadBatch>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        if shared.batching {
            while batch.len() < shared.batch_max {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let n = batch.len() as u64;
        // The loader threads outlive this one (they exit once it drops the
        // sender), so a send fails only if one of them panicked.
        if let Some(read) = read_wanted(shared, batch) {
            if tx.send(read).is_err() {
                return;
            }
        }
        // Counted once staged (tests wait for a batch to be queued).
        let c = &shared.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.max_batch.fetch_max(n, Ordering::Relaxed);
    }
}

/// Keys a loader thread has unwrapped (or failed to), with their own
/// waiters (without batching).
type Loaded = Vec<([u8; 16], Result<Arc<LoadedKey>, KmsError>, Option<Waiter>)>;

/// A loader thread: unwraps staged keys on its session and runs HSM
/// frames, key batches first (a frame may wait; keys have waiters, frames
/// among them, and a key load must not queue behind HSM frames that do not
/// need it).
fn unwrap_stage(shared: &Shared, keys: &Receiver<ReadBatch>, wake: &Receiver<()>) {
    ON_LOADER.set(true);
    let (mut keys_open, mut wake_open) = (true, true);
    loop {
        match keys.try_recv() {
            // Cached and answered together once the batch is unwrapped:
            // caching each key and waking the frames that waited for it
            // between unwraps measured 0.72 of the raw unwrap rate against
            // 0.88 (a third thread doing it measured no better than this).
            Ok(batch) => {
                finish(shared, unwrap_wanted(shared, batch));
                continue;
            }
            Err(TryRecvError::Disconnected) => keys_open = false,
            Err(TryRecvError::Empty) => {}
        }
        let next = shared.frames.lock().pop_front();
        if let Some(frame) = next {
            run_queued(shared, frame);
            continue;
        }
        // Nothing to do: sleep until a key batch or a frame's token comes.
        // (A token may find its frame taken by another thread or the sweep;
        // every frame has its token, so none is left without a wake-up.)
        let mut select = Select::new();
        let k = keys_open.then(|| select.recv(keys));
        let w = wake_open.then(|| select.recv(wake));
        if k.is_none() && w.is_none() {
            return;
        }
        let op = select.select();
        if Some(op.index()) == k {
            match op.recv(keys) {
                Ok(batch) => finish(shared, unwrap_wanted(shared, batch)),
                Err(_) => keys_open = false,
            }
        } else if op.recv(wake).is_err() {
            wake_open = false;
        }
    }
}

/// Runs a queued HSM frame, or answers it if its deadline has passed.
fn run_queued(shared: &Shared, frame: QueuedFrame) {
    if frame.deadline <= Instant::now() {
        shared
            .counters
            .frames_expired
            .fetch_add(1, Ordering::Relaxed);
        (frame.run)(Some(frame_timed_out()));
        return;
    }
    // Counted before it runs: the frame sends its answer, and whoever got
    // the answer may read the counter at once.
    shared.counters.frames.fetch_add(1, Ordering::Relaxed);
    (frame.run)(None);
}

/// Every 20 ms: answers waiters past their deadline; every second: drops
/// expired cache entries and failure memos. At shutdown, tells whoever
/// still waits.
fn sweep(shared: &Shared) {
    let mut last_cache_sweep = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(SWEEP_EVERY);
        expire_waiters(shared);
        expire_frames(shared);
        if last_cache_sweep.elapsed() >= Duration::from_secs(1) {
            shared.core.cache.sweep();
            let now = Instant::now();
            shared.negative.lock().retain(|_, (_, until)| *until > now);
            last_cache_sweep = now;
        }
    }
    let rest: Vec<Waiter> = shared.pending.lock().drain().flat_map(|(_, w)| w).collect();
    for w in rest {
        (w.notify)(Err(unavailable("the daemon is stopping")));
    }
    let frames = std::mem::take(&mut *shared.frames.lock());
    for f in frames {
        (f.run)(Some(unavailable("the daemon is stopping")));
    }
}

/// Answers queued HSM frames whose deadline has passed (the loader threads
/// may all be stuck in a slow HSM call).
fn expire_frames(shared: &Shared) {
    let now = Instant::now();
    let mut expired = Vec::new();
    {
        let mut frames = shared.frames.lock();
        // A pass over at most `frame_queue` entries, only when one is due
        // (the dispatcher gives every frame the same timeout, so due ones
        // are at the front; other callers may not).
        if frames.iter().any(|f| f.deadline <= now) {
            for f in std::mem::take(&mut *frames) {
                if f.deadline <= now {
                    expired.push(f);
                } else {
                    frames.push_back(f);
                }
            }
        }
    }
    let c = &shared.counters;
    c.frames_expired
        .fetch_add(expired.len() as u64, Ordering::Relaxed);
    for f in expired {
        (f.run)(Some(frame_timed_out()));
    }
}

/// Answers waiters whose deadline has passed.
fn expire_waiters(shared: &Shared) {
    let now = Instant::now();
    let mut expired = Vec::new();
    {
        let mut pending = shared.pending.lock();
        pending.retain(|_, waiters| {
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].deadline <= now {
                    expired.push(waiters.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !waiters.is_empty()
        });
    }
    shared
        .counters
        .expired
        .fetch_add(expired.len() as u64, Ordering::Relaxed);
    for w in expired {
        (w.notify)(Err(timed_out()));
    }
}

/// Drops the jobs nobody waits for any more (answering expired own
/// waiters) and reads the records of the rest.
fn read_wanted(shared: &Shared, batch: Vec<KeyJob>) -> Option<ReadBatch> {
    let now = Instant::now();
    let mut own: Vec<Option<Waiter>> = Vec::new();
    let mut ids = Vec::with_capacity(batch.len());
    for job in batch {
        if let Some(waiter) = still_wanted(shared, &job.id, job.waiter, now) {
            ids.push(job.id);
            own.push(waiter);
        }
    }
    if ids.is_empty() {
        return None;
    }
    let stored = read_many(&shared.core, &ids);
    Some(ReadBatch { ids, stored, own })
}

/// Unwraps the keys of a read batch that someone still waits for.
fn unwrap_wanted(shared: &Shared, batch: ReadBatch) -> Loaded {
    let ReadBatch { ids, stored, own } = batch;
    let mut loaded = Vec::with_capacity(ids.len());
    for ((id, stored), own) in ids.into_iter().zip(stored).zip(own) {
        // Waiters may have given up while the batch waited for this thread
        // (a slow or recovering HSM): checked again before the HSM call.
        if let Some(own) = still_wanted(shared, &id, own, Instant::now()) {
            loaded.push((id, unwrap_one(&shared.core, stored), own));
        }
    }
    loaded
}

/// Whether a key job is still wanted at `now`, giving its own waiter back
/// (`Some(None)` with batching, when someone still waits for the key).
/// A key nobody waits for any more is not unwrapped; an own waiter past
/// its deadline is answered KeyUnavailableException here.
fn still_wanted(
    shared: &Shared,
    id: &[u8; 16],
    own: Option<Waiter>,
    now: Instant,
) -> Option<Option<Waiter>> {
    match own {
        Some(w) if w.deadline <= now => {
            shared.counters.expired.fetch_add(1, Ordering::Relaxed);
            (w.notify)(Err(timed_out()));
            None
        }
        Some(w) => Some(Some(w)),
        None => shared.pending.lock().contains_key(id).then_some(None),
    }
}

/// Caches an unwrapped batch and answers its waiters (whose callbacks
/// queue the frames that waited).
fn finish(shared: &Shared, loaded: Loaded) {
    let until = Instant::now() + NEGATIVE_TTL;
    for (id, result, own) in loaded {
        settle(shared, &id, &result, until);
        let waiters = match own {
            Some(w) => vec![w],
            None => shared.pending.lock().remove(&id).unwrap_or_default(),
        };
        for w in waiters {
            (w.notify)(result.clone());
        }
    }
}

/// Caches a loaded key, or remembers the failure until `until`.
fn settle(
    shared: &Shared,
    id: &[u8; 16],
    result: &Result<Arc<LoadedKey>, KmsError>,
    until: Instant,
) {
    let c = &shared.counters;
    match result {
        Ok(k) => {
            shared.core.cache.insert(Arc::clone(k));
            shared.negative.lock().remove(id);
            c.loaded.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            shared.negative.lock().insert(*id, (e.clone(), until));
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A key's stored record, its wrapped versions and (HSM-only keys) their
/// reserved encryption counts.
type Stored = (
    crate::keystore::KeyRecord,
    Vec<crate::keystore::WrappedVersion>,
    Vec<u64>,
);

/// Reads the keys' records under one store lock, then unwraps each.
fn load_many(core: &Core, ids: &[[u8; 16]]) -> Vec<Result<Arc<LoadedKey>, KmsError>> {
    read_many(core, ids)
        .into_iter()
        .map(|stored| unwrap_one(core, stored))
        .collect()
}

/// Reads the keys' records in one read transaction.
fn read_many(core: &Core, ids: &[[u8; 16]]) -> Vec<Result<Stored, KmsError>> {
    let store = core.store.lock();
    let read = |store: &crate::keystore::Keystore| -> Vec<_> {
        ids.iter()
            .map(|id| {
                let record = store
                    .get_key(id)
                    .map_err(|e| internal("reading key", e))?
                    .ok_or_else(|| {
                        KmsError::new(
                            ErrorKind::NotFound,
                            format!("key {} does not exist", super::format_key_id(id)),
                        )
                    })?;
                let versions = store
                    .get_versions(id)
                    .map_err(|e| internal("reading key versions", e))?;
                let usage = if record.origin == kms_proto::Origin::Hsm {
                    versions
                        .iter()
                        .map(|v| store.usage_reserved(id, v.version))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| internal("reading HSM usage", e))?
                } else {
                    Vec::new()
                };
                Ok((record, versions, usage))
            })
            .collect()
    };
    match store.read_batch(read) {
        Ok(rows) => rows,
        Err(e) => {
            let e = internal("reading keys", e);
            ids.iter().map(|_| Err(e.clone())).collect()
        }
    }
}

/// Unwraps a read key through the root of trust.
fn unwrap_one(core: &Core, stored: Result<Stored, KmsError>) -> Result<Arc<LoadedKey>, KmsError> {
    let (record, versions, usage) = stored?;
    core.unwrap_key(record, &versions, &usage).map(Arc::new)
}

/// What a client sees when the root of trust fails while loading.
pub(super) fn root_error(e: RootError) -> KmsError {
    match e {
        RootError::Unavailable(detail) => {
            tracing::warn!("root of trust unavailable: {detail}");
            unavailable(
                "the key's material is not available now (the root of trust is down or \
                 recovering); keys already in use keep working; retry",
            )
        }
        other => internal("unwrapping backing key", other),
    }
}

#[cfg(test)]
mod tests {
    //! The loader against a root of trust that counts, slows down and fails
    //! on demand (a fault-injecting wrapper around the file root; the real
    //! HSM's faults are tested end to end in tests/integration/hsm.rs).

    use super::*;
    use crate::config::CacheConfig;
    use crate::crypto::KeyMaterial;
    use crate::identity::Identity;
    use crate::keystore::Keystore;
    use crate::root::{FileRoot, RootOfTrust};
    use crate::service::{Service, ServiceOptions, Site};
    use kms_proto::{CreateKey, GenerateDataKey, Operation, Output};
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    struct TestRoot {
        inner: FileRoot,
        unwraps: AtomicUsize,
        delay_ms: AtomicU64,
        down: AtomicBool,
        /// While set, every unwrap hangs (a root far slower than any
        /// deadline) until it is cleared.
        stall: AtomicBool,
        /// Wrapped keys whose unwrap fails as if the HSM were down.
        failing: Mutex<Vec<Vec<u8>>>,
        /// Names of the threads that called unwrap.
        callers: Mutex<std::collections::BTreeSet<String>>,
    }

    impl RootOfTrust for TestRoot {
        fn kind(&self) -> &'static str {
            "file"
        }
        fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError> {
            self.inner.wrap(key)
        }
        fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError> {
            if self.down.load(Ordering::SeqCst) || self.failing.lock().iter().any(|w| w == wrapped)
            {
                return Err(RootError::Unavailable("test: HSM down".into()));
            }
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            let t0 = Instant::now();
            while self.stall.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let me = std::thread::current();
            self.callers
                .lock()
                .insert(me.name().unwrap_or("unnamed").to_owned());
            std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
            self.inner.unwrap(wrapped)
        }
    }

    /// A timeout no test reaches.
    const LONG: Duration = Duration::from_secs(600);

    const PEER: Identity = Identity {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    /// A store under `dir` holding `n` keys; returns their ids.
    fn keys_in(dir: &std::path::Path, n: usize) -> Vec<[u8; 16]> {
        let svc = Service::open(
            dir,
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([9; 32]))),
            Default::default(),
            100_000,
        )
        .unwrap();
        (0..n)
            .map(
                |_| match svc.call(&Operation::CreateKey(CreateKey::default()), &PEER) {
                    Ok(Output::CreateKey(m)) => super::super::parse_key_id(&m.key_id).unwrap(),
                    other => panic!("{other:?}"),
                },
            )
            .collect()
    }

    /// A fresh service (cold cache) over the same store.
    fn cold(dir: &std::path::Path, cache: CacheConfig) -> (Service, Arc<TestRoot>) {
        let root = Arc::new(TestRoot {
            inner: FileRoot::from_key(KeyMaterial::from_bytes([9; 32])),
            unwraps: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            failing: Mutex::default(),
            callers: Mutex::default(),
        });
        let svc = Service::with_options(
            Keystore::open(dir).unwrap(),
            root.clone(),
            ServiceOptions {
                limits: Default::default(),
                max_keys: 100_000,
                cache,
                loader_threads: 1,
                hsm_queue: 64,
            },
        )
        .unwrap();
        (svc, root)
    }

    /// Waits (at most 10 s) until `cond` holds: for state another thread
    /// updates after the answer a test waited for.
    fn wait_for(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn gdk(svc: &Service, id: &[u8; 16]) -> Result<Output, KmsError> {
        svc.call(
            &Operation::GenerateDataKey(GenerateDataKey {
                key_id: &super::super::format_key_id(id),
                number_of_bytes: Some(32),
                key_spec: None,
                context: vec![],
            }),
            &PEER,
        )
    }

    #[test]
    fn hsm_frames_run_on_loader_threads_and_their_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 2);
        let (svc, root) = cold(
            dir.path(),
            CacheConfig {
                // A frame that waited on its own thread would hang far past
                // the receive timeouts below.
                load_timeout_ms: 600_000,
                ..CacheConfig::default()
            },
        );
        let svc = Arc::new(svc);
        // Occupy the only loader thread with slow unwraps (every frame
        // below runs after the first one).
        root.delay_ms.store(300, Ordering::SeqCst);
        let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
        svc.loader()
            .prefetch(&ids[..1], Duration::from_secs(10), move |_| {
                loaded_tx.send(()).unwrap()
            });
        assert!(wait_for(|| root.unwraps.load(Ordering::SeqCst) == 1));
        // The queue holds 64 frames (`cold`); the 65th is handed back.
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..64 {
            let work = (Arc::clone(&svc), tx.clone(), i, ids[1]);
            let queued = svc
                .loader()
                .run_frame(work, LONG, |(svc, tx, i, id), expired| {
                    assert!(expired.is_none());
                    // On a loader thread, a key that is not cached is loaded
                    // right here rather than queued behind this frame.
                    let thread = std::thread::current().name().map(str::to_owned);
                    let loaded = svc
                        .load_key(&id, Site::Blocking { prefetched: None })
                        .is_ok();
                    tx.send((i, thread, loaded)).unwrap();
                });
            assert!(queued.is_ok(), "frame {i}");
        }
        let refused = svc.loader().run_frame(65, LONG, |_, _| unreachable!());
        assert_eq!(refused.unwrap_err(), 65);
        loaded_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let mut ran: Vec<_> = (0..64)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        ran.sort_unstable_by_key(|r| r.0);
        for (i, (n, thread, loaded)) in ran.into_iter().enumerate() {
            assert_eq!(n, i);
            assert_eq!(thread.as_deref(), Some("kmsd-loader-0"));
            assert!(loaded);
        }
        // Counted before each frame runs, so before its message was sent.
        assert_eq!(svc.loader().stats().frames, 64);
        // Room again once they ran.
        let (tx, rx) = std::sync::mpsc::channel();
        svc.loader()
            .run_frame(tx, LONG, |tx, _| tx.send(()).unwrap())
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    fn gdk_op(key: &str) -> Result<Operation<'_>, KmsError> {
        Ok(Operation::GenerateDataKey(GenerateDataKey {
            key_id: key,
            number_of_bytes: Some(32),
            key_spec: None,
            context: vec![],
        }))
    }

    /// Sends a request through the dispatcher (as an I/O thread would) and
    /// returns its outcomes, waiting at most 10 s for the answer; a whole
    /// frame's error is one outcome.
    fn through(
        d: &crate::dispatch::Dispatcher,
        body: kms_proto::RequestBody<'_>,
    ) -> Vec<Result<Output, KmsError>> {
        use kms_proto::{codec, Request, ResponseBody};
        let mut frame = Vec::new();
        codec::encode_request(
            &mut flatbuffers::FlatBufferBuilder::new(),
            &Request {
                request_id: 7,
                body,
            },
            &mut frame,
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        d.dispatch(
            bytes::Bytes::from(frame).slice(4..),
            PEER,
            crate::dispatch::Reply::new(tx, None),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            match rx.try_recv() {
                Ok(a) => break a,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("no answer: {e}"),
            }
        };
        let r = codec::decode_response(&answer.frame[4..], 1 << 20).unwrap();
        assert_eq!(r.request_id, 7);
        match r.body {
            ResponseBody::Single(o) => vec![o],
            ResponseBody::Batch(v) => v,
            ResponseBody::Error(e) => vec![Err(e)],
        }
    }

    fn create(svc: &Service) -> String {
        match svc.call(&Operation::CreateKey(CreateKey::default()), &PEER) {
            Ok(Output::CreateKey(m)) => m.key_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_timed_out_load_holds_no_worker_and_fails_only_its_items() {
        use crate::config::DispatchConfig;
        use kms_proto::RequestBody;
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 2);
        let (svc, root) = cold(
            dir.path(),
            CacheConfig {
                load_timeout_ms: 100,
                ..CacheConfig::default()
            },
        );
        let svc = Arc::new(svc);
        let cached = create(&svc);
        let one_worker = DispatchConfig {
            workers: 1,
            ..DispatchConfig::default()
        };
        let d = crate::dispatch::Dispatcher::new(Arc::clone(&svc), &one_worker).unwrap();
        // A root far slower than the load timeout: it answers nothing
        // until the end of the test.
        root.stall.store(true, Ordering::SeqCst);
        let stalled = super::super::format_key_id(&ids[0]);
        let a = through(&d, RequestBody::Single(gdk_op(&stalled)));
        assert!(matches!(&a[..], [Err(e)] if *e == timed_out()), "{a:?}");
        // A batch on a cached key, too large for an I/O thread: the one
        // worker serves it while the root still hangs.
        let b = through(
            &d,
            RequestBody::Batch((0..65).map(|_| gdk_op(&cached)).collect()),
        );
        assert_eq!(b.len(), 65);
        assert!(b.iter().all(|o| o.is_ok()), "{b:?}");
        // A batch mixing a key whose load times out with the cached key:
        // only the timed-out key's item fails.
        let other = super::super::format_key_id(&ids[1]);
        let c = through(
            &d,
            RequestBody::Batch(vec![gdk_op(&cached), gdk_op(&other), gdk_op(&cached)]),
        );
        assert!(
            matches!(&c[..], [Ok(_), Err(e), Ok(_)] if *e == timed_out()),
            "{c:?}"
        );
        // Each frame waited for its keys once (its prefetch); the worker
        // that ran it never waited for the root again.
        assert_eq!(svc.loader().stats().expired, 2);
        assert_eq!(root.unwraps.load(Ordering::SeqCst), 1);
        root.stall.store(false, Ordering::SeqCst);
    }

    #[test]
    fn a_batch_mixing_failed_and_good_keys_serves_the_good_ones() {
        use kms_proto::RequestBody;
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 2);
        let (svc, root) = cold(dir.path(), CacheConfig::default());
        let svc = Arc::new(svc);
        let cached = create(&svc);
        // The root fails for one key as if the HSM were down.
        let wrapped = Keystore::open(dir.path())
            .unwrap()
            .get_versions(&ids[1])
            .unwrap()
            .remove(0)
            .wrapped;
        root.failing.lock().push(wrapped);
        let d = crate::dispatch::Dispatcher::new(Arc::clone(&svc), &Default::default()).unwrap();
        let (good, bad) = (
            super::super::format_key_id(&ids[0]),
            super::super::format_key_id(&ids[1]),
        );
        let unknown = super::super::format_key_id(&[7; 16]);
        let out = through(
            &d,
            RequestBody::Batch(vec![
                gdk_op(&cached),
                gdk_op(&bad),
                gdk_op(&good),
                gdk_op(&unknown),
                gdk_op(&cached),
            ]),
        );
        let kinds: Vec<_> = out
            .iter()
            .map(|o| o.as_ref().err().map(|e| e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                None,
                Some(ErrorKind::KeyUnavailable),
                None,
                Some(ErrorKind::NotFound),
                None
            ],
            "{out:?}"
        );
    }

    #[test]
    fn queued_hsm_frames_wait_behind_key_loads_and_expire_at_their_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 2);
        let (svc, root) = cold(dir.path(), CacheConfig::default());
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // The only loader thread hangs in the first key's unwrap.
        root.stall.store(true, Ordering::SeqCst);
        let t = tx.clone();
        svc.loader()
            .prefetch(&ids[..1], LONG, move |_| t.send("first".into()).unwrap());
        assert!(wait_for(|| root.unwraps.load(Ordering::SeqCst) == 1));
        // HSM frames queued behind it, then a load of another key.
        for i in 0..3 {
            let work = (tx.clone(), i);
            svc.loader()
                .run_frame(work, LONG, |(t, i), expired| {
                    assert!(expired.is_none());
                    t.send(format!("frame {i}")).unwrap()
                })
                .unwrap();
        }
        let t = tx.clone();
        svc.loader()
            .prefetch(&ids[1..], LONG, move |_| t.send("key".into()).unwrap());
        assert!(wait_for(|| svc.loader().stats().batches == 2));
        // A frame with a short deadline is answered by the sweep, unrun,
        // while the loader thread still hangs.
        let (etx, erx) = std::sync::mpsc::channel();
        svc.loader()
            .run_frame(etx, Duration::from_millis(50), |etx, e| {
                etx.send(e).unwrap()
            })
            .unwrap();
        let e = erx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::KeyUnavailable));
        assert_eq!(svc.loader().stats().frames_expired, 1);
        // Once the root answers: the key load before the queued frames.
        root.stall.store(false, Ordering::SeqCst);
        let order: Vec<String> = (0..5)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, ["first", "key", "frame 0", "frame 1", "frame 2"]);
        assert_eq!(svc.loader().stats().frames, 3);
    }

    #[test]
    fn concurrent_misses_for_one_key_share_one_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let id = keys_in(dir.path(), 1)[0];
        let (svc, root) = cold(dir.path(), CacheConfig::default());
        root.delay_ms.store(50, Ordering::SeqCst);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    svc.load_key(&id, Site::Blocking { prefetched: None })
                        .unwrap()
                });
            }
        });
        assert_eq!(root.unwraps.load(Ordering::SeqCst), 1);
        assert_eq!(svc.loader().stats().loaded, 1);
    }

    #[test]
    fn without_batching_every_miss_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let id = keys_in(dir.path(), 1)[0];
        let (svc, root) = cold(
            dir.path(),
            CacheConfig {
                batching: false,
                ..CacheConfig::default()
            },
        );
        root.delay_ms.store(20, Ordering::SeqCst);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    svc.load_key(&id, Site::Blocking { prefetched: None })
                        .unwrap()
                });
            }
        });
        assert_eq!(root.unwraps.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn misses_for_many_keys_are_loaded_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 150);
        let (svc, root) = cold(
            dir.path(),
            CacheConfig {
                batch_max: 64,
                ..CacheConfig::default()
            },
        );
        root.delay_ms.store(1, Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        svc.loader()
            .prefetch(&ids, Duration::from_secs(10), move |_| tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let stats = svc.loader().stats();
        assert_eq!(stats.loaded, 150);
        assert!(stats.max_batch > 1, "{stats:?}");
        assert!(stats.batches < 150, "{stats:?}");
        for id in &ids {
            assert!(svc.load_key(id, Site::Io).is_ok());
        }
        assert_eq!(root.unwraps.load(Ordering::SeqCst), 150);
        // Records are read by the store stage, but every root call is made
        // by the loader thread that owns the session.
        assert_eq!(
            root.callers.lock().iter().collect::<Vec<_>>(),
            ["kmsd-loader-0"]
        );
    }

    #[test]
    fn a_slow_root_answers_key_unavailable_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let id = keys_in(dir.path(), 1)[0];
        let (svc, root) = cold(
            dir.path(),
            CacheConfig {
                load_timeout_ms: 50,
                ..CacheConfig::default()
            },
        );
        root.delay_ms.store(600, Ordering::SeqCst);
        let e = gdk(&svc, &id).unwrap_err();
        assert_eq!(e, timed_out());
        // The waiter gives up on its own a little after the sweep's
        // deadline; the sweep thread may count it just after that.
        assert!(wait_for(|| svc.loader().stats().expired == 1));
    }

    #[test]
    fn keys_whose_waiters_gave_up_behind_a_slow_unwrap_are_not_unwrapped() {
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 4);
        let (svc, root) = cold(dir.path(), CacheConfig::default());
        root.delay_ms.store(300, Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, id) in ids[..3].iter().enumerate() {
            let tx = tx.clone();
            svc.loader().prefetch(
                std::slice::from_ref(id),
                Duration::from_millis(50),
                move |_| tx.send(()).unwrap(),
            );
            if i == 0 {
                // The first is being unwrapped when the others are read
                // and staged behind it.
                assert!(wait_for(|| root.unwraps.load(Ordering::SeqCst) == 1));
            }
        }
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert_eq!(svc.loader().stats().expired, 3);
        // The slow unwrap ends; the loader thread then finds nobody waiting
        // for the other two. A later key is loaded after them (batches are
        // taken in order), so once it is, they have been skipped.
        let tx = tx.clone();
        svc.loader()
            .prefetch(&ids[3..], LONG, move |_| tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(svc.load_key(&ids[3], Site::Io).is_ok());
        assert_eq!(root.unwraps.load(Ordering::SeqCst), 2);
        for id in &ids[1..3] {
            assert!(svc.load_key(id, Site::Io).is_err());
        }
    }

    #[test]
    fn while_the_root_is_down_cached_keys_work_and_others_fail_fast() {
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 2);
        let (svc, root) = cold(dir.path(), CacheConfig::default());
        gdk(&svc, &ids[0]).unwrap();
        root.down.store(true, Ordering::SeqCst);
        // Cached: unaffected.
        gdk(&svc, &ids[0]).unwrap();
        // Not cached: a clear, retryable error (no timing assertion: the
        // machine is noisy; the root answered at once, not the deadline).
        let e = gdk(&svc, &ids[1]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KeyUnavailable, "{e}");
        assert_eq!(svc.loader().stats().expired, 0);
        // Back up: after the short memo of the failure, the key loads.
        root.down.store(false, Ordering::SeqCst);
        std::thread::sleep(NEGATIVE_TTL + Duration::from_millis(20));
        gdk(&svc, &ids[1]).unwrap();
    }

    #[test]
    fn the_cache_is_bounded_and_evicted_keys_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ids = keys_in(dir.path(), 20);
        let (svc, root) = cold(
            dir.path(),
            CacheConfig {
                max_keys: 5,
                ..CacheConfig::default()
            },
        );
        for id in &ids {
            gdk(&svc, id).unwrap();
        }
        assert_eq!(svc.cached_keys(), 5);
        gdk(&svc, &ids[0]).unwrap();
        assert_eq!(root.unwraps.load(Ordering::SeqCst), 21);
    }

    #[test]
    fn unknown_keys_are_not_found_and_remembered_briefly() {
        let dir = tempfile::tempdir().unwrap();
        keys_in(dir.path(), 1);
        let (svc, _root) = cold(dir.path(), CacheConfig::default());
        let e = gdk(&svc, &[7; 16]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(svc.loader().remembered_failure(&[7; 16]).is_some());
        assert_eq!(svc.loader().stats().failed, 1);
        gdk(&svc, &[7; 16]).unwrap_err();
        assert_eq!(
            svc.loader().stats().failed,
            1,
            "second miss served from the memo"
        );
    }
}
