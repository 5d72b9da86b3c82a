//! Dispatch: from a whole frame on an I/O thread to an answer on the
//! connection's write queue.
//!
//! Every frame is admitted once ([`crate::wire::admit`]: decoded, its
//! answer bounded, its plane, keys and payload known), charged to the byte
//! budgets, then sent where its admission says:
//!
//! - **inline**, on the I/O thread: a small data-plane request (at most 64
//!   items, 64 KiB of payload) whose keys are all cached and none HSM-only
//!   (a hand-off that parks a thread costs a ~25 µs wake-up, more than the
//!   work itself; docs/perf/);
//! - **the control-plane executor** (`control`): any frame with a
//!   control-plane operation (it reads or writes the store: an fsync per
//!   CreateKey must not hold up cache misses or I/O threads);
//! - **the key loader** first, if keys are not cached: the frame waits,
//!   holding no thread, with a deadline, and misses for many keys reach the
//!   root of trust in batches; then
//! - **the HSM executor** if it uses HSM-only keys (each operation an HSM
//!   call, made by the threads that own the sessions), else
//! - **the workers** (`workers`): two bounded lock-free lanes (crossbeam
//!   `ArrayQueue`) feeding a rayon pool, small frames first.
//!
//! A full queue answers ThrottlingException at once (counted as overload,
//! apart from any quota): latency never grows without bound. Work for a
//! connection that has gone is dropped without running.
//!
//! Invariant: [`Dispatcher::dispatch`], [`Dispatcher::offer`] and
//! [`Dispatcher::resume`] never block.

mod control;
mod reply;
mod workers;

pub use reply::{Admission, Outgoing, Reply};

use crate::audit::gate::Gate;
use crate::audit::{AuditLog, Held, Pending};
use crate::budget::{Charge, ConnBudget, FLOOR};
use crate::config::DispatchConfig;
use crate::errors;
use crate::identity::Identity;
use crate::service::hsm_executor::HsmThread;
use crate::service::loader::Prefetched;
use crate::service::op::{PlaneKind, Site};
use crate::service::Service;
use crate::wire::{self, AdmittedFrame, AnswerOptions, NotRun};
use kms_proto::frame::Frame;
use kms_proto::KmsError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A frame the budget could not take yet: charge [`Waiting::bytes`], then
/// hand it back to [`Dispatcher::resume`]. Nothing of it has run. It keeps
/// only its bytes while it waits, not its decoded form (which is larger
/// than the frame for a batch: 1,024 connections at their budget each
/// holding a decoded 1,024-item batch came to 200 MB), and is decoded again
/// when it resumes: the one exception to "decoded once", on a path only a
/// connection at its budget takes. Boxed where it is returned, for the
/// same reason.
pub struct Waiting {
    frame: Frame,
    caller: Identity,
    reply: Reply,
    max_answer: usize,
    bytes: usize,
}

impl Waiting {
    /// Bytes to charge (request, its decoded form and answer bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// An admitted frame on its way to an answer.
struct Job {
    /// The frame with its decoded request (the frame is zeroed when the
    /// job is dropped: it may hold plaintext).
    admitted: AdmittedFrame,
    caller: Identity,
    reply: Reply,
    /// Largest answer frame.
    max_answer: usize,
    /// Its request and answer bound fit [`crate::budget::FLOOR`]: it takes
    /// the workers' small lane.
    small: bool,
    /// What the key loader got for its missing keys (it runs with them,
    /// failures included, and never loads them again).
    prefetched: Option<Prefetched>,
}

/// Routes frames to inline execution, the control plane, the HSM executor
/// or the worker pool.
pub struct Dispatcher {
    inner: Arc<Executors>,
    inline_small: bool,
}

/// What the dispatcher's executors share.
struct Executors {
    service: Arc<Service>,
    workers: workers::Workers,
    control: control::ControlPlane,
    /// Requests refused because a queue was full (see [`Executors::busy`]).
    overloaded: AtomicU64,
    /// Frames whose work was dropped because their connection had gone
    /// (counted off the data path: only when it happens).
    dropped: AtomicU64,
    /// The audit log: every answer waits for its frame's record.
    audit: Option<Arc<AuditLog>>,
}

impl Dispatcher {
    #[cfg(any(test, feature = "internals"))]
    /// Starts the worker pool and the control-plane executor (no audit
    /// log: tests, benches).
    pub fn new(service: Arc<Service>, config: &DispatchConfig) -> std::io::Result<Dispatcher> {
        Dispatcher::with_audit(service, config, None)
    }

