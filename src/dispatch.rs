//! Dispatch: from a whole frame on an I/O thread to an answer on the
//! connection's write queue.
//!
//! Small data-plane requests whose keys are already cached run inline on the
//! I/O thread (a hand-off that parks a thread costs a ~25 µs wake-up on the
//! reference machine, more than the work itself; see ARCHITECTURE.md for the
//! measurement). Everything else, and anything that would touch the store,
//! goes through a bounded lock-free queue (crossbeam `ArrayQueue`) to a rayon
//! worker pool. A full queue answers ThrottlingException (overload) at once:
//! latency never grows without bound. A request whose keys are not cached
//! first waits (holding no thread) for the key loader to fetch them, with a
//! deadline, and then takes the queue; so misses for many keys reach the
//! root of trust in batches, and never block an I/O thread or a worker.
//! A request that uses HSM-only keys (each operation an HSM call) is run by
//! the key loader's threads, the HSM executor that owns the PKCS#11
//! sessions, instead of a worker; its queue is bounded the same way.
//!
//! Invariant: [`Dispatcher::dispatch`] never blocks.

use crate::config::DispatchConfig;
use crate::service::loader::Prefetched;
use crate::service::{ExecMode, Service};
use crossbeam_queue::ArrayQueue;
use kms_proto::frame::Frame;
use kms_proto::{ErrorKind, KmsError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use zeroize::Zeroize;

/// The caller's identity, read from the socket with SO_PEERCRED at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id (at connect time).
    pub pid: i32,
}

/// An encoded response frame on its way to a connection's writer, with the
/// in-flight permit it releases once written. The frame may carry plaintext:
/// it is zeroized on drop.
pub struct Outgoing {
    /// Length-prefixed response frame.
    pub frame: Vec<u8>,
    /// Released when the writer drops this after writing.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.frame.zeroize();
    }
}

/// Where the answer to one request goes.
pub struct Reply {
    tx: mpsc::UnboundedSender<Outgoing>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reply {
    /// A reply slot on a connection's write queue. The channel is unbounded
    /// but the permits bound it: each entry holds one of the connection's
    /// in-flight permits until it is written.
    pub fn new(tx: mpsc::UnboundedSender<Outgoing>, permit: Option<OwnedSemaphorePermit>) -> Self {
        Reply { tx, permit }
    }

    /// Queues the answer. A connection that has gone away drops it.
    pub fn send(self, frame: Vec<u8>) {
        let _ = self.tx.send(Outgoing {
            frame,
            permit: self.permit,
        });
    }
}

struct Job {
    /// Zeroed when the job is dropped (it may hold plaintext).
    frame: Frame,
    peer: Peer,
    reply: Reply,
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
    queue: ArrayQueue<Job>,
    pool: rayon::ThreadPool,
    /// Requests refused because a queue was full (see [`Inner::busy`]).
    overloaded: AtomicU64,
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
                queue: ArrayQueue::new(config.queue_capacity),
                pool,
                overloaded: AtomicU64::new(0),
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

    /// Answers `frame` inline or queues it for a worker, after its missing
    /// keys are loaded. Never blocks. The frame is zeroed once answered.
    pub fn dispatch(&self, frame: impl Into<Frame>, peer: Peer, reply: Reply) {
        let job = Job {
            frame: frame.into(),
            peer,
            reply,
            prefetched: None,
        };
        let service = &self.inner.service;
        let deferred = if self.inline_small {
            let mut out = Vec::new();
            match service.handle_frame(&job.frame, &job.peer, ExecMode::NonBlocking, &mut out) {
                Ok(()) => return job.reply.send(out),
                Err(d) => d,
            }
        } else {
            // Never run here; its keys are still loaded first, so that no
            // worker waits for the root of trust.
            service.defer_frame(&job.frame)
        };
        if deferred.missing.is_empty() {
            return Inner::route(&self.inner, job, deferred.hsm);
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
                    None => inner.run(job),
                    Some(e) => inner.fail(job, &e),
                })
        {
            this.busy(job);
        }
    }

    fn run(&self, job: Job) {
        let Job {
            frame,
            peer,
            reply,
            prefetched,
        } = job;
        let mut out = Vec::new();
        match prefetched {
            Some(keys) => self
                .service
                .handle_frame_prefetched(&frame, &peer, keys, &mut out),
            None => self
                .service
                .handle_frame(&frame, &peer, ExecMode::Blocking, &mut out)
                .expect("blocking execution always completes"),
        }
        reply.send(out);
    }

    fn enqueue(this: &Arc<Inner>, job: Job) {
        match this.queue.push(job) {
            Ok(()) => {
                let inner = Arc::clone(this);
                // One spawn per queued job: the queue bounds admission and
                // keeps arrival order; rayon only supplies the threads.
                this.pool.spawn(move || {
                    let Some(job) = inner.queue.pop() else { return };
                    let hsm = job.prefetched.as_ref().is_some_and(|keys| {
                        keys.any_hsm() || inner.service.frame_uses_hsm(&job.frame)
                    });
                    if hsm {
                        Inner::route(&inner, job, true);
                    } else {
                        inner.run(job);
                    }
                });
            }
            Err(job) => this.busy(job),
        }
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
