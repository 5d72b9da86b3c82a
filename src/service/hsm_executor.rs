//! The HSM executor: the threads that own the root of trust's sessions (for
//! a PKCS#11 root, one per session of `root.pkcs11.pool_size`), and the two
//! kinds of work they do:
//!
//! - **key batches** from the key loader's store stage, unwrapped here (the
//!   loader's unwrap stage); they always go first, because frames and
//!   other requests wait for them;
//! - **frames** that use HSM-only keys (every operation an AES-GCM call in
//!   the HSM), queued with [`HsmExecutor::submit`], so every data-path
//!   PKCS#11 call is made by the threads that own the sessions, back to
//!   back, instead of by workers queueing for a session. The queue is
//!   bounded (`submit` hands the work back when it is full) and every frame
//!   has a deadline: one not started by then is answered, unrun, by the key
//!   loader's deadline sweep (`HsmExecutor::expire_frames`).
//!
//! A frame runs with a handle to the thread it runs on ([`HsmThread`]):
//! a key it needs that is not cached (evicted since its prefetch) is loaded
//! through it, right there, rather than queued to the executor behind the
//! frame itself. A blocking load made on an executor thread without the
//! handle is recognised too ([`HsmExecutor::current_thread`]) and loads in
//! place, so no path can make an executor thread wait for itself.

use super::keys::KeyRef;
use super::loader::{self, LoaderState, ReadBatch};
use super::LoadedKey;
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use kms_proto::KmsError;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

/// What a queued frame runs: with the thread it runs on, or with the error
/// to answer when it did not start before its deadline (or at shutdown).
type RunFrame = Box<dyn for<'t> FnOnce(Result<&HsmThread<'t>, KmsError>) + Send>;

/// A frame queued for the executor.
struct QueuedFrame {
    deadline: Instant,
    run: RunFrame,
}

/// What the executor's threads and its submitters share.
struct FrameQueue {
    /// Frames queued and not yet started.
    frames: Mutex<VecDeque<QueuedFrame>>,
    /// Most frames queued at once.
    capacity: usize,
    /// Frames run.
    ran: AtomicU64,
    /// Frames answered KeyUnavailableException at their deadline, unrun.
    expired: AtomicU64,
}

/// The threads that own the root of trust's sessions. Dropping it stops
/// them once the key loader's store stage has stopped sending batches.
pub struct HsmExecutor {
    queue: Arc<FrameQueue>,
    /// One token per queued frame, to wake a thread.
    wake: Mutex<Option<Sender<()>>>,
    /// The executor's threads, to recognise them.
    ids: Vec<ThreadId>,
    loads: Arc<LoaderState>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The executor thread a frame runs on: loads keys right here.
pub struct HsmThread<'a> {
    loads: &'a LoaderState,
}

impl HsmThread<'_> {
    /// Loads `key` on this thread (from the cache when it is there): a
    /// frame on the executor must not wait for a load queued behind it.
    pub fn load(&self, key: KeyRef) -> Result<Arc<LoadedKey>, KmsError> {
        loader::load_in_place(self.loads, &key)
    }
}