    /// [`Dispatcher::new`] with an audit log: each frame's answer is held
    /// until its record is written ("no record, no answer"), and frames
    /// are refused unrun while the log cannot be written under
    /// `fail_closed`.
    pub fn with_audit(
        service: Arc<Service>,
        config: &DispatchConfig,
        audit: Option<Arc<AuditLog>>,
    ) -> std::io::Result<Dispatcher> {
        let inner = Arc::new(Executors {
            service,
            workers: workers::Workers::new(config)?,
            control: control::ControlPlane::new(config)?,
            overloaded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            audit,
        });
        if let Some(m) = crate::metrics::get() {
            // Read at scrape time from what the dispatcher holds: nothing
            // is added to the data path for them.
            let weak = Arc::downgrade(&inner);
            m.add_sampler(Box::new(move |m| {
                if let Some(inner) = weak.upgrade() {
                    inner.sample(m);
                }
            }));
        }
        Ok(Dispatcher {
            inner,
            inline_small: config.inline_small,
        })
    }

    #[cfg(any(test, feature = "internals"))]
    /// The service behind this dispatcher.
    pub fn service(&self) -> &Arc<Service> {
        &self.inner.service
    }

    #[cfg(any(test, feature = "internals"))]
    /// Requests refused with ThrottlingException because a queue (workers,
    /// control plane, HSM executor) was full: the daemon's overload,
    /// counted apart from any quota throttling.
    pub fn overloaded(&self) -> u64 {
        self.inner.overloaded.load(Ordering::Relaxed)
    }

