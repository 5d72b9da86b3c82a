//! The key loader: the only place cache misses are served, so a miss never
//! blocks an I/O thread. Keys flow through two stages: the store stage
//! (`kmsd-loader-store`) reads records through the loader's own read-only
//! store connection, and the HSM executor's threads (which own the root of
//! trust's sessions) unwrap them.
//!
//! One concern per file:
//!
//! - `flight.rs`: **single flight and waiters**: concurrent misses for one
//!   [`KeyRef`] wait on one load (only the first enqueues it); with
//!   `batching = false` every miss is its own load and its own unwrap,
//!   which is what the batching figures in docs/perf/hsm.md compare against.
//! - `pipeline.rs`: **the pipeline**: the store stage takes up to
//!   `batch_max` queued loads at once and reads their records in one read
//!   transaction; an executor thread then unwraps them one after another on
//!   its session (the current version, and a version a ciphertext names;
//!   older versions of a cached key are unwrapped into it when first
//!   named). Loads are fenced by the key's cache revision: a load that read
//!   the store before an invalidation does not cache what it read, and its
//!   waiters get a fresh load.
//! - `deadlines.rs`: **deadlines and sweeping**: every waiter has a
//!   deadline (answered KeyUnavailableException by a sweep every 20 ms; a
//!   key nobody waits for any more is not unwrapped), queued HSM frames
//!   too; expired cache entries and failure memos are dropped every second.
//! - what clients see when a load fails is `crate::errors`'s (the one
//!   mapping of internal errors to AWS exceptions).
//!
//! A key that failed to load is answered from a short-lived memo (100 ms),
//! so a frame re-run after a failed prefetch, or a flood for an unknown
//! key, does not go back to the HSM at once. A prefetch hands its caller
//! every key's outcome ([`Prefetched`]), loaded or failed or timed out, and
//! the frame runs with them: a key whose load failed is answered with that
//! error at once, item by item, and never loaded again by the worker that
//! runs the frame (a worker waiting a second `load_timeout` for a slow root
//! froze the pool).

mod deadlines;
mod flight;
mod pipeline;
#[cfg(test)]
mod tests;

pub(crate) use pipeline::{load_in_place, unwrap_batch, ReadBatch};

use super::hsm_executor::HsmExecutor;
use super::keys::KeyRef;
use super::{ServiceState, LoadedKey};
use crate::errors::{load_timed_out as timed_out, stopping};
use crate::keystore::KeySource;
use crossbeam_channel::Sender;
use flight::{KeyLoad, Waiter};
use kms_proto::KmsError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One key's load: the key, or why it is not there.
type KeyOutcome = (KeyRef, Result<Arc<LoadedKey>, KmsError>);

/// What a prefetch got for each of its keys (loaded, failed, or timed
/// out), for the frame that waited for them.
#[derive(Default)]
pub struct Prefetched {
    // Sorted by key (a key's current version before its other versions).
    keys: Vec<KeyOutcome>,
}

impl Prefetched {
    fn new(mut keys: Vec<KeyOutcome>) -> Prefetched {
        keys.sort_unstable_by_key(|k| k.0);
        Prefetched { keys }
    }

    #[cfg(any(test, feature = "internals"))]
    /// The outcome for key `id` (its current version's load if this
    /// prefetch loaded it, else any of its loads).
    pub fn get(&self, id: &[u8; 16]) -> Option<Result<Arc<LoadedKey>, KmsError>> {
        let i = self.keys.partition_point(|k| k.0.id < *id);
        let (key, outcome) = self.keys.get(i)?;
        (key.id == *id).then(|| outcome.clone())
    }

    /// The outcome for exactly `key`, if this prefetch loaded it.
    pub fn get_ref(&self, key: &KeyRef) -> Option<Result<Arc<LoadedKey>, KmsError>> {
        let i = self.keys.binary_search_by(|k| k.0.cmp(key)).ok()?;
        Some(self.keys[i].1.clone())
    }

    /// Whether a loaded key is HSM-only (the frame goes to the HSM
    /// executor).
    pub fn any_hsm_only(&self) -> bool {
        self.keys
            .iter()
            .any(|(_, k)| matches!(k, Ok(k) if k.origin() == kms_proto::Origin::Hsm))
    }
}

