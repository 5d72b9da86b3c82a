//! Dispatch: from a whole frame on an I/O thread to an answer on the
//! connection's write queue.
//!
//! Small data-plane requests whose keys are already cached run inline on the
//! I/O thread (a hand-off that parks a thread costs a ~25 µs wake-up on the
//! reference machine, more than the work itself; see ARCHITECTURE.md for the
//! measurement). Everything else, and anything that would touch the store,
//! goes through a bounded lock-free queue (crossbeam `ArrayQueue`) to a rayon
//! worker pool. A full queue answers ThrottlingException at once (counted
//! as overload, apart from any quota): latency never grows without bound. A request whose keys are not cached
//! first waits (holding no thread) for the key loader to fetch them, with a
//! deadline, and then takes the queue; so misses for many keys reach the
//! root of trust in batches, and never block an I/O thread or a worker.
//! A request that uses HSM-only keys (each operation an HSM call) is run by
//! the key loader's threads, the HSM executor that owns the PKCS#11
//! sessions, instead of a worker; its queue is bounded the same way, and a
//! frame not started within the load timeout is answered
//! KeyUnavailableException unrun.
//!
//! Workers have two lanes: frames whose request and answer bound fit the
//! budget's floor (64 KiB) are taken first, and a worker running a large
//! batch runs them between its items; so a flood of large batches cannot
//! hold up a normal client's DescribeKey or ListKeys. Work for a connection
//! that has gone (its answer channel is closed) is dropped without running,
//! and a running batch stops at its next item.
//!
//! Invariant: [`Dispatcher::dispatch`] and [`Dispatcher::offer`] never
//! block.

use crate::budget::{Charge, ConnBudget, FLOOR};
use crate::config::DispatchConfig;
use crate::identity::Identity;
use crate::service::loader::Prefetched;
use crate::service::{ExecMode, FrameOptions, NotRun, Service};
use crossbeam_queue::ArrayQueue;
use kms_proto::frame::Frame;
use kms_proto::{ErrorKind, KmsError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// What a frame holds until its answer has been written (or dropped): one
/// of the connection's in-flight permits and its byte charge.
#[derive(Default)]
pub struct Admission {
    /// One of the connection's `max_in_flight` permits.
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
        // 4 KiB Encrypt batches (ARCHITECTURE.md, "Zeroed buffers").
        kms_proto::frame::zero(&mut self.frame);
    }
}

/// Where the answer to one request goes.
pub struct Reply {
    tx: mpsc::UnboundedSender<Outgoing>,
    permit: Option<Admission>,
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
        Reply { tx, permit }
    }

    /// Whether the connection is gone: nobody will read this answer, and
    /// the work for it may be dropped.
    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    fn is_charged(&self) -> bool {
        self.permit.as_ref().is_some_and(|a| a.charge.is_some())
    }

    fn attach(&mut self, charge: Charge) {
        self.permit.get_or_insert_with(Admission::default).charge = Some(charge);
    }

    /// Queues the answer. A connection that has gone away drops it. The
    /// charge is cut down to the answer's real size.
    pub fn send(mut self, frame: Vec<u8>) {
        if let Some(c) = self.permit.as_mut().and_then(|a| a.charge.as_mut()) {
            if c.bytes() > frame.len() + SHRINK_MIN {
                c.shrink_to(frame.len());
            }
        }
        let _ = self.tx.send(Outgoing {
            frame,
            permit: self.permit.take(),
        });
    }
}

/// A frame the budget could not take yet: charge [`Waiting::bytes`], then
/// hand it back to [`Dispatcher::resume`]. Nothing of it has run. Boxed
/// where it is returned: only a connection at its budget pays for that.
pub struct Waiting {
    job: Job,
    bytes: usize,
}

impl Waiting {
    /// Bytes to charge (request plus answer bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

struct Job {
    /// Zeroed when the job is dropped (it may hold plaintext).
    frame: Frame,
    peer: Identity,
    reply: Reply,
    /// Largest answer frame.
    max_answer: usize,
    /// Its request and answer bound fit [`crate::budget::FLOOR`]: it takes
    /// the workers' small lane.
    small: bool,
    /// What the key loader got for its missing keys (it runs with them,
    /// failures included, and never loads them again). Whether it needs
    /// the HSM executor is then decided by the worker that takes it
    /// (finding out decodes the frame, work the key loader's threads should
    /// not do).
    prefetched: Option<Prefetched>,
}

/// Routes frames to inline execution or the worker pool.
pub struct Dispatcher {
    inner: Arc<Inner>,
    inline_small: bool,
}

struct Inner {
    service: Arc<Service>,
    /// The workers' lanes: small frames (request and answer bound within
    /// [`FLOOR`]: a DescribeKey, a short ListKeys page, one data key) are
    /// taken first, so that a backlog of large batches (whose answers the
    /// budgets admit, up to tens of MiB) never holds up a normal client's
    /// control-plane request for longer than the batches already running.
    small: ArrayQueue<Job>,
    queue: ArrayQueue<Job>,
    pool: rayon::ThreadPool,
    /// Requests refused because a queue was full (see [`Inner::busy`]).
    overloaded: AtomicU64,
    /// Frames whose work was dropped because their connection had gone
    /// (counted off the data path: only when it happens).
    dropped: AtomicU64,
}

impl Dispatcher {
    /// Starts the worker pool.
    pub fn new(service: Arc<Service>, config: &DispatchConfig) -> std::io::Result<Dispatcher> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .thread_name(|i| format!("kmsd-worker-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                service,
                small: ArrayQueue::new(config.queue_capacity),
                queue: ArrayQueue::new(config.queue_capacity),
                pool,
                overloaded: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
            inline_small: config.inline_small,
        })
    }