    #[cfg(any(test, feature = "internals"))]
    /// Frames not run (or not run to the end) because their connection had
    /// gone, since start.
    pub fn dropped_frames(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    #[cfg(any(test, feature = "internals"))]
    /// Answers `frame` inline or queues it, after its missing keys are
    /// loaded, with no byte budget and the default answer bound. Never
    /// blocks. The frame is zeroed once answered.
    pub fn dispatch(&self, frame: impl Into<Frame>, caller: Identity, reply: Reply) {
        if let Err(w) =
            self.offer_inner(frame.into(), caller, reply, wire::DEFAULT_MAX_ANSWER, None)
        {
            unreachable!("no budget to refuse {} bytes", w.bytes);
        }
    }

    /// Records a request refused before it became a frame (a call of the
    /// HTTP API whose head or body did not decode). Its answer is made by
    /// the caller; the connection's writes wait at `gate` for this record.
    /// Nothing without the log.
    pub fn record_refusal(
        &self,
        caller: &Identity,
        request_id: u64,
        event_name: &str,
        error: &KmsError,
        gate: &Arc<Gate>,
    ) {
        if let Some(audit) = &self.inner.audit {
            let mut record = Vec::new();
            crate::audit::record::refusal(&mut record, caller, request_id, event_name, 1, error);
            audit.submit(Pending::new(record, Some(Held::Gated(gate.ticket())), request_id));
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
        caller: Identity,
        reply: Reply,
        max_answer: usize,
        budget: &Arc<ConnBudget>,
    ) -> Result<(), Box<Waiting>> {
        self.offer_inner(frame.into(), caller, reply, max_answer, Some(budget))
    }

    /// Runs a frame that came back from [`Dispatcher::offer`] with the
    /// charge it waited for.
    pub fn resume(&self, waiting: Waiting, charge: Charge) {
        let Waiting {
            frame,
            caller,
            mut reply,
            max_answer,
            ..
        } = waiting;
        reply.attach(charge);
        if let Err(w) = self.offer_inner(frame, caller, reply, max_answer, None) {
            unreachable!("already charged, yet refused {} bytes", w.bytes);
        }
    }

    /// Admits the frame (the one decode), charges it, then proceeds.
    fn offer_inner(
        &self,
        frame: Frame,
        caller: Identity,
        mut reply: Reply,
        max_answer: usize,
        budget: Option<&Arc<ConnBudget>>,
    ) -> Result<(), Box<Waiting>> {
        let frame_len = frame.len();
        let metrics = crate::metrics::get();
        // A frame that waited for budget keeps the stamp of its first
        // admission: the wait is part of its service time.
        if metrics.is_some() && reply.stamp_mut().is_none() {
            *reply.stamp_mut() = Some(crate::metrics::Stamp::now());
        }
        if self.inner.audit.as_ref().is_some_and(|a| a.refusing()) {
            // No record can be written: the frame is not run (and this
            // refusal cannot be recorded either; it is counted).
            metrics::counter!("kmsd_audit_refused_total").increment(1);
            let mut out = Vec::new();
            let e = crate::audit::unavailable("it failed and is being retried");
            wire::fail(&frame, &e, &mut out);
            reply.send(out);
            return Ok(());
        }
        let admitted = match wire::admit(&self.inner.service, frame, max_answer) {
            Ok(a) => a,
            Err(e) => {
                // A frame-level error is small (no client text beyond the
                // bounded messages) and is not charged.
                if let Some(m) = metrics {
                    m.requests(crate::metrics::FRAME_INDEX, 1);
                    m.error(crate::metrics::FRAME_INDEX, e.error.kind);
                }
                let mut out = Vec::new();
                wire::reject(&e, &mut out);
                let mut record = Vec::new();
                if self.inner.audit.is_some() {
                    crate::audit::record::refusal(
                        &mut record,
                        &caller,
                        e.request_id,
                        "Unknown",
                        0,
                        &e.error,
                    );
                }
                self.inner.deliver(reply, out, record, e.request_id);
                return Ok(());
            }
        };
        if let Some(stamp) = reply.stamp_mut() {
            stamp.op = crate::metrics::frame_op(&admitted.get().request.body);
        }
        // Charged: the request's bytes, its decoded form and its answer's
        // bound, so that the budgets bound what a frame holds until it is
        // answered.
        let a = admitted.get();
        let cost = frame_len + a.decoded_bytes() + a.plan.bound;
        let mut job = Job {
            admitted,
            caller,
            reply,
            max_answer,
            small: cost <= FLOOR,
            prefetched: None,
        };
        if let Some(budget) = budget.filter(|_| !job.reply.is_charged()) {
            match budget.try_charge(cost) {
                Some(c) => job.reply.attach(c),
                None => {
                    return Err(Box::new(Waiting {
                        frame: job.admitted.into_backing_cart(),
                        caller: job.caller,
                        reply: job.reply,
                        max_answer,
                        bytes: cost,
                    }))
                }
            }
        }
        self.proceed(job);
        Ok(())
    }

    /// Sends an admitted, charged frame where its admission says.
    fn proceed(&self, job: Job) {
        let inner = &self.inner;
        let a = job.admitted.get();
        if a.plane == PlaneKind::Control {
            return inner.control.submit(inner, job);
        }
        if self.inline_small && a.small() && !a.hsm && a.all_cached() {
            let mut out = Vec::new();
            let mut record = record_buffer(inner.audit.is_some(), &a.request.body);
            let opts = AnswerOptions {
                max_answer: job.max_answer,
                gone: None,
                record: inner.audit.is_some().then_some(&mut record),
            };
            match wire::answer(&inner.service, a, &job.caller, Site::Io, opts, &mut out) {
                Ok(()) => {
                    let id = a.request.request_id;
                    return inner.deliver(job.reply, out, record, id);
                }
                Err(NotRun::Gone) => return inner.drop_gone(),
                // A key evicted since admission: load it off this thread.
                Err(NotRun::NotReady) => {}
            }
        }
        // Keys cached at admission travel with the frame (the worker uses
        // them, even if they are evicted meanwhile); the others are loaded.
        let missing = a.missing();
        let hsm = a.hsm;
        if missing.is_empty() {
            return Executors::route(inner, job, hsm);
        }
        let service = &inner.service;
        let inner = Arc::clone(inner);
        service
            .loader()
            .prefetch(&missing, service.load_timeout(), move |keys| {
                // Called on a loader thread (or the deadline sweep, when a
                // load timed out): the frame runs with what its keys got,
                // so a failed or timed-out load is answered at once, item
                // by item.
                let hsm = hsm || keys.any_hsm_only();
                let job = Job {
                    prefetched: Some(keys),
                    ..job
                };
                Executors::route(&inner, job, hsm)
            });
    }
}

/// What runs a frame off the I/O threads.
enum Runner<'a> {
    /// A worker or a control-plane thread.
    Plain,
    /// A worker or control-plane thread running a large frame: `.0` serves
    /// the small lane between its items.
    ServingSmall(&'a dyn Fn()),
    /// A thread of the HSM executor.
    Hsm(&'a HsmThread<'a>),
}

impl Executors {
    /// To the HSM executor if the frame uses HSM-only keys, else to the
    /// workers.
    fn route(this: &Arc<Executors>, job: Job, hsm: bool) {
        if !hsm {
            return this.workers.enqueue(this, job);
        }
        let work = (Arc::clone(this), job);
        // Queued HSM frames have the key loads' deadline too: past it they
        // are answered KeyUnavailableException unrun.
        let timeout = this.service.load_timeout();
        let submitted = this.service.hsm_executor().submit(
            work,
            timeout,
            |(inner, job), thread| match thread {
                Ok(thread) => Executors::run(&inner, job, Runner::Hsm(thread)),
                Err(e) => inner.fail(job, &e),
            },
        );
        if let Err((_, job)) = submitted {
            this.busy(job);
        }
    }

    /// Runs a frame to its answer on a thread that may block, unless its
    /// connection is gone: then the work is dropped (before it starts, or
    /// between batch items), and its admission with it.
    fn run(this: &Arc<Executors>, job: Job, runner: Runner<'_>) {
        if job.reply.is_gone() {
            this.drop_gone();
            return;
        }
        let Job {
            admitted,
            caller,
            reply,
            max_answer,
            prefetched,
            ..
        } = job;
        let mut out = Vec::new();
        let mut record = record_buffer(this.audit.is_some(), &admitted.get().request.body);
        let gone = || {
            if let Runner::ServingSmall(f) = runner {
                f();
            }
            reply.is_gone()
        };
        let opts = AnswerOptions {
            max_answer,
            gone: Some(&gone),
            record: this.audit.is_some().then_some(&mut record),
        };
        let prefetched = prefetched.as_ref();
        let site = match &runner {
            Runner::Hsm(thread) => Site::Hsm { thread, prefetched },
            _ => Site::Blocking { prefetched },
        };
        let a = admitted.get();
        match wire::answer(&this.service, a, &caller, site, opts, &mut out) {
            Ok(()) => this.deliver(reply, out, record, a.request.request_id),
            Err(NotRun::Gone) => this.drop_gone(),
            Err(NotRun::NotReady) => unreachable!("a blocking site always gets its keys"),
        }
    }

    /// Sets the dispatcher's gauges and counters (a metrics sampler).
    fn sample(&self, m: &crate::metrics::Metrics) {
        use crate::metrics::names;
        let depth = |queue: &'static str, n: usize| {
            m.gauge(names::QUEUE_DEPTH, &[("queue", queue)]).set(n as f64);
        };
        let (small, large) = self.workers.depths();
        depth("workers_small", small);
        depth("workers_large", large);
        let (small, large) = self.control.depths();
        depth("control_small", small);
        depth("control_large", large);
        m.counter(names::OVERLOADED, &[])
            .absolute(self.overloaded.load(Ordering::Relaxed));
        m.counter(names::DROPPED, &[])
            .absolute(self.dropped.load(Ordering::Relaxed));
        self.service.sample(m);
    }

    fn drop_gone(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers ThrottlingException: a queue is full. The daemon keeps it
    /// apart from quota throttling: its message says "overloaded", it is
    /// counted in [`Dispatcher::overloaded`], and logged (at the 1st, 2nd,
    /// 4th, 8th, ... refusal, so a flood cannot flood the log).
    fn busy(&self, job: Job) {
        let n = self.overloaded.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                refused = n,
                "overloaded: a request queue is full; answering ThrottlingException"
            );
        }
        self.fail(job, &errors::overloaded());
    }