/// Counters of what the loader did, for tests and measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Batches processed.
    pub batches: u64,
    /// Loads that unwrapped a key (or a version of a cached key).
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
    /// Loads that read the store before their key was invalidated, and
    /// loaded again instead of caching what they read.
    pub stale: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    loaded: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    max_batch: AtomicU64,
    stale: AtomicU64,
}

/// What the loader's threads (the store stage, the HSM executor's threads,
/// the deadline sweep) share: the loads in flight and their waiters, the
/// failure memo, the loader's store connection and its settings.
pub(crate) struct LoaderState {
    core: Arc<ServiceState>,
    /// The loader's own read-only store connection (the store stage reads
    /// batches through it; a load in place on an executor thread, rarely,
    /// too).
    reader: Mutex<Box<dyn KeySource>>,
    /// Waiters by key, with batching (single flight).
    pending: Mutex<HashMap<KeyRef, Vec<Waiter>>>,
    /// Failed loads, remembered until the instant given.
    negative: Mutex<HashMap<KeyRef, (KmsError, Instant)>>,
    batching: bool,
    batch_max: usize,
    counters: Counters,
    stop: AtomicBool,
}

/// Loader settings.
#[derive(Clone, Copy, Debug)]
pub struct LoaderConfig {
    /// HSM executor threads (one per HSM session).
    pub threads: usize,
    /// Most keys per batch.
    pub batch_max: usize,
    /// Single flight and batches on (false: one unwrap per miss).
    pub batching: bool,
    /// Most HSM frames queued at once.
    pub queue_capacity: usize,
}

/// The key loader: the store stage, the deadline sweep, and the HSM
/// executor whose threads unwrap. Dropping it stops them all.
pub struct KeyLoader {
    /// Loads to the store stage.
    tx: Option<Sender<KeyLoad>>,
    state: Arc<LoaderState>,
    executor: Arc<HsmExecutor>,
    threads: Vec<JoinHandle<()>>,
}