    /// The service behind this dispatcher.
    pub fn service(&self) -> &Arc<Service> {
        &self.inner.service
    }

    /// Requests refused with ThrottlingException because the worker queue
    /// or the HSM executor's queue was full: the daemon's overload, counted
    /// apart from any quota throttling.
    pub fn overloaded(&self) -> u64 {
        self.inner.overloaded.load(Ordering::Relaxed)
    }

    /// Frames not run (or not run to the end) because their connection had
    /// gone, since start.
    pub fn dropped_frames(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Answers `frame` inline or queues it for a worker, after its missing
    /// keys are loaded, with no byte budget and the default answer bound.
    /// Never blocks. The frame is zeroed once answered.
    pub fn dispatch(&self, frame: impl Into<Frame>, peer: Identity, reply: Reply) {
        let job = Job {
            frame: frame.into(),
            peer,
            reply,
            max_answer: crate::service::DEFAULT_MAX_ANSWER,
            small: false,
            prefetched: None,
        };
        if let Err(w) = self.start(job, None) {
            unreachable!("no budget to refuse {} bytes", w.bytes);
        }
    }

    /// Like [`Dispatcher::dispatch`], but the frame is first charged its
    /// request bytes and its answer's bound (answers are at most
    /// `max_answer` bytes) in `budget`. If the budget has no room now,
    /// nothing runs and the frame comes back as [`Waiting`]: charge it and
    /// call [`Dispatcher::resume`]. Never blocks.
    pub fn offer(
        &self,
        frame: impl Into<Frame>,
        peer: Identity,
        reply: Reply,
        max_answer: usize,
        budget: &Arc<ConnBudget>,
    ) -> Result<(), Box<Waiting>> {
        let job = Job {
            frame: frame.into(),
            peer,
            reply,
            max_answer,
            small: false,
            prefetched: None,
        };
        self.start(job, Some(budget))
    }

    /// Runs a frame that came back from [`Dispatcher::offer`] with the
    /// charge it waited for.
    pub fn resume(&self, waiting: Waiting, charge: Charge) {
        let mut job = waiting.job;
        job.reply.attach(charge);
        if let Err(w) = self.start(job, None) {
            unreachable!("already charged, yet refused {} bytes", w.bytes);
        }
    }

    /// Charges the frame (unless it already is), then runs it inline if it
    /// is small and its keys are cached, else routes it, after its missing
    /// keys are loaded.
    fn start(&self, mut job: Job, budget: Option<&Arc<ConnBudget>>) -> Result<(), Box<Waiting>> {
        let service = &self.inner.service;
        let frame_len = job.frame.len();
        let charge_for = |bound: usize| frame_len + bound;
        let budget = budget.filter(|_| !job.reply.is_charged());
        let deferred = if self.inline_small {
            let mut out = Vec::new();
            let mut charge = None;
            let mut cost = 0;
            let mut admit = |bound: usize| {
                cost = charge_for(bound);
                match budget {
                    Some(b) => {
                        charge = b.try_charge(cost);
                        charge.is_some()
                    }
                    None => true,
                }
            };
            let opts = FrameOptions {
                max_answer: job.max_answer,
                admit: Some(&mut admit),
                gone: None,
            };
            let result = service.handle_frame_with(
                &job.frame,
                &job.peer,
                ExecMode::NonBlocking,
                &mut out,
                opts,
            );
            if let Some(c) = charge {
                job.reply.attach(c);
            }
            job.small = cost <= FLOOR;
            match result {
                Ok(()) => {
                    job.reply.send(out);
                    return Ok(());
                }
                Err(NotRun::OverBudget(bound)) => {
                    let bytes = charge_for(bound);
                    return Err(Box::new(Waiting { job, bytes }));
                }
                Err(NotRun::Gone) => return Ok(()),
                Err(NotRun::Deferred(d)) => d,
            }
        } else {
            // Never run here; its keys are still loaded first, so that no
            // worker waits for the root of trust.
            let (bound, deferred) = service.inspect_frame(&job.frame, job.max_answer);
            let cost = charge_for(bound);
            job.small = cost <= FLOOR;
            if let Some(budget) = budget {
                match budget.try_charge(cost) {
                    Some(c) => job.reply.attach(c),
                    None => return Err(Box::new(Waiting { job, bytes: cost })),
                }
            }
            deferred
        };
        if deferred.missing.is_empty() {
            Inner::route(&self.inner, job, deferred.hsm);
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        service
            .loader()
            .prefetch(&deferred.missing, service.load_timeout(), move |keys| {
                // Called on a loader thread (or the deadline sweep, when a
                // load timed out): the frame runs with what its keys got,
                // so a failed or timed-out load is answered at once, item
                // by item. Whether it goes to the HSM executor is decided
                // by the worker.
                let job = Job {
                    prefetched: Some(keys),
                    ..job
                };
                Inner::enqueue(&inner, job)
            });
        Ok(())
    }
}

impl Inner {
    /// To the HSM executor if the frame uses HSM-only keys, else to the
    /// worker queue.
    fn route(this: &Arc<Inner>, job: Job, hsm: bool) {
        if !hsm {
            return Inner::enqueue(this, job);
        }
        let work = (Arc::clone(this), job);
        // Queued HSM frames have the key loads' deadline too: past it they
        // are answered KeyUnavailableException unrun.
        let timeout = this.service.load_timeout();
        if let Err((_, job)) =
            this.service
                .loader()
                .run_frame(work, timeout, |(inner, job), expired| match expired {
                    None => Inner::run(&inner, job, false),
                    Some(e) => inner.fail(job, &e),
                })
        {
            this.busy(job);
        }
    }

    /// Runs a frame to its answer, unless its connection is gone: then the
    /// work is dropped (before it starts, or between batch items), and its
    /// admission with it. With `serve_small` (a worker running a large
    /// frame), the small lane's frames are run between its items, so that
    /// a DescribeKey waits for one item of a large batch, not for all of it.
    fn run(this: &Arc<Inner>, job: Job, serve_small: bool) {
        if job.reply.is_gone() {
            this.drop_gone();
            return;
        }
        let Job {
            frame,
            peer,
            reply,
            max_answer,
            prefetched,
            ..
        } = job;
        let mut out = Vec::new();
        let gone = || {
            if serve_small {
                while let Some(small) = this.small.pop() {
                    // The small frame's own spawned task will find one job
                    // fewer; no job is ever left without a task.
                    Inner::take(this, small, false);
                }
            }
            reply.is_gone()
        };
        let opts = FrameOptions {
            max_answer,
            admit: None,
            gone: Some(&gone),
        };
        match this
            .service
            .handle_frame_prefetched(&frame, &peer, prefetched, &mut out, opts)
        {
            Ok(()) => reply.send(out),
            Err(NotRun::Gone) => this.drop_gone(),
            Err(other) => unreachable!("blocking execution, already charged: {other:?}"),
        }
    }

    fn enqueue(this: &Arc<Inner>, job: Job) {
        let lane = if job.small { &this.small } else { &this.queue };
        match lane.push(job) {
            Ok(()) => {
                let inner = Arc::clone(this);
                // One spawn per queued job: the queues bound admission and
                // keep arrival order; rayon only supplies the threads. Each
                // task takes one job, from the small lane first.
                this.pool.spawn(move || {
                    if let Some(job) = inner.small.pop().or_else(|| inner.queue.pop()) {
                        let large = !job.small;
                        Inner::take(&inner, job, large);
                    }
                });
            }
            Err(job) => this.busy(job),
        }
    }

    /// A worker's job: dropped if its connection is gone, else run here or
    /// on the HSM executor.
    fn take(this: &Arc<Inner>, job: Job, serve_small: bool) {
        if job.reply.is_gone() {
            // Nobody will read it: do not even decode it.
            this.drop_gone();
            return;
        }
        let hsm = job
            .prefetched
            .as_ref()
            .is_some_and(|keys| keys.any_hsm() || this.service.frame_uses_hsm(&job.frame));
        if hsm {
            Inner::route(this, job, true);
        } else {
            Inner::run(this, job, serve_small);
        }
    }

    fn drop_gone(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers ThrottlingException: a queue is full. To the caller this is
    /// throttling, and AWS's name for it is what SDKs retry with backoff
    /// (their retry rules know ThrottlingException, not kmsd's own names).
    /// The daemon keeps it apart from quota throttling: its message says
    /// "overloaded", it is counted in [`Dispatcher::overloaded`], and logged
    /// (at the 1st, 2nd, 4th, 8th, ... refusal, so a flood cannot flood the
    /// log).
    fn busy(&self, job: Job) {
        let n = self.overloaded.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                refused = n,
                "overloaded: a request queue is full; answering ThrottlingException"
            );
        }
        self.fail(
            job,
            &KmsError::new(
                ErrorKind::Throttling,
                "kmsd is overloaded (its request queue is full); retry with backoff",
            ),
        );
    }

    /// Answers the whole frame with `error`, unrun.
    fn fail(&self, job: Job, error: &KmsError) {
        // Only the id is read: an overloaded daemon should not decode.
        let request_id = kms_proto::codec::request_id_of(&job.frame).unwrap_or(0);
        let mut out = Vec::new();
        kms_proto::codec::encode_error_response(request_id, error, &mut out);
        job.reply.send(out);
    }
}