    /// Answers the whole frame with `error`, unrun (every item counted as
    /// failed with it).
    fn fail(&self, job: Job, error: &KmsError) {
        if let Some(m) = crate::metrics::get() {
            crate::metrics::count_items(m, job.admitted.get().request.body.items(), |_| {
                Some(error.kind)
            });
        }
        let mut out = Vec::new();
        wire::fail(job.admitted.backing_cart(), error, &mut out);
        let a = job.admitted.get();
        let mut record = Vec::new();
        if self.audit.is_some() {
            let items = match &a.request.body {
                kms_proto::RequestBody::Single(_) => 1,
                kms_proto::RequestBody::Batch(b) => b.len(),
            };
            crate::audit::record::refusal(
                &mut record,
                &job.caller,
                a.request.request_id,
                crate::audit::record::event_name(&a.request),
                items,
                error,
            );
        }
        let id = a.request.request_id;
        self.deliver(job.reply, out, record, id);
    }

    /// Sends the answer, after its record is written when the audit log is
    /// on; to a gated connection at once, the record holding its gate.
    fn deliver(&self, mut reply: Reply, out: Vec<u8>, record: Vec<u8>, request_id: u64) {
        let Some(audit) = &self.audit else {
            return reply.send(out);
        };
        let held = match reply.take_gate() {
            Some(gate) => {
                // The ticket first: the connection's writes wait from now.
                // The request's latency ends when its record is written.
                let ticket = gate.ticket().timed(reply.take_stamp());
                reply.send(out);
                Held::Gated(ticket)
            }
            None => Held::Answer(reply, out),
        };
        audit.submit(Pending::new(record, Some(held), request_id));
    }
}

/// The buffer a frame's audit record is built in; none without the log.
fn record_buffer(audit: bool, body: &kms_proto::RequestBody<'_>) -> Vec<u8> {
    if audit {
        crate::audit::record::buffer(body.items().len())
    } else {
        Vec::new()
    }
}