impl KeyLoader {
    pub(super) fn start(
        core: Arc<ServiceState>,
        reader: Box<dyn KeySource>,
        config: LoaderConfig,
    ) -> std::io::Result<KeyLoader> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let state = Arc::new(LoaderState {
            core,
            reader: Mutex::new(reader),
            pending: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            batching: config.batching,
            batch_max: config.batch_max.max(1),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        // Two stages: one thread reads the queued keys' records from the
        // store, the executor's threads (one per HSM session) unwrap them,
        // so the threads that own the sessions spend their time in the HSM.
        let (staged_tx, staged_rx) = crossbeam_channel::unbounded();
        let executor = Arc::new(HsmExecutor::start(
            Arc::clone(&state),
            config.threads,
            config.queue_capacity,
            staged_rx,
        )?);
        let reader = Arc::clone(&state);
        let mut threads = vec![std::thread::Builder::new()
            .name("kmsd-loader-store".into())
            .spawn(move || pipeline::read_stage(&reader, &rx, &staged_tx))?];
        // Deadlines are kept by a thread of their own: an executor thread
        // may be stuck in an HSM call for longer than any deadline.
        let (sweeper, frames) = (Arc::clone(&state), Arc::clone(&executor));
        threads.push(
            std::thread::Builder::new()
                .name("kmsd-loader-deadlines".into())
                .spawn(move || deadlines::sweep(&sweeper, &frames))?,
        );
        Ok(KeyLoader {
            tx: Some(tx),
            state,
            executor,
            threads,
        })
    }

    /// The HSM executor (the threads that unwrap, and run HSM frames).
    pub fn executor(&self) -> &HsmExecutor {
        &self.executor
    }

    /// Loads every key of `keys` into the cache (ids, for their current
    /// version, or [`KeyRef`]s), then calls `done` once with every key's
    /// outcome (on an executor thread or the deadline sweep, whatever the
    /// outcome: the caller runs its request with them, see
    /// `Site::Blocking`).
    pub fn prefetch<K: Copy + Into<KeyRef>>(
        &self,
        keys: &[K],
        timeout: Duration,
        done: impl FnOnce(Prefetched) + Send + 'static,
    ) {
        let mut keys: Vec<KeyRef> = keys.iter().map(|&k| k.into()).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            done(Prefetched::default());
            return;
        }
        let deadline = Instant::now() + timeout;
        let n = keys.len();
        /// The outcomes so far, and the completion, called by whichever
        /// key finishes last.
        type DoneOnce = Arc<Mutex<(Vec<KeyOutcome>, Option<Box<dyn FnOnce(Prefetched) + Send>>)>>;
        let done: DoneOnce = Arc::new(Mutex::new((
            Vec::with_capacity(n),
            Some(Box::new(done) as Box<dyn FnOnce(Prefetched) + Send>),
        )));
        for key in keys {
            let done = Arc::clone(&done);
            self.submit(
                key,
                Waiter {
                    deadline,
                    notify: Box::new(move |r| {
                        let mut state = done.lock();
                        state.0.push((key, r));
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
    /// plane only: this blocks the calling thread). On an HSM executor
    /// thread the key is loaded right there: waiting for the queue could
    /// mean waiting for this very thread.
    pub fn load_blocking(
        &self,
        key: impl Into<KeyRef>,
        timeout: Duration,
    ) -> Result<Arc<LoadedKey>, KmsError> {
        let key = key.into();
        if let Some(e) = self.remembered(&key) {
            return Err(e);
        }
        if let Some(thread) = self.executor.current_thread() {
            return thread.load(key);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            key,
            Waiter {
                deadline: Instant::now() + timeout,
                notify: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            },
        );
        // The sweep answers a waiter at its deadline; the margin covers the
        // sweep interval.
        rx.recv_timeout(timeout + 2 * deadlines::SWEEP_EVERY)
            .unwrap_or_else(|_| Err(timed_out()))
    }

    #[cfg(any(test, feature = "internals"))]
    /// A load of `id`'s current version that failed within the last
    /// 100 ms.
    pub fn remembered_failure(&self, id: &[u8; 16]) -> Option<KmsError> {
        self.remembered(&KeyRef::from(*id))
    }

    fn remembered(&self, key: &KeyRef) -> Option<KmsError> {
        remembered(&self.state, key)
    }

    /// Forgets the remembered failures of a key (it was just created or
    /// changed).
    pub fn forget_failure(&self, id: &[u8; 16]) {
        self.state.negative.lock().retain(|k, _| k.id != *id);
    }

    /// Frames waiting for keys, summed over the keys being loaded (a
    /// metrics gauge; one lock, at scrape time).
    pub fn waiters(&self) -> usize {
        self.state.pending.lock().values().map(Vec::len).sum()
    }

    /// What the loader has done so far.
    pub fn stats(&self) -> LoaderStats {
        let c = &self.state.counters;
        LoaderStats {
            batches: c.batches.load(Ordering::Relaxed),
            loaded: c.loaded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            max_batch: c.max_batch.load(Ordering::Relaxed),
            frames: self.executor.frames_run(),
            frames_expired: self.executor.frames_expired(),
            stale: c.stale.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, key: KeyRef, waiter: Waiter) {
        let Some(tx) = &self.tx else {
            (waiter.notify)(Err(stopping()));
            return;
        };
        let Some(load) = flight::join_or_start(&self.state, key, waiter) else {
            return;
        };
        if let Err(e) = tx.send(load) {
            // Only when the threads are gone (shutdown).
            for w in flight::take_waiters(&self.state, &key, e.0.waiter) {
                (w.notify)(Err(stopping()));
            }
        }
    }
}

/// A failed load of `key` still remembered.
fn remembered(state: &LoaderState, key: &KeyRef) -> Option<KmsError> {
    let negative = state.negative.lock();
    let (e, until) = negative.get(key)?;
    (Instant::now() < *until).then(|| e.clone())
}

impl Drop for KeyLoader {
    fn drop(&mut self) {
        // Closing the channel ends the store stage, whose end closes the
        // executor's key batches; closing the frame queue then ends the
        // executor's threads; the flag ends the sweep, which answers the
        // loads and frames still waiting.
        self.tx = None;
        self.state.stop.store(true, Ordering::Release);
        self.executor.close();
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // The last reference to the service can be dropped by a loader
            // thread itself (a finished prefetch's callback); it cannot join
            // itself, and it exits on its own once the channel is closed.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        self.executor.join();
    }
}