impl HsmExecutor {
    /// Starts `threads` executor threads taking key batches from `batches`
    /// (the key loader's store stage) and frames (at most `capacity`
    /// queued).
    pub(super) fn start(
        loads: Arc<LoaderState>,
        threads: usize,
        capacity: usize,
        batches: Receiver<ReadBatch>,
    ) -> std::io::Result<HsmExecutor> {
        let queue = Arc::new(FrameQueue {
            frames: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ran: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        });
        let (wake_tx, wake_rx) = crossbeam_channel::unbounded();
        let handles = (0..threads.max(1))
            .map(|i| {
                let (queue, loads) = (Arc::clone(&queue), Arc::clone(&loads));
                let (batches, wake) = (batches.clone(), wake_rx.clone());
                std::thread::Builder::new()
                    .name(format!("kmsd-loader-{i}"))
                    .spawn(move || serve(&queue, &loads, &batches, &wake))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let ids = handles.iter().map(|t| t.thread().id()).collect();
        Ok(HsmExecutor {
            queue,
            wake: Mutex::new(Some(wake_tx)),
            ids,
            loads,
            threads: Mutex::new(handles),
        })
    }

    /// Queues `run(work, Ok(thread))` to run on an executor thread; gives
    /// `work` back when the queue is full, so the caller can answer
    /// ThrottlingException. Work not started within `timeout` is not run:
    /// the key loader's deadline sweep calls `run(work, Err(..))` with
    /// KeyUnavailableException instead, for the caller to answer; at
    /// shutdown queued work gets the "stopping" error the same way.
    pub fn submit<T: Send + 'static>(
        &self,
        work: T,
        timeout: Duration,
        run: fn(T, Result<&HsmThread<'_>, KmsError>),
    ) -> Result<(), T> {
        let wake = self.wake.lock();
        let Some(wake) = wake.as_ref() else {
            return Err(work);
        };
        {
            let mut frames = self.queue.frames.lock();
            if frames.len() >= self.queue.capacity {
                return Err(work);
            }
            frames.push_back(QueuedFrame {
                deadline: Instant::now() + timeout,
                run: Box::new(move |thread| run(work, thread)),
            });
        }
        // The executor's threads outlive this sender (they exit once it is
        // dropped), so the token always arrives.
        let _ = wake.send(());
        Ok(())
    }

    /// The calling thread as an executor thread, if it is one.
    pub fn current_thread(&self) -> Option<HsmThread<'_>> {
        let me = std::thread::current().id();
        self.ids
            .contains(&me)
            .then_some(HsmThread { loads: &self.loads })
    }

    /// Frames run so far.
    pub fn frames_run(&self) -> u64 {
        self.queue.ran.load(Ordering::Relaxed)
    }

    /// Frames queued and not yet started (a metrics gauge).
    pub fn queued(&self) -> usize {
        self.queue.frames.lock().len()
    }

    /// Frames answered at their deadline, unrun, so far.
    pub fn frames_expired(&self) -> u64 {
        self.queue.expired.load(Ordering::Relaxed)
    }

    /// Answers queued frames whose deadline has passed (the executor's
    /// threads may all be stuck in a slow HSM call); the key loader's
    /// deadline sweep calls it.
    pub(super) fn expire_frames(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut frames = self.queue.frames.lock();
            // A pass over at most `capacity` entries, only when one is due
            // (the dispatcher gives every frame the same timeout, so due
            // ones are at the front; other callers may not).
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
        self.queue
            .expired
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        for f in expired {
            (f.run)(Err(crate::errors::hsm_timed_out()));
        }
    }

    /// Refuses new frames and answers the queued ones "stopping" (the key
    /// loader's sweep calls it as it stops).
    pub(super) fn drain(&self) {
        let frames = std::mem::take(&mut *self.queue.frames.lock());
        for f in frames {
            (f.run)(Err(crate::errors::stopping()));
        }
    }

    /// Closes the frame queue: the threads exit once the key batches stop
    /// too.
    pub(super) fn close(&self) {
        self.wake.lock().take();
    }

    /// Waits for the threads (except the calling one: the last reference
    /// to the service can be dropped on an executor thread, by a finished
    /// prefetch's callback; it exits on its own once its channels close).
    pub(super) fn join(&self) {
        let me = std::thread::current().id();
        for t in self.threads.lock().drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for HsmExecutor {
    fn drop(&mut self) {
        self.close();
        self.join();
    }
}

/// An executor thread: unwraps key batches and runs frames, key batches
/// first (a frame may wait; keys have waiters, frames among them, and a key
/// load must not queue behind frames that do not need it).
fn serve(
    queue: &FrameQueue,
    loads: &LoaderState,
    batches: &Receiver<ReadBatch>,
    wake: &Receiver<()>,
) {
    let thread = HsmThread { loads };
    let (mut batches_open, mut wake_open) = (true, true);
    loop {
        match batches.try_recv() {
            Ok(batch) => {
                loader::unwrap_batch(loads, batch);
                continue;
            }
            Err(TryRecvError::Disconnected) => batches_open = false,
            Err(TryRecvError::Empty) => {}
        }
        let next = queue.frames.lock().pop_front();
        if let Some(frame) = next {
            run_queued(queue, &thread, frame);
            continue;
        }
        // Nothing to do: sleep until a key batch or a frame's token comes.
        // (A token may find its frame taken by another thread or the sweep;
        // every frame has its token, so none is left without a wake-up.)
        let mut select = Select::new();
        let b = batches_open.then(|| select.recv(batches));
        let w = wake_open.then(|| select.recv(wake));
        if b.is_none() && w.is_none() {
            return;
        }
        let op = select.select();
        if Some(op.index()) == b {
            match op.recv(batches) {
                Ok(batch) => loader::unwrap_batch(loads, batch),
                Err(_) => batches_open = false,
            }
        } else if op.recv(wake).is_err() {
            wake_open = false;
        }
    }
}

/// Runs a queued frame, or answers it if its deadline has passed.
fn run_queued(queue: &FrameQueue, thread: &HsmThread<'_>, frame: QueuedFrame) {
    if frame.deadline <= Instant::now() {
        queue.expired.fetch_add(1, Ordering::Relaxed);
        (frame.run)(Err(crate::errors::hsm_timed_out()));
        return;
    }
    // Counted before it runs: the frame sends its answer, and whoever got
    // the answer may read the counter at once.
    queue.ran.fetch_add(1, Ordering::Relaxed);
    (frame.run)(Ok(thread));
}
